//! The real [`ControlPlane`] of host mode: the file source and the reconcile loop's status.
//!
//! A change is submitted to the file source (`FileSource::submit`: the one config pipeline,
//! then the file is written with a dated backup and the change published with a change
//! sequence number); its outcome is what the reconcile loop reports for that sequence number
//! (`Status::change_seq`): converged (worker count and cache-gc included), rejected, or
//! superseded by a later change with a different desired state. Reverting a rejected change is
//! the operator's job (see `host::run`), not the request's: it happens when the client is gone.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use kres_crd::config::{ConfigErrors, ResolverConfig};
use serde_json::Value;
use tokio::sync::watch;

use crate::host::Status;
use crate::http::doc::etag_of;
use crate::http::heavy;
use crate::http::plane::{
    Applied, ApplyError, CacheGcStatus, ControlPlane, Failure, FieldError, HistoryEntry, Plan,
    PlannedRestart, RolloutEvent, StatusSnapshot, WorkerSocket, WorkerStatus, lua_diff,
};
use crate::http::server::{Listen, ServeError, ServerConfig, ServerHandle, serve};
use crate::http::worker::KresdControl;
use crate::metrics::{OperatorMetrics, ResultLabel};
use crate::reconcile::{
    Action, Desired, Durable, Observed, ObservedSlot, Phase, RevisionState, Rollout, Slot,
    SlotState, preview,
};
use crate::source::file::{FileSource, SourceError};
use crate::source::{Accepted, Origin};
use crate::time::rfc3339;

/// What host mode hands to the API.
pub struct HostPlaneParts {
    /// The config source (API changes are submitted to it).
    pub source: Arc<FileSource>,
    /// The reconcile loop's status.
    pub status: watch::Receiver<Status>,
    /// The reconcile loop's durable state (revision history).
    pub history: watch::Receiver<Arc<Durable>>,
    /// Setting it to true stops the operator.
    pub shutdown: watch::Sender<bool>,
    /// The operator's rundir (kresd control sockets are `kresd/control/<pid>` below it).
    pub rundir: PathBuf,
    /// The operator's metrics.
    pub metrics: Arc<OperatorMetrics>,
}

/// Host mode's control plane.
pub struct HostPlane {
    p: HostPlaneParts,
    /// Last seen state of the cache-gc program (polled from supervisord).
    gc: Arc<std::sync::Mutex<Option<CacheGcStatus>>>,
}

fn invalid(errors: ConfigErrors) -> ApplyError {
    ApplyError::Invalid(
        errors
            .0
            .into_iter()
            .map(|e| FieldError {
                pointer: e.pointer,
                message: e.message,
            })
            .collect(),
    )
}

fn unavailable(e: impl std::fmt::Display) -> ApplyError {
    ApplyError::Unavailable(e.to_string())
}

fn phase_name(p: &Phase) -> String {
    match p {
        Phase::Idle => "idle".into(),
        Phase::Starting => "starting".into(),
        Phase::Canary => "canary".into(),
        Phase::Rolling { slot } => format!("rolling slot {slot}"),
        Phase::Finishing => "finishing".into(),
        Phase::RollingBack => "rolling-back".into(),
        Phase::Failed => "failed".into(),
    }
}

fn state_name(s: SlotState) -> &'static str {
    match s {
        SlotState::Pending => "pending",
        SlotState::Starting => "starting",
        SlotState::Ready => "ready",
        SlotState::Draining => "draining",
        SlotState::Drained => "drained",
        SlotState::Stopping => "stopping",
        SlotState::Stopped => "stopped",
        SlotState::Exited => "exited",
        SlotState::Failed => "failed",
    }
}

/// The API's status snapshot of a host status.
pub fn snapshot(s: &Status) -> StatusSnapshot {
    StatusSnapshot {
        change_seq: s.change_seq,
        desired_revision: s.desired_revision.clone(),
        converged: s.converged,
        workers_desired: s.workers_desired,
        failed_revisions: s.failed_revisions.clone(),
        current_revision: s.current_revision.clone(),
        target_revision: s.target_revision.clone(),
        phase: phase_name(&s.phase),
        events: s
            .events
            .iter()
            .map(|e| RolloutEvent {
                time: rfc3339(e.at_unix_ms),
                message: format!("{}: {}", e.kind, e.message),
            })
            .collect(),
        workers: s
            .workers
            .iter()
            .map(|w| WorkerStatus {
                slot: w.slot.worker_id(),
                pid: w.worker.as_ref().and_then(|w| w.pid),
                revision: Some(w.revision.clone()),
                state: state_name(w.state).into(),
                ready_since: w.ready_since_unix_ms.map(rfc3339),
            })
            .collect(),
        cache_gc: None,
        conditions: s.conditions.clone(),
        last_failure: s.last_failure.as_ref().map(|f| Failure {
            revision: Some(f.revision.clone()),
            reason: f.reason.clone(),
            time: rfc3339(f.at_unix_ms),
        }),
    }
}

impl HostPlane {
    /// A control plane over host mode's parts.
    pub fn new(parts: HostPlaneParts) -> Self {
        Self {
            p: parts,
            gc: Arc::new(std::sync::Mutex::new(None)),
        }
    }

    fn current(&self) -> Option<Arc<Accepted>> {
        self.p.source.current()
    }

    fn to_json(cfg: &ResolverConfig) -> Value {
        serde_json::to_value(cfg).unwrap_or(Value::Null)
    }

    fn etag(a: &Accepted) -> String {
        etag_of(&Self::to_json(&a.config))
    }

    /// Run a source operation (parsing, validation, rendering, file I/O) on the bounded
    /// heavy-work pool ([`heavy`]), off the runtime thread.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&FileSource) -> Result<T, SourceError> + Send + 'static,
    ) -> Result<T, ApplyError> {
        let source = self.p.source.clone();
        let result = heavy::run(move || f(&source)).await.map_err(unavailable)?;
        result.map_err(|e| match e {
            SourceError::Invalid { errors, .. } => invalid(errors),
            SourceError::BaseChanged => ApplyError::BaseChanged {
                current: self.current().map(|a| Self::etag(&a)).unwrap_or_default(),
            },
            e => unavailable(e),
        })
    }

    /// Wait until the reconcile loop reports the outcome of `change`: converged on it (every
    /// slot ready on its revision, worker count and cache-gc included), rejected it, or moved on
    /// to a later change with a different desired state (superseded).
    async fn outcome(&self, change: &Accepted, since_ms: u64) -> Result<Applied, ApplyError> {
        let revision = &change.desired.revision;
        let applied = || Applied {
            etag: Self::etag(change),
            revision: Some(revision.clone()),
        };
        let mut status = self.p.status.clone();
        loop {
            {
                let s = status.borrow_and_update();
                if s.change_seq >= change.seq {
                    // A failure of this revision since the change was submitted is its outcome,
                    // even when a revert or a later change is already being worked on; so is a
                    // failure that still stands while the revision is desired (a change equal
                    // to a rejected desired config).
                    let desired_now = s.desired_revision.as_deref() == Some(revision.as_str());
                    if let Some(f) = s.failures.iter().find(|f| {
                        &f.revision == revision && (f.at_unix_ms >= since_ms || desired_now)
                    }) {
                        return Err(ApplyError::Rejected {
                            revision: Some(revision.clone()),
                            reasons: f.reason.lines().map(str::to_owned).collect(),
                        });
                    }
                    let same_desired = s.change_seq == change.seq
                        || self.current().is_some_and(|c| c.desired == change.desired);
                    if !same_desired {
                        return Err(ApplyError::Superseded {
                            by: self.current().map(|c| Self::etag(&c)).unwrap_or_default(),
                        });
                    }
                    if s.converged
                        && desired_now
                        && s.current_revision.as_deref() == Some(revision.as_str())
                    {
                        return Ok(applied());
                    }
                }
            }
            tokio::select! {
                r = status.changed() => if r.is_err() {
                    return Err(ApplyError::Unavailable("the operator is stopping".into()));
                },
                // The desired config may change without a new status (superseded).
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
    }
}

#[async_trait]
impl ControlPlane for HostPlane {
    fn config(&self) -> Value {
        self.current()
            .map(|c| Self::to_json(&c.config))
            .unwrap_or_else(|| Value::Object(Default::default()))
    }

    async fn apply(&self, new: Value, base_etag: &str) -> Result<Applied, ApplyError> {
        let since = crate::time::unix_ms();
        let base = base_etag.to_owned();
        let change = self
            .blocking(move |source| {
                let cfg = parse(source, new)?;
                source.submit(cfg, Origin::Api, |cur| {
                    cur.map(|c| etag_of(&Self::to_json(c))) == Some(base)
                })
            })
            .await?;
        self.outcome(&change, since).await
    }

    async fn dry_run(&self, new: Value) -> Result<Plan, ApplyError> {
        let current = self.current();
        let (current_rev, workers) = {
            let s = self.p.status.borrow();
            (s.current_revision.clone(), s.workers.clone())
        };
        let durable = self.p.history.borrow().clone();
        self.blocking(move |source| {
            let desired = source.build(&parse(source, new)?)?;
            Ok(plan(
                current.as_deref(),
                current_rev,
                workers,
                &durable,
                &desired,
            ))
        })
        .await
    }

    fn status(&self) -> StatusSnapshot {
        let mut snap = snapshot(&self.p.status.borrow());
        let enabled = self
            .current()
            .is_some_and(|c| c.config.cache.garbage_collector.enable);
        snap.cache_gc = if enabled {
            self.gc.lock().ok().and_then(|g| g.clone())
        } else {
            Some(CacheGcStatus {
                state: "disabled".into(),
                pid: None,
            })
        };
        snap
    }

    async fn reload(&self) -> Result<Applied, ApplyError> {
        let since = crate::time::unix_ms();
        let result = self.blocking(|source| source.reload()).await;
        let label = if result.is_ok() { "ok" } else { "error" };
        self.p
            .metrics
            .config_reloads
            .get_or_create(&ResultLabel::new(label))
            .inc();
        let change = result?;
        self.outcome(&change, since).await
    }

    async fn stop(&self) -> Result<(), ApplyError> {
        self.p
            .shutdown
            .send(true)
            .map_err(|_| ApplyError::Unavailable("the operator is already stopping".into()))
    }

    fn worker_control_sockets(&self) -> Vec<WorkerSocket> {
        self.p
            .status
            .borrow()
            .workers
            .iter()
            .filter_map(|w| {
                let control = w.worker.as_ref()?.control.as_ref()?;
                Some(WorkerSocket {
                    worker: w.slot.worker_id(),
                    path: PathBuf::from(control),
                })
            })
            .collect()
    }

    fn schema(&self) -> Value {
        kres_crd::config::json_schema()
    }

    fn metrics(&self) -> Arc<OperatorMetrics> {
        self.p.metrics.clone()
    }

    fn history(&self) -> Vec<HistoryEntry> {
        let durable = self.p.history.borrow().clone();
        let desired = self.current().map(|c| c.desired.revision.clone());
        history_entries(&durable, desired.as_deref())
    }

    async fn rollback(&self, revision: Option<String>) -> Result<Applied, ApplyError> {
        let durable = self.p.history.borrow().clone();
        let desired = self.current().map(|c| c.desired.revision.clone());
        let refuse = |message: String| {
            ApplyError::Invalid(vec![FieldError {
                pointer: "/revision".into(),
                message,
            }])
        };
        let record = match &revision {
            Some(r) => durable
                .record(r)
                .ok_or_else(|| refuse(format!("revision {r} is not in the history")))?,
            None => durable
                .history
                .iter()
                .rev()
                .find(|r| r.state == RevisionState::Good && Some(&r.revision) != desired.as_ref())
                .ok_or_else(|| refuse("no previous good revision in the history".into()))?,
        };
        if record.state != RevisionState::Good {
            return Err(refuse(format!(
                "revision {} never served on every worker (it is {}); only good revisions can be rolled back to",
                record.revision,
                state_label(record.state)
            )));
        }
        let since = crate::time::unix_ms();
        let text = record.config.clone();
        let change = self
            .blocking(move |source| source.submit_text(&text, Origin::Rollback, None))
            .await?
            .ok_or_else(|| unavailable("the rollback was not published"))?;
        self.outcome(&change, since).await
    }
}

fn state_label(s: RevisionState) -> &'static str {
    match s {
        RevisionState::Pending => "pending",
        RevisionState::Good => "good",
        RevisionState::Failed => "failed",
        RevisionState::Superseded => "superseded",
    }
}

/// Top-level config sections whose value differs between two config texts (none when there
/// is nothing before).
pub(crate) fn changed_sections(before: Option<&str>, after: &str) -> Vec<String> {
    let Some(before) = before else {
        return vec![];
    };
    // Canonical form (every default filled in): a hand-written file and the API's rewrite of
    // the same config compare equal.
    let parse = |t: &str| {
        ResolverConfig::from_yaml_str(t)
            .ok()
            .and_then(|c| serde_json::to_value(c).ok())
            .unwrap_or(Value::Null)
    };
    changed_keys(&parse(before), &parse(after))
}

/// Top-level keys whose value differs between two JSON objects, sorted.
pub(crate) fn changed_keys(before: &Value, after: &Value) -> Vec<String> {
    let empty = serde_json::Map::new();
    let (a, b) = (
        before.as_object().unwrap_or(&empty),
        after.as_object().unwrap_or(&empty),
    );
    let mut keys: Vec<String> = a
        .keys()
        .chain(b.keys())
        .filter(|k| a.get(*k) != b.get(*k))
        .cloned()
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

/// The API's view of the revision history, newest first.
fn history_entries(durable: &Durable, desired: Option<&str>) -> Vec<HistoryEntry> {
    let mut out = Vec::with_capacity(durable.history.len());
    let mut previous: Option<&str> = None;
    for r in &durable.history {
        out.push(HistoryEntry {
            revision: r.revision.clone(),
            state: state_label(r.state).into(),
            desired: desired == Some(r.revision.as_str()),
            last_good: durable.last_good.as_deref() == Some(r.revision.as_str()),
            desired_at: rfc3339(r.desired_at_unix_ms),
            changed_at: rfc3339(r.changed_at_unix_ms),
            changed: changed_sections(previous, &r.config),
            reason: r.reason.clone(),
        });
        previous = Some(&r.config);
    }
    out.reverse();
    out
}

/// `new` as a config (the datamodel's rules), as the source reports errors.
fn parse(source: &FileSource, new: Value) -> Result<ResolverConfig, SourceError> {
    ResolverConfig::from_json_value(new).map_err(|errors| SourceError::Invalid {
        path: source.path().to_path_buf(),
        errors,
    })
}

/// What replacing `current` (its fleet on `current_rev`, observed as `workers`) by `desired`
/// does: the planner's own steps ([`crate::reconcile::preview`]) over the fleet as last
/// observed, assuming every start succeeds.
fn plan(
    current: Option<&Accepted>,
    current_rev: Option<String>,
    workers: Vec<ObservedSlot>,
    durable: &Durable,
    desired: &Desired,
) -> Plan {
    let target = desired.revision.clone();
    let mut plan = Plan {
        current_revision: current_rev.clone(),
        target_revision: Some(target.clone()),
        ..Default::default()
    };
    let observed = Observed {
        now: workers.iter().map(|w| w.since).max().unwrap_or_default(),
        staged: workers.iter().map(|w| w.revision.clone()).collect(),
        slots: workers,
        gc: current.and_then(|c| c.desired.gc.clone()),
        endpoints: current.map(|c| c.desired.listen.clone()),
    };
    let rollout = Rollout::resume(durable.clone());
    for action in preview(desired, &observed, &rollout) {
        match action {
            Action::StartSlot {
                slot: slot @ Slot::Worker(_),
                revision,
            } => {
                let was = observed.slot(slot).map(|s| s.revision.clone());
                let reason = match was {
                    Some(r) if r != revision => {
                        format!("revision {r} -> {revision} (canary first)")
                    }
                    Some(_) => format!("restarts on {revision}"),
                    None => format!("new slot, starts on {revision}"),
                };
                plan.restart.push(PlannedRestart {
                    slot: slot.worker_id(),
                    reason,
                });
            }
            Action::StartSlot {
                slot: Slot::Surge,
                revision,
            } => plan.live.push(format!("canary starts on {revision}")),
            Action::StopSlot {
                slot: Slot::Worker(i),
            } if i >= desired.workers => plan.live.push(format!("slot {i} stops (scale down)")),
            Action::StartGc { .. } | Action::StopGc => plan
                .live
                .push("cache garbage collector restarts with new settings".into()),
            _ => {}
        }
    }
    if let Some(cur) = current {
        plan.lua_diff = lua_diff(&cur.desired.config, &desired.config);
    }
    plan
}

/// Where the config's `management` says the API listens (relative socket paths under `rundir`).
pub fn listen_of(cfg: &ResolverConfig, rundir: &Path) -> Listen {
    match (&cfg.management.interface, &cfg.management.unix_socket) {
        (Some(i), _) => Listen::Tcp(std::net::SocketAddr::new(i.addr, i.port.get())),
        (None, Some(p)) => Listen::Unix(rundir.join(p.as_path())),
        (None, None) => Listen::Unix(rundir.join("kres-api.sock")),
    }
}

/// Poll supervisord once a second for the `cache-gc` program's state (until the plane is gone).
async fn track_gc(socket: PathBuf, slot: std::sync::Weak<std::sync::Mutex<Option<CacheGcStatus>>>) {
    use crate::backend::supervisord::conf::GC_PROGRAM;
    let rpc = crate::backend::supervisord::rpc::Supervisor::new(&socket);
    loop {
        let state = match rpc.all_process_info().await {
            Ok(list) => Some(
                list.into_iter()
                    .find(|p| p.name == GC_PROGRAM)
                    .map(|p| CacheGcStatus {
                        state: p.state.to_ascii_lowercase(),
                        pid: (p.pid > 0).then_some(p.pid),
                    })
                    .unwrap_or(CacheGcStatus {
                        state: "not running".into(),
                        pid: None,
                    }),
            ),
            Err(_) => None,
        };
        let Some(slot) = slot.upgrade() else { return };
        if let Ok(mut g) = slot.lock() {
            *g = state;
        }
        drop(slot);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Start the API for host mode: listener from the config's `management`, real control plane.
pub async fn start_api(parts: HostPlaneParts) -> Result<ServerHandle, ServeError> {
    let cfg = parts.source.current();
    let listen = match cfg {
        Some(c) => listen_of(&c.config, &parts.rundir),
        None => Listen::Unix(parts.rundir.join("kres-api.sock")),
    };
    let supervisord = parts.rundir.join("supervisord.sock");
    let plane = Arc::new(HostPlane::new(parts));
    tokio::spawn(track_gc(supervisord, Arc::downgrade(&plane.gc)));
    // Scrapes are bounded separately (200 ms per worker); this bounds cache clearing.
    let control = Arc::new(KresdControl {
        timeout: Duration::from_secs(10),
    });
    serve(ServerConfig::new(listen), plane, control).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changed_sections_are_the_top_level_keys_that_differ() {
        assert_eq!(
            changed_sections(
                Some("workers: 2\ncache: {size-max: 1M}\n"),
                "workers: 4\ncache: {size-max: 1M}\nnsid: x\n"
            ),
            ["nsid", "workers"]
        );
        assert_eq!(
            changed_sections(Some("workers: 2\n"), "workers: 2\nnsid: null\n"),
            Vec::<String>::new(),
            "defaults compare equal"
        );
    }
}
