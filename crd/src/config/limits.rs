//! `rate-limiting` and `defer`: Knot Resolver 6.x features kresd 5.x does not have.
//! They parse; validation rejects them when enabled.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::cache::time;
use super::types::{Int0To32, IntPositive, TimeSuffix, TimeUnit};

/// Rate limiting of clients (Knot Resolver 6.x only; kresd 5.x cannot do it).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct RateLimitingConfig {
    /// Enable rate limiting.
    pub enable: bool,
    /// Maximum queries per second from one host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<IntPositive>,
    /// Maximum queries at one instant from one host.
    pub instant_limit: IntPositive,
    /// Expected maximum number of blocked networks/hosts at the same time.
    pub capacity: IntPositive,
    /// One of this many restricted answers is sent truncated, the others are dropped.
    pub slip: Int0To32,
    /// Minimum time between two log messages, '0s' = no logging.
    pub log_period: TimeUnit,
    /// Only classify and log, do not restrict.
    pub dry_run: bool,
}

impl Default for RateLimitingConfig {
    fn default() -> Self {
        Self {
            enable: false,
            rate_limit: None,
            instant_limit: IntPositive(50),
            capacity: IntPositive(524_288),
            slip: Int0To32(2),
            log_period: time(0, TimeSuffix::S),
            dry_run: false,
        }
    }
}

/// Request prioritization (Knot Resolver 6.x only; kresd 5.x cannot do it).
///
/// Upstream enables it by default; kresd 5.x has no defer, so here it is off unless set, and
/// `enable: true` fails validation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct DeferConfig {
    /// Enable request prioritization (not available with kresd 5.x).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enable: Option<bool>,
    /// Minimum time between two log messages, '0s' = no logging.
    pub log_period: TimeUnit,
}

impl Default for DeferConfig {
    fn default() -> Self {
        Self {
            enable: None,
            log_period: time(0, TimeSuffix::S),
        }
    }
}
