//! Lua injection: hostile strings in every string field of config.yaml are either rejected by
//! validation or reach kresd as data. kresd never executes them: marker files are never created,
//! an injected global never appears, and where the value is observable it comes back verbatim.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use hickory_proto::rr::RecordType;
use kres_crd::config::ResolverConfig;
use kres_crd::lua::{RenderOptions, render};
use kres_tests::dns;
use kres_tests::json::merge;
use kres_tests::kresd::{Kresd, KresdOptions};
use kres_tests::net::{free_port, unique_loopback};
use serde_json::{Value, json};

/// Loopback only: nothing these tests start can reach another host (see
/// `kres_tests::net::isolate_loopback_only`).
#[ctor::ctor(unsafe)]
fn private_network() {
    kres_tests::net::isolate_loopback_only()
}

/// Payloads trying every way out of a Lua string literal. `{M}` is replaced by a marker path.
const PAYLOADS: &[&str] = &[
    "x'); os.execute('touch {M}'); injected = 1; --",
    "x\"); os.execute(\"touch {M}\"); injected = 1; --",
    "x]] os.execute('touch {M}') injected = 1 --[[",
    "x]=] os.execute('touch {M}') injected = 1 --[=[",
    "a\nos.execute('touch {M}')\ninjected = 1\n--",
    "a\\'); os.execute('touch {M}'); injected = 1; --",
    "-- c\nio.open('{M}', 'w'):close() injected = 1",
    "a\0'); os.execute('touch {M}'); injected = 1; --",
    "a\r'..os.execute('touch {M}')..'",
];

/// Where a string field sits, as a function from the hostile string to a config fragment.
type Field = (&'static str, fn(&str) -> Value);

const FIELDS: &[Field] = &[
    ("/hostname", |p| json!({ "hostname": p })),
    ("/nsid", |p| json!({ "nsid": p })),
    ("/cache/storage", |p| json!({ "cache": { "storage": p } })),
    (
        "/cache/prefill/0/url",
        |p| json!({ "cache": { "prefill": [{ "origin": ".", "url": p }] } }),
    ),
    (
        "/dnssec/trust-anchors/0",
        |p| json!({ "dnssec": { "trust-anchors": [p] } }),
    ),
    (
        "/dnssec/trust-anchors-files/0/file",
        |p| json!({ "dnssec": { "trust-anchors-files": [{ "file": p, "read-only": true }] } }),
    ),
    (
        "/dnssec/negative-trust-anchors/0",
        |p| json!({ "dnssec": { "negative-trust-anchors": [p] } }),
    ),
    (
        "/local-data/records",
        |p| json!({ "local-data": { "records": p } }),
    ),
    (
        "/local-data/records (TXT data)",
        |p| json!({ "local-data": { "records": format!("txt.inject.test. 60 TXT \"{}\"\n", p.replace(['"', '\\', '\n', '\r', '\0'], "_")) } }),
    ),
    (
        "/local-data/addresses/<key>",
        |p| json!({ "local-data": { "addresses": { p: "192.0.2.1" } } }),
    ),
    (
        "/local-data/addresses-files/0",
        |p| json!({ "local-data": { "addresses-files": [p] } }),
    ),
    (
        "/local-data/rules/0/records",
        |p| json!({ "local-data": { "rules": [{ "records": p }] } }),
    ),
    (
        "/local-data/rpz/0/file",
        |p| json!({ "local-data": { "rpz": [{ "file": p }] } }),
    ),
    (
        "/forward/0/subtree",
        |p| json!({ "forward": [{ "subtree": p, "servers": ["127.0.0.1@9"] }] }),
    ),
    (
        "/forward/0/servers/0/hostname",
        |p| json!({ "forward": [{ "subtree": "a.test", "servers": [{ "address": "127.0.0.1", "transport": "tls", "hostname": p }] }] }),
    ),
    (
        "/forward/0/servers/0/ca-file",
        |p| json!({ "forward": [{ "subtree": "a.test", "servers": [{ "address": "127.0.0.1", "transport": "tls", "hostname": "h.test", "ca-file": p }] }] }),
    ),
    (
        "/network/tls/cert-file",
        |p| json!({ "network": { "tls": { "cert-file": p, "key-file": p } } }),
    ),
    (
        "/network/tls/sticket-secret",
        |p| json!({ "network": { "tls": { "sticket-secret": p } } }),
    ),
    (
        "/network/tls/sticket-secret-file",
        |p| json!({ "network": { "tls": { "sticket-secret-file": p } } }),
    ),
    (
        "/logging/dnstap/unix-socket",
        |p| json!({ "logging": { "dnstap": { "enable": true, "unix-socket": p } } }),
    ),
    (
        "/monitoring/graphite/prefix",
        |p| json!({ "monitoring": { "graphite": { "enable": true, "host": "127.0.0.1", "port": 9, "prefix": p } } }),
    ),
    (
        "/monitoring/graphite/host",
        |p| json!({ "monitoring": { "graphite": { "enable": true, "host": p } } }),
    ),
    (
        "/lua/script-file",
        |p| json!({ "lua": { "script-file": p } }),
    ),
    (
        "/views/0/subnets/0",
        |p| json!({ "views": [{ "subnets": [p], "answer": "refused" }] }),
    ),
    (
        "/dns64/prefix",
        |p| json!({ "dns64": { "enable": true, "prefix": p } }),
    ),
];

#[derive(Default)]
struct Tally {
    rejected: usize,
    kresd_refused: usize,
    ran: usize,
}

#[test]
fn hostile_strings_in_every_field_never_execute() {
    // One thread per field keeps the run short (kresd start-up is mostly waiting).
    let results: Vec<(Tally, usize)> = std::thread::scope(|scope| {
        let handles: Vec<_> = FIELDS
            .iter()
            .map(|f| scope.spawn(move || run_field(f)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut tally = Tally::default();
    let mut observed_verbatim = 0;
    for (t, o) in results {
        tally.rejected += t.rejected;
        tally.kresd_refused += t.kresd_refused;
        tally.ran += t.ran;
        observed_verbatim += o;
    }
    eprintln!(
        "injection: {} field x payload cases: {} rejected by validation or render, {} refused by kresd, {} ran as data ({} observed verbatim)",
        FIELDS.len() * PAYLOADS.len(),
        tally.rejected,
        tally.kresd_refused,
        tally.ran,
        observed_verbatim
    );
    assert_eq!(
        tally.rejected + tally.kresd_refused + tally.ran,
        FIELDS.len() * PAYLOADS.len()
    );
    // Not vacuous: free-text fields did reach a running kresd and came back verbatim.
    assert!(
        tally.ran >= 2 * PAYLOADS.len(),
        "too few cases ran: {}",
        tally.ran
    );
    assert!(
        observed_verbatim >= 2 * (PAYLOADS.len() - 1),
        "too few values observed: {observed_verbatim}"
    );
}

fn run_field((field, make): &Field) -> (Tally, usize) {
    let mut tally = Tally::default();
    let mut observed_verbatim = 0;
    for (pi, template) in PAYLOADS.iter().enumerate() {
        let dir = tempfile::Builder::new()
            .prefix("inject-")
            .tempdir()
            .unwrap();
        let marker = dir.path().join("MARKER");
        let payload = template.replace("{M}", marker.to_str().unwrap());
        let ip = unique_loopback();
        let port = free_port(ip);
        let mut v = json!({
            "rundir": dir.path().join("run"),
            "network": { "listen": [{ "interface": format!("{ip}@{port}") }] },
            "cache": { "storage": dir.path().join("cache") },
        });
        merge(&mut v, make(&payload));
        let Ok(config) = ResolverConfig::from_json_value(v) else {
            tally.rejected += 1;
            continue;
        };
        let Ok(lua) = render(&config, &RenderOptions::default()) else {
            tally.rejected += 1;
            continue;
        };
        // Whatever kresd makes of it, the payload's code must never run.
        std::fs::create_dir_all(dir.path().join("run")).unwrap();
        match Kresd::start_in(dir.path(), &lua, &KresdOptions::default()) {
            Err(_) => tally.kresd_refused += 1,
            Ok(k) => {
                tally.ran += 1;
                assert_eq!(
                    k.eval_json("injected == nil").unwrap(),
                    json!(true),
                    "{field} payload {pi}: injected global set\n{lua}"
                );
                observed_verbatim +=
                    check_value(field, &payload, &k, SocketAddr::new(IpAddr::V4(ip), port));
            }
        }
        assert_not_exists(&marker, field, pi, &lua);
    }
    (tally, observed_verbatim)
}

fn assert_not_exists(marker: &Path, field: &str, pi: usize, lua: &str) {
    assert!(
        !marker.exists(),
        "{field} payload {pi}: injected code ran\n{lua}"
    );
}

/// Where the field's value is observable, check it arrived verbatim; returns 1 if checked.
fn check_value(field: &str, payload: &str, k: &Kresd, addr: SocketAddr) -> usize {
    match field {
        "/hostname" if !payload.contains('\0') => {
            assert_eq!(k.eval_json("hostname()").unwrap(), json!(payload));
            1
        }
        "/nsid" => {
            let nsid = dns::query_nsid(addr, "nothing.invalid.", RecordType::A).unwrap();
            assert_eq!(nsid.as_deref(), Some(payload.as_bytes()), "nsid");
            1
        }
        "/monitoring/graphite/prefix" if !payload.contains('\0') => {
            assert_eq!(k.eval_json("graphite.prefix").unwrap(), json!(payload));
            1
        }
        "/local-data/records (TXT data)" => {
            let txt = dns::resolve(addr, "txt.inject.test.", RecordType::TXT).unwrap();
            let want = payload.replace(['"', '\\', '\n', '\r', '\0'], "_");
            assert_eq!(txt, vec![want]);
            1
        }
        _ => 0,
    }
}
