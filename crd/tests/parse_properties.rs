//! Property: any bytes given to the YAML or JSON entry points give a config or errors that each
//! name a place (a JSON pointer, "" for the whole document) and a rule, and never a panic.
//!
//! Fixed seeds and a bounded number of cases (`KRES_PROP_CASES`, default 256) for `make test`;
//! `make fuzz` runs many more.

use std::cell::Cell;

use kres_crd::config::{ConfigErrors, ResolverConfig};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestRunner};

const FULL: &str = include_str!("../../manifests/examples/config-full.yaml");

fn runner(seed: u64) -> TestRunner {
    let cases = std::env::var("KRES_PROP_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(256);
    TestRunner::new(Config {
        cases,
        rng_seed: RngSeed::Fixed(seed),
        failure_persistence: None,
        ..Config::default()
    })
}

/// Errors are well-formed: at least one, each with a JSON pointer and a message.
fn check_errors(input: &[u8], e: &ConfigErrors) -> Result<(), TestCaseError> {
    prop_assert!(!e.is_empty(), "an error without entries for {input:?}");
    for err in e.iter() {
        prop_assert!(
            err.pointer.is_empty() || err.pointer.starts_with('/'),
            "not a JSON pointer: {err:?} for {input:?}"
        );
        prop_assert!(!err.message.is_empty(), "no message: {err:?}");
    }
    Ok(())
}

/// Both entry points on the same bytes: YAML bytes, and JSON text (the API's bodies) through
/// `from_json_value`. Returns whether the YAML entry point accepted it.
fn check_input(input: &[u8]) -> Result<bool, TestCaseError> {
    let yaml = ResolverConfig::from_yaml_bytes(input);
    if let Err(e) = &yaml {
        check_errors(input, e)?;
    }
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(input)
        && let Err(e) = ResolverConfig::from_json_value(value)
    {
        check_errors(input, &e)?;
    }
    Ok(yaml.is_ok())
}

/// Bytes biased towards YAML/JSON syntax, so the parser gets past the first character.
fn syntax_bytes() -> impl Strategy<Value = Vec<u8>> {
    let token = prop_oneof![
        Just(b"{".to_vec()),
        Just(b"}".to_vec()),
        Just(b"[".to_vec()),
        Just(b"]".to_vec()),
        Just(b": ".to_vec()),
        Just(b"- ".to_vec()),
        Just(b"\n  ".to_vec()),
        Just(b"&a ".to_vec()),
        Just(b"*a".to_vec()),
        Just(b"!!str ".to_vec()),
        Just(b"\"".to_vec()),
        Just(b"'".to_vec()),
        Just(b"workers".to_vec()),
        Just(b"network".to_vec()),
        Just(b"listen".to_vec()),
        Just(b"interface".to_vec()),
        Just(b"cache".to_vec()),
        Just(b"size-max".to_vec()),
        Just(b"forward".to_vec()),
        Just(b"local-data".to_vec()),
        Just(b"1".to_vec()),
        Just(b"127.0.0.1@53".to_vec()),
        Just(b"100M".to_vec()),
        prop::collection::vec(any::<u8>(), 1..4),
    ];
    prop::collection::vec(token, 0..40).prop_map(|t| t.concat())
}

#[test]
fn any_bytes_give_a_config_or_pointed_errors() {
    // The runner takes `Fn` closures: count in cells.
    let accepted = Cell::new(0u32);
    runner(0x6b72_6573_0001)
        .run(&prop::collection::vec(any::<u8>(), 0..256), |input| {
            accepted.set(accepted.get() + u32::from(check_input(&input)?));
            Ok(())
        })
        .unwrap();
    let syntax_accepted = Cell::new(0u32);
    runner(0x6b72_6573_0002)
        .run(&syntax_bytes(), |input| {
            syntax_accepted.set(syntax_accepted.get() + u32::from(check_input(&input)?));
            Ok(())
        })
        .unwrap();
    println!(
        "random bytes accepted: {}; syntax-shaped accepted: {}",
        accepted.get(),
        syntax_accepted.get()
    );
}

#[test]
fn mutated_full_config_gives_a_config_or_pointed_errors() {
    // Overwrite, insert or delete a few bytes anywhere in the full example config.
    let edit = (0..FULL.len(), 0u8..3, any::<u8>());
    let (ok, rejected) = (Cell::new(0u32), Cell::new(0u32));
    runner(0x6b72_6573_0003)
        .run(&prop::collection::vec(edit, 1..6), |edits| {
            let mut doc = FULL.as_bytes().to_vec();
            for (at, kind, byte) in edits {
                let at = at.min(doc.len().saturating_sub(1));
                match kind {
                    0 if !doc.is_empty() => doc[at] = byte,
                    1 => doc.insert(at, byte),
                    _ if !doc.is_empty() => {
                        doc.remove(at);
                    }
                    _ => {}
                }
            }
            let counter = if check_input(&doc)? { &ok } else { &rejected };
            counter.set(counter.get() + 1);
            Ok(())
        })
        .unwrap();
    println!(
        "mutated full config: {} accepted, {} rejected",
        ok.get(),
        rejected.get()
    );
    // Not vacuous: the unmutated document is valid, and some mutations break it.
    assert!(ResolverConfig::from_yaml_str(FULL).is_ok());
    assert!(rejected.get() > 0);
}
