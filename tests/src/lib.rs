//! Test harness shared by the integration tests: loopback addresses, a small DNS client, runners
//! for real kresd, knotd and `kres-operator host` processes, child processes that die with the
//! test binary, a real Kubernetes control plane and a test node agent (kubelet stand-in).
//!
//! Every test talks to loopback only (127.0.0.0/8, ::1).

pub mod api;
pub mod backend;
pub mod chart;
pub mod control;
pub mod dns;
pub mod dnsperf;
pub mod host;
pub mod json;
pub mod k8s;
pub mod knotd;
pub mod kresd;
pub mod net;
pub mod node_agent;
pub mod podman;
pub mod process;
pub mod root;
