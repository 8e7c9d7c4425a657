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
