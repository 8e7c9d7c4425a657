//! The status snapshot: what `/status` serves, what `RUNDIR/status.json` shows, and what a
//! [`StatusSink`] publishes after every reconcile step.

use serde::{Deserialize, Serialize};

use super::{ChangeSeq, Durable, Event, Failure, ObservedSlot, Phase, Rollout, SlotState};

/// Where the executor publishes its status (host: a watch channel and `status.json`; pods: the
/// resource's `.status`).
pub trait StatusSink: Send + Sync {
    /// The status changed.
    fn publish(&self, status: &Status);

    /// The durable rollout state was saved (revision history for the API).
    fn durable(&self, _durable: &Durable) {}
}

/// The kind of a [`Condition`] (the ClusterOperator set).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum ConditionType {
    /// The fleet serves: at least the desired number of workers is ready.
    Available,
    /// The fleet is moving to a new state (a rollout, a rollback, a scale or a start).
    Progressing,
    /// Something is wrong that a normal rollout does not explain: the desired revision was
    /// rejected, the backend fails, or capacity is short outside a rollout.
    Degraded,
}

/// One condition, in the Kubernetes/OpenShift shape: `Degraded` is not raised during a normal
/// rollout; `observed-change-seq` says which change (host: change-seq; Kubernetes:
/// `metadata.generation`) it describes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub struct Condition {
    /// Which condition.
    #[serde(rename = "type")]
    pub kind: ConditionType,
    /// Whether it holds.
    pub status: bool,
    /// A CamelCase reason (`AsExpected`, `RollingOut`, `RevisionRejected`, ...).
    pub reason: String,
    /// What a human should know.
    pub message: String,
    /// The change this condition describes.
    pub observed_change_seq: ChangeSeq,
    /// Unix time (ms) the status last changed.
    pub last_transition_unix_ms: u64,
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
    /// Why the desired-config source refused its latest input (host: the config file after a
    /// SIGHUP or `--watch` re-read), while the fleet keeps the last valid config.
    pub config_error: Option<ConfigRejection>,
    /// `Available`, `Progressing`, `Degraded`, in that order.
    pub conditions: Vec<Condition>,
}

/// A desired config the source refused: nothing of it was applied.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct ConfigRejection {
    /// What was refused (the config file's path).
    pub source: String,
    /// Every problem found, by field.
    pub errors: Vec<RejectedField>,
}

/// One refused field of a [`ConfigRejection`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RejectedField {
    /// JSON pointer of the field (empty: the whole input, e.g. an unreadable file).
    pub pointer: String,
    /// The rule it breaks.
    pub message: String,
}

impl ConfigRejection {
    /// One line: `source: /pointer: rule; ...`.
    pub fn summary(&self) -> String {
        let fields: Vec<String> = self
            .errors
            .iter()
            .map(|e| match e.pointer.as_str() {
                "" => e.message.clone(),
                p => format!("{p}: {}", e.message),
            })
            .collect();
        format!("{}: {}", self.source, fields.join("; "))
    }
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

impl Status {
    /// Derive the conditions from the rest of the status; a condition whose status flipped
    /// gets `now_unix_ms` as its transition time, one that did not keeps its old one.
    pub fn set_conditions(&mut self, now_unix_ms: u64) {
        let n = usize::from(self.workers_desired);
        let ready = self
            .workers
            .iter()
            .filter(|w| w.state == SlotState::Ready)
            .count();
        let rejected = self
            .desired_revision
            .as_ref()
            .and_then(|d| self.failures.iter().find(|f| &f.revision == d));
        let progressing = !self.converged && rejected.is_none() && self.phase != Phase::Failed;
        let target = self.target_revision.as_deref().unwrap_or("-");
        let available = if ready >= n {
            (true, "AsExpected", format!("{ready} of {n} workers ready"))
        } else {
            (
                false,
                "InsufficientWorkers",
                format!("{ready} of {n} workers ready"),
            )
        };
        let progress = if progressing {
            let why = self.waiting_for.as_deref().unwrap_or("working");
            (
                true,
                "RollingOut",
                format!("moving to revision {target} ({:?}): {why}", self.phase),
            )
        } else if let Some(f) = rejected {
            (
                false,
                "RevisionRejected",
                format!("revision {} rejected; serving {target}", f.revision),
            )
        } else {
            (
                false,
                "AsExpected",
                format!("revision {target} serving on every slot"),
            )
        };
        let degraded = if let Some(c) = &self.config_error {
            (
                true,
                "InvalidConfig",
                format!(
                    "{}; serving the last valid configuration (revision {target})",
                    c.summary()
                ),
            )
        } else if let Some(f) = rejected {
            (
                true,
                "RevisionRejected",
                format!("revision {}: {}", f.revision, f.reason),
            )
        } else if let Some(e) = &self.backend_error {
            (true, "BackendError", e.clone())
        } else if !progressing && ready < n {
            (
                true,
                "InsufficientWorkers",
                format!("{ready} of {n} workers ready outside a rollout"),
            )
        } else {
            (false, "AsExpected", String::new())
        };
        let old = std::mem::take(&mut self.conditions);
        for (kind, (status, reason, message)) in [
            (ConditionType::Available, available),
            (ConditionType::Progressing, progress),
            (ConditionType::Degraded, degraded),
        ] {
            let since = old
                .iter()
                .find(|c| c.kind == kind && c.status == status)
                .map_or(now_unix_ms, |c| c.last_transition_unix_ms);
            self.conditions.push(Condition {
                kind,
                status,
                reason: reason.into(),
                message,
                observed_change_seq: self.change_seq,
                last_transition_unix_ms: since,
            });
        }
    }

    /// The condition of `kind`, once derived.
    pub fn condition(&self, kind: ConditionType) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.kind == kind)
    }
}
