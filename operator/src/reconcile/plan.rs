//! The planner: one pure function from (desired, observed, rollout) to the next action.
//!
//! Level-triggered: every decision is re-derived from what the backend shows, so calling it again
//! after any step (or after an operator restart with an empty [`Rollout`]) gives the right next
//! step. Rules, in priority order:
//!
//! 1. A worker on an unproven revision (not the last good one) that exited, failed, or did not
//!    become ready within `start_timeout` fails its gate: `MarkFailed`.
//! 2. The target is the desired revision unless it failed; then the last good revision (rollback).
//! 3. Slots run other revisions than the target (a rollout): the surge slot must first serve the
//!    target (the canary; for a rollback any ready surge worker serves as spare capacity), then
//!    missing slots are started and stale slots replaced one at a time, each gated. A ready slot
//!    is only replaced while the surge slot serves, so N workers always serve.
//! 4. Otherwise: restart exited slots, start missing ones (in parallel), wait for starting ones,
//!    stop left-over and surge slots, converge the cache GC, mark the target good, done.
//!
//! A worker is never stopped while starting (kresd would lose an early SIGTERM), except one on a
//! failed revision that outlived its start timeout.

use std::time::Duration;

use serde::Serialize;

use super::model::{Desired, GcSpec, Observed, ObservedSlot, Revision, Slot, SlotState};
use super::rollout::{Phase, Rollout};

/// The next step for the executor.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "action")]
pub enum Action {
    /// Start a worker in an empty (or stopped/exited) slot on `revision`.
    StartSlot {
        /// Slot to start.
        slot: Slot,
        /// Revision to run.
        revision: Revision,
    },
    /// Stop the slot's worker, then start one on `revision` in its place.
    ReplaceSlot {
        /// Slot to replace.
        slot: Slot,
        /// Revision to run.
        revision: Revision,
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
    /// Nothing to do until something changes (a worker becomes ready, a deadline passes).
    Wait {
        /// Why.
        reason: String,
    },
    /// Converged.
    Done,
}

fn wait(reason: impl Into<String>) -> Action {
    Action::Wait {
        reason: reason.into(),
    }
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
    let good = rollout.effective_last_good(&desired.revision, observed);
    let mut slots: Vec<&ObservedSlot> = observed.slots.iter().collect();
    slots.sort_by_key(|s| s.slot);
    let age = |s: &ObservedSlot| observed.now.saturating_sub(s.since);
    let timed_out = |s: &ObservedSlot| age(s) > desired.start_timeout;
    let failed_phase = if good.is_some() {
        Phase::RollingBack
    } else {
        Phase::Failed
    };

    // 1. Gates of unproven revisions.
    for s in &slots {
        let proven = good.as_ref() == Some(&s.revision);
        if proven || rollout.durable.failed.contains_key(&s.revision) {
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

    // Workers stuck starting on a failed revision are stopped once their deadline passed.
    for s in &slots {
        if rollout.durable.failed.contains_key(&s.revision)
            && s.state == SlotState::Starting
            && timed_out(s)
        {
            return (failed_phase, Action::StopSlot { slot: s.slot });
        }
    }

    // 2. The target.
    let rolling_back = rollout.durable.failed.contains_key(&desired.revision);
    let target = if !rolling_back {
        desired.revision.clone()
    } else if let Some(g) = good.clone() {
        g
    } else {
        // Nothing to fall back to: clear away workers of failed revisions, then wait for a change.
        for s in &slots {
            if rollout.durable.failed.contains_key(&s.revision) && s.state != SlotState::Starting {
                return (Phase::Failed, Action::StopSlot { slot: s.slot });
            }
        }
        if let Some(s) = slots.iter().find(|s| s.state == SlotState::Starting) {
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
    let starting = slots.iter().find(|s| s.state == SlotState::Starting);
    let surge = observed.slot(Slot::Surge);
    let serving = |s: &ObservedSlot| s.state == SlotState::Ready;
    let roll_phase = |p: Phase| if rolling_back { Phase::RollingBack } else { p };

    // 3. A rollout: some regular slots run another revision.
    if !stale.is_empty() {
        if let Some(s) = starting {
            let phase = match s.slot {
                Slot::Surge => Phase::Canary,
                Slot::Worker(i) => Phase::Rolling { slot: i },
            };
            return (roll_phase(phase), wait(format!("{} starting", s.slot)));
        }
        let surge_ok = match surge {
            None => {
                // A rollback whose stale workers all stopped serving needs no spare capacity.
                if !proven_target || stale.iter().any(|s| serving(s)) {
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
                    return (
                        roll_phase(Phase::Canary),
                        Action::StopSlot { slot: Slot::Surge },
                    );
                }
                true
            }
            Some(s) => {
                // The surge slot runs another revision: spare capacity for a rollback, else it
                // makes room for the target's canary (a superseded rollout).
                if proven_target && serving(s) {
                    true
                } else {
                    return (
                        roll_phase(Phase::Canary),
                        Action::StopSlot { slot: Slot::Surge },
                    );
                }
            }
        };
        if surge_ok && let Some(slot) = missing.first() {
            return (
                roll_phase(Phase::Starting),
                Action::StartSlot {
                    slot: *slot,
                    revision: target,
                },
            );
        }
        // Replace not-serving stale slots first, then serving ones (those only with the surge up).
        let next = stale
            .iter()
            .find(|s| !serving(s))
            .or_else(|| if surge_ok { stale.first() } else { None });
        return match next {
            Some(s) => {
                let i = match s.slot {
                    Slot::Worker(i) => i,
                    Slot::Surge => 0,
                };
                (
                    roll_phase(Phase::Rolling { slot: i }),
                    Action::ReplaceSlot {
                        slot: s.slot,
                        revision: target,
                    },
                )
            }
            None => (
                roll_phase(Phase::Canary),
                wait("waiting for spare capacity"),
            ),
        };
    }

    // 4. Every regular slot runs the target (or is missing).
    let others_exist = slots.iter().any(|s| s.revision != target);
    for s in slots.iter().filter(regular) {
        if matches!(
            s.state,
            SlotState::Exited | SlotState::Failed | SlotState::Stopped
        ) {
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
            return (
                roll_phase(Phase::Starting),
                Action::StartSlot {
                    slot: *slot,
                    revision: target,
                },
            );
        }
        // Scale-up together with a change while only the surge slot runs something else.
        if surge.is_some_and(|s| s.revision != target && s.state != SlotState::Starting) {
            return (
                roll_phase(Phase::Canary),
                Action::StopSlot { slot: Slot::Surge },
            );
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
        return (
            roll_phase(Phase::Finishing),
            Action::StopSlot { slot: s.slot },
        );
    }
    if surge.is_some() {
        return (
            roll_phase(Phase::Finishing),
            Action::StopSlot { slot: Slot::Surge },
        );
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
    if rollout.durable.last_good.as_ref() != Some(&target) && n > 0 {
        return (
            roll_phase(Phase::Finishing),
            Action::MarkGood { revision: target },
        );
    }
    (Phase::Idle, Action::Done)
}

fn fmt_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}
