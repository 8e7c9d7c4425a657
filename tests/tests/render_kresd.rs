//! Rendered Lua runs on the real kresd 5.6 and every section takes effect.
//!
//! Each test renders a config (given as JSON, the same tree as config.yaml), starts `kresd -n -c`
//! on a loopback address of its own, and checks the effect with DNS queries or the control socket.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use kres_crd::config::ResolverConfig;
use kres_crd::lua::{RenderOptions, render};
use kres_tests::dns;
use kres_tests::knotd::{Knotd, Zone};
use kres_tests::kresd::{Kresd, KresdOptions};
use kres_tests::net::{free_port, unique_loopback};
use serde_json::{Value, json};
use tempfile::TempDir;

/// Loopback only: nothing these tests start can reach another host (see
/// `kres_tests::net::isolate_loopback_only`).
#[ctor::ctor(unsafe)]
fn private_network() {
    kres_tests::net::isolate_loopback_only()
}

/// A temp dir and a loopback endpoint for one kresd.
struct Setup {
    dir: TempDir,
    ip: Ipv4Addr,
    port: u16,
}

impl Setup {
    fn new() -> Setup {
        let ip = unique_loopback();
        let port = free_port(ip);
        let dir = tempfile::Builder::new()
            .prefix("render-kresd-")
            .tempdir()
            .unwrap();
        Setup { dir, ip, port }
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(self.ip), self.port)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Complete `v` with this setup's listen address, rundir and cache dir, then parse+validate.
    fn config(&self, mut v: Value) -> ResolverConfig {
        let obj = v.as_object_mut().unwrap();
        obj.entry("rundir").or_insert(json!(self.path("run")));
        let net = obj.entry("network").or_insert(json!({}));
        net.as_object_mut()
            .unwrap()
            .entry("listen")
            .or_insert(json!([{ "interface": format!("{}@{}", self.ip, self.port) }]));
        let cache = obj.entry("cache").or_insert(json!({}));
        cache
            .as_object_mut()
            .unwrap()
            .entry("storage")
            .or_insert(json!(self.path("cache")));
        std::fs::create_dir_all(self.path("run")).unwrap();
        std::fs::create_dir_all(self.path("cache")).unwrap();
        match ResolverConfig::from_json_value(v) {
            Ok(c) => c,
            Err(e) => panic!("config invalid:\n{e}"),
        }
    }

    /// Like `start`, but without validation: for render capabilities validation does not allow yet.
    fn start_unvalidated(&self, mut v: Value) -> Kresd {
        v["rundir"] = json!(self.path("run"));
        v["network"] = json!({ "listen": [{ "interface": format!("{}@{}", self.ip, self.port) }] });
        v["cache"] = json!({ "storage": self.path("cache") });
        std::fs::create_dir_all(self.path("run")).unwrap();
        let config: ResolverConfig = serde_json::from_value(v).unwrap();
        let lua = render(&config, &RenderOptions::default()).unwrap();
        Kresd::start_in(self.dir.path(), &lua, &KresdOptions::default())
            .unwrap_or_else(|e| panic!("kresd failed: {e:#}\n{lua}"))
    }

    fn render(&self, v: Value) -> String {
        render(&self.config(v), &RenderOptions::default()).unwrap()
    }

    fn start(&self, v: Value) -> Kresd {
        let lua = self.render(v);
        match Kresd::start_in(self.dir.path(), &lua, &KresdOptions::default()) {
            Ok(k) => k,
            Err(e) => panic!("kresd failed: {e:#}\n--- rendered Lua ---\n{lua}"),
        }
    }
}

fn answers(server: SocketAddr, name: &str, rtype: RecordType) -> Vec<String> {
    dns::resolve(server, name, rtype).unwrap_or_else(|e| panic!("{name} {rtype}: {e:#}"))
}

fn rcode(server: SocketAddr, name: &str, rtype: RecordType) -> ResponseCode {
    dns::rcode(&dns::query(server, name, rtype).unwrap_or_else(|e| panic!("{name} {rtype}: {e:#}")))
}

fn ttls(server: SocketAddr, name: &str, rtype: RecordType) -> Vec<u32> {
    dns::query(server, name, rtype)
        .unwrap()
        .answers
        .iter()
        .map(|r| r.ttl)
        .collect()
}

#[test]
fn local_data_addresses_records_nodata_and_ttl_answer() {
    let s = Setup::new();
    let _k = s.start(json!({
        "local-data": {
            "ttl": "2m",
            "nodata": true,
            "addresses": {
                "host.local-data.test": ["192.0.2.1", "2001:db8::1"],
                "v4only.local-data.test": "192.0.2.2"
            },
            "records": "txt.local-data.test. 600 TXT \"hello world\"\nmulti.local-data.test. A 192.0.2.3\nmulti.local-data.test. A 192.0.2.4\n"
        }
    }));
    let a = s.addr();
    assert_eq!(
        answers(a, "host.local-data.test.", RecordType::A),
        vec!["192.0.2.1"]
    );
    assert_eq!(ttls(a, "host.local-data.test.", RecordType::A), vec![120]);
    assert_eq!(
        answers(a, "host.local-data.test.", RecordType::AAAA),
        vec!["2001:db8::1"]
    );
    // nodata: the name exists, the type does not -> NOERROR with no answer.
    let r = dns::query(a, "v4only.local-data.test.", RecordType::AAAA).unwrap();
    assert_eq!(dns::rcode(&r), ResponseCode::NoError);
    assert!(r.answers.is_empty(), "{:?}", r.answers);
    assert_eq!(
        answers(a, "txt.local-data.test.", RecordType::TXT),
        vec!["hello world"]
    );
    assert_eq!(ttls(a, "txt.local-data.test.", RecordType::TXT), vec![600]);
    let mut multi = answers(a, "multi.local-data.test.", RecordType::A);
    multi.sort();
    assert_eq!(multi, vec!["192.0.2.3", "192.0.2.4"]);
    assert_eq!(
        ttls(a, "multi.local-data.test.", RecordType::A),
        vec![120, 120]
    );
    let r = dns::query(a, "multi.local-data.test.", RecordType::MX).unwrap();
    assert_eq!(
        (dns::rcode(&r), r.answers.len()),
        (ResponseCode::NoError, 0)
    );
    // Addresses also give reverse records.
    assert_eq!(
        answers(a, "1.2.0.192.in-addr.arpa.", RecordType::PTR),
        vec!["host.local-data.test."]
    );
}

#[test]
fn forward_and_stub_reach_a_real_knotd() {
    let fwd = Knotd::start(unique_loopback(), &[Zone::example_test()]).unwrap();
    let stub_zone = Zone {
        origin: "stub.test.".into(),
        records: "www 300 A 192.0.2.99\n".into(),
    };
    // Upstream (and this project's validation) allows `authoritative` only on port 53: a stub
    // target is addressed like an authoritative server. Every 127.x address is ours, so knotd
    // takes port 53 on a private one (needs root or CAP_NET_BIND_SERVICE).
    let stub = Knotd::start_on(unique_loopback(), 53, &[stub_zone]).unwrap();
    let s = Setup::new();
    let _k = s.start(json!({
        "forward": [
            {
                "subtree": "example.test",
                "servers": [fwd.addr.to_string().replace(':', "@")],
                "options": { "dnssec": false }
            },
            {
                "subtree": ["stub.test"],
                "servers": [stub.addr.ip().to_string()],
                "options": { "authoritative": true, "dnssec": false }
            }
        ]
    }));
    let a = s.addr();
    assert_eq!(
        answers(a, "www.example.test.", RecordType::A),
        vec!["192.0.2.10"]
    );
    assert_eq!(
        answers(a, "txt.example.test.", RecordType::TXT),
        vec!["hello from knotd"]
    );
    assert_eq!(
        answers(a, "www.stub.test.", RecordType::A),
        vec!["192.0.2.99"]
    );
    assert_eq!(
        rcode(a, "nope.stub.test.", RecordType::A),
        ResponseCode::NXDomain
    );
}

#[test]
fn views_refuse_a_subnet_and_the_most_specific_subnet_wins() {
    let s = Setup::new();
    // Three client addresses in one /24: one refused by a /24 view, one allowed by a /32 view
    // inside it (the more specific view must win whatever the order in the config), one outside.
    let inside = unique_loopback();
    let o = inside.octets();
    let allowed = Ipv4Addr::new(o[0], o[1], o[2], o[3] ^ 0x80);
    let outside = Ipv4Addr::new(o[0], o[1], o[2].wrapping_add(100), o[3]);
    let _k = s.start(json!({
        "views": [
            { "subnets": [format!("{}.{}.{}.0/24", o[0], o[1], o[2])], "answer": "refused" },
            { "subnets": [format!("{allowed}/32")], "answer": "allow" }
        ],
        "local-data": { "addresses": { "name.view.test": "192.0.2.7" } }
    }));
    let q = |src: Ipv4Addr| {
        dns::rcode(
            &dns::query_from(IpAddr::V4(src), s.addr(), "name.view.test.", RecordType::A).unwrap(),
        )
    };
    assert_eq!(q(inside), ResponseCode::Refused);
    assert_eq!(q(allowed), ResponseCode::NoError);
    assert_eq!(q(outside), ResponseCode::NoError);
}

#[test]
fn dns64_synthesizes_aaaa_for_an_ipv4_only_name() {
    let knot = Knotd::start(unique_loopback(), &[Zone::example_test()]).unwrap();
    let s = Setup::new();
    let _k = s.start(json!({
        "forward": [{
            "subtree": "example.test",
            "servers": [knot.addr.to_string().replace(':', "@")],
            "options": { "dnssec": false }
        }],
        "dns64": { "enable": true, "prefix": "64:ff9b::/96" }
    }));
    let a = s.addr();
    assert_eq!(
        answers(a, "ipv4only.example.test.", RecordType::AAAA),
        vec!["64:ff9b::c000:22c"]
    );
    // A name with a real AAAA keeps it.
    assert_eq!(
        answers(a, "www.example.test.", RecordType::AAAA),
        vec!["2001:db8::10"]
    );
}

#[test]
fn cache_settings_reach_kresd() {
    let s = Setup::new();
    let k = s.start(json!({
        "cache": {
            "size-max": "20M", "ttl-min": "7s", "ttl-max": "2h", "ns-timeout": "1500ms",
            "prefetch": { "expiring": true, "prediction": { "enable": true, "window": "10m", "period": 12 } }
        }
    }));
    assert_eq!(
        k.eval_json("cache.current_size").unwrap(),
        json!(20 * 1024 * 1024)
    );
    assert_eq!(k.eval_json("cache.min_ttl()").unwrap(), json!(7));
    assert_eq!(k.eval_json("cache.max_ttl()").unwrap(), json!(7200));
    assert_eq!(k.eval_json("cache.ns_tout()").unwrap(), json!(1500));
    let storage = k.eval_json("cache.current_storage").unwrap();
    assert!(
        storage
            .as_str()
            .unwrap()
            .contains(s.path("cache").to_str().unwrap()),
        "{storage}"
    );
    assert!(s.path("cache").join("data.mdb").exists());
    // prefetch -> the predict module with the configured window (minutes) and period.
    assert_eq!(
        k.eval_json("{predict.window, predict.period}").unwrap(),
        json!([10, 12])
    );
}

#[test]
fn nsid_is_sent_in_replies() {
    let s = Setup::new();
    let _k = s.start(json!({
        "nsid": "resolver-under-test",
        "local-data": { "addresses": { "n.nsid.test": "192.0.2.8" } }
    }));
    let nsid = dns::query_nsid(s.addr(), "n.nsid.test.", RecordType::A).unwrap();
    assert_eq!(nsid.as_deref(), Some(&b"resolver-under-test"[..]));
}

#[test]
fn options_take_effect() {
    let s = Setup::new();
    let k = s.start(json!({
        "options": {
            "refuse-no-rd": true, "minimize": false, "query-loopback": true, "glue-checking": "strict",
            "serve-stale": true, "rebinding-protection": true, "violators-workarounds": true, "priming": false
        },
        "local-data": { "addresses": { "o.options.test": "192.0.2.9" } }
    }));
    let no_rd = dns::query_with(
        s.addr(),
        "o.options.test.",
        RecordType::A,
        Duration::from_secs(2),
        |m| {
            m.metadata.recursion_desired = false;
        },
    )
    .unwrap();
    assert_eq!(dns::rcode(&no_rd), ResponseCode::Refused);
    assert_eq!(
        rcode(s.addr(), "o.options.test.", RecordType::A),
        ResponseCode::NoError
    );
    assert_eq!(k.eval_json("option('NO_MINIMIZE')").unwrap(), json!(true));
    assert_eq!(k.eval_json("option('ALLOW_LOCAL')").unwrap(), json!(true));
    assert_eq!(k.eval_json("mode()").unwrap(), json!("strict"));
    let modules = k.eval_json("modules.list()").unwrap().to_string();
    for m in ["serve_stale", "rebinding", "workarounds", "refuse_nord"] {
        assert!(
            modules.contains(&format!("\"{m}\"")),
            "{m} not loaded: {modules}"
        );
    }
    assert!(!modules.contains("\"priming\""), "{modules}");

    // The opposite settings.
    let s2 = Setup::new();
    let k2 = s2.start(json!({
        "options": { "refuse-no-rd": false, "minimize": true },
        "local-data": { "addresses": { "o.options.test": "192.0.2.9" } }
    }));
    let no_rd = dns::query_with(
        s2.addr(),
        "o.options.test.",
        RecordType::A,
        Duration::from_secs(2),
        |m| {
            m.metadata.recursion_desired = false;
        },
    )
    .unwrap();
    assert_eq!(dns::rcode(&no_rd), ResponseCode::NoError);
    assert_eq!(k2.eval_json("option('NO_MINIMIZE')").unwrap(), json!(false));
}

#[test]
fn logging_level_and_groups_take_effect() {
    let s = Setup::new();
    let k = s.start(json!({ "logging": { "level": "info", "groups": ["cache", "policy"] } }));
    assert_eq!(k.eval_json("log_level()").unwrap(), json!("info"));
    let groups = k.eval_json("log_groups()").unwrap();
    let mut g: Vec<String> = groups
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    g.sort();
    assert_eq!(g, vec!["cache", "policy"]);
}

#[test]
fn lua_script_and_script_file_run() {
    let s = Setup::new();
    let k = s.start(json!({ "lua": { "script": "script_marker = 6 * 7\nhints = hints" } }));
    assert_eq!(k.eval_json("script_marker").unwrap(), json!(42));

    let s2 = Setup::new();
    let file = s2.path("extra.lua");
    std::fs::write(&file, "file_marker = 'from file'\n").unwrap();
    let k2 = s2.start(json!({ "lua": { "script-file": file } }));
    assert_eq!(k2.eval_json("file_marker").unwrap(), json!("from file"));
}

#[test]
fn rpz_file_blocks_and_answers() {
    let s = Setup::new();
    let rpz = s.path("block.rpz");
    std::fs::write(
        &rpz,
        "$TTL 300\n@ SOA localhost. root.localhost. 1 3600 900 604800 300\n\
         blocked.rpz.test CNAME .\n*.wild.rpz.test CNAME .\nforged.rpz.test A 192.0.2.77\n",
    )
    .unwrap();
    let _k = s.start(json!({ "local-data": { "rpz": [{ "file": rpz }] } }));
    let a = s.addr();
    assert_eq!(
        rcode(a, "blocked.rpz.test.", RecordType::A),
        ResponseCode::NXDomain
    );
    assert_eq!(
        rcode(a, "x.wild.rpz.test.", RecordType::A),
        ResponseCode::NXDomain
    );
    assert_eq!(
        answers(a, "forged.rpz.test.", RecordType::A),
        vec!["192.0.2.77"]
    );
}

#[test]
fn trust_anchors_and_negative_trust_anchors_are_installed() {
    let s = Setup::new();
    let ds = "ta.example. 3600 IN DS 12345 8 2 49FD46E6C4B45C55D4AC69CBD3CD34AC1AFE51DE8AE3D3EAE7B7B37BF5F3AB4E";
    let ta_file = s.path("tafile.keys");
    std::fs::write(
        &ta_file,
        ds.replace("ta.example.", "tafile.example.") + "\n",
    )
    .unwrap();
    let k = s.start(json!({
        "dnssec": {
            "trust-anchors": [ds],
            "trust-anchors-files": [{ "file": ta_file, "read-only": true }],
            "negative-trust-anchors": ["nta.example", "other.example"]
        },
        "forward": [{ "subtree": "insecure.example", "servers": ["127.0.0.1@9"], "options": { "dnssec": false } }]
    }));
    assert_eq!(
        k.eval_json("trust_anchors.keysets[todname('ta.example.')] ~= nil")
            .unwrap(),
        json!(true)
    );
    assert_eq!(
        k.eval_json("trust_anchors.keysets[todname('tafile.example.')] ~= nil")
            .unwrap(),
        json!(true)
    );
    // The root anchor shipped with the package is still there.
    assert_eq!(
        k.eval_json("trust_anchors.keysets['\\0'] ~= nil").unwrap(),
        json!(true)
    );
    let mut nta: Vec<String> = k
        .eval_json("trust_anchors.insecure")
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    nta.sort();
    assert_eq!(
        nta,
        vec!["insecure.example.", "nta.example.", "other.example."]
    );
}

#[test]
fn dnssec_disabled_removes_the_root_anchor() {
    let s = Setup::new();
    let k = s.start(json!({ "dnssec": { "enable": false } }));
    assert_eq!(
        k.eval_json("trust_anchors.keysets['\\0'] == nil").unwrap(),
        json!(true)
    );
}

#[test]
fn the_example_config_starts() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../manifests/examples/config.yaml"
    ))
    .unwrap();
    let mut v: Value = serde_norway::from_str(&text).unwrap();
    // Run it on this test's own endpoint and dirs; everything else as shipped.
    let s = Setup::new();
    v["network"]["listen"] = json!([{ "interface": format!("{}@{}", s.ip, s.port) }]);
    v["cache"]["storage"] = json!(s.path("cache"));
    v["rundir"] = json!(s.path("run"));
    let k = s.start(v);
    assert_eq!(
        answers(s.addr(), "router.home.example.test.", RecordType::A),
        vec!["192.168.1.1"]
    );
    assert_eq!(
        answers(s.addr(), "printer.home.example.test.", RecordType::A),
        vec!["192.168.1.20"]
    );
    assert_eq!(
        k.eval_json("cache.current_size").unwrap(),
        json!(50 * 1024 * 1024)
    );
}

#[test]
fn local_data_rules_subtrees_answer() {
    let s = Setup::new();
    let _k = s.start(json!({
        "local-data": {
            "rules": [
                { "name": "blocked.rules.test", "subtree": "nxdomain" },
                { "name": "redir.rules.test", "subtree": "redirect", "address": "192.0.2.50" },
                { "name": "empty.rules.test", "subtree": "empty" },
                { "name": "exact.rules.test", "address": ["192.0.2.51", "2001:db8::51"], "ttl": "42s" }
            ]
        }
    }));
    let a = s.addr();
    assert_eq!(
        rcode(a, "blocked.rules.test.", RecordType::A),
        ResponseCode::NXDomain
    );
    assert_eq!(
        rcode(a, "x.y.blocked.rules.test.", RecordType::A),
        ResponseCode::NXDomain
    );
    assert_eq!(
        answers(a, "redir.rules.test.", RecordType::A),
        vec!["192.0.2.50"]
    );
    assert_eq!(
        answers(a, "any.thing.redir.rules.test.", RecordType::A),
        vec!["192.0.2.50"]
    );
    let top = dns::query(a, "empty.rules.test.", RecordType::A).unwrap();
    assert_eq!(
        (dns::rcode(&top), top.answers.len()),
        (ResponseCode::NoError, 0)
    );
    assert_eq!(
        rcode(a, "below.empty.rules.test.", RecordType::A),
        ResponseCode::NXDomain
    );
    assert_eq!(
        answers(a, "exact.rules.test.", RecordType::AAAA),
        vec!["2001:db8::51"]
    );
    assert_eq!(ttls(a, "exact.rules.test.", RecordType::A), vec![42]);
}

#[test]
fn network_settings_reach_kresd() {
    let s = Setup::new();
    let dot = free_port(s.ip);
    let doh = free_port(s.ip);
    let k = s.start(json!({
        "network": {
            "listen": [
                { "interface": format!("{}@{}", s.ip, s.port) },
                { "interface": s.ip.to_string(), "port": dot, "kind": "dot" },
                { "interface": format!("{}@{}", s.ip, doh), "kind": "doh2" }
            ],
            "tcp-pipeline": 42,
            "edns-buffer-size": { "downstream": "4096B", "upstream": "1400B" }
        }
    }));
    let list = k.eval_json("net.list()").unwrap();
    let mut seen: Vec<(u64, String)> = list
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["transport"]["ip"] == json!(s.ip.to_string()))
        .map(|e| {
            (
                e["transport"]["port"].as_u64().unwrap(),
                e["kind"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    seen.sort();
    seen.dedup();
    let mut want = vec![
        (u64::from(s.port), "dns".to_string()),
        (u64::from(dot), "tls".into()),
        (u64::from(doh), "doh2".into()),
    ];
    want.sort();
    assert_eq!(seen, want, "{list}");
    assert_eq!(k.eval_json("net.tcp_pipeline()").unwrap(), json!(42));
    assert_eq!(k.eval_json("net.bufsize()").unwrap(), json!(4096));
}

#[test]
fn monitoring_stats_and_graphite_export() {
    let graphite = std::net::UdpSocket::bind((unique_loopback(), 0)).unwrap();
    graphite
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let g = graphite.local_addr().unwrap();
    let s = Setup::new();
    let k = s.start(json!({
        "monitoring": {
            "metrics": "always",
            "graphite": { "enable": true, "host": g.ip().to_string(), "port": g.port(), "prefix": "kres-test", "interval": "1s" }
        },
        "local-data": { "addresses": { "m.monitoring.test": "192.0.2.60" } }
    }));
    assert_eq!(
        answers(s.addr(), "m.monitoring.test.", RecordType::A),
        vec!["192.0.2.60"]
    );
    // `metrics: always` loads the stats module; the query above is counted.
    let stats = k.eval_json("stats.list()").unwrap();
    assert!(stats["answer.total"].as_u64().unwrap() >= 1, "{stats}");
    assert_eq!(
        k.eval_json("kres_operator_statistics()['answer.total'] >= 1")
            .unwrap(),
        json!(true)
    );
    // The graphite bridge sends plaintext metrics with the configured prefix.
    let mut buf = [0u8; 65536];
    let n = graphite
        .recv(&mut buf)
        .expect("a graphite datagram within 5 s");
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.lines().any(|l| l.starts_with("kres-test.")), "{text}");
}

#[test]
fn address_renumbering_rewrites_answers() {
    let s = Setup::new();
    let _k = s.start(json!({
        "network": {
            "listen": [{ "interface": format!("{}@{}", s.ip, s.port) }],
            "address-renumbering": [{ "source": "10.10.10.0/24", "destination": "192.168.77.0" }]
        },
        "local-data": { "addresses": { "r.renumber.test": "10.10.10.5" } }
    }));
    assert_eq!(
        answers(s.addr(), "r.renumber.test.", RecordType::A),
        vec!["192.168.77.5"]
    );
}

/// Minimal Frame Streams (fstrm) reader: accept one writer, complete the bidirectional handshake
/// (READY -> ACCEPT), then return the first data frame.
fn fstrm_first_frame(listener: std::os::unix::net::UnixListener) -> Vec<u8> {
    use std::io::{Read, Write};
    let (mut c, _) = listener.accept().unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let read_u32 = |c: &mut std::os::unix::net::UnixStream| {
        let mut b = [0u8; 4];
        c.read_exact(&mut b).unwrap();
        u32::from_be_bytes(b)
    };
    loop {
        let len = read_u32(&mut c);
        if len != 0 {
            let mut data = vec![0u8; len as usize];
            c.read_exact(&mut data).unwrap();
            return data;
        }
        let clen = read_u32(&mut c);
        let mut control = vec![0u8; clen as usize];
        c.read_exact(&mut control).unwrap();
        let ctype = u32::from_be_bytes(control[..4].try_into().unwrap());
        if ctype == 4 {
            // READY: answer ACCEPT (1) echoing its fields (the content type).
            let mut accept = 1u32.to_be_bytes().to_vec();
            accept.extend_from_slice(&control[4..]);
            let mut frame = 0u32.to_be_bytes().to_vec();
            frame.extend_from_slice(&(accept.len() as u32).to_be_bytes());
            frame.extend_from_slice(&accept);
            c.write_all(&frame).unwrap();
        }
    }
}

#[test]
fn dnstap_sends_messages_to_its_socket() {
    let s = Setup::new();
    let sock = s.path("dnstap.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let reader = std::thread::spawn(move || fstrm_first_frame(listener));
    let _k = s.start(json!({
        "logging": { "dnstap": { "enable": true, "unix-socket": sock, "log-queries": true, "log-responses": true } },
        "local-data": { "addresses": { "t.dnstap.test": "192.0.2.70" } }
    }));
    assert_eq!(
        answers(s.addr(), "t.dnstap.test.", RecordType::A),
        vec!["192.0.2.70"]
    );
    let frame = reader.join().unwrap();
    // A dnstap protobuf carrying the query: the wire-format name is inside.
    let wire_name = b"\x01t\x06dnstap\x04test\x00";
    assert!(
        frame.windows(wire_name.len()).any(|w| w == wire_name),
        "{frame:?}"
    );
}

/// kresd 5.6 can match views on destination subnet and protocol too (the renderer's view rule
/// helper); validation does not allow it yet, so this renders an unvalidated config.
#[test]
fn views_with_destination_and_protocol_conditions_work_on_kresd_5() {
    let views = |s: &Setup, with_match: bool| {
        let mut views = vec![
            json!({ "subnets": ["127.0.0.0/8"], "dst-subnet": "192.0.2.0/24", "answer": "refused" }),
            json!({ "subnets": ["127.0.0.0/8"], "protocols": ["tcp53"], "answer": "refused" }),
        ];
        if with_match {
            views.push(json!({ "subnets": ["127.0.0.0/8"], "dst-subnet": format!("{}/32", s.ip), "protocols": ["udp53"], "answer": "refused" }));
        }
        json!({ "views": views, "local-data": { "addresses": { "v.views.test": "192.0.2.80" } } })
    };
    // Neither the other destination nor the other protocol matches a UDP query to our address.
    let s = Setup::new();
    let _k = s.start_unvalidated(views(&s, false));
    assert_eq!(
        answers(s.addr(), "v.views.test.", RecordType::A),
        vec!["192.0.2.80"]
    );
    // Destination and protocol both matching: refused.
    let s2 = Setup::new();
    let _k2 = s2.start_unvalidated(views(&s2, true));
    assert_eq!(
        rcode(s2.addr(), "v.views.test.", RecordType::A),
        ResponseCode::Refused
    );
}

/// `SocketMode::Inherited`: no `net.listen`; kresd serves on a socket it inherited (`-S FD`).
/// The socket is handed over as kresd's stdin (FD 0), which `-n` leaves alone.
#[test]
fn inherited_socket_mode_serves_on_the_passed_socket() {
    use kres_crd::lua::SocketMode;
    let s = Setup::new();
    let config =
        s.config(json!({ "local-data": { "addresses": { "i.inherited.test": "192.0.2.90" } } }));
    let lua = render(
        &config,
        &RenderOptions {
            sockets: SocketMode::Inherited,
            ..RenderOptions::default()
        },
    )
    .unwrap();
    assert!(!lua.contains("net.listen("), "{lua}");
    let sock = std::net::UdpSocket::bind(s.addr()).unwrap();
    let opts = KresdOptions {
        args: vec!["-S".into(), "0".into()],
        stdin: Some(std::os::fd::OwnedFd::from(sock)),
        ..KresdOptions::default()
    };
    let k = Kresd::start_in(s.dir.path(), &lua, &opts).unwrap();
    assert_eq!(
        answers(s.addr(), "i.inherited.test.", RecordType::A),
        vec!["192.0.2.90"]
    );
    // kresd bound nothing else itself (no default 127.0.0.1@53 fallback).
    let list = k.eval_json("net.list()").unwrap();
    let dns: Vec<&Value> = list
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == json!("dns"))
        .collect();
    assert_eq!(dns.len(), 1, "{list}");
}

/// `SocketMode::PodIp` + `cache_dir_env` (how Kubernetes pods run kresd): every listen entry is
/// bound on `$POD_IP` whatever address it names, and the cache opens in `$KRES_CACHE_DIR`, not
/// in `cache.storage`.
#[test]
fn pod_ip_mode_listens_on_the_env_address_and_caches_in_the_env_dir() {
    use kres_crd::lua::SocketMode;
    let s = Setup::new();
    let config = s.config(json!({
        "network": { "listen": [{ "interface": format!("0.0.0.0@{}", s.port) }] },
        "local-data": { "addresses": { "p.pod.test": "192.0.2.91" } },
    }));
    let lua = render(
        &config,
        &RenderOptions {
            sockets: SocketMode::PodIp,
            cache_dir_env: Some("KRES_CACHE_DIR"),
        },
    )
    .unwrap();
    assert!(!lua.contains("0.0.0.0"), "{lua}");
    let cache = s.path("pod-cache");
    std::fs::create_dir_all(&cache).unwrap();
    let opts = KresdOptions {
        env: vec![
            ("POD_IP".into(), s.ip.to_string().into()),
            ("KRES_CACHE_DIR".into(), cache.clone().into()),
        ],
        ..KresdOptions::default()
    };
    let k = Kresd::start_in(s.dir.path(), &lua, &opts).unwrap();
    assert_eq!(
        answers(s.addr(), "p.pod.test.", RecordType::A),
        vec!["192.0.2.91"]
    );
    let list = k.eval_json("net.list()").unwrap();
    let ips: Vec<&Value> = list
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == json!("dns"))
        .map(|e| &e["transport"]["ip"])
        .collect();
    assert!(
        !ips.is_empty() && ips.iter().all(|ip| *ip == &json!(s.ip.to_string())),
        "{list}"
    );
    assert!(
        cache.join("data.mdb").exists(),
        "cache not opened in $KRES_CACHE_DIR"
    );
    assert!(
        !s.path("cache").join("data.mdb").exists(),
        "cache.storage used"
    );
    // Without POD_IP kresd refuses to start, naming the variable.
    let s2 = Setup::new();
    let err = Kresd::start_in(s2.dir.path(), &lua, &KresdOptions::default())
        .err()
        .expect("kresd without POD_IP must fail");
    assert!(format!("{err:#}").contains("POD_IP is not set"), "{err:#}");
}

/// Every shipped example (manifests/examples/config*.yaml) starts on kresd 5.6, run on this test's
/// own endpoint and directories (everything else as shipped).
#[test]
fn every_example_config_starts() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../manifests/examples");
    let mut started = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !(name.starts_with("config") && name.ends_with(".yaml")) {
            continue;
        }
        let mut v: Value =
            serde_norway::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let s = Setup::new();
        v["network"]["listen"] = json!([{ "interface": format!("{}@{}", s.ip, s.port) }]);
        v["cache"]["storage"] = json!(s.path("cache"));
        v["rundir"] = json!(s.path("run"));
        let lua = s.render(v);
        if let Err(e) = Kresd::start_in(s.dir.path(), &lua, &KresdOptions::default()) {
            panic!("{name}: kresd failed: {e:#}\n{lua}");
        }
        started += 1;
    }
    assert!(started >= 2, "examples found: {started}");
}
