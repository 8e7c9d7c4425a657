//! Rendering a validated [`ResolverConfig`](crate::config::ResolverConfig) into kresd 5.x Lua.
//!
//! Every user string that reaches the output goes through [`quote`]; `lua.script` is the only
//! raw passthrough and is labelled as such in the output.

mod quote;

pub use quote::quote;

use sha2::{Digest, Sha256};

/// How `network.listen` entries reach kresd.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SocketMode {
    /// kresd binds every `network.listen` entry itself (`net.listen`); what `kresctl convert` prints.
    #[default]
    Listen,
    /// The sockets are inherited (`kresd -S FD[:kind]`): no `net.listen` for `network.listen`.
    Inherited,
}

/// Options that change how a config is rendered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RenderOptions {
    /// Whether kresd binds its listening sockets itself.
    pub sockets: SocketMode,
}

/// A short stable hash (16 hex digits of SHA-256) of rendered Lua, used as the revision id.
pub fn revision(rendered: &[u8]) -> String {
    let digest = Sha256::digest(rendered);
    hex::encode(&digest[..8])
}

#[cfg(test)]
mod tests {
    use super::revision;

    #[test]
    fn revision_is_stable_and_short() {
        assert_eq!(revision(b"abc"), "ba7816bf8f01cfea");
        assert_eq!(revision(b"abc"), revision(b"abc"));
        assert_ne!(revision(b"abc"), revision(b"abd"));
    }
}
