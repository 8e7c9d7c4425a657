//! `network`: listening sockets, TLS, EDNS, TCP, PROXYv2, address renumbering.

use crate::config::{InterfaceHost, ListenKind, ResolverConfig, TlsPadding};

use super::writer::{LuaOut, lua_bool, str_list};
use super::{POD_IP_ENV, RenderOptions, SocketMode, quote};

/// kresd 5.x's `kind` for a listen kind (`None` for the Knot Resolver 6.x-only kinds, which
/// validation refuses).
fn kind_name(kind: ListenKind) -> Option<&'static str> {
    match kind {
        ListenKind::Dns => Some("dns"),
        ListenKind::Dot => Some("tls"),
        ListenKind::DohLegacy => Some("doh_legacy"),
        ListenKind::Doh2 => Some("doh2"),
        ListenKind::Xdp => Some("xdp"),
        ListenKind::Doh2Insecure | ListenKind::Doq => None,
    }
}

/// The `-S FD:kind` suffix kresd 5.x expects for an inherited socket of this listen kind
/// (`None` for plain DNS).
pub fn inherited_kind(kind: ListenKind) -> Option<&'static str> {
    match kind_name(kind) {
        Some("dns") | None => None,
        Some(k) => Some(k),
    }
}

/// The `network` section.
pub(super) fn network(c: &ResolverConfig, options: &RenderOptions, out: &mut LuaOut) {
    let n = &c.network;
    out.section("network");
    out.line(format!("net.ipv4 = {}", lua_bool(n.do_ipv4)));
    out.line(format!("net.ipv6 = {}", lua_bool(n.do_ipv6)));
    if let Some(a) = &n.out_interface_v4 {
        out.line(format!("net.outgoing_v4({})", quote(&a.to_string())));
    }
    if let Some(a) = &n.out_interface_v6 {
        out.line(format!("net.outgoing_v6({})", quote(&a.to_string())));
    }
    out.line(format!("net.tcp_pipeline({})", n.tcp_pipeline.get()));
    if n.edns_tcp_keepalive {
        out.line("modules.load('edns_keepalive')");
    } else {
        out.line("modules.unload('edns_keepalive')");
    }
    out.line(format!(
        "net.bufsize({}, {})",
        n.edns_buffer_size.downstream.bytes(),
        n.edns_buffer_size.upstream.bytes()
    ));

    let tls = &n.tls;
    // Validation requires both or neither.
    if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
        out.line(format!(
            "net.tls({}, {})",
            quote(cert.as_str()),
            quote(key.as_str())
        ));
    }
    if let Some(secret) = &tls.sticket_secret {
        out.line(format!(
            "net.tls_sticket_secret({})",
            quote(secret.as_str())
        ));
    }
    if let Some(file) = &tls.sticket_secret_file {
        out.line(format!(
            "net.tls_sticket_secret_file({})",
            quote(file.as_str())
        ));
    }
    match tls.padding {
        TlsPadding::Enabled(b) => out.line(format!("net.tls_padding({})", lua_bool(b))),
        TlsPadding::BlockSize(s) => out.line(format!("net.tls_padding({})", s.get())),
    }

    if !n.address_renumbering.is_empty() {
        out.line("modules.load('renumber')");
        let pairs: Vec<String> = n
            .address_renumbering
            .iter()
            .map(|r| str_list([r.source.to_string(), r.destination.to_string()]))
            .collect();
        out.line(format!("renumber.config({{{}}})", pairs.join(", ")));
    }

    if n.proxy_protocol.enable {
        let allow = n.proxy_protocol.allow.as_deref().unwrap_or_default();
        out.line(format!(
            "net.proxy_allowed({})",
            str_list(allow.iter().map(|a| a.to_string()))
        ));
    }

    let mut need_http = false;
    let mut listens = Vec::new();
    for l in &n.listen {
        // Validation refuses 6.x-only kinds and unix sockets: every entry has interfaces.
        let (Some(kind), Some(interfaces)) = (kind_name(l.kind), &l.interface) else {
            continue;
        };
        need_http |= l.kind == ListenKind::DohLegacy;
        let mut opts = format!("kind = '{kind}'");
        if l.freebind {
            opts.push_str(", freebind = true");
        }
        for iface in interfaces {
            let port = iface
                .port
                .or(l.port)
                .map(|p| p.get())
                .unwrap_or_else(|| l.kind.default_port());
            let target = match &iface.host {
                _ if options.sockets == SocketMode::PodIp => {
                    format!(
                        "assert(os.getenv({0}), {1})",
                        quote(POD_IP_ENV),
                        quote(&format!("{POD_IP_ENV} is not set"))
                    )
                }
                InterfaceHost::Ip(ip) => quote(&ip.to_string()),
                // An interface name: all its addresses (`net.<name>` in kresd 5.x).
                InterfaceHost::Name(name) => format!("net[{}]", quote(name.as_str())),
            };
            listens.push(format!("net.listen({target}, {port}, {{{opts}}})"));
        }
    }
    if need_http {
        out.line("modules.load('http')");
    }
    match options.sockets {
        SocketMode::Listen | SocketMode::PodIp => {
            for l in listens {
                out.line(l);
            }
        }
        SocketMode::Inherited => {
            out.line("-- network.listen: sockets are inherited from the operator (kresd -S)")
        }
    }
}
