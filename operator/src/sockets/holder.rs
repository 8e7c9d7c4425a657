//! The socket holder (`kres-operator socket-holder`) and its client functions.
//!
//! The holder binds every listen socket at start — any failure is printed (one line per socket,
//! as kresd would) and the process exits non-zero before it serves anything — then answers
//! requests on its unix socket: `get` hands out the held sockets, `bind` replaces the held set
//! (sockets that stay in the set are kept, new ones bound; on any bind error nothing changes).

use std::convert::Infallible;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType, sockopt};
use serde::{Deserialize, Serialize};

use super::spec::BindSpec;
use super::{SocketsError, fdpass};

/// Command-line arguments of `kres-operator socket-holder`.
#[derive(Debug, Clone, clap::Args)]
pub struct HolderArgs {
    /// Unix socket (mode 0600) on which launchers fetch the held sockets.
    #[arg(long, value_name = "PATH")]
    pub socket: PathBuf,
    /// A socket to bind and hold: PROTO:ADDR@PORT[:KIND][,freebind], PROTO udp|tcp, KIND
    /// dns (default)|dot|doh-legacy|webmgmt. Repeat for each.
    #[arg(long = "bind", value_name = "SPEC")]
    pub binds: Vec<BindSpec>,
}

impl HolderArgs {
    /// The arguments after the program name (`socket-holder --socket ... --bind ...`), for a
    /// supervisord `command=` line; parsing them gives back `self`.
    pub fn argv(&self) -> Vec<std::ffi::OsString> {
        let mut v: Vec<std::ffi::OsString> = vec![
            "socket-holder".into(),
            "--socket".into(),
            self.socket.clone().into(),
        ];
        for b in &self.binds {
            v.push("--bind".into());
            v.push(b.to_string().into());
        }
        v
    }
}

/// A socket received from the holder.
#[derive(Debug)]
pub struct HeldSocket {
    /// What it is.
    pub spec: BindSpec,
    /// The descriptor (close-on-exec).
    pub fd: OwnedFd,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
enum Request {
    Get,
    Bind { binds: Vec<String> },
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Reply {
    ok: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    sockets: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// Per-connection I/O timeout in the holder and its clients.
const CONN_TIMEOUT: Duration = Duration::from_secs(2);

/// The held set, in request order, without duplicates.
#[derive(Debug, Default)]
struct Held(Vec<(BindSpec, OwnedFd)>);

impl Held {
    /// Make the held set exactly `specs`: keep sockets already held, bind the rest. All bind
    /// errors are returned together and the set is then left unchanged.
    fn set(&mut self, specs: &[BindSpec]) -> Result<(), SocketsError> {
        let mut old = std::mem::take(&mut self.0);
        // (spec, fd, taken from the old set)
        let mut new: Vec<(BindSpec, OwnedFd, bool)> = Vec::with_capacity(specs.len());
        let mut errors = Vec::new();
        for spec in specs {
            if new.iter().any(|(s, _, _)| s == spec) {
                continue;
            }
            if let Some(i) = old.iter().position(|(s, _)| s == spec) {
                let (s, fd) = old.swap_remove(i);
                new.push((s, fd, true));
                continue;
            }
            match spec.bind() {
                Ok(fd) => new.push((*spec, fd, false)),
                Err(e) => errors.push(e),
            }
        }
        if errors.is_empty() {
            for (spec, _) in &old {
                tracing::info!(socket = %spec, "socket no longer held");
            }
            self.0 = new.into_iter().map(|(s, fd, _)| (s, fd)).collect();
            Ok(())
        } else {
            // Give back what was taken from the old set (order within the set carries no
            // meaning); newly bound sockets are closed.
            old.extend(
                new.into_iter()
                    .filter(|(_, _, kept)| *kept)
                    .map(|(s, fd, _)| (s, fd)),
            );
            self.0 = old;
            Err(SocketsError::Bind(errors))
        }
    }

    fn reply(&self) -> (Reply, Vec<std::os::fd::BorrowedFd<'_>>) {
        let sockets = self.0.iter().map(|(s, _)| s.to_string()).collect();
        let fds = self.0.iter().map(|(_, fd)| fd.as_fd()).collect();
        (
            Reply {
                ok: true,
                sockets,
                error: None,
            },
            fds,
        )
    }
}

/// Run the socket holder: bind `args.binds`, then serve them on `args.socket` until killed.
/// Sends `READY=1` to `$NOTIFY_SOCKET` (when set) once serving. Returns only on error.
pub fn run_socket_holder(args: &HolderArgs) -> Result<Infallible, SocketsError> {
    let mut held = Held::default();
    held.set(&args.binds)?;
    let path = &args.socket;
    let herr = |message: String| SocketsError::Holder {
        path: path.clone(),
        message,
    };
    let listener = listen_unix(path).map_err(herr)?;
    for (spec, _) in &held.0 {
        tracing::info!(socket = %spec, "holding");
    }
    notify_ready();
    loop {
        let conn = match rustix::net::accept_with(&listener, SocketFlags::CLOEXEC) {
            Ok(c) => c,
            Err(rustix::io::Errno::INTR | rustix::io::Errno::CONNABORTED) => continue,
            Err(
                e @ (rustix::io::Errno::BADF
                | rustix::io::Errno::INVAL
                | rustix::io::Errno::NOTSOCK),
            ) => {
                return Err(herr(format!("accept: {e}")));
            }
            Err(e) => {
                // EMFILE, ENOMEM, ...: transient; keep holding the sockets.
                tracing::warn!(error = %e, "accept failed");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        if let Err(e) = serve_one(&conn, &mut held) {
            tracing::warn!(error = %e, "holder request failed");
        }
    }
}

fn listen_unix(path: &Path) -> Result<OwnedFd, String> {
    let probe = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )
    .map_err(|e| format!("socket: {e}"))?;
    let addr = SocketAddrUnix::new(path).map_err(|e| format!("path: {e}"))?;
    if rustix::net::connect(&probe, &addr).is_ok() {
        return Err("another socket holder is serving here".into());
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("remove stale socket: {e}")),
    }
    let sock = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )
    .map_err(|e| format!("socket: {e}"))?;
    rustix::net::bind(&sock, &addr).map_err(|e| format!("bind: {e}"))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("chmod: {e}"))?;
    rustix::net::listen(&sock, 64).map_err(|e| format!("listen: {e}"))?;
    Ok(sock)
}

fn serve_one(conn: &OwnedFd, held: &mut Held) -> std::io::Result<()> {
    sockopt::set_socket_timeout(conn, sockopt::Timeout::Recv, Some(CONN_TIMEOUT))?;
    sockopt::set_socket_timeout(conn, sockopt::Timeout::Send, Some(CONN_TIMEOUT))?;
    let (data, _ignored_fds) = fdpass::recv(conn)?;
    let fail = |error: String| Reply {
        ok: false,
        sockets: vec![],
        error: Some(error),
    };
    let request: Result<Request, _> = serde_json::from_slice(&data);
    let reply = match request {
        Err(e) => fail(format!("bad request: {e}")),
        Ok(Request::Get) => {
            let (reply, fds) = held.reply();
            return send_reply(conn, &reply, &fds);
        }
        Ok(Request::Bind { binds }) => {
            match binds
                .iter()
                .map(|b| b.parse::<BindSpec>())
                .collect::<Result<Vec<_>, _>>()
            {
                Err(e) => fail(e.to_string()),
                Ok(specs) => match held.set(&specs) {
                    Err(e) => fail(e.to_string()),
                    Ok(()) => {
                        tracing::info!(sockets = ?specs.iter().map(ToString::to_string).collect::<Vec<_>>(), "held set replaced");
                        let (reply, fds) = held.reply();
                        return send_reply(conn, &reply, &fds);
                    }
                },
            }
        }
    };
    send_reply(conn, &reply, &[])
}

fn send_reply(
    conn: &OwnedFd,
    reply: &Reply,
    fds: &[std::os::fd::BorrowedFd<'_>],
) -> std::io::Result<()> {
    let data = serde_json::to_vec(reply).map_err(std::io::Error::other)?;
    fdpass::send(conn, &data, fds)
}

fn notify_ready() {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let result =
        std::os::unix::net::UnixDatagram::unbound().and_then(|s| s.send_to(b"READY=1", &path));
    if let Err(e) = result {
        tracing::warn!(error = %e, "could not notify readiness");
    }
}

fn request(holder: &Path, req: &Request) -> Result<Vec<HeldSocket>, SocketsError> {
    let herr = |message: String| SocketsError::Holder {
        path: holder.to_path_buf(),
        message,
    };
    let sock = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )
    .map_err(|e| herr(format!("socket: {e}")))?;
    sockopt::set_socket_timeout(&sock, sockopt::Timeout::Recv, Some(CONN_TIMEOUT))
        .map_err(|e| herr(e.to_string()))?;
    sockopt::set_socket_timeout(&sock, sockopt::Timeout::Send, Some(CONN_TIMEOUT))
        .map_err(|e| herr(e.to_string()))?;
    let addr = SocketAddrUnix::new(holder).map_err(|e| herr(format!("path: {e}")))?;
    rustix::net::connect(&sock, &addr).map_err(|e| SocketsError::HolderUnavailable {
        path: holder.to_path_buf(),
        message: e.to_string(),
    })?;
    let data = serde_json::to_vec(req).map_err(|e| herr(e.to_string()))?;
    fdpass::send(&sock, &data, &[]).map_err(|e| herr(format!("send: {e}")))?;
    let (data, fds) = fdpass::recv(&sock).map_err(|e| herr(format!("receive: {e}")))?;
    if data.is_empty() {
        return Err(herr("closed the connection without a reply".into()));
    }
    let reply: Reply =
        serde_json::from_slice(&data).map_err(|e| herr(format!("bad reply: {e}")))?;
    if !reply.ok {
        return Err(herr(
            reply.error.unwrap_or_else(|| "request refused".into()),
        ));
    }
    if reply.sockets.len() != fds.len() {
        return Err(herr(format!(
            "{} sockets described but {} descriptors received",
            reply.sockets.len(),
            fds.len()
        )));
    }
    reply
        .sockets
        .iter()
        .zip(fds)
        .map(|(s, fd)| {
            Ok(HeldSocket {
                spec: s
                    .parse()
                    .map_err(|e: super::SpecError| herr(e.to_string()))?,
                fd,
            })
        })
        .collect()
}

/// Fetch every held socket from the holder at `holder`.
pub fn fetch(holder: &Path) -> Result<Vec<HeldSocket>, SocketsError> {
    request(holder, &Request::Get)
}

/// [`fetch`], retrying for up to `wait` while the holder is not (yet) accepting connections
/// (a launcher started together with the holder by supervisord).
pub fn fetch_wait(holder: &Path, wait: Duration) -> Result<Vec<HeldSocket>, SocketsError> {
    let deadline = std::time::Instant::now() + wait;
    loop {
        match fetch(holder) {
            Err(SocketsError::HolderUnavailable { .. }) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

/// Make the holder hold exactly `specs` (kept sockets stay the same kernel sockets); returns
/// the new set. On a bind error the holder keeps its previous set and the error names every
/// failing socket.
pub fn rebind(holder: &Path, specs: &[BindSpec]) -> Result<Vec<BindSpec>, SocketsError> {
    let binds = specs.iter().map(ToString::to_string).collect();
    Ok(request(holder, &Request::Bind { binds })?
        .into_iter()
        .map(|h| h.spec)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(s: &str) -> BindSpec {
        s.parse().unwrap()
    }

    #[test]
    fn set_keeps_existing_and_is_atomic_on_error() {
        let ip = "127.0.0.1";
        let a = std::net::UdpSocket::bind((ip, 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let b = std::net::UdpSocket::bind((ip, 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let (sa, sb) = (
            spec(&format!("udp:{ip}@{a}")),
            spec(&format!("udp:{ip}@{b}")),
        );
        let mut held = Held::default();
        held.set(&[sa, sa]).unwrap();
        assert_eq!(held.0.len(), 1);
        let before = rustix::net::getsockname(&held.0[0].1).unwrap();
        let ino = |fd: &OwnedFd| rustix::fs::fstat(fd).unwrap().st_ino;
        let ino_a = ino(&held.0[0].1);
        held.set(&[sb, sa]).unwrap();
        assert_eq!(
            held.0.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
            vec![sb, sa]
        );
        assert_eq!(
            ino(&held.0[1].1),
            ino_a,
            "kept socket is the same kernel socket"
        );
        let bad = spec("udp:192.0.2.55@5353");
        let err = held.set(&[sa, bad]).unwrap_err().to_string();
        assert!(err.contains("bind to '192.0.2.55@5353' (UDP)"), "{err}");
        assert_eq!(held.0.len(), 2, "unchanged after a failed set");
        assert_eq!(rustix::net::getsockname(&held.0[1].1).unwrap(), before);
    }
}
