//! The backend conformance suite: what every `kres_operator::backend::Backend` must do, run
//! against a real backend (supervisord now; the Pod backend later).

use std::time::Duration;

use anyhow::{Result, ensure};
use kres_operator::backend::Backend;
use kres_operator::reconcile::{Slot, SlotState};

/// A config every kresd accepts.
pub const GOOD: &str = "modules.load('hints > iterate')\n";
/// A config kresd rejects at start, with a recognisable error.
pub const BAD: &str = "error('conformance-boom')\n";

/// Run the suite. The backend must be fresh (nothing running).
pub async fn conformance<B: Backend>(b: &B) -> Result<()> {
    let t = Duration::from_secs(10);
    b.ensure().await?;
    ensure!(
        !b.ensure().await?,
        "a second ensure must adopt, not start again"
    );
    ensure!(
        b.observe().await?.slots.is_empty(),
        "fresh backend has no slots"
    );

    b.stage(&"good".into(), GOOD).await?;
    b.stage(&"bad".into(), BAD).await?;

    // Start and readiness.
    b.start_slot(Slot::Worker(0), &"good".into()).await?;
    ensure!(
        b.wait_ready(Slot::Worker(0), t).await? == SlotState::Ready,
        "worker 0 not ready"
    );
    let o = b.observe().await?;
    let w0 = o.slot(Slot::Worker(0)).cloned();
    ensure!(
        w0.as_ref()
            .is_some_and(|w| w.revision == "good" && w.pid.is_some()),
        "worker 0 observed as {w0:?}"
    );

    // A rejected config: the worker exits, its log tells why.
    b.start_slot(Slot::Surge, &"bad".into()).await?;
    let st = b.wait_ready(Slot::Surge, t).await?;
    ensure!(
        matches!(st, SlotState::Exited | SlotState::Failed),
        "bad canary is {st:?}"
    );
    let tail = b.log_tail(Slot::Surge, 4096).await?;
    ensure!(
        tail.contains("conformance-boom"),
        "log tail without the error: {tail}"
    );

    // Replace: a new process on the (same) revision, the slot's identity kept.
    b.replace_slot(Slot::Worker(0), &"good".into()).await?;
    ensure!(
        b.wait_ready(Slot::Worker(0), t).await? == SlotState::Ready,
        "replacement not ready"
    );
    let new = b.observe().await?.slot(Slot::Worker(0)).and_then(|w| w.pid);
    ensure!(
        new.is_some() && new != w0.and_then(|w| w.pid),
        "replace kept the old process"
    );

    // Stop removes slots.
    b.stop_slot(Slot::Surge).await?;
    b.stop_slot(Slot::Worker(0)).await?;
    ensure!(b.observe().await?.slots.is_empty(), "slots left after stop");
    b.shutdown().await?;
    Ok(())
}
