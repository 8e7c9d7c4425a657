//! Semantic validation: cross-field rules (as upstream Knot Resolver 6) and what kresd 5.x can
//! do. Collects every error; each names the field (JSON pointer) and the rule.

use std::collections::{BTreeMap, HashSet};

use super::error::{ConfigError, ConfigErrors};
use super::parse::escape_token;
use super::types::{AutoBool, InterfaceOptionalPort};
use super::{
    CONFIG_VERSION, ForwardServer, ForwardTransport, ListenKind, LocalDataRule, ResolverConfig,
    RuleSubtree, TlsConfig, ViewProtocol,
};

/// Message for a Knot Resolver 6.x-only feature that is set.
fn v6_only(what: &str) -> String {
    format!("{what} is a Knot Resolver 6.x feature; kresd 5.x cannot do it")
}

/// Collected errors.
#[derive(Default)]
struct Errors(Vec<ConfigError>);

impl Errors {
    fn add(&mut self, pointer: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfigError::new(pointer, message));
    }
}

/// Runs every rule; returns all errors.
pub(crate) fn validate(config: &ResolverConfig) -> Result<(), ConfigErrors> {
    let mut e = Errors::default();
    if config.version != CONFIG_VERSION {
        e.add(
            "/version",
            format!(
                "unsupported configuration version {}; only version {CONFIG_VERSION} is supported",
                config.version
            ),
        );
    }
    for (field, value) in [("nsid", &config.nsid), ("hostname", &config.hostname)] {
        if let Some(v) = value
            && v.is_empty()
        {
            e.add(format!("/{field}"), "must not be empty when set");
        }
    }
    directories(config, &mut e);
    management(config, &mut e);
    network(config, &mut e);
    cache(config, &mut e);
    forward(config, &mut e);
    fallback(config, &mut e);
    local_data(config, &mut e);
    views(config, &mut e);
    logging(config, &mut e);
    monitoring(config, &mut e);
    lua(config, &mut e);
    limits(config, &mut e);
    dnssec(config, &mut e);
    no_nul(config, &mut e);
    ConfigErrors(e.0).into_result()
}

/// Directories the operator creates and hands to supervisord, kresd and kres-cache-gc as
/// working directory or argument: relative paths would depend on whose working directory.
fn directories(config: &ResolverConfig, e: &mut Errors) {
    for (pointer, path) in [
        ("/rundir", config.rundir.as_ref()),
        ("/cache/storage", Some(&config.cache.storage)),
    ] {
        let Some(path) = path else { continue };
        if !path.as_path().is_absolute() {
            e.add(pointer, format!("must be an absolute path, got '{path}'"));
        }
    }
    // supervisord includes `RUNDIR/programs/*.conf` from a whitespace-separated list.
    if let Some(rundir) = &config.rundir
        && rundir.as_str().contains(char::is_whitespace)
    {
        e.add("/rundir", "must not contain whitespace");
    }
}

/// kresd refuses a negative trust anchor for a name that has a configured trust anchor (both
/// given directly and implied by `forward[*].options.dnssec: false`).
fn dnssec(config: &ResolverConfig, e: &mut Errors) {
    let d = &config.dnssec;
    if !d.enable {
        return;
    }
    let anchored: HashSet<String> = d
        .trust_anchors
        .iter()
        .filter_map(|ta| super::trust_anchor_owner(ta))
        .collect();
    for (i, n) in d.negative_trust_anchors.iter().enumerate() {
        if anchored.contains(n.as_str()) {
            e.add(
                format!("/dnssec/negative-trust-anchors/{i}"),
                format!(
                    "'{n}' cannot be both a trust anchor (/dnssec/trust-anchors) and a negative trust anchor"
                ),
            );
        }
    }
    for (i, f) in config.forward.iter().enumerate() {
        if !f.options.dnssec
            && let Some(n) = f.subtree.iter().find(|n| anchored.contains(n.as_str()))
        {
            e.add(
                format!("/forward/{i}/options/dnssec"),
                format!(
                    "'dnssec: false' makes '{n}' a negative trust anchor, but it has a trust anchor (/dnssec/trust-anchors)"
                ),
            );
        }
    }
}

/// No string may contain NUL: kresd hands most strings to C, which would silently truncate them
/// at the NUL (`/etc/a\0b` would open `/etc/a`).
fn no_nul(config: &ResolverConfig, e: &mut Errors) {
    fn walk(v: &serde_json::Value, ptr: &mut String, e: &mut Errors) {
        match v {
            serde_json::Value::String(s) if s.contains('\0') => {
                e.add(ptr.clone(), "must not contain NUL characters");
            }
            serde_json::Value::Array(a) => {
                for (i, x) in a.iter().enumerate() {
                    let len = ptr.len();
                    ptr.push_str(&format!("/{i}"));
                    walk(x, ptr, e);
                    ptr.truncate(len);
                }
            }
            serde_json::Value::Object(o) => {
                for (k, x) in o {
                    let len = ptr.len();
                    ptr.push('/');
                    ptr.push_str(&escape_token(k));
                    if k.contains('\0') {
                        e.add(ptr.clone(), "must not contain NUL characters");
                    } else {
                        walk(x, ptr, e);
                    }
                    ptr.truncate(len);
                }
            }
            _ => {}
        }
    }
    // Fast path: serde_json writes NUL as \u0000; only then find the pointers.
    match serde_json::to_string(config) {
        Ok(text) if !text.contains("\\u0000") => {}
        Ok(_) => match serde_json::to_value(config) {
            Ok(v) => walk(&v, &mut String::new(), e),
            Err(err) => e.add("", format!("cannot inspect the configuration: {err}")),
        },
        Err(err) => e.add("", format!("cannot inspect the configuration: {err}")),
    }
}

fn management(config: &ResolverConfig, e: &mut Errors) {
    let m = &config.management;
    if m.unix_socket.is_some() == m.interface.is_some() {
        e.add(
            "/management",
            "exactly one of 'unix-socket' and 'interface' must be set",
        );
    }
}

fn network(config: &ResolverConfig, e: &mut Errors) {
    let n = &config.network;
    for (name, size) in [
        ("upstream", n.edns_buffer_size.upstream),
        ("downstream", n.edns_buffer_size.downstream),
    ] {
        let bytes = size.bytes();
        if !(512..=65535).contains(&bytes) {
            e.add(
                format!("/network/edns-buffer-size/{name}"),
                format!("must be in range 512B..=65535B, got {size} ({bytes} bytes)"),
            );
        }
    }
    for (i, r) in n.address_renumbering.iter().enumerate() {
        if r.source.addr.is_ipv4() != r.destination.addr.is_ipv4() {
            e.add(
                format!("/network/address-renumbering/{i}/destination"),
                format!(
                    "must be of the same address family as source '{}', got '{}'",
                    r.source, r.destination
                ),
            );
        }
    }
    tls(&n.tls, e);
    if n.quic != super::QuicConfig::default() {
        e.add("/network/quic", v6_only("DNS over QUIC ('quic' settings)"));
    }
    if n.proxy_protocol.enable && n.proxy_protocol.allow.as_ref().is_none_or(Vec::is_empty) {
        e.add(
            "/network/proxy-protocol/allow",
            "must list at least one address or network when proxy-protocol is enabled",
        );
    }
    for (i, l) in n.listen.iter().enumerate() {
        let p = format!("/network/listen/{i}");
        match (&l.interface, &l.unix_socket) {
            (Some(_), Some(_)) | (None, None) => {
                e.add(
                    &p,
                    "exactly one of 'interface' and 'unix-socket' must be set",
                );
            }
            (None, Some(_)) => {
                e.add(
                    format!("{p}/unix-socket"),
                    "kresd 5.x cannot serve DNS on a unix socket; use 'interface'",
                );
                if l.port.is_some() {
                    e.add(
                        format!("{p}/port"),
                        "'port' cannot be combined with 'unix-socket'; it applies to 'interface' only",
                    );
                }
            }
            (Some(ifaces), None) => listen_interfaces(&p, l.port.is_some(), ifaces.items(), e),
        }
        match l.kind {
            ListenKind::Doq => e.add(format!("{p}/kind"), v6_only("kind 'doq' (DNS over QUIC)")),
            ListenKind::Doh2Insecure => e.add(
                format!("{p}/kind"),
                v6_only("kind 'doh2-insecure' (DNS over unencrypted HTTP/2)"),
            ),
            ListenKind::Xdp if l.interface.as_ref().is_some_and(|i| i.items().len() != 1) => e.add(
                format!("{p}/interface"),
                "kind 'xdp' takes exactly one interface",
            ),
            _ => {}
        }
    }
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for (i, l) in n.listen.iter().enumerate() {
        let Some(ifaces) = &l.interface else { continue };
        for (j, iface) in ifaces.iter().enumerate() {
            let port = iface.port.map_or(l.effective_port(), |p| p.get());
            let key = format!("{}@{port}", iface.host);
            if let Some(first) = seen.get(&key) {
                if *first != i {
                    e.add(
                        format!("/network/listen/{i}/interface/{j}"),
                        format!("'{key}' is already used by /network/listen/{first}"),
                    );
                }
            } else {
                seen.insert(key, i);
            }
        }
    }
}

fn listen_interfaces(p: &str, has_port: bool, ifaces: &[InterfaceOptionalPort], e: &mut Errors) {
    if ifaces.is_empty() {
        e.add(format!("{p}/interface"), "must list at least one interface");
        return;
    }
    let with_port = ifaces.iter().filter(|i| i.port.is_some()).count();
    if has_port && with_port > 0 {
        for (j, iface) in ifaces.iter().enumerate() {
            if iface.port.is_some() {
                e.add(
                    format!("{p}/interface/{j}"),
                    "port given twice: in 'port' and as '@<port>'",
                );
            }
        }
    } else if with_port != 0 && with_port != ifaces.len() {
        e.add(
            format!("{p}/interface"),
            "the '@<port>' syntax must be used for all or none of the interfaces",
        );
    }
}

fn tls(t: &TlsConfig, e: &mut Errors) {
    if t.cert_file.is_some() != t.key_file.is_some() {
        e.add(
            "/network/tls",
            "'cert-file' and 'key-file' must be set together",
        );
    }
    if t.sticket_secret.is_some() && t.sticket_secret_file.is_some() {
        e.add(
            "/network/tls",
            "only one of 'sticket-secret' and 'sticket-secret-file' may be set",
        );
    }
    if t.watchdog == AutoBool::Bool(true) {
        e.add(
            "/network/tls/watchdog",
            v6_only("watching certificate files ('watchdog: true')"),
        );
    }
}

fn cache(config: &ResolverConfig, e: &mut Errors) {
    let c = &config.cache;
    if c.ttl_max.micros() < c.ttl_min.micros() {
        e.add(
            "/cache/ttl-max",
            format!("ttl-max must be >= ttl-min ({} < {})", c.ttl_max, c.ttl_min),
        );
    }
    if c.size_max.bytes() == 0 {
        e.add("/cache/size-max", "must be greater than 0");
    }
    if c.garbage_collector.enable && c.garbage_collector.interval.micros() < 1_000 {
        e.add(
            "/cache/garbage-collector/interval",
            format!(
                "must be at least 1ms when the garbage collector is enabled, got {}",
                c.garbage_collector.interval
            ),
        );
    }
    for (i, p) in c.prefill.iter().enumerate() {
        if !p.origin.is_root() {
            e.add(
                format!("/cache/prefill/{i}/origin"),
                format!(
                    "cache prefilling is supported only for the root zone '.', got '{}'",
                    p.origin
                ),
            );
        }
        if !p.url.starts_with("https://") {
            e.add(
                format!("/cache/prefill/{i}/url"),
                format!("must be an https:// URL, got '{}'", p.url),
            );
        }
    }
    let pre = &c.prefetch;
    if pre.prediction.enable {
        if !pre.expiring {
            e.add(
                "/cache/prefetch/prediction/enable",
                "kresd 5.x's predict module always prefetches expiring records; set 'expiring: true' as well",
            );
        }
        let secs = pre.prediction.window.micros() / 1_000_000;
        if !pre.prediction.window.micros().is_multiple_of(60_000_000) || secs < 60 {
            e.add(
                "/cache/prefetch/prediction/window",
                format!(
                    "kresd 5.x takes the prediction window in whole minutes, got {}",
                    pre.prediction.window
                ),
            );
        }
    }
    if c.prefill.len() > 1 {
        e.add(
            "/cache/prefill",
            "at most one prefill entry (the root zone) is supported",
        );
    }
}

/// Checks forward servers shared by `forward` and `fallback`.
fn servers(p: &str, servers: &[ForwardServer], authoritative: bool, e: &mut Errors) {
    if servers.is_empty() {
        e.add(p, "must list at least one server");
        return;
    }
    let tls_count = servers.iter().filter(|s| s.is_tls()).count();
    if tls_count != 0 && tls_count != servers.len() {
        e.add(
            p,
            "cannot mix TLS and plain servers in one entry (kresd 5.x forwards one subtree either over TLS or not)",
        );
    }
    for (j, s) in servers.iter().enumerate() {
        let sp = format!("{p}/{j}");
        if authoritative {
            if let Some(port) = s
                .addresses()
                .iter()
                .find_map(|a| a.port)
                .filter(|p| p.get() != 53)
            {
                e.add(
                    &sp,
                    format!("forwarding to authoritative servers on a custom port is not supported (port {port})"),
                );
            }
            if s.is_tls() {
                e.add(
                    &sp,
                    "forwarding to authoritative servers over TLS is not supported",
                );
            }
        }
        let ForwardServer::Server(c) = s else {
            continue;
        };
        if c.address.items().is_empty() {
            e.add(format!("{sp}/address"), "must list at least one address");
        }
        if c.pin_sha256.is_some() && (c.hostname.is_some() || c.ca_file.is_some()) {
            e.add(
                &sp,
                "'pin-sha256' cannot be combined with 'hostname' or 'ca-file'",
            );
        }
        if c.transport == Some(ForwardTransport::Tls) {
            if c.hostname.is_none() && c.pin_sha256.is_none() {
                e.add(
                    &sp,
                    "TLS servers need 'hostname' or 'pin-sha256' (kresd 5.x refuses unauthenticated TLS)",
                );
            }
            if c.ca_file.is_some() && c.hostname.is_none() {
                e.add(format!("{sp}/ca-file"), "'ca-file' requires 'hostname'");
            }
        } else {
            for (key, set) in [
                ("pin-sha256", c.pin_sha256.is_some()),
                ("hostname", c.hostname.is_some()),
                ("ca-file", c.ca_file.is_some()),
            ] {
                if set {
                    e.add(
                        format!("{sp}/{key}"),
                        format!("'{key}' requires 'transport: tls'"),
                    );
                }
            }
        }
    }
}

fn forward(config: &ResolverConfig, e: &mut Errors) {
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, f) in config.forward.iter().enumerate() {
        let p = format!("/forward/{i}");
        if f.subtree.items().is_empty() {
            e.add(format!("{p}/subtree"), "must list at least one subtree");
        }
        for (j, s) in f.subtree.iter().enumerate() {
            match seen.get(s.as_str()) {
                Some(first) => e.add(
                    format!("{p}/subtree/{j}"),
                    format!("subtree '{s}' is already forwarded by /forward/{first}"),
                ),
                None => {
                    seen.insert(s.as_str(), i);
                }
            }
        }
        servers(
            &format!("{p}/servers"),
            &f.servers,
            f.options.authoritative,
            e,
        );
    }
}

fn fallback(config: &ResolverConfig, e: &mut Errors) {
    let f = &config.fallback;
    if f.enable {
        e.add(
            "/fallback/enable",
            v6_only("fallback on resolution failure"),
        );
        if f.servers.is_empty() {
            e.add("/fallback/servers", "fallback is enabled without servers");
        }
    } else if !f.servers.is_empty() {
        e.add(
            "/fallback/servers",
            v6_only("fallback on resolution failure ('fallback.servers')"),
        );
    }
}

fn rule(p: &str, r: &LocalDataRule, e: &mut Errors) {
    let address = r.address.is_some();
    let subtree = r.subtree.is_some();
    let file = r.file.is_some();
    let records = r.records.is_some();
    let count = [address, subtree, file, records]
        .iter()
        .filter(|b| **b)
        .count();
    let address_with_subtree = count == 2
        && address
        && matches!(r.subtree, Some(RuleSubtree::Empty | RuleSubtree::Redirect));
    if count > 1 && !address_with_subtree {
        e.add(
            p,
            "only one of 'address', 'subtree', 'file' or 'records' may be set (except 'address' with 'subtree: empty|redirect')",
        );
    } else if count == 0 {
        e.add(
            p,
            "one of 'address', 'subtree', 'file' or 'records' must be set",
        );
    }
    let sources = [r.name.is_some(), file, records]
        .iter()
        .filter(|b| **b)
        .count();
    if sources != 1 {
        e.add(p, "exactly one of 'name', 'file' or 'records' must be set");
    }
    if r.subtree == Some(RuleSubtree::Redirect) && !address {
        e.add(
            format!("{p}/address"),
            "'subtree: redirect' requires 'address'",
        );
    }
    if r.nodata == Some(true) && subtree && !address {
        e.add(
            format!("{p}/nodata"),
            "'nodata' has no effect with 'subtree' unless 'address' is set",
        );
    }
    if let Some(names) = &r.name
        && names.items().is_empty()
    {
        e.add(format!("{p}/name"), "must list at least one name");
    }
    if r.tags.is_some() {
        e.add(format!("{p}/tags"), v6_only("tagging local-data rules"));
    }
    if file && (r.ttl.is_some() || r.nodata.is_some()) {
        e.add(
            p,
            "kresd 5.x applies one TTL and nodata setting to all hosts files; set 'ttl'/'nodata' in /local-data instead of in a rule with 'file'",
        );
    }
}

fn local_data(config: &ResolverConfig, e: &mut Errors) {
    let l = &config.local_data;
    for (name, addrs) in &l.addresses {
        if addrs.items().is_empty() {
            e.add(
                format!("/local-data/addresses/{}", escape_token(name.as_str())),
                "must list at least one address",
            );
        }
    }
    for (i, r) in l.rules.iter().enumerate() {
        rule(&format!("/local-data/rules/{i}"), r, e);
    }
    for (i, r) in l.rpz.iter().enumerate() {
        if r.tags.is_some() {
            e.add(format!("/local-data/rpz/{i}/tags"), v6_only("tagging RPZ"));
        }
        if r.log.is_some() {
            e.add(
                format!("/local-data/rpz/{i}/log"),
                v6_only("RPZ match logging"),
            );
        }
    }
}

fn views(config: &ResolverConfig, e: &mut Errors) {
    for (i, v) in config.views.iter().enumerate() {
        let p = format!("/views/{i}");
        if v.subnets.is_empty() {
            e.add(format!("{p}/subnets"), "must list at least one subnet");
        }
        if v.tags.is_some() == v.answer.is_some() {
            e.add(&p, "exactly one of 'tags' and 'answer' must be set");
        }
        if v.tags.is_some() {
            e.add(
                format!("{p}/tags"),
                v6_only("tagging views (rules database)"),
            );
        }
        if let Some(protocols) = &v.protocols {
            for (j, proto) in protocols.iter().enumerate() {
                if *proto == ViewProtocol::Doq {
                    e.add(
                        format!("{p}/protocols/{j}"),
                        v6_only("DNS over QUIC (protocol 'doq')"),
                    );
                }
            }
        }
        if v.options.price_factor.get() != 1.0 {
            e.add(
                format!("{p}/options/price-factor"),
                v6_only("'price-factor' (rate-limiting and defer pricing)"),
            );
        }
        if !v.options.fallback {
            e.add(
                format!("{p}/options/fallback"),
                v6_only("per-view fallback control"),
            );
        }
    }
}

fn logging(config: &ResolverConfig, e: &mut Errors) {
    let l = &config.logging;
    if let Some(groups) = &l.groups {
        let mut seen = HashSet::new();
        for (i, g) in groups.iter().enumerate() {
            let p = format!("/logging/groups/{i}");
            if !seen.insert(*g) {
                e.add(&p, format!("duplicate logging group '{g}'"));
            } else if !g.is_kresd_group() {
                e.add(
                    &p,
                    format!("logging group '{g}' belongs to the Knot Resolver 6.x manager; kresd 5.x has no such group"),
                );
            } else if !g.in_kresd5() {
                e.add(&p, v6_only(&format!("logging group '{g}'")));
            }
        }
    }
    if l.dnstap.enable && l.dnstap.unix_socket.is_none() {
        e.add(
            "/logging/dnstap/unix-socket",
            "required when dnstap is enabled",
        );
    }
}

fn monitoring(config: &ResolverConfig, e: &mut Errors) {
    let g = &config.monitoring.graphite;
    if g.enable && g.host.is_none() {
        e.add(
            "/monitoring/graphite/host",
            "required when graphite is enabled",
        );
    }
}

fn lua(config: &ResolverConfig, e: &mut Errors) {
    let l = &config.lua;
    if l.script.is_some() && l.script_file.is_some() {
        e.add("/lua", "only one of 'script' and 'script-file' may be set");
    }
    if l.script_only && l.script.is_none() && l.script_file.is_none() {
        e.add(
            "/lua/script-only",
            "'script-only' requires 'script' or 'script-file'",
        );
    }
    for (key, set) in [
        ("policy-script-only", l.policy_script_only),
        ("policy-script", l.policy_script.is_some()),
        ("policy-script-file", l.policy_script_file.is_some()),
    ] {
        if set {
            e.add(
                format!("/lua/{key}"),
                v6_only(&format!("'{key}' (the policy-loader process)")),
            );
        }
    }
}

fn limits(config: &ResolverConfig, e: &mut Errors) {
    if config.rate_limiting.enable {
        e.add("/rate-limiting/enable", v6_only("rate limiting"));
    }
    if config.defer.enable == Some(true) {
        e.add("/defer/enable", v6_only("request prioritization (defer)"));
    }
    if config.defer.log_period.micros() != 0 && config.defer.enable != Some(false) {
        e.add(
            "/defer/log-period",
            v6_only("request prioritization (defer)"),
        );
    }
}
