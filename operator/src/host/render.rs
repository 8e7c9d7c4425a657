//! Rendering adapter: `ResolverConfig` -> kresd Lua for host mode.
//!
//! TEMPORARY local stand-in until `kres_crd::lua::render` (branch `lua`) lands: renders only
//! what host mode needs to run workers (listen sockets when kresd binds them itself, cache,
//! `lua.script`). Replaced by a call to `kres_crd::lua::render` on merge.

use kres_crd::config::{InterfaceHost, ResolverConfig};
use kres_crd::lua::{RenderOptions, SocketMode, quote};

/// Render `cfg` for host-mode workers.
pub fn render(cfg: &ResolverConfig, opts: &RenderOptions) -> Result<String, String> {
    let mut out = String::from("-- rendered by kres-operator (host mode)\n");
    if opts.sockets == SocketMode::Listen {
        for l in &cfg.network.listen {
            let port = l.effective_port();
            for i in l.interface.iter().flat_map(|i| i.items()) {
                let InterfaceHost::Ip(ip) = &i.host else {
                    return Err("network/listen: interface names are not supported".into());
                };
                let port = i.port.map(|p| p.get()).unwrap_or(port);
                out.push_str(&format!(
                    "net.listen({}, {port}, {{ kind = {} }})\n",
                    quote(&ip.to_string()),
                    quote(if l.kind.as_str() == "dns" { "dns" } else { l.kind.as_str() })
                ));
            }
        }
    }
    out.push_str("modules.load('hints > iterate')\n");
    out.push_str(&format!(
        "cache.open({}, {})\n",
        cfg.cache.size_max.bytes(),
        quote(&format!("lmdb://{}", cfg.cache.storage.as_str()))
    ));
    if let Some(script) = &cfg.lua.script {
        out.push_str("-- lua.script (raw passthrough)\n");
        out.push_str(script);
        out.push('\n');
    }
    Ok(out)
}
