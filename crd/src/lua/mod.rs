//! Rendering a validated [`ResolverConfig`] into kresd 5.x Lua.
//!
//! [`render`] is deterministic (same config, same bytes); [`revision`] hashes its output.
//! Every user string that reaches the output goes through [`quote`]; `lua.script` is the only
//! raw passthrough and is labelled as such in the output. Settings kresd 5.6 cannot do are
//! refused by validation (`config::validate`, JSON pointer and rule), never silently dropped.

mod general;
mod network;
mod policy;
mod quote;
mod resolver;
mod writer;

pub use network::inherited_kind;
pub use quote::quote;

use sha2::{Digest, Sha256};

use crate::config::{ConfigErrors, ResolverConfig};
use writer::LuaOut;

/// How `network.listen` entries reach kresd.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SocketMode {
    /// kresd binds every `network.listen` entry itself (`net.listen`); what `kresctl convert` prints.
    #[default]
    Listen,
    /// The sockets are inherited (`kresd -S FD[:kind]`): no `net.listen` for `network.listen`.
    Inherited,
    /// Each `network.listen` entry is bound on the address in the environment variable
    /// [`POD_IP_ENV`] (a Pod's `status.podIP`), whatever address the entry names: each pod
    /// listens on its own IP (Kubernetes mode).
    PodIp,
}

/// The environment variable that holds a pod's IP ([`SocketMode::PodIp`]).
pub const POD_IP_ENV: &str = "POD_IP";

/// Options that change how a config is rendered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RenderOptions {
    /// Whether kresd binds its listening sockets itself.
    pub sockets: SocketMode,
    /// Open the cache in the directory named by this environment variable instead of
    /// `cache.storage` (Kubernetes mode: the pod's cache volume, wherever it is mounted).
    pub cache_dir_env: Option<&'static str>,
}

/// Render `config` as a kresd 5.x Lua configuration: every rule is checked first by
/// [`ResolverConfig::validate`] (the one rule set shared by every entry point, with pointers),
/// then rendering cannot fail.
pub fn render(config: &ResolverConfig, options: &RenderOptions) -> Result<String, ConfigErrors> {
    config.validate()?;
    Ok(render_valid(config, options))
}

/// Render a config [`ResolverConfig::validate`] accepted. Settings validation refuses render
/// nothing.
fn render_valid(config: &ResolverConfig, options: &RenderOptions) -> String {
    let mut out = LuaOut::default();
    out.line("-- kresd 5.x configuration rendered by kres-operator from config.yaml; do not edit.");
    // Knot Resolver 6 provides a global `ffi` to configuration scripts; keep `lua.script` portable.
    out.line("ffi = require('ffi')");
    if !config.lua.script_only {
        general::identity(config, &mut out);
        general::logging(config, &mut out);
        general::monitoring(config, &mut out);
        resolver::options(config, &mut out);
        network::network(config, options, &mut out);
        resolver::cache(config, options.cache_dir_env, &mut out);
        resolver::dnssec(config, &mut out);
        policy::policy(config, &mut out);
        policy::views(config, &mut out);
        resolver::dns64(config, &mut out);
    }
    general::lua(config, &mut out);
    out.finish()
}

/// A short stable hash (16 hex digits of SHA-256) of rendered Lua, used as the revision id.
pub fn revision(rendered: &[u8]) -> String {
    let digest = Sha256::digest(rendered);
    hex::encode(&digest[..8])
}

#[cfg(test)]
mod tests;
