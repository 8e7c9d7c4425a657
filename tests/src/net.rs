//! Loopback addresses and free ports for tests.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::sync::atomic::{AtomicU32, Ordering};

/// A free port on `ip` for both UDP and TCP at the time of the call.
pub fn free_port(ip: Ipv4Addr) -> u16 {
    for _ in 0..100 {
        let udp = UdpSocket::bind(SocketAddr::from((ip, 0))).expect("bind udp on loopback");
        let port = udp.local_addr().expect("local addr").port();
        if TcpListener::bind(SocketAddr::from((ip, port))).is_ok() {
            return port;
        }
    }
    panic!("no free port on {ip}");
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A loopback address of its own for one test: 127.<pid-derived>.<n>.<m>, never 127.0.0.1.
///
/// Every 127.x.y.z is bindable on Linux, so tests running in parallel (and in parallel test
/// binaries) get addresses that do not collide.
pub fn unique_loopback() -> Ipv4Addr {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let pid = std::process::id();
    // Second octet from the pid keeps parallel test binaries apart; 200..=254 is left to others.
    let b = 10 + (pid % 180) as u8;
    let c = ((n / 250) % 250) as u8 + 1;
    let d = (n % 250) as u8 + 2;
    Ipv4Addr::new(127, b, c, d)
}

/// Move this test process into a new network namespace that has only `lo` (up: 127.0.0.0/8 and
/// ::1), so nothing a test starts can reach another host: kresd's own start-up queries (root
/// priming, `detect_time_skew`, the trust-anchor refresh of `ta_update`) fail with "network
/// unreachable" instead of leaving the machine. Call it from a `#[ctor::ctor]` at the top of a
/// test file that starts kresd, before `main`, while the process has one thread (a namespace
/// change affects the calling thread and what it creates later). Nothing names the namespace:
/// the kernel frees it when the test binary and its children exit. Without the privilege to
/// create one (not root) the process stays where it is and says so on stderr.
pub fn isolate_loopback_only() {
    // SAFETY: unshare(2) with a plain flag; no memory is shared with the kernel.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        eprintln!(
            "kres-tests: no private network namespace ({}); tests use the host's",
            std::io::Error::last_os_error()
        );
        return;
    }
    match std::process::Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status()
    {
        Ok(s) if s.success() => {}
        other => eprintln!("kres-tests: `ip link set lo up` in the private namespace: {other:?}"),
    }
}
