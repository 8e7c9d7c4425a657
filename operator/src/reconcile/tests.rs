//! Planner tests: a small simulated backend applies each action, and the planner is driven to
//! convergence while invariants (capacity, no stop of a starting worker) are checked at each step.

use std::time::Duration;

use super::*;

const TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone, Copy, PartialEq, Debug)]
enum Outcome {
    Ready,
    Exit,
    Hang,
}

fn desired(rev: &str, workers: u16) -> Desired {
    Desired {
        revision: rev.into(),
        config: format!("-- {rev}"),
        workers,
        gc: None,
        start_timeout: TIMEOUT,
        listen: vec![],
    }
}

type OutcomeFn = dyn Fn(Slot, &str) -> Outcome;

/// A simulated backend: starting workers become ready (or exit / hang) on the next `Wait`.
struct Sim {
    observed: Observed,
    rollout: Rollout,
    next_pid: u32,
    outcome: Box<OutcomeFn>,
    actions: Vec<Action>,
    /// Minimum number of ready workers required at every step (checked once converged first).
    min_ready: Option<usize>,
}

impl Sim {
    fn new() -> Sim {
        Sim {
            observed: Observed::default(),
            rollout: Rollout::default(),
            next_pid: 100,
            outcome: Box::new(|_, _| Outcome::Ready),
            actions: vec![],
            min_ready: None,
        }
    }

    fn with_outcome(mut self, f: impl Fn(Slot, &str) -> Outcome + 'static) -> Sim {
        self.outcome = Box::new(f);
        self
    }

    fn pid(&self, slot: Slot) -> Option<u32> {
        self.observed.slot(slot).and_then(|s| s.pid)
    }

    fn pids(&self) -> Vec<(Slot, Option<u32>)> {
        let mut v: Vec<_> = self
            .observed
            .slots
            .iter()
            .map(|s| (s.slot, s.pid))
            .collect();
        v.sort();
        v
    }

    fn revisions(&self) -> Vec<(Slot, String)> {
        let mut v: Vec<_> = self
            .observed
            .slots
            .iter()
            .map(|s| (s.slot, s.revision.clone()))
            .collect();
        v.sort();
        v
    }

    fn ready(&self) -> usize {
        self.observed
            .slots
            .iter()
            .filter(|s| s.state == SlotState::Ready)
            .count()
    }

    fn start(&mut self, slot: Slot, revision: &str) {
        self.observed.slots.retain(|s| s.slot != slot);
        self.next_pid += 1;
        self.observed.slots.push(ObservedSlot {
            slot,
            revision: revision.into(),
            state: SlotState::Starting,
            pid: Some(self.next_pid),
            since: self.observed.now,
            ready_since_unix_ms: None,
            detail: None,
        });
    }

    /// Let time pass: starting workers become ready, exit or keep hanging.
    fn tick(&mut self, by: Duration) {
        self.observed.now += by;
        let now = self.observed.now;
        for s in &mut self.observed.slots {
            if s.state != SlotState::Starting {
                continue;
            }
            match (self.outcome)(s.slot, &s.revision) {
                Outcome::Ready => {
                    s.state = SlotState::Ready;
                    s.since = now;
                }
                Outcome::Exit => {
                    s.state = SlotState::Exited;
                    s.pid = None;
                    s.since = now;
                    s.detail = Some("exit status 1: [system] error while loading config".into());
                }
                Outcome::Hang => {}
            }
        }
    }

    /// One planning step, applied. Returns the action.
    fn step(&mut self, d: &Desired) -> Action {
        self.rollout.note_desired(&d.revision, 0);
        let (phase, action) = plan_with_phase(d, &self.observed, &self.rollout);
        self.rollout.phase = phase;
        match &action {
            Action::StartSlot { slot, revision } => {
                if let Some(s) = self.observed.slot(*slot) {
                    assert!(
                        s.state != SlotState::Ready && s.state != SlotState::Starting,
                        "start of a running slot {slot}"
                    );
                }
                self.start(*slot, revision);
            }
            Action::ReplaceSlot { slot, revision } => {
                let s = self
                    .observed
                    .slot(*slot)
                    .expect("replace of an absent slot");
                assert_ne!(s.state, SlotState::Starting, "replace of a starting worker");
                self.start(*slot, revision);
            }
            Action::StopSlot { slot } => {
                let s = self.observed.slot(*slot).expect("stop of an absent slot");
                if s.state == SlotState::Starting {
                    assert!(
                        self.rollout.durable.failed.contains_key(&s.revision),
                        "stop of a starting worker on a live revision"
                    );
                }
                self.observed.slots.retain(|s| s.slot != *slot);
            }
            Action::MarkFailed {
                revision,
                slot,
                reason,
            } => {
                self.rollout.mark_failed(Failure {
                    revision: revision.clone(),
                    slot: Some(*slot),
                    reason: reason.clone(),
                    at_unix_ms: 0,
                });
            }
            Action::MarkGood { revision } => self.rollout.mark_good(revision, 0),
            Action::StartGc { spec } => self.observed.gc = Some(spec.clone()),
            Action::StopGc => self.observed.gc = None,
            Action::Wait { .. } => self.tick(Duration::from_millis(20)),
            Action::Done => {}
        }
        if let Some(min) = self.min_ready {
            assert!(
                self.ready() >= min,
                "capacity dropped to {} after {action:?}",
                self.ready()
            );
        }
        self.actions.push(action.clone());
        action
    }

    /// Step until `Done` (or a `Wait` that makes no progress for a long time); returns the actions.
    fn converge(&mut self, d: &Desired) -> Vec<Action> {
        let first = self.actions.len();
        for _ in 0..500 {
            if self.step(d) == Action::Done {
                return self.actions[first..].to_vec();
            }
        }
        panic!(
            "no convergence; last actions: {:?}",
            &self.actions[self.actions.len() - 10..]
        );
    }

    /// A fleet of `n` ready workers on `rev`, converged.
    fn converged(rev: &str, n: u16) -> Sim {
        let mut sim = Sim::new();
        sim.converge(&desired(rev, n));
        sim.actions.clear();
        sim
    }
}

fn starts(actions: &[Action]) -> Vec<Slot> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::StartSlot { slot, .. } | Action::ReplaceSlot { slot, .. } => Some(*slot),
            _ => None,
        })
        .collect()
}

fn all_on(sim: &Sim, rev: &str, n: u16) {
    let expect: Vec<(Slot, String)> = (0..n).map(|i| (Slot::Worker(i), rev.to_string())).collect();
    assert_eq!(sim.revisions(), expect);
    assert_eq!(sim.ready(), n as usize);
}

#[test]
fn first_start_starts_every_slot_at_once_without_canary() {
    let mut sim = Sim::new();
    let d = desired("r1", 4);
    let actions = sim.converge(&d);
    // All four are started before the first wait: a fresh start does not go one by one.
    assert_eq!(
        actions[..4],
        (0..4)
            .map(|i| Action::StartSlot {
                slot: Slot::Worker(i),
                revision: "r1".into()
            })
            .collect::<Vec<_>>()[..]
    );
    assert!(matches!(actions[4], Action::Wait { .. }));
    assert!(actions.contains(&Action::MarkGood {
        revision: "r1".into()
    }));
    all_on(&sim, "r1", 4);
    assert_eq!(sim.rollout.durable.last_good.as_deref(), Some("r1"));
    assert_eq!(sim.rollout.phase, Phase::Idle);
}

#[test]
fn nothing_to_do_when_converged() {
    let sim = Sim::converged("r1", 3);
    let (phase, action) = plan_with_phase(&desired("r1", 3), &sim.observed, &sim.rollout);
    assert_eq!(action, Action::Done);
    assert_eq!(phase, Phase::Idle);
}

#[test]
fn scale_up_starts_only_new_slots() {
    let mut sim = Sim::converged("r1", 4);
    let before = sim.pids();
    let actions = sim.converge(&desired("r1", 6));
    assert_eq!(starts(&actions), vec![Slot::Worker(4), Slot::Worker(5)]);
    all_on(&sim, "r1", 6);
    assert_eq!(sim.pids()[..4], before[..]);
}

#[test]
fn scale_down_stops_only_extra_slots() {
    let mut sim = Sim::converged("r1", 4);
    let before = sim.pids();
    let actions = sim.converge(&desired("r1", 2));
    assert_eq!(
        actions,
        vec![
            Action::StopSlot {
                slot: Slot::Worker(2)
            },
            Action::StopSlot {
                slot: Slot::Worker(3)
            },
            Action::Done
        ]
    );
    assert_eq!(sim.pids(), before[..2]);
}

#[test]
fn scale_4_2_5_keeps_untouched_workers() {
    let mut sim = Sim::converged("r1", 4);
    let before = sim.pids();
    sim.converge(&desired("r1", 2));
    sim.converge(&desired("r1", 5));
    all_on(&sim, "r1", 5);
    assert_eq!(sim.pids()[..2], before[..2]);
}

#[test]
fn config_change_canary_first_then_each_slot_then_canary_stopped() {
    let mut sim = Sim::converged("r1", 4);
    sim.min_ready = Some(4);
    let actions = sim.converge(&desired("r2", 4));
    let significant: Vec<&Action> = actions
        .iter()
        .filter(|a| !matches!(a, Action::Wait { .. }))
        .collect();
    let expected = [
        Action::StartSlot {
            slot: Slot::Surge,
            revision: "r2".into(),
        },
        Action::ReplaceSlot {
            slot: Slot::Worker(0),
            revision: "r2".into(),
        },
        Action::ReplaceSlot {
            slot: Slot::Worker(1),
            revision: "r2".into(),
        },
        Action::ReplaceSlot {
            slot: Slot::Worker(2),
            revision: "r2".into(),
        },
        Action::ReplaceSlot {
            slot: Slot::Worker(3),
            revision: "r2".into(),
        },
        Action::StopSlot { slot: Slot::Surge },
        Action::MarkGood {
            revision: "r2".into(),
        },
        Action::Done,
    ];
    assert_eq!(significant, expected.iter().collect::<Vec<_>>());
    // Each start is gated: a wait follows every start before the next slot is touched.
    for w in actions.windows(2) {
        if matches!(w[0], Action::StartSlot { .. } | Action::ReplaceSlot { .. }) {
            assert!(matches!(w[1], Action::Wait { .. }), "ungated step: {w:?}");
        }
    }
    all_on(&sim, "r2", 4);
    assert_eq!(sim.rollout.durable.last_good.as_deref(), Some("r2"));
}

#[test]
fn phases_during_a_rollout() {
    let mut sim = Sim::converged("r1", 2);
    let d = desired("r2", 2);
    let mut phases = vec![];
    for _ in 0..30 {
        let a = sim.step(&d);
        if phases.last() != Some(&sim.rollout.phase) {
            phases.push(sim.rollout.phase.clone());
        }
        if a == Action::Done {
            break;
        }
    }
    assert_eq!(
        phases,
        vec![
            Phase::Canary,
            Phase::Rolling { slot: 0 },
            Phase::Rolling { slot: 1 },
            Phase::Finishing,
            Phase::Idle
        ]
    );
}

#[test]
fn canary_that_exits_is_rejected_and_no_regular_worker_touched() {
    let mut sim = Sim::converged("r1", 4).with_outcome(|_, rev| {
        if rev == "bad" {
            Outcome::Exit
        } else {
            Outcome::Ready
        }
    });
    sim.min_ready = Some(4);
    let before = sim.pids();
    let actions = sim.converge(&desired("bad", 4));
    assert!(matches!(
        &actions[..4],
        [
            Action::StartSlot {
                slot: Slot::Surge,
                ..
            },
            Action::Wait { .. },
            Action::MarkFailed {
                slot: Slot::Surge,
                ..
            },
            Action::StopSlot { slot: Slot::Surge },
        ]
    ));
    assert_eq!(sim.pids(), before);
    let failure = sim
        .rollout
        .durable
        .failed
        .get("bad")
        .expect("marked failed");
    assert!(
        failure.reason.contains("error while loading config"),
        "{}",
        failure.reason
    );
    all_on(&sim, "r1", 4);
}

#[test]
fn canary_that_never_gets_ready_times_out() {
    let mut sim = Sim::converged("r1", 2).with_outcome(|_, rev| {
        if rev == "slow" {
            Outcome::Hang
        } else {
            Outcome::Ready
        }
    });
    let before = sim.pids();
    let d = desired("slow", 2);
    assert_eq!(
        sim.step(&d),
        Action::StartSlot {
            slot: Slot::Surge,
            revision: "slow".into()
        }
    );
    assert!(matches!(sim.step(&d), Action::Wait { .. }));
    sim.tick(TIMEOUT + Duration::from_millis(1));
    match sim.step(&d) {
        Action::MarkFailed {
            revision,
            slot,
            reason,
        } => {
            assert_eq!((revision.as_str(), slot), ("slow", Slot::Surge));
            assert!(reason.contains("not ready within 5s"), "{reason}");
        }
        other => panic!("expected MarkFailed, got {other:?}"),
    }
    // The hung canary is past its deadline: it may be stopped now.
    assert_eq!(sim.step(&d), Action::StopSlot { slot: Slot::Surge });
    assert_eq!(sim.converge(&d), vec![Action::Done]);
    assert_eq!(sim.pids(), before);
}

#[test]
fn worker_failing_mid_roll_rolls_every_slot_back() {
    // The new revision fails only on slot 2 (as `if worker.id == '2' then error() end` does).
    let mut sim = Sim::converged("r1", 4).with_outcome(|slot, rev| {
        if rev == "r2" && slot == Slot::Worker(2) {
            Outcome::Exit
        } else {
            Outcome::Ready
        }
    });
    sim.min_ready = Some(3); // slot 2's replacement died: one fewer until it is back on r1
    let actions = sim.converge(&desired("r2", 4));
    let failed = actions
        .iter()
        .position(|a| matches!(a, Action::MarkFailed { .. }));
    let failed = failed.expect("marked failed");
    assert_eq!(
        actions[failed],
        Action::MarkFailed {
            revision: "r2".into(),
            slot: Slot::Worker(2),
            reason: "exit status 1: [system] error while loading config".into()
        }
    );
    let after: Vec<&Action> = actions[failed + 1..]
        .iter()
        .filter(|a| !matches!(a, Action::Wait { .. }))
        .collect();
    // The dead slot first (it serves nothing), then the others while the canary still serves.
    let r1 = |i| Action::ReplaceSlot {
        slot: Slot::Worker(i),
        revision: "r1".into(),
    };
    assert_eq!(
        after,
        vec![
            &r1(2),
            &r1(0),
            &r1(1),
            &Action::StopSlot { slot: Slot::Surge },
            &Action::Done
        ]
    );
    all_on(&sim, "r1", 4);
    assert_eq!(sim.rollout.phase, Phase::Idle);
    assert!(sim.rollout.durable.failed.contains_key("r2"));
    // Not retried while the desired revision stays the same.
    assert_eq!(sim.converge(&desired("r2", 4)), vec![Action::Done]);
}

#[test]
fn newer_change_supersedes_at_the_next_safe_point() {
    let mut sim = Sim::converged("r1", 4);
    sim.min_ready = Some(4);
    let d2 = desired("r2", 4);
    // Canary and slot 0 go to r2; slot 1 is being replaced when r3 arrives.
    let mut replaced = 0;
    while replaced < 2 {
        if let Action::ReplaceSlot { .. } = sim.step(&d2) {
            replaced += 1;
        }
    }
    assert_eq!(
        sim.observed.slot(Slot::Worker(1)).map(|s| s.state),
        Some(SlotState::Starting)
    );
    let d3 = desired("r3", 4);
    // Safe point: the starting slot is waited for, never stopped mid-start.
    assert!(matches!(sim.step(&d3), Action::Wait { .. }));
    let actions = sim.converge(&d3);
    let significant: Vec<&Action> = actions
        .iter()
        .filter(|a| !matches!(a, Action::Wait { .. }))
        .collect();
    assert_eq!(significant[0], &Action::StopSlot { slot: Slot::Surge });
    assert_eq!(
        significant[1],
        &Action::StartSlot {
            slot: Slot::Surge,
            revision: "r3".into()
        }
    );
    all_on(&sim, "r3", 4);
    assert!(
        sim.rollout
            .events
            .iter()
            .any(|e| e.message.contains("desired revision r3"))
    );
}

#[test]
fn operator_restart_mid_roll_continues_without_restarting_done_slots() {
    let mut sim = Sim::converged("r1", 4);
    let d2 = desired("r2", 4);
    let mut replaced = 0;
    while replaced < 2 {
        if let Action::ReplaceSlot { .. } = sim.step(&d2) {
            replaced += 1;
        }
    }
    sim.tick(Duration::from_millis(20));
    let on_r2: Vec<_> = sim.pids()[..2].to_vec();
    // The operator restarts: rollout state is lost, the backend still shows the fleet.
    sim.rollout = Rollout::default();
    assert_eq!(
        sim.rollout
            .effective_last_good(&"r2".into(), &sim.observed)
            .as_deref(),
        Some("r1")
    );
    let actions = sim.converge(&d2);
    assert_eq!(starts(&actions), vec![Slot::Worker(2), Slot::Worker(3)]);
    all_on(&sim, "r2", 4);
    assert_eq!(sim.pids()[..2], on_r2[..]);
}

#[test]
fn operator_restart_with_converged_fleet_adopts_it() {
    let mut sim = Sim::converged("r1", 4);
    let before = sim.pids();
    sim.rollout = Rollout::default();
    let actions = sim.converge(&desired("r1", 4));
    assert_eq!(
        actions,
        vec![
            Action::MarkGood {
                revision: "r1".into()
            },
            Action::Done
        ]
    );
    assert_eq!(sim.pids(), before);
}

/// Workers of revision `bad` exit at start; every other revision becomes ready.
fn bad_exits(_: Slot, rev: &str) -> Outcome {
    if rev == "bad" {
        Outcome::Exit
    } else {
        Outcome::Ready
    }
}

#[test]
fn failed_revision_is_retried_only_after_desired_changes() {
    let mut sim = Sim::converged("r1", 2).with_outcome(bad_exits);
    sim.converge(&desired("bad", 2));
    assert!(sim.rollout.durable.failed.contains_key("bad"));
    assert_eq!(
        plan(&desired("bad", 2), &sim.observed, &sim.rollout),
        Action::Done
    );
    // A different desired config is tried...
    sim.outcome = Box::new(|_, _| Outcome::Ready);
    sim.converge(&desired("r3", 2));
    all_on(&sim, "r3", 2);
    // ...and going back to the once-failed one is a change too, so it is tried again.
    let actions = sim.converge(&desired("bad", 2));
    assert_eq!(
        actions[0],
        Action::StartSlot {
            slot: Slot::Surge,
            revision: "bad".into()
        }
    );
    all_on(&sim, "bad", 2);
}

#[test]
fn first_start_with_a_broken_config_reports_and_cleans_up() {
    let mut sim = Sim::new().with_outcome(|_, _| Outcome::Exit);
    let d = desired("bad", 3);
    let mut actions = vec![];
    for _ in 0..20 {
        actions.push(sim.step(&d));
    }
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::MarkFailed { revision, .. } if revision == "bad"))
    );
    assert!(sim.observed.slots.is_empty(), "{:?}", sim.observed.slots);
    assert_eq!(sim.rollout.phase, Phase::Failed);
    match actions.last() {
        Some(Action::Wait { reason }) => assert!(reason.contains("no good revision"), "{reason}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn exited_worker_on_good_revision_is_restarted() {
    let mut sim = Sim::converged("r1", 3);
    let s = sim
        .observed
        .slots
        .iter_mut()
        .find(|s| s.slot == Slot::Worker(1))
        .expect("slot 1");
    s.state = SlotState::Exited;
    s.pid = None;
    let actions = sim.converge(&desired("r1", 3));
    assert_eq!(
        actions[0],
        Action::StartSlot {
            slot: Slot::Worker(1),
            revision: "r1".into()
        }
    );
    all_on(&sim, "r1", 3);
}

#[test]
fn starting_worker_is_waited_for_not_stopped() {
    let mut sim = Sim::converged("r1", 4).with_outcome(|_, _| Outcome::Hang);
    let d = desired("r1", 2);
    // Scale 4 -> 6 leaves two starting workers; a scale-down to 2 waits for them first.
    sim.step(&desired("r1", 6));
    sim.step(&desired("r1", 6));
    assert!(matches!(sim.step(&d), Action::Wait { .. }));
    assert!(sim.pid(Slot::Worker(4)).is_some());
}

#[test]
fn gc_is_started_changed_and_stopped() {
    let mut sim = Sim::converged("r1", 1);
    let mut d = desired("r1", 1);
    let spec = GcSpec {
        args: vec!["-c".into(), "/cache".into(), "-d".into(), "1000".into()],
    };
    d.gc = Some(spec.clone());
    assert_eq!(
        sim.converge(&d),
        vec![Action::StartGc { spec: spec.clone() }, Action::Done]
    );
    d.gc = None;
    assert_eq!(sim.converge(&d), vec![Action::StopGc, Action::Done]);
}

#[test]
fn scale_up_during_change_waits_for_the_canary() {
    let mut sim = Sim::converged("r1", 2);
    sim.min_ready = Some(2);
    let actions = sim.converge(&desired("r2", 3));
    assert_eq!(
        actions[0],
        Action::StartSlot {
            slot: Slot::Surge,
            revision: "r2".into()
        }
    );
    assert!(starts(&actions).contains(&Slot::Worker(2)));
    all_on(&sim, "r2", 3);
}

#[test]
fn events_are_bounded() {
    let mut r = Rollout::default();
    for i in 0..50 {
        r.record(i, "x", format!("{i}"));
    }
    assert_eq!(r.events.len(), rollout::EVENT_HISTORY);
    assert_eq!(r.events.front().map(|e| e.at_unix_ms), Some(30));
}

#[test]
fn worker_ids_round_trip() {
    for s in [Slot::Worker(0), Slot::Worker(17), Slot::Surge] {
        assert_eq!(Slot::from_worker_id(&s.worker_id()), Some(s));
    }
    assert_eq!(Slot::from_worker_id("x"), None);
}

#[test]
fn operator_restart_resumed_from_the_store_does_not_retry_a_failed_revision() {
    let mut sim = Sim::converged("r1", 2).with_outcome(bad_exits);
    sim.converge(&desired("bad", 2));
    assert!(sim.rollout.durable.failed.contains_key("bad"));
    let before = sim.pids();
    // The operator restarts: only the durable state survives (round-tripped through JSON,
    // as the file store keeps it).
    let json = serde_json::to_string(&sim.rollout.durable).expect("serialise");
    sim.rollout = Rollout::resume(serde_json::from_str(&json).expect("deserialise"));
    sim.outcome = Box::new(|_, _| Outcome::Ready);
    let actions = sim.converge(&desired("bad", 2));
    assert_eq!(actions, vec![Action::Done], "retried after a restart");
    assert_eq!(sim.pids(), before);
    assert_eq!(
        sim.rollout
            .last_failure
            .as_ref()
            .map(|f| f.revision.as_str()),
        Some("bad")
    );
    // Without the store the same restart retries it (the behaviour the store removes).
    sim.rollout = Rollout::default();
    let actions = sim.converge(&desired("bad", 2));
    assert!(
        actions.iter().any(|a| matches!(
            a,
            Action::StartSlot {
                slot: Slot::Surge,
                ..
            }
        )),
        "{actions:?}"
    );
}
