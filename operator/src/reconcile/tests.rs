//! Planner tests: a simulated asynchronous backend applies each action (a start goes through
//! `Pending` and `Starting`, a drain through `Draining`, a stop through `Stopping`, each taking a
//! configurable number of ticks), and the planner is driven to convergence while the invariants
//! are checked at every step: capacity never below N ready, nothing stopped before it was
//! drained, no stop of a starting worker on a live revision, starts only in empty slots.

use std::collections::HashMap;
use std::time::Duration;

use super::*;

const TIMEOUT: Duration = Duration::from_secs(5);
const TICK: Duration = Duration::from_millis(20);

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
        drain: Duration::ZERO,
        soak: Duration::ZERO,
        template: serde_json::Value::Null,
        listen: vec![],
        paused: false,
    }
}

type OutcomeFn = dyn Fn(Slot, &str) -> Outcome;

/// How many ticks each asynchronous request takes in the simulated backend (0: done when
/// requested, as the supervisord backend's drain and stop are).
#[derive(Clone, Copy, Debug, Default)]
struct Latency {
    /// Ticks a started worker stays `Pending` (unschedulable, pulling an image).
    pending: u32,
    /// Ticks a drained worker stays `Draining`.
    draining: u32,
    /// Ticks a stopped worker stays `Stopping`.
    stopping: u32,
}

/// A simulated backend: starting workers become ready (or exit / hang) on the next tick after
/// their `Pending` ticks; drains and stops finish after their ticks.
struct Sim {
    observed: Observed,
    rollout: Rollout,
    next_pid: u32,
    outcome: Box<OutcomeFn>,
    latency: Latency,
    /// Ticks left in the current asynchronous state of a slot.
    countdown: HashMap<Slot, u32>,
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
            latency: Latency::default(),
            countdown: HashMap::new(),
            actions: vec![],
            min_ready: None,
        }
    }

    fn with_outcome(mut self, f: impl Fn(Slot, &str) -> Outcome + 'static) -> Sim {
        self.outcome = Box::new(f);
        self
    }

    fn with_latency(mut self, latency: Latency) -> Sim {
        self.latency = latency;
        self
    }

    fn pid(&self, slot: Slot) -> Option<u32> {
        self.observed.pid(slot)
    }

    fn pids(&self) -> Vec<(Slot, Option<u32>)> {
        let mut v: Vec<_> = self
            .observed
            .slots
            .iter()
            .map(|s| (s.slot, self.pid(s.slot)))
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

    fn slot_mut(&mut self, slot: Slot) -> &mut ObservedSlot {
        self.observed
            .slots
            .iter_mut()
            .find(|s| s.slot == slot)
            .expect("slot present")
    }

    fn set_state(&mut self, slot: Slot, state: SlotState, ticks: u32) {
        let now = self.observed.now;
        let s = self.slot_mut(slot);
        s.state = state;
        s.since = now;
        self.countdown.insert(slot, ticks);
    }

    fn start(&mut self, slot: Slot, revision: &str) {
        self.observed.slots.retain(|s| s.slot != slot);
        self.next_pid += 1;
        let pending = self.latency.pending > 0;
        self.observed.slots.push(ObservedSlot {
            slot,
            revision: revision.into(),
            state: if pending {
                SlotState::Pending
            } else {
                SlotState::Starting
            },
            worker: Some(WorkerRef {
                name: format!("w{}", self.next_pid),
                pid: Some(self.next_pid),
                ..WorkerRef::default()
            }),
            since: self.observed.now,
            ready_since_unix_ms: None,
            detail: None,
        });
        self.countdown.insert(slot, self.latency.pending);
    }

    /// Let time pass: asynchronous requests progress, starting workers become ready, exit or
    /// keep hanging.
    fn tick(&mut self, by: Duration) {
        self.observed.now += by;
        let slots: Vec<(Slot, SlotState, String)> = self
            .observed
            .slots
            .iter()
            .map(|s| (s.slot, s.state, s.revision.clone()))
            .collect();
        for (slot, state, revision) in slots {
            let left = self.countdown.entry(slot).or_insert(0);
            if *left > 0 {
                *left -= 1;
                continue;
            }
            match state {
                SlotState::Pending => self.set_state(slot, SlotState::Starting, 0),
                SlotState::Starting => match (self.outcome)(slot, &revision) {
                    Outcome::Ready => self.set_state(slot, SlotState::Ready, 0),
                    Outcome::Exit => {
                        self.set_state(slot, SlotState::Exited, 0);
                        let s = self.slot_mut(slot);
                        s.worker = None;
                        s.detail =
                            Some("exit status 1: [system] error while loading config".into());
                    }
                    Outcome::Hang => {}
                },
                SlotState::Draining => self.set_state(slot, SlotState::Drained, 0),
                SlotState::Stopping => {
                    self.observed.slots.retain(|s| s.slot != slot);
                    self.countdown.remove(&slot);
                }
                _ => {}
            }
        }
    }

    /// One planning step, applied, with the invariants checked. Returns the action.
    fn step(&mut self, d: &Desired) -> Action {
        self.rollout
            .note_config(&d.revision, &d.config, &d.listen, 0);
        self.rollout.note_desired(&d.revision, 0);
        let (phase, action) = plan_with_phase(d, &self.observed, &self.rollout);
        self.rollout.phase = phase;
        match &action {
            Action::AdoptLastGood { revision } => self.rollout.adopt_last_good(revision.clone()),
            Action::SetEndpoints { endpoints, .. } => {
                self.observed.endpoints = Some(endpoints.clone())
            }
            Action::Stage { revision } => {
                assert_eq!(
                    revision, &d.revision,
                    "staged another than the desired revision"
                );
                self.observed.staged.insert(revision.clone());
            }
            Action::StartSlot { slot, revision } => {
                assert!(
                    self.observed.staged.contains(revision)
                        || self.rollout.durable.last_good.as_ref() == Some(revision),
                    "start on unstaged {revision}"
                );
                if let Some(s) = self.observed.slot(*slot) {
                    assert!(
                        matches!(
                            s.state,
                            SlotState::Stopped | SlotState::Exited | SlotState::Failed
                        ),
                        "start of a running slot {slot} ({:?})",
                        s.state
                    );
                }
                self.start(*slot, revision);
            }
            Action::DrainSlot { slot } => {
                let s = self.observed.slot(*slot).expect("drain of an absent slot");
                assert_eq!(s.state, SlotState::Ready, "drain of a worker not ready");
                let ticks = self.latency.draining;
                if ticks == 0 {
                    self.set_state(*slot, SlotState::Drained, 0);
                } else {
                    self.set_state(*slot, SlotState::Draining, ticks - 1);
                }
            }
            Action::StopSlot { slot } => {
                let s = self.observed.slot(*slot).expect("stop of an absent slot");
                assert_ne!(
                    s.state,
                    SlotState::Ready,
                    "stop of a ready worker not drained"
                );
                assert!(
                    !s.state.is_retiring() || s.state == SlotState::Drained,
                    "stop of a {:?} worker",
                    s.state
                );
                // A pending worker (no process yet) may also go when its revision is neither
                // the desired nor the last good one (superseded).
                let superseded = s.state == SlotState::Pending
                    && s.revision != self.rollout.durable.target.clone().unwrap_or_default()
                    && Some(&s.revision) != self.rollout.durable.last_good.as_ref();
                if s.state.is_starting() {
                    assert!(
                        self.rollout.durable.failed.contains_key(&s.revision) || superseded,
                        "stop of a starting worker on a live revision"
                    );
                }
                let ticks = self.latency.stopping;
                if ticks == 0 {
                    self.observed.slots.retain(|s| s.slot != *slot);
                } else {
                    self.set_state(*slot, SlotState::Stopping, ticks - 1);
                }
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
            Action::CollectRevisions { keep } => {
                for s in &self.observed.slots {
                    assert!(
                        keep.contains(&s.revision),
                        "collecting running {}",
                        s.revision
                    );
                }
                self.observed.staged.retain(|r| keep.contains(r))
            }
            Action::Wait { .. } => self.tick(TICK),
            Action::Paused | Action::Done => {}
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
        for _ in 0..2000 {
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

/// The actions that change workers or revisions (no waits, drains, staging, endpoints or
/// revision collection).
fn significant(actions: &[Action]) -> Vec<Action> {
    actions
        .iter()
        .filter(|a| {
            !matches!(
                a,
                Action::Wait { .. }
                    | Action::DrainSlot { .. }
                    | Action::Stage { .. }
                    | Action::SetEndpoints { .. }
                    | Action::CollectRevisions { .. }
            )
        })
        .cloned()
        .collect()
}

fn start(slot: Slot, rev: &str) -> Action {
    Action::StartSlot {
        slot,
        revision: rev.into(),
    }
}

fn stop(slot: Slot) -> Action {
    Action::StopSlot { slot }
}

/// The significant actions of a rollout of `n` slots to `rev`: canary, each slot stopped and
/// started, canary stopped, marked good.
fn canary_rollout(rev: &str, n: u16) -> Vec<Action> {
    let mut expected = vec![start(Slot::Surge, rev)];
    for i in 0..n {
        expected.extend([stop(Slot::Worker(i)), start(Slot::Worker(i), rev)]);
    }
    expected.extend([
        stop(Slot::Surge),
        Action::MarkGood {
            revision: rev.into(),
        },
        Action::Done,
    ]);
    expected
}

/// Slots started (in order).
fn starts(actions: &[Action]) -> Vec<Slot> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::StartSlot { slot, .. } => Some(*slot),
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
    let actions = significant(&sim.converge(&d));
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
            Action::DrainSlot {
                slot: Slot::Worker(2)
            },
            stop(Slot::Worker(2)),
            Action::DrainSlot {
                slot: Slot::Worker(3)
            },
            stop(Slot::Worker(3)),
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
    assert_eq!(significant(&actions), canary_rollout("r2", 4));
    // Each start is gated: a wait follows every start before the next slot is touched.
    for w in actions.windows(2) {
        if matches!(w[0], Action::StartSlot { .. }) {
            assert!(matches!(w[1], Action::Wait { .. }), "ungated step: {w:?}");
        }
    }
    // Each ready worker is drained right before it is stopped.
    for w in actions.windows(2) {
        if let Action::StopSlot { slot } = w[1] {
            assert_eq!(w[0], Action::DrainSlot { slot }, "stopped undrained");
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
    let actions: Vec<Action> = actions
        .into_iter()
        .filter(|a| !matches!(a, Action::Stage { .. } | Action::SetEndpoints { .. }))
        .collect();
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
        Action::Stage {
            revision: "slow".into()
        }
    );
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
    assert_eq!(significant(&sim.converge(&d)), vec![Action::Done]);
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
    let after = significant(&actions[failed + 1..]);
    // The dead slot first (it serves nothing), then the others while the canary still serves.
    let mut expected = vec![];
    for i in [2, 0, 1] {
        expected.extend([stop(Slot::Worker(i)), start(Slot::Worker(i), "r1")]);
    }
    expected.extend([stop(Slot::Surge), Action::Done]);
    assert_eq!(after, expected);
    all_on(&sim, "r1", 4);
    assert_eq!(sim.rollout.phase, Phase::Idle);
    assert!(sim.rollout.durable.failed.contains_key("r2"));
    // Not retried while the desired revision stays the same.
    assert_eq!(
        significant(&sim.converge(&desired("r2", 4))),
        vec![Action::Done]
    );
}

#[test]
fn newer_change_supersedes_at_the_next_safe_point() {
    let mut sim = Sim::converged("r1", 4);
    sim.min_ready = Some(4);
    let d2 = desired("r2", 4);
    // Canary and slot 0 go to r2; slot 1 is being replaced when r3 arrives.
    let mut replaced = 0;
    while replaced < 2 {
        if let Action::StartSlot {
            slot: Slot::Worker(_),
            ..
        } = sim.step(&d2)
        {
            replaced += 1;
        }
    }
    assert_eq!(
        sim.observed.slot(Slot::Worker(1)).map(|s| s.state),
        Some(SlotState::Starting)
    );
    let d3 = desired("r3", 4);
    // Safe point: the starting slot is waited for, never stopped mid-start (r3 is staged).
    assert_eq!(
        sim.step(&d3),
        Action::Stage {
            revision: "r3".into()
        }
    );
    assert!(matches!(sim.step(&d3), Action::Wait { .. }));
    let actions = significant(&sim.converge(&d3));
    assert_eq!(actions[0], stop(Slot::Surge));
    assert_eq!(actions[1], start(Slot::Surge, "r3"));
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
        if let Action::StartSlot {
            slot: Slot::Worker(_),
            ..
        } = sim.step(&d2)
        {
            replaced += 1;
        }
    }
    sim.tick(TICK);
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
    assert_eq!(
        actions[0],
        Action::AdoptLastGood {
            revision: "r1".into()
        }
    );
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
    let actions = significant(&sim.converge(&desired("bad", 2)));
    assert_eq!(actions[0], start(Slot::Surge, "bad"));
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

fn paused(rev: &str, workers: u16) -> Desired {
    Desired {
        paused: true,
        ..desired(rev, workers)
    }
}

/// The significant actions of a paused fleet repairing regular `slots` on `rev`.
fn repaired(slots: &[u16], rev: &str) -> Vec<Action> {
    let mut actions: Vec<Action> = slots.iter().map(|i| start(Slot::Worker(*i), rev)).collect();
    actions.push(Action::Paused);
    actions
}

impl Sim {
    /// Step a paused `d` until the fleet is whole ([`Action::Paused`]); returns the actions.
    fn hold(&mut self, d: &Desired) -> Vec<Action> {
        let first = self.actions.len();
        for _ in 0..200 {
            if self.step(d) == Action::Paused {
                return self.actions[first..].to_vec();
            }
        }
        panic!("paused fleet never whole: {:?}", &self.actions[first..]);
    }
}

#[test]
fn paused_mid_rollout_takes_no_step_but_repairs_on_the_last_good_revision() {
    let mut sim = Sim::converged("r1", 4);
    // The rollout to r2 replaced slot 0, then the spec was paused.
    while sim
        .revisions()
        .iter()
        .all(|(slot, rev)| *slot == Slot::Surge || rev == "r1")
        || sim.ready() < 5
    {
        sim.step(&desired("r2", 4));
    }
    let before = sim.pids();
    let d = paused("r2", 4);
    assert_eq!(sim.hold(&d).len(), 1, "a step was taken while paused");
    assert_eq!(sim.pids(), before);
    // Slot 2 disappears (a pod deleted by hand, a node drained) and slot 3 exits: both are
    // started again on the last good revision; nothing else moves.
    sim.observed.slots.retain(|s| s.slot != Slot::Worker(2));
    let s3 = sim.slot_mut(Slot::Worker(3));
    s3.state = SlotState::Exited;
    s3.worker = None;
    let actions = sim.hold(&d);
    assert_eq!(significant(&actions), repaired(&[2, 3], "r1"));
    let revisions = sim.revisions();
    assert_eq!(
        revisions,
        vec![
            (Slot::Worker(0), "r2".to_string()),
            (Slot::Worker(1), "r1".to_string()),
            (Slot::Worker(2), "r1".to_string()),
            (Slot::Worker(3), "r1".to_string()),
            (Slot::Surge, "r2".to_string()),
        ]
    );
    assert_eq!(sim.ready(), 5);
    assert!(!sim.observed.staged.is_empty());
    // Unpaused: the rollout goes on from where it stood.
    sim.converge(&desired("r2", 4));
    all_on(&sim, "r2", 4);
}

#[test]
fn paused_fleet_scales_on_the_last_good_revision_and_never_stages_the_new_one() {
    let mut sim = Sim::converged("r1", 2);
    let actions = sim.hold(&paused("r2", 4));
    assert_eq!(significant(&actions), repaired(&[2, 3], "r1"));
    assert!(!sim.observed.staged.contains("r2"));
    let actions = sim.hold(&paused("r2", 1));
    assert_eq!(
        significant(&actions),
        vec![
            stop(Slot::Worker(1)),
            stop(Slot::Worker(2)),
            stop(Slot::Worker(3)),
            Action::Paused
        ]
    );
    all_on(&sim, "r1", 1);
    // Never proven good, nothing to repair with: an empty slot is waited for, not started.
    let mut fresh = Sim::new();
    let action = fresh.step(&paused("r1", 1));
    assert!(
        matches!(&action, Action::Wait { reason } if reason.contains("no revision is proven good")),
        "{action:?}"
    );
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
    s.worker = None;
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
    assert_eq!(significant(&actions)[0], start(Slot::Surge, "r2"));
    assert!(starts(&actions).contains(&Slot::Worker(2)));
    all_on(&sim, "r2", 3);
}

#[test]
fn events_are_bounded() {
    let mut r = Rollout::default();
    let total = rollout::EVENT_HISTORY as u64 + 30;
    for i in 0..total {
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
    let actions = significant(&sim.converge(&desired("bad", 2)));
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

#[test]
fn rollout_over_an_asynchronous_backend_keeps_capacity_and_never_fails_a_pending_worker() {
    // Pending for longer than the start timeout (an image pull), slow drains and stops.
    let latency = Latency {
        pending: (TIMEOUT.as_millis() / TICK.as_millis()) as u32 + 50,
        draining: 4,
        stopping: 7,
    };
    let mut sim = Sim::converged("r1", 3).with_latency(latency);
    sim.min_ready = Some(3);
    let actions = sim.converge(&desired("r2", 3));
    assert!(
        !actions
            .iter()
            .any(|a| matches!(a, Action::MarkFailed { .. })),
        "a pending worker failed its gate"
    );
    assert_eq!(significant(&actions), canary_rollout("r2", 3));
    // The drains and stops were waited for, not assumed.
    let waits = |what: &str| {
        actions
            .iter()
            .filter(|a| matches!(a, Action::Wait { reason } if reason.ends_with(what)))
            .count()
    };
    assert!(waits("draining") >= 4 * 3, "{}", waits("draining"));
    assert!(waits("stopping") >= 7 * 3, "{}", waits("stopping"));
    all_on(&sim, "r2", 3);
}

#[test]
fn a_superseded_canary_stuck_pending_is_removed_and_the_new_target_rolls_out() {
    // The canary of r2 never leaves Pending (unschedulable); r3 replaces r2.
    let mut sim = Sim::converged("r1", 3).with_latency(Latency {
        pending: 1_000_000,
        ..Latency::default()
    });
    sim.min_ready = Some(3);
    let d2 = desired("r2", 3);
    for _ in 0..50 {
        sim.step(&d2);
    }
    assert!(
        sim.observed
            .slots
            .iter()
            .any(|s| s.slot == Slot::Surge && s.state == SlotState::Pending && s.revision == "r2"),
        "{:?}",
        sim.observed.slots
    );
    sim.latency.pending = 0;
    let actions = sim.converge(&desired("r3", 3));
    assert_eq!(
        significant(&actions).first(),
        Some(&stop(Slot::Surge)),
        "{actions:?}"
    );
    all_on(&sim, "r3", 3);
}

#[test]
fn pending_worker_on_unproven_revision_still_fails_once_it_starts_and_hangs() {
    let mut sim = Sim::converged("r1", 2)
        .with_outcome(|_, rev| {
            if rev == "slow" {
                Outcome::Hang
            } else {
                Outcome::Ready
            }
        })
        .with_latency(Latency {
            pending: 10,
            ..Latency::default()
        });
    let actions = sim.converge(&desired("slow", 2));
    let reason = actions.iter().find_map(|a| match a {
        Action::MarkFailed { reason, .. } => Some(reason.clone()),
        _ => None,
    });
    assert!(
        reason
            .as_deref()
            .is_some_and(|r| r.contains("not ready within")),
        "{reason:?}"
    );
    all_on(&sim, "r1", 2);
}

#[test]
fn soak_holds_the_next_slot_until_the_new_worker_stayed_ready() {
    let mut sim = Sim::converged("r1", 2);
    let mut d = desired("r2", 2);
    d.soak = TICK * 10;
    sim.min_ready = Some(2);
    let actions = sim.converge(&d);
    let soaking = actions
        .iter()
        .filter(|a| matches!(a, Action::Wait { reason } if reason.ends_with("soaking")))
        .count();
    // The canary and each of the two slots soak for 10 ticks.
    assert!(soaking >= 3 * 9, "{soaking}");
    all_on(&sim, "r2", 2);
}

#[test]
fn operator_restart_while_a_slot_drains_resumes_without_replacing_a_slot_twice() {
    let mut sim = Sim::converged("r1", 4).with_latency(Latency {
        pending: 2,
        draining: 5,
        stopping: 3,
    });
    sim.min_ready = Some(4);
    let d2 = desired("r2", 4);
    // Run until slot 1 is draining.
    while sim.observed.slot(Slot::Worker(1)).map(|s| s.state) != Some(SlotState::Draining) {
        sim.step(&d2);
    }
    let done = sim.actions.clone();
    // Restart without a store: only what the backend shows survives.
    sim.rollout = Rollout::default();
    let rest = sim.converge(&d2);
    assert_eq!(
        rest[0],
        Action::AdoptLastGood {
            revision: "r1".into()
        }
    );
    let all: Vec<Action> = done.into_iter().chain(rest).collect();
    let mut started = starts(&all);
    started.sort();
    assert_eq!(
        started,
        vec![
            Slot::Worker(0),
            Slot::Worker(1),
            Slot::Worker(2),
            Slot::Worker(3),
            Slot::Surge
        ],
        "a slot was started twice"
    );
    all_on(&sim, "r2", 4);
}

#[test]
fn revisions_no_longer_kept_are_collected_once_converged() {
    let mut sim = Sim::converged("r1", 1);
    for rev in ["r2", "r3"] {
        sim.converge(&desired(rev, 1));
    }
    // Still in the history: kept.
    assert!(sim.observed.staged.contains("r1"));
    for i in 0..store::HISTORY + 2 {
        sim.converge(&desired(&format!("x{i}"), 1));
    }
    assert!(
        !sim.observed.staged.contains("r1"),
        "{:?}",
        sim.observed.staged
    );
    assert!(sim.observed.staged.len() <= store::HISTORY + 1);
    assert!(
        sim.observed
            .staged
            .contains(&format!("x{}", store::HISTORY + 1))
    );
}

#[test]
fn rejected_endpoints_leave_the_fleet_on_the_last_good_endpoints() {
    let mut sim = Sim::converged("r1", 2);
    let mut d1 = desired("r1", 2);
    d1.listen = vec!["udp:127.0.0.1@53".into()];
    sim.rollout
        .note_config(&"r1".into(), "r1 text", &d1.listen, 0);
    sim.converge(&d1);
    let mut d2 = desired("r2", 2);
    d2.listen = vec!["udp:192.0.2.1@53".into()];
    sim.rollout
        .note_config(&"r2".into(), "r2 text", &d2.listen, 0);
    assert_eq!(
        plan(&d2, &sim.observed, &sim.rollout),
        Action::SetEndpoints {
            revision: "r2".into(),
            endpoints: d2.listen.clone()
        }
    );
    // The executor marks r2 failed when the backend rejects the endpoints.
    sim.rollout.note_desired(&"r2".into(), 0);
    sim.rollout.mark_failed(Failure {
        revision: "r2".into(),
        slot: None,
        reason: "bind".into(),
        at_unix_ms: 0,
    });
    let actions = sim.converge(&d2);
    assert_eq!(significant(&actions), vec![Action::Done]);
    assert_eq!(sim.observed.endpoints.as_ref(), Some(&d1.listen));
    all_on(&sim, "r1", 2);
}

mod properties {
    //! Random rollouts over random backend latencies, with changes superseding each other,
    //! failing revisions and operator restarts at random steps: both invariants hold at every
    //! step (checked by `Sim::step`) and the fleet converges.

    use proptest::prelude::*;
    use proptest::test_runner::{Config, RngSeed, TestRunner};

    use super::*;

    #[derive(Clone, Debug)]
    struct Scenario {
        workers: u16,
        latency: (u32, u32, u32),
        /// (revision index, steps before the next change, failing slot or none)
        changes: Vec<(u8, u16, Option<u16>)>,
        /// Steps after which the operator restarts (rollout state from the store, or none).
        restarts: Vec<(u16, bool)>,
    }

    fn scenario() -> impl Strategy<Value = Scenario> {
        (
            1u16..5,
            (0u32..4, 0u32..5, 0u32..5),
            proptest::collection::vec((0u8..4, 0u16..60, proptest::option::of(0u16..5)), 1..4),
            proptest::collection::vec((0u16..120, any::<bool>()), 0..3),
        )
            .prop_map(|(workers, latency, changes, restarts)| Scenario {
                workers,
                latency,
                changes,
                restarts,
            })
    }

    fn run(sc: &Scenario) {
        let n = sc.workers;
        let mut sim = Sim::converged("r0", n).with_latency(Latency {
            pending: sc.latency.0,
            draining: sc.latency.1,
            stopping: sc.latency.2,
        });
        let failing: Vec<(String, u16)> = sc
            .changes
            .iter()
            .filter_map(|(r, _, f)| f.map(|f| (format!("r{}", r + 1), f)))
            .collect();
        sim.outcome = Box::new(move |slot, rev| {
            let bad = failing
                .iter()
                .any(|(r, f)| r == rev && (slot == Slot::Worker(*f) || *f >= 4));
            if bad { Outcome::Exit } else { Outcome::Ready }
        });
        // A failing replacement costs one worker until its slot is rolled back.
        let any_failing = sc.changes.iter().any(|c| c.2.is_some());
        sim.min_ready = Some(if any_failing {
            n as usize - 1
        } else {
            n as usize
        });
        let mut step = 0u16;
        let mut restarts = sc.restarts.clone();
        restarts.sort();
        let mut last = desired("r0", n);
        for (rev, steps, _) in &sc.changes {
            let d = desired(&format!("r{}", rev + 1), n);
            for _ in 0..*steps {
                step += 1;
                if let Some(&(at, stored)) = restarts.first()
                    && at <= step
                {
                    restarts.remove(0);
                    // Without a stored state a partly rolled-out failing revision looks like
                    // a good one with a crashing worker (restarted forever): only the store
                    // tells them apart, so store-less restarts are drawn without failures.
                    sim.rollout = if stored || any_failing {
                        Rollout::resume(sim.rollout.durable.clone())
                    } else {
                        Rollout::default()
                    };
                }
                if sim.step(&d) == Action::Done {
                    break;
                }
            }
            last = d;
        }
        sim.converge(&last);
        let target = if sim.rollout.durable.failed.contains_key(&last.revision) {
            sim.rollout
                .durable
                .last_good
                .clone()
                .unwrap_or_else(|| "r0".into())
        } else {
            last.revision.clone()
        };
        all_on(&sim, &target, n);
        assert!(sim.observed.slot(Slot::Surge).is_none());
    }

    #[test]
    fn invariants_hold_over_random_rollouts() {
        let cases = std::env::var("KRES_PROP_CASES")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(256);
        let mut runner = TestRunner::new(Config {
            cases,
            rng_seed: RngSeed::Fixed(9),
            failure_persistence: None,
            ..Config::default()
        });
        runner
            .run(&scenario(), |sc| {
                run(&sc);
                Ok(())
            })
            .unwrap_or_else(|e| panic!("{e}"));
    }
}

/// The status the executor would publish after `action` (see `executor::step`).
fn status_of(sim: &Sim, d: &Desired, action: &Action, before: &Status) -> Status {
    let mut s = before.clone();
    s.desired_revision = Some(d.revision.clone());
    s.workers_desired = d.workers;
    s.workers = sim.observed.slots.clone();
    s.converged = *action == Action::Done;
    s.waiting_for = match action {
        Action::Wait { reason } => Some(reason.clone()),
        _ => None,
    };
    s.set_rollout(&sim.rollout);
    s.set_conditions(sim.observed.now.as_millis() as u64);
    s
}

fn cond(s: &Status, kind: ConditionType) -> (bool, String) {
    let c = s.condition(kind).expect("condition");
    (c.status, c.reason.clone())
}

#[test]
fn conditions_through_a_rollout_and_a_rejection() {
    use ConditionType::*;
    let mut sim = Sim::converged("r1", 3).with_outcome(bad_exits);
    let mut status = Status::default();
    let d = desired("r1", 3);
    let a = sim.step(&d);
    status = status_of(&sim, &d, &a, &status);
    assert_eq!(cond(&status, Available), (true, "AsExpected".into()));
    assert_eq!(cond(&status, Progressing), (false, "AsExpected".into()));
    assert!(!cond(&status, Degraded).0);
    let since = status
        .condition(Progressing)
        .map(|c| c.last_transition_unix_ms);

    // A normal rollout: progressing, never degraded, always available.
    let d2 = desired("r2", 3);
    let mut progressed = false;
    loop {
        let a = sim.step(&d2);
        status = status_of(&sim, &d2, &a, &status);
        assert!(cond(&status, Available).0, "{:?}", status.conditions);
        assert!(!cond(&status, Degraded).0, "{:?}", status.conditions);
        progressed |= cond(&status, Progressing) == (true, "RollingOut".into());
        if a == Action::Done {
            break;
        }
    }
    assert!(progressed);
    assert_eq!(cond(&status, Progressing), (false, "AsExpected".into()));
    assert_ne!(
        status
            .condition(Progressing)
            .map(|c| c.last_transition_unix_ms),
        since,
        "a flip is a transition"
    );

    // A rejected revision: degraded with kresd's reason, no longer progressing.
    let bad = desired("bad", 3);
    loop {
        let a = sim.step(&bad);
        status = status_of(&sim, &bad, &a, &status);
        if a == Action::Done {
            break;
        }
    }
    let (degraded, reason) = cond(&status, Degraded);
    assert!(degraded);
    assert_eq!(reason, "RevisionRejected");
    let message = &status.condition(Degraded).expect("degraded").message;
    assert!(message.contains("error while loading config"), "{message}");
    assert_eq!(
        cond(&status, Progressing),
        (false, "RevisionRejected".into())
    );
    assert!(cond(&status, Available).0);
    assert!(
        status
            .conditions
            .iter()
            .all(|c| c.observed_change_seq == status.change_seq)
    );
}

#[test]
fn a_refused_config_file_is_degraded_invalid_config_and_nothing_else_changes() {
    use ConditionType::*;
    let mut sim = Sim::converged("r1", 3);
    let d = desired("r1", 3);
    let a = sim.step(&d);
    let serving = status_of(&sim, &d, &a, &Status::default());
    let mut refused = serving.clone();
    refused.config_error = Some(crate::reconcile::ConfigRejection {
        source: "/etc/knot-resolver/config.yaml".into(),
        errors: vec![crate::reconcile::RejectedField {
            pointer: "/workers".into(),
            message: "must be at least 1".into(),
        }],
    });
    refused.set_conditions(1);
    assert_eq!(cond(&refused, Degraded), (true, "InvalidConfig".into()));
    let message = &refused.condition(Degraded).expect("degraded").message;
    assert!(
        message.contains("/etc/knot-resolver/config.yaml: /workers: must be at least 1"),
        "{message}"
    );
    assert!(message.contains("revision r1"), "{message}");
    // The fleet keeps serving the last valid config: availability and progress are unchanged.
    assert_eq!(cond(&refused, Available), cond(&serving, Available));
    assert_eq!(cond(&refused, Progressing), cond(&serving, Progressing));
}

#[test]
fn preview_is_the_planners_own_rollout_and_changes_nothing() {
    let sim = Sim::converged("r1", 3);
    let before = (sim.observed.clone(), sim.rollout.clone());
    let mut d = desired("r2", 3);
    d.soak = Duration::from_secs(30);
    let steps = preview(&d, &sim.observed, &sim.rollout);
    assert_eq!(significant(&steps), canary_rollout("r2", 3));
    assert_eq!((sim.observed.clone(), sim.rollout.clone()), before);
    // Scale-down: the extra slot is retired, nothing restarted.
    let steps = significant(&preview(&desired("r1", 2), &sim.observed, &sim.rollout));
    assert_eq!(steps, vec![stop(Slot::Worker(2)), Action::Done]);
    // Nothing to do.
    assert_eq!(
        preview(&desired("r1", 3), &sim.observed, &sim.rollout),
        vec![Action::Done]
    );
}
