//! The path rule ([`check_path_text`]) in every path field: each bad string is refused with the
//! field's pointer, the rule and a location; the JSON Schema says the same.

use super::*;

use super::path_corpus::{PATH_FIELDS, bad_paths, yaml_quoted};

#[test]
fn every_path_field_refuses_every_bad_path_naming_field_and_rule() {
    let mut failures = Vec::new();
    let mut checked = 0;
    for (pointer, template) in PATH_FIELDS {
        for (path, rule) in bad_paths() {
            let yaml = template.replace("PATH", &yaml_quoted(&path));
            checked += 1;
            match ResolverConfig::from_yaml_str(&yaml) {
                Ok(_) => failures.push(format!("{pointer} {path:?}: accepted")),
                Err(errors) => {
                    let hit = errors.iter().find(|e| e.pointer == *pointer);
                    match hit {
                        Some(e) if e.message.contains(rule) && e.location.is_some() => {}
                        _ => failures.push(format!(
                            "{pointer} {path:?}: expected {rule:?} with a location, got:\n{errors}"
                        )),
                    }
                }
            }
        }
    }
    assert_eq!(checked, PATH_FIELDS.len() * bad_paths().len());
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn socket_paths_are_limited_to_sun_path() {
    let ok = format!("/{}", "s".repeat(SOCKET_PATH_MAX_BYTES - 1));
    let long = format!("/{}", "s".repeat(SOCKET_PATH_MAX_BYTES));
    for (pointer, template) in PATH_FIELDS
        .iter()
        .filter(|(p, _)| p.ends_with("unix-socket"))
    {
        let errors = ResolverConfig::from_yaml_str(&template.replace("PATH", &long))
            .expect_err("a 108-byte socket path is refused");
        assert!(
            errors.iter().any(|e| e.pointer == *pointer
                && e.message.contains("at most 107 bytes long, got 108 bytes")),
            "{pointer}: {errors}"
        );
        if let Err(errors) = ResolverConfig::from_yaml_str(&template.replace("PATH", &ok)) {
            assert!(
                errors.iter().all(|e| !e.message.contains("bytes long")),
                "{pointer}: a 107-byte path is refused: {errors}"
            );
        }
    }
}

#[test]
fn rundir_and_cache_storage_must_be_absolute() {
    let errors = ResolverConfig::from_yaml_str("rundir: run\ncache: {storage: ./cache}\n")
        .expect_err("relative paths refused");
    for (pointer, got) in [("/rundir", "'run'"), ("/cache/storage", "'./cache'")] {
        assert!(
            errors.iter().any(|e| e.pointer == pointer
                && e.message == format!("must be an absolute path, got {got}")
                && e.location.is_some()),
            "{pointer}: {errors}"
        );
    }
}

#[test]
fn rundir_must_not_contain_whitespace() {
    let errors = ResolverConfig::from_yaml_str("rundir: /run/kres operator\n").unwrap_err();
    assert!(
        errors
            .iter()
            .any(|e| e.pointer == "/rundir" && e.message == "must not contain whitespace"),
        "{errors}"
    );
}

#[test]
fn ordinary_paths_are_accepted() {
    for path in [
        "/var/cache/knot-resolver",
        "/srv/dns data/ünïcode-cache",
        "/a;b#c'd\"e\\f",
    ] {
        let yaml = format!("cache: {{storage: {}}}", yaml_quoted(path));
        let cfg = ResolverConfig::from_yaml_str(&yaml).expect(path);
        assert_eq!(cfg.cache.storage.as_str(), path);
    }
}

#[test]
fn schema_pattern_and_length_match_the_rule() {
    let schema = json_schema();
    let defs = &schema["$defs"];
    for (name, max) in [
        ("FilePath", PATH_MAX_BYTES),
        ("SocketPath", SOCKET_PATH_MAX_BYTES),
    ] {
        assert_eq!(defs[name]["maxLength"], max, "{name}");
        let pattern = defs[name]["pattern"].as_str().expect("pattern");
        let re = regex::Regex::new(pattern).expect("pattern compiles");
        assert!(re.is_match("/var/cache/knot-resolver"));
        for (bad, _) in bad_paths() {
            if !bad.is_empty() && bad.len() < 4000 {
                assert!(!re.is_match(&bad), "{name} pattern accepts {bad:?}");
            }
        }
    }
}
