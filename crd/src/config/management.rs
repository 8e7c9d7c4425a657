//! `management`: the management HTTP API endpoint.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::types::{IpAddressPort, SocketPath};

/// Default management API socket (upstream: `/run/knot-resolver/kres-api.sock`).
pub const DEFAULT_API_SOCKET: &str = "/run/knot-resolver/kres-api.sock";

/// Where the management HTTP API listens: exactly one of `unix-socket` and `interface`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ManagementConfig {
    /// Path of the unix socket to listen on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unix_socket: Option<SocketPath>,
    /// IP address and port to listen on ('<ip-address>@<port>').
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<IpAddressPort>,
}

impl Default for ManagementConfig {
    fn default() -> Self {
        Self {
            unix_socket: Some(SocketPath(DEFAULT_API_SOCKET.into())),
            interface: None,
        }
    }
}
