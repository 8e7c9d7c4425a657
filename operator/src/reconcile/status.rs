//! The status snapshot: what `/status` serves, what `RUNDIR/status.json` shows, and what a
//! [`StatusSink`] publishes after every reconcile step.

use serde::Serialize;

use super::{Durable, Event, Failure, ObservedSlot, Phase, Rollout};

/// Where the executor publishes its status (host: a watch channel and `status.json`; pods: the
/// resource's `.status`).
pub trait StatusSink: Send + Sync {
    /// The status changed.
    fn publish(&self, status: &Status);

    /// The durable rollout state was saved (revision history for the API).
    fn durable(&self, _durable: &Durable) {}
}

/// A snapshot of the reconciler's state.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Status {
    /// PID of the operator process that wrote this status.
    pub operator_pid: u32,
    /// Revision of the current desired config (None until a valid config was read).
    pub desired_revision: Option<String>,
    /// Sequence number of the change the reconciler last worked on (see
    /// [`crate::reconcile::ChangeSeq`]): `converged`, `failed-revisions` and the workers describe
    /// the outcome of this change.
    pub change_seq: u64,
    /// Revision every regular slot last ran ready on.
    pub current_revision: Option<String>,
    /// Revision the fleet is moving to (the desired one, or the last good one after a failure).
    pub target_revision: Option<String>,
    /// Rollout phase.
    pub phase: Phase,
    /// Whether the fleet runs the target on every slot, ready, with nothing left to do.
    pub converged: bool,
    /// Desired number of regular workers.
    pub workers_desired: u16,
    /// Every worker slot.
    pub workers: Vec<ObservedSlot>,
    /// Last rollout events, oldest first.
    pub events: Vec<Event>,
    /// The most recent failure.
    pub last_failure: Option<Failure>,
    /// Revisions rejected and not retried until the desired config changes.
    pub failed_revisions: Vec<String>,
    /// Each rejected revision with why and when.
    pub failures: Vec<Failure>,
    /// What the operator waits for, if anything.
    pub waiting_for: Option<String>,
    /// The last backend error, if the last step failed.
    pub backend_error: Option<String>,
}

impl Status {
    /// Fill in the rollout part.
    pub fn set_rollout(&mut self, rollout: &Rollout) {
        self.current_revision = rollout.durable.last_good.clone();
        self.phase = rollout.phase.clone();
        self.events = rollout.events.iter().cloned().collect();
        self.last_failure = rollout.last_failure.clone();
        self.failed_revisions = rollout.durable.failed.keys().cloned().collect();
        self.failures = rollout.durable.failed.values().cloned().collect();
        self.target_revision = match &self.desired_revision {
            Some(d) if rollout.durable.failed.contains_key(d) => rollout.durable.last_good.clone(),
            d => d.clone(),
        };
    }
}
