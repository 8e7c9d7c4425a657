//! Backends run workers. The trait is about workers, not about supervisord or Pods: stage a
//! revision, observe slots, request a start, drain or stop of a slot's worker, wait for something
//! to change, read a worker's log tail. Requests return when they are *requested*, not when they
//! are done: the planner observes them to completion (`Pending`/`Starting` → `Ready`,
//! `Draining` → `Drained`, `Stopping` → gone). Host mode implements it with supervisord
//! ([`supervisord`]); the Pod backend (one Pod per slot, one ConfigMap per revision) implements
//! the same trait. `kres_tests::backend::conformance` checks an implementation.
//!
//! Methods return `Send` futures so a generic executor can run on any tokio runtime.

pub mod pods;
pub mod supervisord;

use std::collections::BTreeSet;
use std::future::Future;
use std::time::Duration;

use crate::reconcile::{Desired, GcSpec, Observed, Revision, Slot};

/// A backend failure, typed by what the caller should do about it.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// This desired state cannot be had (e.g. a listen address not on the host): a config
    /// failure, the revision is marked failed. `pointer` is the config field, when known.
    #[error("{}{reason}", pointer.as_deref().map(|p| format!("{p}: ")).unwrap_or_default())]
    Rejected {
        /// JSON pointer of the config field at fault.
        pointer: Option<String>,
        /// Why, in the backend's words.
        reason: String,
    },
    /// Someone else changed the object meanwhile: observe again and retry now.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The backend (supervisord, the API server) is unavailable or failed an operation that
    /// may succeed later: retry with back-off.
    #[error("{0}")]
    Transient(String),
    /// A file or socket operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
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
    /// Make sure what the workers need runs (host: supervisord, started when none answers,
    /// adopted when one does; pods: the Service and PodDisruptionBudget). Returns `true` when it
    /// had to be (re)started.
    fn ensure(&self) -> impl Future<Output = BackendResult<bool>> + Send;

    /// What runs now: every slot with its revision and state (readiness already evaluated),
    /// the endpoints served and the cache GC.
    fn observe(&self) -> impl Future<Output = BackendResult<Observed>> + Send;

    /// Make `desired` (its config and worker template) available as `desired.revision`. Called
    /// once per revision before any worker starts on it; staging again is a no-op.
    fn stage(&self, desired: &Desired) -> impl Future<Output = BackendResult<()>> + Send;

    /// Request a worker on a staged `revision` in an empty slot (absent, stopped or exited).
    fn start(
        &self,
        slot: Slot,
        revision: &Revision,
    ) -> impl Future<Output = BackendResult<()>> + Send;

    /// Request that the slot's (ready) worker takes no new work and finishes what it holds; it
    /// is observed `Draining`, then `Drained` (at once when no drain bound is configured).
    fn drain(&self, slot: Slot) -> impl Future<Output = BackendResult<()>> + Send;

    /// Request that the slot's worker stops and the slot goes away; observed `Stopping` until
    /// it is gone (absent).
    fn stop(&self, slot: Slot) -> impl Future<Output = BackendResult<()>> + Send;

    /// Serve on these endpoints (see [`crate::reconcile::Desired::listen`]). Fails with
    /// [`BackendError::Rejected`] when they cannot be had (e.g. an address not on the host);
    /// the previous endpoints then stay.
    fn set_endpoints(&self, endpoints: &[String])
    -> impl Future<Output = BackendResult<()>> + Send;

    /// Run the cache garbage collector with `spec`, or stop it (`None`).
    fn set_gc(&self, spec: Option<&GcSpec>) -> impl Future<Output = BackendResult<()>> + Send;

    /// Delete staged revisions that are not in `keep` (and that no worker runs).
    fn collect_revisions(
        &self,
        keep: &BTreeSet<Revision>,
    ) -> impl Future<Output = BackendResult<()>> + Send;

    /// Wait until something may have changed (a readiness notification, a watch event) or
    /// `timeout` passed.
    fn wait_change(&self, timeout: Duration) -> impl Future<Output = ()> + Send;

    /// The last lines a slot's worker wrote to its log (stderr).
    fn log_tail(
        &self,
        slot: Slot,
        max_bytes: usize,
    ) -> impl Future<Output = BackendResult<String>> + Send;

    /// Stop every worker (host: and the process manager).
    fn shutdown(&self) -> impl Future<Output = BackendResult<()>> + Send;
}
