//! The Helm chart charts/kres-operator: generated files current, `helm lint --strict`, what each
//! `ci/*-values.yaml` renders, the values schema, the RBAC rules equal to manifests/rbac.yaml,
//! and the rendered chart, manifests/install.yaml and every example KnotResolver accepted by the
//! real kube-apiserver (`kubectl apply --dry-run=server`, the CRD installed first).

use std::collections::BTreeSet;

use kres_tests::chart::{
    self, CHART_DIR, CRD_MANIFEST, CRD_TEMPLATE, INSTALL_MANIFEST, INSTALL_RELEASE, documents,
    read_repo_file, repo_path,
};
use kres_tests::k8s::ControlPlane;
use serde_json::Value;

type R = anyhow::Result<()>;

#[ctor::ctor(unsafe)]
fn private_network() {
    kres_tests::k8s::netns::isolate_process()
}

/// The modes the chart supports, one `ci/<mode>-values.yaml` each.
const CI_MODES: [&str; 4] = ["cluster-wide", "namespaced", "monitoring", "single-replica"];
/// Namespaces ci/namespaced-values.yaml lists.
const WATCHED: [&str; 2] = ["dns-a", "dns-b"];

fn ci_values(mode: &str) -> String {
    format!("{CHART_DIR}/ci/{mode}-values.yaml")
}

/// `helm template` of release `rel` in namespace `ns` with a ci values file, as documents.
fn render(rel: &str, ns: &str, mode: &str) -> anyhow::Result<Vec<Value>> {
    let values = ci_values(mode);
    Ok(documents(&chart::template(rel, ns, &["-f", &values])?)?)
}

fn kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

fn one<'a>(docs: &'a [Value], k: &str) -> &'a Value {
    let found = kind(docs, k);
    assert_eq!(found.len(), 1, "expected one {k}: {found:?}");
    found[0]
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// (apiGroup, resource, verb, resourceNames) tuples.
type Grants = BTreeSet<(String, String, String, String)>;

/// Everything a list of RBAC rules grants.
fn grants<'a>(rules: impl IntoIterator<Item = &'a Value>) -> Grants {
    let mut out = BTreeSet::new();
    for rule in rules {
        let names = strings(&rule["resourceNames"]).join(",");
        for g in strings(&rule["apiGroups"]) {
            for r in strings(&rule["resources"]) {
                for v in strings(&rule["verbs"]) {
                    out.insert((g.into(), r.into(), v.into(), names.clone()));
                }
            }
        }
    }
    out
}

/// Panics with what only one side grants unless both grant the same.
fn assert_same_grants(what: &str, got: &Grants, want: &Grants) {
    let extra: Vec<_> = got.difference(want).collect();
    let missing: Vec<_> = want.difference(got).collect();
    assert!(
        extra.is_empty() && missing.is_empty(),
        "{what}: granted beyond manifests/rbac.yaml: {extra:?}; missing: {missing:?}"
    );
}

fn rules_of<'a>(docs: &'a [Value], kinds: &[&str]) -> Vec<&'a Value> {
    docs.iter()
        .filter(|d| kinds.iter().any(|k| d["kind"] == *k))
        .flat_map(|d| d["rules"].as_array().into_iter().flatten())
        .collect()
}

#[test]
fn generated_chart_crd_and_install_manifest_are_current() -> R {
    // Order matters: install.yaml is rendered from the chart, which holds the CRD template.
    let crd = read_repo_file(CRD_MANIFEST)?;
    chart::check_generated(CRD_TEMPLATE, &chart::crd_template(&crd)?)
        .map_err(anyhow::Error::msg)?;
    chart::check_generated(INSTALL_MANIFEST, &chart::install_manifest()?)
        .map_err(anyhow::Error::msg)?;
    // The chart's CRD is manifests/crd.yaml plus the keep policy and labels.
    let docs = documents(&chart::template("x", "x", &[])?)?;
    let rendered = one(&docs, "CustomResourceDefinition");
    let committed = &documents(&crd)?[0];
    assert_eq!(rendered["spec"], committed["spec"]);
    assert_eq!(rendered["metadata"]["name"], committed["metadata"]["name"]);
    assert_eq!(
        rendered["metadata"]["annotations"]["helm.sh/resource-policy"],
        "keep"
    );
    Ok(())
}

#[test]
fn helm_lint_strict_passes_for_the_defaults_and_every_ci_values_file() -> R {
    let kv = chart::kube_version_arg();
    let mut files: Vec<String> = std::fs::read_dir(repo_path(&format!("{CHART_DIR}/ci")))?
        .map(|e| Ok(e?.file_name().to_string_lossy().into_owned()))
        .collect::<std::io::Result<_>>()?;
    files.sort();
    let mut expected: Vec<String> = CI_MODES
        .iter()
        .map(|m| format!("{m}-values.yaml"))
        .collect();
    expected.sort();
    assert_eq!(
        files, expected,
        "a ci values file without a test of its mode"
    );
    let out = chart::helm_output(&["lint", "--strict", CHART_DIR, &kv])?;
    assert!(
        out.contains("1 chart(s) linted, 0 chart(s) failed"),
        "{out}"
    );
    for mode in CI_MODES {
        let values = ci_values(mode);
        let out = chart::helm_output(&["lint", "--strict", CHART_DIR, &kv, "-f", &values])?;
        assert!(out.contains("0 chart(s) failed"), "{mode}: {out}");
    }
    Ok(())
}

#[test]
fn the_chart_follows_the_crate_version_and_the_tested_kubernetes_minor() -> R {
    let meta: Value = serde_norway::from_str(&read_repo_file(&format!("{CHART_DIR}/Chart.yaml"))?)?;
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(meta["version"], version);
    assert_eq!(meta["appVersion"], version);
    let docs = documents(&chart::template("r", "ns", &[])?)?;
    let container = &one(&docs, "Deployment")["spec"]["template"]["spec"]["containers"][0];
    let image = format!("localhost/kres-operator:{version}");
    assert_eq!(container["image"], image.as_str());
    // The resolver pods' default image is the operator's own.
    assert!(strings(&container["args"]).contains(&format!("--image={image}").as_str()));
    // kubeVersion admits the test control plane's minor and refuses the one before.
    let err = chart::helm_output(&["template", "r", CHART_DIR, "--kube-version=v1.35.4"])
        .expect_err("kubeVersion must refuse 1.35");
    assert!(err.to_string().contains("kubeVersion"), "{err}");
    Ok(())
}

/// What every mode shares: a hardened operator Deployment.
fn assert_hardened_deployment(mode: &str, docs: &[Value]) {
    let d = one(docs, "Deployment");
    let pod = &d["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{mode}");
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault",
        "{mode}"
    );
    let c = &pod["containers"][0];
    let sc = &c["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true, "{mode}");
    assert_eq!(sc["allowPrivilegeEscalation"], false, "{mode}");
    assert_eq!(strings(&sc["capabilities"]["drop"]), ["ALL"], "{mode}");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz", "{mode}");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz", "{mode}");
    assert_eq!(c["ports"][0]["name"], "http", "{mode}");
    let env: Vec<&str> = c["env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["name"].as_str())
        .collect();
    assert!(env.contains(&"POD_NAMESPACE"), "{mode}: {env:?}");
    assert_eq!(strings(&c["command"]), ["kres-operator"], "{mode}");
    assert_eq!(strings(&c["args"]).first(), Some(&"kube"), "{mode}");
    assert_eq!(
        pod["serviceAccountName"],
        one(docs, "ServiceAccount")["metadata"]["name"],
        "{mode}"
    );
}

/// Every ci values file renders the mode it names, with the RBAC of that mode only.
#[test]
fn every_ci_values_file_renders_its_mode() -> R {
    for mode in CI_MODES {
        let docs = render("kres", "kres-system", mode)?;
        assert_hardened_deployment(mode, &docs);
        let d = one(&docs, "Deployment");
        let args = strings(&d["spec"]["template"]["spec"]["containers"][0]["args"]);
        let replicas = d["spec"]["replicas"].as_u64();
        let lease_role = kind(&docs, "Role")
            .into_iter()
            .filter(|r| r["metadata"]["name"] == "kres-kres-operator-leader-election")
            .count();
        let cluster_roles = kind(&docs, "ClusterRole").len();
        let namespaced_roles: Vec<&str> = kind(&docs, "Role")
            .into_iter()
            .filter(|r| r["metadata"]["name"] == "kres-kres-operator")
            .filter_map(|r| r["metadata"]["namespace"].as_str())
            .collect();
        let crds = kind(&docs, "CustomResourceDefinition").len();
        match mode {
            "cluster-wide" | "monitoring" => {
                assert_eq!(replicas, Some(2), "{mode}");
                assert!(args.contains(&"--leader-elect"), "{mode}: {args:?}");
                assert!(
                    args.contains(&"--lease-namespace=kres-system"),
                    "{mode}: {args:?}"
                );
                assert_eq!((cluster_roles, lease_role, crds), (1, 1, 1), "{mode}");
                assert_eq!(kind(&docs, "ClusterRoleBinding").len(), 1, "{mode}");
                assert!(namespaced_roles.is_empty(), "{mode}");
                assert!(!args.iter().any(|a| a.starts_with("--namespace")), "{mode}");
            }
            "namespaced" => {
                assert_eq!(cluster_roles, 0, "{mode}: nothing cluster-wide");
                assert_eq!(kind(&docs, "ClusterRoleBinding").len(), 0, "{mode}");
                assert_eq!(namespaced_roles, WATCHED, "{mode}");
                let bindings: Vec<&str> = kind(&docs, "RoleBinding")
                    .into_iter()
                    .filter(|b| b["roleRef"]["name"] == "kres-kres-operator")
                    .filter_map(|b| b["metadata"]["namespace"].as_str())
                    .collect();
                assert_eq!(bindings, WATCHED, "{mode}");
                for ns in WATCHED {
                    assert!(
                        args.contains(&format!("--namespace={ns}").as_str()),
                        "{mode}: {args:?}"
                    );
                }
                assert_eq!(lease_role, 1, "{mode}");
            }
            "single-replica" => {
                assert_eq!(replicas, Some(1), "{mode}");
                assert!(
                    !args
                        .iter()
                        .any(|a| a.starts_with("--lease") || *a == "--leader-elect"),
                    "{mode}: {args:?}"
                );
                assert_eq!((lease_role, crds), (0, 0), "{mode}");
            }
            other => panic!("untested mode {other}"),
        }
        let monitors = kind(&docs, "ServiceMonitor").len() + kind(&docs, "PodMonitor").len();
        assert_eq!(monitors, if mode == "monitoring" { 2 } else { 0 }, "{mode}");
        // Every binding names the chart's ServiceAccount in the release namespace.
        let sa = one(&docs, "ServiceAccount")["metadata"]["name"].clone();
        for b in kind(&docs, "RoleBinding")
            .into_iter()
            .chain(kind(&docs, "ClusterRoleBinding"))
        {
            assert_eq!(b["subjects"][0]["name"], sa, "{mode}: {b}");
            assert_eq!(b["subjects"][0]["namespace"], "kres-system", "{mode}: {b}");
        }
    }
    Ok(())
}

/// The monitors select the metrics Service / the operator pods and name a port they have.
#[test]
fn the_monitors_select_the_operator_and_its_metrics_port() -> R {
    let docs = render("kres", "kres-system", "monitoring")?;
    let service = one(&docs, "Service");
    let sm = one(&docs, "ServiceMonitor");
    assert_eq!(sm["metadata"]["labels"]["release"], "prometheus");
    let selects = |selector: &Value, labels: &Value| {
        selector["matchLabels"]
            .as_object()
            .is_some_and(|m| !m.is_empty() && m.iter().all(|(k, v)| &labels[k] == v))
    };
    assert!(
        selects(&sm["spec"]["selector"], &service["metadata"]["labels"]),
        "{sm}"
    );
    let port = &sm["spec"]["endpoints"][0]["port"];
    assert!(
        service["spec"]["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|p| &p["name"] == port)
    );
    let pm = one(&docs, "PodMonitor");
    let pod = &one(&docs, "Deployment")["spec"]["template"];
    assert!(
        selects(&pm["spec"]["selector"], &pod["metadata"]["labels"]),
        "{pm}"
    );
    let port = &pm["spec"]["podMetricsEndpoints"][0]["port"];
    assert!(
        pod["spec"]["containers"][0]["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|p| &p["name"] == port)
    );
    // The Service sends to the operator pods.
    let service_selector = serde_json::json!({ "matchLabels": service["spec"]["selector"] });
    assert!(selects(&service_selector, &pod["metadata"]["labels"]));
    // A ServiceMonitor without the Service it selects is refused.
    let err = chart::template(
        "kres",
        "kres-system",
        &[
            "--set",
            "metrics.serviceMonitor.enabled=true",
            "--set",
            "metrics.service.enabled=false",
        ],
    )
    .expect_err("a ServiceMonitor without its Service");
    assert!(err.to_string().contains("metrics.service.enabled"), "{err}");
    Ok(())
}

#[test]
fn the_values_schema_refuses_unknown_and_invalid_values() -> R {
    for (set, named) in [
        ("replicas=3", "replicas"),
        ("image.registry=x", "registry"),
        ("replicaCount=0", "replicaCount"),
        ("watchNamespaces[0]=Not_A_Namespace", "watchNamespaces"),
        ("metrics.serviceMonitor.interval=soon", "interval"),
        ("image.pullPolicy=Sometimes", "pullPolicy"),
    ] {
        let err = chart::template("r", "ns", &["--set", set])
            .expect_err(set)
            .to_string();
        assert!(
            err.contains("values don't meet the specifications of the schema"),
            "{set}: {err}"
        );
        assert!(err.contains(named), "{set}: {named} not named: {err}");
    }
    // Two operators without a leader would both reconcile.
    let err = chart::template("r", "ns", &["--set", "leaderElection.enabled=false"])
        .expect_err("2 replicas without leader election")
        .to_string();
    assert!(err.contains("needs leaderElection.enabled"), "{err}");
    Ok(())
}

/// The chart and manifests/rbac.yaml grant exactly the same, in both modes.
#[test]
fn the_chart_grants_exactly_the_rules_of_manifests_rbac() -> R {
    let manual = documents(&read_repo_file("manifests/rbac.yaml")?)?;
    let want = grants(rules_of(&manual, &["ClusterRole", "Role"]));
    assert!(want.iter().any(|g| g.1 == "pods"), "{want:?}");
    let cluster = render("kres", "kres-system", "cluster-wide")?;
    assert_same_grants(
        "cluster-wide",
        &grants(rules_of(&cluster, &["ClusterRole", "Role"])),
        &want,
    );
    let namespaced = render("kres", "kres-system", "namespaced")?;
    // Each watched namespace gets the full list; the Lease Role is the same as cluster-wide.
    for ns in WATCHED {
        let in_ns: Vec<Value> = namespaced
            .iter()
            .filter(|d| {
                d["metadata"]["namespace"] == ns
                    || d["metadata"]["name"] == "kres-kres-operator-leader-election"
            })
            .cloned()
            .collect();
        assert_same_grants(ns, &grants(rules_of(&in_ns, &["Role"])), &want);
    }
    Ok(())
}

// ---- The real apiserver ----

/// Applies the chart's CRD for real (the dry runs of KnotResolvers need it) and waits until
/// the apiserver serves the kind.
async fn install_chart_crd(cp: &ControlPlane) -> R {
    static INSTALLED: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    INSTALLED
        .get_or_try_init(|| apply_chart_crd(cp))
        .await
        .map(|_| ())
}

async fn apply_chart_crd(cp: &ControlPlane) -> R {
    let docs = documents(&chart::template("kres", "kres-system", &[])?)?;
    let crd = serde_json::to_string(one(&docs, "CustomResourceDefinition"))?;
    cp.install_crd(&crd).await.map(|_| ())
}

/// Creates namespace `ns` unless it exists.
fn ensure_namespace(cp: &ControlPlane, ns: &str) -> R {
    let body = format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n");
    cp.kubectl_stdout(&["apply", "-f", "-"], &body)?;
    Ok(())
}

/// Server-side dry run of `docs`; each object must be reported as created.
fn dry_run(cp: &ControlPlane, what: &str, docs: &[&Value]) -> R {
    let stream: String = docs
        .iter()
        .map(|d| format!("---\n{}\n", serde_json::to_string(d).unwrap_or_default()))
        .collect();
    let out = cp.kubectl_stdout(&["apply", "--dry-run=server", "-f", "-"], &stream)?;
    let lines: Vec<&str> = out
        .lines()
        .filter(|l| l.contains("(server dry run)"))
        .collect();
    assert_eq!(lines.len(), docs.len(), "{what}: {out}");
    Ok(())
}

#[tokio::test]
async fn the_rendered_chart_for_every_mode_applies_to_the_apiserver() -> R {
    let cp = ControlPlane::shared().await?;
    install_chart_crd(cp).await?;
    for ns in ["kres-system"].into_iter().chain(WATCHED) {
        ensure_namespace(cp, ns)?;
    }
    for mode in CI_MODES {
        let docs = render("kres", "kres-system", mode)?;
        // The prometheus-operator kinds are not served here; their shape is checked by
        // the_monitors_select_the_operator_and_its_metrics_port.
        let served: Vec<&Value> = docs
            .iter()
            .filter(|d| {
                !d["apiVersion"]
                    .as_str()
                    .unwrap_or("")
                    .starts_with("monitoring.coreos.com/")
            })
            .collect();
        assert!(served.len() >= 5, "{mode}: {} objects", served.len());
        dry_run(cp, mode, &served)?;
    }
    Ok(())
}

#[tokio::test]
async fn install_yaml_applies_to_the_apiserver() -> R {
    let cp = ControlPlane::shared().await?;
    install_chart_crd(cp).await?;
    let docs = documents(&read_repo_file(INSTALL_MANIFEST)?)?;
    assert_eq!(docs[0]["kind"], "Namespace");
    // The namespace for real (a dry-run namespace does not exist for the objects in it).
    ensure_namespace(cp, INSTALL_RELEASE)?;
    let rest: Vec<&Value> = docs.iter().skip(1).collect();
    dry_run(cp, INSTALL_MANIFEST, &rest)?;
    Ok(())
}

#[tokio::test]
async fn every_example_knotresolver_applies_to_the_apiserver() -> R {
    let cp = ControlPlane::shared().await?;
    install_chart_crd(cp).await?;
    let ns = cp.namespace("kres-examples").await?;
    let mut applied = 0;
    for entry in std::fs::read_dir(repo_path("manifests/examples"))? {
        let path = entry?.path();
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        if !(name.starts_with("knotresolver") && name.ends_with(".yaml")) {
            continue;
        }
        let text = std::fs::read_to_string(&path)?;
        let out = cp.kubectl_output(&["apply", "--dry-run=server", "-n", &ns, "-f", "-"], &text)?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{name}: {stderr}");
        assert!(
            stdout.contains("created (server dry run)"),
            "{name}: {stdout}"
        );
        // No field dropped or unknown: the apiserver warns about those.
        assert!(!stderr.contains("Warning"), "{name}: {stderr}");
        applied += 1;
    }
    assert_eq!(applied, 6);
    Ok(())
}

/// Applied for real, the bindings give the chart's ServiceAccount exactly its mode's reach:
/// cluster-wide everywhere, namespaced only in the watched namespaces; never Secrets.
#[tokio::test]
async fn the_service_account_can_do_what_its_mode_allows_and_no_more() -> R {
    let cp = ControlPlane::shared().await?;
    install_chart_crd(cp).await?;
    for ns in ["kres-ns-mode", "kres-cw-mode", "sa-a", "sa-b", "sa-other"] {
        ensure_namespace(cp, ns)?;
    }
    // (verb, resource, subresource) in namespace ns, as the chart's ServiceAccount of sa_ns.
    let can = |sa_ns: &str, verb: &str, resource: &str, ns: &str| -> anyhow::Result<bool> {
        let who = format!("system:serviceaccount:{sa_ns}:kres-kres-operator");
        let (resource, sub) = resource.split_once('/').unwrap_or((resource, ""));
        let mut args = vec!["auth", "can-i", verb, resource, "-n", ns, "--as", &who];
        let sub = format!("--subresource={sub}");
        if sub != "--subresource=" {
            args.push(&sub);
        }
        let out = cp.kubectl_output(&args, "")?;
        let answer = String::from_utf8_lossy(&out.stdout).trim().to_string();
        anyhow::ensure!(
            answer == "yes" || answer == "no",
            "kubectl auth can-i {args:?}: {answer:?} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(answer == "yes")
    };
    let apply = |docs: &[Value]| -> R {
        let stream: String = docs
            .iter()
            .filter(|d| d["kind"] != "CustomResourceDefinition")
            .map(|d| format!("---\n{}\n", serde_json::to_string(d).unwrap_or_default()))
            .collect();
        cp.kubectl_stdout(&["apply", "-f", "-"], &stream)?;
        Ok(())
    };
    const KR: &str = "knotresolvers.resolver.kres-operator.io";
    const LEASES: &str = "leases.coordination.k8s.io";
    let ns_mode = chart::template(
        "kres",
        "kres-ns-mode",
        &["--set", "watchNamespaces={sa-a,sa-b}"],
    )?;
    apply(&documents(&ns_mode)?)?;
    assert!(can("kres-ns-mode", "create", "pods", "sa-a")?);
    assert!(can(
        "kres-ns-mode",
        "patch",
        &format!("{KR}/status"),
        "sa-b"
    )?);
    assert!(
        !can("kres-ns-mode", "create", "pods", "sa-other")?,
        "namespaced mode reaches sa-other"
    );
    assert!(!can("kres-ns-mode", "update", KR, "sa-a")?);
    assert!(!can("kres-ns-mode", "get", "secrets", "sa-a")?);
    assert!(can("kres-ns-mode", "patch", LEASES, "kres-ns-mode")?);
    assert!(!can("kres-ns-mode", "patch", LEASES, "sa-a")?);

    apply(&render("kres", "kres-cw-mode", "cluster-wide")?)?;
    assert!(can("kres-cw-mode", "create", "pods", "sa-other")?);
    assert!(can(
        "kres-cw-mode",
        "create",
        "events.events.k8s.io",
        "sa-other"
    )?);
    assert!(!can("kres-cw-mode", "get", "secrets", "sa-other")?);
    assert!(!can("kres-cw-mode", "delete", "services", "sa-other")?);
    assert!(!can("kres-cw-mode", "patch", LEASES, "sa-other")?);
    Ok(())
}
