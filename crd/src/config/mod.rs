//! `ResolverConfig`: the Knot Resolver 6 `config.yaml` model, its parsing and validation.
//!
//! Key names, defaults and shapes follow upstream Knot Resolver 6. Settings that only Knot
//! Resolver 6.x can do (rate-limiting, defer, DoQ, fallback, tags, ...) parse, and then fail
//! validation with a message saying kresd 5.x cannot do them.
//!
//! Entry points: [`ResolverConfig::from_yaml_str`], [`ResolverConfig::from_yaml_bytes`],
//! [`ResolverConfig::from_json_value`], [`ResolverConfig::validate`], [`json_schema`],
//! [`reference_markdown`].
//!
//! ```
//! use kres_crd::config::{ListenKind, ResolverConfig};
//!
//! let config = ResolverConfig::from_yaml_str(
//!     "network:\n  listen:\n    - interface: 127.0.0.1@5353\n      kind: dns\n",
//! )
//! .unwrap();
//! assert_eq!(config.network.listen[0].kind, ListenKind::Dns);
//!
//! let errors = ResolverConfig::from_yaml_str("cache:\n  ttl-min: 5m\n  ttl-max: 1m\n").unwrap_err();
//! assert_eq!(
//!     errors.to_string(),
//!     "3:12: /cache/ttl-max: ttl-max must be >= ttl-min (1m < 5m)"
//! );
//! ```

mod cache;
mod dns64;
mod dnssec;
mod error;
mod forward;
mod limits;
mod local_data;
mod logging;
mod lua;
mod management;
mod monitoring;
mod network;
mod options;
mod parse;
mod reference;
mod schema;
mod shape;
mod types;
mod validate;

use std::borrow::Cow;
use std::fmt;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

pub use cache::{
    CacheConfig, DEFAULT_CACHE_DIR, GarbageCollectorConfig, PredictionConfig, PrefetchConfig,
    PrefillConfig,
};
pub use dns64::Dns64Config;
pub use dnssec::{DnssecConfig, TrustAnchorFile, trust_anchor_owner};
pub use error::{ConfigError, ConfigErrors, Location};
pub use forward::{
    FallbackConfig, ForwardOptions, ForwardServer, ForwardServerConfig, ForwardTransport,
    ForwardZone,
};
pub use limits::{DeferConfig, RateLimitingConfig};
pub use local_data::{LocalDataConfig, LocalDataRule, RpzConfig, RpzLog, RuleSubtree};
pub use logging::{DnstapConfig, LogGroup, LogLevel, LogTarget, LoggingConfig};
pub use lua::LuaConfig;
pub use management::{DEFAULT_API_SOCKET, ManagementConfig};
pub use monitoring::{GraphiteConfig, GraphiteHost, MetricsMode, MonitoringConfig};
pub use network::{
    AddressRenumbering, EdnsBufferSize, ListenConfig, ListenKind, NetworkConfig,
    ProxyProtocolConfig, QuicConfig, TlsConfig, TlsPadding,
};
pub use options::{GlueChecking, OptionsConfig};
pub use parse::{MAX_DEPTH, MAX_INPUT_BYTES};
pub use reference::reference_markdown;
pub(crate) use reference::sections_markdown;
pub use schema::json_schema;
pub use types::{
    AutoBool, DomainName, FilePath, Float0To65535, IdPattern, Int0To32, Int0To512, Int0To65535,
    Int1To4096, IntNonNegative, IntPositive, InterfaceHost, InterfaceName, InterfaceOptionalPort,
    InterfacePort, IpAddressOptionalPort, IpAddressPort, IpNetwork, Ipv4Address, Ipv6Address,
    Ipv6Network, Ipv6Network96, ListOrItem, PATH_MAX_BYTES, Percent, PinSha256, PortNumber,
    RenumberDestination, SOCKET_PATH_MAX_BYTES, Secret32B, SizeSuffix, SizeUnit, SocketPath,
    TimeSuffix, TimeUnit, check_path_text,
};
pub use view::{ViewAnswer, ViewConfig, ViewOptions, ViewProtocol};

mod view;
mod yaml;

/// The only supported configuration schema version.
pub const CONFIG_VERSION: u32 = 1;

/// Largest accepted `workers` value.
pub const WORKERS_MAX: u32 = 256;

/// Number of kresd workers: a count, or `auto` (one per available CPU).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Workers {
    /// One worker per available CPU.
    Auto,
    /// A fixed number of workers (1..=256).
    Count(u32),
}

impl Default for Workers {
    fn default() -> Self {
        Self::Count(1)
    }
}

impl Serialize for Workers {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Auto => s.serialize_str("auto"),
            Self::Count(n) => s.serialize_u32(*n),
        }
    }
}

impl<'de> Deserialize<'de> for Workers {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Workers;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("'auto' or an integer 1..=256")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Workers, E> {
                match u32::try_from(v) {
                    Ok(n) if (1..=WORKERS_MAX).contains(&n) => Ok(Workers::Count(n)),
                    _ => Err(E::custom(format!(
                        "must be 'auto' or in range 1..={WORKERS_MAX}, got {v}"
                    ))),
                }
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Workers, E> {
                match u64::try_from(v) {
                    Ok(u) => self.visit_u64(u),
                    Err(_) => Err(E::custom(format!(
                        "must be 'auto' or in range 1..={WORKERS_MAX}, got {v}"
                    ))),
                }
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Workers, E> {
                if v == "auto" {
                    Ok(Workers::Auto)
                } else {
                    Err(E::custom(format!(
                        "must be 'auto' or in range 1..={WORKERS_MAX}, got '{v}'"
                    )))
                }
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for Workers {
    fn schema_name() -> Cow<'static, str> {
        "Workers".into()
    }
    fn inline_schema() -> bool {
        true
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "anyOf": [
                { "const": "auto" },
                { "type": "integer", "minimum": 1, "maximum": WORKERS_MAX }
            ]
        })
    }
}

/// Knot Resolver declarative configuration (`config.yaml`, schema version 1).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
#[schemars(title = "Knot Resolver configuration (kres-operator)")]
pub struct ResolverConfig {
    /// Version of the configuration schema; only 1 is supported.
    pub version: u32,
    /// Name Server Identifier (RFC 5001) sent to clients that ask for it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nsid: Option<String>,
    /// Resolver hostname (default: the machine's hostname).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Directory where the resolver creates its files; its working directory. Unset: the
    /// operator's default, `/run/kres-operator` as root, `$XDG_RUNTIME_DIR/kres-operator`
    /// otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rundir: Option<FilePath>,
    /// Number of kresd workers: 1..=256 or 'auto' (one per CPU).
    pub workers: Workers,
    /// Management HTTP API endpoint.
    pub management: ManagementConfig,
    /// Fine-tuning of resolver behaviour.
    pub options: OptionsConfig,
    /// Network connections and protocols.
    pub network: NetworkConfig,
    /// Views: policy by client subnet.
    #[serde(
        deserialize_with = "types::null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub views: Vec<ViewConfig>,
    /// Local data: static records, hosts files, rules, RPZ.
    pub local_data: LocalDataConfig,
    /// Forwarded subtrees.
    #[serde(
        deserialize_with = "types::null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub forward: Vec<ForwardZone>,
    /// Fallback after resolution failure (Knot Resolver 6.x only).
    pub fallback: FallbackConfig,
    /// DNS cache.
    pub cache: CacheConfig,
    /// DNSSEC validation.
    pub dnssec: DnssecConfig,
    /// DNS64 (RFC 6147).
    pub dns64: Dns64Config,
    /// Logging and debugging.
    pub logging: LoggingConfig,
    /// Metrics exposition.
    pub monitoring: MonitoringConfig,
    /// Custom Lua.
    pub lua: LuaConfig,
    /// Rate limiting (Knot Resolver 6.x only).
    pub rate_limiting: RateLimitingConfig,
    /// Request prioritization (Knot Resolver 6.x only).
    pub defer: DeferConfig,
}

impl Default for ResolverConfig {
    fn default() -> Self {
        Self {
            version: CONFIG_VERSION,
            nsid: None,
            hostname: None,
            rundir: None,
            workers: Workers::default(),
            management: ManagementConfig::default(),
            options: OptionsConfig::default(),
            network: NetworkConfig::default(),
            views: Vec::new(),
            local_data: LocalDataConfig::default(),
            forward: Vec::new(),
            fallback: FallbackConfig::default(),
            cache: CacheConfig::default(),
            dnssec: DnssecConfig::default(),
            dns64: Dns64Config::default(),
            logging: LoggingConfig::default(),
            monitoring: MonitoringConfig::default(),
            lua: LuaConfig::default(),
            rate_limiting: RateLimitingConfig::default(),
            defer: DeferConfig::default(),
        }
    }
}

impl ResolverConfig {
    /// Parses and validates a YAML (or JSON) document. Errors carry JSON pointers and
    /// line:column positions.
    pub fn from_yaml_str(text: &str) -> Result<Self, ConfigErrors> {
        parse::from_yaml_str(text)
    }

    /// Like [`Self::from_yaml_str`], for raw bytes; invalid UTF-8 is an error.
    pub fn from_yaml_bytes(bytes: &[u8]) -> Result<Self, ConfigErrors> {
        parse::from_yaml_bytes(bytes)
    }

    /// Parses and validates a JSON value (e.g. a CRD's `spec.config` or an HTTP body).
    pub fn from_json_value(value: serde_json::Value) -> Result<Self, ConfigErrors> {
        parse::from_json_value(value)
    }

    /// Checks the semantic rules (cross-field constraints, kresd 5.x capabilities); returns all
    /// errors at once.
    pub fn validate(&self) -> Result<(), ConfigErrors> {
        validate::validate(self)
    }

    /// Number of workers to run: `workers`, or for `auto` the number of available CPUs
    /// (at least 1, at most 256).
    pub fn worker_count(&self) -> usize {
        match self.workers {
            Workers::Count(n) => n as usize,
            Workers::Auto => std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
                .clamp(1, WORKERS_MAX as usize),
        }
    }
}

#[cfg(any(test, feature = "test-corpus"))]
#[doc(hidden)]
pub mod path_corpus;

#[cfg(test)]
pub(crate) mod generated_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_invalid;
#[cfg(test)]
mod tests_paths;
