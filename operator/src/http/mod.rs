//! The HTTP API: `/v1/config{/pointer}`, `/status`, `/healthz`, `/readyz`, `/metrics`, `/schema`,
//! `/reload`, `/stop`, `/cache/clear`, `/v1/history`, `/v1/rollback`, `/openapi.json` (contract
//! in docs/api.md, the OpenAPI document in docs/openapi.json).
//!
//! The layer is written against [`ControlPlane`] (the reconciler's handle) and [`WorkerControl`]
//! (kresd control sockets), so its HTTP semantics are testable without a fleet.
//!
//! Routes are warp filters built from one table ([`routes::ROUTES`]), which also generates the
//! OpenAPI document ([`openapi`]). They are served through `warp::service` on hyper-util's
//! connection builder over our own listeners ([`server`]), not warp's server, which does not
//! expose the header size and header read time limits.

pub mod client;
pub mod doc;
pub mod error;
pub mod filters;
pub mod guard;
pub mod heavy;
pub mod metrics;
pub mod openapi;
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
