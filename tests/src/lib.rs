//! Test harness shared by the integration tests: loopback addresses and a small DNS client.
//!
//! Every test talks to loopback only (127.0.0.0/8, ::1).

pub mod dns;
pub mod net;
