//! Pod IPs: one 127.0.x.y loopback address per pod.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::Mutex;

static USED: Mutex<BTreeSet<Ipv4Addr>> = Mutex::new(BTreeSet::new());

/// Allocate a pod IP 127.0.x.y not used by this process and with UDP port 53 free.
///
/// The search starts at a third octet derived from the PID so parallel test binaries (each with
/// its own control plane and agent) rarely meet; a bind probe skips addresses in use.
pub fn allocate() -> Option<Ipv4Addr> {
    let mut used = USED.lock().ok()?;
    let base = (std::process::id() % 250) as usize;
    for i in 0..(250 * 252) {
        let x = ((base + i / 252) % 250 + 1) as u8;
        let y = (i % 252 + 2) as u8;
        let ip = Ipv4Addr::new(127, 0, x, y);
        if used.contains(&ip) {
            continue;
        }
        match UdpSocket::bind(SocketAddr::from((ip, 53))) {
            Ok(_) => {}
            // Not root: we cannot probe port 53, take the address.
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {}
            Err(_) => continue,
        }
        used.insert(ip);
        return Some(ip);
    }
    None
}

/// Return a pod IP to the pool.
pub fn release(ip: Ipv4Addr) {
    if let Ok(mut used) = USED.lock() {
        used.remove(&ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocates_distinct_loopback_addresses() {
        let a = allocate().expect("ip a");
        let b = allocate().expect("ip b");
        assert_ne!(a, b);
        assert_eq!(a.octets()[..2], [127, 0]);
        release(a);
        release(b);
    }
}
