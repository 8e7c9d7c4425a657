//! `helm install`, `helm upgrade` and `helm uninstall` of charts/kres-operator against the real
//! kube-apiserver, as docs/kubernetes-quickstart.md and docs/operations.md describe them: the
//! CRD is installed with the release and kept by `helm uninstall`, and so are the
//! KnotResolvers. Its own test binary (own control plane): the other chart tests install the
//! CRD with kubectl, which a helm release could not adopt. The controller is not part of this
//! test (no operator pod runs: the harness has no deployment controller).

use kres_tests::chart::{self, CHART_DIR, repo_path};
use kres_tests::k8s::ControlPlane;
use kres_tests::k8s::wait::eventually;

type R = anyhow::Result<()>;

#[ctor::ctor(unsafe)]
fn private_network() {
    kres_tests::k8s::netns::isolate_process()
}

const NS: &str = "kres-operator";

/// helm with `args` against the test apiserver; stdout, or the error with stderr.
fn helm(cp: &ControlPlane, args: &[&str]) -> anyhow::Result<String> {
    let out = chart::helm()?
        .env("KUBECONFIG", &cp.kubeconfig)
        .args(args)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "helm {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

/// `.spec.replicas` of the operator Deployment.
fn deployment_replicas(cp: &ControlPlane) -> anyhow::Result<String> {
    let args = [
        "get",
        "deploy",
        "-n",
        NS,
        "kres-operator",
        "-o",
        "jsonpath={.spec.replicas}",
    ];
    Ok(cp.kubectl_stdout(&args, "")?)
}

fn exists(cp: &ControlPlane, args: &[&str]) -> anyhow::Result<bool> {
    let out = cp.kubectl_output(args, "")?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    anyhow::ensure!(
        out.status.success() || stderr.contains("NotFound") || stderr.contains("not found"),
        "kubectl {args:?}: {stderr}"
    );
    Ok(out.status.success())
}

#[tokio::test]
async fn helm_install_upgrade_and_uninstall_keep_the_crd_and_the_resolvers() -> R {
    let cp = ControlPlane::shared().await?;
    let example = repo_path("manifests/examples/knotresolver.yaml");
    let example = example.to_string_lossy();
    // The quickstart's install.
    let notes = helm(
        cp,
        &[
            "install",
            "kres-operator",
            CHART_DIR,
            "--namespace",
            NS,
            "--create-namespace",
        ],
    )?;
    assert!(notes.contains("STATUS: deployed"), "{notes}");
    assert!(
        notes.contains("It manages KnotResolvers in every namespace."),
        "{notes}"
    );
    eventually(30, "the KnotResolver kind served", || async {
        Ok(exists(cp, &["get", "knotresolvers", "-A"])?.then_some(()))
    })
    .await?;
    let replicas = deployment_replicas(cp)?;
    assert_eq!(replicas, "2");
    let resolvers = cp.namespace("kres-quickstart").await?;
    cp.kubectl_stdout(&["apply", "-n", &resolvers, "-f", &example], "")?;
    let columns = cp.kubectl_stdout(&["get", "kres", "-n", &resolvers], "")?;
    assert!(
        columns.starts_with("NAME") && columns.contains("resolver"),
        "{columns}"
    );

    // An upgrade changes the release's objects in place.
    helm(
        cp,
        &[
            "upgrade",
            "kres-operator",
            CHART_DIR,
            "--namespace",
            NS,
            "--set",
            "replicaCount=3",
        ],
    )?;
    let replicas = deployment_replicas(cp)?;
    assert_eq!(replicas, "3");
    let history = helm(cp, &["history", "kres-operator", "--namespace", NS])?;
    assert_eq!(history.lines().count(), 3, "{history}");
    // And a rollback returns to the first revision.
    helm(cp, &["rollback", "kres-operator", "1", "--namespace", NS])?;
    let replicas = deployment_replicas(cp)?;
    assert_eq!(replicas, "2");

    // Uninstall: the operator's objects go, the CRD and every KnotResolver stay.
    let out = helm(cp, &["uninstall", "kres-operator", "--namespace", NS])?;
    assert!(
        out.contains("kept due to the resource policy")
            && out.contains("[CustomResourceDefinition] knotresolvers.resolver.kres-operator.io"),
        "helm names what it kept: {out}"
    );
    assert!(!exists(cp, &["get", "deploy", "-n", NS, "kres-operator"])?);
    assert!(!exists(cp, &["get", "clusterrole", "kres-operator"])?);
    assert!(exists(
        cp,
        &["get", "crd", "knotresolvers.resolver.kres-operator.io"]
    )?);
    assert!(exists(cp, &["get", "kres", "-n", &resolvers, "resolver"])?);
    // A new install of the same release adopts the kept CRD.
    helm(
        cp,
        &["install", "kres-operator", CHART_DIR, "--namespace", NS],
    )?;
    assert!(exists(cp, &["get", "deploy", "-n", NS, "kres-operator"])?);
    Ok(())
}
