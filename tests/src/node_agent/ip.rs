//! Pod IPs: one address of the pod CIDR (198.18.0.0/15, local on `lo` in the test network
//! namespace, see [`crate::k8s::netns`]) per pod; 198.18.0.1 is the node.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::Mutex;

static USED: Mutex<BTreeSet<Ipv4Addr>> = Mutex::new(BTreeSet::new());

/// First and last pod address (198.18.0.2 ..= 198.19.255.254).
const FIRST: u32 = u32::from_be_bytes([198, 18, 0, 2]);
const LAST: u32 = u32::from_be_bytes([198, 19, 255, 254]);

/// Allocate a pod IP not used by this process (each test binary has a network namespace of its
/// own, so addresses cannot collide between binaries). Addresses are handed out in order and
/// reused only after the whole range was used once, so a new pod does not inherit a deleted
/// pod's address (and its conntrack entries).
pub fn allocate() -> Option<Ipv4Addr> {
    static NEXT: Mutex<u32> = Mutex::new(FIRST);
    let mut used = USED.lock().ok()?;
    let mut next = NEXT.lock().ok()?;
    for _ in FIRST..=LAST {
        let ip = Ipv4Addr::from(*next);
        *next = if *next >= LAST { FIRST } else { *next + 1 };
        if used.insert(ip) {
            return Some(ip);
        }
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
    fn allocates_distinct_addresses_of_the_pod_cidr() {
        let a = allocate().expect("ip a");
        let b = allocate().expect("ip b");
        assert_ne!(a, b);
        for ip in [a, b] {
            assert!(
                ip.octets()[0] == 198 && (ip.octets()[1] & 0xfe) == 18,
                "{ip}"
            );
            assert_ne!(ip, Ipv4Addr::new(198, 18, 0, 1), "the node address");
        }
        release(a);
        release(b);
    }
}
