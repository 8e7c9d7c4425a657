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
