//! kres-operator: converges a fleet of kresd workers to a declared configuration.

pub mod backend;
pub mod cli;
pub mod durable;
pub mod host;
pub mod http;
pub mod kresd;
pub mod kube;
pub mod metrics;
pub mod privilege;
pub mod reconcile;
pub mod sockets;
pub mod source;
pub mod time;
