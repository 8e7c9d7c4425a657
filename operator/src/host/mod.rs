//! Host mode: a thin driver that calls [`reconcile_once`] on every change or wake-up, fed by a
//! desired-config channel, over the supervisord backend.
//!
//! After an applied action the driver goes again at once, a `Wait` sleeps until a readiness
//! notification (or 20 ms), `Done` until the desired config changes (or 1 s, to notice killed
//! workers and a dead supervisord).

pub mod desired;
pub mod run;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::backend::Backend;
pub use crate::reconcile::Status;
use crate::reconcile::{Context, Durable, Next, StatusSink, Target, reconcile_once};
use crate::source::{Accepted, Origin};

/// How often a converged fleet is re-observed.
pub const IDLE_POLL: Duration = Duration::from_secs(1);

/// Host mode's status sink: a watch channel (for the API) and `RUNDIR/status.json`; the durable
/// state (revision history) on a second channel.
pub struct HostStatus {
    /// Status snapshots.
    pub status: watch::Sender<Status>,
    /// Where the status is also written, as JSON.
    pub file: Option<PathBuf>,
    /// The durable state as last saved.
    pub durable: Option<watch::Sender<Arc<Durable>>>,
}

impl StatusSink for HostStatus {
    fn publish(&self, status: &Status) {
        self.status.send_replace(status.clone());
        if let Some(path) = &self.file
            && let Ok(json) = serde_json::to_vec_pretty(status)
        {
            let tmp = path.with_extension("tmp");
            if let Err(e) = std::fs::write(&tmp, json).and_then(|()| std::fs::rename(&tmp, path)) {
                tracing::debug!(error = %e, "status file not written");
            }
        }
    }

    fn durable(&self, durable: &Durable) {
        if let Some(tx) = &self.durable {
            tx.send_replace(Arc::new(durable.clone()));
        }
    }
}

/// The executor's target for an accepted config.
pub fn target_of(a: &Accepted) -> Target {
    Target {
        seq: a.seq,
        desired: a.desired.clone(),
        text: a.text.clone(),
        revert_on_reject: matches!(a.origin, Origin::Api | Origin::Rollback),
    }
}

/// Call [`reconcile_once`] until `shutdown` becomes true: at once after an action, on a backend
/// change or after the wait it asks for, and whenever the desired config changes. Workers are
/// left running.
pub async fn drive<B: Backend>(
    ctx: &Context<B>,
    mut desired: watch::Receiver<Option<Arc<Accepted>>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut target: Option<(Arc<Accepted>, Target)> = None;
    loop {
        if *shutdown.borrow() {
            return;
        }
        let current = desired.borrow_and_update().clone();
        let next = match current {
            Some(a) => {
                if !target.as_ref().is_some_and(|(t, _)| Arc::ptr_eq(t, &a)) {
                    target = Some((a.clone(), target_of(&a)));
                }
                let t = target.as_ref().map(|(_, t)| t);
                match t {
                    Some(t) => reconcile_once(t, ctx).await.unwrap_or_else(|e| e.retry()),
                    None => Next::Idle,
                }
            }
            None => {
                // No valid config yet: keep the backend up, nothing else.
                if let Err(e) = ctx.backend.ensure().await {
                    ctx.backend_error(&e).await;
                }
                Next::Idle
            }
        };
        let wait = match next {
            Next::Now => continue,
            Next::After(d) => d,
            Next::Idle => IDLE_POLL,
        };
        tokio::select! {
            _ = desired.changed() => {}
            _ = shutdown.changed() => {}
            _ = ctx.backend.wait_change(wait) => {}
        }
    }
}

/// Stop every worker and the process manager (clean shutdown).
pub async fn stop<B: Backend>(ctx: &Context<B>) -> Result<(), crate::backend::BackendError> {
    ctx.record("shutdown", "stopping workers").await;
    ctx.backend.shutdown().await
}
