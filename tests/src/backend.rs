//! The backend conformance suite: what every `kres_operator::backend::Backend` must do, run
//! against a real backend (supervisord now; the Pod backend unchanged later). Requests are
//! asynchronous: every outcome is observed (polling `observe` with `wait_change`), never
//! assumed from a request's return.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{Result, bail, ensure};
use kres_operator::backend::Backend;
use kres_operator::reconcile::{Desired, ObservedSlot, Slot, SlotState, revision_of};

/// A config every kresd accepts.
pub const GOOD: &str = "modules.load('hints > iterate')\n";
/// A config kresd rejects at start, with a recognisable error.
pub const BAD: &str = "error('conformance-boom')\n";

/// How long any one asynchronous step may take before the suite fails (only fails a hung
/// backend; the measured time is printed).
const STEP: Duration = Duration::from_secs(60);

/// A one-worker desired state of `config` with the backend's worker `template`.
pub fn desired(config: &str, template: &serde_json::Value) -> Desired {
    Desired {
        revision: revision_of(config, template),
        config: config.into(),
        workers: 1,
        gc: None,
        start_timeout: STEP,
        drain: Duration::ZERO,
        soak: Duration::ZERO,
        template: template.clone(),
        listen: vec![],
        paused: false,
    }
}

/// Observe until `slot` satisfies `done` (`None`: absent); every state seen on the way must be
/// in `via`. Returns the slot as last observed.
pub async fn wait_for<B: Backend>(
    b: &B,
    slot: Slot,
    what: &str,
    via: &[SlotState],
    done: impl Fn(Option<&ObservedSlot>) -> bool,
) -> Result<Option<ObservedSlot>> {
    let t = Instant::now();
    loop {
        let o = b.observe().await?;
        let s = o.slot(slot).cloned();
        if done(s.as_ref()) {
            return Ok(s);
        }
        if let Some(s) = &s
            && !via.contains(&s.state)
        {
            bail!(
                "{slot} while waiting for {what}: {:?} ({:?})",
                s.state,
                s.detail
            );
        }
        if t.elapsed() > STEP {
            bail!("{slot}: no {what} after {:?}: {s:?}", t.elapsed());
        }
        b.wait_change(Duration::from_millis(20)).await;
    }
}

/// Retire a ready worker as the planner does: drain, observed drained; stop, observed gone.
pub async fn retire<B: Backend>(b: &B, slot: Slot) -> Result<()> {
    use SlotState::*;
    b.drain(slot).await?;
    wait_for(b, slot, "drained", &[Ready, Draining], |s| {
        s.is_some_and(|s| s.state == Drained)
    })
    .await?;
    b.stop(slot).await?;
    wait_for(b, slot, "gone", &[Drained, Stopping], |s| s.is_none()).await?;
    Ok(())
}

/// Start a worker on `revision` and observe it through `Pending`/`Starting` to `Ready`.
pub async fn start_ready<B: Backend>(
    b: &B,
    slot: Slot,
    revision: &str,
) -> Result<Option<ObservedSlot>> {
    use SlotState::*;
    b.start(slot, &revision.to_owned()).await?;
    wait_for(b, slot, "ready", &[Pending, Starting], |s| {
        s.is_some_and(|s| s.state == Ready)
    })
    .await
}

/// Run the suite with the backend's worker template (host: `Null`). The backend must be fresh
/// (nothing running).
pub async fn conformance<B: Backend>(b: &B, template: serde_json::Value) -> Result<()> {
    use SlotState::*;
    b.ensure().await?;
    ensure!(
        !b.ensure().await?,
        "a second ensure must adopt, not start again"
    );
    ensure!(
        b.observe().await?.slots.is_empty(),
        "fresh backend has no slots"
    );
    let good = desired(GOOD, &template);
    let bad = desired(BAD, &template);

    // Staging: once per revision, visible, idempotent.
    b.stage(&good).await?;
    b.stage(&bad).await?;
    b.stage(&good).await?;
    let staged = b.observe().await?.staged;
    ensure!(
        staged.contains(&good.revision) && staged.contains(&bad.revision),
        "staged revisions observed as {staged:?}"
    );

    // Start: pending/starting, then ready, with a worker reference.
    let w0 = start_ready(b, Slot::Worker(0), &good.revision).await?;
    ensure!(
        w0.as_ref()
            .is_some_and(|w| w.revision == good.revision && w.worker.is_some()),
        "worker 0 observed as {w0:?}"
    );
    let first = w0.and_then(|w| w.worker);

    // A rejected config: the worker exits (never ready), its log tells why.
    b.start(Slot::Surge, &bad.revision).await?;
    let canary = wait_for(b, Slot::Surge, "exit", &[Pending, Starting], |s| {
        s.is_some_and(|s| matches!(s.state, Exited | Failed))
    })
    .await?;
    ensure!(canary.is_some(), "bad canary vanished");
    let tail = b.log_tail(Slot::Surge, 4096).await?;
    ensure!(
        tail.contains("conformance-boom"),
        "log tail without the error: {tail}"
    );

    // Staging another revision changes nothing that runs or ran: the ready worker and the
    // exited canary keep their revisions.
    let next = desired(&format!("{GOOD}-- next\n"), &template);
    b.stage(&next).await?;
    let o = b.observe().await?;
    let revision = |slot| o.slot(slot).map(|s| s.revision.clone());
    ensure!(
        revision(Slot::Worker(0)) == Some(good.revision.clone())
            && revision(Slot::Surge) == Some(bad.revision.clone()),
        "after staging {}: {:?}",
        next.revision,
        o.slots
    );

    // Replace as the planner does: drain, stop, start; each observed to completion.
    retire(b, Slot::Worker(0)).await?;
    let again = start_ready(b, Slot::Worker(0), &good.revision).await?;
    let second = again.and_then(|w| w.worker);
    ensure!(
        second.is_some() && second != first,
        "the replacement is the old worker: {first:?} / {second:?}"
    );

    // An exited worker is stopped without a drain.
    b.stop(Slot::Surge).await?;
    wait_for(b, Slot::Surge, "gone", &[Exited, Failed, Stopping], |s| {
        s.is_none()
    })
    .await?;

    // Revisions not kept (and not running) are collected.
    b.collect_revisions(&BTreeSet::new()).await?;
    let staged = b.observe().await?.staged;
    ensure!(
        staged.contains(&good.revision) && !staged.contains(&bad.revision),
        "after collecting: {staged:?} (the running revision stays, the other goes)"
    );

    retire(b, Slot::Worker(0)).await?;
    ensure!(b.observe().await?.slots.is_empty(), "slots left after stop");
    b.shutdown().await?;
    Ok(())
}
