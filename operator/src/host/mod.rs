//! Host mode: the reconcile loop over a [`Backend`], fed by a desired-config channel.
//!
//! ```text
//! loop { backend.ensure(); observed = backend.observe();
//!        action = plan(&desired, &observed, &rollout); apply(action); publish status }
//! ```
//! One action per step; after an action the loop goes again at once, a `Wait` sleeps until a
//! readiness notification (or 20 ms), `Done` until the desired config changes (or 1 s, to notice
//! killed workers and a dead supervisord).

pub mod desired;
pub mod run;
pub mod status;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tracing::Instrument;

use crate::backend::{Backend, BackendError};
use crate::reconcile::{Action, Durable, Failure, RevisionStore, Rollout, plan_with_phase};
use crate::source::Accepted;
use crate::time::unix_ms;
pub use status::Status;

/// How often a converged fleet is re-observed.
pub const IDLE_POLL: Duration = Duration::from_secs(1);
/// How long a `Wait` sleeps at most before observing again.
pub const WAIT_POLL: Duration = Duration::from_millis(20);

/// The reconcile loop's state.
pub struct Reconciler<B: Backend> {
    backend: B,
    rollout: Rollout,
    store: Box<dyn RevisionStore>,
    status: watch::Sender<Status>,
    status_file: Option<PathBuf>,
    /// Called when the fleet rejected the desired change, with the last good revision's config.
    on_rejected: Option<RejectedHook>,
    /// The durable state as last saved (revision history for the API).
    durable: Option<watch::Sender<Arc<Durable>>>,
}

/// What the reconciler calls when the fleet rejected the desired change (`change`) and a last
/// good config (`good`, its text) exists: host mode puts `good` back as the desired config when
/// the change came from the API.
pub type RejectedHook = Box<dyn Fn(&Accepted, &str) + Send>;

enum Next {
    Now,
    Soon,
    Idle,
}

impl<B: Backend> Reconciler<B> {
    /// A reconciler publishing its status to `status` (and, if given, to a JSON file), resuming
    /// the rollout state kept in `store` (last good and failed revisions, history).
    pub fn new(
        backend: B,
        store: Box<dyn RevisionStore>,
        status: watch::Sender<Status>,
        status_file: Option<PathBuf>,
    ) -> Result<Self, crate::reconcile::StoreError> {
        let rollout = Rollout::resume(store.load()?);
        let reconciler = Reconciler {
            backend,
            rollout,
            store,
            status,
            status_file,
            on_rejected: None,
            durable: None,
        };
        let rollout = reconciler.rollout.clone();
        reconciler.publish(|s| {
            s.operator_pid = std::process::id();
            s.set_rollout(&rollout);
        });
        Ok(reconciler)
    }

    /// Publish the durable state (last good, failed revisions, history) to `tx`, now and after
    /// every save.
    pub fn publish_durable(&mut self, tx: watch::Sender<Arc<Durable>>) {
        tx.send_replace(Arc::new(self.rollout.durable.clone()));
        self.durable = Some(tx);
    }

    /// Call `hook` whenever the fleet rejects the desired change (see [`RejectedHook`]).
    pub fn on_rejected(&mut self, hook: RejectedHook) {
        self.on_rejected = Some(hook);
    }

    /// The desired change was rejected: hand the last good config to the hook.
    fn rejected(&self, change: &Accepted) {
        let durable = &self.rollout.durable;
        let good = durable.last_good.as_ref().and_then(|g| durable.record(g));
        if let (Some(hook), Some(good)) = (&self.on_rejected, good)
            && good.revision != change.desired.revision
        {
            hook(change, &good.config);
        }
    }

    /// Save the durable rollout state when it changed. A failed save is logged and tried again
    /// at the next step; the fleet is not held up by it.
    fn save(&mut self) {
        if !self.rollout.is_dirty() {
            return;
        }
        match self.store.save(&self.rollout.durable) {
            Ok(()) => {
                self.rollout.saved();
                if let Some(tx) = &self.durable {
                    tx.send_replace(Arc::new(self.rollout.durable.clone()));
                }
            }
            Err(e) => tracing::warn!(error = %e, "rollout state not saved"),
        }
    }

    /// The backend.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// Run until `shutdown` becomes true. Workers are left running; see [`Reconciler::stop`].
    pub async fn run(
        &mut self,
        mut desired: watch::Receiver<Option<Arc<Accepted>>>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        loop {
            if *shutdown.borrow() {
                return;
            }
            let current = desired.borrow_and_update().clone();
            let next = match current {
                Some(a) => {
                    let span = tracing::info_span!("reconcile", seq = a.seq, revision = %a.desired.revision);
                    self.step(&a).instrument(span).await
                }
                None => {
                    // No valid config yet: keep the backend up, nothing else.
                    if let Err(e) = self.backend.ensure().await {
                        self.backend_error(&e);
                    }
                    Next::Idle
                }
            };
            let wait = match next {
                Next::Now => continue,
                Next::Soon => WAIT_POLL,
                Next::Idle => IDLE_POLL,
            };
            tokio::select! {
                _ = desired.changed() => {}
                _ = shutdown.changed() => {}
                _ = self.backend.wait_change(wait) => {}
            }
        }
    }

    fn backend_error(&mut self, e: &BackendError) {
        tracing::warn!(error = %e, "backend step failed");
        let msg = e.to_string();
        self.publish(|s| s.backend_error = Some(msg));
    }

    fn publish(&self, edit: impl FnOnce(&mut Status)) {
        let changed = self.status.send_if_modified(|s| {
            let before = s.clone();
            edit(s);
            *s != before
        });
        if changed && let Some(path) = &self.status_file {
            let snapshot = self.status.borrow().clone();
            if let Ok(json) = serde_json::to_vec_pretty(&snapshot) {
                let tmp = path.with_extension("tmp");
                if let Err(e) =
                    std::fs::write(&tmp, json).and_then(|()| std::fs::rename(&tmp, path))
                {
                    tracing::debug!(error = %e, "status file not written");
                }
            }
        }
    }

    /// One observe-plan-apply step.
    async fn step(&mut self, change: &Accepted) -> Next {
        let next = match self.try_step(change).await {
            Ok(next) => next,
            Err(e) => {
                self.backend_error(&e);
                self.rollout.record(unix_ms(), "error", e.to_string());
                Next::Idle
            }
        };
        self.save();
        next
    }

    async fn try_step(&mut self, change: &Accepted) -> Result<Next, BackendError> {
        tracing::debug!("step");
        let d = &change.desired;
        if self.backend.ensure().await? {
            self.rollout
                .record(unix_ms(), "backend", "process manager started");
        }
        self.rollout
            .note_config(&d.revision, &change.text, &d.listen, unix_ms());
        // The endpoints of the target: the desired ones, or after a rejection the last good
        // revision's (from the history).
        let endpoints = if !self.rollout.durable.failed.contains_key(&d.revision) {
            Some(d.listen.clone())
        } else {
            let durable = &self.rollout.durable;
            durable
                .last_good
                .as_ref()
                .and_then(|g| durable.record(g))
                .map(|r| r.endpoints.clone())
        };
        if let Some(endpoints) = endpoints
            && let Err(e) = self.backend.set_endpoints(&endpoints).await
        {
            match e {
                BackendError::Operation(reason) if endpoints == d.listen => {
                    // The new endpoints cannot be had: a rejected change, like a failed gate.
                    tracing::warn!(revision = %d.revision, %reason, "revision rejected");
                    self.rollout.note_desired(&d.revision, unix_ms());
                    self.rollout.mark_failed(Failure {
                        revision: d.revision.clone(),
                        slot: None,
                        reason,
                        at_unix_ms: unix_ms(),
                    });
                    self.rejected(change);
                }
                e => return Err(e),
            }
        }
        self.backend.stage(&d.revision, &d.config).await?;
        let t = std::time::Instant::now();
        let observed = self.backend.observe().await?;
        tracing::debug!(took_us = t.elapsed().as_micros() as u64, "observed");
        self.rollout.note_desired(&d.revision, unix_ms());
        if self.rollout.durable.last_good.is_none()
            && let Some(g) = self.rollout.effective_last_good(&d.revision, &observed)
            && g != d.revision
        {
            // Adopted mid-rollout without a stored state: remember what was serving before.
            self.rollout.adopt_last_good(g);
        }
        let (phase, action) = plan_with_phase(d, &observed, &self.rollout);
        if phase != self.rollout.phase {
            tracing::info!(?phase, "rollout phase");
        }
        self.rollout.phase = phase;
        let waiting = match &action {
            Action::Wait { reason } => Some(reason.clone()),
            _ => None,
        };
        let converged = action == Action::Done;
        let rollout = self.rollout.clone();
        self.publish(|s| {
            s.desired_revision = Some(d.revision.clone());
            s.change_seq = change.seq;
            s.workers_desired = d.workers;
            s.workers = observed.slots.clone();
            s.workers.sort_by_key(|w| w.slot);
            s.waiting_for = waiting;
            s.converged = converged;
            s.backend_error = None;
            s.set_rollout(&rollout);
        });
        let t = std::time::Instant::now();
        let next = self.apply(action, change).await;
        tracing::debug!(took_us = t.elapsed().as_micros() as u64, "applied");
        next
    }

    async fn apply(&mut self, action: Action, change: &Accepted) -> Result<Next, BackendError> {
        let now = unix_ms();
        match action {
            Action::StartSlot { slot, revision } => {
                tracing::info!(%slot, %revision, "start");
                self.rollout
                    .record(now, "start", format!("{slot}: start on {revision}"));
                self.backend.start_slot(slot, &revision).await?;
                Ok(Next::Now)
            }
            Action::ReplaceSlot { slot, revision } => {
                tracing::info!(%slot, %revision, "replace");
                self.rollout
                    .record(now, "replace", format!("{slot}: replace with {revision}"));
                self.backend.replace_slot(slot, &revision).await?;
                Ok(Next::Now)
            }
            Action::StopSlot { slot } => {
                tracing::info!(%slot, "stop");
                self.rollout.record(now, "stop", format!("{slot}: stop"));
                self.backend.stop_slot(slot).await?;
                Ok(Next::Now)
            }
            Action::MarkFailed {
                revision,
                slot,
                reason,
            } => {
                let tail = self.backend.log_tail(slot, 4096).await.unwrap_or_default();
                // kresd's own error lines, without Lua stack-traceback noise.
                let lines: Vec<&str> = tail
                    .lines()
                    .map(str::trim)
                    .filter(|l| {
                        !l.is_empty()
                            && !l.starts_with("stack traceback")
                            && !l.starts_with("[C]:")
                            && !l.contains(": in ")
                    })
                    .collect();
                let last = lines[lines.len().saturating_sub(3)..].join(" | ");
                let reason = if last.is_empty() {
                    reason
                } else {
                    format!("{reason}; worker log: {last}")
                };
                tracing::warn!(%revision, %slot, %reason, "revision rejected");
                let desired = revision == change.desired.revision;
                self.rollout.mark_failed(Failure {
                    revision,
                    slot: Some(slot),
                    reason,
                    at_unix_ms: now,
                });
                if desired {
                    self.rejected(change);
                }
                Ok(Next::Now)
            }
            Action::MarkGood { revision } => {
                tracing::info!(%revision, "converged");
                self.rollout.mark_good(&revision, now);
                Ok(Next::Now)
            }
            Action::StartGc { spec } => {
                self.rollout.record(now, "gc", "cache-gc (re)started");
                self.backend.set_gc(Some(&spec)).await?;
                Ok(Next::Now)
            }
            Action::StopGc => {
                self.rollout.record(now, "gc", "cache-gc stopped");
                self.backend.set_gc(None).await?;
                Ok(Next::Now)
            }
            Action::Wait { .. } => Ok(Next::Soon),
            Action::Done => Ok(Next::Idle),
        }
    }

    /// Stop every worker and the process manager (clean shutdown).
    pub async fn stop(&mut self) -> Result<(), BackendError> {
        self.rollout
            .record(unix_ms(), "shutdown", "stopping workers");
        self.backend.shutdown().await
    }
}
