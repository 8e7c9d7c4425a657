//! The reconcile core: a pure planner over desired state, observed workers and rollout state
//! ([`plan`]), the executor that applies it over a backend one step at a time
//! ([`executor::reconcile_once`]), the durable revision store and the status.

pub mod executor;
pub mod model;
pub mod plan;
pub mod rollout;
pub mod status;
pub mod store;

pub use executor::{Clock, Context, Next, ReconcileError, SystemClock, Target, reconcile_once};
pub use model::{
    ChangeSeq, Desired, GcSpec, Observed, ObservedSlot, Revision, Slot, SlotState, WorkerRef,
    revision_of,
};
pub use plan::{Action, plan, plan_with_phase, preview};
pub use rollout::{Event, Failure, Phase, Rollout};
pub use status::{Condition, ConditionType, ConfigRejection, RejectedField, Status, StatusSink};
pub use store::{
    Durable, FileRevisionStore, RevisionRecord, RevisionState, RevisionStore, StoreError,
};

#[cfg(test)]
mod tests;
