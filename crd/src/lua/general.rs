//! Identity (hostname, nsid), logging, monitoring, the raw `lua` section, and the settings
//! that only Knot Resolver 6.x has.

use crate::config::{LogTarget, MetricsMode, ResolverConfig};

use super::quote;
use super::writer::{LuaOut, lua_bool, str_list};

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
pub(super) fn logging(c: &ResolverConfig, out: &mut LuaOut) {
    let l = &c.logging;
    out.section("logging");
    let groups = l.groups.as_deref().unwrap_or_default();
    out.line(format!("log_level({})", quote(l.level.as_str())));
    match l.target {
        LogTarget::Syslog => out.line("log_target('syslog')"),
        LogTarget::Stderr => out.line("log_target('stderr')"),
        LogTarget::Stdout => out.line("log_target('stdout')"),
        LogTarget::FromEnv => out.line("log_target(os.getenv('KRES_LOGGING_TARGET') or 'stdout')"),
    }
    let mut kresd_groups = Vec::new();
    for g in groups {
        // Validation refuses manager and 6.x-only groups; kresd 5.x's own ones remain.
        if g.in_kresd5() {
            kresd_groups.push(g.as_str());
        }
    }
    if !kresd_groups.is_empty() {
        out.line(format!("log_groups({})", str_list(kresd_groups)));
    }
    let d = &l.dnstap;
    // Validation requires the socket when dnstap is enabled.
    if d.enable
        && let Some(sock) = &d.unix_socket
    {
        out.line("modules.load('dnstap')");
        out.line(format!(
            "dnstap.config({{socket_path = {}, client = {{log_queries = {}, log_responses = {}, log_tcp_rtt = {}}}}})",
            quote(sock.as_str()),
            lua_bool(d.log_queries),
            lua_bool(d.log_responses),
            lua_bool(d.log_tcp_rtt)
        ));
    }
}

/// `monitoring`: statistics collection and the graphite bridge.
pub(super) fn monitoring(c: &ResolverConfig, out: &mut LuaOut) {
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
    // Validation requires the host when graphite is enabled.
    if g.enable
        && let Some(host) = &g.host
    {
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
}

/// `lua`: the raw script (the only passthrough) and the script file.
pub(super) fn lua(c: &ResolverConfig, out: &mut LuaOut) {
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
}
