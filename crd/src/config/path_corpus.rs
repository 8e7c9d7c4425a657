//! Test corpus (feature `test-corpus`, and this crate's own tests): bad path strings and every
//! path field of the datamodel, for the tests that show a config cannot smuggle anything into a
//! file, a command line or supervisord.

/// Every `FilePath`/`SocketPath` field: (JSON pointer, YAML with `PATH` where the path goes).
pub const PATH_FIELDS: &[(&str, &str)] = &[
    ("/rundir", "rundir: PATH"),
    ("/cache/storage", "cache: {storage: PATH}"),
    (
        "/cache/prefill/0/ca-file",
        "cache: {prefill: [{origin: '.', url: 'https://x.test/root.zone', ca-file: PATH}]}",
    ),
    (
        "/dnssec/trust-anchors-files/0/file",
        "dnssec: {trust-anchors-files: [{file: PATH}]}",
    ),
    (
        "/forward/0/servers/0/ca-file",
        "forward: [{subtree: a.test, servers: [{address: 127.0.0.1, transport: tls, hostname: a.test, ca-file: PATH}]}]",
    ),
    (
        "/local-data/addresses-files/0",
        "local-data: {addresses-files: [PATH]}",
    ),
    (
        "/local-data/rules/0/file",
        "local-data: {rules: [{file: PATH}]}",
    ),
    (
        "/local-data/rpz/0/file",
        "local-data: {rpz: [{file: PATH}]}",
    ),
    ("/lua/script-file", "lua: {script-file: PATH}"),
    ("/lua/policy-script-file", "lua: {policy-script-file: PATH}"),
    (
        "/network/tls/cert-file",
        "network: {tls: {cert-file: PATH, key-file: /k.pem}}",
    ),
    (
        "/network/tls/key-file",
        "network: {tls: {cert-file: /c.pem, key-file: PATH}}",
    ),
    (
        "/network/tls/sticket-secret-file",
        "network: {tls: {sticket-secret-file: PATH}}",
    ),
    (
        "/network/listen/0/unix-socket",
        "network: {listen: [{unix-socket: PATH}]}",
    ),
    ("/management/unix-socket", "management: {unix-socket: PATH}"),
    (
        "/logging/dnstap/unix-socket",
        "logging: {dnstap: {enable: true, unix-socket: PATH}}",
    ),
];

/// The value of `cache.storage` from issue 8 that wrote a `[program:pwn]` section.
pub const ISSUE_PWN: &str =
    "/var/cache/x\n[program:pwn]\ncommand=/bin/touch /tmp/PWNED\nautostart=true\n";

/// Bad path strings with the rule text the error must contain.
pub fn bad_paths() -> Vec<(String, &'static str)> {
    vec![
        (
            ISSUE_PWN.into(),
            "must not contain control characters, found \\n",
        ),
        // What YAML `storage: |` produces.
        ("/var/cache/x\n".into(), "found \\n"),
        ("/var/cache/x\ry".into(), "found \\r"),
        ("/var/cache/x\ty".into(), "found \\t"),
        ("/var/cache/x\u{0}y".into(), "found \\u{0}"),
        ("/var/cache/x\u{7f}y".into(), "found \\u{7f}"),
        ("/var/cache/x\u{85}y".into(), "found \\u{85}"),
        ("/var/cache/%(here)s".into(), "must not contain '%'"),
        ("/var/cache/100%".into(), "must not contain '%'"),
        (
            " /var/cache/x".into(),
            "must not start or end with whitespace",
        ),
        (
            "/var/cache/x ".into(),
            "must not start or end with whitespace",
        ),
        ("".into(), "must not be empty"),
        (format!("/{}", "a".repeat(5000)), "path must be at most"),
    ]
}

/// `s` as a YAML double-quoted scalar (control characters escaped).
pub fn yaml_quoted(s: &str) -> String {
    serde_json::to_string(s).expect("a string serializes")
}
