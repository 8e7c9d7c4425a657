//! `dns64`: AAAA synthesis (RFC 6147).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::types::{Ipv6Network, Ipv6Network96, TimeUnit, null_as_default};

/// DNS64 (RFC 6147) configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct Dns64Config {
    /// Enable DNS64.
    pub enable: bool,
    /// IPv6 /96 prefix for synthesized AAAA records.
    pub prefix: Ipv6Network96,
    /// TTL of CNAMEs generated in the reverse 'ip6.arpa.' subtree.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reverse_ttl: Option<TimeUnit>,
    /// IPv6 subnets that are not allowed in answers.
    #[serde(
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub exclude_subnets: Vec<Ipv6Network>,
}

impl Default for Dns64Config {
    fn default() -> Self {
        Self {
            enable: false,
            prefix: Ipv6Network96(std::net::Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0)),
            reverse_ttl: None,
            exclude_subnets: Vec::new(),
        }
    }
}
