//! The planner: one pure function from (desired, observed, rollout) to the next action.
//!
//! Level-triggered: every decision is re-derived from what the backend shows, so calling it again
//! after any step (or after an operator restart with an empty [`Rollout`]) gives the right next
//! step. Backend requests are asynchronous: a start is observed `Pending`/`Starting` until
//! `Ready`, a drain `Draining` until `Drained`, a stop `Stopping` until the slot is gone. Rules,
//! in priority order:
//!
//! 0. Adoption: without a stored last good revision, the one the running fleet serves is adopted
//!    (`AdoptLastGood`).
//! 1. A worker on an unproven revision (not the last good one) that exited, failed, or did not
//!    become ready within `start_timeout` (counted after `Pending`) fails its gate: `MarkFailed`.
//! 2. The target is the desired revision unless it failed; then the last good revision
//!    (rollback). The backend serves the target's endpoints (`SetEndpoints`; a rejection fails
//!    the revision) and has the target staged (`Stage`) before any worker starts on it.
//! 3. A retirement under way is finished first: a `Drained` worker is stopped, a `Draining` or
//!    `Stopping` one waited for.
//! 4. Slots run other revisions than the target (a rollout): the surge slot must first serve the
//!    target (the canary; for a rollback any ready surge worker serves as spare capacity), then
//!    missing slots are started and stale slots replaced one at a time: drain → stop → start →
//!    ready (+ `soak`). A ready slot is only retired while the surge slot serves, so N workers
//!    always serve, and nothing is stopped before its replacement (the surge) is ready.
//! 5. Otherwise: restart exited slots, start missing ones (in parallel), wait for starting ones,
//!    retire left-over and surge slots, converge the cache GC, mark the target good, collect
//!    revisions no longer kept, done.
//!
//! Paused (`Desired::paused`): after rule 1, no rollout step is taken. The fleet is only kept
//! whole, as a paused Deployment's ReplicaSets keep their replicas: a retirement under way is
//! finished, an empty or exited regular slot is started on the last good revision, slots above
//! `workers` are retired. Workers of any other revision (a rollout stopped half-way, its
//! canary) are left as they are.
//!
//! A worker is never stopped while starting (kresd would lose an early SIGTERM), except one on a
//! failed revision that outlived its start timeout (or is still `Pending`), and a `Pending` one
//! of a superseded revision (a spec change that replaces an unschedulable canary).

use std::collections::BTreeSet;
use std::time::Duration;

use serde::Serialize;

use super::model::{Desired, GcSpec, Observed, ObservedSlot, Revision, Slot, SlotState};
use super::rollout::{Phase, Rollout};

/// The next step for the executor.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "action")]
pub enum Action {
    /// No last good revision is stored: take the one the running fleet serves.
    AdoptLastGood {
        /// The revision.
        revision: Revision,
    },
    /// Serve on the target's endpoints; a rejection fails `revision`.
    SetEndpoints {
        /// The revision the endpoints belong to.
        revision: Revision,
        /// The endpoints, in the backend's notation.
        endpoints: Vec<String>,
    },
    /// Stage the desired revision (config + worker template) in the backend.
    Stage {
        /// The desired revision.
        revision: Revision,
    },
    /// Start a worker in an empty (or stopped/exited) slot on `revision`.
    StartSlot {
        /// Slot to start.
        slot: Slot,
        /// Revision to run.
        revision: Revision,
    },
    /// The slot's ready worker stops taking new work and finishes what it holds.
    DrainSlot {
        /// Slot to drain.
        slot: Slot,
    },
    /// Stop the slot's worker and remove the slot.
    StopSlot {
        /// Slot to stop.
        slot: Slot,
    },
    /// A gate failed: reject `revision`.
    MarkFailed {
        /// The rejected revision.
        revision: Revision,
        /// The slot whose gate failed.
        slot: Slot,
        /// What the gate saw.
        reason: String,
    },
    /// Every regular slot runs `revision`, ready: it is the last good revision now.
    MarkGood {
        /// The revision.
        revision: Revision,
    },
    /// (Re)start the cache garbage collector with these settings.
    StartGc {
        /// The settings.
        spec: GcSpec,
    },
    /// Stop the cache garbage collector.
    StopGc,
    /// Delete staged revisions not in `keep`.
    CollectRevisions {
        /// The revisions to keep.
        keep: BTreeSet<Revision>,
    },
    /// Nothing to do until something changes (a worker becomes ready, a deadline passes).
    Wait {
        /// Why.
        reason: String,
    },
    /// Rollouts are paused and the fleet is whole: nothing to do until the desired state or a
    /// worker changes.
    Paused,
    /// Converged.
    Done,
}

fn wait(reason: impl Into<String>) -> Action {
    Action::Wait {
        reason: reason.into(),
    }
}

/// The action that takes a worker out of service: a ready one is drained first, a drained (or
/// not running) one stopped, one whose drain or stop is under way waited for.
fn retire(s: &ObservedSlot) -> Action {
    match s.state {
        SlotState::Ready => Action::DrainSlot { slot: s.slot },
        SlotState::Draining => wait(format!("{} draining", s.slot)),
        SlotState::Stopping => wait(format!("{} stopping", s.slot)),
        _ => Action::StopSlot { slot: s.slot },
    }
}

/// The step of a paused fleet (see the module documentation): keep `n` regular slots running,
/// on the last good revision where one has to be started.
fn hold(
    n: u16,
    slots: &[&ObservedSlot],
    good: Option<&Revision>,
    observed: &Observed,
    rollout: &Rollout,
) -> (Phase, Action) {
    if let Some(s) = slots.iter().find(|s| s.state.is_retiring()) {
        return (rollout.phase.clone(), retire(s));
    }
    let empty = (0..n)
        .map(Slot::Worker)
        .find(|slot| observed.slot(*slot).is_none_or(|s| s.state.is_down()));
    match (empty, good) {
        (Some(slot), Some(good)) => {
            return (
                Phase::Starting,
                Action::StartSlot {
                    slot,
                    revision: good.clone(),
                },
            );
        }
        (Some(slot), None) => {
            return (
                rollout.phase.clone(),
                wait(format!(
                    "paused; {slot} is empty and no revision is proven good"
                )),
            );
        }
        (None, _) => {}
    }
    if let Some(s) = slots
        .iter()
        .find(|s| matches!(s.slot, Slot::Worker(i) if i >= n) && !s.state.is_starting())
    {
        return (rollout.phase.clone(), retire(s));
    }
    // A started worker is waited for (its start timeout still gates an unproven one); a pending
    // one is not (it may stay unschedulable for as long as it likes).
    if let Some(s) = slots.iter().find(|s| s.state == SlotState::Starting) {
        return (rollout.phase.clone(), wait(format!("{} starting", s.slot)));
    }
    (rollout.phase.clone(), Action::Paused)
}

/// The next action. See the module documentation for the rules.
pub fn plan(desired: &Desired, observed: &Observed, rollout: &Rollout) -> Action {
    plan_with_phase(desired, observed, rollout).1
}

/// The next action and the rollout phase it belongs to.
pub fn plan_with_phase(
    desired: &Desired,
    observed: &Observed,
    rollout: &Rollout,
) -> (Phase, Action) {
    let failed = |r: &Revision| rollout.durable.failed.contains_key(r);
    let good = rollout.effective_last_good(&desired.revision, observed);
    // 0. Adopted mid-rollout without a stored state: remember what was serving before.
    if rollout.durable.last_good.is_none()
        && let Some(g) = &good
        && *g != desired.revision
    {
        return (
            rollout.phase.clone(),
            Action::AdoptLastGood {
                revision: g.clone(),
            },
        );
    }
    let mut slots: Vec<&ObservedSlot> = observed.slots.iter().collect();
    slots.sort_by_key(|s| s.slot);
    let age = |s: &ObservedSlot| observed.now.saturating_sub(s.since);
    let timed_out =
        |s: &ObservedSlot| s.state == SlotState::Starting && age(s) > desired.start_timeout;
    let failed_phase = if good.is_some() {
        Phase::RollingBack
    } else {
        Phase::Failed
    };

    // 1. Gates of unproven revisions.
    for s in &slots {
        let proven = good.as_ref() == Some(&s.revision);
        if proven || failed(&s.revision) {
            continue;
        }
        let reason = match s.state {
            SlotState::Exited | SlotState::Failed => {
                Some(s.detail.clone().unwrap_or_else(|| "worker exited".into()))
            }
            SlotState::Starting if timed_out(s) => Some(format!(
                "not ready within {}{}",
                fmt_duration(desired.start_timeout),
                s.detail
                    .as_ref()
                    .map(|d| format!(": {d}"))
                    .unwrap_or_default()
            )),
            _ => None,
        };
        if let Some(reason) = reason {
            return (
                failed_phase,
                Action::MarkFailed {
                    revision: s.revision.clone(),
                    slot: s.slot,
                    reason,
                },
            );
        }
    }

    // Workers stuck starting on a failed revision are stopped once their deadline passed; a
    // pending one at once (it holds nothing).
    for s in &slots {
        if failed(&s.revision) && (timed_out(s) || s.state == SlotState::Pending) {
            return (failed_phase, Action::StopSlot { slot: s.slot });
        }
    }

    if desired.paused {
        return hold(desired.workers, &slots, good.as_ref(), observed, rollout);
    }

    // 2. The target.
    let rolling_back = failed(&desired.revision);
    let target = if !rolling_back {
        desired.revision.clone()
    } else if let Some(g) = good.clone() {
        g
    } else {
        // Nothing to fall back to: clear away workers of failed revisions, then wait for a change.
        for s in &slots {
            if failed(&s.revision) && !s.state.is_starting() {
                return (Phase::Failed, retire(s));
            }
        }
        if let Some(s) = slots.iter().find(|s| s.state.is_starting()) {
            return (Phase::Failed, wait(format!("{} starting", s.slot)));
        }
        return (
            Phase::Failed,
            wait(format!(
                "revision {} failed; no good revision to fall back to",
                desired.revision
            )),
        );
    };
    let roll_phase = |p: Phase| if rolling_back { Phase::RollingBack } else { p };
    // Preparing (endpoints, staging): a rollout when something else runs, else a start.
    let preparing = if slots.iter().any(|s| s.revision != target) {
        roll_phase(Phase::Canary)
    } else if slots.is_empty() {
        Phase::Starting
    } else {
        rollout.phase.clone()
    };
    // The target's endpoints: the desired ones, or the last good revision's from the history
    // (unknown for a last good revision adopted without a stored state: left as they are).
    let endpoints = if target == desired.revision {
        Some(desired.listen.clone())
    } else {
        rollout.durable.record(&target).map(|r| r.endpoints.clone())
    };
    if let Some(endpoints) = endpoints
        && observed.endpoints.as_ref() != Some(&endpoints)
    {
        return (
            preparing,
            Action::SetEndpoints {
                revision: target,
                endpoints,
            },
        );
    }
    if target == desired.revision && !observed.staged.contains(&target) {
        return (preparing, Action::Stage { revision: target });
    }

    // A pending worker of a superseded revision (neither the target nor the last good one)
    // holds nothing (no process yet, e.g. unschedulable): it goes at once instead of being
    // waited for.
    for s in &slots {
        if s.state == SlotState::Pending
            && s.revision != target
            && good.as_ref() != Some(&s.revision)
        {
            return (preparing, Action::StopSlot { slot: s.slot });
        }
    }

    // 3. A retirement under way.
    for s in &slots {
        if s.state.is_retiring() {
            return (rollout.phase.clone(), retire(s));
        }
    }

    let proven_target = good.as_ref() == Some(&target);
    let n = desired.workers;
    let regular = |s: &&&ObservedSlot| matches!(s.slot, Slot::Worker(i) if i < n);
    let stale: Vec<&ObservedSlot> = slots
        .iter()
        .filter(regular)
        .filter(|s| s.revision != target)
        .copied()
        .collect();
    let missing: Vec<Slot> = (0..n)
        .map(Slot::Worker)
        .filter(|slot| observed.slot(*slot).is_none())
        .collect();
    let starting = slots.iter().find(|s| s.state.is_starting());
    let surge = observed.slot(Slot::Surge);
    let ready = |s: &ObservedSlot| s.state == SlotState::Ready;
    // A worker on the target serves once it stayed ready for `soak`.
    let soaking = |s: &ObservedSlot| ready(s) && age(s) < desired.soak;
    let serving = |s: &ObservedSlot| ready(s) && !soaking(s);

    // The surge worker runs another revision than the target and must go. While it serves and
    // a regular slot is missing (a scale-up together with a change, or a superseded rollout
    // that emptied a slot), the slot is filled first, on the last good revision: the surge
    // worker is part of the capacity until then.
    let make_room = |s: &ObservedSlot| match missing.first() {
        Some(slot) if ready(s) => Action::StartSlot {
            slot: *slot,
            revision: good.clone().unwrap_or_else(|| s.revision.clone()),
        },
        _ => retire(s),
    };

    // 4. A rollout: some regular slots run another revision.
    if !stale.is_empty() {
        if let Some(s) = starting {
            return (
                roll_phase(phase_of(s.slot)),
                wait(format!("{} starting", s.slot)),
            );
        }
        if let Some(s) = slots.iter().find(|s| s.revision == target && soaking(s)) {
            return (
                roll_phase(phase_of(s.slot)),
                wait(format!("{} soaking", s.slot)),
            );
        }
        let surge_ok = match surge {
            None => {
                // A rollback whose stale workers all stopped serving needs no spare capacity.
                if !proven_target || stale.iter().any(|s| ready(s)) {
                    return (
                        roll_phase(Phase::Canary),
                        Action::StartSlot {
                            slot: Slot::Surge,
                            revision: target,
                        },
                    );
                }
                false
            }
            Some(s) if s.revision == target => {
                if !serving(s) {
                    // Exited on the (proven) target: remove it; it is started again next step.
                    return (roll_phase(Phase::Canary), retire(s));
                }
                true
            }
            Some(s) => {
                // The surge slot runs another revision: spare capacity for a rollback, else it
                // makes room for the target's canary (a superseded rollout).
                if proven_target && ready(s) {
                    true
                } else {
                    return (roll_phase(Phase::Canary), make_room(s));
                }
            }
        };
        if surge_ok && let Some(slot) = missing.first() {
            return (
                roll_phase(phase_of(*slot)),
                Action::StartSlot {
                    slot: *slot,
                    revision: target,
                },
            );
        }
        // Replace not-serving stale slots first, then serving ones (those only with the surge up).
        let next = stale
            .iter()
            .find(|s| !ready(s))
            .or_else(|| if surge_ok { stale.first() } else { None });
        return match next {
            Some(s) => (roll_phase(phase_of(s.slot)), retire(s)),
            None => (
                roll_phase(Phase::Canary),
                wait("waiting for spare capacity"),
            ),
        };
    }

    // 5. Every regular slot runs the target (or is missing).
    let others_exist = slots.iter().any(|s| s.revision != target);
    for s in slots.iter().filter(regular) {
        if s.state.is_down() {
            return (
                roll_phase(Phase::Starting),
                Action::StartSlot {
                    slot: s.slot,
                    revision: target.clone(),
                },
            );
        }
    }
    let canary_ready = surge.is_some_and(|s| s.revision == target && serving(s));
    if let Some(slot) = missing.first() {
        if proven_target || !others_exist || canary_ready {
            // A slot emptied by a replacement is part of the rollout; others are a start.
            let phase = if surge.is_some() {
                phase_of(*slot)
            } else {
                Phase::Starting
            };
            return (
                roll_phase(phase),
                Action::StartSlot {
                    slot: *slot,
                    revision: target,
                },
            );
        }
        // The surge slot runs something else: make room for the target's canary.
        if let Some(s) = surge.filter(|s| s.revision != target && !s.state.is_starting()) {
            return (roll_phase(Phase::Canary), make_room(s));
        }
        if surge.is_none() {
            return (
                roll_phase(Phase::Canary),
                Action::StartSlot {
                    slot: Slot::Surge,
                    revision: target,
                },
            );
        }
    }
    if let Some(s) = starting {
        let phase = match s.slot {
            Slot::Surge => Phase::Canary,
            Slot::Worker(i) if surge.is_some() => Phase::Rolling { slot: i },
            Slot::Worker(_) => Phase::Starting,
        };
        return (roll_phase(phase), wait(format!("{} starting", s.slot)));
    }
    if let Some(s) = slots
        .iter()
        .find(|s| matches!(s.slot, Slot::Worker(i) if i >= n))
    {
        return (roll_phase(Phase::Finishing), retire(s));
    }
    if let Some(s) = surge {
        return (roll_phase(Phase::Finishing), retire(s));
    }
    if observed.gc != desired.gc {
        return match &desired.gc {
            Some(spec) => (
                roll_phase(Phase::Finishing),
                Action::StartGc { spec: spec.clone() },
            ),
            None => (roll_phase(Phase::Finishing), Action::StopGc),
        };
    }
    if let Some(s) = slots.iter().find(|s| soaking(s)) {
        return (
            roll_phase(Phase::Finishing),
            wait(format!("{} soaking", s.slot)),
        );
    }
    if rollout.durable.last_good.as_ref() != Some(&target) && n > 0 {
        return (
            roll_phase(Phase::Finishing),
            Action::MarkGood { revision: target },
        );
    }
    let mut keep = rollout.durable.kept_revisions();
    keep.insert(target);
    keep.extend(slots.iter().map(|s| s.revision.clone()));
    if observed.staged.iter().any(|r| !keep.contains(r)) {
        return (Phase::Idle, Action::CollectRevisions { keep });
    }
    (Phase::Idle, Action::Done)
}

/// The phase a step on `slot` belongs to during a rollout.
fn phase_of(slot: Slot) -> Phase {
    match slot {
        Slot::Surge => Phase::Canary,
        Slot::Worker(i) => Phase::Rolling { slot: i },
    }
}

fn fmt_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// What converging to `desired` from `observed` would do if every request succeeded at once
/// (starts become ready, drains and stops complete): the planner's own actions in order, for dry
/// runs. Bounded: at most a few steps per slot.
pub fn preview(desired: &Desired, observed: &Observed, rollout: &Rollout) -> Vec<Action> {
    let mut observed = observed.clone();
    let mut rollout = rollout.clone();
    rollout.note_desired(&desired.revision, 0);
    let mut actions = vec![];
    let bound = 8 * (usize::from(desired.workers) + observed.slots.len()) + 32;
    for _ in 0..bound {
        let action = plan(desired, &observed, &rollout);
        let now = observed.now;
        let mut set = |slot: Slot, state: SlotState| {
            if let Some(s) = observed.slots.iter_mut().find(|s| s.slot == slot) {
                s.state = state;
                s.since = now;
            }
        };
        match &action {
            Action::AdoptLastGood { revision } => rollout.adopt_last_good(revision.clone()),
            Action::SetEndpoints { endpoints, .. } => observed.endpoints = Some(endpoints.clone()),
            Action::Stage { revision } => {
                observed.staged.insert(revision.clone());
            }
            Action::StartSlot { slot, revision } => {
                observed.slots.retain(|s| s.slot != *slot);
                observed.slots.push(ObservedSlot::new(
                    *slot,
                    revision.clone(),
                    SlotState::Starting,
                    now,
                ));
            }
            Action::DrainSlot { slot } => set(*slot, SlotState::Drained),
            Action::StopSlot { slot } => observed.slots.retain(|s| s.slot != *slot),
            Action::MarkFailed { .. } | Action::Paused | Action::Done => {
                actions.push(action);
                break;
            }
            Action::MarkGood { revision } => rollout.mark_good(revision, 0),
            Action::StartGc { spec } => observed.gc = Some(spec.clone()),
            Action::StopGc => observed.gc = None,
            Action::CollectRevisions { keep } => observed.staged.retain(|r| keep.contains(r)),
            Action::Wait { .. } => {
                // Time passes: what was requested completes, a soak ends.
                observed.now += desired.soak + Duration::from_millis(1);
                let now = observed.now;
                for s in &mut observed.slots {
                    let next = match s.state {
                        SlotState::Pending | SlotState::Starting => SlotState::Ready,
                        SlotState::Draining => SlotState::Drained,
                        other => other,
                    };
                    if next != s.state {
                        s.state = next;
                        s.since = now;
                    }
                }
                observed.slots.retain(|s| s.state != SlotState::Stopping);
                continue;
            }
        }
        actions.push(action);
    }
    actions
}
