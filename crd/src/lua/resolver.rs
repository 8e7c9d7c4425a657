//! Resolver behaviour: `options`, `cache`, `dnssec`, `dns64`.

use std::collections::BTreeSet;

use crate::config::{GlueChecking, ResolverConfig, trust_anchor_owner};

use super::quote;
use super::writer::{LuaOut, lua_bool, str_list};

fn module(out: &mut LuaOut, load: bool, spec: &str, name: &str) {
    if load {
        out.line(format!("modules.load('{spec}')"));
    } else {
        out.line(format!("modules.unload('{name}')"));
    }
}

/// `options`: every one is rendered explicitly, so kresd 5.6's own defaults never leak in.
pub(super) fn options(c: &ResolverConfig, out: &mut LuaOut) {
    let o = &c.options;
    out.section("options");
    let mode = match o.glue_checking {
        GlueChecking::Normal => "normal",
        GlueChecking::Strict => "strict",
        GlueChecking::Permissive => "permissive",
    };
    out.line(format!("mode('{mode}')"));
    out.line(format!("option('NO_MINIMIZE', {})", lua_bool(!o.minimize)));
    out.line(format!(
        "option('ALLOW_LOCAL', {})",
        lua_bool(o.query_loopback)
    ));
    out.line(format!(
        "option('REORDER_RR', {})",
        lua_bool(o.reorder_rrset)
    ));
    out.line(format!(
        "option('NO_0X20', {})",
        lua_bool(!o.query_case_randomization)
    ));
    module(out, o.priming, "priming", "priming");
    module(out, o.refuse_no_rd, "refuse_nord", "refuse_nord");
    module(
        out,
        o.time_jump_detection,
        "detect_time_jump",
        "detect_time_jump",
    );
    if o.rebinding_protection {
        out.line("modules.load('rebinding < iterate')");
    }
    if o.violators_workarounds {
        out.line("modules.load('workarounds < iterate')");
    }
    if o.serve_stale {
        out.line("modules.load('serve_stale < cache')");
    }
}

/// `cache`: storage and size, TTL bounds, NS timeout, prefill, prefetch (the `predict` module).
/// The garbage collector is a separate process (kres-cache-gc), not Lua.
pub(super) fn cache(c: &ResolverConfig, cache_dir_env: Option<&str>, out: &mut LuaOut) {
    let k = &c.cache;
    out.section("cache");
    let uri = match cache_dir_env {
        Some(var) => format!(
            "'lmdb://' .. assert(os.getenv({}), {})",
            quote(var),
            quote(&format!("{var} is not set"))
        ),
        None => quote(&format!("lmdb://{}", k.storage.as_str())),
    };
    out.line(format!("cache.open({}, {uri})", k.size_max.bytes()));
    out.line(format!("cache.min_ttl({})", k.ttl_min.seconds()));
    out.line(format!("cache.max_ttl({})", k.ttl_max.seconds()));
    out.line(format!("cache.ns_tout({})", k.ns_timeout.millis()));
    if !k.prefill.is_empty() {
        out.line("modules.load('prefill')");
        let mut entries = Vec::new();
        for p in &k.prefill {
            let mut e = format!(
                "[{}] = {{url = {}, interval = {}",
                quote(p.origin.as_str()),
                quote(&p.url),
                p.refresh_interval.seconds()
            );
            if let Some(ca) = &p.ca_file {
                e.push_str(&format!(", ca_file = {}", quote(ca.as_str())));
            }
            e.push('}');
            entries.push(e);
        }
        out.line(format!("prefill.config({{{}}})", entries.join(", ")));
    }
    // Validation requires `expiring` with `prediction`, and a window of whole minutes.
    let pre = &k.prefetch;
    if pre.expiring {
        out.line("modules.load('predict')");
        if pre.prediction.enable {
            let secs = pre.prediction.window.seconds();
            out.line(format!(
                "predict.config({{window = {}, period = {}}})",
                secs / 60,
                pre.prediction.period.get()
            ));
        } else {
            // period 0: only expiring records are prefetched, no prediction.
            out.line("predict.config({window = 15, period = 0})");
        }
    }
}

/// `dnssec`, plus the negative trust anchors implied by `forward[*].options.dnssec: false`.
pub(super) fn dnssec(c: &ResolverConfig, out: &mut LuaOut) {
    let d = &c.dnssec;
    out.section("dnssec");
    if !d.enable {
        out.line("trust_anchors.remove('.')");
        return;
    }
    if d.log_bogus {
        out.line("modules.load('bogus_log')");
    }
    module(out, d.sentinel, "ta_sentinel", "ta_sentinel");
    module(out, d.signal_query, "ta_signal_query", "ta_signal_query");
    // Configured anchors replace any default anchor for the same owner (e.g. the packaged root key).
    let mut removed = BTreeSet::new();
    for ta in &d.trust_anchors {
        if let Some(owner) = trust_anchor_owner(ta)
            && removed.insert(owner.clone())
        {
            out.line(format!("trust_anchors.remove({})", quote(&owner)));
        }
        out.line(format!("trust_anchors.add({})", quote(ta)));
    }
    for f in &d.trust_anchors_files {
        out.line(format!(
            "trust_anchors.add_file({}, {})",
            quote(f.file.as_str()),
            lua_bool(f.read_only)
        ));
    }
    let mut insecure: BTreeSet<&str> = d
        .negative_trust_anchors
        .iter()
        .map(|n| n.as_str())
        .collect();
    for f in c.forward.iter().filter(|f| !f.options.dnssec) {
        insecure.extend(f.subtree.iter().map(|n| n.as_str()));
    }
    // Validation refuses a negative anchor for a name that has a configured trust anchor.
    if !insecure.is_empty() {
        out.line(format!(
            "trust_anchors.set_insecure({})",
            str_list(insecure)
        ));
    }
}

/// `dns64`.
pub(super) fn dns64(c: &ResolverConfig, out: &mut LuaOut) {
    let d = &c.dns64;
    if !d.enable {
        return;
    }
    out.section("dns64");
    out.line("modules.load('dns64')");
    let mut cfg = format!("prefix = {}", quote(&d.prefix.0.to_string()));
    if let Some(ttl) = &d.reverse_ttl {
        cfg.push_str(&format!(", rev_ttl = {}", ttl.seconds()));
    }
    if !d.exclude_subnets.is_empty() {
        cfg.push_str(&format!(
            ", exclude_subnets = {}",
            str_list(d.exclude_subnets.iter().map(|s| s.to_string()))
        ));
    }
    out.line(format!("dns64.config({{{cfg}}})"));
}
