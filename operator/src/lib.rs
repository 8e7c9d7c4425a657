//! kres-operator: converges a fleet of kresd workers to a declared configuration.

pub mod http;
pub mod kresd;
pub mod metrics;
pub mod sockets;
