//! Host mode, first start: `workers: 4` gives four kresd answering on the listen address, and
//! supervisord's own view (XML-RPC getAllProcessInfo) agrees with the operator's status.

use std::collections::BTreeSet;
use std::time::Duration;

use hickory_proto::rr::RecordType;
use kres_tests::dns::resolve;
use kres_tests::host::Host;

/// Loopback only: nothing these tests start can reach another host (see
/// `kres_tests::net::isolate_loopback_only`).
#[ctor::ctor(unsafe)]
fn private_network() {
    kres_tests::net::isolate_loopback_only()
}

const LOCAL: &str = "local-data:\n  addresses:\n    svc.test: 192.0.2.10\n";

#[test]
fn host_first_start_runs_four_workers() -> anyhow::Result<()> {
    let host = Host::start(4, LOCAL)?;
    let status = host.wait_converged(None, Duration::from_secs(30))?;
    assert_eq!(
        resolve(host.listen, "svc.test.", RecordType::A)?,
        vec!["192.0.2.10"]
    );

    // supervisord's view: exactly kresd0..kresd3 running, no canary left, holder and gc up.
    let procs = host.processes()?;
    let workers: BTreeSet<&str> = procs
        .iter()
        .filter(|(n, p)| n.starts_with("kresd") && p.state == "RUNNING")
        .map(|(n, _)| n.as_str())
        .collect();
    assert_eq!(
        workers,
        BTreeSet::from(["kresd0", "kresd1", "kresd2", "kresd3"]),
        "{procs:?}"
    );
    assert_eq!(
        procs.get("sockets").map(|p| p.state.as_str()),
        Some("RUNNING")
    );
    // cache-gc has startsecs=1 (it must not restart in a tight loop): RUNNING after a second.
    let mut gc = String::new();
    for _ in 0..60 {
        gc = host
            .processes()?
            .get("cache-gc")
            .map(|p| p.state.clone())
            .unwrap_or_default();
        if gc == "RUNNING" {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(gc, "RUNNING");

    // The operator's status agrees on PIDs and revision.
    let pids = host.worker_pids()?;
    let rev = status["current-revision"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    for w in status["workers"].as_array().into_iter().flatten() {
        let slot = w["slot"]["worker"].as_u64().expect("regular slot");
        assert_eq!(w["state"], "ready");
        assert_eq!(w["revision"], rev.as_str());
        assert_eq!(
            w["pid"].as_u64(),
            pids.get(&format!("kresd{slot}")).map(|p| *p as u64)
        );
    }
    // Every worker answers on its own: four distinct PIDs, four control sockets.
    let distinct: BTreeSet<u32> = pids.values().copied().collect();
    assert_eq!(distinct.len(), 4);
    for pid in distinct {
        assert!(
            host.rundir
                .join("kresd/control")
                .join(pid.to_string())
                .exists(),
            "control/{pid}"
        );
    }
    Ok(())
}
