//! The HTTP API: `/v1/config{/pointer}`, `/status`, `/healthz`, `/readyz`, `/metrics`, `/schema`,
//! `/reload`, `/stop`, `/cache/clear` (contract in docs/api.md).
//!
//! The layer is written against [`ControlPlane`] (the reconciler's handle) and [`WorkerControl`]
//! (kresd control sockets), so its HTTP semantics are testable without a fleet.
//!
//! Built on hyper 1 directly rather than warp: the server needs explicit control of header size,
//! header read time, body limits and per-route timeouts, which warp 0.4's server does not expose.

pub mod client;
pub mod doc;
pub mod guard;
pub mod heavy;
pub mod host_plane;
pub mod metrics;
pub mod plane;
pub mod routes;
pub mod server;
pub mod worker;

pub use doc::etag_of;
pub use plane::{
    Applied, ApplyError, CacheGcStatus, ControlPlane, Failure, FieldError, HistoryEntry, Plan,
    PlannedRestart, RolloutEvent, StatusSnapshot, WorkerSocket, WorkerStatus,
};
pub use server::{Bound, Listen, ServeError, ServerConfig, ServerHandle, serve};
pub use worker::{KresdControl, WorkerControl};
