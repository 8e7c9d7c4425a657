//! Start the test control plane (etcd + kube-apiserver + kube-controller-manager) by hand and keep
//! it running until Ctrl-C; prints the admin kubeconfig path. For manual experiments with
//! kubectl and `kres-test-node-agent`.

use kres_tests::k8s::ControlPlane;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cp = ControlPlane::shared().await?;
    println!("KUBECONFIG={}", cp.kubeconfig.display());
    println!("apiserver {} (logs in {})", cp.url, cp.dir().display());
    tokio::signal::ctrl_c().await?;
    // The atexit hook stops the components and removes the directory.
    Ok(())
}
