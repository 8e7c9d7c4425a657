//! Property: any string put into a string field of config.yaml that reaches kresd's Lua verbatim
//! is either refused naming that field (validation or render error with its JSON pointer), or
//! appears in the rendered Lua as a literal that kresd's own Lua parser reads back as exactly
//! that string.
//!
//! The strings are generated with proptest (fixed seed, `KRES_PROP_CASES` cases per field,
//! default 64; `make fuzz` runs more) and checked in Rust first; every accepted literal is then
//! read back by ONE real kresd (a Lua file comparing each literal with the expected bytes), not a
//! process per case. The hostile-payload corpus with marker files is `lua_injection.rs`.

use std::cell::{Cell, RefCell};
use std::collections::BTreeSet;

use kres_crd::config::ResolverConfig;
use kres_crd::lua::{RenderOptions, quote, render};
use kres_tests::json::merge;
use kres_tests::kresd::Kresd;
use kres_tests::net::{free_port, unique_loopback};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestRunner};
use serde_json::{Value, json};

/// Loopback only: nothing these tests start can reach another host (see
/// `kres_tests::net::isolate_loopback_only`).
#[ctor::ctor(unsafe)]
fn private_network() {
    kres_tests::net::isolate_loopback_only()
}

/// Fields whose value the renderer writes as one Lua string literal, unchanged: (JSON pointer,
/// config fragment with the value at that pointer).
type Field = (&'static str, fn(&str) -> Value);

const FIELDS: &[Field] = &[
    ("/hostname", |s| json!({ "hostname": s })),
    ("/nsid", |s| json!({ "nsid": s })),
    (
        "/monitoring/graphite/prefix",
        |s| json!({ "monitoring": { "graphite": { "enable": true, "host": "127.0.0.1", "prefix": s } } }),
    ),
    (
        "/network/tls/sticket-secret",
        |s| json!({ "network": { "tls": { "sticket-secret": s } } }),
    ),
    (
        "/cache/prefill/0/url",
        |s| json!({ "cache": { "prefill": [{ "origin": ".", "url": s }] } }),
    ),
    (
        "/dnssec/trust-anchors/0",
        |s| json!({ "dnssec": { "trust-anchors": [s] } }),
    ),
    (
        "/lua/script-file",
        |s| json!({ "lua": { "script-file": s } }),
    ),
    (
        "/local-data/addresses-files/0",
        |s| json!({ "local-data": { "addresses-files": [s] } }),
    ),
    (
        "/logging/dnstap/unix-socket",
        |s| json!({ "logging": { "dnstap": { "enable": true, "unix-socket": s } } }),
    ),
];

/// Arbitrary Unicode, and strings made of what ends Lua literals, comments and long brackets.
fn strings() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[\\\\'\"\\[\\]=\\-\n\r\t\0 a-z0-9./\u{80}-\u{10ffff}]{0,40}",
    ]
}

/// `s` refused naming `pointer`, or rendered as `quote(s)`; the literal, when accepted.
fn check(pointer: &str, make: fn(&str) -> Value, s: &str) -> Result<Option<String>, TestCaseError> {
    let dir = "/tmp/kres-prop";
    let mut doc = json!({
        "rundir": format!("{dir}/run"),
        "cache": { "storage": format!("{dir}/cache") },
    });
    merge(&mut doc, make(s));
    let config = match ResolverConfig::from_json_value(doc) {
        Ok(c) => c,
        Err(e) => {
            prop_assert!(
                e.iter().any(|e| e.pointer.starts_with(pointer)),
                "{pointer} = {s:?} refused without naming the field: {e}"
            );
            return Ok(None);
        }
    };
    match render(&config, &RenderOptions::default()) {
        Err(e) => {
            prop_assert!(
                e.iter().any(|e| e.pointer.starts_with(pointer)),
                "{pointer} = {s:?}: render error elsewhere: {e}"
            );
            Ok(None)
        }
        Ok(lua) => {
            let literal = quote(s);
            prop_assert!(
                lua.contains(&literal),
                "{pointer} = {s:?} accepted but not rendered as {literal}:\n{lua}"
            );
            Ok(Some(literal))
        }
    }
}

#[test]
fn every_string_field_is_refused_by_name_or_read_back_exactly_by_kresd() -> anyhow::Result<()> {
    let cases = std::env::var("KRES_PROP_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(64);
    // (literal, expected bytes) of every accepted value, for the one kresd run below.
    // The runner takes `Fn` closures: collect in cells.
    let accepted: RefCell<BTreeSet<(String, Vec<u8>)>> = RefCell::default();
    let refused = Cell::new(0usize);
    for (i, (pointer, make)) in FIELDS.iter().enumerate() {
        let mut runner = TestRunner::new(Config {
            cases,
            rng_seed: RngSeed::Fixed(0x6b72_6573_1000 + i as u64),
            failure_persistence: None,
            ..Config::default()
        });
        runner
            .run(&strings(), |s| {
                match check(pointer, *make, &s)? {
                    Some(literal) => {
                        accepted.borrow_mut().insert((literal, s.into_bytes()));
                    }
                    None => refused.set(refused.get() + 1),
                }
                Ok(())
            })
            .map_err(|e| anyhow::anyhow!("{pointer}: {e}"))?;
    }
    let (accepted, refused) = (accepted.into_inner(), refused.get());
    println!(
        "{} fields x {cases} strings: {} distinct values accepted, {refused} refused by name",
        FIELDS.len(),
        accepted.len()
    );
    // Not vacuous: free-text fields take arbitrary strings.
    assert!(
        accepted.len() >= cases as usize,
        "only {} accepted",
        accepted.len()
    );

    // One kresd reads every literal back and compares it with the bytes (sent as hex).
    let ip = unique_loopback();
    let mut lua = format!(
        "net.listen('{ip}', {})\n\
         local function unhex(h) return (h:gsub('..', function(x) return string.char(tonumber(x, 16)) end)) end\n\
         local cases = {{\n",
        free_port(ip)
    );
    for (literal, bytes) in &accepted {
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        lua.push_str(&format!("  {{{literal}, '{hex}'}},\n"));
    }
    lua.push_str(
        "}\nprop_checked, prop_bad = 0, {}\n\
         for i, c in ipairs(cases) do\n\
           prop_checked = prop_checked + 1\n\
           if c[1] ~= unhex(c[2]) then table.insert(prop_bad, i) end\n\
         end\n",
    );
    let k = Kresd::start(&lua)?;
    assert_eq!(
        k.eval_json("prop_checked")?,
        json!(accepted.len()),
        "kresd did not read every literal"
    );
    let bad = k.eval_json("#prop_bad")?;
    if bad != json!(0) {
        let first = k.eval_json("prop_bad[1]")?.as_u64().unwrap_or(1) as usize;
        let (literal, bytes) = accepted.iter().nth(first - 1).cloned().unwrap_or_default();
        panic!(
            "{bad} literals read back differently by kresd; first: {literal} for {:?}",
            String::from_utf8_lossy(&bytes)
        );
    }
    Ok(())
}
