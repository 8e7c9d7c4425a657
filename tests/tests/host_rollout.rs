//! Host mode rollouts against the real supervisord + kresd: a change under load (canary first,
//! zero lost queries), a change kresd rejects (stops at the canary), and a change that fails on
//! a later slot (rollback of every slot).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use hickory_proto::rr::RecordType;
use kres_tests::dns::{query_with, resolve};
use kres_tests::dnsperf;
use kres_tests::host::Host;

/// Loopback only: nothing these tests start can reach another host (see
/// `kres_tests::net::isolate_loopback_only`).
#[ctor::ctor(unsafe)]
fn private_network() {
    kres_tests::net::isolate_loopback_only()
}

fn local(addr: &str) -> String {
    format!("local-data:\n  addresses:\n    svc.test: {addr}\n")
}

/// Sequential queries until stopped; counts failures (no reply / not NOERROR).
fn query_loop(
    host: &Host,
) -> (
    Arc<AtomicBool>,
    Arc<AtomicUsize>,
    Arc<AtomicUsize>,
    thread::JoinHandle<()>,
) {
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let (s, o, f, server) = (stop.clone(), ok.clone(), failed.clone(), host.listen);
    let h = thread::spawn(move || {
        while !s.load(Ordering::Relaxed) {
            match query_with(
                server,
                "svc.test.",
                RecordType::A,
                Duration::from_secs(1),
                |_| {},
            ) {
                Ok(m) if m.metadata.response_code == hickory_proto::op::ResponseCode::NoError => {
                    o.fetch_add(1, Ordering::Relaxed);
                }
                _ => {
                    f.fetch_add(1, Ordering::Relaxed);
                }
            }
            thread::sleep(Duration::from_millis(2));
        }
    });
    (stop, ok, failed, h)
}

#[test]
fn host_change_under_load_canary_first_no_lost_queries() -> anyhow::Result<()> {
    let mut host = Host::start(4, &local("192.0.2.10"))?;
    let before = host.wait_converged(None, Duration::from_secs(30))?;
    let old = Host::current_revision(&before)?;

    let queries = host.dir().join("queries.txt");
    std::fs::write(&queries, "svc.test A\n")?;
    // dnsperf runs in a thread of its own: start it, change the config one second in.
    let server = host.listen;
    let perf = thread::spawn(move || {
        dnsperf::run(
            server,
            &queries,
            &["-l", "6", "-Q", "20000", "-c", "4", "-t", "2"],
        )
    });
    thread::sleep(Duration::from_secs(1));
    host.write_config(4, &local("192.0.2.20"))?;
    host.signal("HUP")?;
    let after = host.wait_converged(Some(&old), Duration::from_secs(30))?;
    let report = perf
        .join()
        .map_err(|_| anyhow::anyhow!("dnsperf thread"))??;

    // All workers on the new revision, answering the new data.
    let new = Host::current_revision(&after)?;
    assert_ne!(new, old);
    assert_eq!(Host::worker_revisions(&after), vec![new.clone(); 4]);
    assert_eq!(
        resolve(host.listen, "svc.test.", RecordType::A)?,
        vec!["192.0.2.20"]
    );

    // A real load went through: every query answered NOERROR, none lost (none slower than
    // dnsperf's 2 s timeout: no stall that long).
    report.check_clean(20_000)?;
    println!(
        "rollout under load: {} queries, rcodes {:?}, slowest reply {:.3} s",
        report.sent, report.rcodes, report.max_latency_s
    );

    // The canary came first, then every slot, then the canary went away.
    let ev = Host::events(&after);
    let target = ev
        .iter()
        .position(|e| e.contains(&format!("desired revision {new}")))
        .expect("target event");
    let steps: Vec<&String> = ev[target + 1..]
        .iter()
        .filter(|e| e.contains(": start on") || e.contains(": drain") || e.contains(": stop"))
        .collect();
    assert_eq!(steps[0], &format!("canary slot: start on {new}"), "{ev:#?}");
    // Each slot: drained, stopped, started on the new revision (only then the next one).
    for i in 0..4 {
        assert_eq!(
            steps[1 + 3 * i..4 + 3 * i],
            [
                &format!("slot {i}: drain"),
                &format!("slot {i}: stop"),
                &format!("slot {i}: start on {new}")
            ],
            "{ev:#?}"
        );
    }
    assert_eq!(
        steps[13..],
        ["canary slot: drain", "canary slot: stop"],
        "{ev:#?}"
    );
    let _ = &mut host;
    Ok(())
}

#[test]
fn host_rejected_change_stops_at_the_canary() -> anyhow::Result<()> {
    let host = Host::start(2, &local("192.0.2.10"))?;
    let before = host.wait_converged(None, Duration::from_secs(30))?;
    let old = Host::current_revision(&before)?;
    let pids = host.worker_pids()?;
    let (stop, ok, failed, h) = query_loop(&host);

    // 192.0.2.55 is not on this host: kresd exits at config time.
    let bad = format!(
        "{}lua:\n  script: |\n    net.listen('192.0.2.55', 5353)\n",
        local("192.0.2.10")
    );
    host.write_config(2, &bad)?;
    host.signal("HUP")?;
    let status = host.wait_rejected(Duration::from_secs(30))?;
    stop.store(true, Ordering::Relaxed);
    h.join().map_err(|_| anyhow::anyhow!("query thread"))?;

    let failure = &status["last-failure"];
    let reason = failure["reason"].as_str().unwrap_or_default();
    assert_eq!(failure["slot"], "surge", "{failure:#}");
    assert!(
        reason.contains("192.0.2.55"),
        "kresd's own error line expected: {reason}"
    );
    assert_eq!(status["current-revision"], old.as_str());
    assert_eq!(
        host.worker_pids()?,
        pids,
        "no regular worker touched, canary gone"
    );
    assert_eq!(failed.load(Ordering::Relaxed), 0, "DNS interrupted");
    assert!(ok.load(Ordering::Relaxed) > 10);
    // Not retried: the same config again changes nothing. The operator logs that it re-read
    // the file and found it unchanged; the status it writes after that still has the rejection.
    let outcome = host.reload_publishing_nothing()?;
    assert!(outcome.contains("re-read; unchanged"), "{outcome}");
    let again = host.wait_converged(None, Duration::from_secs(10))?;
    assert_eq!(again["current-revision"], old.as_str());
    assert_eq!(Host::events(&again), Host::events(&status), "{again:#}");
    assert_eq!(host.worker_pids()?, pids);
    Ok(())
}

#[test]
fn host_failure_late_in_the_roll_rolls_back() -> anyhow::Result<()> {
    let host = Host::start(4, &local("192.0.2.10"))?;
    let before = host.wait_converged(None, Duration::from_secs(30))?;
    let old = Host::current_revision(&before)?;
    let (stop, _ok, failed, h) = query_loop(&host);

    // Passes the canary (worker id "canary") and slots 0 and 1, fails on slot 2. It also adds
    // a listen address, which the holder binds for the new revision and gives back on rollback.
    let bad = format!(
        "{}lua:\n  script: |\n    if worker.id == '2' then error('boom on worker 2') end\n",
        local("192.0.2.30")
    );
    let ip2 = kres_tests::net::unique_loopback();
    let second = std::net::SocketAddr::from((ip2, kres_tests::net::free_port(ip2)));
    let bad = host.config_text(4, &bad).replace(
        "network:\n  listen:\n",
        &format!(
            "network:\n  listen:\n    - interface: {}@{}\n",
            second.ip(),
            second.port()
        ),
    );
    host.write_raw(&bad)?;
    host.signal("HUP")?;
    let status = host.wait_rejected(Duration::from_secs(40))?;
    stop.store(true, Ordering::Relaxed);
    h.join().map_err(|_| anyhow::anyhow!("query thread"))?;

    let failure = &status["last-failure"];
    assert_eq!(failure["slot"]["worker"], 2, "{failure:#}");
    assert!(
        failure["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("boom on worker 2"),
        "{failure:#}"
    );
    assert_eq!(status["current-revision"], old.as_str());
    assert_eq!(
        Host::worker_revisions(&status),
        vec![old.clone(); 4],
        "{status:#}"
    );
    let ev = Host::events(&status);
    assert!(
        ev.iter().any(|e| *e == format!("slot 0: start on {old}")),
        "{ev:#?}"
    );
    assert_eq!(
        resolve(host.listen, "svc.test.", RecordType::A)?,
        vec!["192.0.2.10"]
    );
    assert_eq!(failed.load(Ordering::Relaxed), 0, "DNS interrupted");
    // The holder is back on the last good revision's sockets.
    let held: Vec<String> = kres_operator::sockets::fetch(&host.rundir.join("sockets.sock"))?
        .iter()
        .map(|h| h.spec.to_string())
        .collect();
    let (ip, port) = (host.listen.ip(), host.listen.port());
    assert_eq!(held.len(), 2, "{held:?}");
    assert!(
        held.iter().all(|h| h.contains(&format!("{ip}@{port}"))),
        "{held:?}"
    );
    // Rebound twice: to the new set for the rollout, back to the old one for the rollback.
    let log = host.log();
    assert_eq!(log.matches("socket holder rebound").count(), 2, "{log}");
    Ok(())
}

#[test]
fn host_listen_change_rebinds_and_bad_address_is_rejected() -> anyhow::Result<()> {
    let host = Host::start(2, &local("192.0.2.10"))?;
    let before = host.wait_converged(None, Duration::from_secs(30))?;
    let old = Host::current_revision(&before)?;
    let (stop, _ok, failed, h) = query_loop(&host);

    // Add a second address: the holder binds it, every worker is replaced to receive it.
    let ip2 = kres_tests::net::unique_loopback();
    let second = std::net::SocketAddr::from((ip2, kres_tests::net::free_port(ip2)));
    let text = host.config_text(2, &local("192.0.2.10")).replace(
        "network:\n  listen:\n",
        &format!(
            "network:\n  listen:\n    - interface: {}@{}\n",
            second.ip(),
            second.port()
        ),
    );
    host.write_raw(&text)?;
    host.signal("HUP")?;
    let status = host.wait_converged(Some(&old), Duration::from_secs(30))?;
    let two = Host::current_revision(&status)?;
    assert_eq!(
        resolve(second, "svc.test.", RecordType::A)?,
        vec!["192.0.2.10"]
    );
    assert_eq!(
        resolve(host.listen, "svc.test.", RecordType::A)?,
        vec!["192.0.2.10"]
    );
    let pids = host.worker_pids()?;

    // An address that is not on this host: the holder refuses, the change is rejected.
    let bad = text.replace(
        "network:\n  listen:\n",
        "network:\n  listen:\n    - interface: 192.0.2.55@5353\n",
    );
    host.write_raw(&bad)?;
    host.signal("HUP")?;
    let status = host.wait_rejected(Duration::from_secs(30))?;
    stop.store(true, Ordering::Relaxed);
    h.join().map_err(|_| anyhow::anyhow!("query thread"))?;
    let reason = status["last-failure"]["reason"]
        .as_str()
        .unwrap_or_default();
    assert!(reason.contains("192.0.2.55"), "{reason}");
    assert_eq!(status["current-revision"], two.as_str());
    assert_eq!(host.worker_pids()?, pids);
    assert_eq!(
        resolve(second, "svc.test.", RecordType::A)?,
        vec!["192.0.2.10"]
    );
    assert_eq!(failed.load(Ordering::Relaxed), 0, "DNS interrupted");
    Ok(())
}
