//! The supervisord backend passes the backend conformance suite (real supervisord + kresd).

use kres_operator::backend::supervisord::{SupervisordBackend, SupervisordSettings};
use kres_tests::backend::conformance;
use kres_tests::net::unique_loopback;

/// Loopback only: nothing these tests start can reach another host (see
/// `kres_tests::net::isolate_loopback_only`).
#[ctor::ctor(unsafe)]
fn private_network() {
    kres_tests::net::isolate_loopback_only()
}

#[tokio::test(flavor = "current_thread")]
async fn supervisord_backend_conformance() -> anyhow::Result<()> {
    let dir = tempfile::Builder::new().prefix("kres-backend-").tempdir()?;
    let mut settings = SupervisordSettings::new(dir.path().join("run"));
    settings.probe_ip = unique_loopback().into();
    let backend = SupervisordBackend::new(settings)?;
    let result = conformance(&backend, serde_json::Value::Null).await;
    if result.is_err() {
        // Leave nothing behind on failure.
        let _ = backend.rpc().shutdown().await;
    }
    result
}

/// `system.multicall` against a real supervisord: results in call order, a fault is that call's
/// error, and `processes_and_configs` reads both lists in one round trip.
#[tokio::test(flavor = "current_thread")]
async fn supervisord_multicall_results_and_faults() -> anyhow::Result<()> {
    use kres_operator::backend::Backend;
    use kres_operator::backend::supervisord::xmlrpc::Value;
    let dir = tempfile::Builder::new()
        .prefix("kres-multicall-")
        .tempdir()?;
    let mut settings = SupervisordSettings::new(dir.path().join("run"));
    settings.probe_ip = unique_loopback().into();
    let backend = SupervisordBackend::new(settings)?;
    let result = async {
        backend.ensure().await?;
        let rpc = backend.rpc();
        let pid = rpc.pid().await?;
        let results = rpc
            .multicall(&[
                ("supervisor.getPID", vec![]),
                (
                    "supervisor.addProcessGroup",
                    vec![Value::from("no-such-group")],
                ),
            ])
            .await?;
        anyhow::ensure!(results.len() == 2, "two results: {results:?}");
        anyhow::ensure!(
            results[0].as_ref().ok().and_then(Value::as_int) == Some(i64::from(pid)),
            "getPID result: {:?}",
            results[0]
        );
        let fault = results[1].as_ref().err().and_then(|e| e.fault_name());
        anyhow::ensure!(
            fault == Some("BAD_NAME"),
            "addProcessGroup fault: {:?}",
            results[1]
        );
        let (infos, configs) = rpc.processes_and_configs().await?;
        anyhow::ensure!(infos.len() == configs.len(), "{infos:?} vs {configs:?}");
        anyhow::Ok(())
    }
    .await;
    let _ = backend.rpc().shutdown().await;
    result
}
