//! The supervisord backend passes the backend conformance suite (real supervisord + kresd).

use kres_operator::backend::supervisord::{SupervisordBackend, SupervisordSettings};
use kres_tests::backend::conformance;
use kres_tests::net::unique_loopback;

#[tokio::test(flavor = "current_thread")]
async fn supervisord_backend_conformance() -> anyhow::Result<()> {
    let dir = tempfile::Builder::new().prefix("kres-backend-").tempdir()?;
    let mut settings = SupervisordSettings::new(dir.path().join("run"));
    settings.probe_ip = unique_loopback().into();
    let backend = SupervisordBackend::new(settings)?;
    let result = conformance(&backend).await;
    if result.is_err() {
        // Leave nothing behind on failure.
        let _ = backend.rpc().shutdown().await;
    }
    result
}
