//! `views`: per-client policy.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::types::{Float0To65535, IdPattern, IpNetwork};

/// Transport protocol condition of a view.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ViewProtocol {
    /// DNS over UDP port 53.
    Udp53,
    /// DNS over TCP port 53.
    Tcp53,
    /// DNS over TLS.
    Dot,
    /// DNS over HTTPS.
    Doh,
    /// DNS over QUIC.
    Doq,
}

/// A fixed answer for clients matching a view.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ViewAnswer {
    /// Resolve normally.
    Allow,
    /// Answer REFUSED.
    Refused,
    /// Send no answer.
    Noanswer,
}

/// Options for clients matching a view.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct ViewOptions {
    /// QNAME minimisation for these clients.
    pub minimize: bool,
    /// DNS64 for these clients.
    pub dns64: bool,
    /// Multiplier of rate-limiting and defer prices, 0 = whitelist (Knot Resolver 6.x only).
    pub price_factor: Float0To65535,
    /// Fallback on resolution failure (Knot Resolver 6.x only).
    pub fallback: bool,
}

impl Default for ViewOptions {
    fn default() -> Self {
        Self {
            minimize: true,
            dns64: true,
            price_factor: Float0To65535(1.0),
            fallback: true,
        }
    }
}

/// A view: clients identified by subnet (and optionally destination and protocol).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ViewConfig {
    /// Client subnets; the most specific subnet takes priority.
    pub subnets: Vec<IpNetwork>,
    /// Destination subnet, as an additional condition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst_subnet: Option<IpNetwork>,
    /// Transport protocols, as an additional condition (`doq`: Knot Resolver 6.x only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocols: Option<Vec<ViewProtocol>>,
    /// Tags linking to local-data rules (Knot Resolver 6.x only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<IdPattern>>,
    /// Fixed answer for these clients.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<ViewAnswer>,
    /// Options for these clients.
    #[serde(default)]
    pub options: ViewOptions,
}
