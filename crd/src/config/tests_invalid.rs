//! Table-driven tests of invalid configurations: each asserts the exact pointer and rule text.

use super::*;

/// (YAML, expected pointer, expected text in the message)
const CASES: &[(&str, &str, &str)] = &[
    // document level
    ("version: 2", "/version", "only version 1 is supported"),
    ("bogus: 1", "/bogus", "unknown key 'bogus'"),
    // an empty value means "not set", but an unknown key is still unknown
    ("bogus:", "/bogus", "unknown key 'bogus'"),
    (
        "cache:\n  nope:",
        "/cache/nope",
        "unknown key 'nope'; allowed keys: ",
    ),
    (
        "network:\n  listen:\n    - interface: 127.0.0.1\n      frebind:",
        "/network/listen/0/frebind",
        "unknown key 'frebind'",
    ),
    (
        "workers: 0",
        "/workers",
        "must be 'auto' or in range 1..=256, got 0",
    ),
    (
        "workers: 257",
        "/workers",
        "must be 'auto' or in range 1..=256, got 257",
    ),
    (
        "workers: many",
        "/workers",
        "must be 'auto' or in range 1..=256, got 'many'",
    ),
    (
        "workers: -3",
        "/workers",
        "must be 'auto' or in range 1..=256, got -3",
    ),
    ("nsid: ''", "/nsid", "must not be empty when set"),
    (
        "rundir: 5",
        "/rundir",
        "wrong type: integer `5`, expected a filesystem path",
    ),
    (
        "- a\n- b",
        "",
        "the configuration must be a mapping, got a sequence",
    ),
    ("cache: [1G]", "/cache", "must be a mapping, got a sequence"),
    (
        "network: {listen: [[127.0.0.1]]}",
        "/network/listen/0",
        "must be a mapping, got a sequence",
    ),
    (
        "cache: 5",
        "/cache",
        "wrong type: integer `5`, expected a mapping",
    ),
    (
        "forward: {subtree: a.example}",
        "/forward",
        "wrong type: mapping, expected a sequence",
    ),
    (
        "options: {minimize: [true]}",
        "/options/minimize",
        "wrong type: sequence, expected a boolean",
    ),
    (
        "version: -1",
        "/version",
        "invalid value: integer `-1`, expected a non-negative integer",
    ),
    // management
    (
        "management: {}",
        "/management",
        "exactly one of 'unix-socket' and 'interface' must be set",
    ),
    (
        "management: {unix-socket: /run/a.sock, interface: 127.0.0.1@5000}",
        "/management",
        "exactly one of 'unix-socket' and 'interface' must be set",
    ),
    (
        "management: {interface: 127.0.0.1}",
        "/management/interface",
        "expected '<ip-address>@<port>', got '127.0.0.1'",
    ),
    (
        "management: {interface: 127.0.0.1@0}",
        "/management/interface",
        "port must be in range 1..=65535, got 0",
    ),
    (
        "management: {interface: 127.0.0.1@70000}",
        "/management/interface",
        "port must be in range 1..=65535, got 70000",
    ),
    (
        "management: {interface: 300.1.1.1@53}",
        "/management/interface",
        "failed to parse IP address '300.1.1.1'",
    ),
    // options
    (
        "options: {glue-checking: loose}",
        "/options/glue-checking",
        "must be one of normal, strict, permissive; got 'loose'",
    ),
    (
        "options: {minimize: 'yes'}",
        "/options/minimize",
        "wrong type: string \"yes\", expected a boolean",
    ),
    // network
    (
        "network: {listen: [{interface: 127.0.0.1, kind: dnscrypt}]}",
        "/network/listen/0/kind",
        "must be one of dns, xdp, dot, doh-legacy, doh2, doh2-insecure, doq; got 'dnscrypt'",
    ),
    (
        "network: {listen: [{interface: 127.0.0.1, kind: doq}]}",
        "/network/listen/0/kind",
        "kind 'doq' (DNS over QUIC) is a Knot Resolver 6.x feature; kresd 5.x cannot do it",
    ),
    (
        "network: {listen: [{interface: 127.0.0.1, kind: doh2-insecure}]}",
        "/network/listen/0/kind",
        "Knot Resolver 6.x feature",
    ),
    (
        "network: {listen: [{port: 53}]}",
        "/network/listen/0",
        "exactly one of 'interface' and 'unix-socket' must be set",
    ),
    (
        "network: {listen: [{interface: 127.0.0.1, unix-socket: /a}]}",
        "/network/listen/0",
        "exactly one of 'interface' and 'unix-socket' must be set",
    ),
    (
        "network: {listen: [{unix-socket: /run/dns.sock}]}",
        "/network/listen/0/unix-socket",
        "kresd 5.x cannot serve DNS on a unix socket",
    ),
    (
        "network: {listen: [{unix-socket: /run/dns.sock, port: 53}]}",
        "/network/listen/0/port",
        "'port' cannot be combined with 'unix-socket'",
    ),
    (
        "network: {listen: [{interface: 127.0.0.1@53, port: 53}]}",
        "/network/listen/0/interface/0",
        "port given twice",
    ),
    (
        "network: {listen: [{interface: [127.0.0.1@53, 127.0.0.2]}]}",
        "/network/listen/0/interface",
        "the '@<port>' syntax must be used for all or none of the interfaces",
    ),
    (
        "network: {listen: [{interface: 127.0.0.1, port: 0}]}",
        "/network/listen/0/port",
        "must be in range 1..=65535, got 0",
    ),
    (
        "network: {listen: [{interface: 127.0.0.1, port: 65536}]}",
        "/network/listen/0/port",
        "must be in range 1..=65535, got 65536",
    ),
    (
        "network: {listen: [{interface: 'eth 0'}]}",
        "/network/listen/0/interface",
        "expected an IP address or an interface name",
    ),
    (
        "network: {listen: [{interface: 127.0.0.1}, {interface: 127.0.0.1@53}]}",
        "/network/listen/1/interface/0",
        "'127.0.0.1@53' is already used by /network/listen/0",
    ),
    (
        "network: {listen: [{interface: 127.0.0.1, frebind: true}]}",
        "/network/listen/0/frebind",
        "unknown key 'frebind'; allowed keys: interface, unix-socket, port, kind, freebind",
    ),
    (
        "network: {tcp-pipeline: 70000}",
        "/network/tcp-pipeline",
        "must be in range 0..=65535, got 70000",
    ),
    (
        "network: {edns-buffer-size: {upstream: 100000B}}",
        "/network/edns-buffer-size/upstream",
        "must be in range 512B..=65535B, got 100000B",
    ),
    (
        "network: {edns-buffer-size: {downstream: 12 K}}",
        "/network/edns-buffer-size/downstream",
        "expected <int>(B|K|M|G), e.g. '100M', got '12 K'",
    ),
    (
        "network: {tls: {cert-file: /c.pem}}",
        "/network/tls",
        "'cert-file' and 'key-file' must be set together",
    ),
    (
        "network: {tls: {key-file: /k.pem}}",
        "/network/tls",
        "'cert-file' and 'key-file' must be set together",
    ),
    (
        "network: {tls: {sticket-secret: short}}",
        "/network/tls/sticket-secret",
        "must be at least 32 bytes long, got 5 bytes",
    ),
    (
        "network: {tls: {padding: 513}}",
        "/network/tls/padding",
        "must be in range 0..=512, got 513",
    ),
    (
        "network: {tls: {watchdog: true}}",
        "/network/tls/watchdog",
        "Knot Resolver 6.x feature",
    ),
    (
        "network: {tls: {watchdog: sometimes}}",
        "/network/tls/watchdog",
        "expected 'auto' or a boolean, got 'sometimes'",
    ),
    (
        "network: {quic: {max-conns: 10}}",
        "/network/quic",
        "DNS over QUIC ('quic' settings) is a Knot Resolver 6.x feature",
    ),
    (
        "network: {quic: {max-conns: 5000}}",
        "/network/quic/max-conns",
        "must be in range 1..=4096, got 5000",
    ),
    (
        "network: {out-interface-v4: '::1'}",
        "/network/out-interface-v4",
        "invalid IPv4 address syntax",
    ),
    (
        "network: {address-renumbering: [{source: 10.0.0.1/8, destination: 192.0.2.0}]}",
        "/network/address-renumbering/0/source",
        "IP network '10.0.0.1/8' has host bits set",
    ),
    (
        "network: {address-renumbering: [{source: 10.0.0.0/8, destination: '2001:db8::'}]}",
        "/network/address-renumbering/0/destination",
        "must be of the same address family as source",
    ),
    (
        "network: {address-renumbering: [{source: 10.0.0.0/8}]}",
        "/network/address-renumbering/0",
        "missing required key 'destination'",
    ),
    (
        "network: {proxy-protocol: {enable: true}}",
        "/network/proxy-protocol/allow",
        "must list at least one address or network",
    ),
    // cache
    (
        "cache: {ttl-min: 5m, ttl-max: 1m}",
        "/cache/ttl-max",
        "ttl-max must be >= ttl-min (1m < 5m)",
    ),
    (
        "cache: {ttl-min: 5 minutes}",
        "/cache/ttl-min",
        "expected <int>(us|ms|s|m|h|d), e.g. '5s', got '5 minutes'",
    ),
    (
        "cache: {ttl-max: 10}",
        "/cache/ttl-max",
        "wrong type: integer `10`, expected a time string <int>(us|ms|s|m|h|d)",
    ),
    (
        "cache: {size-max: 100MB}",
        "/cache/size-max",
        "expected <int>(B|K|M|G), e.g. '100M', got '100MB'",
    ),
    (
        "cache: {size-max: 0M}",
        "/cache/size-max",
        "must be greater than 0",
    ),
    (
        "cache: {size-max: 99999999999999999999G}",
        "/cache/size-max",
        "number too large in '99999999999999999999G'",
    ),
    (
        "cache: {size-max: 99999999999G}",
        "/cache/size-max",
        "size '99999999999G' is too large",
    ),
    (
        "cache: {garbage-collector: {threshold: 101}}",
        "/cache/garbage-collector/threshold",
        "must be in range 0..=100, got 101",
    ),
    (
        "cache: {prefill: [{origin: example.com, url: 'https://x/zone'}]}",
        "/cache/prefill/0/origin",
        "cache prefilling is supported only for the root zone '.', got 'example.com.'",
    ),
    (
        "cache: {prefill: [{origin: ., url: 'http://x/zone'}]}",
        "/cache/prefill/0/url",
        "must be an https:// URL",
    ),
    (
        "cache: {prefill: [{origin: .}]}",
        "/cache/prefill/0",
        "missing required key 'url'",
    ),
    (
        "cache: {prefetch: {prediction: {period: 0}}}",
        "/cache/prefetch/prediction/period",
        "must be in range 1..=",
    ),
    // dnssec
    (
        "dnssec: {negative-trust-anchors: ['-bad.example']}",
        "/dnssec/negative-trust-anchors/0",
        "label starting or ending with '-'",
    ),
    (
        "dnssec: {trust-anchors-files: [{read-only: true}]}",
        "/dnssec/trust-anchors-files/0",
        "missing required key 'file'",
    ),
    // forward
    (
        "forward: [{subtree: example.com}]",
        "/forward/0",
        "missing required key 'servers'",
    ),
    (
        "forward: [{subtree: example.com, servers: []}]",
        "/forward/0/servers",
        "must list at least one server",
    ),
    (
        "forward: [{subtree: example.com, servers: [1.2.3.4@99999]}]",
        "/forward/0/servers/0",
        "port must be in range 1..=65535, got 99999",
    ),
    (
        "forward: [{subtree: example.com, servers: [not-an-ip]}]",
        "/forward/0/servers/0",
        "failed to parse IP address 'not-an-ip'",
    ),
    (
        "forward: [{subtree: example.com, servers: [192.0.2.1@5353], options: {authoritative: true}}]",
        "/forward/0/servers/0",
        "forwarding to authoritative servers on a custom port is not supported (port 5353)",
    ),
    (
        "forward: [{subtree: example.com, servers: [{address: 192.0.2.1, transport: tls, hostname: a.example}], options: {authoritative: true}}]",
        "/forward/0/servers/0",
        "forwarding to authoritative servers over TLS is not supported",
    ),
    (
        "forward: [{subtree: example.com, servers: [{address: 192.0.2.1, transport: tls}]}]",
        "/forward/0/servers/0",
        "TLS servers need 'hostname' or 'pin-sha256'",
    ),
    (
        "forward: [{subtree: example.com, servers: [{address: 192.0.2.1, transport: quic}]}]",
        "/forward/0/servers/0/transport",
        "must be one of tls; got 'quic'",
    ),
    (
        "forward: [{subtree: example.com, servers: [{address: 192.0.2.1, hostname: a.example}]}]",
        "/forward/0/servers/0/hostname",
        "'hostname' requires 'transport: tls'",
    ),
    (
        "forward: [{subtree: example.com, servers: [{address: 192.0.2.1, transport: tls, hostname: a.example, pin-sha256: 'YQ0VMWhwpDdFBQPv1ZEWRgF2L7IPGQ6c0WwQaLuOO+o='}]}]",
        "/forward/0/servers/0",
        "'pin-sha256' cannot be combined with 'hostname' or 'ca-file'",
    ),
    (
        "forward: [{subtree: example.com, servers: [{address: 192.0.2.1, transport: tls, pin-sha256: abc}]}]",
        "/forward/0/servers/0/pin-sha256",
        "expected a base64-encoded SHA-256 hash",
    ),
    (
        "forward: [{subtree: example.com, servers: [{address: 192.0.2.1, transport: tls, hostname: a.example}, 192.0.2.2]}]",
        "/forward/0/servers",
        "cannot mix TLS and plain servers in one entry",
    ),
    (
        "forward: [{subtree: example.com, servers: [192.0.2.1]}, {subtree: Example.COM., servers: [192.0.2.2]}]",
        "/forward/1/subtree/0",
        "subtree 'example.com.' is already forwarded by /forward/0",
    ),
    (
        "forward: [{subtree: 'a..b', servers: [192.0.2.1]}]",
        "/forward/0/subtree",
        "domain name 'a..b' has an empty label",
    ),
    (
        "forward: [{subtree: example.com, servers: [192.0.2.1], options: {stub: true}}]",
        "/forward/0/options/stub",
        "unknown key 'stub'; allowed keys: authoritative, dnssec",
    ),
    (
        "forward: [{subtree: a.example, servers: [{address: 192.0.2.1, bogus: 1}]}]",
        "/forward/0/servers/0/bogus",
        "unknown key 'bogus'; allowed keys: address, transport, pin-sha256, hostname, ca-file",
    ),
    (
        "forward: [{subtree: a.example, servers: [{address: [192.0.2.1, 'x@53']}]}]",
        "/forward/0/servers/0/address/1",
        "failed to parse IP address 'x'",
    ),
    (
        "forward: [{subtree: a.example, servers: [42]}]",
        "/forward/0/servers/0",
        "expected '<ip-address>[@<port>]' or a server object",
    ),
    // fallback
    (
        "fallback: {enable: true, servers: [192.0.2.1]}",
        "/fallback/enable",
        "fallback on resolution failure is a Knot Resolver 6.x feature; kresd 5.x cannot do it",
    ),
    (
        "fallback: {servers: [192.0.2.1]}",
        "/fallback/servers",
        "Knot Resolver 6.x feature",
    ),
    // local-data
    (
        "local-data: {addresses: {a.example: not-an-ip}}",
        "/local-data/addresses/a.example",
        "invalid IP address syntax",
    ),
    (
        "local-data: {ttl: 1 hour}",
        "/local-data/ttl",
        "expected <int>(us|ms|s|m|h|d)",
    ),
    (
        "local-data: {rules: [{name: a.example}]}",
        "/local-data/rules/0",
        "one of 'address', 'subtree', 'file' or 'records' must be set",
    ),
    (
        "local-data: {rules: [{name: a.example, address: 192.0.2.1, subtree: nxdomain}]}",
        "/local-data/rules/0",
        "only one of 'address', 'subtree', 'file' or 'records' may be set",
    ),
    (
        "local-data: {rules: [{address: 192.0.2.1}]}",
        "/local-data/rules/0",
        "exactly one of 'name', 'file' or 'records' must be set",
    ),
    (
        "local-data: {rules: [{name: a.example, subtree: redirect}]}",
        "/local-data/rules/0/address",
        "'subtree: redirect' requires 'address'",
    ),
    (
        "local-data: {rules: [{name: a.example, subtree: empty, nodata: true}]}",
        "/local-data/rules/0/nodata",
        "'nodata' has no effect with 'subtree' unless 'address' is set",
    ),
    (
        "local-data: {rules: [{name: a.example, subtree: wildcard}]}",
        "/local-data/rules/0/subtree",
        "must be one of empty, nxdomain, redirect; got 'wildcard'",
    ),
    (
        "local-data: {rules: [{name: a.example, address: 192.0.2.1, tags: [t1]}]}",
        "/local-data/rules/0/tags",
        "tagging local-data rules is a Knot Resolver 6.x feature",
    ),
    (
        "local-data: {rules: [{name: a.example, address: 192.0.2.1, tags: [Bad_Tag]}]}",
        "/local-data/rules/0/tags/0",
        "expected lowercase letters, digits and inner '-'",
    ),
    (
        "local-data: {rpz: [{file: /rpz, log: [ip]}]}",
        "/local-data/rpz/0/log",
        "RPZ match logging is a Knot Resolver 6.x feature",
    ),
    (
        "local-data: {rpz: [{file: /rpz, tags: [t]}]}",
        "/local-data/rpz/0/tags",
        "tagging RPZ is a Knot Resolver 6.x feature",
    ),
    // views
    (
        "views: [{subnets: [10.0.0.0/8]}]",
        "/views/0",
        "exactly one of 'tags' and 'answer' must be set",
    ),
    (
        "views: [{subnets: [10.0.0.0/33], answer: allow}]",
        "/views/0/subnets/0",
        "prefix length must be 0..=32",
    ),
    (
        "views: [{subnets: [10.0.0.0/8], answer: deny}]",
        "/views/0/answer",
        "must be one of allow, refused, noanswer; got 'deny'",
    ),
    (
        "views: [{subnets: [10.0.0.0/8], tags: [t]}]",
        "/views/0/tags",
        "tagging views (rules database) is a Knot Resolver 6.x feature",
    ),
    (
        "views: [{subnets: [10.0.0.0/8], answer: allow, protocols: [dot, doq]}]",
        "/views/0/protocols/1",
        "DNS over QUIC (protocol 'doq') is a Knot Resolver 6.x feature",
    ),
    (
        "local-data: {rules: [{file: /etc/hosts2, ttl: 5m}]}",
        "/local-data/rules/0",
        "kresd 5.x applies one TTL and nodata setting to all hosts files",
    ),
    (
        "cache: {prefetch: {prediction: {enable: true}}}",
        "/cache/prefetch/prediction/enable",
        "set 'expiring: true' as well",
    ),
    (
        "cache: {prefetch: {expiring: true, prediction: {enable: true, window: 90s}}}",
        "/cache/prefetch/prediction/window",
        "whole minutes, got 90s",
    ),
    (
        "views: [{subnets: [10.0.0.0/8], answer: allow, options: {price-factor: 2.0}}]",
        "/views/0/options/price-factor",
        "Knot Resolver 6.x feature",
    ),
    (
        "views: [{subnets: [10.0.0.0/8], answer: allow, options: {price-factor: -1}}]",
        "/views/0/options/price-factor",
        "must be in range 0.0..=65535.0, got -1",
    ),
    // dns64
    (
        "dns64: {prefix: '64:ff9b::'}",
        "/dns64/prefix",
        "expected an IPv6 network with a /96 prefix length, got '64:ff9b::' (missing '/96'?)",
    ),
    (
        "dns64: {prefix: '64:ff9b::/64'}",
        "/dns64/prefix",
        "expected an IPv6 network with a /96 prefix length, got /64",
    ),
    (
        "dns64: {exclude-subnets: [10.0.0.0/8]}",
        "/dns64/exclude-subnets/0",
        "expected an IPv6 network, got '10.0.0.0/8'",
    ),
    // logging
    (
        "logging: {level: verbose}",
        "/logging/level",
        "must be one of crit, err, warning, notice, info, debug; got 'verbose'",
    ),
    (
        "logging: {groups: [cache, cache]}",
        "/logging/groups/1",
        "duplicate logging group 'cache'",
    ),
    (
        "logging: {groups: [manager]}",
        "/logging/groups/0",
        "logging group 'manager' belongs to the Knot Resolver 6.x manager",
    ),
    (
        "logging: {groups: [doq]}",
        "/logging/groups/0",
        "logging group 'doq' is a Knot Resolver 6.x feature",
    ),
    (
        "logging: {dnstap: {enable: true}}",
        "/logging/dnstap/unix-socket",
        "required when dnstap is enabled",
    ),
    // monitoring
    (
        "monitoring: {graphite: {enable: true}}",
        "/monitoring/graphite/host",
        "required when graphite is enabled",
    ),
    (
        "monitoring: {metrics: sometimes}",
        "/monitoring/metrics",
        "must be one of manager-only, lazy, always; got 'sometimes'",
    ),
    // lua
    (
        "lua: {script: 'a()', script-file: /b.lua}",
        "/lua",
        "only one of 'script' and 'script-file' may be set",
    ),
    (
        "lua: {policy-script: 'a()'}",
        "/lua/policy-script",
        "the policy-loader process",
    ),
    (
        "lua: {script-only: true}",
        "/lua/script-only",
        "'script-only' requires 'script' or 'script-file'",
    ),
    // 6.x-only sections
    (
        "rate-limiting: {enable: true, rate-limit: 100}",
        "/rate-limiting/enable",
        "rate limiting is a Knot Resolver 6.x feature; kresd 5.x cannot do it",
    ),
    (
        "rate-limiting: {slip: 33}",
        "/rate-limiting/slip",
        "must be in range 0..=32, got 33",
    ),
    (
        "defer: {enable: true}",
        "/defer/enable",
        "request prioritization (defer) is a Knot Resolver 6.x feature",
    ),
    (
        "defer: {log-period: 10s}",
        "/defer/log-period",
        "Knot Resolver 6.x feature",
    ),
];

#[test]
fn invalid_inputs_name_pointer_and_rule() {
    let mut failures = Vec::new();
    for (yaml, pointer, text) in CASES {
        match ResolverConfig::from_yaml_str(yaml) {
            Ok(_) => failures.push(format!("{yaml:?}: accepted")),
            Err(errors) => {
                let hit = errors
                    .iter()
                    .any(|e| e.pointer == *pointer && e.message.contains(text));
                if !hit {
                    failures.push(format!(
                        "{yaml:?}: expected {pointer:?} containing {text:?}, got:\n{errors}"
                    ));
                }
                if errors.iter().any(|e| e.location.is_none()) {
                    failures.push(format!("{yaml:?}: an error without location:\n{errors}"));
                }
            }
        }
    }
    assert!(CASES.len() >= 40);
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
