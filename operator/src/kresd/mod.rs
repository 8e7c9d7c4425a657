//! Talking to kresd 5.6 workers: readiness notifications (sd_notify), the control socket, a
//! DNS probe of one endpoint and draining a worker before it stops.

pub mod control;
pub mod drain;
pub mod notify;
pub mod probe;
