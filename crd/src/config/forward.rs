//! `forward` and `fallback`: forwarding subtrees to other servers.

use std::borrow::Cow;
use std::fmt;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use super::types::{
    DomainName, FilePath, IpAddressOptionalPort, ListOrItem, PinSha256, null_as_default,
};

/// Transport to a forward server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ForwardTransport {
    /// DNS over TLS.
    Tls,
}

/// A forward server with options.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ForwardServerConfig {
    /// IP address(es) of the server, each with an optional '@port'.
    pub address: ListOrItem<IpAddressOptionalPort>,
    /// Transport protocol (absent: plain DNS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport: Option<ForwardTransport>,
    /// SHA-256 pin(s) of the accepted certificate public key (base64).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin_sha256: Option<ListOrItem<PinSha256>>,
    /// Hostname of the server, checked against its TLS certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<DomainName>,
    /// CA certificate file used to authenticate the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<FilePath>,
}

/// A forward server: a bare '<ip-address>[@<port>]' or an object with options.
#[derive(Clone, Debug, PartialEq)]
pub enum ForwardServer {
    /// A bare address (plain DNS).
    Address(IpAddressOptionalPort),
    /// A server with options (TLS, pins, ...).
    Server(ForwardServerConfig),
}

impl ForwardServer {
    /// The server's addresses.
    pub fn addresses(&self) -> &[IpAddressOptionalPort] {
        match self {
            Self::Address(a) => std::slice::from_ref(a),
            Self::Server(s) => s.address.items(),
        }
    }

    /// True when the server is reached over TLS.
    pub fn is_tls(&self) -> bool {
        matches!(self, Self::Server(s) if s.transport == Some(ForwardTransport::Tls))
    }
}

impl Serialize for ForwardServer {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Address(a) => a.serialize(s),
            Self::Server(c) => c.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for ForwardServer {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ForwardServer;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("'<ip-address>[@<port>]' or a server object with 'address'")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ForwardServer, E> {
                v.parse().map(ForwardServer::Address).map_err(E::custom)
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<ForwardServer, A::Error> {
                ForwardServerConfig::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(ForwardServer::Server)
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for ForwardServer {
    fn schema_name() -> Cow<'static, str> {
        "ForwardServer".into()
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let addr = generator.subschema_for::<IpAddressOptionalPort>();
        let server = generator.subschema_for::<ForwardServerConfig>();
        json_schema!({
            "description": "A forward server: '<ip-address>[@<port>]' or an object with options.",
            "anyOf": [addr, server]
        })
    }
}

/// Options of a forwarded subtree.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct ForwardOptions {
    /// The servers are authoritative for the subtree (stub mode; port 53 and no TLS only).
    pub authoritative: bool,
    /// Validate DNSSEC in the subtree.
    pub dnssec: bool,
}

impl Default for ForwardOptions {
    fn default() -> Self {
        Self {
            authoritative: false,
            dnssec: true,
        }
    }
}

/// A forwarded subtree.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ForwardZone {
    /// Subtree(s) to forward.
    pub subtree: ListOrItem<DomainName>,
    /// Servers to forward to.
    pub servers: Vec<ForwardServer>,
    /// Forwarding options.
    #[serde(default)]
    pub options: ForwardOptions,
}

/// Fallback servers used after a resolution failure (Knot Resolver 6.x only).
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct FallbackConfig {
    /// Enable the fallback.
    pub enable: bool,
    /// Servers to fall back to.
    #[serde(
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub servers: Vec<ForwardServer>,
}
