//! Unit tests of the config model.

use super::*;

#[test]
fn empty_document_is_defaults() {
    let c = ResolverConfig::from_yaml_str("").unwrap();
    assert_eq!(c, ResolverConfig::default());
    let c = ResolverConfig::from_yaml_str("{}").unwrap();
    assert_eq!(c, ResolverConfig::default());
}

#[test]
fn defaults_round_trip() {
    let d = ResolverConfig::default();
    let v = serde_json::to_value(&d).unwrap();
    let back = ResolverConfig::from_json_value(v).unwrap();
    assert_eq!(back, d);
}

#[test]
fn schema_generates() {
    let s = json_schema();
    assert!(s["properties"]["network"].is_object(), "{s}");
}

const FULL: &str = r#"
version: 1
nsid: resolver-1
hostname: res1
rundir: /run/kres
workers: auto
management:
  interface: 127.0.0.1@5000
options:
  glue-checking: strict
  minimize: false
  serve-stale: true
network:
  do-ipv6: false
  out-interface-v4: 192.0.2.1
  tcp-pipeline: 50
  edns-buffer-size:
    upstream: 1400B
    downstream: 1K
  address-renumbering:
    - source: 10.0.0.0/24
      destination: 192.0.2.0
    - source: 10.1.0.1
      destination: 192.0.2.7!
  tls:
    cert-file: /etc/cert.pem
    key-file: /etc/key.pem
    padding: 128
  proxy-protocol:
    enable: true
    allow: [127.0.0.1, 10.0.0.0/8]
  listen:
    - interface: [127.0.0.1, "::1"]
      port: 5353
    - interface: lo@853
      kind: dot
views:
  - subnets: [10.0.0.0/8]
    answer: refused
    options:
      minimize: false
local-data:
  ttl: 5m
  addresses:
    Foo.Example.: 192.0.2.1
    bar.example: [192.0.2.2, "2001:db8::2"]
  addresses-files: [/etc/hosts]
  records: |
    example.test. 300 IN A 192.0.2.9
  rpz:
    - file: /etc/rpz.zone
forward:
  - subtree: example.test
    servers: [127.0.0.1@5354]
    options:
      dnssec: false
  - subtree: [auth.example]
    servers: [192.0.2.53]
    options:
      authoritative: true
  - subtree: [., "příklad.cz"]
    servers:
      - address: [193.17.47.1, 185.43.135.1]
        transport: tls
        hostname: odvr.nic.cz
      - address: 9.9.9.9@853
        transport: tls
        pin-sha256: YQ0VMWhwpDdFBQPv1ZEWRgF2L7IPGQ6c0WwQaLuOO+o=
cache:
  storage: /var/cache/kres
  size-max: 1G
  ttl-min: 1s
  ttl-max: 2d
  ns-timeout: 2s
  garbage-collector:
    interval: 2s
    threshold: 90
  prefill:
    - origin: .
      url: https://www.internic.net/domain/root.zone
      refresh-interval: 12h
  prefetch:
    expiring: true
    prediction:
      enable: true
      window: 10m
      period: 12
dnssec:
  log-bogus: true
  trust-anchors: [". 3600 IN DS 20326 8 2 E06D44B80B8F1D39A95C0B0D7C65D08458E880409BBC683457104237C7F8EC8D"]
  negative-trust-anchors: [bad.example]
dns64:
  enable: true
  prefix: 64:ff9b::/96
  exclude-subnets: ["64:ff9b::/104"]
logging:
  level: info
  target: stderr
  groups: [cache, tls_cl, renum]
  dnstap:
    enable: true
    unix-socket: /run/dnstap.sock
monitoring:
  metrics: always
  graphite:
    enable: true
    host: graphite.example
lua:
  script: "print('hi')"
"#;

#[test]
fn full_document_parses() {
    let c = ResolverConfig::from_yaml_str(FULL).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.workers, Workers::Auto);
    assert_eq!(
        c.forward[2].subtree.items()[1].as_str(),
        "xn--pklad-zsa96e.cz."
    );
    assert_eq!(c.forward[0].subtree.items()[0].as_str(), "example.test.");
    assert!(c.forward[2].servers[1].is_tls());
    assert_eq!(c.cache.size_max.bytes(), 1 << 30);
    assert!(
        c.local_data
            .addresses
            .keys()
            .any(|k| k.as_str() == "foo.example.")
    );
    let v = serde_json::to_value(&c).unwrap();
    let back = ResolverConfig::from_json_value(v.clone()).unwrap_or_else(|e| panic!("{e}\n{v:#}"));
    assert_eq!(back, c);
}

fn errors_of(yaml: &str) -> ConfigErrors {
    match ResolverConfig::from_yaml_str(yaml) {
        Ok(c) => panic!("accepted: {c:?}"),
        Err(e) => e,
    }
}

#[test]
fn every_section_empty_mapping_is_default() {
    let d = ResolverConfig::default();
    for section in [
        "options",
        "network",
        "local-data",
        "fallback",
        "cache",
        "dnssec",
        "dns64",
        "logging",
        "monitoring",
        "lua",
        "rate-limiting",
        "defer",
    ] {
        let c = ResolverConfig::from_yaml_str(&format!("{section}: {{}}"))
            .unwrap_or_else(|e| panic!("{section}: {e}"));
        assert_eq!(c, d, "{section}");
        let c = ResolverConfig::from_yaml_str(&format!("{section}:"))
            .unwrap_or_else(|e| panic!("{section}: {e}"));
        assert_eq!(c, d, "{section} null");
    }
    for list in ["views", "forward"] {
        let c = ResolverConfig::from_yaml_str(&format!("{list}: []")).unwrap();
        assert_eq!(c, d, "{list}");
    }
}

#[test]
fn upstream_defaults() {
    let d = ResolverConfig::default();
    assert_eq!(d.version, 1);
    assert_eq!(d.rundir, None);
    assert_eq!(d.workers, Workers::Count(1));
    assert_eq!(
        d.management.unix_socket.as_ref().map(SocketPath::as_str),
        Some("/run/knot-resolver/kres-api.sock")
    );
    assert_eq!(d.cache.storage.as_str(), "/var/cache/knot-resolver");
    assert_eq!(d.cache.size_max.to_string(), "100M");
    assert_eq!(d.cache.ttl_min.to_string(), "5s");
    assert_eq!(d.cache.ttl_max.to_string(), "1d");
    assert_eq!(d.cache.ns_timeout.to_string(), "1000ms");
    assert_eq!(d.cache.garbage_collector.interval.to_string(), "1s");
    assert_eq!(d.cache.garbage_collector.threshold.get(), 80);
    assert_eq!(d.cache.garbage_collector.release.get(), 10);
    assert_eq!(d.cache.prefetch.prediction.window.to_string(), "15m");
    assert_eq!(d.cache.prefetch.prediction.period.get(), 24);
    assert_eq!(d.network.tcp_pipeline.get(), 100);
    assert_eq!(d.network.edns_buffer_size.upstream.bytes(), 1232);
    assert_eq!(d.network.edns_buffer_size.downstream.bytes(), 1232);
    assert_eq!(d.network.listen.len(), 2);
    assert_eq!(
        d.network.listen[0].interface.as_ref().unwrap().items()[0].to_string(),
        "127.0.0.1"
    );
    assert!(!d.network.listen[0].freebind);
    assert_eq!(
        d.network.listen[1].interface.as_ref().unwrap().items()[0].to_string(),
        "::1"
    );
    assert!(d.network.listen[1].freebind);
    assert_eq!(d.network.listen[0].effective_port(), 53);
    assert_eq!(d.network.tls.padding, TlsPadding::Enabled(true));
    assert!(d.options.minimize && d.options.refuse_no_rd && !d.options.serve_stale);
    assert!(d.dnssec.enable && d.dnssec.sentinel && d.dnssec.signal_query);
    assert_eq!(d.dns64.prefix.to_string(), "64:ff9b::/96");
    assert_eq!(d.logging.level, LogLevel::Notice);
    assert_eq!(d.logging.target, LogTarget::FromEnv);
    assert_eq!(d.monitoring.metrics, MetricsMode::Lazy);
    assert_eq!(d.monitoring.graphite.port.get(), 2003);
    assert_eq!(d.rate_limiting.instant_limit.get(), 50);
    assert_eq!(d.rate_limiting.capacity.get(), 524_288);
    assert_eq!(d.rate_limiting.slip.get(), 2);
    assert!(d.local_data.nodata);
    assert!(d.validate().is_ok());
}

#[test]
fn section_values_parse() {
    let c = ResolverConfig::from_yaml_str(FULL).unwrap();
    assert_eq!(c.nsid.as_deref(), Some("resolver-1"));
    assert_eq!(
        c.management.interface.unwrap().to_string(),
        "127.0.0.1@5000"
    );
    assert_eq!(c.options.glue_checking, GlueChecking::Strict);
    assert!(!c.network.do_ipv6);
    assert_eq!(c.network.edns_buffer_size.downstream.bytes(), 1024);
    assert!(c.network.address_renumbering[1].destination.exact);
    assert_eq!(
        c.network.address_renumbering[1].source.to_string(),
        "10.1.0.1/32"
    );
    assert_eq!(
        c.network.tls.padding,
        TlsPadding::BlockSize(Int0To512::new(128).unwrap())
    );
    assert_eq!(c.network.listen[1].kind, ListenKind::Dot);
    assert_eq!(c.network.listen[1].effective_port(), 853);
    assert_eq!(c.views[0].answer, Some(ViewAnswer::Refused));
    assert!(!c.views[0].options.minimize);
    assert_eq!(c.local_data.ttl.unwrap().as_duration().as_secs(), 300);
    assert_eq!(c.local_data.addresses.len(), 2);
    assert_eq!(c.cache.prefill[0].refresh_interval.seconds(), 43_200);
    assert!(c.cache.prefetch.prediction.enable);
    assert!(c.dnssec.log_bogus);
    assert_eq!(c.dnssec.negative_trust_anchors[0].as_str(), "bad.example.");
    assert_eq!(c.dns64.exclude_subnets[0].to_string(), "64:ff9b::/104");
    assert_eq!(
        c.logging.groups.as_deref(),
        Some(&[LogGroup::Cache, LogGroup::TlsCl, LogGroup::Renum][..])
    );
    assert_eq!(
        c.logging.dnstap.unix_socket.as_ref().unwrap().as_str(),
        "/run/dnstap.sock"
    );
    assert!(
        matches!(c.monitoring.graphite.host, Some(GraphiteHost::Name(ref n)) if n.as_str() == "graphite.example.")
    );
    assert_eq!(c.lua.script.as_deref(), Some("print('hi')"));
    assert_eq!(
        c.worker_count(),
        std::thread::available_parallelism().unwrap().get().min(256)
    );
}

#[test]
fn yaml_round_trip() {
    let c = ResolverConfig::from_yaml_str(FULL).unwrap();
    let yaml = serde_norway::to_string(&c).unwrap();
    let back = ResolverConfig::from_yaml_str(&yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    assert_eq!(back, c);
}

#[test]
fn domain_names_are_normalised() {
    for (input, expected) in [
        ("Example.COM", "example.com."),
        ("example.com.", "example.com."),
        (".", "."),
        ("příklad.cz", "xn--pklad-zsa96e.cz."),
        ("_dmarc.example", "_dmarc.example."),
        ("XN--PKLAD-ZSA96E.cz", "xn--pklad-zsa96e.cz."),
    ] {
        let d: DomainName = input.parse().unwrap();
        assert_eq!(d.as_str(), expected, "{input}");
    }
    for bad in [
        "",
        "a..b",
        "-a.example",
        "a-.example",
        "a b.example",
        &"a".repeat(64),
        &"a.".repeat(130),
    ] {
        assert!(bad.parse::<DomainName>().is_err(), "{bad:?}");
    }
}

#[test]
fn units_parse_and_print_back() {
    for s in ["0B", "1232B", "10K", "100M", "2G"] {
        assert_eq!(s.parse::<SizeUnit>().unwrap().to_string(), s);
    }
    for s in ["0us", "10ms", "5s", "15m", "12h", "1d"] {
        assert_eq!(s.parse::<TimeUnit>().unwrap().to_string(), s);
    }
    assert_eq!("2K".parse::<SizeUnit>().unwrap().bytes(), 2048);
    assert_eq!(
        "1d".parse::<TimeUnit>().unwrap().as_duration().as_secs(),
        86_400
    );
    assert_eq!("1500ms".parse::<TimeUnit>().unwrap().millis(), 1500);
    for bad in ["", "M", "10", "10k", "-1M", "1.5M", "10 M", "10MB"] {
        let e = bad.parse::<SizeUnit>().unwrap_err();
        assert!(e.contains("<int>(B|K|M|G)"), "{bad}: {e}");
    }
    for bad in ["", "s", "10", "10S", "1w", "-5s", "5 s"] {
        let e = bad.parse::<TimeUnit>().unwrap_err();
        assert!(e.contains("<int>(us|ms|s|m|h|d)"), "{bad}: {e}");
    }
}

#[test]
fn addresses_parse_and_print_back() {
    for s in ["127.0.0.1@53", "::1@5353", "2001:db8::1@853"] {
        assert_eq!(s.parse::<IpAddressPort>().unwrap().to_string(), s);
    }
    for s in ["127.0.0.1", "::1@53", "eth0", "eth0@853", "br-lan_1"] {
        assert_eq!(s.parse::<InterfaceOptionalPort>().unwrap().to_string(), s);
    }
    assert!("a@b@c".parse::<InterfaceOptionalPort>().is_err());
    assert_eq!("10.0.0.0/8".parse::<IpNetwork>().unwrap().prefix, 8);
    assert!("10.0.0.1/8".parse::<IpNetwork>().is_err());
    assert!("2001:db8::/129".parse::<IpNetwork>().is_err());
}

#[test]
fn all_errors_reported_at_once_with_original_indices() {
    let e = errors_of(
        "forward:\n  - subtree: example.com\n    servers: [bad1, 192.0.2.1, bad2]\ncache:\n  ttl-min: x\n  size-max: y\nnetwork:\n  listen:\n    - interface: 127.0.0.1\n      kind: nope\n    - interface: 127.0.0.2\n      kind: nope2\n",
    );
    let pointers: Vec<&str> = e.iter().map(|e| e.pointer.as_str()).collect();
    for p in [
        "/forward/0/servers/0",
        "/forward/0/servers/2",
        "/cache/ttl-min",
        "/cache/size-max",
        "/network/listen/0/kind",
        "/network/listen/1/kind",
    ] {
        assert!(pointers.contains(&p), "{p} missing in:\n{e}");
    }
    assert_eq!(e.len(), 6, "{e}");
    let servers2 = e
        .iter()
        .find(|e| e.pointer == "/forward/0/servers/2")
        .unwrap();
    assert_eq!(
        servers2.location,
        Some(Location {
            line: 3,
            column: 32
        })
    );
}

#[test]
fn semantic_errors_are_all_reported() {
    let e = errors_of(
        "management: {}\ncache: {ttl-min: 1d, ttl-max: 1h}\nrate-limiting: {enable: true}\ndefer: {enable: true}\n",
    );
    let pointers: Vec<&str> = e.iter().map(|e| e.pointer.as_str()).collect();
    assert_eq!(
        pointers,
        [
            "/management",
            "/cache/ttl-max",
            "/rate-limiting/enable",
            "/defer/enable"
        ],
        "{e}"
    );
    assert_eq!(
        e.0[1].location,
        Some(Location {
            line: 2,
            column: 31
        })
    );
}

#[test]
fn display_is_one_error_per_line() {
    let e = errors_of("version: 3\nworkers: 0\n");
    assert_eq!(
        e.to_string(),
        "1:10: /version: unsupported configuration version 3; only version 1 is supported\n2:10: /workers: must be 'auto' or in range 1..=256, got 0"
    );
    let e = errors_of("version: 3\n");
    assert_eq!(
        e.to_string(),
        "1:10: /version: unsupported configuration version 3; only version 1 is supported"
    );
    let two = ConfigErrors(vec![ConfigError::new("/a", "x"), ConfigError::new("", "y")]);
    assert_eq!(two.to_string(), "/a: x\n/: y");
}

#[test]
fn unknown_key_points_at_the_key() {
    let e = errors_of("cache:\n  size-max: 10M\n  sizemax: 10M\n");
    assert_eq!(e.len(), 1);
    assert_eq!(e.0[0].pointer, "/cache/sizemax");
    assert_eq!(e.0[0].location, Some(Location { line: 3, column: 3 }));
    assert!(
        e.0[0].message.contains("allowed keys: storage, size-max"),
        "{e}"
    );
}

#[test]
fn duplicate_keys_are_rejected() {
    let e = errors_of("cache:\n  size-max: 10M\n  size-max: 20M\n");
    assert_eq!(e.0[0].pointer, "/cache/size-max");
    assert_eq!(e.0[0].message, "duplicate key 'size-max'");
    assert_eq!(e.0[0].location, Some(Location { line: 3, column: 3 }));
    let e = errors_of("workers: 1\nworkers: 2\n");
    assert_eq!(e.0[0].pointer, "/workers");
}

#[test]
fn yaml_syntax_errors_have_positions() {
    let e = errors_of("cache:\n  size-max: [10M\nnetwork: {}\n");
    assert_eq!(e.len(), 1);
    assert!(e.0[0].message.starts_with("invalid YAML: "), "{e}");
    assert!(e.0[0].location.is_some_and(|l| l.line >= 2), "{e}");
    let e = errors_of("a: 'unterminated\n");
    assert!(e.0[0].message.starts_with("invalid YAML: "), "{e}");
    let e = errors_of("cache: {}\n---\ncache: {}\n");
    assert_eq!(e.0[0].message, "multiple YAML documents are not supported");
    assert_eq!(e.0[0].location.map(|l| l.line), Some(2));
    let e = errors_of("? [a, b]\n: c\n");
    assert!(
        e.0[0]
            .message
            .contains("mapping keys must be plain strings"),
        "{e}"
    );
    let e = errors_of("a: &k nsid\n*k : x\n");
    assert!(e.0[0].message.contains("not aliases"), "{e}");
    let e = errors_of("workers: !custom 3\n");
    assert!(
        e.0[0].message.contains("unsupported YAML tag '!custom'"),
        "{e}"
    );
}

#[test]
fn yaml_scalars_resolve_as_core_schema() {
    let c = ResolverConfig::from_yaml_str(
        "workers: 0x4\noptions: {minimize: False}\nnsid: !!str 123\nhostname: '42'\n",
    )
    .unwrap();
    assert_eq!(c.workers, Workers::Count(4));
    assert!(!c.options.minimize);
    assert_eq!(c.nsid.as_deref(), Some("123"));
    assert_eq!(c.hostname.as_deref(), Some("42"));
    let e = errors_of("nsid: 123\n");
    assert!(
        e.0[0]
            .message
            .contains("wrong type: integer `123`, expected a string"),
        "{e}"
    );
}

#[test]
fn aliases_work_and_bombs_are_bounded() {
    let c = ResolverConfig::from_yaml_str(
        "forward:\n  - subtree: a.example\n    servers: &s [192.0.2.1]\n  - subtree: b.example\n    servers: *s\n",
    )
    .unwrap();
    assert_eq!(c.forward[1].servers, c.forward[0].servers);
    let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..10 {
        let p = i - 1;
        bomb.push_str(&format!(
            "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
        ));
    }
    // How long this takes is benchmark output (`make bench`); the node limit is what is tested.
    let e = errors_of(&bomb);
    assert!(
        e.0[0]
            .message
            .contains("more than 1000000 nodes (aliases expanded)"),
        "{e}"
    );
}

#[test]
fn oversized_input_is_rejected_fast() {
    let big = format!("nsid: '{}'\n", "x".repeat(10 * 1024 * 1024));
    let e = errors_of(&big);
    assert_eq!(e.len(), 1);
    assert_eq!(e.0[0].pointer, "");
    assert!(
        e.0[0]
            .message
            .contains("the limit is 4194304 bytes (4 MiB)"),
        "{e}"
    );
    let e = ResolverConfig::from_yaml_bytes(big.as_bytes()).unwrap_err();
    assert!(e.0[0].message.contains("4 MiB"), "{e}");
}

#[test]
fn deep_nesting_is_rejected() {
    for open_close in [("[", "]"), ("{a: ", "}")] {
        let doc = format!(
            "lua: {}1{}\n",
            open_close.0.repeat(100_000),
            open_close.1.repeat(100_000)
        );
        let e = errors_of(&doc);
        assert!(
            e.0[0]
                .message
                .contains("nested too deeply (the limit is 64 levels)"),
            "{e}"
        );
        assert!(e.0[0].location.is_some());
    }
    let mut v = serde_json::json!(1);
    for _ in 0..1_000 {
        v = serde_json::json!([v]);
    }
    let e = ResolverConfig::from_json_value(serde_json::json!({ "lua": v })).unwrap_err();
    assert!(e.0[0].message.contains("nested too deeply"), "{e}");
}

#[test]
fn invalid_utf8_is_rejected() {
    let e = ResolverConfig::from_yaml_bytes(b"nsid: \"\xff\xfe\"\n").unwrap_err();
    assert_eq!(e.len(), 1);
    assert_eq!(
        e.0[0].message,
        "input is not valid UTF-8 (invalid byte at offset 7)"
    );
    let ok = ResolverConfig::from_yaml_bytes(b"nsid: abc\n").unwrap();
    assert_eq!(ok.nsid.as_deref(), Some("abc"));
}

#[test]
fn json_input_errors_have_pointers_without_locations() {
    let e = ResolverConfig::from_json_value(serde_json::json!({
        "cache": { "size-max": "lots" },
        "forward": [{ "subtree": "a.example", "servers": ["192.0.2.1@0"] }]
    }))
    .unwrap_err();
    assert_eq!(e.len(), 2, "{e}");
    assert!(e.iter().all(|e| e.location.is_none()));
    assert_eq!(e.0[0].pointer, "/cache/size-max");
    assert_eq!(e.0[1].pointer, "/forward/0/servers/0");
    let e = ResolverConfig::from_json_value(serde_json::json!("text")).unwrap_err();
    assert_eq!(
        e.to_string(),
        "/: the configuration must be a mapping, got a string"
    );
}

#[test]
fn garbage_never_panics() {
    let samples = [
        "\0",
        "{",
        "}",
        "[",
        "&a",
        "*a",
        "!!binary aGk=",
        "? ",
        ": :",
        "- - -",
        "'",
        "\"\\x\"",
        "version: 1\nversion: 1",
        "network: {listen: [{interface: [[]]}]}",
        "local-data: {addresses: {'': 1.2.3.4}}",
        "forward: [{subtree: [], servers: [{}]}]",
        "views: [{subnets: [], tags: []}]",
        "cache: {prefill: [{}]}",
        "\u{feff}workers: 2",
        "workers: 1e3",
        "workers: 1.5",
        "workers: .inf",
        "workers: 99999999999999999999999",
    ];
    let mut accepted = vec![];
    for s in samples {
        match ResolverConfig::from_yaml_str(s) {
            Ok(_) => accepted.push(s),
            Err(e) => {
                // Every error names where (a JSON pointer: "" is the document) and what.
                assert!(!e.is_empty(), "{s:?}: an error without entries");
                for err in e.iter() {
                    assert!(
                        err.pointer.is_empty() || err.pointer.starts_with('/'),
                        "{s:?}: not a JSON pointer: {err:?}"
                    );
                    assert!(!err.message.is_empty(), "{s:?}: {err:?}");
                }
            }
        }
    }
    // Accepted: a valid document behind a byte-order mark, and a null document that means "all
    // defaults" (`&a`: an anchored null). `? ` (a null key with no value) is an unknown key.
    assert_eq!(accepted, ["&a", "\u{feff}workers: 2"]);
    assert!(
        errors_of("? ")
            .iter()
            .any(|e| e.message.starts_with("unknown key"))
    );
    for s in ["workers: 1e3", "workers: 1.5", "workers: .inf"] {
        let e = errors_of(s);
        assert!(e.iter().any(|e| e.pointer == "/workers"), "{s}: {e}");
    }
}

#[test]
fn json_text_is_accepted_as_yaml() {
    let c = ResolverConfig::from_yaml_str(
        "{\n\t\"workers\": 2,\n\t\"cache\": {\"size-max\": \"10M\"},\n\t\"forward\": [{\"subtree\": \"a.example\", \"servers\": [\"192.0.2.1\"]}]\n}\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.workers, Workers::Count(2));
    assert_eq!(c.cache.size_max.mbytes(), 10);
}

#[test]
fn many_errors_in_a_large_document_are_bounded() {
    // ~3.5 MiB with an error in every forward entry: at most 100 errors, in bounded time.
    let mut doc = String::from("forward:\n");
    let mut i = 0;
    while doc.len() < 3_500_000 {
        doc.push_str(&format!(
            "  - subtree: s{i}.example\n    servers: [192.0.2.1@0, 192.0.2.2, 192.0.2.3, 192.0.2.4]\n"
        ));
        i += 1;
    }
    let start = std::time::Instant::now();
    let e = errors_of(&doc);
    let took = start.elapsed();
    let last = e.0.last().unwrap();
    assert!(
        last.message
            .starts_with("too many errors; stopped after the first "),
        "{last}"
    );
    assert!(e.len() >= 11 && e.len() <= 101, "{}", e.len());
    assert_eq!(e.0[9].pointer, "/forward/9/servers/0");
    assert!(took < std::time::Duration::from_secs(60), "took {took:?}");
    println!(
        "{} entries, {} bytes: {} errors in {took:?}",
        i,
        doc.len(),
        e.len()
    );
}

#[test]
fn kresd5_capable_view_conditions_are_accepted() {
    let c = ResolverConfig::from_yaml_str(
        "views:\n  - subnets: [10.0.0.0/8]\n    dst-subnet: 192.0.2.0/24\n    protocols: [udp53, dot]\n    answer: refused\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        c.views[0].protocols.as_deref(),
        Some(&[ViewProtocol::Udp53, ViewProtocol::Dot][..])
    );
}

#[test]
fn block_nesting_depth_is_limited_by_our_parser() {
    let mut doc = String::from("lua:\n");
    for i in 0..70 {
        doc.push_str(&" ".repeat(i + 1));
        doc.push_str(&format!("k{i}:\n"));
    }
    let e = errors_of(&doc);
    assert_eq!(e.len(), 1, "{e}");
    assert_eq!(
        e.0[0].message,
        "document is nested too deeply (the limit is 64 levels)"
    );
    assert_eq!(e.0[0].location.map(|l| l.line), Some(65));
}

#[test]
fn crlf_and_tabs() {
    let c = ResolverConfig::from_yaml_str("workers: 3\r\ncache:\r\n  size-max: 5M\r\n").unwrap();
    assert_eq!(c.workers, Workers::Count(3));
    assert_eq!(c.cache.size_max.mbytes(), 5);
    let e = errors_of("cache:\n\tsize-max: 5M\n");
    assert!(e.0[0].message.starts_with("invalid YAML"), "{e}");
    assert_eq!(e.0[0].location.map(|l| l.line), Some(2), "{e}");
}

#[test]
fn type_and_semantic_errors_are_reported_together() {
    let e = errors_of(
        "forward:\n  - subtree: a.example\n    servers: [bad]\n  - subtree: b.example\n    servers: [192.0.2.1@5353]\n    options: {authoritative: true}\ncache: {ttl-min: 1d, ttl-max: 1h, size-max: x}\nmanagement: {interface: nope}\n",
    );
    let got: Vec<&str> = e.iter().map(|e| e.pointer.as_str()).collect();
    assert_eq!(
        got,
        [
            "/forward/0/servers/0",
            "/forward/1/servers/0",
            "/cache/ttl-max",
            "/cache/size-max",
            "/management/interface",
        ],
        "{e}"
    );
    // The removed bad interface does not also yield "exactly one of ... must be set".
    assert!(!e.iter().any(|e| e.pointer == "/management"), "{e}");
    assert_eq!(e.0[1].location.map(|l| l.line), Some(5));
}

#[test]
fn mutated_documents_never_panic() {
    // Deterministic pseudo-random byte mutations of a full config.
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let alphabet = b" :-[]{}'\"\n\t@/.#&*!|>0123456789abcdefxyz\xff";
    let (mut ok, mut rejected) = (0, 0);
    for _ in 0..500 {
        let mut doc = FULL.as_bytes().to_vec();
        for _ in 0..1 + next() % 4 {
            let at = (next() as usize) % doc.len();
            let byte = alphabet[(next() as usize) % alphabet.len()];
            match next() % 3 {
                0 => doc[at] = byte,
                1 => doc.insert(at, byte),
                _ => {
                    doc.remove(at);
                }
            }
        }
        match ResolverConfig::from_yaml_bytes(&doc) {
            Ok(c) => {
                assert!(c.validate().is_ok());
                ok += 1;
            }
            Err(e) => {
                assert!(!e.is_empty());
                assert!(e.iter().all(|e| !e.message.is_empty()));
                rejected += 1;
            }
        }
    }
    assert!(ok > 0 && rejected > 0, "ok {ok}, rejected {rejected}");
}

#[test]
fn example_configs_validate() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests/examples");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if name.starts_with("config") && name.ends_with(".yaml") {
            let bytes = std::fs::read(&path).unwrap();
            ResolverConfig::from_yaml_bytes(&bytes).unwrap_or_else(|e| panic!("{name}:\n{e}"));
            checked += 1;
        }
    }
    assert!(checked >= 1, "no config*.yaml in {}", dir.display());
}
