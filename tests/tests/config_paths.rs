//! `kresctl validate` refuses every bad path string in every path field, naming the field (JSON
//! pointer), the rule and the line:column (one run, every file). The datamodel itself: the
//! unit test `every_path_field_refuses_every_bad_path_naming_field_and_rule` in kres-crd.

use std::collections::BTreeMap;
use std::process::Command;

use kres_crd::config::path_corpus::{PATH_FIELDS, bad_paths, yaml_quoted};

/// (file name, YAML, pointer, rule) for every field x every bad path.
fn cases() -> Vec<(String, String, &'static str, &'static str)> {
    let mut out = vec![];
    for (f, (pointer, template)) in PATH_FIELDS.iter().enumerate() {
        for (b, (path, rule)) in bad_paths().into_iter().enumerate() {
            // The field on line 2, so the location is not trivially 1:1.
            let yaml = format!(
                "version: 1\n{}\n",
                template.replace("PATH", &yaml_quoted(&path))
            );
            out.push((format!("f{f}-b{b}.yaml"), yaml, *pointer, rule));
        }
    }
    out
}

#[test]
fn kresctl_validate_refuses_bad_paths_in_every_field() {
    let dir = tempfile::tempdir().unwrap();
    let cases = cases();
    for (name, yaml, _, _) in &cases {
        std::fs::write(dir.path().join(name), yaml).unwrap();
    }
    let kresctl = kres_tests::host::operator_binary()
        .unwrap()
        .with_file_name("kresctl");
    let out = Command::new(&kresctl)
        .arg("validate")
        .args(cases.iter().map(|c| dir.path().join(&c.0)))
        .output()
        .expect("run kresctl");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Lines are `FILE: LINE:COL: POINTER: MESSAGE`.
    let mut by_file: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for line in stderr.lines() {
        if let Some((file, rest)) = line.split_once(": ") {
            by_file.entry(file.to_string()).or_default().push(rest);
        }
    }
    let mut failures = vec![];
    for (name, _, pointer, rule) in &cases {
        let file = dir.path().join(name).display().to_string();
        let lines = by_file.get(&file).cloned().unwrap_or_default();
        let hit = lines.iter().any(|l| {
            let mut parts = l.splitn(3, ": ");
            let loc = parts.next().unwrap_or_default();
            let ptr = parts.next().unwrap_or_default();
            let msg = parts.next().unwrap_or_default();
            loc.starts_with("2:") && ptr == *pointer && msg.contains(rule)
        });
        if !hit {
            failures.push(format!(
                "{name}: want 2:COL: {pointer}: ...{rule}..., got {lines:?}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
