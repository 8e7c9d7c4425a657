//! The launcher (`kres-operator launch --holder H -- kresd ARGS...`): fetches the shared
//! sockets from the holder, binds the worker's private probe endpoint, makes the descriptors
//! inheritable, puts `-S FD[:kind]` in front of kresd's own arguments and `exec`s kresd, so the
//! worker keeps the launcher's PID (supervisord's and `$NOTIFY_SOCKET`'s PIDs match).

use std::convert::Infallible;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::time::Duration;

use rustix::io::FdFlags;
use rustix::net::{AddressFamily, SocketFlags, SocketType, sockopt};

use super::spec::{Kind, kresd_fd_arg};
use super::{SocketsError, holder};

/// Command-line arguments of `kres-operator launch`.
#[derive(Debug, Clone, clap::Args)]
pub struct LaunchArgs {
    /// Unix socket of the socket holder.
    #[arg(long, value_name = "PATH")]
    pub holder: PathBuf,
    /// How long to wait for the holder to accept connections (it may be starting too).
    #[arg(long, value_name = "SECONDS", default_value_t = 5.0)]
    pub holder_wait: f64,
    /// This worker's private probe endpoint, IP@PORT: plain DNS over UDP, bound here
    /// exclusively (no SO_REUSEPORT), so a probe to it reaches this worker only.
    #[arg(long, value_name = "IP@PORT", value_parser = parse_ip_port)]
    pub probe_listen: Option<SocketAddr>,
    /// Run kresd as this user (and its primary group); requires root. Sockets are received
    /// and bound before privileges are dropped, so port 53 works.
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,
    /// The kresd command line (`kresd -n -c CONFIG RUNDIR`).
    #[arg(last = true, required = true, value_name = "KRESD_COMMAND")]
    pub command: Vec<OsString>,
}

impl LaunchArgs {
    /// The arguments after the program name (`launch --holder ... -- kresd ...`), for a
    /// supervisord `command=` line; parsing them gives back `self`.
    pub fn argv(&self) -> Vec<OsString> {
        let mut v: Vec<OsString> = vec![
            "launch".into(),
            "--holder".into(),
            self.holder.clone().into(),
        ];
        v.push("--holder-wait".into());
        v.push(self.holder_wait.to_string().into());
        if let Some(p) = self.probe_listen {
            v.push("--probe-listen".into());
            v.push(format!("{}@{}", p.ip(), p.port()).into());
        }
        if let Some(u) = &self.user {
            v.push("--user".into());
            v.push(u.into());
        }
        v.push("--".into());
        v.extend(self.command.iter().cloned());
        v
    }
}

/// Parse `IP@PORT` (IPv6 without brackets, as kresd writes it, or with).
pub fn parse_ip_port(s: &str) -> Result<SocketAddr, String> {
    let (ip, port) = s
        .rsplit_once('@')
        .ok_or_else(|| format!("'{s}': expected IP@PORT"))?;
    let ip = ip
        .strip_prefix('[')
        .and_then(|i| i.strip_suffix(']'))
        .unwrap_or(ip);
    let ip = ip
        .parse()
        .map_err(|_| format!("'{s}': '{ip}' is not an IP address"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("'{s}': '{port}' is not a port number"))?;
    Ok(SocketAddr::new(ip, port))
}

/// Bind the private probe endpoint (UDP, exclusive: a second bind of it fails, close-on-exec).
pub fn bind_probe_endpoint(addr: SocketAddr) -> Result<OwnedFd, SocketsError> {
    let err = |e: rustix::io::Errno| {
        let msg = std::io::Error::from(e).to_string();
        let msg = msg
            .split(" (os error")
            .next()
            .unwrap_or_default()
            .to_string();
        SocketsError::Launch(format!(
            "bind to '{}@{}' (UDP, probe endpoint): {msg}",
            addr.ip(),
            addr.port()
        ))
    };
    let family = if addr.is_ipv4() {
        AddressFamily::INET
    } else {
        AddressFamily::INET6
    };
    let fd = rustix::net::socket_with(family, SocketType::DGRAM, SocketFlags::CLOEXEC, None)
        .map_err(err)?;
    // No SO_REUSEADDR/SO_REUSEPORT: for UDP either would let a second socket share the port.
    if addr.is_ipv6() {
        sockopt::set_ipv6_v6only(&fd, true).map_err(err)?;
    }
    rustix::net::bind(&fd, &addr).map_err(err)?;
    Ok(fd)
}

/// Build the final argv: `command[0]`, the `-S` arguments, then the rest of `command`.
pub fn kresd_argv(command: &[OsString], fd_args: &[String]) -> Vec<OsString> {
    let mut argv = Vec::with_capacity(command.len() + 2 * fd_args.len());
    argv.extend(command.first().cloned());
    for a in fd_args {
        argv.push("-S".into());
        argv.push(a.into());
    }
    argv.extend(command.iter().skip(1).cloned());
    argv
}

/// Fetch, bind, prepare and `exec`; returns only on failure.
pub fn run_launch(args: &LaunchArgs) -> Result<Infallible, SocketsError> {
    // With the "exec" line below: the launcher's own time in a worker's start (debug log).
    tracing::debug!(holder = %args.holder.display(), "launch");
    let wait = Duration::try_from_secs_f64(args.holder_wait).map_err(|_| {
        SocketsError::Launch(format!(
            "--holder-wait {}: not a duration in seconds",
            args.holder_wait
        ))
    })?;
    let held = holder::fetch_wait(&args.holder, wait)?;
    if held.is_empty() {
        return Err(SocketsError::Launch(format!(
            "socket holder {} holds no sockets",
            args.holder.display()
        )));
    }
    let mut fds: Vec<(OwnedFd, Kind)> = held.into_iter().map(|h| (h.fd, h.spec.kind)).collect();
    if let Some(addr) = args.probe_listen {
        fds.push((bind_probe_endpoint(addr)?, Kind::Dns));
    }
    let user = args
        .user
        .as_deref()
        .map(crate::privilege::lookup_user)
        .transpose()
        .map_err(|e| SocketsError::Launch(format!("--user: {e}")))?;
    let mut fd_args = Vec::with_capacity(fds.len());
    for (fd, kind) in fds {
        rustix::io::fcntl_setfd(&fd, FdFlags::empty()).map_err(|e| {
            SocketsError::Launch(format!("clear close-on-exec on fd {}: {e}", fd.as_raw_fd()))
        })?;
        // Ownership passes to the exec'd kresd.
        fd_args.push(kresd_fd_arg(fd.into_raw_fd(), kind));
    }
    let argv = kresd_argv(&args.command, &fd_args);
    let Some((program, rest)) = argv.split_first() else {
        return Err(SocketsError::Launch(
            "no kresd command given after --".into(),
        ));
    };
    tracing::debug!(?argv, "exec");
    let mut cmd = std::process::Command::new(program);
    cmd.args(rest);
    if let Some(user) = user {
        // std sets the gid, drops supplementary groups (when root) and sets the uid before exec:
        // kresd keeps this PID and every descriptor, and runs unprivileged.
        cmd.uid(user.uid).gid(user.gid);
    }
    let e = cmd.exec();
    Err(SocketsError::Launch(format!(
        "exec {}: {e}",
        program.to_string_lossy()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argv_puts_fds_first() {
        let cmd: Vec<OsString> = ["kresd", "-n", "-c", "c.lua", "/run/x"]
            .map(OsString::from)
            .to_vec();
        let argv = kresd_argv(&cmd, &["5".into(), "6:tls".into()]);
        assert_eq!(
            argv,
            [
                "kresd", "-S", "5", "-S", "6:tls", "-n", "-c", "c.lua", "/run/x"
            ]
            .map(OsString::from)
            .to_vec()
        );
    }

    #[derive(Debug, clap::Parser)]
    enum Cli {
        Launch(LaunchArgs),
        SocketHolder(crate::sockets::HolderArgs),
    }

    #[test]
    fn argv_round_trips_through_clap() {
        use clap::Parser;
        let l = LaunchArgs {
            holder: "/run/kres/sockets.sock".into(),
            holder_wait: 2.5,
            probe_listen: Some("[::1]:5353".parse().unwrap()),
            user: Some("knot-resolver".into()),
            command: ["kresd", "-n", "-c", "kresd0.conf", "/run/kres"]
                .map(OsString::from)
                .to_vec(),
        };
        let mut argv = vec![OsString::from("kres-operator")];
        argv.extend(l.argv());
        let Cli::Launch(back) = Cli::try_parse_from(argv).unwrap() else {
            panic!("not launch")
        };
        assert_eq!(format!("{back:?}"), format!("{l:?}"));
        let h = crate::sockets::HolderArgs {
            socket: "/run/kres/sockets.sock".into(),
            binds: vec![
                "udp:127.0.0.1@53".parse().unwrap(),
                "tcp:::1@853:dot".parse().unwrap(),
            ],
        };
        let mut argv = vec![OsString::from("kres-operator")];
        argv.extend(h.argv());
        let Cli::SocketHolder(back) = Cli::try_parse_from(argv).unwrap() else {
            panic!("not holder")
        };
        assert_eq!(back.binds, h.binds);
        assert_eq!(back.socket, h.socket);
    }

    #[test]
    fn ip_port_parsing() {
        assert_eq!(
            parse_ip_port("127.0.0.9@5353").unwrap(),
            "127.0.0.9:5353".parse().unwrap()
        );
        assert_eq!(
            parse_ip_port("::1@53").unwrap(),
            "[::1]:53".parse().unwrap()
        );
        assert!(
            parse_ip_port("127.0.0.1")
                .unwrap_err()
                .contains("expected IP@PORT")
        );
        assert!(parse_ip_port("x@53").unwrap_err().contains("not an IP"));
    }

    #[test]
    fn probe_endpoint_is_exclusive() {
        let a = bind_probe_endpoint("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = SocketAddr::try_from(rustix::net::getsockname(&a).unwrap()).unwrap();
        let err = bind_probe_endpoint(addr).unwrap_err().to_string();
        assert!(
            err.contains("Address already in use") && err.contains("probe endpoint"),
            "{err}"
        );
    }
}
