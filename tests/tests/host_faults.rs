//! Host mode scaling and faults against the real supervisord + kresd: scale without touching
//! other workers; operator SIGKILL + restart adopts the fleet without restarting any worker;
//! a SIGKILLed worker is replaced by supervisord; a SIGKILLed supervisord is recovered.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use hickory_proto::rr::RecordType;
use kres_tests::dns::resolve;
use kres_tests::host::Host;
use serde_json::Value;

/// Loopback only: nothing these tests start can reach another host (see
/// `kres_tests::net::isolate_loopback_only`).
#[ctor::ctor(unsafe)]
fn private_network() {
    kres_tests::net::isolate_loopback_only()
}

const LOCAL: &str = "local-data:\n  addresses:\n    svc.test: 192.0.2.10\n";

fn wait_workers(host: &Host, n: usize) -> anyhow::Result<Value> {
    host.wait_status(
        &format!("{n} ready workers"),
        Duration::from_secs(30),
        |s| {
            s["converged"] == true
                && s["workers-desired"] == n
                && s["workers"]
                    .as_array()
                    .is_some_and(|w| w.len() == n && w.iter().all(|w| w["state"] == "ready"))
        },
    )
}

/// Wait (10 s at most) until the operator logged a rejected configuration.
fn subset(pids: &BTreeMap<String, u32>, names: &[&str]) -> BTreeMap<String, u32> {
    pids.iter()
        .filter(|(n, _)| names.contains(&n.as_str()))
        .map(|(n, p)| (n.clone(), *p))
        .collect()
}

#[test]
fn host_scale_4_2_5_keeps_untouched_workers() -> anyhow::Result<()> {
    let host = Host::start(4, LOCAL)?;
    wait_workers(&host, 4)?;
    let first = host.worker_pids()?;
    assert_eq!(first.len(), 4);

    host.write_config(2, LOCAL)?;
    host.signal("HUP")?;
    wait_workers(&host, 2)?;
    let two = host.worker_pids()?;
    assert_eq!(
        two,
        subset(&first, &["kresd0", "kresd1"]),
        "scale-down restarted a worker"
    );

    host.write_config(5, LOCAL)?;
    host.signal("HUP")?;
    wait_workers(&host, 5)?;
    let five = host.worker_pids()?;
    assert_eq!(five.len(), 5);
    assert_eq!(
        subset(&five, &["kresd0", "kresd1"]),
        two,
        "scale-up restarted a worker"
    );
    assert_eq!(
        resolve(host.listen, "svc.test.", RecordType::A)?,
        vec!["192.0.2.10"]
    );
    Ok(())
}

#[test]
fn host_survives_operator_worker_and_supervisord_kills() -> anyhow::Result<()> {
    let mut host = Host::start(3, LOCAL)?;
    wait_workers(&host, 3)?;
    let pids = host.worker_pids()?;
    let supervisord = host.supervisord_pid()?;

    // SIGKILL the operator: the data plane keeps serving.
    host.kill_operator()?;
    for _ in 0..20 {
        assert_eq!(
            resolve(host.listen, "svc.test.", RecordType::A)?,
            vec!["192.0.2.10"]
        );
    }
    // A restarted operator adopts supervisord and every worker: nothing restarted.
    host.forget_status()?;
    host.spawn()?;
    wait_workers(&host, 3)?;
    assert_eq!(host.worker_pids()?, pids, "adoption restarted a worker");
    assert_eq!(host.supervisord_pid()?, supervisord);
    assert!(host.log().contains("adopting running supervisord"));

    // SIGKILL one worker: supervisord restarts it at once, the operator sees it ready.
    // (How fast is a benchmark, `host_bench`; here a 10 s bound only fails a hung restart.)
    let victim = pids["kresd1"];
    let t0 = Instant::now();
    std::process::Command::new("kill")
        .args(["-KILL", &victim.to_string()])
        .status()?;
    let replaced = loop {
        let now = host.worker_pids()?;
        if let Some(p) = now.get("kresd1").filter(|p| **p != victim) {
            break *p;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "worker not replaced after {:?}",
            t0.elapsed()
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    println!("SIGKILLed worker running again after {:?}", t0.elapsed());
    host.wait_status("replacement ready", Duration::from_secs(10), |s| {
        s["workers"].as_array().is_some_and(|w| {
            w.iter()
                .any(|w| w["pid"] == replaced && w["state"] == "ready")
        })
    })?;
    assert_eq!(
        resolve(host.listen, "svc.test.", RecordType::A)?,
        vec!["192.0.2.10"]
    );

    // SIGKILL supervisord: the operator notices, clears its orphans and recovers the fleet.
    std::process::Command::new("kill")
        .args(["-KILL", &supervisord.to_string()])
        .status()?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let new_supervisord = loop {
        if let Ok(p) = host.supervisord_pid()
            && p != supervisord
        {
            break p;
        }
        assert!(
            Instant::now() < deadline,
            "supervisord not restarted:\n{}",
            host.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let status = host.wait_status("recovered fleet", Duration::from_secs(30), |s| {
        s["converged"] == true
            && s["workers"].as_array().is_some_and(|w| {
                w.len() == 3
                    && w.iter()
                        .all(|w| w["state"] == "ready" && w["pid"] != replaced)
            })
    })?;
    assert_ne!(new_supervisord, supervisord);
    let after = host.worker_pids()?;
    assert_eq!(after.len(), 3, "{status:#}");
    for pid in pids.values() {
        assert!(
            !after.values().any(|p| p == pid),
            "orphan {pid} still listed"
        );
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}/environ")).exists() || is_zombie(*pid),
            "orphan {pid} alive"
        );
    }
    assert_eq!(
        resolve(host.listen, "svc.test.", RecordType::A)?,
        vec!["192.0.2.10"]
    );
    Ok(())
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit_once(')')
                .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}

#[test]
fn host_sigterm_stops_fleet_unless_keep_workers_on_exit() -> anyhow::Result<()> {
    let mut host = Host::start(2, LOCAL)?;
    wait_workers(&host, 2)?;
    let pids = host.worker_pids()?;
    let supervisord = host.supervisord_pid()?;

    // Restart with --keep-workers-on-exit (adopting), then SIGTERM: everything keeps serving.
    host.kill_operator()?;
    host.forget_status()?;
    host.spawn_with(&["--keep-workers-on-exit"])?;
    wait_workers(&host, 2)?;
    host.signal("TERM")?;
    assert_eq!(host.wait_exit(Duration::from_secs(10))?, Some(0));
    assert_eq!(host.supervisord_pid()?, supervisord);
    assert_eq!(host.worker_pids()?, pids);
    assert_eq!(
        resolve(host.listen, "svc.test.", RecordType::A)?,
        vec!["192.0.2.10"]
    );

    // Without the flag SIGTERM stops the workers and supervisord. The status file is removed
    // first, so the adoption is judged on what the new operator wrote (which also proves its
    // signal handlers exist: they are installed before the reconcile loop starts).
    host.forget_status()?;
    host.spawn()?;
    wait_workers(&host, 2)?;
    assert_eq!(host.worker_pids()?, pids);
    host.signal("TERM")?;
    assert_eq!(host.wait_exit(Duration::from_secs(30))?, Some(0));
    assert!(
        host.supervisord_pid().is_err(),
        "supervisord still answering"
    );
    for pid in pids.values().chain([&supervisord]) {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}/environ")).exists() || is_zombie(*pid),
            "{pid} alive"
        );
    }
    Ok(())
}

#[test]
fn host_invalid_config_on_reload_leaves_the_fleet_untouched() -> anyhow::Result<()> {
    let host = Host::start(2, LOCAL)?;
    let before = wait_workers(&host, 2)?;
    let pids = host.worker_pids()?;
    // Unknown key and an out-of-range worker count: both reported, nothing applied.
    host.write_raw(&host.config_text(0, &format!("{LOCAL}no-such-key: 1\n")))?;
    // The re-read is processed (its outcome logged) before anything is judged.
    let outcome = host.reload_publishing_nothing()?;
    assert!(outcome.contains("configuration rejected"), "{outcome}");
    let log = host.log();
    assert!(log.contains("/workers"), "{log}");
    assert!(log.contains("no-such-key"), "{log}");
    // A rejected file publishes nothing (checked by reload_publishing_nothing).
    assert_eq!(host.worker_pids()?, pids);
    assert_eq!(
        host.status()?["current-revision"],
        before["current-revision"]
    );
    assert_eq!(
        resolve(host.listen, "svc.test.", RecordType::A)?,
        vec!["192.0.2.10"]
    );
    // The status says so, by field, until the file is valid again.
    let refused = host.wait_status("the refusal in the status", Duration::from_secs(30), |s| {
        !s["config-error"].is_null()
    })?;
    let pointers: Vec<&str> = refused["config-error"]["errors"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["pointer"].as_str())
        .collect();
    assert!(pointers.contains(&"/workers"), "{refused:#}");
    assert!(pointers.contains(&"/no-such-key"), "{refused:#}");
    let degraded = condition(&refused, "Degraded");
    assert_eq!(degraded["status"], true, "{refused:#}");
    assert_eq!(degraded["reason"], "InvalidConfig", "{refused:#}");
    assert_eq!(
        condition(&refused, "Available")["status"],
        true,
        "{refused:#}"
    );
    host.write_config(2, LOCAL)?;
    host.signal("HUP")?;
    let fixed = host.wait_status("the refusal cleared", Duration::from_secs(30), |s| {
        s["config-error"].is_null()
    })?;
    assert_eq!(condition(&fixed, "Degraded")["status"], false, "{fixed:#}");
    Ok(())
}

/// The condition of type `kind` in a status.
fn condition<'a>(status: &'a serde_json::Value, kind: &str) -> &'a serde_json::Value {
    status["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == kind))
        .unwrap_or(&serde_json::Value::Null)
}

#[test]
fn host_sighup_with_a_trust_anchor_conflict_is_invalid_not_current() -> anyhow::Result<()> {
    let host = Host::start(1, LOCAL)?;
    let before = wait_workers(&host, 1)?;
    let seq = before["change-seq"].as_u64().expect("change-seq");
    // kresd refuses a name that is both a trust anchor and a negative trust anchor; before the
    // one config pipeline this was found only at render, after the source had published it.
    let conflict = "dnssec:\n  trust-anchors: ['svc.test. DS 1 8 2 AB']\n  negative-trust-anchors: [svc.test]\n";
    host.write_config(1, &format!("{LOCAL}{conflict}"))?;
    let outcome = host.reload()?;
    assert!(outcome.contains("configuration rejected"), "{outcome}");
    assert!(
        host.log().contains("/dnssec/negative-trust-anchors/0"),
        "{}",
        host.log()
    );
    // A valid change after it is the next change: the invalid one was never published.
    host.write_config(1, "local-data:\n  addresses:\n    svc.test: 192.0.2.11\n")?;
    host.signal("HUP")?;
    let after =
        host.wait_converged(before["current-revision"].as_str(), Duration::from_secs(30))?;
    assert_eq!(after["change-seq"].as_u64(), Some(seq + 1), "{after:#}");
    assert_eq!(
        resolve(host.listen, "svc.test.", RecordType::A)?,
        vec!["192.0.2.11"]
    );
    Ok(())
}

#[test]
fn host_failed_revision_is_not_retried_after_an_operator_restart() -> anyhow::Result<()> {
    let mut host = Host::start(2, LOCAL)?;
    let good = wait_workers(&host, 2)?;
    let good_rev = Host::current_revision(&good)?;
    host.write_config(
        2,
        &format!("{LOCAL}lua:\n  script: error('canary says no')\n"),
    )?;
    host.signal("HUP")?;
    let failed = host.wait_status("the rejection", Duration::from_secs(30), |s| {
        s["failed-revisions"]
            .as_array()
            .is_some_and(|f| f.len() == 1)
            && s["converged"] == true
    })?;
    let bad_rev = failed["desired-revision"]
        .as_str()
        .expect("desired")
        .to_owned();
    assert_ne!(bad_rev, good_rev);
    let pids = host.worker_pids()?;
    assert_eq!(pids.len(), 2, "{pids:?}");
    let old_operator = host.pid().expect("pid");

    host.kill_operator()?;
    host.spawn()?;
    let new_operator = host.pid().expect("pid");
    // Proof the new operator processed the (unchanged, failed) config: its own status, on the
    // same change, converged back on the good revision.
    let s = host.wait_status(
        "the restarted operator's status",
        Duration::from_secs(30),
        |s| {
            s["operator-pid"] == new_operator
                && s["desired-revision"] == bad_rev.as_str()
                && s["converged"] == true
        },
    )?;
    assert_ne!(old_operator, new_operator);
    assert_eq!(s["current-revision"], good_rev.as_str(), "{s:#}");
    assert_eq!(s["failed-revisions"], serde_json::json!([bad_rev]), "{s:#}");
    let reason = s["last-failure"]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("canary says no"), "status says why: {s:#}");
    let degraded = condition(&s, "Degraded");
    assert_eq!(degraded["status"], true, "{s:#}");
    assert_eq!(degraded["reason"], "RevisionRejected", "{s:#}");
    assert!(
        degraded["message"]
            .as_str()
            .is_some_and(|m| m.contains("canary says no")),
        "{s:#}"
    );
    // Not retried: no canary, no worker started or replaced, the same processes serve.
    let started: Vec<&Value> = s["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| matches!(e["kind"].as_str(), Some("start" | "drain" | "stop")))
        .collect();
    assert!(started.is_empty(), "retried: {started:?}");
    assert_eq!(host.worker_pids()?, pids);
    // The store says so too.
    let store: Value = serde_json::from_str(&std::fs::read_to_string(
        host.rundir.join("state/revisions.json"),
    )?)?;
    assert_eq!(store["last-good"], good_rev.as_str(), "{store:#}");
    assert!(
        store["failed"][&bad_rev]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("canary says no")),
        "{store:#}"
    );
    assert_eq!(
        resolve(host.listen, "svc.test.", RecordType::A)?,
        vec!["192.0.2.10"]
    );
    Ok(())
}
