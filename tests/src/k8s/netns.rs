//! The private network namespace every Kubernetes test binary runs in.
//!
//! kube-proxy rewrites nftables rules and sysctls, pod IPs must not be loopback (the apiserver
//! refuses them in EndpointSlices) and ClusterIPs are only reachable where kube-proxy's rules
//! are. So a Kubernetes test binary moves itself, before `main` and while it still has a single
//! thread, into a fresh anonymous network namespace ([`isolate_process`], called from a
//! `#[ctor::ctor]` in the test file). Every later thread and child (etcd, kube-apiserver,
//! kube-controller-manager, kube-proxy, the node agent's kresd) inherits it. Nothing names the
//! namespace, so the kernel frees it — addresses, routes, nftables rules, conntrack entries —
//! when the last process in it exits: the children die with the test binary (PDEATHSIG), also
//! after a panic or an abort.
//!
//! Inside, [`configure`] sets up:
//! - `lo` up, `198.18.0.1/15` on `lo`: the whole pod CIDR is local, the node is 198.18.0.1 and
//!   pods get 198.18.x.y ([`POD_CIDR`], RFC 2544 benchmarking space, never routed);
//! - the service CIDR `10.0.0.0/24` routed to `lo` with source 198.18.0.1, so a ClusterIP
//!   packet leaves through kube-proxy's nftables DNAT to a pod IP.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU16, Ordering};

use super::Error;

/// The pod network (pods and the node).
pub const POD_CIDR: &str = "198.18.0.0/15";
/// The node's address: the first of [`POD_CIDR`]; status.hostIP of every pod.
pub const NODE_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
/// The service CIDR (kube-apiserver `--service-cluster-ip-range`).
pub const SERVICE_CIDR: &str = "10.0.0.0/24";

/// Result of [`isolate_process`] (None: not called): the namespace the process started in
/// (its inode and an open handle), or why it could not leave it.
static ISOLATED: OnceLock<Result<(u64, std::fs::File), String>> = OnceLock::new();

/// Move the whole process into a new network namespace. Call it from a `#[ctor::ctor]` (before
/// `main`, while the process has one thread: a namespace change only affects the calling thread
/// and the threads and children it creates later). Never panics: a failure (not root, no
/// CAP_SYS_ADMIN) is reported by [`require_private`] when a test starts the control plane.
pub fn isolate_process() {
    let result = (|| {
        let original = std::fs::File::open("/proc/thread-self/ns/net")
            .map_err(|e| format!("open /proc/thread-self/ns/net: {e}"))?;
        let ino = current_inode().map_err(|e| e.to_string())?;
        // SAFETY: unshare(2) with a plain flag; no memory is shared with the kernel.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            return Err(format!(
                "unshare(CLONE_NEWNET): {}",
                std::io::Error::last_os_error()
            ));
        }
        Ok((ino, original))
    })();
    let _ = ISOLATED.set(result);
}

/// The inode of this thread's network namespace (identifies it in `/proc/*/ns/net`).
pub fn current_inode() -> Result<u64, Error> {
    use std::os::unix::fs::MetadataExt;
    let p = "/proc/thread-self/ns/net";
    std::fs::metadata(p)
        .map(|m| m.ino())
        .map_err(|e| Error::Io(format!("stat {p}"), e))
}

/// Fail unless the process left the namespace it started in ([`isolate_process`]) and this
/// thread is not back in it: the guard in front of everything that changes the network
/// (kube-proxy above all).
pub fn require_private() -> Result<(), Error> {
    let why = match ISOLATED.get() {
        Some(Ok((original, _))) if current_inode()? != *original => return Ok(()),
        Some(Ok(_)) => "this thread is in the namespace the process started in".to_string(),
        Some(Err(e)) => format!("{e} (the Kubernetes tests need root)"),
        None => "this test binary did not isolate itself".into(),
    };
    Err(Error::Start {
        what: "the private network namespace".into(),
        detail: format!(
            "{why}; a Kubernetes test file must start with \
             `#[ctor::ctor(unsafe)] fn private_network() {{ kres_tests::k8s::netns::isolate_process() }}` \
             (kube-proxy never runs in the host's network namespace)"
        ),
    })
}

/// Run `cmd` in the network namespace the process started in (the host's), for read-only
/// checks such as "no kube-proxy table is left there": the command runs from a short-lived
/// thread that enters that namespace; nothing else leaves the private one.
pub fn output_in_original_namespace(mut cmd: Command) -> Result<std::process::Output, Error> {
    use std::os::fd::AsRawFd;
    let fd = match ISOLATED.get() {
        Some(Ok((_, f))) => f.as_raw_fd(),
        _ => {
            return Err(Error::Start {
                what: "the original network namespace".into(),
                detail: "the process did not isolate itself".into(),
            });
        }
    };
    std::thread::spawn(move || {
        // SAFETY: setns(2) on an fd we keep open for the process's lifetime; it only affects
        // this thread, which ends after the command.
        if unsafe { libc::setns(fd, libc::CLONE_NEWNET) } != 0 {
            return Err(Error::Io(
                "setns to the original network namespace".into(),
                std::io::Error::last_os_error(),
            ));
        }
        cmd.output()
            .map_err(|e| Error::Io(format!("run {:?}", cmd.get_program()), e))
    })
    .join()
    .map_err(|_| Error::Start {
        what: "the original network namespace".into(),
        detail: "command thread panicked".into(),
    })?
}

/// Configure `lo`, the pod CIDR and the service route (once per process; idempotent).
pub fn configure() -> Result<(), Error> {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| {
        require_private().map_err(|e| e.to_string())?;
        let node = format!("{NODE_IP}/15");
        let src = NODE_IP.to_string();
        for args in [
            vec!["link", "set", "lo", "up"],
            vec!["addr", "replace", node.as_str(), "dev", "lo"],
            vec![
                "route",
                "replace",
                SERVICE_CIDR,
                "dev",
                "lo",
                "src",
                src.as_str(),
            ],
        ] {
            ip(&args)?;
        }
        Ok(())
    })
    .clone()
    .map_err(|detail| Error::Start {
        what: "the pod network".into(),
        detail,
    })
}

/// Run `ip ARGS` in this process's network namespace.
fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {}: {e} (install iproute2)", args.join(" ")))?;
    if !out.status.success() {
        return Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

/// Give this process's network namespace the name `name` (`ip netns attach`), so a developer
/// can enter it with `ip netns exec NAME ...`. The name outlives the process: remove it with
/// [`detach`] (`ip netns delete NAME`).
pub fn attach(name: &str) -> Result<(), Error> {
    require_private()?;
    let pid = std::process::id().to_string();
    ip(&["netns", "attach", name, &pid]).map_err(|detail| Error::Start {
        what: format!("network namespace name {name}"),
        detail,
    })
}

/// Remove the name given by [`attach`].
pub fn detach(name: &str) -> Result<(), Error> {
    ip(&["netns", "delete", name]).map_err(|detail| Error::Start {
        what: format!("removing network namespace name {name}"),
        detail,
    })
}

/// Source ports for queries from the node: each query gets one never used before (below the
/// kernel's ephemeral range 32768-60999, so nothing else takes them). A reused source port
/// would match an old UDP conntrack entry and reach the backend that entry points to, even one
/// that has left a Service: fresh ports make every query a new connection that kube-proxy's
/// current rules route.
static NEXT_SOURCE_PORT: AtomicU16 = AtomicU16::new(20000);

/// Ask `name A` with the real `kdig` from [`NODE_IP`] and a fresh source port, over UDP or TCP,
/// one try with a 2 s timeout: the answer's records (`+short`). An error when kdig fails or
/// there is no answer.
pub async fn ask_from_node(server: SocketAddr, name: &str, tcp: bool) -> anyhow::Result<String> {
    let port = NEXT_SOURCE_PORT.fetch_add(1, Ordering::Relaxed);
    anyhow::ensure!(port < 32768, "out of fresh source ports");
    let out = tokio::process::Command::new("kdig")
        .args([
            if tcp { "+tcp" } else { "+notcp" },
            "+short",
            "+timeout=2",
            "+retry=0",
            "-b",
            &format!("{NODE_IP}#{port}"),
            "-p",
            &server.port().to_string(),
            &format!("@{}", server.ip()),
            name,
            "A",
        ])
        .output()
        .await?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    anyhow::ensure!(
        out.status.success() && !text.is_empty() && !text.starts_with(';'),
        "kdig {} @{server} {name} from port {port}: {text} {}",
        if tcp { "TCP" } else { "UDP" },
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(text)
}
