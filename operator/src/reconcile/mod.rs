//! The reconcile core: a pure planner over desired state, observed workers and rollout state.
//!
//! No I/O and no async here: the executor (see `crate::host`) observes the backend, calls
//! [`plan`], applies the returned [`Action`] and updates the [`Rollout`].

pub mod model;
pub mod plan;
pub mod rollout;
pub mod store;

pub use model::{ChangeSeq, Desired, GcSpec, Observed, ObservedSlot, Revision, Slot, SlotState};
pub use plan::{Action, plan, plan_with_phase};
pub use rollout::{Event, Failure, Phase, Rollout};
pub use store::{
    Durable, FileRevisionStore, RevisionRecord, RevisionState, RevisionStore, StoreError,
};

#[cfg(test)]
mod tests;
