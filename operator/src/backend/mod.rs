//! Backends run workers. The trait is about workers, not about supervisord or Pods: observe
//! slots, stage a revision's config, start/replace/stop a slot, wait for something to change,
//! read a worker's log tail. Host mode implements it with supervisord ([`supervisord`]); the Pod
//! backend (one Pod per slot, one ConfigMap per revision) implements the same trait.
//!
//! Methods return `Send` futures so a generic executor can run on any tokio runtime.

pub mod pods;
pub mod supervisord;

use std::future::Future;
use std::time::Duration;

use crate::reconcile::{GcSpec, Observed, Revision, Slot, SlotState};

/// A backend failure, with enough context to log and report.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The process manager (supervisord, the API server) cannot be reached.
    #[error("backend unavailable: {0}")]
    Unavailable(String),
    /// A file or socket operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The process manager refused or failed an operation.
    #[error("{0}")]
    Operation(String),
    /// A value cannot be written into supervisord's configuration as it is (refused, never
    /// written).
    #[error(transparent)]
    Unwritable(#[from] supervisord::conf::UnwritableValue),
}

impl BackendError {
    /// An I/O error with context.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> BackendError {
        BackendError::Io {
            context: context.into(),
            source,
        }
    }
}

/// Result alias for backend operations.
pub type BackendResult<T> = Result<T, BackendError>;

/// Runs kresd workers in slots.
pub trait Backend: Send + Sync {
    /// Make sure the process manager runs; start it when none does, adopt it when one does.
    /// Returns `true` when it had to be (re)started.
    fn ensure(&self) -> impl Future<Output = BackendResult<bool>> + Send;

    /// What runs now: every slot with its revision and state (READY and probe already evaluated).
    fn observe(&self) -> impl Future<Output = BackendResult<Observed>> + Send;

    /// Make `config` available as `revision` (written once; revisions are immutable).
    fn stage(
        &self,
        revision: &Revision,
        config: &str,
    ) -> impl Future<Output = BackendResult<()>> + Send;

    /// Start a worker on `revision` in an empty, stopped or exited slot.
    fn start_slot(
        &self,
        slot: Slot,
        revision: &Revision,
    ) -> impl Future<Output = BackendResult<()>> + Send;

    /// Stop the slot's worker (which is ready or exited), then start one on `revision`. With a
    /// drain bound configured, a running worker is drained first (stream listeners closed, open
    /// connections given up to the bound to finish), so the call may take that long.
    fn replace_slot(
        &self,
        slot: Slot,
        revision: &Revision,
    ) -> impl Future<Output = BackendResult<()>> + Send;

    /// Stop the slot's worker (drained first as in [`Backend::replace_slot`]) and remove the slot.
    fn stop_slot(&self, slot: Slot) -> impl Future<Output = BackendResult<()>> + Send;

    /// Serve on these endpoints (see [`crate::reconcile::Desired::listen`]). Fails with
    /// [`BackendError::Operation`] when they cannot be had (e.g. an address not on the host);
    /// the previous endpoints then stay.
    fn set_endpoints(&self, endpoints: &[String])
    -> impl Future<Output = BackendResult<()>> + Send;

    /// Run the cache garbage collector with `spec`, or stop it (`None`).
    fn set_gc(&self, spec: Option<&GcSpec>) -> impl Future<Output = BackendResult<()>> + Send;

    /// Wait until something may have changed (a readiness notification) or `timeout` passed.
    fn wait_change(&self, timeout: Duration) -> impl Future<Output = ()> + Send;

    /// Wait until `slot` is no longer starting (ready, exited, failed, stopped or absent) or
    /// `timeout` passed; returns its state then (`Starting` on timeout, `Stopped` if absent).
    /// Readiness itself (READY=1 + probe) is evaluated by [`Backend::observe`].
    fn wait_ready(
        &self,
        slot: Slot,
        timeout: Duration,
    ) -> impl Future<Output = BackendResult<SlotState>> + Send {
        async move {
            let deadline = std::time::Instant::now() + timeout;
            loop {
                let state = self.observe().await?.slot(slot).map(|s| s.state);
                match state {
                    Some(SlotState::Starting) if std::time::Instant::now() < deadline => {
                        self.wait_change(Duration::from_millis(20)).await;
                    }
                    Some(s) => return Ok(s),
                    None => return Ok(SlotState::Stopped),
                }
            }
        }
    }

    /// The last lines a slot's worker wrote to its log (stderr).
    fn log_tail(
        &self,
        slot: Slot,
        max_bytes: usize,
    ) -> impl Future<Output = BackendResult<String>> + Send;

    /// Stop every worker and the process manager.
    fn shutdown(&self) -> impl Future<Output = BackendResult<()>> + Send;
}
