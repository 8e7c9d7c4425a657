//! Listen-socket specifications (`udp:127.0.0.1@5353`, `tcp:::1@853:dot,freebind`) and binding
//! them the way kresd 5.6 binds its own sockets.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::OwnedFd;
use std::str::FromStr;

use rustix::net::{AddressFamily, SocketFlags, SocketType, sockopt};

/// Backlog of held TCP sockets (kresd 5.6's default `net.tcp_backlog` is 128).
pub const TCP_BACKLOG: i32 = 128;

/// Transport of a listen socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    /// `SOCK_DGRAM`.
    Udp,
    /// `SOCK_STREAM`, listening.
    Tcp,
}

/// What kresd serves on a socket, as far as `-S FD[:kind]` in kresd 5.6 can express it.
///
/// Verified with kresd 5.6.0: no suffix = plain DNS, `:tls` = DoT, and kinds registered by a
/// module (`webmgmt`, `doh_legacy` from the `http` module). `:dns` and `:doh2` are refused
/// ("network socket kind 'doh2' not handled"): DoH2 cannot be inherited and stays a per-worker
/// `net.listen` (see docs/architecture.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// Plain DNS (config kind `dns`).
    Dns,
    /// DNS over TLS (config kind `dot`; kresd `tls`).
    Dot,
    /// Legacy DoH from the `http` module (config `doh-legacy`; kresd `doh_legacy`).
    DohLegacy,
    /// The `http` module's web management endpoint (`webmgmt`).
    Webmgmt,
}

impl Kind {
    /// The `:kind` suffix for kresd's `-S` (empty for plain DNS).
    pub fn kresd_suffix(self) -> &'static str {
        match self {
            Kind::Dns => "",
            Kind::Dot => ":tls",
            Kind::DohLegacy => ":doh_legacy",
            Kind::Webmgmt => ":webmgmt",
        }
    }

    /// The name used in a spec (config.yaml spelling).
    pub fn name(self) -> &'static str {
        match self {
            Kind::Dns => "dns",
            Kind::Dot => "dot",
            Kind::DohLegacy => "doh-legacy",
            Kind::Webmgmt => "webmgmt",
        }
    }

    fn parse(s: &str) -> Result<Kind, String> {
        match s {
            "dns" => Ok(Kind::Dns),
            "dot" | "tls" => Ok(Kind::Dot),
            "doh-legacy" | "doh_legacy" => Ok(Kind::DohLegacy),
            "webmgmt" => Ok(Kind::Webmgmt),
            "doh2" => Err(
                "kind 'doh2' cannot be passed to kresd 5.6 with -S (it refuses it); \
                 leave doh2 to a per-worker net.listen"
                    .into(),
            ),
            other => Err(format!(
                "unknown kind '{other}' (expected dns, dot, doh-legacy or webmgmt)"
            )),
        }
    }
}

/// One listening socket: `PROTO:ADDR@PORT[:KIND][,freebind]`.
///
/// `ADDR` is an IPv4 or IPv6 address (brackets optional: `udp:[::1]@53` = `udp:::1@53`);
/// `KIND` defaults to `dns`; `freebind` allows binding an address not (yet) configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BindSpec {
    /// Transport.
    pub proto: Proto,
    /// Address and port.
    pub addr: SocketAddr,
    /// What kresd serves on it.
    pub kind: Kind,
    /// `IP_FREEBIND` / `IPV6_FREEBIND`.
    pub freebind: bool,
}

/// Errors parsing or binding a [`BindSpec`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// The text is not a valid spec.
    #[error("invalid listen socket '{spec}': {reason}")]
    Parse {
        /// The text.
        spec: String,
        /// What is wrong.
        reason: String,
    },
    /// The socket could not be created or bound; the message matches kresd's own
    /// (`bind to '192.0.2.55@5353' (UDP): Cannot assign requested address`).
    #[error("bind to '{addr}' ({proto}): {message}")]
    Bind {
        /// `ip@port`.
        addr: String,
        /// `UDP` or `TCP`.
        proto: &'static str,
        /// OS error text.
        message: String,
    },
}

impl BindSpec {
    /// `ip@port` as kresd writes it.
    pub fn addr_text(&self) -> String {
        format!("{}@{}", self.addr.ip(), self.addr.port())
    }

    /// Create, configure and bind the socket (and `listen` for TCP). Options as kresd 5.6's own
    /// binds: `SO_REUSEADDR`, `IPV6_V6ONLY`, freebind, `IP_PMTUDISC_OMIT` for UDP/IPv4 —
    /// plus `SO_REUSEPORT`, so a restarted holder can bind again while workers still hold the
    /// previous socket. The descriptor is close-on-exec.
    pub fn bind(&self) -> Result<OwnedFd, SpecError> {
        let proto_name = match self.proto {
            Proto::Udp => "UDP",
            Proto::Tcp => "TCP",
        };
        let err = |e: rustix::io::Errno| SpecError::Bind {
            addr: self.addr_text(),
            proto: proto_name,
            message: std::io::Error::from(e)
                .to_string()
                .split(" (os error")
                .next()
                .unwrap_or_default()
                .to_string(),
        };
        let family = if self.addr.is_ipv4() {
            AddressFamily::INET
        } else {
            AddressFamily::INET6
        };
        let ty = match self.proto {
            Proto::Udp => SocketType::DGRAM,
            Proto::Tcp => SocketType::STREAM,
        };
        let fd = rustix::net::socket_with(family, ty, SocketFlags::CLOEXEC, None).map_err(err)?;
        sockopt::set_socket_reuseaddr(&fd, true).map_err(err)?;
        sockopt::set_socket_reuseport(&fd, true).map_err(err)?;
        match self.addr.ip() {
            IpAddr::V6(_) => {
                sockopt::set_ipv6_v6only(&fd, true).map_err(err)?;
                if self.freebind {
                    sockopt::set_ipv6_freebind(&fd, true).map_err(err)?;
                }
            }
            IpAddr::V4(_) => {
                if self.freebind {
                    sockopt::set_ip_freebind(&fd, true).map_err(err)?;
                }
                if self.proto == Proto::Udp {
                    // Best effort, as in kresd: mitigates forged-PMTU fragmentation attacks.
                    if let Err(e) =
                        sockopt::set_ip_mtu_discover(&fd, sockopt::Ipv4PathMtuDiscovery::OMIT)
                    {
                        tracing::warn!(addr = %self.addr_text(), error = %e, "IP_PMTUDISC_OMIT not set");
                    }
                }
            }
        }
        rustix::net::bind(&fd, &self.addr).map_err(err)?;
        if self.proto == Proto::Tcp {
            rustix::net::listen(&fd, TCP_BACKLOG).map_err(err)?;
        }
        Ok(fd)
    }
}

impl FromStr for BindSpec {
    type Err = SpecError;

    fn from_str(s: &str) -> Result<Self, SpecError> {
        let fail = |reason: &str| SpecError::Parse {
            spec: s.to_string(),
            reason: reason.to_string(),
        };
        let (main, flags) = match s.split_once(',') {
            Some((m, f)) => (m, Some(f)),
            None => (s, None),
        };
        let freebind = match flags {
            None => false,
            Some("freebind") => true,
            Some(other) => {
                return Err(fail(&format!("unknown option '{other}' (only 'freebind')")));
            }
        };
        let (proto, rest) = main
            .split_once(':')
            .ok_or_else(|| fail("expected PROTO:ADDR@PORT"))?;
        let proto = match proto {
            "udp" => Proto::Udp,
            "tcp" => Proto::Tcp,
            other => return Err(fail(&format!("protocol '{other}' is not udp or tcp"))),
        };
        let (ip, port_kind) = rest
            .rsplit_once('@')
            .ok_or_else(|| fail("expected ADDR@PORT"))?;
        let ip = ip
            .strip_prefix('[')
            .and_then(|i| i.strip_suffix(']'))
            .unwrap_or(ip);
        let ip: IpAddr = ip
            .parse()
            .map_err(|_| fail(&format!("'{ip}' is not an IP address")))?;
        let (port, kind) = match port_kind.split_once(':') {
            Some((p, k)) => (p, Kind::parse(k).map_err(|r| fail(&r))?),
            None => (port_kind, Kind::Dns),
        };
        let port: u16 = port
            .parse()
            .map_err(|_| fail(&format!("'{port}' is not a port number")))?;
        if port == 0 {
            return Err(fail("port 0 is not allowed"));
        }
        if proto == Proto::Udp && kind != Kind::Dns {
            return Err(fail(&format!("kind {} needs tcp", kind.name())));
        }
        Ok(BindSpec {
            proto,
            addr: SocketAddr::new(ip, port),
            kind,
            freebind,
        })
    }
}

impl fmt::Display for BindSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let proto = match self.proto {
            Proto::Udp => "udp",
            Proto::Tcp => "tcp",
        };
        write!(f, "{proto}:{}@{}", self.addr.ip(), self.addr.port())?;
        if self.kind != Kind::Dns {
            write!(f, ":{}", self.kind.name())?;
        }
        if self.freebind {
            write!(f, ",freebind")?;
        }
        Ok(())
    }
}

/// The specs serving one `network.listen` entry of kind `kind` (config.yaml spelling) on
/// `addr`: `dns` is UDP + TCP; `dot`, `doh-legacy` and `webmgmt` are TCP. `doh2` is refused
/// (kresd 5.6 cannot take it with `-S`).
pub fn specs_for_listen(
    kind: &str,
    addr: SocketAddr,
    freebind: bool,
) -> Result<Vec<BindSpec>, SpecError> {
    let kind = Kind::parse(kind).map_err(|reason| SpecError::Parse {
        spec: format!("{}@{} kind {kind}", addr.ip(), addr.port()),
        reason,
    })?;
    let spec = |proto| BindSpec {
        proto,
        addr,
        kind,
        freebind,
    };
    Ok(match kind {
        Kind::Dns => vec![spec(Proto::Udp), spec(Proto::Tcp)],
        _ => vec![spec(Proto::Tcp)],
    })
}

/// The `-S` argument for descriptor `fd` serving `kind`.
pub fn kresd_fd_arg(fd: i32, kind: Kind) -> String {
    format!("{fd}{}", kind.kresd_suffix())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_display_round_trip() {
        for s in [
            "udp:127.0.0.1@5353",
            "tcp:127.0.0.1@853:dot",
            "tcp:::1@53",
            "udp:10.0.0.1@53,freebind",
            "tcp:::1@443:doh-legacy",
        ] {
            let spec: BindSpec = s.parse().unwrap();
            assert_eq!(spec.to_string(), s);
        }
        let b: BindSpec = "tcp:[::1]@853:tls".parse().unwrap();
        assert_eq!(b.to_string(), "tcp:::1@853:dot");
        assert_eq!(kresd_fd_arg(7, b.kind), "7:tls");
        assert_eq!(kresd_fd_arg(7, Kind::Dns), "7");
    }

    #[test]
    fn listen_entries_map_to_specs() {
        let a: SocketAddr = "[::1]:53".parse().unwrap();
        let dns = specs_for_listen("dns", a, false).unwrap();
        assert_eq!(
            dns.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["udp:::1@53", "tcp:::1@53"]
        );
        let dot = specs_for_listen("dot", a, true).unwrap();
        assert_eq!(
            dot.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["tcp:::1@53:dot,freebind"]
        );
        let err = specs_for_listen("doh2", a, false).unwrap_err().to_string();
        assert!(err.contains("::1@53") && err.contains("doh2"), "{err}");
    }

    #[test]
    fn bad_specs_say_why() {
        for (s, why) in [
            ("udp:127.0.0.1", "ADDR@PORT"),
            ("sctp:127.0.0.1@53", "not udp or tcp"),
            ("udp:localhost@53", "not an IP address"),
            ("udp:127.0.0.1@99999", "not a port"),
            ("tcp:127.0.0.1@443:doh2", "doh2"),
            ("udp:127.0.0.1@853:dot", "needs tcp"),
            ("udp:127.0.0.1@53,reuse", "unknown option"),
            ("127.0.0.1@53", "PROTO"),
        ] {
            let err = s.parse::<BindSpec>().unwrap_err().to_string();
            assert!(err.contains(why) && err.contains(s), "{s}: {err}");
        }
    }

    #[test]
    fn bind_error_reads_like_kresd() {
        let spec: BindSpec = "udp:192.0.2.55@5353".parse().unwrap();
        let err = spec.bind().unwrap_err().to_string();
        assert_eq!(
            err,
            "bind to '192.0.2.55@5353' (UDP): Cannot assign requested address"
        );
        // freebind makes the same address bindable.
        let fb: BindSpec = "udp:192.0.2.55@5353,freebind".parse().unwrap();
        fb.bind().unwrap();
    }

    #[test]
    fn tcp_socket_listens() {
        let spec = BindSpec {
            proto: Proto::Tcp,
            addr: "127.0.0.1:0".parse().unwrap(),
            kind: Kind::Dns,
            freebind: false,
        };
        let fd = spec.bind().unwrap();
        let addr = rustix::net::getsockname(&fd).unwrap();
        let addr = SocketAddr::try_from(addr).unwrap();
        std::net::TcpStream::connect(addr).unwrap();
    }
}
