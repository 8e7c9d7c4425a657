//! Rollout state kept by the operator between planning steps. Its durable part ([`Durable`]:
//! target, last good, failed revisions, history) is saved to a [`super::store::RevisionStore`];
//! the rest (phase, events) is recovered from what the backend shows.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use super::model::{Observed, Revision, Slot, SlotState};
use super::store::{Durable, RevisionState};

/// How many rollout events are kept.
pub const EVENT_HISTORY: usize = 50;

/// Where a rollout stands.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "phase")]
pub enum Phase {
    /// Converged: nothing to do.
    #[default]
    Idle,
    /// First start or scale-up: workers started on a revision without a canary.
    Starting,
    /// The canary (surge slot) runs the target revision and is being gated.
    Canary,
    /// Regular slot `slot` is being replaced with the target revision.
    Rolling {
        /// The slot being replaced.
        slot: u16,
    },
    /// All regular slots run the target; the surge slot and left-over slots are stopped.
    Finishing,
    /// The target failed; slots are put back on the last good revision.
    RollingBack,
    /// The target failed and there is no good revision to go back to.
    Failed,
}

/// Why a revision was rejected.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Failure {
    /// The rejected revision.
    pub revision: Revision,
    /// The slot whose gate failed.
    pub slot: Option<Slot>,
    /// What happened: gate result plus the worker's own log tail when available.
    pub reason: String,
    /// Unix time (ms).
    pub at_unix_ms: u64,
}

/// One rollout event (for `/status` and logs).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Event {
    /// Unix time (ms).
    pub at_unix_ms: u64,
    /// Short machine-friendly kind: `target`, `start`, `replace`, `stop`, `failed`, `good`, ...
    pub kind: String,
    /// Human-readable description.
    pub message: String,
    /// The slot it is about, if any (not serialized: the message names it).
    #[serde(skip)]
    pub slot: Option<Slot>,
}

/// Rollout state: the durable part (desired and last good revision, failed revisions,
/// history), phase, last failure, events.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Rollout {
    /// What survives an operator restart.
    pub durable: Durable,
    /// Whether `durable` changed since it was saved last.
    #[serde(skip)]
    dirty: bool,
    /// Current phase.
    pub phase: Phase,
    /// Most recent failure.
    pub last_failure: Option<Failure>,
    /// The last [`EVENT_HISTORY`] events, oldest first.
    pub events: VecDeque<Event>,
}

impl Rollout {
    /// Rollout state resumed from a store: the most recent failure is the last one stored.
    pub fn resume(durable: Durable) -> Self {
        let last_failure = durable
            .failed
            .values()
            .max_by_key(|f| f.at_unix_ms)
            .cloned();
        Rollout {
            durable,
            last_failure,
            ..Rollout::default()
        }
    }

    /// Whether the durable part changed since [`Rollout::saved`] (then it should be saved).
    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// The durable part was saved.
    pub fn saved(&mut self) {
        self.dirty = false;
    }

    /// Record the config (text) and endpoints `revision` is desired with, in the history.
    pub fn note_config(
        &mut self,
        revision: &Revision,
        config: &str,
        endpoints: &[String],
        at: u64,
    ) {
        let same = self
            .durable
            .record(revision)
            .is_some_and(|r| r.config == config && r.endpoints == endpoints)
            && self
                .durable
                .history
                .back()
                .is_some_and(|r| &r.revision == revision);
        if !same {
            self.durable.desired(revision, config, endpoints, at);
            self.dirty = true;
        }
    }

    /// Adopted a running fleet without a stored last good revision: take the guessed one.
    pub fn adopt_last_good(&mut self, revision: Revision) {
        self.durable.last_good = Some(revision);
        self.dirty = true;
    }

    /// Record an event, keeping the last [`EVENT_HISTORY`].
    pub fn record(&mut self, at_unix_ms: u64, kind: &str, message: impl Into<String>) {
        self.record_slot(at_unix_ms, kind, None, message);
    }

    /// Record an event about `slot` (see [`Rollout::record`]).
    pub fn record_slot(
        &mut self,
        at_unix_ms: u64,
        kind: &str,
        slot: Option<Slot>,
        message: impl Into<String>,
    ) {
        if self.events.len() == EVENT_HISTORY {
            self.events.pop_front();
        }
        self.events.push_back(Event {
            at_unix_ms,
            kind: kind.to_string(),
            message: message.into(),
            slot,
        });
    }

    /// Take note of the desired revision. A new desired revision clears its own failure mark
    /// (a changed desired config may be retried) and is recorded as an event. Returns whether the
    /// desired revision changed.
    pub fn note_desired(&mut self, revision: &Revision, at_unix_ms: u64) -> bool {
        if self.durable.target.as_ref() == Some(revision) {
            return false;
        }
        self.durable.failed.remove(revision);
        self.dirty = true;
        let from = self.durable.target.clone().unwrap_or_else(|| "-".into());
        self.durable.target = Some(revision.clone());
        self.record(
            at_unix_ms,
            "target",
            format!("desired revision {revision} (was {from})"),
        );
        true
    }

    /// Mark `revision` failed with a reason.
    pub fn mark_failed(&mut self, failure: Failure) {
        self.record(
            failure.at_unix_ms,
            "failed",
            format!(
                "revision {} failed{}: {}",
                failure.revision,
                failure.slot.map(|s| format!(" on {s}")).unwrap_or_default(),
                failure.reason
            ),
        );
        self.last_failure = Some(failure.clone());
        self.durable.set_state(
            &failure.revision,
            RevisionState::Failed,
            Some(&failure.reason),
            failure.at_unix_ms,
        );
        self.durable
            .failed
            .insert(failure.revision.clone(), failure);
        self.dirty = true;
    }

    /// Mark `revision` good (every regular slot runs it, ready).
    pub fn mark_good(&mut self, revision: &Revision, at_unix_ms: u64) {
        if self.durable.last_good.as_ref() != Some(revision) {
            self.record(
                at_unix_ms,
                "good",
                format!("revision {revision} serving on every slot"),
            );
            self.durable.last_good = Some(revision.clone());
            self.dirty = true;
        }
        if self
            .durable
            .record(revision)
            .is_some_and(|r| r.state != RevisionState::Good)
        {
            self.durable
                .set_state(revision, RevisionState::Good, None, at_unix_ms);
            self.dirty = true;
        }
    }

    /// The last good revision: the remembered one, or (after an operator restart) the one recovered
    /// from what runs: the most common revision among ready regular slots that is not the desired
    /// one (a rollout was interrupted), else the desired one when regular slots run it ready.
    pub fn effective_last_good(&self, desired: &Revision, observed: &Observed) -> Option<Revision> {
        if self.durable.last_good.is_some() {
            return self.durable.last_good.clone();
        }
        let mut counts: BTreeMap<&Revision, usize> = BTreeMap::new();
        for s in &observed.slots {
            if matches!(s.slot, Slot::Worker(_))
                && s.state == SlotState::Ready
                && !self.durable.failed.contains_key(&s.revision)
            {
                *counts.entry(&s.revision).or_default() += 1;
            }
        }
        let other = counts
            .iter()
            .filter(|(r, _)| **r != desired)
            .max_by(|a, b| a.1.cmp(b.1).then_with(|| b.0.cmp(a.0)))
            .map(|(r, _)| (*r).clone());
        other.or_else(|| counts.contains_key(desired).then(|| desired.clone()))
    }
}
