//! `network`: listening sockets, TLS, EDNS, outgoing interfaces.

use std::borrow::Cow;
use std::fmt;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use super::types::{
    AutoBool, FilePath, Int0To512, Int0To65535, Int1To4096, InterfaceHost, InterfaceOptionalPort,
    IpNetwork, Ipv4Address, Ipv6Address, ListOrItem, PortNumber, RenumberDestination, Secret32B,
    SizeSuffix, SizeUnit, SocketPath, null_as_default,
};

/// DNS transport of a listening socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ListenKind {
    /// Plain DNS over UDP and TCP (default port 53).
    #[default]
    Dns,
    /// DNS over XDP (AF_XDP), UDP only.
    Xdp,
    /// DNS over TLS (default port 853).
    Dot,
    /// DNS over HTTPS, legacy implementation (default port 443).
    DohLegacy,
    /// DNS over HTTPS/2 (default port 443).
    Doh2,
    /// DNS over unencrypted HTTP/2 (default port 80). Knot Resolver 6.x only.
    Doh2Insecure,
    /// DNS over QUIC (default port 853). Knot Resolver 6.x only.
    Doq,
}

impl ListenKind {
    /// The name used in config.yaml.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Dns => "dns",
            Self::Xdp => "xdp",
            Self::Dot => "dot",
            Self::DohLegacy => "doh-legacy",
            Self::Doh2 => "doh2",
            Self::Doh2Insecure => "doh2-insecure",
            Self::Doq => "doq",
        }
    }

    /// The default port for this kind (as upstream).
    pub fn default_port(self) -> u16 {
        match self {
            Self::Dns | Self::Xdp => 53,
            Self::Dot | Self::Doq => 853,
            Self::DohLegacy | Self::Doh2 => 443,
            Self::Doh2Insecure => 80,
        }
    }
}

impl fmt::Display for ListenKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// EDNS payload size advertised in DNS packets.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct EdnsBufferSize {
    /// Maximum EDNS payload size towards other DNS servers.
    pub upstream: SizeUnit,
    /// Maximum EDNS payload size towards clients.
    pub downstream: SizeUnit,
}

impl Default for EdnsBufferSize {
    fn default() -> Self {
        let b1232 = SizeUnit {
            value: 1232,
            suffix: SizeSuffix::B,
        };
        Self {
            upstream: b1232,
            downstream: b1232,
        }
    }
}

/// Renumbering of addresses in answers to a different address space.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct AddressRenumbering {
    /// Source subnet.
    pub source: IpNetwork,
    /// Destination address prefix ('addr'), or exact address ('addr!').
    pub destination: RenumberDestination,
}

/// DNS over QUIC settings (Knot Resolver 6.x only; kresd 5.x has no DoQ).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct QuicConfig {
    /// Maximum number of active connections per worker.
    pub max_conns: Int1To4096,
    /// Maximum number of concurrent streams per connection.
    pub max_streams: Int1To4096,
    /// Require address validation (retry) for unknown source addresses.
    pub require_retry: bool,
}

impl Default for QuicConfig {
    fn default() -> Self {
        Self {
            max_conns: Int1To4096(1024),
            max_streams: Int1To4096(1024),
            require_retry: false,
        }
    }
}

/// EDNS(0) padding over encrypted transports: a boolean, or a block size 0..=512.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TlsPadding {
    /// `true` (default padding) or `false` (no padding).
    Enabled(bool),
    /// Pad to a multiple of this many bytes.
    BlockSize(Int0To512),
}

impl Default for TlsPadding {
    fn default() -> Self {
        Self::Enabled(true)
    }
}

impl Serialize for TlsPadding {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Enabled(b) => s.serialize_bool(*b),
            Self::BlockSize(n) => n.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for TlsPadding {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = TlsPadding;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a boolean or an integer 0..=512")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<TlsPadding, E> {
                Ok(TlsPadding::Enabled(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<TlsPadding, E> {
                u16::try_from(v)
                    .map_err(|_| ())
                    .and_then(|v| Int0To512::new(v).map_err(|_| ()))
                    .map(TlsPadding::BlockSize)
                    .map_err(|()| E::custom(format!("must be in range 0..=512, got {v}")))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<TlsPadding, E> {
                Err(E::custom(format!("must be in range 0..=512, got {v}")))
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for TlsPadding {
    fn schema_name() -> Cow<'static, str> {
        "TlsPadding".into()
    }
    fn inline_schema() -> bool {
        true
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "anyOf": [{ "type": "boolean" }, { "type": "integer", "minimum": 0, "maximum": 512 }] })
    }
}

/// TLS configuration for DNS over TLS and DNS over HTTPS.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct TlsConfig {
    /// Watch the certificate files for changes ('auto' = off with kresd 5.x).
    pub watchdog: AutoBool,
    /// Path to the certificate file (PEM).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<FilePath>,
    /// Path to the certificate key file (PEM).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_file: Option<FilePath>,
    /// Secret for TLS session resumption via tickets (RFC 5077), at least 32 bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sticket_secret: Option<Secret32B>,
    /// Path to a file with the session ticket secret (RFC 5077).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sticket_secret_file: Option<FilePath>,
    /// EDNS(0) padding of queries and answers over encrypted transports.
    pub padding: TlsPadding,
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            watchdog: AutoBool::Auto,
            cert_file: None,
            key_file: None,
            sticket_secret: None,
            sticket_secret_file: None,
            padding: TlsPadding::Enabled(true),
        }
    }
}

/// One listening endpoint: exactly one of `interface` and `unix-socket`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ListenConfig {
    /// IP address(es) or interface name(s), each with an optional '@port'.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<ListOrItem<InterfaceOptionalPort>>,
    /// Unix socket path(s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unix_socket: Option<ListOrItem<SocketPath>>,
    /// Port number (default by kind: 53 dns/xdp, 853 dot/doq, 443 doh2/doh-legacy, 80 doh2-insecure).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<PortNumber>,
    /// DNS transport protocol.
    #[serde(default)]
    pub kind: ListenKind,
    /// Allow binding to a non-local address (IP_FREEBIND).
    #[serde(default)]
    pub freebind: bool,
}

impl ListenConfig {
    /// A plain DNS listener on one interface.
    pub fn interface(host: InterfaceHost, freebind: bool) -> Self {
        Self {
            interface: Some(ListOrItem(vec![InterfaceOptionalPort { host, port: None }])),
            unix_socket: None,
            port: None,
            kind: ListenKind::Dns,
            freebind,
        }
    }

    /// The effective port for `interface` entries without '@port': `port`, else the kind's default.
    pub fn effective_port(&self) -> u16 {
        self.port
            .map(PortNumber::get)
            .unwrap_or_else(|| self.kind.default_port())
    }
}

/// PROXYv2 protocol configuration.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct ProxyProtocolConfig {
    /// Enable the PROXYv2 protocol.
    pub enable: bool,
    /// Clients (addresses or networks) allowed to send PROXYv2 headers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow: Option<Vec<IpNetwork>>,
}

/// Network connections and protocols configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct NetworkConfig {
    /// Use IPv4 for contacting upstream nameservers.
    pub do_ipv4: bool,
    /// Use IPv6 for contacting upstream nameservers.
    pub do_ipv6: bool,
    /// IPv4 source address for outgoing queries (default: chosen by the OS).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub out_interface_v4: Option<Ipv4Address>,
    /// IPv6 source address for outgoing queries (default: chosen by the OS).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub out_interface_v6: Option<Ipv6Address>,
    /// Number of outstanding queries a single client TCP connection may have in parallel.
    pub tcp_pipeline: Int0To65535,
    /// Let clients discover the connection timeout (RFC 7828).
    pub edns_tcp_keepalive: bool,
    /// Maximum EDNS payload sizes, upstream and downstream.
    pub edns_buffer_size: EdnsBufferSize,
    /// Renumber addresses in answers to a different address space.
    #[serde(
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub address_renumbering: Vec<AddressRenumbering>,
    /// TLS configuration (DNS over TLS and DNS over HTTPS).
    pub tls: TlsConfig,
    /// PROXYv2 protocol configuration.
    pub proxy_protocol: ProxyProtocolConfig,
    /// DNS over QUIC configuration (Knot Resolver 6.x only).
    pub quic: QuicConfig,
    /// Interfaces to listen on.
    pub listen: Vec<ListenConfig>,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        Self {
            do_ipv4: true,
            do_ipv6: true,
            out_interface_v4: None,
            out_interface_v6: None,
            tcp_pipeline: Int0To65535(100),
            edns_tcp_keepalive: true,
            edns_buffer_size: EdnsBufferSize::default(),
            address_renumbering: Vec::new(),
            tls: TlsConfig::default(),
            proxy_protocol: ProxyProtocolConfig::default(),
            quic: QuicConfig::default(),
            listen: vec![
                ListenConfig::interface(InterfaceHost::Ip([127, 0, 0, 1].into()), false),
                ListenConfig::interface(
                    InterfaceHost::Ip(std::net::Ipv6Addr::LOCALHOST.into()),
                    true,
                ),
            ],
        }
    }
}
