//! Draining one kresd 5.6 worker before it is stopped, so stream (TCP, DoT, DoH) clients lose
//! no queries: kresd drops what it holds on SIGTERM.
//!
//! 1. Over the worker's control socket, `net.close(IP, PORT)` for each stream endpoint: the
//!    worker stops accepting; the other holders of the shared listening socket keep accepting.
//!    kresd 5.6 closes every endpoint of that address and port, so a plain-DNS endpoint's UDP
//!    half goes too: the worker stops reading the shared UDP socket (the others take its
//!    datagrams) and answers it still had in flight are lost — as at SIGTERM, only earlier.
//!    The closes run from a zero timer (see `close_command`), so no UDP answer already
//!    computed is dropped.
//! 2. `net.tcp_in_idle(IDLE)`: kresd closes a connection once it has had no query in flight and
//!    no traffic for IDLE (checked by kresd's per-connection timer, which runs at the previous
//!    idle timeout's pace: up to 10 s with kresd's default).
//! 3. Wait until the worker holds no connection on a stream endpoint (clients closed them or
//!    kresd closed them idle), reading `/proc/PID/fd` and `/proc/PID/net/tcp{,6}`, at most
//!    `max_wait`. Established connections are separate sockets: they are served throughout.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use super::control::{ControlClient, ControlError};

/// How long a connection must be idle before the draining kresd closes it.
pub const DRAIN_IDLE: Duration = Duration::from_millis(200);

/// How often the worker's connections are counted while draining.
const POLL: Duration = Duration::from_millis(20);

/// What a drain achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainOutcome {
    /// No client connection is left on the stream endpoints.
    Idle {
        /// Connections open when the listeners were closed.
        connections: usize,
        /// Time from closing the listeners to the last connection gone.
        waited: Duration,
    },
    /// `max_wait` passed with connections still open (they are cut when the worker stops).
    TimedOut {
        /// Connections open when the listeners were closed.
        connections: usize,
        /// Connections still open.
        open: usize,
    },
}

/// Why a drain could not be done (the caller stops the worker anyway).
#[derive(Debug, thiserror::Error)]
pub enum DrainError {
    /// The control socket failed or a command was refused.
    #[error(transparent)]
    Control(#[from] ControlError),
    /// The worker's sockets could not be read from `/proc`.
    #[error("connections of PID {pid}: {source}")]
    Proc {
        /// The worker.
        pid: u32,
        /// Cause.
        source: std::io::Error,
    },
}

/// Close the worker's stream listeners `endpoints` (its control socket is `control`, its PID
/// `pid`), then wait at most `max_wait` for its connections on them to close.
pub async fn drain(
    control: &Path,
    pid: u32,
    endpoints: &[SocketAddr],
    max_wait: Duration,
) -> Result<DrainOutcome, DrainError> {
    let mut client = ControlClient::connect(control, Duration::from_secs(1)).await?;
    client.eval(&close_command(endpoints)).await?;
    // The closes run on kresd's next loop turn; wait for them (bounded by the call timeout).
    let closed_by = Instant::now() + Duration::from_secs(1);
    while client
        .eval(&format!("return {CLOSED_FLAG} == true"))
        .await?
        != "true"
    {
        if Instant::now() > closed_by {
            return Err(DrainError::Control(ControlError::Timeout {
                path: control.to_path_buf(),
                timeout: Duration::from_secs(1),
            }));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    drop(client);
    let started = Instant::now();
    let count = || {
        client_connections(pid, endpoints)
            .map(|c| c.len())
            .map_err(|source| DrainError::Proc { pid, source })
    };
    let connections = count()?;
    let mut open = connections;
    loop {
        if open == 0 {
            return Ok(DrainOutcome::Idle {
                connections,
                waited: started.elapsed(),
            });
        }
        if started.elapsed() >= max_wait {
            return Ok(DrainOutcome::TimedOut { connections, open });
        }
        tokio::time::sleep(POLL.min(max_wait.saturating_sub(started.elapsed()))).await;
        open = match count() {
            Ok(n) => n,
            // The worker exited by itself: nothing left to drain.
            Err(_) if !Path::new(&format!("/proc/{pid}")).exists() => 0,
            Err(e) => return Err(e),
        };
    }
}

/// Global the close callback sets in kresd once it ran.
const CLOSED_FLAG: &str = "kres_operator_drain_closed";

/// The Lua that lowers the idle timeout and closes the worker's endpoints at `endpoints` (IPs
/// and ports: nothing to escape). The closes run from a zero timer: kresd sends UDP answers in
/// batches at the end of a loop turn (`udp_queue`, a uv_check handle), and closing a UDP
/// endpoint from the control socket's read callback drops the batch of that turn (measured:
/// 42 lost answers); on a timer the batch has gone out.
fn close_command(endpoints: &[SocketAddr]) -> String {
    let mut seen = HashSet::new();
    let closes: String = endpoints
        .iter()
        .filter(|e| seen.insert(**e))
        .map(|e| format!("net.close('{}', {}) ", e.ip(), e.port()))
        .collect();
    format!(
        "net.tcp_in_idle({}) {CLOSED_FLAG} = false \
         event.after(0, function() {closes}{CLOSED_FLAG} = true end) return true",
        DRAIN_IDLE.as_millis()
    )
}

/// One TCP socket from `/proc/net/tcp{,6}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpSocket {
    /// Local address.
    pub local: SocketAddr,
    /// Remote address (unspecified for a listener).
    pub remote: SocketAddr,
    /// Kernel state (`0A` = LISTEN, `01` = ESTABLISHED).
    pub state: u8,
    /// Socket inode.
    pub inode: u64,
}

/// LISTEN in `/proc/net/tcp`.
pub const TCP_LISTEN: u8 = 0x0A;

/// Client connections (any state but LISTEN) that process `pid` holds on one of `endpoints`
/// (an unspecified IP matches any address of that port).
pub fn client_connections(pid: u32, endpoints: &[SocketAddr]) -> std::io::Result<Vec<TcpSocket>> {
    Ok(process_tcp_sockets(pid)?
        .into_iter()
        .filter(|s| s.state != TCP_LISTEN && endpoints.iter().any(|e| serves(*e, s.local)))
        .collect())
}

/// The TCP sockets process `pid` has open (as root or as the process's user).
pub fn process_tcp_sockets(pid: u32) -> std::io::Result<Vec<TcpSocket>> {
    let mut inodes = HashSet::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd"))? {
        let Ok(target) = std::fs::read_link(entry?.path()) else {
            continue; // closed meanwhile
        };
        if let Some(inode) = socket_inode(&target.to_string_lossy()) {
            inodes.insert(inode);
        }
    }
    let mut sockets = vec![];
    for file in ["tcp", "tcp6"] {
        match std::fs::read_to_string(format!("/proc/{pid}/net/{file}")) {
            Ok(text) => sockets.extend(
                parse_proc_net_tcp(&text)
                    .into_iter()
                    .filter(|s| inodes.contains(&s.inode)),
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {} // no IPv6
            Err(e) => return Err(e),
        }
    }
    Ok(sockets)
}

fn serves(endpoint: SocketAddr, local: SocketAddr) -> bool {
    endpoint.port() == local.port()
        && (endpoint.ip() == local.ip() || endpoint.ip().is_unspecified())
}

/// `socket:[12345]` -> 12345.
fn socket_inode(link: &str) -> Option<u64> {
    link.strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// Parse `/proc/net/tcp` or `/proc/net/tcp6`; lines that do not parse are skipped.
pub fn parse_proc_net_tcp(text: &str) -> Vec<TcpSocket> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            Some(TcpSocket {
                local: parse_addr(f.get(1)?)?,
                remote: parse_addr(f.get(2)?)?,
                state: u8::from_str_radix(f.get(3)?, 16).ok()?,
                inode: f.get(9)?.parse().ok()?,
            })
        })
        .collect()
}

/// `0100007F:0035` (IPv4) or 32 hex digits `:PORT` (IPv6): the address as 32-bit words in the
/// kernel's byte order, printed as host integers.
fn parse_addr(s: &str) -> Option<SocketAddr> {
    let (ip, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let mut bytes = Vec::with_capacity(16);
    for i in (0..ip.len()).step_by(8) {
        let word = u32::from_str_radix(ip.get(i..i + 8)?, 16).ok()?;
        bytes.extend(word.to_ne_bytes());
    }
    let ip: IpAddr = match bytes.len() {
        4 => Ipv4Addr::from(<[u8; 4]>::try_from(bytes).ok()?).into(),
        16 => Ipv6Addr::from(<[u8; 16]>::try_from(bytes).ok()?).into(),
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_command_closes_each_endpoint_once_on_a_timer() {
        let eps: Vec<SocketAddr> = ["127.0.0.9:5353", "[::1]:853", "127.0.0.9:5353"]
            .map(|e| e.parse().unwrap())
            .to_vec();
        assert_eq!(
            close_command(&eps),
            "net.tcp_in_idle(200) kres_operator_drain_closed = false \
             event.after(0, function() net.close('127.0.0.9', 5353) net.close('::1', 853) \
             kres_operator_drain_closed = true end) return true"
        );
    }

    #[test]
    fn endpoint_matching() {
        let a: SocketAddr = "127.0.0.9:53".parse().unwrap();
        assert!(serves(a, a));
        assert!(!serves(a, "127.0.0.8:53".parse().unwrap()));
        assert!(!serves(a, "127.0.0.9:54".parse().unwrap()));
        assert!(serves("0.0.0.0:53".parse().unwrap(), a));
        assert_eq!(socket_inode("socket:[991]"), Some(991));
        assert_eq!(socket_inode("pipe:[991]"), None);
    }

    /// Our own listener and connection, found in our own `/proc` (real kernel format).
    #[test]
    fn finds_own_connection_in_proc() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let ep = l.local_addr().unwrap();
        let c = std::net::TcpStream::connect(ep).unwrap();
        let (_s, peer) = l.accept().unwrap();
        let mine = process_tcp_sockets(std::process::id()).unwrap();
        assert!(
            mine.iter().any(|s| s.local == ep && s.state == TCP_LISTEN),
            "{mine:?}"
        );
        let conns = client_connections(std::process::id(), &[ep]).unwrap();
        assert_eq!(conns.len(), 1, "{conns:?}");
        assert_eq!(conns[0].remote, peer);
        assert_eq!(conns[0].state, 1);
        drop(c);
    }

    #[test]
    fn parses_ipv6_lines_and_skips_garbage() {
        let text = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 00000000000000000000000001000000:0035 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0\n\
   junk\n";
        let s = parse_proc_net_tcp(text);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].local, "[::1]:53".parse().unwrap());
        assert_eq!(s[0].state, TCP_LISTEN);
        assert_eq!(s[0].inode, 4242);
    }
}
