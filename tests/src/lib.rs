//! Test harness shared by the integration tests: loopback addresses, a small DNS client,
//! child processes that die with the test binary, a real Kubernetes control plane and a test
//! node agent (kubelet stand-in running kresd).
//!
//! Every test talks to loopback only (127.0.0.0/8, ::1).

pub mod dns;
pub mod k8s;
pub mod net;
pub mod node_agent;
pub mod process;
