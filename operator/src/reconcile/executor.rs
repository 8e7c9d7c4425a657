//! The executor: one observe → plan → apply step over a [`Backend`], stateless between calls
//! except for what its [`Context`] holds (the rollout state loaded from the revision store, the
//! status last published).
//!
//! Host mode's driver (`crate::host`) calls [`reconcile_once`] on every change or wake-up; the
//! Kubernetes controller calls it once per KnotResolver reconcile and requeues after [`Next`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Mutex;
use tracing::Instrument;

use super::plan::{Action, plan_with_phase};
use super::rollout::{Failure, Rollout};
use super::status::{ConfigRejection, Status, StatusSink};
use super::store::{RevisionStore, StoreError};
use super::{ChangeSeq, Desired};
use crate::backend::{Backend, BackendError};
use crate::metrics::{OperatorMetrics, ResultLabel};

/// The accepted desired state the executor works towards.
#[derive(Clone, Debug, PartialEq)]
pub struct Target {
    /// Its change sequence number (host: change-seq; Kubernetes: `metadata.generation`).
    pub seq: ChangeSeq,
    /// What the fleet should run.
    pub desired: Desired,
    /// The config text it came from (kept in the revision history).
    pub text: String,
    /// Whether a rejection hands the last good config back to the source (host: changes that
    /// came from the API or a rollback; see [`RejectedHook`]).
    pub revert_on_reject: bool,
}

/// When to call [`reconcile_once`] again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// At once: an action was applied.
    Now,
    /// After this long, or when the backend reports a change: something is under way.
    After(Duration),
    /// Converged: when the desired state changes (or a slow poll notices a fault).
    Idle,
}

/// How long a `Wait` sleeps at most before observing again.
pub const WAIT_POLL: Duration = Duration::from_millis(20);
/// How long after a transient backend error the step is tried again.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Why a step could not be done.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// The backend failed (see [`BackendError`] for what to do about it).
    #[error(transparent)]
    Backend(#[from] BackendError),
}

impl ReconcileError {
    /// When to try again.
    pub fn retry(&self) -> Next {
        match self {
            ReconcileError::Backend(BackendError::Conflict(_)) => Next::Now,
            ReconcileError::Backend(_) => Next::After(RETRY_AFTER),
        }
    }
}

/// Wall-clock time for events, history and status (the planner's clock is the backend's
/// monotonic `Observed::now`).
pub trait Clock: Send + Sync {
    /// Now, in Unix milliseconds.
    fn unix_ms(&self) -> u64;
}

/// The system clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn unix_ms(&self) -> u64 {
        crate::time::unix_ms()
    }
}

/// What the executor calls when the fleet rejected the desired change (`target`, with
/// `revert_on_reject`) and a last good config (`good`, its text) exists: host mode puts `good`
/// back as the desired config.
pub type RejectedHook = Box<dyn Fn(&Target, &str) + Send + Sync>;

struct State {
    rollout: Rollout,
    store: Box<dyn RevisionStore>,
    status: Status,
    /// When the rollout to the current target began (for the duration metric).
    rollout_started: Option<Instant>,
}

/// Everything [`reconcile_once`] works with.
pub struct Context<B: Backend> {
    /// Runs the workers.
    pub backend: B,
    /// Where the status goes.
    pub status: Box<dyn StatusSink>,
    /// The operator's counters, updated where the work happens.
    pub metrics: Arc<OperatorMetrics>,
    /// Wall clock.
    pub clock: Box<dyn Clock>,
    on_rejected: Option<RejectedHook>,
    state: Mutex<State>,
}

impl<B: Backend> Context<B> {
    /// A context resuming the rollout state kept in `store` (last good and failed revisions,
    /// history); publishes the resumed status at once.
    pub fn new(
        backend: B,
        store: Box<dyn RevisionStore>,
        status: Box<dyn StatusSink>,
        metrics: Arc<OperatorMetrics>,
    ) -> Result<Self, StoreError> {
        let rollout = Rollout::resume(store.load()?);
        let mut initial = Status {
            operator_pid: std::process::id(),
            ..Status::default()
        };
        initial.set_rollout(&rollout);
        initial.set_conditions(crate::time::unix_ms());
        status.publish(&initial);
        status.durable(&rollout.durable);
        Ok(Context {
            backend,
            status,
            metrics,
            clock: Box::new(SystemClock),
            on_rejected: None,
            state: Mutex::new(State {
                rollout,
                store,
                status: initial,
                rollout_started: None,
            }),
        })
    }

    /// Call `hook` whenever the fleet rejects a desired change (see [`RejectedHook`]).
    pub fn on_rejected(mut self, hook: RejectedHook) -> Self {
        self.on_rejected = Some(hook);
        self
    }

    /// Use another wall clock.
    pub fn with_clock(mut self, clock: Box<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Record an event (e.g. a shutdown) and publish it.
    pub async fn record(&self, kind: &str, message: impl Into<String>) {
        let mut st = self.state.lock().await;
        let now = self.clock.unix_ms();
        st.rollout.record(now, kind, message);
        self.publish(&mut st, |_| {});
    }

    /// A backend error outside a step (no desired state yet): shown in the status.
    pub async fn backend_error(&self, e: &BackendError) {
        let mut st = self.state.lock().await;
        let msg = e.to_string();
        self.publish(&mut st, |s| s.backend_error = Some(msg));
    }

    /// The desired-config source refused its latest input (None: it accepts again): shown in
    /// the status as Degraded `InvalidConfig` until then.
    pub async fn config_rejected(&self, rejection: Option<ConfigRejection>) {
        let mut st = self.state.lock().await;
        self.publish(&mut st, |s| s.config_error = rejection);
    }

    fn publish(&self, st: &mut State, edit: impl FnOnce(&mut Status)) {
        let before = st.status.clone();
        edit(&mut st.status);
        let rollout = &st.rollout;
        st.status.set_rollout(rollout);
        st.status.set_conditions(self.clock.unix_ms());
        if st.status != before {
            self.status.publish(&st.status);
        }
    }

    /// Save the durable rollout state when it changed. A failed save is logged and tried again
    /// at the next step; the fleet is not held up by it.
    fn save(&self, st: &mut State) {
        if !st.rollout.is_dirty() {
            return;
        }
        match st.store.save(&st.rollout.durable) {
            Ok(()) => {
                st.rollout.saved();
                self.status.durable(&st.rollout.durable);
            }
            Err(e) => tracing::warn!(error = %e, "rollout state not saved"),
        }
    }

    /// The desired change was rejected: hand the last good config to the hook.
    fn rejected(&self, st: &State, target: &Target) {
        let durable = &st.rollout.durable;
        let good = durable.last_good.as_ref().and_then(|g| durable.record(g));
        if let (Some(hook), Some(good), true) = (&self.on_rejected, good, target.revert_on_reject)
            && good.revision != target.desired.revision
        {
            hook(target, &good.config);
        }
    }

    fn mark_failed(&self, st: &mut State, target: &Target, failure: Failure) {
        tracing::warn!(revision = %failure.revision, reason = %failure.reason, "revision rejected");
        let desired = failure.revision == target.desired.revision;
        st.rollout.mark_failed(failure);
        if desired {
            self.rollout_ended(st, "failed");
            self.rejected(st, target);
        }
    }

    fn rollout_ended(&self, st: &mut State, result: &str) {
        self.metrics
            .rollouts
            .get_or_create(&ResultLabel::new(result))
            .inc();
        if let Some(t0) = st.rollout_started.take() {
            self.metrics
                .rollout_duration
                .observe(t0.elapsed().as_secs_f64());
        }
    }
}

/// One observe → plan → apply step towards `target`.
pub async fn reconcile_once<B: Backend>(
    target: &Target,
    ctx: &Context<B>,
) -> Result<Next, ReconcileError> {
    let span =
        tracing::info_span!("reconcile", seq = target.seq, revision = %target.desired.revision);
    async {
        let mut st = ctx.state.lock().await;
        ctx.metrics.reconciles.inc();
        let result = step(target, ctx, &mut st).await;
        if let Err(e) = &result {
            tracing::warn!(error = %e, "backend step failed");
            let now = ctx.clock.unix_ms();
            st.rollout.record(now, "error", e.to_string());
            let msg = e.to_string();
            ctx.publish(&mut st, |s| s.backend_error = Some(msg));
        }
        ctx.save(&mut st);
        result
    }
    .instrument(span)
    .await
}

async fn step<B: Backend>(
    target: &Target,
    ctx: &Context<B>,
    st: &mut State,
) -> Result<Next, ReconcileError> {
    let d = &target.desired;
    let now = ctx.clock.unix_ms();
    if ctx.backend.ensure().await? {
        st.rollout.record(now, "backend", "process manager started");
    }
    st.rollout
        .note_config(&d.revision, &target.text, &d.listen, now);
    if st.rollout.note_desired(&d.revision, now) {
        // A rollout still under way (neither good nor failed yet) was superseded.
        if st.rollout_started.is_some() {
            ctx.rollout_ended(st, "superseded");
        }
        st.rollout_started = Some(Instant::now());
    }
    let t = Instant::now();
    let observed = ctx.backend.observe().await?;
    tracing::debug!(took_us = t.elapsed().as_micros() as u64, "observed");
    let (phase, action) = plan_with_phase(d, &observed, &st.rollout);
    if phase != st.rollout.phase {
        tracing::info!(?phase, "rollout phase");
    }
    st.rollout.phase = phase;
    let waiting = match &action {
        Action::Wait { reason } => Some(reason.clone()),
        Action::Paused => Some("rollouts are paused".into()),
        _ => None,
    };
    let converged = action == Action::Done;
    ctx.publish(st, |s| {
        s.desired_revision = Some(d.revision.clone());
        s.change_seq = target.seq;
        s.workers_desired = d.workers;
        s.workers = observed.slots.clone();
        s.workers.sort_by_key(|w| w.slot);
        s.waiting_for = waiting;
        s.converged = converged;
        s.backend_error = None;
    });
    let t = Instant::now();
    let next = apply(action, target, ctx, st).await;
    tracing::debug!(took_us = t.elapsed().as_micros() as u64, "applied");
    next
}

async fn apply<B: Backend>(
    action: Action,
    target: &Target,
    ctx: &Context<B>,
    st: &mut State,
) -> Result<Next, ReconcileError> {
    let now = ctx.clock.unix_ms();
    let backend = &ctx.backend;
    match action {
        Action::AdoptLastGood { revision } => {
            tracing::info!(%revision, "adopted the running fleet's revision as last good");
            st.rollout.adopt_last_good(revision);
        }
        Action::SetEndpoints {
            revision,
            endpoints,
        } => match backend.set_endpoints(&endpoints).await {
            Ok(()) => {}
            Err(BackendError::Rejected { pointer, reason })
                if revision == target.desired.revision =>
            {
                // The new endpoints cannot be had: a rejected change, like a failed gate.
                let reason = match pointer {
                    Some(p) => format!("{p}: {reason}"),
                    None => reason,
                };
                ctx.mark_failed(
                    st,
                    target,
                    Failure {
                        revision,
                        slot: None,
                        reason,
                        at_unix_ms: now,
                    },
                );
            }
            Err(e) => return Err(e.into()),
        },
        Action::Stage { revision } => {
            tracing::info!(%revision, "stage");
            backend.stage(&target.desired).await?;
        }
        Action::StartSlot { slot, revision } => {
            tracing::info!(%slot, %revision, "start");
            st.rollout.record_slot(
                now,
                "start",
                Some(slot),
                format!("{slot}: start on {revision}"),
            );
            backend.start(slot, &revision).await?;
        }
        Action::DrainSlot { slot } => {
            tracing::info!(%slot, "drain");
            st.rollout
                .record_slot(now, "drain", Some(slot), format!("{slot}: drain"));
            backend.drain(slot).await?;
        }
        Action::StopSlot { slot } => {
            tracing::info!(%slot, "stop");
            st.rollout
                .record_slot(now, "stop", Some(slot), format!("{slot}: stop"));
            backend.stop(slot).await?;
        }
        Action::MarkFailed {
            revision,
            slot,
            reason,
        } => {
            let tail = backend.log_tail(slot, 4096).await.unwrap_or_default();
            let reason = with_log_lines(reason, &tail);
            ctx.mark_failed(
                st,
                target,
                Failure {
                    revision,
                    slot: Some(slot),
                    reason,
                    at_unix_ms: now,
                },
            );
        }
        Action::MarkGood { revision } => {
            tracing::info!(%revision, "converged");
            st.rollout.mark_good(&revision, now);
            if revision == target.desired.revision && st.rollout_started.is_some() {
                ctx.rollout_ended(st, "succeeded");
            }
        }
        Action::StartGc { spec } => {
            st.rollout.record(now, "gc", "cache-gc (re)started");
            backend.set_gc(Some(&spec)).await?;
        }
        Action::StopGc => {
            st.rollout.record(now, "gc", "cache-gc stopped");
            backend.set_gc(None).await?;
        }
        Action::CollectRevisions { keep } => {
            tracing::info!(kept = keep.len(), "collecting staged revisions");
            backend.collect_revisions(&keep).await?;
        }
        Action::Wait { .. } => return Ok(Next::After(WAIT_POLL)),
        Action::Paused | Action::Done => return Ok(Next::Idle),
    }
    Ok(Next::Now)
}

/// A gate's reason with kresd's own last error lines from the worker's log: its last three
/// lines without Lua stack-traceback noise and without what kresd prints around an error that
/// is not about it (warnings such as the fd limit, the trust-anchor modules' `[ta...]` lines;
/// unless they say `error`).
fn with_log_lines(reason: String, tail: &str) -> String {
    let lines: Vec<&str> = tail
        .lines()
        .map(str::trim)
        .filter(|l| {
            !l.is_empty()
                && !l.starts_with("stack traceback")
                && !l.starts_with("[C]:")
                && !l.contains(": in ")
                && !((l.starts_with("[ta")
                    || l.starts_with("warning:")
                    || l.contains("] warning:"))
                    && !l.to_ascii_lowercase().contains("error"))
        })
        .collect();
    let last = lines[lines.len().saturating_sub(3)..].join(" | ");
    if last.is_empty() {
        reason
    } else {
        format!("{reason}; worker log: {last}")
    }
}

#[cfg(test)]
mod tests {
    //! `reconcile_once` over an in-memory backend: what it saves, publishes and counts.

    use std::collections::BTreeSet;
    use std::sync::Mutex as StdMutex;

    use super::*;
    use crate::backend::BackendResult;
    use crate::reconcile::{Durable, GcSpec, Observed, ObservedSlot, Revision, Slot, SlotState};

    /// Starts are observed `Starting` once, then `Ready`; drains and stops complete at once.
    #[derive(Default)]
    struct MemBackend {
        observed: StdMutex<Observed>,
        /// Endpoints `set_endpoints` refuses.
        refuse: Vec<String>,
    }

    impl Backend for MemBackend {
        async fn ensure(&self) -> BackendResult<bool> {
            Ok(false)
        }
        async fn observe(&self) -> BackendResult<Observed> {
            let mut o = self.observed.lock().expect("lock");
            o.now += Duration::from_millis(1);
            let snapshot = o.clone();
            for s in &mut o.slots {
                if s.state == SlotState::Starting {
                    s.state = SlotState::Ready;
                }
            }
            Ok(snapshot)
        }
        async fn stage(&self, desired: &Desired) -> BackendResult<()> {
            let mut o = self.observed.lock().expect("lock");
            o.staged.insert(desired.revision.clone());
            Ok(())
        }
        async fn start(&self, slot: Slot, revision: &Revision) -> BackendResult<()> {
            let mut o = self.observed.lock().expect("lock");
            let now = o.now;
            o.slots.retain(|s| s.slot != slot);
            o.slots.push(ObservedSlot::new(
                slot,
                revision.clone(),
                SlotState::Starting,
                now,
            ));
            Ok(())
        }
        async fn drain(&self, slot: Slot) -> BackendResult<()> {
            let mut o = self.observed.lock().expect("lock");
            for s in o.slots.iter_mut().filter(|s| s.slot == slot) {
                s.state = SlotState::Drained;
            }
            Ok(())
        }
        async fn stop(&self, slot: Slot) -> BackendResult<()> {
            self.observed
                .lock()
                .expect("lock")
                .slots
                .retain(|s| s.slot != slot);
            Ok(())
        }
        async fn set_endpoints(&self, endpoints: &[String]) -> BackendResult<()> {
            if endpoints.iter().any(|e| self.refuse.contains(e)) {
                return Err(BackendError::Rejected {
                    pointer: Some("/network/listen".into()),
                    reason: "cannot bind".into(),
                });
            }
            self.observed.lock().expect("lock").endpoints = Some(endpoints.to_vec());
            Ok(())
        }
        async fn set_gc(&self, spec: Option<&GcSpec>) -> BackendResult<()> {
            self.observed.lock().expect("lock").gc = spec.cloned();
            Ok(())
        }
        async fn collect_revisions(&self, keep: &BTreeSet<Revision>) -> BackendResult<()> {
            self.observed
                .lock()
                .expect("lock")
                .staged
                .retain(|r| keep.contains(r));
            Ok(())
        }
        async fn wait_change(&self, _timeout: Duration) {}
        async fn log_tail(&self, _slot: Slot, _max_bytes: usize) -> BackendResult<String> {
            Ok(String::new())
        }
        async fn shutdown(&self) -> BackendResult<()> {
            Ok(())
        }
    }

    #[derive(Clone, Default)]
    struct MemStore(Arc<StdMutex<Durable>>);

    impl RevisionStore for MemStore {
        fn load(&self) -> Result<Durable, StoreError> {
            Ok(self.0.lock().expect("lock").clone())
        }
        fn save(&mut self, state: &Durable) -> Result<(), StoreError> {
            *self.0.lock().expect("lock") = state.clone();
            Ok(())
        }
    }

    #[derive(Clone, Default)]
    struct LastStatus(Arc<StdMutex<Status>>);

    impl StatusSink for LastStatus {
        fn publish(&self, status: &Status) {
            *self.0.lock().expect("lock") = status.clone();
        }
    }

    fn target(seq: u64, rev: &str, listen: &[&str]) -> Target {
        Target {
            seq,
            desired: Desired {
                revision: rev.into(),
                config: format!("-- {rev}"),
                workers: 2,
                gc: None,
                start_timeout: Duration::from_secs(5),
                drain: Duration::ZERO,
                soak: Duration::ZERO,
                template: serde_json::Value::Null,
                listen: listen.iter().map(|l| l.to_string()).collect(),
                paused: false,
            },
            text: format!("config of {rev}"),
            revert_on_reject: true,
        }
    }

    async fn converge(t: &Target, ctx: &Context<MemBackend>) -> Next {
        for _ in 0..200 {
            match reconcile_once(t, ctx).await.expect("step") {
                Next::Idle => return Next::Idle,
                Next::Now | Next::After(_) => {}
            }
        }
        panic!("no convergence")
    }

    #[test]
    fn the_log_lines_kept_are_kresds_errors_not_the_warnings_around_them() {
        let tail = "[ta_update] refreshing TA for .\n\
            [system] warning: hard limit for number of file-descriptors is only 1024 but recommended value is 524288\n\
            [system] error while loading config: /etc/kresd/kresd.conf:40: kres-x (workdir '/var/lib/knot-resolver')\n\
            [ta_update] next refresh for . in 12 hours\n";
        assert_eq!(
            with_log_lines("exited".into(), tail),
            "exited; worker log: [system] error while loading config: \
             /etc/kresd/kresd.conf:40: kres-x (workdir '/var/lib/knot-resolver')"
        );
        // A trust-anchor error is kept.
        assert_eq!(
            with_log_lines(
                "exited".into(),
                "[ta    ] error: no trust anchor\n[ta    ] ok\n"
            ),
            "exited; worker log: [ta    ] error: no trust anchor"
        );
        // The last three lines that are not noise.
        assert_eq!(
            with_log_lines(
                "exited".into(),
                "a\nb\n[net   ] bind to '192.0.2.55@5353' (UDP): Cannot assign requested address\n\
                 [system] warning: x\nERROR: net.listen() failed to bind\n"
            ),
            "exited; worker log: b | [net   ] bind to '192.0.2.55@5353' (UDP): Cannot assign \
             requested address | ERROR: net.listen() failed to bind"
        );
        assert_eq!(with_log_lines("exited".into(), ""), "exited");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn rollouts_are_saved_published_and_counted_where_they_happen() {
        let store = MemStore::default();
        let status = LastStatus::default();
        let metrics = Arc::new(OperatorMetrics::default());
        let reverted = Arc::new(StdMutex::new(vec![]));
        let seen = reverted.clone();
        let backend = MemBackend {
            refuse: vec!["bad".into()],
            ..MemBackend::default()
        };
        let ctx = Context::new(
            backend,
            Box::new(store.clone()),
            Box::new(status.clone()),
            metrics.clone(),
        )
        .expect("context")
        .on_rejected(Box::new(move |t, good| {
            seen.lock().expect("lock").push((t.seq, good.to_owned()));
        }));
        let succeeded = || {
            metrics
                .rollouts
                .get_or_create(&ResultLabel::new("succeeded"))
                .get()
        };

        converge(&target(1, "r1", &["ok"]), &ctx).await;
        converge(&target(2, "r2", &["ok"]), &ctx).await;
        assert_eq!(succeeded(), 2);
        assert_eq!(
            store.0.lock().expect("lock").last_good.as_deref(),
            Some("r2")
        );
        {
            let s = status.0.lock().expect("lock");
            assert!(s.converged);
            assert_eq!(s.change_seq, 2);
            assert_eq!(s.current_revision.as_deref(), Some("r2"));
            assert!(
                s.condition(crate::reconcile::ConditionType::Available)
                    .is_some_and(|c| c.status)
            );
        }

        // Endpoints the backend rejects: the revision fails with the field and the reason, the
        // hook gets the last good config, the fleet stays on r2.
        converge(&target(3, "r3", &["bad"]), &ctx).await;
        let failed = metrics
            .rollouts
            .get_or_create(&ResultLabel::new("failed"))
            .get();
        assert_eq!(failed, 1);
        let durable = store.0.lock().expect("lock").clone();
        let reason = durable.failed.get("r3").map(|f| f.reason.clone());
        assert_eq!(reason.as_deref(), Some("/network/listen: cannot bind"));
        assert_eq!(durable.last_good.as_deref(), Some("r2"));
        assert_eq!(
            *reverted.lock().expect("lock"),
            vec![(3, "config of r2".to_string())]
        );
        let o = ctx.backend.observed.lock().expect("lock").clone();
        assert!(o.slots.iter().all(|s| s.revision == "r2"), "{o:?}");
        assert_eq!(o.endpoints, Some(vec!["ok".to_string()]));
        assert_eq!(succeeded(), 2);
        assert!(metrics.reconciles.get() > 10);
    }
}
