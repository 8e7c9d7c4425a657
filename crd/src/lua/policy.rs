//! Policy rules: `local-data`, `forward`, and `views`.
//!
//! kresd 5.x evaluates `policy.add` rules and `view:addr` rules in insertion order, first
//! non-chain match wins, so the order emitted here is the semantics:
//! 1. exact-name local data (`records`, `rules` with names and addresses) and `policy.PASS` for
//!    the names of `addresses` (answered by the `hints` module, which runs after policy, so no
//!    catch-all rule below can hide them): all in ONE rule looking the name up in a table (O(1)
//!    per query however many names; the first registration of a name wins),
//! 3. local-data subtree rules, most specific first,
//! 4. RPZ files,
//! 5. forward zones, most specific subtree first.
//!
//! Views run in the `view` module before `policy`; the most specific subnet comes first.

use std::collections::BTreeSet;
use std::net::IpAddr;

use crate::config::{
    DomainName, ForwardServer, ForwardTransport, LocalDataRule, ResolverConfig, RuleSubtree,
    ViewAnswer, ViewProtocol,
};

use super::quote;
use super::writer::{LuaOut, dname_list, lua_bool, str_list};

/// TTL of local data when neither the rule nor `local-data/ttl` sets one (upstream's default).
pub const DEFAULT_LOCAL_TTL: u64 = 300;

/// Static Lua: parse zone-file text with kresd's own scanner and answer each owner name with
/// `policy.ANSWER` (NODATA for other types when `nodata`). A parse error stops kresd.
const RECORDS_HELPER: &str = "\
local function kres_local_records(text, default_ttl, nodata)
\tlocal zs = require('zonefile').new('.', 1, default_ttl)
\tlocal sets, owners = {}, {}
\tlocal ok, err = zs:parse(text)
\twhile ok do
\t\tlocal rr = zs:current_rr()
\t\tlocal owner = rr.owner:lower()
\t\tif sets[owner] == nil then
\t\t\tsets[owner] = {}
\t\t\ttable.insert(owners, owner)
\t\tend
\t\tlocal set = sets[owner][rr.type]
\t\tif set == nil then
\t\t\tsets[owner][rr.type] = { ttl = rr.ttl, rdata = { rr.rdata } }
\t\telse
\t\t\ttable.insert(set.rdata, rr.rdata)
\t\t\tset.ttl = math.min(set.ttl, rr.ttl)
\t\tend
\t\tok, err = zs:parse()
\tend
\tif err then
\t\terror(string.format('local-data records, line %d: %s', tonumber(zs.line_counter), err))
\tend
\tfor _, owner in ipairs(owners) do
\t\tif kres_exact[owner] == nil then kres_exact[owner] = policy.ANSWER(sets[owner], nodata) end
\tend
end";

/// Static Lua: one policy rule answering exact names from a table (wire-format name -> action).
const EXACT_HELPER: &str = "\
local kres_exact = {}
policy.add(function(_, query) return kres_exact[query:name()] end)
local function kres_exact_add(action, names)
\tfor _, name in ipairs(names) do
\t\tlocal key = todname(name)
\t\tif kres_exact[key] == nil then kres_exact[key] = action end
\tend
end";

/// Static Lua: a view rule with optional destination-subnet and protocol conditions.
const VIEW_HELPER: &str = "\
local function kres_view_rule(action, dst, protocols)
\tlocal dst_rule = dst and view.rule_dst(action, dst)
\treturn function(req, qry)
\t\tif protocols then
\t\t\tlocal f = req.qsource.flags
\t\t\tlocal p = (f.http and 'doh') or (f.tls and 'dot') or (f.tcp and 'tcp53') or 'udp53'
\t\t\tif not protocols[p] then return nil end
\t\tend
\t\tif dst_rule then return dst_rule(req, qry) end
\t\treturn action
\tend
end";

/// The PTR owner name of an address (`4.3.2.1.in-addr.arpa.`, nibbles under `ip6.arpa.`).
pub(crate) fn reverse_name(addr: &IpAddr) -> String {
    match addr {
        IpAddr::V4(a) => {
            let o = a.octets();
            format!("{}.{}.{}.{}.in-addr.arpa.", o[3], o[2], o[1], o[0])
        }
        IpAddr::V6(a) => {
            let mut s = String::with_capacity(73);
            const HEX: &[u8; 16] = b"0123456789abcdef";
            for b in a.octets().iter().rev() {
                s.push(char::from(HEX[usize::from(b & 0xf)]));
                s.push('.');
                s.push(char::from(HEX[usize::from(b >> 4)]));
                s.push('.');
            }
            s.push_str("ip6.arpa.");
            s
        }
    }
}

fn labels(name: &DomainName) -> usize {
    name.as_str().split('.').filter(|l| !l.is_empty()).count()
}

/// `policy.ANSWER` for a set of addresses.
fn address_answer(addrs: &[IpAddr], ttl: u64, nodata: bool) -> String {
    let (v4, v6): (Vec<&IpAddr>, Vec<&IpAddr>) = addrs.iter().partition(|a| a.is_ipv4());
    let mut sets = Vec::new();
    for (ty, list) in [("A", v4), ("AAAA", v6)] {
        if list.is_empty() {
            continue;
        }
        let rdata: Vec<String> = list
            .iter()
            .map(|a| format!("kres.str2ip({})", quote(&a.to_string())))
            .collect();
        sets.push(format!(
            "[kres.type.{ty}] = {{rdata = {{{}}}, ttl = {ttl}}}",
            rdata.join(", ")
        ));
    }
    format!(
        "policy.ANSWER({{{}}}, {})",
        sets.join(", "),
        lua_bool(nodata)
    )
}

struct Ctx<'a> {
    c: &'a ResolverConfig,
    out: &'a mut LuaOut,
    records_helper: bool,
    exact_helper: bool,
}

impl Ctx<'_> {
    fn default_ttl(&self) -> u64 {
        self.c
            .local_data
            .ttl
            .map(|t| t.seconds())
            .unwrap_or(DEFAULT_LOCAL_TTL)
    }

    /// The exact-name table rule, emitted once where exact data first appears.
    fn exact(&mut self) {
        if !self.exact_helper {
            self.out.line(EXACT_HELPER);
            self.exact_helper = true;
        }
    }

    fn records(&mut self, text: &str, ttl: u64, nodata: bool) {
        self.exact();
        if !self.records_helper {
            self.out.line(RECORDS_HELPER);
            self.records_helper = true;
        }
        self.out.line(format!(
            "kres_local_records({}, {ttl}, {})",
            quote(text),
            lua_bool(nodata)
        ));
    }
}

/// One local-data rule that applies to a subtree, kept for ordering.
struct SubtreeRule {
    labels: usize,
    index: usize,
    lines: Vec<String>,
}

/// `local-data` and `forward` as policy rules, in the order described in the module docs.
pub(super) fn policy(c: &ResolverConfig, out: &mut LuaOut) {
    let ld = &c.local_data;
    let mut cx = Ctx {
        c,
        out,
        records_helper: false,
        exact_helper: false,
    };
    let default_ttl = cx.default_ttl();

    let uses_hints = !ld.addresses.is_empty()
        || !ld.addresses_files.is_empty()
        || ld.rules.iter().any(|r| r.file.is_some());
    cx.out.section("local-data");
    if uses_hints {
        cx.out.line("modules.load('hints > iterate')");
        cx.out.line(format!("hints.ttl({default_ttl})"));
        cx.out
            .line(format!("hints.use_nodata({})", lua_bool(ld.nodata)));
    }
    // 1. exact names
    if let Some(text) = &ld.records {
        cx.records(text, default_ttl, ld.nodata);
    }
    let mut subtree_rules = Vec::new();
    for (i, r) in ld.rules.iter().enumerate() {
        rule(&mut cx, i, r, &mut subtree_rules);
    }
    // 2. addresses: hints, and PASS so that no policy rule below hides them
    for (name, addrs) in &ld.addresses {
        for a in addrs {
            cx.out.line(format!(
                "hints.set({})",
                quote(&format!("{} {a}", name.as_str()))
            ));
        }
    }
    for f in &ld.addresses_files {
        cx.out
            .line(format!("hints.add_hosts({})", quote(f.as_str())));
    }
    if !ld.addresses.is_empty() {
        // The names and their reverse (PTR) names, which hints answers too.
        let mut names: BTreeSet<String> = ld
            .addresses
            .keys()
            .map(|n| n.as_str().to_string())
            .collect();
        names.extend(
            ld.addresses
                .values()
                .flat_map(|a| a.iter().map(reverse_name)),
        );
        cx.exact();
        cx.out
            .line(format!("kres_exact_add(policy.PASS, {})", str_list(&names)));
    }
    // 3. subtrees, most specific first (stable: config order among equals)
    subtree_rules.sort_by(|a, b| b.labels.cmp(&a.labels).then(a.index.cmp(&b.index)));
    for r in subtree_rules {
        for l in r.lines {
            cx.out.line(l);
        }
    }
    // 4. RPZ
    // Validation refuses `tags` and `log` (Knot Resolver 6.x).
    for z in &ld.rpz {
        let watch = match z.watchdog {
            crate::config::AutoBool::Auto => "nil",
            crate::config::AutoBool::Bool(b) => lua_bool(b),
        };
        cx.out.line(format!(
            "policy.add(policy.rpz(policy.DENY, {}, {watch}))",
            quote(z.file.as_str())
        ));
    }
    forward(&mut cx)
}

/// One `local-data/rules` entry: exact rules are emitted now, subtree rules collected.
/// Shapes validation refuses (tags, no source, `redirect` without or `nxdomain` with
/// addresses, per-file TTL) render nothing.
fn rule(cx: &mut Ctx<'_>, i: usize, r: &LocalDataRule, subtrees: &mut Vec<SubtreeRule>) {
    let ttl = r
        .ttl
        .map(|t| t.seconds())
        .unwrap_or_else(|| cx.default_ttl());
    let nodata = r.nodata.unwrap_or(cx.c.local_data.nodata);
    if let Some(text) = &r.records {
        cx.records(text, ttl, nodata);
        return;
    }
    if let Some(files) = &r.file {
        for f in files {
            cx.out
                .line(format!("hints.add_hosts({})", quote(f.as_str())));
        }
        return;
    }
    let Some(names) = &r.name else {
        return;
    };
    let addrs: Vec<IpAddr> = r
        .address
        .as_ref()
        .map(|a| a.iter().copied().collect())
        .unwrap_or_default();
    let names_lua = dname_list(names.iter().map(|n| n.as_str()));
    let mut lines = Vec::new();
    match (r.subtree, addrs.is_empty()) {
        (None, false) => {
            cx.exact();
            cx.out.line(format!(
                "kres_exact_add({}, {})",
                address_answer(&addrs, ttl, nodata),
                str_list(names.iter().map(|n| n.as_str()))
            ));
            return;
        }
        (None, true)
        | (Some(RuleSubtree::Redirect), true)
        | (Some(RuleSubtree::Nxdomain), false) => {
            return;
        }
        (Some(RuleSubtree::Nxdomain), true) => {
            lines.push(format!(
                "policy.add(policy.suffix(policy.DENY, {names_lua}))"
            ));
        }
        (Some(RuleSubtree::Empty), _) => {
            // The top answers (addresses or NODATA), everything below is NXDOMAIN.
            let top = if addrs.is_empty() {
                "policy.ANSWER({}, true)".to_string()
            } else {
                address_answer(&addrs, ttl, true)
            };
            lines.push(format!("policy.add(policy.domains({top}, {names_lua}))"));
            lines.push(format!(
                "policy.add(policy.suffix(policy.DENY, {names_lua}))"
            ));
        }
        (Some(RuleSubtree::Redirect), false) => {
            lines.push(format!(
                "policy.add(policy.suffix({}, {names_lua}))",
                address_answer(&addrs, ttl, true)
            ));
        }
    }
    // Names of one rule share a rule; order by the most specific of them.
    let most = names.iter().map(labels).max().unwrap_or(0);
    subtrees.push(SubtreeRule {
        labels: most,
        index: i,
        lines,
    });
}

/// The policy action of one forward zone. Validation guarantees at least one server, TLS
/// settings only with `transport: tls`, authenticated TLS, no mix of TLS and plain servers, and
/// no TLS to authoritative servers.
fn forward_action(c: &ResolverConfig, zi: usize) -> String {
    let z = &c.forward[zi];
    let mut plain = Vec::new();
    let mut tls = Vec::new();
    for s in &z.servers {
        match s {
            ForwardServer::Address(a) => plain.push(quote(&a.to_string())),
            ForwardServer::Server(sc) => {
                let is_tls = sc.transport == Some(ForwardTransport::Tls);
                if !is_tls {
                    plain.extend(sc.address.iter().map(|a| quote(&a.to_string())));
                    continue;
                }
                let mut auth = String::new();
                if let Some(h) = &sc.hostname {
                    auth.push_str(&format!(
                        ", hostname = {}",
                        quote(h.as_str().trim_end_matches('.'))
                    ));
                }
                if let Some(ca) = &sc.ca_file {
                    auth.push_str(&format!(", ca_file = {}", quote(ca.as_str())));
                }
                if let Some(pins) = &sc.pin_sha256 {
                    auth.push_str(&format!(
                        ", pin_sha256 = {}",
                        str_list(pins.iter().map(|p| p.as_str()))
                    ));
                }
                for a in &sc.address {
                    tls.push(format!("{{{}{auth}}}", quote(&a.to_string())));
                }
            }
        }
    }
    if z.options.authoritative {
        return format!("policy.STUB({{{}}})", plain.join(", "));
    }
    if !tls.is_empty() {
        return format!("policy.TLS_FORWARD({{{}}})", tls.join(", "));
    }
    format!("policy.FORWARD({{{}}})", plain.join(", "))
}

/// `forward`: one action per zone, one rule per subtree, most specific subtree first.
fn forward(cx: &mut Ctx<'_>) {
    let c = cx.c;
    if c.forward.is_empty() {
        return;
    }
    cx.out.section("forward");
    cx.out.line("local kres_forward = {}");
    let mut rules: Vec<(usize, &str, usize)> = Vec::new();
    for (zi, z) in c.forward.iter().enumerate() {
        cx.out.line(format!(
            "kres_forward[{}] = {}",
            zi + 1,
            forward_action(c, zi)
        ));
        for s in &z.subtree {
            rules.push((labels(s), s.as_str(), zi));
        }
    }
    rules.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)).then(a.2.cmp(&b.2)));
    for (_, name, zi) in rules {
        cx.out.line(format!(
            "policy.add(policy.suffix(kres_forward[{}], {{todname({})}}))",
            zi + 1,
            quote(name)
        ));
    }
}

/// `views`: `view:addr` rules, most specific subnet first.
/// Validation refuses `tags`, a `price-factor` and the `doq` protocol, and requires `answer`.
pub(super) fn views(c: &ResolverConfig, out: &mut LuaOut) {
    if c.views.is_empty() {
        return;
    }
    out.section("views");
    out.line("modules.load('view < policy')");
    out.line(VIEW_HELPER);
    let mut entries = Vec::new();
    for (vi, v) in c.views.iter().enumerate() {
        let action = match v.answer {
            Some(ViewAnswer::Allow) => "policy.PASS",
            Some(ViewAnswer::Refused) => "policy.REFUSE",
            Some(ViewAnswer::Noanswer) => "policy.NO_ANSWER",
            None => continue,
        };
        let dst = v
            .dst_subnet
            .as_ref()
            .map(|d| quote(&d.to_string()))
            .unwrap_or_else(|| "nil".into());
        let protocols = match &v.protocols {
            None => "nil".to_string(),
            Some(ps) => {
                let mut names: Vec<&str> = ps
                    .iter()
                    .filter_map(|p| match p {
                        ViewProtocol::Udp53 => Some("udp53"),
                        ViewProtocol::Tcp53 => Some("tcp53"),
                        ViewProtocol::Dot => Some("dot"),
                        ViewProtocol::Doh => Some("doh"),
                        ViewProtocol::Doq => None,
                    })
                    .collect();
                names.sort_unstable();
                names.dedup();
                format!(
                    "{{{}}}",
                    names
                        .iter()
                        .map(|n| format!("{n} = true"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        };
        let mut flags = Vec::new();
        if !v.options.minimize {
            flags.push("'NO_MINIMIZE'");
        }
        if !v.options.dns64 {
            flags.push("'DNS64_DISABLE'");
        }
        for s in &v.subnets {
            entries.push((
                s.prefix,
                vi,
                s.to_string(),
                action,
                dst.clone(),
                protocols.clone(),
                flags.clone(),
            ));
        }
    }
    entries.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    for (_, _, subnet, action, dst, protocols, flags) in entries {
        let subnet = quote(&subnet);
        if !flags.is_empty() {
            out.line(format!(
                "view:addr({subnet}, kres_view_rule(policy.FLAGS({{{}}}), {dst}, {protocols}))",
                flags.join(", ")
            ));
        }
        out.line(format!(
            "view:addr({subnet}, kres_view_rule({action}, {dst}, {protocols}))"
        ));
    }
}
