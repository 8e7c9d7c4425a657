//! `kresctl` offline commands, run as the built binary.

use std::path::PathBuf;
use std::process::{Command, Output};

fn kresctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kresctl"))
        .args(args)
        .output()
        .expect("run kresctl")
}

fn example() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../manifests/examples/config.yaml")
        .to_string_lossy()
        .into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn validate_accepts_the_example() {
    let o = kresctl(&["validate", &example()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(o.stderr.is_empty() && o.stdout.is_empty());
}

#[test]
fn validate_lists_every_error_with_file_location_and_pointer() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "cache:\n  size-max: 10X\nforward:\n  - subtree: a.test\n    servers: [nope]\n",
    )
    .unwrap();
    let o = kresctl(&["validate", &example(), bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    let lines: Vec<&str> = err.lines().collect();
    let b = bad.to_str().unwrap();
    assert_eq!(lines.len(), 2, "{err}");
    assert!(
        lines[0].starts_with(&format!("{b}: 2:13: /cache/size-max: ")),
        "{err}"
    );
    assert!(
        lines[1].starts_with(&format!("{b}: 5:15: /forward/0/servers/0: ")),
        "{err}"
    );
}

#[test]
fn validate_refuses_what_the_operator_refuses_naming_the_field() {
    // The trust-anchor vs negative-trust-anchor conflict (kresd refuses it at start) and an
    // interface name (host mode binds IP addresses only): both were only found when the
    // operator rendered the config.
    let dir = tempfile::tempdir().unwrap();
    let ta = dir.path().join("ta.yaml");
    std::fs::write(
        &ta,
        "dnssec:\n  trust-anchors: ['example.test. DS 1 8 2 AB']\n  negative-trust-anchors: [example.test]\n",
    )
    .unwrap();
    let iface = dir.path().join("iface.yaml");
    std::fs::write(&iface, "network:\n  listen:\n    - interface: lo\n").unwrap();
    let o = kresctl(&["validate", ta.to_str().unwrap(), iface.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 2, "{err}");
    let (ta, iface) = (ta.to_str().unwrap(), iface.to_str().unwrap());
    assert!(
        lines[0].starts_with(&format!("{ta}: 3:28: /dnssec/negative-trust-anchors/0: ")),
        "{err}"
    );
    assert!(lines[0].contains("trust anchor"), "{err}");
    assert!(
        lines[1].starts_with(&format!("{iface}: /network/listen/0/interface: ")),
        "{err}"
    );
}

#[test]
fn validate_unreadable_file_is_invalid_input() {
    let o = kresctl(&["validate", "/nonexistent/config.yaml"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).starts_with("/nonexistent/config.yaml: cannot read: "),
        "{}",
        stderr(&o)
    );
}

#[test]
fn convert_prints_lua_and_writes_output_file() {
    let o = kresctl(&["convert", &example()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let lua = String::from_utf8(o.stdout).unwrap();
    assert!(
        lua.contains("net.listen('127.0.0.1', 5353, {kind = 'dns'})"),
        "{lua}"
    );
    assert!(
        lua.contains("hints.set('router.home.example.test. 192.168.1.1')"),
        "{lua}"
    );

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("kresd.lua");
    let o = kresctl(&["convert", &example(), "-o", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(o.stdout.is_empty());
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        lua,
        "same bytes to a file and to stdout"
    );

    let o = kresctl(&["convert", &example(), "--sockets", "inherited"]);
    let inherited = String::from_utf8(o.stdout).unwrap();
    assert!(!inherited.contains("net.listen("), "{inherited}");
}

#[test]
fn convert_invalid_config_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "workers: 0\n").unwrap();
    let o = kresctl(&["convert", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(o.stdout.is_empty());
    assert!(stderr(&o).contains("/workers"), "{}", stderr(&o));
}

#[test]
fn schema_prints_the_json_schema() {
    let o = kresctl(&["schema"]);
    assert_eq!(o.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["properties"]["local-data"].is_object(), "{v}");
    assert_eq!(v, kres_crd::config::json_schema());
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(kresctl(&[]).status.code(), Some(2));
    assert_eq!(kresctl(&["validate"]).status.code(), Some(2));
    assert_eq!(kresctl(&["frobnicate"]).status.code(), Some(2));
    assert_eq!(
        kresctl(&["convert", "a", "--sockets", "nope"])
            .status
            .code(),
        Some(2)
    );
}

#[test]
fn validate_rejects_oversized_and_non_utf8_files_clearly() {
    let dir = tempfile::tempdir().unwrap();
    // 10 MB: kresctl reads at most the limit + 1 byte and names the limit.
    let big = dir.path().join("big.yaml");
    std::fs::write(&big, vec![b'a'; 10 * 1024 * 1024]).unwrap();
    let o = kresctl(&["validate", big.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("input is larger than 4194304 bytes (4 MiB)"),
        "{}",
        stderr(&o)
    );
    // Invalid UTF-8: the offset of the first bad byte.
    let bin = dir.path().join("bin.yaml");
    std::fs::write(&bin, b"workers: 2\nnsid: \xff\xfe\n").unwrap();
    let o = kresctl(&["validate", bin.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("not valid UTF-8 (invalid byte at offset 17)"),
        "{}",
        stderr(&o)
    );
}

/// Run `bin args` with standard output a pipe whose reader is already closed (what
/// `bin args | head -0` does); returns (exit code, stderr).
fn with_closed_stdout(bin: &str, args: &[&str]) -> (Option<i32>, String) {
    let out =
        kres_tests::process::output_with_closed_stdout(Command::new(bin).args(args)).expect("run");
    (out.status.code(), stderr(&out))
}

#[test]
fn a_closed_stdout_ends_kresctl_quietly_with_141() {
    let kresctl = env!("CARGO_BIN_EXE_kresctl");
    // Outputs larger than the 4 KiB pipe: 64 KB (offline writer), 35 KB (completion).
    for args in [vec!["schema"], vec!["completion", "bash"]] {
        let (code, err) = with_closed_stdout(kresctl, &args);
        assert_eq!(code, Some(141), "{args:?}: {err}");
        assert!(err.is_empty(), "{args:?} wrote to stderr: {err}");
    }
}

#[test]
fn a_closed_stdout_does_not_panic_kres_operator() {
    let (code, err) = with_closed_stdout(env!("CARGO_BIN_EXE_kres-operator"), &["--help"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}
