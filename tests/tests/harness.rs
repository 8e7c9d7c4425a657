//! The kresd / knotd / control-socket harness itself works against the real binaries.

use std::net::{IpAddr, SocketAddr};

use hickory_proto::rr::RecordType;
use kres_tests::dns;
use kres_tests::knotd::{Knotd, Zone};
use kres_tests::kresd::{self, Kresd};
use kres_tests::net::{free_port, unique_loopback};

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
