//! The KnotResolver's `.status`: mapped field by field from the reconciler's [`Status`], and the
//! durable rollout state read back from it (pure).

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kres_crd::k8s::{KnotResolverStatus, MAX_FAILED_REVISIONS, ResolverPhase, RevisionFailure};

use crate::backend::pods::build::selector_string;
use crate::reconcile::{
    Condition as ReconcileCondition, Durable, Failure, Phase, SlotState, Status,
};

/// `Available`, `Progressing`, `Degraded`.
pub const AVAILABLE: &str = "Available";
/// See [`AVAILABLE`].
pub const PROGRESSING: &str = "Progressing";
/// See [`AVAILABLE`].
pub const DEGRADED: &str = "Degraded";
/// The Progressing reason (and event) of a paused resolver.
pub const PAUSED: &str = "Paused";
/// The Progressing and Degraded reason (and Warning event) of a rollout that made no
/// progress for `spec.rollout.progressDeadlineSeconds`.
pub const PROGRESS_DEADLINE_EXCEEDED: &str = "ProgressDeadlineExceeded";

fn time(unix_ms: u64) -> Option<String> {
    Some(crate::time::rfc3339_secs(unix_ms))
}

/// `unix_ms` truncated to whole seconds: what a `metav1.Time` keeps (it serializes
/// `%Y-%m-%dT%H:%M:%SZ`), so a status compares equal to itself read back from the API and an
/// unchanged status is not written again.
fn whole_seconds(unix_ms: i64) -> Timestamp {
    Timestamp::from_second(unix_ms.div_euclid(1000)).unwrap_or(Timestamp::UNIX_EPOCH)
}

fn parse_ms(t: Option<&str>) -> u64 {
    t.and_then(|t| t.parse::<Timestamp>().ok())
        .map_or(0, |t| u64::try_from(t.as_millisecond()).unwrap_or(0))
}

fn failure(f: &Failure) -> RevisionFailure {
    RevisionFailure {
        revision: f.revision.clone(),
        reason: "RevisionFailed".into(),
        message: f.reason.clone(),
        time: time(f.at_unix_ms),
    }
}

/// The durable rollout state kept in a status: last good (`currentRevision`), target
/// (`updateRevision`) and the failed revisions (not retried after an operator restart).
pub fn durable_from(status: Option<&KnotResolverStatus>) -> Durable {
    let Some(s) = status else {
        return Durable::default();
    };
    Durable {
        target: s.update_revision.clone(),
        last_good: s.current_revision.clone(),
        failed: s
            .failed_revisions
            .iter()
            .map(|f| {
                (
                    f.revision.clone(),
                    Failure {
                        revision: f.revision.clone(),
                        slot: None,
                        reason: f.message.clone(),
                        at_unix_ms: parse_ms(f.time.as_deref()),
                    },
                )
            })
            .collect(),
        history: Default::default(),
    }
}

fn condition(
    type_: &str,
    status: bool,
    reason: &str,
    message: String,
    generation: i64,
) -> Condition {
    Condition {
        type_: type_.into(),
        status: if status { "True" } else { "False" }.into(),
        reason: reason.into(),
        message,
        observed_generation: Some(generation),
        last_transition_time: Time(Timestamp::UNIX_EPOCH),
    }
}

/// Keep each condition's `lastTransitionTime` from `previous` while its status is unchanged,
/// else `now`.
fn stamp(
    mut conditions: Vec<Condition>,
    previous: Option<&KnotResolverStatus>,
    now: Timestamp,
) -> Vec<Condition> {
    for c in &mut conditions {
        let before = previous
            .into_iter()
            .flat_map(|p| p.conditions.iter())
            .find(|p| p.type_ == c.type_);
        c.last_transition_time = match before {
            Some(b) if b.status == c.status => b.last_transition_time.clone(),
            _ => Time(whole_seconds(now.as_millisecond())),
        };
    }
    conditions
}

fn phase(p: &Phase) -> ResolverPhase {
    match p {
        Phase::Idle | Phase::Failed => ResolverPhase::Idle,
        Phase::Starting => ResolverPhase::Starting,
        Phase::Canary => ResolverPhase::Canary,
        Phase::Rolling { .. } => ResolverPhase::Rolling,
        Phase::Finishing => ResolverPhase::Finishing,
        Phase::RollingBack => ResolverPhase::RollingBack,
    }
}

/// A reconciler condition as a Kubernetes condition (same type, status, reason, message).
fn k8s_condition(c: &ReconcileCondition) -> Condition {
    Condition {
        type_: format!("{:?}", c.kind),
        status: if c.status { "True" } else { "False" }.into(),
        reason: c.reason.clone(),
        message: c.message.clone(),
        observed_generation: i64::try_from(c.observed_change_seq).ok(),
        last_transition_time: Time(whole_seconds(
            i64::try_from(c.last_transition_unix_ms).unwrap_or(0),
        )),
    }
}

/// The status of a resolver the reconciler works on, mapped field by field from its [`Status`]
/// (conditions included: the reconciler derives them, with OpenShift semantics).
pub fn from_status(s: &Status, name: &str, generation: i64) -> KnotResolverStatus {
    let target = s.desired_revision.clone();
    let count = |f: &dyn Fn(&crate::reconcile::ObservedSlot) -> bool| {
        s.workers.iter().filter(|w| f(w)).count() as i32
    };
    let mut failed: Vec<RevisionFailure> = s.failures.iter().map(failure).collect();
    if failed.len() > MAX_FAILED_REVISIONS {
        failed.drain(..failed.len() - MAX_FAILED_REVISIONS);
    }
    KnotResolverStatus {
        observed_generation: Some(generation),
        current_revision: s.current_revision.clone(),
        update_revision: target.clone(),
        replicas: count(&|w| !matches!(w.state, SlotState::Stopped)),
        ready_replicas: count(&|w| w.state == SlotState::Ready),
        updated_replicas: count(&|w| Some(&w.revision) == target.as_ref()),
        phase: Some(phase(&s.phase)),
        selector: Some(selector_string(name)),
        last_failure: s.last_failure.as_ref().map(failure),
        failed_revisions: failed,
        conditions: s.conditions.iter().map(k8s_condition).collect(),
    }
}

/// The previous status for a resolver the controller did not step (nothing was touched), at
/// `generation`, with its conditions but those of `replaced` types.
fn untouched(
    previous: Option<&KnotResolverStatus>,
    name: &str,
    generation: i64,
    replaced: &[&str],
) -> (KnotResolverStatus, Vec<Condition>) {
    let mut s = previous.cloned().unwrap_or_default();
    s.observed_generation = Some(generation);
    s.selector = Some(selector_string(name));
    let conditions = s
        .conditions
        .iter()
        .filter(|c| !replaced.contains(&c.type_.as_str()))
        .cloned()
        .collect();
    (s, conditions)
}

/// The status of a resolver whose spec the validator refused: Degraded `InvalidConfig` with
/// every error (pointer and rule); the rest as before (nothing was touched).
pub fn invalid(
    previous: Option<&KnotResolverStatus>,
    name: &str,
    generation: i64,
    errors: &str,
    now: Timestamp,
) -> KnotResolverStatus {
    let (mut s, mut conditions) = untouched(previous, name, generation, &[DEGRADED, PROGRESSING]);
    if !conditions.iter().any(|c| c.type_ == AVAILABLE) {
        conditions.push(condition(
            AVAILABLE,
            false,
            "NoReadyPods",
            String::new(),
            generation,
        ));
    }
    conditions.push(condition(
        PROGRESSING,
        false,
        "InvalidConfig",
        "the spec was refused".into(),
        generation,
    ));
    conditions.push(condition(
        DEGRADED,
        true,
        "InvalidConfig",
        errors.to_string(),
        generation,
    ));
    s.conditions = stamp(conditions, previous, now);
    s
}

/// `s` of a paused resolver (`spec.rollout.paused`): Progressing False `Paused` (stamped
/// against `previous`); the rest as the reconciler reports it.
pub fn pause(
    s: &mut KnotResolverStatus,
    previous: Option<&KnotResolverStatus>,
    generation: i64,
    now: Timestamp,
) {
    let progressing = condition(
        PROGRESSING,
        false,
        PAUSED,
        "spec.rollout.paused is true: no rollout step is taken until it is false; a missing \
         or exited pod is re-created on the current revision"
            .into(),
        generation,
    );
    s.conditions.retain(|c| c.type_ != PROGRESSING);
    s.conditions.extend(stamp(vec![progressing], previous, now));
}

/// Whether `s` reports a paused resolver.
pub fn is_paused(s: &KnotResolverStatus) -> bool {
    s.conditions
        .iter()
        .any(|c| c.type_ == PROGRESSING && c.reason == PAUSED)
}

/// What a rollout's progress is measured by: the target and each slot's revision and state
/// (a change of any is progress).
pub fn progress_fingerprint(s: &Status) -> String {
    let mut out = format!("{:?}", s.desired_revision);
    for w in &s.workers {
        out.push_str(&format!(" {}={}:{:?}", w.slot, w.revision, w.state));
    }
    out
}

/// When Progressing is True and nothing progressed since `since_ms` for `deadline`: Progressing
/// False and Degraded True, both `ProgressDeadlineExceeded` with what the rollout waits for
/// (the pods are left as they are). Returns whether it did.
pub fn exceed_deadline(
    s: &mut KnotResolverStatus,
    since_ms: u64,
    now_ms: u64,
    deadline: Duration,
    waiting_for: Option<&str>,
    generation: i64,
) -> bool {
    let progressing = s
        .conditions
        .iter()
        .any(|c| c.type_ == PROGRESSING && c.status == "True");
    let deadline_ms = u64::try_from(deadline.as_millis()).unwrap_or(u64::MAX);
    if !progressing || now_ms.saturating_sub(since_ms) < deadline_ms {
        return false;
    }
    // Whole seconds, as the API stores them: a status read back compares equal.
    let at = Time(whole_seconds(
        i64::try_from(since_ms.saturating_add(deadline_ms)).unwrap_or(0),
    ));
    let message = format!(
        "no progress for {} s (spec.rollout.progressDeadlineSeconds); waiting for: {}",
        deadline.as_secs(),
        waiting_for.unwrap_or("-")
    );
    s.conditions
        .retain(|c| c.type_ != PROGRESSING && c.type_ != DEGRADED);
    for type_ in [PROGRESSING, DEGRADED] {
        let mut c = condition(
            type_,
            type_ == DEGRADED,
            PROGRESS_DEADLINE_EXCEEDED,
            message.clone(),
            generation,
        );
        c.last_transition_time = at.clone();
        s.conditions.push(c);
    }
    true
}

/// Whether `s` reports an exceeded progress deadline.
pub fn deadline_exceeded(s: &KnotResolverStatus) -> bool {
    s.conditions
        .iter()
        .any(|c| c.type_ == PROGRESSING && c.reason == PROGRESS_DEADLINE_EXCEEDED)
}

/// The message of condition `type_` (empty when absent).
pub fn condition_message(s: &KnotResolverStatus, type_: &str) -> String {
    s.conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| c.message.clone())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::{ObservedSlot, Slot};

    fn slot(i: u16, rev: &str, state: SlotState) -> ObservedSlot {
        ObservedSlot::new(Slot::Worker(i), rev.into(), state, Duration::ZERO)
    }

    fn cond<'a>(s: &'a KnotResolverStatus, t: &str) -> &'a Condition {
        s.conditions.iter().find(|c| c.type_ == t).expect(t)
    }

    #[test]
    fn maps_counts_and_the_reconcilers_conditions() {
        let f = Failure {
            revision: "b".into(),
            slot: Some(Slot::Surge),
            reason: "error: x".into(),
            at_unix_ms: 1_700_000_000_000,
        };
        let mut s = Status {
            desired_revision: Some("b".into()),
            current_revision: Some("a".into()),
            change_seq: 2,
            workers_desired: 2,
            failed_revisions: vec!["b".into()],
            failures: vec![f.clone()],
            last_failure: Some(f),
            workers: vec![
                slot(0, "a", SlotState::Ready),
                slot(1, "b", SlotState::Starting),
            ],
            ..Status::default()
        };
        s.set_conditions(1_700_000_001_000);
        let k = from_status(&s, "r", 2);
        assert_eq!(
            (k.replicas, k.ready_replicas, k.updated_replicas),
            (2, 1, 1)
        );
        assert_eq!(k.observed_generation, Some(2));
        let d = cond(&k, DEGRADED);
        assert_eq!(d.status, "True");
        assert_eq!(d.reason, s.conditions[2].reason);
        assert!(d.message.contains("error: x"), "{}", d.message);
        assert_eq!(d.observed_generation, Some(2));
        assert_eq!(
            d.last_transition_time,
            Time(Timestamp::from_millisecond(1_700_000_001_000).expect("ts"))
        );
        // Read back from the API (whole seconds), the status is equal: not written again.
        let mut fresh = Status::default();
        fresh.set_conditions(1_700_000_002_345);
        let fresh = from_status(&fresh, "r", 2);
        assert!(!fresh.conditions.is_empty());
        let back: KnotResolverStatus =
            serde_json::from_value(serde_json::to_value(&fresh).expect("json")).expect("status");
        assert_eq!(back, fresh);
        let inv = invalid(
            Some(&fresh),
            "r",
            3,
            "x",
            Timestamp::from_millisecond(1_700_000_009_999).expect("ts"),
        );
        let back: KnotResolverStatus =
            serde_json::from_value(serde_json::to_value(&inv).expect("json")).expect("status");
        assert_eq!(back, inv);
        assert_eq!(cond(&k, PROGRESSING).status, "False");
        let durable = durable_from(Some(&k));
        assert_eq!(durable.last_good.as_deref(), Some("a"));
        assert_eq!(durable.target.as_deref(), Some("b"));
        assert_eq!(durable.failed["b"].reason, "error: x");
        assert_eq!(durable.failed["b"].at_unix_ms, 1_700_000_000_000);
    }

    #[test]
    fn invalid_config_keeps_the_rest() {
        let prev = KnotResolverStatus {
            current_revision: Some("a".into()),
            ..KnotResolverStatus::default()
        };
        let k = invalid(
            Some(&prev),
            "r",
            5,
            "/spec/config/x: bad",
            Timestamp::UNIX_EPOCH,
        );
        assert_eq!(k.current_revision.as_deref(), Some("a"));
        let d = cond(&k, DEGRADED);
        assert_eq!(
            (d.reason.as_str(), d.message.as_str()),
            ("InvalidConfig", "/spec/config/x: bad")
        );
    }

    fn progressing(workers: Vec<ObservedSlot>) -> Status {
        let mut s = Status {
            desired_revision: Some("b".into()),
            current_revision: Some("a".into()),
            change_seq: 3,
            workers_desired: 1,
            workers,
            waiting_for: Some("canary pending".into()),
            ..Status::default()
        };
        s.set_conditions(1_000);
        s
    }

    #[test]
    fn a_stalled_rollout_exceeds_its_deadline_with_a_stable_transition_time() {
        let s = progressing(vec![
            slot(0, "a", SlotState::Ready),
            slot(1, "b", SlotState::Pending),
        ]);
        let deadline = Duration::from_secs(10);
        let mut k = from_status(&s, "r", 3);
        assert!(!exceed_deadline(&mut k, 50_000, 59_999, deadline, None, 3));
        assert!(!deadline_exceeded(&k));
        assert_eq!(cond(&k, PROGRESSING).status, "True");
        assert!(exceed_deadline(
            &mut k,
            50_000,
            61_000,
            deadline,
            s.waiting_for.as_deref(),
            3
        ));
        assert!(deadline_exceeded(&k));
        let p = cond(&k, PROGRESSING);
        assert_eq!(
            (p.status.as_str(), p.reason.as_str()),
            ("False", PROGRESS_DEADLINE_EXCEEDED)
        );
        assert!(p.message.contains("canary pending"), "{}", p.message);
        let d = cond(&k, DEGRADED);
        assert_eq!(
            (d.status.as_str(), d.reason.as_str()),
            ("True", PROGRESS_DEADLINE_EXCEEDED)
        );
        // Written again later: the same status (no write per reconcile).
        let mut again = from_status(&s, "r", 3);
        exceed_deadline(
            &mut again,
            50_000,
            90_000,
            deadline,
            s.waiting_for.as_deref(),
            3,
        );
        assert_eq!(again, k);
        // Progress changes the fingerprint; a converged resolver never exceeds.
        let moved = progressing(vec![
            slot(0, "a", SlotState::Ready),
            slot(1, "b", SlotState::Starting),
        ]);
        assert_ne!(progress_fingerprint(&moved), progress_fingerprint(&s));
        let mut done = from_status(&Status::default(), "r", 3);
        assert!(!exceed_deadline(&mut done, 0, 1_000_000, deadline, None, 3));
    }

    #[test]
    fn paused_replaces_progressing_only_and_is_stable() {
        let s = progressing(vec![slot(0, "a", SlotState::Ready)]);
        let prev = from_status(&s, "r", 3);
        let mut k = from_status(&s, "r", 4);
        pause(&mut k, Some(&prev), 4, Timestamp::UNIX_EPOCH);
        assert!(is_paused(&k) && !is_paused(&prev));
        assert_eq!(k.current_revision.as_deref(), Some("a"));
        let p = cond(&k, PROGRESSING);
        assert_eq!((p.status.as_str(), p.reason.as_str()), ("False", PAUSED));
        assert_eq!(p.observed_generation, Some(4));
        assert_eq!(cond(&k, AVAILABLE), cond(&prev, AVAILABLE));
        assert_eq!(k.conditions.len(), prev.conditions.len());
        // Stable: a second reconcile computes the same status (no write per reconcile).
        let mut again = from_status(&s, "r", 4);
        pause(&mut again, Some(&k), 4, Timestamp::now());
        assert_eq!(again, k);
    }
}
