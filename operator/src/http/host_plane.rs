//! The real [`ControlPlane`] of host mode: the file source (written back to, then re-read) and
//! the reconcile loop's status channel.
//!
//! A change is validated (`ResolverConfig::from_json_value`), rendered (revision), written to the
//! config file (`persist::write_back`, `.bak` kept), and picked up by the file source exactly as
//! SIGHUP would; then the status channel tells when the fleet converged on the revision, rejected
//! it (the previous file content is then written back), or a newer config replaced it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use kres_crd::config::{ConfigErrors, ResolverConfig};
use kres_crd::lua::SocketMode;
use serde_json::Value;
use tokio::sync::{Mutex, Notify, watch};

use super::doc::etag_of;
use super::heavy;
use super::persist;
use super::plane::{
    Applied, ApplyError, CacheGcStatus, ControlPlane, Failure, FieldError, Plan, PlannedRestart,
    RolloutEvent, StatusSnapshot, WorkerSocket, WorkerStatus, lua_diff,
};
use super::server::{Listen, ServeError, ServerConfig, ServerHandle, serve};
use super::worker::KresdControl;
use crate::host::Status;
use crate::host::desired::desired_from;
use crate::metrics::{OperatorMetrics, ResultLabel};
use crate::reconcile::{Phase, SlotState};

/// What host mode hands to the API.
pub struct HostPlaneParts {
    /// The config file the operator was started with (API changes are written here).
    pub config_path: PathBuf,
    /// The file source's current valid config.
    pub config: watch::Receiver<Option<Arc<ResolverConfig>>>,
    /// Triggers a re-read of the file (what SIGHUP does).
    pub reload: Arc<Notify>,
    /// The reconcile loop's status.
    pub status: watch::Receiver<Status>,
    /// Setting it to true stops the operator.
    pub shutdown: watch::Sender<bool>,
    /// The operator's rundir (kresd control sockets are `control/<pid>` below it).
    pub rundir: PathBuf,
    /// How listening sockets reach kresd (for rendering the same revision as the loop).
    pub sockets: SocketMode,
    /// Worker start timeout (part of the desired state).
    pub start_timeout: Duration,
    /// The operator's metrics.
    pub metrics: Arc<OperatorMetrics>,
}

/// Host mode's control plane.
pub struct HostPlane {
    p: HostPlaneParts,
    /// Serialises writes of the config file.
    submit: Mutex<()>,
    /// Last seen state of the cache-gc program (polled from supervisord).
    gc: Arc<std::sync::Mutex<Option<CacheGcStatus>>>,
}

/// How long the file source may take to publish what was written.
const PICKUP_TIMEOUT: Duration = Duration::from_secs(10);

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

/// Validate `new` and render it to its revision.
fn validate(
    new: Value,
    sockets: SocketMode,
    start_timeout: Duration,
) -> Result<(ResolverConfig, String), ApplyError> {
    let cfg = ResolverConfig::from_json_value(new).map_err(invalid)?;
    let desired = desired_from(&cfg, sockets, start_timeout).map_err(|e| {
        let text = e.to_string();
        let (pointer, message) = match text.split_once(": ") {
            Some((p, m)) if p.starts_with('/') => (p.to_owned(), m.to_owned()),
            _ => (String::new(), text),
        };
        ApplyError::Invalid(vec![FieldError { pointer, message }])
    })?;
    Ok((cfg, desired.revision))
}

/// RFC 3339 UTC time of a Unix time in milliseconds.
pub fn rfc3339(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60,
        unix_ms % 1000
    )
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
        SlotState::Starting => "starting",
        SlotState::Ready => "ready",
        SlotState::Stopped => "stopped",
        SlotState::Exited => "exited",
        SlotState::Failed => "failed",
    }
}

/// The API's status snapshot of a host status.
pub fn snapshot(s: &Status) -> StatusSnapshot {
    StatusSnapshot {
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
                pid: w.pid,
                revision: Some(w.revision.clone()),
                state: state_name(w.state).into(),
                ready_since: w.ready_since_unix_ms.map(rfc3339),
            })
            .collect(),
        cache_gc: None,
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
            submit: Mutex::new(()),
            gc: Arc::new(std::sync::Mutex::new(None)),
        }
    }

    fn current(&self) -> Option<Arc<ResolverConfig>> {
        self.p.config.borrow().clone()
    }

    fn to_json(cfg: &ResolverConfig) -> Value {
        serde_json::to_value(cfg).unwrap_or(Value::Null)
    }

    /// Validate and render `new` (on the heavy-work pool, see [`super::heavy`]).
    async fn validate(&self, new: Value) -> Result<(ResolverConfig, String), ApplyError> {
        let (sockets, start_timeout) = (self.p.sockets, self.p.start_timeout);
        heavy::run(move || validate(new, sockets, start_timeout))
            .await
            .map_err(unavailable)?
    }

    /// Write `cfg` to the config file and wait until the file source published it.
    async fn write_and_pickup(&self, cfg: &ResolverConfig) -> Result<(), ApplyError> {
        let yaml = serde_norway::to_string(cfg).map_err(unavailable)?;
        persist::write_back(&self.p.config_path, &yaml).map_err(unavailable)?;
        let want = etag_of(&Self::to_json(cfg));
        self.p.reload.notify_one();
        if self.published(&want).await {
            Ok(())
        } else {
            Err(ApplyError::Unavailable(
                "the configuration file was written but not picked up by the operator".into(),
            ))
        }
    }

    /// Wait (up to [`PICKUP_TIMEOUT`]) until the file source publishes the config with ETag `want`.
    async fn published(&self, want: &str) -> bool {
        let mut rx = self.p.config.clone();
        let wait = async {
            loop {
                let done = rx
                    .borrow_and_update()
                    .as_deref()
                    .is_some_and(|c| etag_of(&Self::to_json(c)) == want);
                if done {
                    return true;
                }
                if rx.changed().await.is_err() {
                    return false;
                }
            }
        };
        tokio::time::timeout(PICKUP_TIMEOUT, wait)
            .await
            .unwrap_or(false)
    }

    /// Wait until the fleet converged on `revision` (Ok), rejected it, or `etag` stopped being
    /// the desired config.
    async fn outcome(&self, etag: &str, revision: &str) -> Result<Applied, ApplyError> {
        let mut status = self.p.status.clone();
        loop {
            let desired_now = self.current().map(|c| etag_of(&Self::to_json(&c)));
            if desired_now.as_deref() != Some(etag) {
                return Err(ApplyError::Superseded {
                    by: desired_now.unwrap_or_default(),
                });
            }
            {
                let s = status.borrow_and_update();
                if s.desired_revision.as_deref() == Some(revision) {
                    if s.failed_revisions.iter().any(|r| r == revision) {
                        let reasons = s
                            .last_failure
                            .as_ref()
                            .filter(|f| f.revision == revision)
                            .map(|f| f.reason.lines().map(str::to_owned).collect())
                            .unwrap_or_else(|| vec!["the fleet rejected the revision".into()]);
                        return Err(ApplyError::Rejected {
                            revision: Some(revision.to_owned()),
                            reasons,
                        });
                    }
                    if s.converged && s.current_revision.as_deref() == Some(revision) {
                        return Ok(Applied {
                            etag: etag.to_owned(),
                            revision: Some(revision.to_owned()),
                        });
                    }
                }
            }
            // Status changes, or a config change (superseded), whichever comes first.
            let mut cfg = self.p.config.clone();
            tokio::select! {
                r = status.changed() => if r.is_err() {
                    return Err(ApplyError::Unavailable("the operator is stopping".into()));
                },
                _ = cfg.changed() => {}
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
    }
}

#[async_trait]
impl ControlPlane for HostPlane {
    fn config(&self) -> Value {
        self.current()
            .map(|c| Self::to_json(&c))
            .unwrap_or_else(|| Value::Object(Default::default()))
    }

    async fn apply(&self, new: Value, base_etag: &str) -> Result<Applied, ApplyError> {
        let (cfg, revision) = self.validate(new).await?;
        let etag = etag_of(&Self::to_json(&cfg));
        let previous = {
            let _guard = self.submit.lock().await;
            let current = self.current();
            let current_etag = etag_of(&self.config());
            if current_etag != base_etag {
                return Err(ApplyError::BaseChanged {
                    current: current_etag,
                });
            }
            if current_etag != etag {
                self.write_and_pickup(&cfg).await?;
            }
            current
        };
        match self.outcome(&etag, &revision).await {
            Err(ApplyError::Rejected { revision, reasons }) => {
                // Put the last accepted config back in the file, unless something newer came.
                if let Some(prev) = previous {
                    let _guard = self.submit.lock().await;
                    if etag_of(&self.config()) == etag
                        && let Err(e) = self.write_and_pickup(&prev).await
                    {
                        tracing::warn!(error = %e, "could not restore the previous configuration file");
                    }
                }
                Err(ApplyError::Rejected { revision, reasons })
            }
            other => other,
        }
    }

    async fn dry_run(&self, new: Value) -> Result<Plan, ApplyError> {
        let (cfg, target) = self.validate(new).await?;
        let current = self.current();
        let current_rev = self.p.status.borrow().current_revision.clone();
        let (sockets, start_timeout) = (self.p.sockets, self.p.start_timeout);
        heavy::run(move || {
            plan(
                current.as_deref(),
                current_rev,
                &cfg,
                target,
                sockets,
                start_timeout,
            )
        })
        .await
        .map_err(unavailable)
    }

    fn status(&self) -> StatusSnapshot {
        let mut snap = snapshot(&self.p.status.borrow());
        let enabled = self
            .current()
            .is_some_and(|c| c.cache.garbage_collector.enable);
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
        let path = self.p.config_path.clone();
        let cfg = heavy::run(move || crate::source::file::load(&path))
            .await
            .map_err(unavailable)?;
        let cfg = match cfg {
            Ok(c) => {
                self.p
                    .metrics
                    .config_reloads
                    .get_or_create(&ResultLabel::new("ok"))
                    .inc();
                c
            }
            Err(crate::source::file::SourceError::Invalid { errors, .. }) => {
                self.p
                    .metrics
                    .config_reloads
                    .get_or_create(&ResultLabel::new("error"))
                    .inc();
                return Err(invalid(errors));
            }
            Err(e) => {
                self.p
                    .metrics
                    .config_reloads
                    .get_or_create(&ResultLabel::new("error"))
                    .inc();
                return Err(unavailable(e));
            }
        };
        let (_, revision) = self.validate(Self::to_json(&cfg)).await?;
        let etag = etag_of(&Self::to_json(&cfg));
        {
            let _guard = self.submit.lock().await;
            self.p.reload.notify_one();
            // An unchanged file publishes nothing new: then the current config already matches.
            self.published(&etag).await;
        }
        self.outcome(&etag, &revision).await
    }

    async fn stop(&self) -> Result<(), ApplyError> {
        self.p
            .shutdown
            .send(true)
            .map_err(|_| ApplyError::Unavailable("the operator is already stopping".into()))
    }

    fn worker_control_sockets(&self) -> Vec<WorkerSocket> {
        let control = self.p.rundir.join("control");
        self.p
            .status
            .borrow()
            .workers
            .iter()
            .filter_map(|w| {
                w.pid.map(|pid| WorkerSocket {
                    worker: w.slot.worker_id(),
                    path: control.join(pid.to_string()),
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
}

/// What replacing `current` (running `current_rev`) by `cfg` (rendering to `target`) does.
fn plan(
    current: Option<&ResolverConfig>,
    current_rev: Option<String>,
    cfg: &ResolverConfig,
    target: String,
    sockets: SocketMode,
    start_timeout: Duration,
) -> Plan {
    let mut plan = Plan {
        current_revision: current_rev.clone(),
        target_revision: Some(target.clone()),
        ..Default::default()
    };
    let old_workers = current.map(|c| c.worker_count()).unwrap_or(0);
    let new_workers = cfg.worker_count();
    if current_rev.as_deref() != Some(target.as_str()) {
        for i in 0..old_workers.min(new_workers) {
            plan.restart.push(PlannedRestart {
                slot: i.to_string(),
                reason: format!(
                    "revision {} -> {target} (canary first)",
                    current_rev.as_deref().unwrap_or("none")
                ),
            });
        }
    }
    for i in old_workers..new_workers {
        plan.restart.push(PlannedRestart {
            slot: i.to_string(),
            reason: format!("new slot, starts on {target}"),
        });
    }
    for i in new_workers..old_workers {
        plan.live.push(format!("slot {i} stops (scale down)"));
    }
    if let Some(cur) = current {
        if cur.cache.garbage_collector != cfg.cache.garbage_collector {
            plan.live
                .push("cache garbage collector restarts with new settings".into());
        }
        let old = desired_from(cur, sockets, start_timeout)
            .map(|d| d.config)
            .unwrap_or_default();
        let new = desired_from(cfg, sockets, start_timeout)
            .map(|d| d.config)
            .unwrap_or_default();
        plan.lua_diff = lua_diff(&old, &new);
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

/// Derive the operator's counters from the status channel: every published status is one
/// reconcile step that changed something; `good`/`failed` events end a rollout that began with
/// the last `target` event.
async fn track_metrics(mut status: watch::Receiver<Status>, metrics: Arc<OperatorMetrics>) {
    let mut seen_ms = 0u64;
    let mut started_ms: Option<u64> = None;
    loop {
        {
            let s = status.borrow_and_update();
            metrics.reconciles.inc();
            for e in s.events.iter().filter(|e| e.at_unix_ms > seen_ms) {
                match e.kind.as_str() {
                    "target" => started_ms = Some(e.at_unix_ms),
                    "good" | "failed" => {
                        let result = if e.kind == "good" {
                            "succeeded"
                        } else {
                            "failed"
                        };
                        metrics
                            .rollouts
                            .get_or_create(&ResultLabel::new(result))
                            .inc();
                        if let Some(t0) = started_ms.take() {
                            metrics
                                .rollout_duration
                                .observe(e.at_unix_ms.saturating_sub(t0) as f64 / 1000.0);
                        }
                    }
                    _ => {}
                }
            }
            if let Some(last) = s.events.last() {
                seen_ms = seen_ms.max(last.at_unix_ms);
            }
        }
        if status.changed().await.is_err() {
            return;
        }
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
    let cfg = parts.config.borrow().clone();
    let listen = match cfg {
        Some(c) => listen_of(&c, &parts.rundir),
        None => Listen::Unix(parts.rundir.join("kres-api.sock")),
    };
    tokio::spawn(track_metrics(parts.status.clone(), parts.metrics.clone()));
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
    fn rfc3339_times() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(rfc3339(1_795_651_200_000), "2026-11-26T00:00:00.000Z");
    }
}
