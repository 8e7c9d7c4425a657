//! The seam between the HTTP API and the reconciler: [`ControlPlane`].
//!
//! The HTTP layer knows nothing about supervisord, pods or Lua. It edits the desired
//! configuration as a JSON document and hands the result to a `ControlPlane`, which validates it,
//! makes it the desired state, and reports when the fleet converged or why it did not.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::metrics::OperatorMetrics;

/// One validation error: where (RFC 6901 JSON pointer into the config document) and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldError {
    /// JSON pointer of the offending value (`""` = the whole document).
    pub pointer: String,
    /// What rule the value breaks.
    pub message: String,
}

/// A change that converged: the fleet runs the new desired config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// Strong ETag of the desired config now in force (see [`super::etag_of`]).
    pub etag: String,
    /// Revision the workers run (hash of the rendered worker config), when known.
    pub revision: Option<String>,
}

/// Why a change was not applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    /// The document does not validate; every error, each with its pointer.
    #[error("invalid configuration ({} errors)", .0.len())]
    Invalid(Vec<FieldError>),
    /// The config validated but the fleet refused it (canary failed, kresd error); the fleet was
    /// rolled back to the last good revision.
    #[error("change rejected: {}", .reasons.join("; "))]
    Rejected {
        /// Revision that failed, when one was rendered.
        revision: Option<String>,
        /// Every reason, e.g. kresd's own stderr line and the probe result.
        reasons: Vec<String>,
    },
    /// A newer desired config replaced this one before it converged.
    #[error("superseded by a newer change (etag {by})")]
    Superseded {
        /// ETag of the config that replaced it.
        by: String,
    },
    /// The desired config changed since `base_etag` was read (optimistic concurrency).
    #[error("the configuration changed meanwhile (now {current})")]
    BaseChanged {
        /// ETag of the config now desired.
        current: String,
    },
    /// The control plane cannot take changes now (shutting down, no source to write to...).
    #[error("control plane unavailable: {0}")]
    Unavailable(String),
}

/// What a change would do, without doing it (`?dry-run=true`, `kresctl config diff`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub struct Plan {
    /// Revision the fleet runs now.
    pub current_revision: Option<String>,
    /// Revision the change renders to.
    pub target_revision: Option<String>,
    /// Workers that would be restarted, each with why.
    pub restart: Vec<PlannedRestart>,
    /// Things applied without a restart (e.g. cache-gc settings).
    pub live: Vec<String>,
    /// Unified diff of the rendered worker Lua, current -> target (empty when equal).
    pub lua_diff: String,
}

/// Bound of one diff's search: past it the diff is still correct (every line it shows as kept is
/// in both texts) but may show more lines changed than the minimum.
pub const DIFF_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// Unified diff (3 lines of context, headers `current` / `target`) of two rendered configs, empty
/// when they are equal: [`Plan::lua_diff`] of every control plane, what `kresctl config diff`
/// prints. Myers' algorithm (the `similar` crate) with a [`DIFF_TIMEOUT`] deadline, so a 4 MiB
/// input costs O((n+m)·d) at worst bounded by the deadline, not the O(n·m) of an LCS table.
pub fn lua_diff(old: &str, new: &str) -> String {
    if old == new {
        return String::new();
    }
    similar::TextDiff::configure()
        .algorithm(similar::Algorithm::Myers)
        .timeout(DIFF_TIMEOUT)
        .diff_lines(old, new)
        .unified_diff()
        .context_radius(3)
        .header("current", "target")
        .to_string()
}

/// One worker a change would restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct PlannedRestart {
    /// Worker slot (`"0"`, `"1"`, ..., or `"canary"`).
    pub slot: String,
    /// Why it restarts (revision change, added slot...).
    pub reason: String,
}

/// Snapshot of the operator state for `GET /status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub struct StatusSnapshot {
    /// Sequence number of the change the reconciler last worked on; `converged` and the
    /// workers describe its outcome.
    #[serde(default)]
    pub change_seq: u64,
    /// Revision of the desired config.
    #[serde(default)]
    pub desired_revision: Option<String>,
    /// Whether the fleet runs the desired state (or, after a rejection, the last good one) on
    /// every slot, worker count and cache-gc included, with nothing left to do.
    #[serde(default)]
    pub converged: bool,
    /// Desired number of regular workers.
    #[serde(default)]
    pub workers_desired: u16,
    /// Revisions rejected and not retried until the desired config changes (kept across
    /// operator restarts where a revision store is kept).
    #[serde(default)]
    pub failed_revisions: Vec<String>,
    /// Revision every worker runs once converged (last good).
    pub current_revision: Option<String>,
    /// Revision being rolled out (equal to current when idle).
    pub target_revision: Option<String>,
    /// Rollout phase, e.g. `idle`, `canary`, `rolling`, `rollback`, `failed`.
    pub phase: String,
    /// Last rollout events, oldest first (at most 50).
    pub events: Vec<RolloutEvent>,
    /// Every worker the backend shows.
    pub workers: Vec<WorkerStatus>,
    /// The cache garbage collector.
    pub cache_gc: Option<CacheGcStatus>,
    /// The last failed rollout, with why.
    pub last_failure: Option<Failure>,
    /// `Available`, `Progressing`, `Degraded` (see [`crate::reconcile::Condition`]).
    #[serde(default)]
    pub conditions: Vec<crate::reconcile::Condition>,
}

/// One rollout event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct RolloutEvent {
    /// RFC 3339 UTC time.
    pub time: String,
    /// What happened.
    pub message: String,
}

/// One worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct WorkerStatus {
    /// Slot (`"0"`.. or `"canary"`).
    pub slot: String,
    /// Process id, when running.
    pub pid: Option<u32>,
    /// Revision it runs.
    pub revision: Option<String>,
    /// State: `starting`, `ready`, `stopping`, `stopped`, `failed`...
    pub state: String,
    /// RFC 3339 UTC time it became ready.
    pub ready_since: Option<String>,
}

/// The cache garbage collector's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct CacheGcStatus {
    /// `running`, `stopped`, `disabled`...
    pub state: String,
    /// Process id, when running.
    pub pid: Option<u32>,
}

/// A failed rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Failure {
    /// Revision that failed.
    pub revision: Option<String>,
    /// Why (kresd's stderr tail, probe result...).
    pub reason: String,
    /// RFC 3339 UTC time.
    pub time: String,
}

impl StatusSnapshot {
    /// True iff at least one worker is ready on the current revision (`GET /readyz`).
    pub fn ready(&self) -> bool {
        self.current_revision.is_some()
            && self
                .workers
                .iter()
                .any(|w| w.state == "ready" && w.revision == self.current_revision)
    }
}

/// One revision in the history (`GET /v1/history`, `kresctl history`), newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct HistoryEntry {
    /// The revision.
    pub revision: String,
    /// `pending`, `good`, `failed` or `superseded`.
    pub state: String,
    /// Whether it is the desired revision now.
    pub desired: bool,
    /// Whether it is the last good revision (what the fleet serves when converged).
    pub last_good: bool,
    /// RFC 3339 UTC time it was first desired.
    pub desired_at: String,
    /// RFC 3339 UTC time of its last state change.
    pub changed_at: String,
    /// Top-level config sections that differ from the revision before it in the history
    /// (empty for the oldest one).
    pub changed: Vec<String>,
    /// Why it failed.
    pub reason: Option<String>,
}

/// A worker's kresd control socket (for metrics and cache clearing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerSocket {
    /// Worker label (its slot).
    pub worker: String,
    /// Path of the control socket.
    pub path: PathBuf,
}

/// What the HTTP API drives. Implemented by the host loop's handle (and by fakes in tests).
#[async_trait]
pub trait ControlPlane: Send + Sync + 'static {
    /// The desired configuration as canonical JSON (every default filled in).
    fn config(&self) -> Value;

    /// Validate `new`, make it the desired config if the desired config's ETag is still
    /// `base_etag` (else [`ApplyError::BaseChanged`]), persist it, and resolve once the fleet
    /// converged on it, rejected it, or a newer change superseded it. A `new` equal to the
    /// current desired config resolves as soon as the fleet is converged.
    async fn apply(&self, new: Value, base_etag: &str) -> Result<Applied, ApplyError>;

    /// What applying `new` would do; nothing changes.
    async fn dry_run(&self, new: Value) -> Result<Plan, ApplyError>;

    /// Operator status.
    fn status(&self) -> StatusSnapshot;

    /// Re-read the configuration source (as SIGHUP does) and resolve like [`Self::apply`].
    async fn reload(&self) -> Result<Applied, ApplyError>;

    /// Ask the operator to stop (workers stop, then the process exits).
    async fn stop(&self) -> Result<(), ApplyError>;

    /// Control sockets of the running workers.
    fn worker_control_sockets(&self) -> Vec<WorkerSocket>;

    /// JSON Schema of the configuration document.
    fn schema(&self) -> Value;

    /// The operator's own metrics (incremented by the reconcile loop).
    fn metrics(&self) -> Arc<OperatorMetrics>;

    /// The revision history, newest first (empty where none is kept).
    fn history(&self) -> Vec<HistoryEntry> {
        vec![]
    }

    /// Make the config of a previous good revision (`revision`; default: the newest good one
    /// other than the desired one) the desired config again, and resolve like [`Self::apply`].
    async fn rollback(&self, revision: Option<String>) -> Result<Applied, ApplyError> {
        let _ = revision;
        Err(ApplyError::Unavailable(
            "no revision history is kept".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lua_diffs() {
        assert_eq!(lua_diff("a\nb\n", "a\nb\n"), "");
        assert_eq!(
            lua_diff("a\nb\nc\n", "a\nx\nc\n"),
            "--- current\n+++ target\n@@ -1,3 +1,3 @@\n a\n-b\n+x\n c\n"
        );
    }

    #[test]
    fn lua_diff_of_large_inputs_is_correct() {
        // 2 MiB each, one line changed in the middle and one appended.
        let lines: Vec<String> = (0..150_000).map(|i| format!("line {i:>12}")).collect();
        let old = lines.join("\n") + "\n";
        let mut changed = lines.clone();
        changed[75_000] = "changed".into();
        changed.push("appended".into());
        let new = changed.join("\n") + "\n";
        assert!(old.len() > 2 * 1024 * 1024);
        let d = lua_diff(&old, &new);
        let minus: Vec<&str> = d
            .lines()
            .filter(|l| l.starts_with('-') && !l.starts_with("---"))
            .collect();
        let plus: Vec<&str> = d
            .lines()
            .filter(|l| l.starts_with('+') && !l.starts_with("+++"))
            .collect();
        assert_eq!(minus, ["-line        75000"]);
        assert_eq!(plus, ["+changed", "+appended"]);
    }
}
