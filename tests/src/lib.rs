//! Test harness shared by the integration tests: loopback addresses, a small DNS client, and
//! runners for real kresd and knotd processes.
//!
//! Every test talks to loopback only (127.0.0.0/8, ::1).

pub mod backend;
pub mod control;
pub mod dns;
pub mod host;
pub mod knotd;
pub mod kresd;
pub mod net;
