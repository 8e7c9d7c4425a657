//! Unit tests of rendering: exact fragments per section, ordering rules, determinism.

use super::*;
use crate::config::ResolverConfig;

fn cfg(yaml: &str) -> ResolverConfig {
    match ResolverConfig::from_yaml_str(yaml) {
        Ok(c) => c,
        Err(e) => panic!("invalid test config:\n{e}"),
    }
}

/// Parse without validation: render must stand on its own for what validation rejects.
fn raw(yaml: &str) -> ResolverConfig {
    serde_norway::from_str(yaml).unwrap()
}

/// The first error `render` reports for an unvalidated config (render validates first).
fn raw_err(yaml: &str) -> crate::config::ConfigError {
    first_err(&raw(yaml))
}

fn first_err(c: &ResolverConfig) -> crate::config::ConfigError {
    render(c, &RenderOptions::default())
        .unwrap_err()
        .0
        .remove(0)
}

fn lua_raw(yaml: &str) -> String {
    render(&raw(yaml), &RenderOptions::default()).unwrap()
}

fn lua(yaml: &str) -> String {
    render(&cfg(yaml), &RenderOptions::default()).unwrap()
}

/// Position of `needle` in `hay`, failing with the whole text when absent.
fn pos(hay: &str, needle: &str) -> usize {
    hay.find(needle)
        .unwrap_or_else(|| panic!("missing `{needle}` in:\n{hay}"))
}

#[test]
fn revision_is_stable_and_short() {
    assert_eq!(revision(b"abc"), "ba7816bf8f01cfea");
    assert_ne!(revision(b"abc"), revision(b"abd"));
}

#[test]
fn default_config_renders() {
    let l = lua("{}");
    assert!(l.starts_with("-- kresd 5.x configuration rendered by kres-operator"));
    pos(&l, "\nffi = require('ffi')\n");
    pos(&l, "mode('normal')");
    pos(
        &l,
        "cache.open(104857600, 'lmdb:///var/cache/knot-resolver')",
    );
}

#[test]
fn rendering_is_deterministic() {
    let yaml = "local-data:\n  addresses:\n    b.test: 192.0.2.2\n    a.test: 192.0.2.1\n    c.test: [192.0.2.3, '2001:db8::3']\nforward:\n  - subtree: [z.test, a.test]\n    servers: [192.0.2.53]\nviews:\n  - subnets: [10.0.0.0/8, 10.1.0.0/16]\n    answer: refused\n";
    let c = cfg(yaml);
    let first = render(&c, &RenderOptions::default()).unwrap();
    for _ in 0..20 {
        assert_eq!(
            render(&c.clone(), &RenderOptions::default()).unwrap(),
            first
        );
    }
    // Map keys come out sorted whatever the input order.
    assert!(
        pos(&first, "hints.set('a.test. 192.0.2.1')")
            < pos(&first, "hints.set('b.test. 192.0.2.2')")
    );
    assert_eq!(revision(first.as_bytes()), revision(lua(yaml).as_bytes()));
}

#[test]
fn identity_renders_hostname_and_nsid() {
    let l = lua("hostname: my-host\nnsid: ns-1\n");
    pos(&l, "hostname('my-host')\n");
    pos(&l, "modules.load('nsid')\nnsid.name('ns-1')\n");
    assert!(!lua("{}").contains("nsid"));
}

#[test]
fn options_are_all_explicit() {
    let l = lua(
        "options:\n  glue-checking: strict\n  minimize: false\n  query-loopback: true\n  reorder-rrset: false\n  query-case-randomization: false\n  priming: false\n  rebinding-protection: true\n  refuse-no-rd: false\n  time-jump-detection: false\n  violators-workarounds: true\n  serve-stale: true\n",
    );
    for frag in [
        "mode('strict')",
        "option('NO_MINIMIZE', true)",
        "option('ALLOW_LOCAL', true)",
        "option('REORDER_RR', false)",
        "option('NO_0X20', true)",
        "modules.unload('priming')",
        "modules.unload('refuse_nord')",
        "modules.unload('detect_time_jump')",
        "modules.load('rebinding < iterate')",
        "modules.load('workarounds < iterate')",
        "modules.load('serve_stale < cache')",
    ] {
        pos(&l, frag);
    }
    let d = lua("{}");
    for frag in [
        "option('NO_MINIMIZE', false)",
        "modules.load('priming')",
        "modules.load('refuse_nord')",
        "modules.load('detect_time_jump')",
    ] {
        pos(&d, frag);
    }
    assert!(!d.contains("serve_stale") && !d.contains("rebinding"));
}

#[test]
fn network_listen_kinds_ports_and_tls() {
    let yaml = "network:\n  listen:\n    - interface: [127.0.0.1, '::1']\n      port: 5353\n    - interface: 127.0.0.1\n      kind: dot\n      freebind: true\n    - interface: 127.0.0.1@8443\n      kind: doh-legacy\n    - interface: lo\n      kind: doh2\n  tls:\n    cert-file: /etc/c.pem\n    key-file: /etc/k.pem\n    padding: 64\n  edns-buffer-size:\n    downstream: 4096B\n    upstream: 1232B\n  tcp-pipeline: 50\n  proxy-protocol:\n    enable: true\n    allow: [127.0.0.0/8]\n  address-renumbering:\n    - source: 10.0.0.0/24\n      destination: 192.168.1.0\n";
    let l = lua(yaml);
    for frag in [
        "net.listen('127.0.0.1', 5353, {kind = 'dns'})",
        "net.listen('::1', 5353, {kind = 'dns'})",
        "net.listen('127.0.0.1', 853, {kind = 'tls', freebind = true})",
        "net.listen('127.0.0.1', 8443, {kind = 'doh_legacy'})",
        "net.listen(net['lo'], 443, {kind = 'doh2'})",
        "net.tls('/etc/c.pem', '/etc/k.pem')",
        "net.tls_padding(64)",
        "net.bufsize(4096, 1232)",
        "net.tcp_pipeline(50)",
        "net.proxy_allowed({'127.0.0.0/8'})",
        "modules.load('renumber')\nrenumber.config({{'10.0.0.0/24', '192.168.1.0'}})",
    ] {
        pos(&l, frag);
    }
    // doh-legacy needs the http module loaded before the socket.
    assert!(pos(&l, "modules.load('http')") < pos(&l, "kind = 'doh_legacy'"));
}

#[test]
fn inherited_sockets_render_no_listen_and_nothing_else_changes() {
    let yaml = "network:\n  listen:\n    - interface: 127.0.0.1@5353\n";
    let c = cfg(yaml);
    let listen = render(
        &c,
        &RenderOptions {
            sockets: SocketMode::Listen,
            ..RenderOptions::default()
        },
    )
    .unwrap();
    let inherited = render(
        &c,
        &RenderOptions {
            sockets: SocketMode::Inherited,
            ..RenderOptions::default()
        },
    )
    .unwrap();
    assert!(!inherited.contains("net.listen"), "{inherited}");
    let listen_without: Vec<&str> = listen
        .lines()
        .filter(|l| !l.starts_with("net.listen("))
        .collect();
    let inherited_without: Vec<&str> = inherited
        .lines()
        .filter(|l| !l.starts_with("-- network.listen:"))
        .collect();
    assert_eq!(listen_without, inherited_without);
    assert_eq!(inherited_kind(crate::config::ListenKind::Dot), Some("tls"));
    assert_eq!(inherited_kind(crate::config::ListenKind::Dns), None);
}

#[test]
fn cache_section() {
    let l = lua(
        "cache:\n  storage: /var/cache/x\n  size-max: 20M\n  ttl-min: 10s\n  ttl-max: 2h\n  ns-timeout: 2s\n  prefetch:\n    expiring: true\n    prediction:\n      enable: true\n      window: 30m\n      period: 48\n  prefill:\n    - origin: '.'\n      url: https://example.test/root.zone\n      refresh-interval: 12h\n",
    );
    for frag in [
        "cache.open(20971520, 'lmdb:///var/cache/x')",
        "cache.min_ttl(10)",
        "cache.max_ttl(7200)",
        "cache.ns_tout(2000)",
        "modules.load('predict')\npredict.config({window = 30, period = 48})",
        "modules.load('prefill')\nprefill.config({['.'] = {url = 'https://example.test/root.zone', interval = 43200}})",
    ] {
        pos(&l, frag);
    }
    pos(
        &lua("cache:\n  prefetch:\n    expiring: true\n"),
        "predict.config({window = 15, period = 0})",
    );
    assert!(!lua("{}").contains("predict"));
    let e = raw_err("cache:\n  prefetch:\n    prediction:\n      enable: true\n");
    assert_eq!(e.pointer, "/cache/prefetch/prediction/enable");
}

#[test]
fn dnssec_section() {
    let l = lua(
        "dnssec:\n  log-bogus: true\n  sentinel: false\n  trust-anchors: ['. 3600 IN DS 20326 8 2 E06D44B80B8F1D39A95C0B0D7C65D08458E880409BBC683457104237C7F8EC8D']\n  trust-anchors-files:\n    - file: /etc/ta.key\n      read-only: true\n  negative-trust-anchors: [b.test, a.test]\nforward:\n  - subtree: c.test\n    servers: [192.0.2.1]\n    options:\n      dnssec: false\n",
    );
    for frag in [
        "modules.load('bogus_log')",
        "modules.unload('ta_sentinel')",
        "modules.load('ta_signal_query')",
        "trust_anchors.remove('.')\ntrust_anchors.add('. 3600 IN DS 20326",
        "trust_anchors.add_file('/etc/ta.key', true)",
        // One call with the union, sorted: set_insecure replaces the list each time.
        "trust_anchors.set_insecure({'a.test.', 'b.test.', 'c.test.'})",
    ] {
        pos(&l, frag);
    }
    assert_eq!(l.matches("set_insecure").count(), 1);
    let off = lua("dnssec:\n  enable: false\n");
    pos(&off, "-- dnssec\ntrust_anchors.remove('.')\n");
    assert!(!off.contains("ta_sentinel"));
}

#[test]
fn forward_most_specific_subtree_first_and_actions() {
    let l = lua(
        "forward:\n  - subtree: '.'\n    servers: [192.0.2.1, '192.0.2.2@5353']\n  - subtree: [example.test, a.b.example.test]\n    servers: ['127.0.0.1']\n    options:\n      authoritative: true\n  - subtree: tls.test\n    servers:\n      - address: [192.0.2.3, '192.0.2.4@8853']\n        transport: tls\n        hostname: dns.example.test\n",
    );
    for frag in [
        "kres_forward[1] = policy.FORWARD({'192.0.2.1', '192.0.2.2@5353'})",
        "kres_forward[2] = policy.STUB({'127.0.0.1'})",
        "kres_forward[3] = policy.TLS_FORWARD({{'192.0.2.3', hostname = 'dns.example.test'}, {'192.0.2.4@8853', hostname = 'dns.example.test'}})",
    ] {
        pos(&l, frag);
    }
    let a = pos(
        &l,
        "policy.add(policy.suffix(kres_forward[2], {todname('a.b.example.test.')}))",
    );
    let b = pos(
        &l,
        "policy.add(policy.suffix(kres_forward[2], {todname('example.test.')}))",
    );
    let t = pos(
        &l,
        "policy.add(policy.suffix(kres_forward[3], {todname('tls.test.')}))",
    );
    let root = pos(
        &l,
        "policy.add(policy.suffix(kres_forward[1], {todname('.')}))",
    );
    assert!(a < b && b < root && t < root, "{l}");
    assert!(b < t, "equal depth sorts by name: {l}");
}

#[test]
fn forward_errors_name_the_pointer() {
    let e = raw_err(
        "forward:\n  - subtree: a.test\n    servers:\n      - 192.0.2.1\n      - address: 192.0.2.2\n        transport: tls\n        hostname: x.test\n",
    );
    assert_eq!(e.pointer, "/forward/0/servers");
    let e = raw_err(
        "forward:\n  - subtree: a.test\n    servers:\n      - address: 192.0.2.2\n        transport: tls\n",
    );
    assert_eq!(e.pointer, "/forward/0/servers/0");
}

#[test]
fn local_data_order_exact_then_pass_then_subtrees_then_rpz_then_forward() {
    let l = lua(
        "local-data:\n  ttl: 1m\n  nodata: false\n  addresses:\n    host.test: [192.0.2.1, '2001:db8::1']\n  addresses-files: [/etc/hosts.extra]\n  records: |\n    r.test. 60 TXT hi\n  rules:\n    - name: [blocked.test]\n      subtree: nxdomain\n    - name: deep.sub.blocked.test\n      subtree: redirect\n      address: 192.0.2.9\n    - name: exact.test\n      address: 192.0.2.5\n      ttl: 10s\n  rpz:\n    - file: /etc/block.rpz\nforward:\n  - subtree: '.'\n    servers: [192.0.2.53]\n",
    );
    let hints = pos(
        &l,
        "modules.load('hints > iterate')\nhints.ttl(60)\nhints.use_nodata(false)",
    );
    // All exact names are ONE policy rule (a table lookup), added before any other rule.
    let table = pos(
        &l,
        "local kres_exact = {}\npolicy.add(function(_, query) return kres_exact[query:name()] end)",
    );
    assert!(hints < table, "{l}");
    assert_eq!(
        l.matches("policy.add(").count(),
        1 + 3 + 1,
        "exact table, 3 subtree rules, rpz, forward:\n{l}"
    );
    let records = pos(
        &l,
        "kres_local_records('r.test. 60 TXT hi\\010', 60, false)",
    );
    let exact = pos(
        &l,
        "kres_exact_add(policy.ANSWER({[kres.type.A] = {rdata = {kres.str2ip('192.0.2.5')}, ttl = 10}}, false), {'exact.test.'})",
    );
    let set = pos(
        &l,
        "hints.set('host.test. 192.0.2.1')\nhints.set('host.test. 2001:db8::1')",
    );
    pos(&l, "hints.add_hosts('/etc/hosts.extra')");
    let pass = pos(
        &l,
        "kres_exact_add(policy.PASS, {'1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa.', '1.2.0.192.in-addr.arpa.', 'host.test.'})",
    );
    let deep = pos(
        &l,
        "policy.add(policy.suffix(policy.ANSWER({[kres.type.A] = {rdata = {kres.str2ip('192.0.2.9')}, ttl = 60}}, true), {todname('deep.sub.blocked.test.')}))",
    );
    let blocked = pos(
        &l,
        "policy.add(policy.suffix(policy.DENY, {todname('blocked.test.')}))",
    );
    let rpz = pos(
        &l,
        "policy.add(policy.rpz(policy.DENY, '/etc/block.rpz', nil))",
    );
    let fwd = pos(
        &l,
        "policy.add(policy.suffix(kres_forward[1], {todname('.')}))",
    );
    assert!(
        hints < records && records < exact && exact < set && set < pass,
        "{l}"
    );
    assert!(
        pass < deep && deep < blocked && blocked < rpz && rpz < fwd,
        "{l}"
    );
}

#[test]
fn local_data_unsupported_cases_are_errors() {
    assert_eq!(
        raw_err(
            "local-data:\n  rules:\n    - name: a.test\n      address: 192.0.2.1\n      tags: [t]\n"
        )
        .pointer,
        "/local-data/rules/0/tags"
    );
    assert_eq!(
        raw_err("local-data:\n  rpz:\n    - file: /x\n      tags: [t]\n").pointer,
        "/local-data/rpz/0/tags"
    );
}

#[test]
fn views_most_specific_subnet_first() {
    let l = lua_raw(
        "views:\n  - subnets: [10.0.0.0/8]\n    answer: refused\n  - subnets: [10.1.2.3/32, '::1/128']\n    answer: allow\n    options:\n      minimize: false\n      dns64: false\n  - subnets: [10.1.0.0/16]\n    dst-subnet: 192.0.2.0/24\n    protocols: [udp53, dot]\n    answer: noanswer\n",
    );
    pos(&l, "modules.load('view < policy')");
    let v6 = pos(
        &l,
        "view:addr('::1/128', kres_view_rule(policy.PASS, nil, nil))",
    );
    let flags = pos(
        &l,
        "view:addr('10.1.2.3/32', kres_view_rule(policy.FLAGS({'NO_MINIMIZE', 'DNS64_DISABLE'}), nil, nil))",
    );
    let host = pos(
        &l,
        "view:addr('10.1.2.3/32', kres_view_rule(policy.PASS, nil, nil))",
    );
    let mid = pos(
        &l,
        "view:addr('10.1.0.0/16', kres_view_rule(policy.NO_ANSWER, '192.0.2.0/24', {dot = true, udp53 = true}))",
    );
    let wide = pos(
        &l,
        "view:addr('10.0.0.0/8', kres_view_rule(policy.REFUSE, nil, nil))",
    );
    // Longest prefix first (IPv4 and IPv6 never overlap, so mixing families is harmless).
    assert!(
        v6 < flags && flags < host && host < mid && mid < wide,
        "{l}"
    );
}

#[test]
fn dns64_logging_monitoring_lua_sections() {
    let l = lua(
        "dns64:\n  enable: true\n  prefix: 64:ff9b::/96\n  reverse-ttl: 1m\n  exclude-subnets: ['::ffff:0:0/96']\nlogging:\n  level: info\n  target: stderr\n  groups: [cache]\n  dnstap:\n    enable: true\n    unix-socket: /run/dnstap.sock\n    log-queries: true\nmonitoring:\n  metrics: always\n  graphite:\n    enable: true\n    host: 127.0.0.1\n    prefix: kres\n    interval: 2s\nlua:\n  script: |\n    print('hi')\n",
    );
    for frag in [
        "modules.load('dns64')\ndns64.config({prefix = '64:ff9b::', rev_ttl = 60, exclude_subnets = {'::ffff:0.0.0.0/96'}})",
        "log_level('info')\nlog_target('stderr')\nlog_groups({'cache'})",
        "dnstap.config({socket_path = '/run/dnstap.sock', client = {log_queries = true, log_responses = false, log_tcp_rtt = false}})",
        "modules.load('stats')",
        "graphite.config({host = '127.0.0.1', port = 2003, prefix = 'kres', interval = 2000, tcp = false})",
        "-- lua.script: RAW LUA FROM THE CONFIGURATION, passed through unchanged and unvalidated\nprint('hi')\n",
    ] {
        pos(&l, frag);
    }
    // The raw script comes last, after every declarative section.
    assert!(
        l.ends_with("print('hi')\n\n") || l.ends_with("print('hi')\n"),
        "{l}"
    );
    // The process group `kresd` belongs to the 6.x manager: validation refuses it.
    assert_eq!(
        raw_err("logging:\n  groups: [kresd]\n").pointer,
        "/logging/groups/0"
    );
    pos(
        &lua("lua:\n  script-file: /etc/extra.lua\n"),
        "dofile('/etc/extra.lua')",
    );
    assert_eq!(
        raw_err("logging:\n  groups: [rules]\n").pointer,
        "/logging/groups/0"
    );
}

#[test]
fn script_only_renders_just_the_script() {
    let l = lua("lua:\n  script-only: true\n  script: x = 1\n");
    assert!(!l.contains("cache.open") && !l.contains("net."), "{l}");
    pos(&l, "x = 1\n");
}

#[test]
fn six_x_only_features_are_errors() {
    assert_eq!(
        raw_err("network:\n  listen:\n    - interface: 127.0.0.1\n      kind: doq\n").pointer,
        "/network/listen/0/kind"
    );
    assert_eq!(
        raw_err("network:\n  listen:\n    - unix-socket: /run/x.sock\n").pointer,
        "/network/listen/0/unix-socket"
    );
    assert_eq!(
        raw_err("rate-limiting:\n  enable: true\n  rate-limit: 100\n").pointer,
        "/rate-limiting/enable"
    );
}

#[test]
fn nul_in_any_string_is_an_error_naming_the_field() {
    let mut c = cfg("{}");
    c.nsid = Some("a\0b".into());
    assert_eq!(first_err(&c).pointer, "/nsid");
    let mut c = cfg("{}");
    c.dnssec.trust_anchors = vec!["ok".into(), "x\0y".into()];
    assert_eq!(first_err(&c).pointer, "/dnssec/trust-anchors/1");
}

#[test]
fn a_name_cannot_be_trust_anchor_and_negative_trust_anchor() {
    // Found by validation (every entry point), not first at render.
    let yaml = "dnssec:\n  trust-anchors: ['A.test. DS 1 8 2 AB']\n  negative-trust-anchors: [b.test, a.test]\n";
    let e = ResolverConfig::from_yaml_str(yaml).unwrap_err();
    assert_eq!(e.0.len(), 1, "{e}");
    assert_eq!(e.0[0].pointer, "/dnssec/negative-trust-anchors/1");
    assert!(e.0[0].message.contains("both a trust anchor"), "{e}");
    assert_eq!(raw_err(yaml).pointer, "/dnssec/negative-trust-anchors/1");
    let yaml = "dnssec:\n  trust-anchors: ['a.test. DS 1 8 2 AB']\nforward:\n  - subtree: a.test\n    servers: [192.0.2.1]\n    options:\n      dnssec: false\n";
    let e = ResolverConfig::from_yaml_str(yaml).unwrap_err();
    assert_eq!(e.0[0].pointer, "/forward/0/options/dnssec");
    assert_eq!(raw_err(yaml).pointer, "/forward/0/options/dnssec");
}
