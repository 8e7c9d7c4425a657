//! Host-mode claims of the docs, each shown once with the real operator, supervisord and kresd:
//! adoption in the middle of a rollout, `--watch` following a ConfigMap-style symlink swap, and
//! the start-timeout gate for a worker that says READY=1 but answers no DNS.

use std::collections::BTreeMap;
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

fn local(addr: &str) -> String {
    format!("local-data:\n  addresses:\n    svc.test: {addr}\n")
}

/// Kill -9 the operator between two slots of a rollout, start it again: it adopts the fleet
/// and finishes the rollout, and a slot already replaced is not replaced a second time.
#[test]
fn host_adoption_mid_rollout_replaces_no_slot_twice() -> anyhow::Result<()> {
    let mut host = Host::start(4, &local("192.0.2.10"))?;
    let before = host.wait_converged(None, Duration::from_secs(30))?;
    let old = Host::current_revision(&before)?;
    let original = host.worker_pids()?;
    assert_eq!(original.len(), 4, "{original:?}");

    // Workers of the new revision take a second to start, so the rollout is slow enough to
    // stop in the middle whatever the machine's load.
    let slow = format!(
        "{}lua:\n  script: |\n    os.execute('sleep 1')\n",
        local("192.0.2.20")
    );
    host.write_config(4, &slow)?;
    host.signal("HUP")?;
    let rolling = host.wait_status("slot 1 being replaced", Duration::from_secs(60), |s| {
        let desired = s["desired-revision"].as_str().unwrap_or_default();
        desired != old
            && Host::events(s)
                .iter()
                .any(|e| *e == format!("slot 1: start on {desired}"))
    })?;
    host.kill_operator()?;
    let new = rolling["desired-revision"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| anyhow::anyhow!("no desired revision: {rolling:#}"))?;
    assert_ne!(new, old);
    // Slot 1 was only started once slot 0 was ready on the new revision; slot 3 cannot have
    // been reached yet (two more slow starts in between): the kill is mid-rollout.
    let at_kill = host.worker_pids()?;
    assert_ne!(at_kill["kresd0"], original["kresd0"], "slot 0 not replaced");
    assert_eq!(
        at_kill.get("kresd3"),
        original.get("kresd3"),
        "the rollout had already reached slot 3: {at_kill:?}"
    );

    host.forget_status()?;
    host.spawn()?;
    let after = host.wait_converged(Some(&old), Duration::from_secs(60))?;
    assert_eq!(Host::current_revision(&after)?, new);
    assert_eq!(Host::worker_revisions(&after), vec![new.clone(); 4]);
    let pids = host.worker_pids()?;
    assert_eq!(
        pids["kresd0"], at_kill["kresd0"],
        "slot 0 (already on {new}) was replaced again"
    );
    for slot in ["kresd2", "kresd3"] {
        assert_ne!(pids[slot], original[slot], "{slot} never replaced");
    }
    assert!(!pids.contains_key("kresd-canary"), "canary left: {pids:?}");
    // The restarted operator's own events: no slot started twice, slot 0 not at all, no
    // second canary.
    let ev = Host::events(&after);
    let mut replaced: BTreeMap<String, usize> = BTreeMap::new();
    for e in ev.iter().filter(|e| e.contains(": start on")) {
        *replaced
            .entry(e.split(':').next().unwrap_or_default().to_string())
            .or_default() += 1;
    }
    assert!(replaced.values().all(|n| *n == 1), "{ev:#?}");
    assert!(!replaced.contains_key("slot 0"), "{ev:#?}");
    assert!(!replaced.contains_key("canary slot"), "{ev:#?}");
    assert!(host.log().contains("adopting running supervisord"));
    assert_eq!(
        resolve(host.listen, "svc.test.", RecordType::A)?,
        vec!["192.0.2.20"]
    );
    Ok(())
}

/// `--watch` with the config mounted as Kubernetes does it: `config.yaml -> ..data/config.yaml`,
/// `..data -> ..v1`, and an update that swaps `..data` atomically. No signal is sent.
#[test]
fn host_watch_follows_a_configmap_symlink_swap() -> anyhow::Result<()> {
    let mut host = Host::start(1, &local("192.0.2.10"))?;
    let before = host.wait_converged(None, Duration::from_secs(30))?;
    let old = Host::current_revision(&before)?;
    // Restart the operator on a ConfigMap-style mount of the same config.
    let cm = host.dir().join("configmap");
    std::fs::create_dir_all(cm.join("..v1"))?;
    std::fs::write(
        cm.join("..v1/config.yaml"),
        host.config_text(1, &local("192.0.2.10")),
    )?;
    std::os::unix::fs::symlink("..v1", cm.join("..data"))?;
    std::os::unix::fs::symlink("..data/config.yaml", cm.join("config.yaml"))?;
    host.kill_operator()?;
    host.forget_status()?;
    host.config = cm.join("config.yaml");
    host.spawn_with(&["--watch"])?;
    let adopted = host.wait_converged(None, Duration::from_secs(30))?;
    assert_eq!(Host::current_revision(&adopted)?, old);

    // The kubelet's update: a new version directory, `..data` swapped by rename.
    std::fs::create_dir(cm.join("..v2"))?;
    std::fs::write(
        cm.join("..v2/config.yaml"),
        host.config_text(1, &local("192.0.2.77")),
    )?;
    std::os::unix::fs::symlink("..v2", cm.join("..data_tmp"))?;
    std::fs::rename(cm.join("..data_tmp"), cm.join("..data"))?;
    std::fs::remove_dir_all(cm.join("..v1"))?;
    let after = host.wait_converged(Some(&old), Duration::from_secs(30))?;
    assert_ne!(Host::current_revision(&after)?, old);
    assert_eq!(
        resolve(host.listen, "svc.test.", RecordType::A)?,
        vec!["192.0.2.77"]
    );
    let log = host.log();
    assert!(!log.contains("SIGHUP"), "a signal was involved:\n{log}");
    assert_eq!(host.reloads_processed(), 1, "{log}");
    Ok(())
}

/// A worker that loads its config and sends READY=1 but answers no DNS query (every query
/// dropped by its Lua) never passes the probe: the canary is rejected after the start timeout,
/// the regular worker is untouched and keeps serving.
#[test]
fn host_ready_without_dns_answer_is_stopped_by_the_start_timeout() -> anyhow::Result<()> {
    let host = Host::start_with(1, &local("192.0.2.10"), &["--start-timeout-ms", "3000"])?;
    let before = host.wait_converged(None, Duration::from_secs(30))?;
    let old = Host::current_revision(&before)?;
    let pids = host.worker_pids()?;
    let mute = format!(
        "{}lua:\n  script: |\n    policy.add(policy.all(policy.NO_ANSWER))\n",
        local("192.0.2.20")
    );
    host.write_config(1, &mute)?;
    host.signal("HUP")?;
    let status = host.wait_rejected(Duration::from_secs(60))?;
    let failure = &status["last-failure"];
    let reason = failure["reason"].as_str().unwrap_or_default();
    assert_eq!(failure["slot"], "surge", "{failure:#}");
    assert!(reason.contains("not ready within 3"), "{failure:#}");
    assert!(reason.contains("READY=1 received but"), "{failure:#}");
    assert_eq!(status["current-revision"], old.as_str());
    assert_eq!(host.worker_pids()?, pids, "the regular worker was touched");
    assert_eq!(
        resolve(host.listen, "svc.test.", RecordType::A)?,
        vec!["192.0.2.10"]
    );
    Ok(())
}
