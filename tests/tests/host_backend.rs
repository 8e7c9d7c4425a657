//! The supervisord backend passes the backend conformance suite (real supervisord + kresd).

use kres_operator::backend::supervisord::{SupervisordBackend, SupervisordSettings};
use kres_tests::backend::conformance;
use kres_tests::net::unique_loopback;

/// Loopback only: nothing these tests start can reach another host (see
/// `kres_tests::net::isolate_loopback_only`).
#[ctor::ctor(unsafe)]
fn private_network() {
    kres_tests::net::isolate_loopback_only()
}

/// A temp dir (kept by the caller) and the settings of a fresh supervisord backend in it, its
/// probes on an address of its own.
fn fresh(prefix: &str) -> anyhow::Result<(tempfile::TempDir, SupervisordSettings)> {
    let dir = tempfile::Builder::new().prefix(prefix).tempdir()?;
    let mut settings = SupervisordSettings::new(dir.path().join("run"));
    settings.probe_ip = unique_loopback().into();
    Ok((dir, settings))
}

#[tokio::test(flavor = "current_thread")]
async fn supervisord_backend_conformance() -> anyhow::Result<()> {
    let (_dir, settings) = fresh("kres-backend-")?;
    let backend = SupervisordBackend::new(settings)?;
    let result = conformance(&backend, serde_json::Value::Null).await;
    if result.is_err() {
        // Leave nothing behind on failure.
        let _ = backend.rpc().shutdown().await;
    }
    result
}

/// `system.multicall` against a real supervisord: results in call order, a fault is that call's
/// error, and `processes_and_configs` reads both lists in one round trip.
#[tokio::test(flavor = "current_thread")]
async fn supervisord_multicall_results_and_faults() -> anyhow::Result<()> {
    use kres_operator::backend::Backend;
    use kres_operator::backend::supervisord::xmlrpc::Value;
    let (_dir, settings) = fresh("kres-multicall-")?;
    let backend = SupervisordBackend::new(settings)?;
    let result = async {
        backend.ensure().await?;
        let rpc = backend.rpc();
        let pid = rpc.pid().await?;
        let results = rpc
            .multicall(&[
                ("supervisor.getPID", vec![]),
                (
                    "supervisor.addProcessGroup",
                    vec![Value::from("no-such-group")],
                ),
            ])
            .await?;
        anyhow::ensure!(results.len() == 2, "two results: {results:?}");
        anyhow::ensure!(
            results[0].as_ref().ok().and_then(Value::as_int) == Some(i64::from(pid)),
            "getPID result: {:?}",
            results[0]
        );
        let fault = results[1].as_ref().err().and_then(|e| e.fault_name());
        anyhow::ensure!(
            fault == Some("BAD_NAME"),
            "addProcessGroup fault: {:?}",
            results[1]
        );
        let (infos, configs) = rpc.processes_and_configs().await?;
        anyhow::ensure!(infos.len() == configs.len(), "{infos:?} vs {configs:?}");
        anyhow::Ok(())
    }
    .await;
    let _ = backend.rpc().shutdown().await;
    result
}

/// A rollout stages its revision with one `reloadConfig` (counted by the client), not one per
/// started slot; meanwhile workers keep the revision they run, also for a new backend adopting
/// the rundir (an operator restart), though supervisord's staged commands name the new one.
#[tokio::test(flavor = "current_thread")]
async fn supervisord_stages_a_rollout_with_one_reload() -> anyhow::Result<()> {
    use anyhow::ensure;
    use kres_operator::backend::Backend;
    use kres_operator::backend::supervisord::conf::parse_worker_command;
    use kres_operator::reconcile::Slot;
    use kres_tests::backend::{GOOD, desired, retire, start_ready};
    let (_dir, settings) = fresh("kres-stage-")?;
    let template = serde_json::Value::Null;
    let workers = [Slot::Worker(0), Slot::Worker(1)];
    let mut old = desired(GOOD, &template);
    let mut new = desired(&format!("{GOOD}-- new\n"), &template);
    old.workers = workers.len() as u16;
    new.workers = old.workers;
    let first = SupervisordBackend::new(settings.clone())?;
    let setup = async {
        first.ensure().await?;
        first.stage(&old).await?;
        for slot in workers {
            start_ready(&first, slot, &old.revision).await?;
        }
        anyhow::Ok(())
    }
    .await;
    if setup.is_err() {
        let _ = first.rpc().shutdown().await;
    }
    setup?;
    // The operator restarts: a new backend adopts the running supervisord.
    drop(first);
    let b = SupervisordBackend::new(settings)?;
    let result = async {
        b.ensure().await?;
        let before = b.rpc().reloads();
        b.stage(&new).await?;
        let staged = b.rpc().all_config_info().await?;
        let staged_revision = |name: &str| {
            staged
                .iter()
                .find(|c| c.name == name)
                .and_then(|c| parse_worker_command(&c.command))
                .map(|w| w.revision)
        };
        ensure!(
            staged_revision("kresd0") == Some(new.revision.clone()),
            "kresd0 staged as {:?}",
            staged_revision("kresd0")
        );
        let o = b.observe().await?;
        for slot in workers {
            let s = o.slot(slot).map(|s| (s.revision.clone(), s.state));
            ensure!(
                s.as_ref().is_some_and(|(r, _)| *r == old.revision),
                "{slot} after staging {}: {s:?}",
                new.revision
            );
        }
        // The rollout: canary, then each worker drained, stopped and started on `new`.
        start_ready(&b, Slot::Surge, &new.revision).await?;
        for slot in workers {
            retire(&b, slot).await?;
            let s = start_ready(&b, slot, &new.revision).await?;
            ensure!(
                s.as_ref().is_some_and(|s| s.revision == new.revision),
                "{slot} replaced as {s:?}"
            );
        }
        let reloads = b.rpc().reloads() - before;
        ensure!(
            reloads == 1,
            "{reloads} reloadConfig calls for a rollout of {} workers",
            workers.len()
        );
        retire(&b, Slot::Surge).await?;
        anyhow::Ok(())
    }
    .await;
    let _ = b.rpc().shutdown().await;
    result
}

/// Run `request` and check that it made `expected` XML-RPC round trips.
async fn round_trips(
    b: &SupervisordBackend,
    what: &str,
    expected: u64,
    request: impl std::future::Future<Output = kres_operator::backend::BackendResult<()>>,
) -> anyhow::Result<()> {
    let before = b.rpc().calls();
    request.await?;
    let made = b.rpc().calls() - before;
    anyhow::ensure!(
        made == expected,
        "{what} made {made} round trips, expected {expected}"
    );
    Ok(())
}

/// One reconcile step reads supervisord once: `ensure` reads the snapshot the following
/// `observe` uses, and the request after `observe` (drain, stop, start) looks up what it needs
/// in that snapshot; the round trips are counted by the client.
#[tokio::test(flavor = "current_thread")]
async fn supervisord_step_reads_supervisord_once() -> anyhow::Result<()> {
    use anyhow::ensure;
    use kres_operator::backend::Backend;
    use kres_operator::reconcile::{Slot, SlotState};
    use kres_tests::backend::{GOOD, desired, start_ready};
    let (_dir, settings) = fresh("kres-step-")?;
    let b = SupervisordBackend::new(settings)?;
    let good = desired(GOOD, &serde_json::Value::Null);
    let slot = Slot::Worker(0);
    let result = async {
        b.ensure().await?;
        b.stage(&good).await?;
        start_ready(&b, slot, &good.revision).await?;
        // One step as the executor makes it: ensure, observe, then the planner's request.
        let step = |what: &'static str| {
            let b = &b;
            async move {
                let before = b.rpc().calls();
                b.ensure().await?;
                let o = b.observe().await?;
                let calls = b.rpc().calls() - before;
                ensure!(
                    calls == 1,
                    "{what}: ensure + observe made {calls} round trips"
                );
                anyhow::Ok(o.slot(slot).map(|s| s.state))
            }
        };
        ensure!(step("ready").await? == Some(SlotState::Ready));
        round_trips(&b, "drain", 0, b.drain(slot)).await?;
        ensure!(step("drained").await? == Some(SlotState::Drained));
        // stopProcess (waits for the exit) and removeProcessGroup.
        round_trips(&b, "stop", 2, b.stop(slot)).await?;
        ensure!(step("stopped").await?.is_none(), "slot still there");
        // addProcessGroup of the staged program.
        round_trips(&b, "start", 1, b.start(slot, &good.revision)).await?;
        let s = kres_tests::backend::wait_for(
            &b,
            slot,
            "ready",
            &[SlotState::Pending, SlotState::Starting],
            |s| s.is_some_and(|s| s.state == SlotState::Ready),
        )
        .await?;
        ensure!(
            s.is_some_and(|s| s.revision == good.revision),
            "the restarted worker runs {:?}",
            good.revision
        );
        anyhow::Ok(())
    }
    .await;
    let _ = b.rpc().shutdown().await;
    result
}

/// supervisord dies after a revision was staged: the operator's new supervisord starts every
/// worker again on the revision it ran (its record), not on the staged one.
#[tokio::test(flavor = "current_thread")]
async fn supervisord_restart_after_staging_runs_the_recorded_revisions() -> anyhow::Result<()> {
    use anyhow::ensure;
    use kres_operator::backend::Backend;
    use kres_operator::reconcile::{Slot, SlotState};
    use kres_tests::backend::{GOOD, desired, start_ready, wait_for};
    let (_dir, settings) = fresh("kres-restage-")?;
    let template = serde_json::Value::Null;
    let old = desired(GOOD, &template);
    let new = desired(&format!("{GOOD}-- new\n"), &template);
    let b = SupervisordBackend::new(settings)?;
    let result = async {
        b.ensure().await?;
        b.stage(&old).await?;
        start_ready(&b, Slot::Worker(0), &old.revision).await?;
        b.stage(&new).await?;
        let pid = b.rpc().pid().await?;
        // SAFETY: kill(2) on the supervisord this test started.
        ensure!(
            unsafe { libc::kill(pid as i32, libc::SIGKILL) } == 0,
            "kill {pid}"
        );
        let t = std::time::Instant::now();
        while b.rpc().pid().await.is_ok() {
            ensure!(
                t.elapsed().as_secs() < 10,
                "supervisord {pid} still answers"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        ensure!(b.ensure().await?, "a new supervisord is started");
        let s = wait_for(
            &b,
            Slot::Worker(0),
            "ready again",
            &[SlotState::Pending, SlotState::Starting],
            |s| s.is_some_and(|s| s.state == SlotState::Ready),
        )
        .await?;
        ensure!(
            s.as_ref().is_some_and(|s| s.revision == old.revision),
            "after the restart (staged {}): {s:?}",
            new.revision
        );
        let cmdline = std::fs::read(format!(
            "/proc/{}/cmdline",
            s.and_then(|s| s.worker).and_then(|w| w.pid).unwrap_or(0)
        ))?;
        let config = b.layout().revision_config(&old.revision);
        ensure!(
            cmdline
                .split(|c| *c == 0)
                .any(|a| a == config.as_os_str().as_encoded_bytes()),
            "the restarted worker runs {:?}",
            String::from_utf8_lossy(&cmdline)
        );
        anyhow::Ok(())
    }
    .await;
    let _ = b.rpc().shutdown().await;
    result
}
