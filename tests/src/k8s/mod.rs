//! A real Kubernetes control plane for tests: etcd + kube-apiserver + kube-controller-manager +
//! kube-proxy (nftables), built by `tests/k8s/build-tools.sh` (`make k8s-tools`), started once
//! per test binary inside the binary's private network namespace ([`netns`]), with a generated
//! PKI, RBAC authorization, an audit log ([`audit`]) and an admin kubeconfig.
//!
//! A test file using it starts with
//! `#[ctor::ctor(unsafe)] fn private_network() { kres_tests::k8s::netns::isolate_process() }`.
//!
//! ```no_run
//! # async fn f() -> Result<(), kres_tests::k8s::Error> {
//! let cp = kres_tests::k8s::ControlPlane::shared().await?;
//! let ns = cp.namespace("demo").await?; // a fresh namespace per test
//! let admin = cp.admin_client().await?; // a client bound to the current tokio runtime
//! # Ok(()) }
//! ```

pub mod audit;
mod control_plane;
pub mod netns;
pub mod operator;
pub mod pki;
pub mod tools;
pub mod wait;

pub use audit::{AuditEvent, AuditLog, AuditMark};
pub use control_plane::{ControlPlane, PROXY_NODE, TestNode};

/// Errors of the control-plane fixture.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A binary of the Kubernetes test tooling is not built.
    #[error(
        "{name} not found at {}: build the Kubernetes test tooling first with `make k8s-tools` \
         (runs tests/k8s/build-tools.sh; needs Go and the Go module proxy; the cold build takes \
         tens of minutes, later runs reuse the cache)",
        path.display()
    )]
    ToolMissing {
        /// Binary name.
        name: String,
        /// Where it was expected.
        path: std::path::PathBuf,
    },
    /// A file or process operation failed.
    #[error("{0}: {1}")]
    Io(String, #[source] std::io::Error),
    /// Generating the test PKI failed.
    #[error("test PKI: {0}")]
    Pki(String),
    /// A component did not start or become ready.
    #[error("{what} did not become ready: {detail}")]
    Start {
        /// The component (etcd, kube-apiserver, ...).
        what: String,
        /// Why, with the tail of its log.
        detail: String,
    },
    /// Building a client from a kubeconfig failed.
    #[error("kubeconfig: {0}")]
    Kubeconfig(String),
    /// An API call failed.
    #[error("{what}: {source}")]
    Api {
        /// What was attempted.
        what: String,
        /// The client error.
        #[source]
        source: kube::Error,
    },
    /// The test node agent failed.
    #[error("node agent: {0}")]
    NodeAgent(#[source] crate::node_agent::Error),
    /// A command (kubectl) exited unsuccessfully.
    #[error("{what} failed ({status}): {stderr}")]
    Command {
        /// The command line.
        what: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// Its standard error.
        stderr: String,
    },
    /// Waiting for a condition timed out.
    #[error("timed out after {secs} s waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long.
        secs: u64,
    },
}
