//! The kresd / knotd / control-socket harness itself works against the real binaries.

use std::net::{IpAddr, SocketAddr};

use hickory_proto::rr::RecordType;
use kres_tests::dns;
use kres_tests::knotd::{Knotd, Zone};
use kres_tests::kresd::{self, Kresd};
use kres_tests::net::{free_port, unique_loopback};

/// Loopback only: nothing these tests start can reach another host (see
/// `kres_tests::net::isolate_loopback_only`).
#[ctor::ctor(unsafe)]
fn private_network() {
    kres_tests::net::isolate_loopback_only()
}

/// The isolation above holds: a datagram to a root server's address (a.root-servers.net, what
/// kresd's priming would ask) cannot leave; loopback still works.
#[test]
fn test_processes_reach_loopback_only() -> anyhow::Result<()> {
    if !kres_tests::root::require_root("the loopback-only network namespace of the tests") {
        return Ok(());
    }
    let sock = std::net::UdpSocket::bind("0.0.0.0:0")?;
    let err = sock
        .send_to(b"x", "198.41.0.4:53")
        .expect_err("a datagram to 198.41.0.4 was sent: the test is not isolated");
    assert_eq!(err.raw_os_error(), Some(libc::ENETUNREACH), "{err}");
    let local = std::net::UdpSocket::bind("127.0.0.1:0")?;
    sock.send_to(b"x", local.local_addr()?)?;
    Ok(())
}

#[test]
fn kresd_becomes_ready_and_answers_control() {
    let ip = unique_loopback();
    let port = free_port(ip);
    let lua = format!("net.listen('{ip}', {port}, {{kind='dns'}})\nmy_value = 'a\\'b'\n");
    let k = Kresd::start(&lua).unwrap();
    let v = k.eval_json("my_value").unwrap();
    assert_eq!(v, serde_json::json!("a'b"));
    let err = k.eval_json("error('boom')").unwrap_err();
    assert!(format!("{err}").contains("boom"), "{err}");
    let listens = k.eval_json("net.list()").unwrap();
    assert!(listens.to_string().contains(&ip.to_string()), "{listens}");
}

#[test]
fn kresd_early_exit_reports_its_error_line() {
    let err = kresd::start_failure("this is not lua ((").unwrap();
    assert!(err.contains("error while loading config"), "{err}");
}

#[test]
fn knotd_serves_the_test_zone_and_query_from_binds_source() {
    let ip = unique_loopback();
    let knot = Knotd::start(ip, &[Zone::example_test()]).unwrap();
    let src = IpAddr::V4(unique_loopback());
    let reply = dns::query_from(src, knot.addr, "www.example.test.", RecordType::A).unwrap();
    assert_eq!(dns::answers(&reply), vec!["192.0.2.10"]);
    let bad: SocketAddr = knot.addr;
    assert!(
        dns::query_from(
            "192.0.2.1".parse().unwrap(),
            bad,
            "www.example.test.",
            RecordType::A
        )
        .is_err()
    );
}
