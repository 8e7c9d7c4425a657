//! Identity (hostname, nsid), logging, monitoring, the raw `lua` section, and the settings
//! that only Knot Resolver 6.x has.

use crate::config::{LogTarget, MetricsMode, ResolverConfig};

use super::writer::{LuaOut, lua_bool, str_list};
use super::{RenderError, quote};

/// Reject what kresd 5.x cannot do at all (validation should have caught it already).
pub(super) fn unsupported(c: &ResolverConfig) -> Result<(), RenderError> {
    if c.fallback.enable {
        return Err(RenderError::new(
            "/fallback/enable",
            "kresd 5.x has no fallback on resolution failure",
        ));
    }
    if c.rate_limiting.enable {
        return Err(RenderError::new(
            "/rate-limiting/enable",
            "kresd 5.x has no rate limiting",
        ));
    }
    if c.defer.enable == Some(true) {
        return Err(RenderError::new(
            "/defer/enable",
            "kresd 5.x has no request prioritization (defer)",
        ));
    }
    if c.lua.policy_script.is_some()
        || c.lua.policy_script_file.is_some()
        || c.lua.policy_script_only
    {
        return Err(RenderError::new(
            "/lua",
            "the policy-loader (policy-script*) exists only in Knot Resolver 6.x",
        ));
    }
    Ok(())
}

/// Reject NUL characters in any string: kresd hands most strings to C, which would silently
/// truncate them at the NUL (`/etc/a\0b` would open `/etc/a`). Valid UTF-8 otherwise passes.
pub(super) fn no_nul(c: &ResolverConfig) -> Result<(), RenderError> {
    fn walk(v: &serde_json::Value, ptr: &mut String) -> Result<(), RenderError> {
        match v {
            serde_json::Value::String(s) if s.contains('\0') => Err(RenderError::new(
                ptr.clone(),
                "must not contain NUL characters",
            )),
            serde_json::Value::Array(a) => {
                for (i, x) in a.iter().enumerate() {
                    let len = ptr.len();
                    ptr.push_str(&format!("/{i}"));
                    walk(x, ptr)?;
                    ptr.truncate(len);
                }
                Ok(())
            }
            serde_json::Value::Object(o) => {
                for (k, x) in o {
                    let len = ptr.len();
                    ptr.push('/');
                    ptr.push_str(&k.replace('~', "~0").replace('/', "~1"));
                    if k.contains('\0') {
                        return Err(RenderError::new(
                            ptr.clone(),
                            "must not contain NUL characters",
                        ));
                    }
                    walk(x, ptr)?;
                    ptr.truncate(len);
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
    let inspect =
        |e: serde_json::Error| RenderError::new("", format!("cannot inspect config: {e}"));
    // Fast path: serde_json writes NUL as \u0000; only then find the pointer.
    if !serde_json::to_string(c)
        .map_err(inspect)?
        .contains("\\u0000")
    {
        return Ok(());
    }
    walk(
        &serde_json::to_value(c).map_err(inspect)?,
        &mut String::new(),
    )
}

/// `hostname` and `nsid`.
pub(super) fn identity(c: &ResolverConfig, out: &mut LuaOut) {
    if let Some(h) = &c.hostname {
        out.section("hostname");
        out.line(format!("hostname({})", quote(h)));
    }
    if let Some(n) = &c.nsid {
        out.section("nsid");
        out.line("modules.load('nsid')");
        out.line(format!("nsid.name({})", quote(n)));
    }
}

/// `logging`: level, target, debug groups, dnstap.
pub(super) fn logging(c: &ResolverConfig, out: &mut LuaOut) -> Result<(), RenderError> {
    let l = &c.logging;
    out.section("logging");
    let groups = l.groups.as_deref().unwrap_or_default();
    // The process group `kresd` means: debug everything in kresd.
    let level = if groups.iter().any(|g| g.as_str() == "kresd") {
        "debug"
    } else {
        l.level.as_str()
    };
    out.line(format!("log_level({})", quote(level)));
    match l.target {
        LogTarget::Syslog => out.line("log_target('syslog')"),
        LogTarget::Stderr => out.line("log_target('stderr')"),
        LogTarget::Stdout => out.line("log_target('stdout')"),
        LogTarget::FromEnv => out.line("log_target(os.getenv('KRES_LOGGING_TARGET') or 'stdout')"),
    }
    let mut kresd_groups = Vec::new();
    for (i, g) in groups.iter().enumerate() {
        if !g.is_kresd_group() {
            continue;
        }
        if matches!(g.as_str(), "rules" | "prlayr" | "defer" | "doq" | "ngtcp2") {
            return Err(RenderError::new(
                format!("/logging/groups/{i}"),
                format!(
                    "log group '{}' exists only in Knot Resolver 6.x",
                    g.as_str()
                ),
            ));
        }
        kresd_groups.push(g.as_str());
    }
    if !kresd_groups.is_empty() {
        out.line(format!("log_groups({})", str_list(kresd_groups)));
    }
    let d = &l.dnstap;
    if d.enable {
        let Some(sock) = &d.unix_socket else {
            return Err(RenderError::new(
                "/logging/dnstap/unix-socket",
                "dnstap needs a unix socket",
            ));
        };
        out.line("modules.load('dnstap')");
        out.line(format!(
            "dnstap.config({{socket_path = {}, client = {{log_queries = {}, log_responses = {}, log_tcp_rtt = {}}}}})",
            quote(sock.as_str()),
            lua_bool(d.log_queries),
            lua_bool(d.log_responses),
            lua_bool(d.log_tcp_rtt)
        ));
    }
    Ok(())
}

/// `monitoring`: statistics collection and the graphite bridge.
pub(super) fn monitoring(c: &ResolverConfig, out: &mut LuaOut) -> Result<(), RenderError> {
    let m = &c.monitoring;
    out.section("monitoring");
    match m.metrics {
        MetricsMode::Always => out.line("modules.load('stats')"),
        MetricsMode::Lazy | MetricsMode::ManagerOnly => {}
    }
    // Used by the operator over the control socket; loads `stats` on first use when lazy.
    out.line("function kres_operator_statistics()");
    out.line("\tif stats == nil then modules.load('stats') end");
    out.line("\treturn stats.list()");
    out.line("end");
    let g = &m.graphite;
    if g.enable {
        let Some(host) = &g.host else {
            return Err(RenderError::new(
                "/monitoring/graphite/host",
                "graphite needs a host",
            ));
        };
        out.line("modules.load('graphite')");
        out.line(format!(
            "graphite.config({{host = {}, port = {}, prefix = {}, interval = {}, tcp = {}}})",
            quote(&host.to_string()),
            g.port.get(),
            quote(&g.prefix),
            g.interval.millis(),
            lua_bool(g.tcp)
        ));
    }
    Ok(())
}

/// `lua`: the raw script (the only passthrough) and the script file.
pub(super) fn lua(c: &ResolverConfig, out: &mut LuaOut) -> Result<(), RenderError> {
    if let Some(file) = &c.lua.script_file {
        out.section("lua.script-file");
        out.line(format!("dofile({})", quote(file.as_str())));
    }
    if let Some(script) = &c.lua.script {
        out.section(
            "lua.script: RAW LUA FROM THE CONFIGURATION, passed through unchanged and unvalidated",
        );
        out.line(script);
    }
    Ok(())
}
