//! `monitoring`: metrics collection and the Graphite bridge.

use std::borrow::Cow;
use std::fmt;
use std::net::IpAddr;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize, Serializer};

use super::cache::time;
use super::types::{DomainName, PortNumber, TimeSuffix, TimeUnit};

/// When the resolver collects metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum MetricsMode {
    /// Only the manager's own metrics.
    ManagerOnly,
    /// Collected from workers when requested (default).
    #[default]
    Lazy,
    /// Always collected.
    Always,
}

/// Graphite server: an IP address or a host name.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum GraphiteHost {
    /// An IP address.
    Ip(IpAddr),
    /// A host name.
    Name(DomainName),
}

impl fmt::Display for GraphiteHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ip(a) => a.fmt(f),
            Self::Name(n) => n.fmt(f),
        }
    }
}

impl Serialize for GraphiteHost {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for GraphiteHost {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match s.parse::<IpAddr>() {
            Ok(a) => Ok(Self::Ip(a)),
            Err(_) => s.parse().map(Self::Name).map_err(de::Error::custom),
        }
    }
}

impl JsonSchema for GraphiteHost {
    fn schema_name() -> Cow<'static, str> {
        "GraphiteHost".into()
    }
    fn inline_schema() -> bool {
        true
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "string", "description": "An IP address or a host name." })
    }
}

/// Graphite bridge: periodic export of metrics.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct GraphiteConfig {
    /// Enable the Graphite bridge.
    pub enable: bool,
    /// Graphite server (required when enabled).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<GraphiteHost>,
    /// Graphite server port.
    pub port: PortNumber,
    /// Prefix of the metric names.
    pub prefix: String,
    /// Export interval.
    pub interval: TimeUnit,
    /// Use TCP instead of UDP.
    pub tcp: bool,
}

impl Default for GraphiteConfig {
    fn default() -> Self {
        Self {
            enable: false,
            host: None,
            port: PortNumber(2003),
            prefix: String::new(),
            interval: time(5, TimeSuffix::S),
            tcp: false,
        }
    }
}

/// Metrics exposition configuration.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct MonitoringConfig {
    /// When metrics are collected.
    pub metrics: MetricsMode,
    /// Graphite bridge.
    pub graphite: GraphiteConfig,
}
