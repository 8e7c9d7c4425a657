//! Talking to kresd 5.6 workers: readiness notifications (sd_notify), the control socket and a
//! DNS probe of one endpoint.

pub mod control;
pub mod notify;
pub mod probe;
