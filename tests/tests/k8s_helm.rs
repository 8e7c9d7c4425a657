//! docs/kubernetes-quickstart.md, run end to end against the test control plane: every command
//! of the document is either executed here (the exact line, through `sh -c`, with the harness's
//! kubeconfig, kubectl and helm) or listed as skipped with the reason, so the quickstart cannot
//! rot. `helm install` of charts/kres-operator creates the operator Deployment; the real
//! kube-controller-manager makes its ReplicaSet and pods; the node agent runs each operator pod
//! as the built `kres-operator` binary with the pod's own ServiceAccount token (a projected
//! TokenRequest token at /var/run/secrets/kubernetes.io/serviceaccount, the apiserver at the
//! `kubernetes` Service's ClusterIP through kube-proxy), its /healthz /readyz httpGet probes
//! deciding readiness. The chart's operator (one leader of two) then reconciles the example
//! KnotResolver through to DNS answers via the Service's ClusterIP. Along the way: the
//! apiserver's audit log shows the chart's ServiceAccount used only what the chart grants and
//! every grant is used (or docs/operations.md says why not); a removed rule gives Forbidden and
//! a Degraded condition, not a crash; `helm upgrade`, `helm rollback` and `helm uninstall`
//! behave as docs/operations.md says, and the resolver keeps answering after the uninstall.
//! Its own test binary (own control plane): the release's CRD must not exist before it.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Pod, Service};
use kres_crd::k8s::KnotResolver;
use kres_tests::chart::{self, repo_path};
use kres_tests::k8s::operator::{ask, cluster_ip, http_get, pod_ip};
use kres_tests::k8s::wait::{eventually, pod_ready};
use kres_tests::k8s::{ControlPlane, tools};
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::{Value, json};

type R = anyhow::Result<()>;

#[ctor::ctor(unsafe)]
fn private_network() {
    kres_tests::k8s::netns::isolate_process()
}

const DOC: &str = "docs/kubernetes-quickstart.md";
/// The release, its namespace, its ServiceAccount, its Lease (the quickstart's names).
const RELEASE: &str = "kres-operator";
const RESOLVERS: &str = "dns";
const SA_USER: &str = "system:serviceaccount:kres-operator:kres-operator";
const RECORD: &str = "www.corp.example.test.";

/// Quickstart commands this test does not run, with the reason.
const SKIPPED: [(&str, &str); 2] = [
    (
        "kubectl run -n dns dig --rm -it --restart=Never --image=localhost/kres-operator:0.1.0 -- kres-operator probe --address \"$(kubectl get svc -n dns resolver -o jsonpath='{.spec.clusterIP}')\"",
        "attaches to a pod's terminal, which needs a kubelet; the test asks the same ClusterIP with kdig from the node",
    ),
    (
        "kdig @resolver.dns.svc www.corp.example.test. A",
        "needs cluster DNS (no CoreDNS in the harness); the test asks the Service's ClusterIP",
    ),
];

/// The request tuples the chart grants that the scenario does not use, with the reason
/// (docs/operations.md, "RBAC", says the same).
const GRANTED_UNUSED: [(&str, &str, &str); 6] = [
    // Server-side apply that creates the object: one `patch` request, which the apiserver also
    // authorizes as `create`.
    ("", "services", "create"),
    ("policy", "poddisruptionbudgets", "create"),
    // Only when a resolver goes below 2 replicas or disables its PDB.
    ("policy", "poddisruptionbudgets", "delete"),
    // Only when more revisions exist than the history keeps.
    ("", "configmaps", "delete"),
    // Only when a revision's ConfigMap is not yet in the watch cache.
    ("", "configmaps", "get"),
    // Only for a resolver with spec.cache.volumeClaimTemplate (one claim per slot).
    ("", "persistentvolumeclaims", "create"),
];

/// Command lines of the document's ```sh blocks: comments dropped, `\` continuations joined.
fn doc_commands() -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(repo_path(DOC))?;
    let (mut out, mut in_sh, mut pending) = (Vec::new(), false, String::new());
    for line in text.lines() {
        if line.starts_with("```") {
            in_sh = line == "```sh";
            continue;
        }
        if !in_sh {
            continue;
        }
        let code = match line.find("  #") {
            Some(i) => &line[..i],
            None => line,
        }
        .trim();
        if code.is_empty() || code.starts_with('#') {
            continue;
        }
        match code.strip_suffix('\\') {
            Some(head) => {
                pending.push_str(head.trim_end());
                pending.push(' ');
            }
            None => {
                pending.push_str(code);
                out.push(std::mem::take(&mut pending));
            }
        }
    }
    Ok(out)
}

/// Runs quickstart commands as the document shows them.
struct Doc {
    commands: Vec<String>,
    ran: BTreeSet<String>,
    kubeconfig: PathBuf,
}

impl Doc {
    fn new(cp: &ControlPlane) -> anyhow::Result<Doc> {
        Ok(Doc {
            commands: doc_commands()?,
            ran: BTreeSet::new(),
            kubeconfig: cp.kubeconfig.clone(),
        })
    }

    /// `sh -c "exec <line>"` from the repository top with the harness's tools first in PATH.
    fn command(&mut self, line: &str, editor: Option<&str>) -> anyhow::Result<Command> {
        anyhow::ensure!(
            self.commands.iter().any(|c| c == line),
            "{DOC} has no command {line:?}"
        );
        self.ran.insert(line.to_string());
        let path = format!(
            "{}:{}",
            tools::bin_dir().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(format!("exec {line}"))
            .current_dir(repo_path("."))
            .env("PATH", path)
            .env("KUBECONFIG", &self.kubeconfig)
            .stdin(Stdio::null());
        chart::helm_env(&mut cmd);
        if let Some(e) = editor {
            cmd.env("KUBE_EDITOR", e);
        }
        Ok(cmd)
    }

    /// Run `line`; its standard output, or an error with its standard error.
    fn run(&mut self, line: &str) -> anyhow::Result<String> {
        self.run_with(line, None)
    }

    fn run_with(&mut self, line: &str, editor: Option<&str>) -> anyhow::Result<String> {
        let out = self.command(line, editor)?.output()?;
        anyhow::ensure!(
            out.status.success(),
            "{line}: {}: {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8(out.stdout)?)
    }
}

/// The operator pods of the release (by the chart's selector labels).
async fn operator_pods(client: &kube::Client) -> anyhow::Result<Vec<Pod>> {
    let lp = ListParams::default().labels("app.kubernetes.io/instance=kres-operator");
    Ok(Api::<Pod>::namespaced(client.clone(), RELEASE)
        .list(&lp)
        .await?
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect())
}

/// Wait until the Deployment has `n` ready replicas (the node agent's httpGet /readyz probes
/// passed) and exactly `n` live pods; those pods.
async fn operators_ready(client: &kube::Client, n: i32) -> anyhow::Result<Vec<Pod>> {
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), RELEASE);
    let (deploys, client) = (&deploys, client);
    eventually(120, &format!("{n} ready operator pods"), || async move {
        let d = deploys.get(RELEASE).await?;
        let ready = d.status.and_then(|s| s.ready_replicas).unwrap_or(0);
        let pods = operator_pods(client).await?;
        let live = pods.len() == n as usize && pods.iter().all(pod_ready);
        Ok((ready == n && live).then_some(pods))
    })
    .await
}

/// The Lease holder of the chart's leader election.
async fn lease_holder(client: &kube::Client) -> anyhow::Result<Option<String>> {
    let lease = Api::<Lease>::namespaced(client.clone(), RELEASE)
        .get_opt(RELEASE)
        .await?;
    Ok(lease.and_then(|l| l.spec).and_then(|s| s.holder_identity))
}

/// `name A` via the resolver Service's ClusterIP, waiting until the answer is `want`.
async fn answers(svc: SocketAddr, want: &str) -> R {
    eventually(
        120,
        &format!("{RECORD} = {want} via {svc}"),
        || async move {
            Ok(ask(svc, RECORD)
                .await
                .ok()
                .filter(|a| a == want)
                .map(|_| ()))
        },
    )
    .await
}

/// The Degraded condition of the resolver: (status, reason, message).
async fn degraded(client: &kube::Client) -> anyhow::Result<Option<(String, String, String)>> {
    let r = Api::<KnotResolver>::namespaced(client.clone(), RESOLVERS)
        .get("resolver")
        .await?;
    Ok(r.status.and_then(|s| {
        s.conditions
            .into_iter()
            .find(|c| c.type_ == "Degraded")
            .map(|c| (c.status, c.reason, c.message))
    }))
}

/// Wait until the resolver's rollout is over (Progressing False for its generation).
async fn settled(client: &kube::Client) -> R {
    let api = Api::<KnotResolver>::namespaced(client.clone(), RESOLVERS);
    let api = &api;
    eventually(120, "the resolver settled", || async move {
        let r = api.get("resolver").await?;
        let generation = r.metadata.generation;
        Ok(r.status
            .filter(|s| {
                s.observed_generation == generation
                    && s.conditions
                        .iter()
                        .any(|c| c.type_ == "Progressing" && c.status == "False")
            })
            .map(|_| ()))
    })
    .await
}

/// (apiGroup, resource[/subresource], verb) granted by manifests/rbac.yaml's Roles.
fn granted() -> anyhow::Result<BTreeSet<(String, String, String)>> {
    let text = std::fs::read_to_string(repo_path("manifests/rbac.yaml"))?;
    let mut out = BTreeSet::new();
    for doc in chart::documents(&text)? {
        if doc["kind"] != "ClusterRole" && doc["kind"] != "Role" {
            continue;
        }
        for rule in doc["rules"].as_array().into_iter().flatten() {
            let list = |k: &str| -> Vec<String> {
                rule[k]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            };
            for g in list("apiGroups") {
                for r in list("resources") {
                    for v in list("verbs") {
                        out.insert((g.clone(), r.clone(), v));
                    }
                }
            }
        }
    }
    Ok(out)
}

// Multi-threaded: the node agents must run while a quickstart command (`kubectl wait`) blocks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kubernetes_quickstart_runs_on_the_harness_with_the_charts_operator() -> R {
    kres_tests::k8s::operator::test_logging();
    let cp = ControlPlane::shared().await?;
    let client = cp.admin_client().await?;
    let mut doc = Doc::new(cp)?;
    // The image's `kres-operator` is the built binary (as the image's kresd is the host's).
    let operator = kres_tests::host::operator_binary()?;
    let image = vec![("kres-operator".to_string(), operator.clone())];
    let nodes = [
        cp.node_agent_with(RELEASE, image.clone()).await?,
        cp.node_agent_with(RESOLVERS, image).await?,
    ];
    let result = scenario(cp, &client, &mut doc).await;
    result.map_err(|e| anyhow::anyhow!("{e:#}\n{}", diagnostics(cp, &nodes)))
}

/// The objects and the last log lines of every container the node agents ran.
fn diagnostics(cp: &ControlPlane, nodes: &[kres_tests::k8s::TestNode]) -> String {
    let mut out = cp
        .kubectl_stdout(
            &["get", "deploy,rs,pods,kres,svc,lease", "-A", "-o", "wide"],
            "",
        )
        .unwrap_or_else(|e| e.to_string());
    out += &cp
        .kubectl_stdout(&["get", "kres", "-n", RESOLVERS, "-o", "yaml"], "")
        .unwrap_or_else(|e| e.to_string());
    for node in nodes {
        let Ok(pods) = std::fs::read_dir(node.dir()) else {
            continue;
        };
        for pod in pods.flatten() {
            let Ok(logs) = std::fs::read_dir(pod.path().join("logs")) else {
                continue;
            };
            for log in logs.flatten() {
                let text = std::fs::read_to_string(log.path()).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                let tail = lines[lines.len().saturating_sub(30)..].join("\n");
                out += &format!("\n--- {} ---\n{tail}\n", log.path().display());
            }
        }
    }
    out
}

async fn scenario(cp: &ControlPlane, client: &kube::Client, doc: &mut Doc) -> R {
    let client = client.clone();
    let audit_start = cp.audit().mark()?;

    // 1. Install the operator.
    let notes = doc.run(
        "helm install kres-operator charts/kres-operator --namespace kres-operator --create-namespace",
    )?;
    assert!(notes.contains("STATUS: deployed"), "{notes}");
    assert!(
        notes.contains("It manages KnotResolvers in every namespace."),
        "{notes}"
    );
    let pods = operators_ready(&client, 2).await?;
    let names: BTreeSet<String> = pods.iter().map(|p| p.name_any()).collect();
    for p in &pods {
        // The kube-controller-manager's ReplicaSet made them, with the chart's ServiceAccount.
        let owner = &p.owner_references()[0];
        assert_eq!(owner.kind, "ReplicaSet", "{}", p.name_any());
        let sa = p.spec.as_ref().and_then(|s| s.service_account_name.clone());
        assert_eq!(sa.as_deref(), Some(RELEASE));
    }
    let holder = eventually(60, "a Lease holder", || async {
        lease_holder(&client).await
    })
    .await?;
    assert!(names.contains(&holder), "holder {holder} of {names:?}");

    // 2. Create a resolver.
    doc.run("kubectl create namespace dns")?;
    doc.run("kubectl apply -n dns -f manifests/examples/knotresolver.yaml")?;
    let columns = doc.run("kubectl get kres -n dns")?;
    assert!(
        columns.starts_with("NAME") && columns.contains("resolver"),
        "{columns}"
    );
    doc.run("kubectl wait -n dns kres/resolver --for=condition=Available --timeout=2m")?;
    let objects = doc.run("kubectl get pods,svc -n dns -l app.kubernetes.io/instance=resolver")?;
    assert!(
        objects.contains("pod/resolver-0") && objects.contains("service/resolver"),
        "{objects}"
    );

    // 3. Query it, through the Service's ClusterIP (kube-proxy's rules).
    let svc = cluster_ip(
        &Api::<Service>::namespaced(client.clone(), RESOLVERS)
            .get("resolver")
            .await?,
    )?;
    answers(svc, "192.0.2.80").await?;

    // Only the Lease holder reconciles: its /status (on its pod IP, the port of the chart)
    // lists the resolver, the standby's does not.
    let holder = lease_holder(&client).await?.unwrap_or_default();
    let key = format!("\"{RESOLVERS}/resolver\"");
    for p in operator_pods(&client).await? {
        let http: SocketAddr = format!("{}:8080", pod_ip(&p)?).parse()?;
        let (line, body) = http_get(http, "/status")?;
        assert!(line.contains("200"), "{line}");
        assert_eq!(
            body.contains(&key),
            p.name_any() == holder,
            "{} (holder {holder}): {body}",
            p.name_any()
        );
    }

    // Remove one rule the next change needs (pods: create): Forbidden, a Degraded condition,
    // the operator keeps running and the resolver keeps serving the last good revision.
    let roles: Api<k8s_openapi::api::rbac::v1::ClusterRole> = Api::all(client.clone());
    let role = roles.get(RELEASE).await?;
    let rules = serde_json::to_value(&role.rules)?;
    let pods_rule = rules
        .as_array()
        .and_then(|a| a.iter().position(|r| r["resources"] == json!(["pods"])))
        .ok_or_else(|| anyhow::anyhow!("no pods rule: {rules}"))?;
    let mut fewer = rules.clone();
    let without_create: Vec<Value> = rules[pods_rule]["verbs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| *v != "create")
        .cloned()
        .collect();
    fewer[pods_rule]["verbs"] = Value::Array(without_create);
    let set_rules = |r: Value| {
        let roles = roles.clone();
        async move {
            roles
                .patch(
                    RELEASE,
                    &PatchParams::default(),
                    &Patch::Merge(&json!({ "rules": r })),
                )
                .await
        }
    };
    set_rules(fewer).await?;
    let forbidden_from = cp.audit().mark()?;

    // 4. Change it and watch the rollout (the document's `kubectl edit`, the editor a sed).
    doc.run_with(
        "kubectl edit -n dns kres/resolver",
        Some("sed -i s/192.0.2.80/192.0.2.81/"),
    )?;
    let (status, reason, message) = eventually(60, "Degraded BackendError", || async {
        Ok(degraded(&client)
            .await?
            .filter(|(s, r, _)| s == "True" && r == "BackendError"))
    })
    .await?;
    assert!(
        message.contains("forbidden"),
        "{status} {reason}: {message}"
    );
    let denied: Vec<_> = cp
        .audit()
        .since(&forbidden_from)?
        .into_iter()
        .filter(|e| e.user == SA_USER && e.code == 403)
        .map(|e| e.tuple())
        .collect();
    assert!(
        denied.iter().any(|(_, v, r)| v == "create" && r == "pods"),
        "{denied:?}"
    );
    assert!(
        denied.iter().all(|(_, v, r)| v == "create" && r == "pods"),
        "only the removed grant is denied: {denied:?}"
    );
    answers(svc, "192.0.2.80").await?;
    let warning = eventually(30, "a BackendError Warning event", || async {
        let out = doc_events(cp)?;
        Ok(out.contains("BackendError").then_some(out))
    })
    .await?;
    assert!(warning.contains("Warning"), "{warning}");
    for p in operator_pods(&client).await? {
        let restarts: i32 = p
            .status
            .iter()
            .flat_map(|s| s.container_statuses.iter().flatten())
            .map(|c| c.restart_count)
            .sum();
        assert_eq!(restarts, 0, "operator pod {} restarted", p.name_any());
    }

    // The rule back: the rollout proceeds and the watch shows it.
    let watch_line = "kubectl get kres -n dns resolver -o wide -w";
    let watch_out = cp.dir().join("quickstart-watch.txt");
    let mut watch = doc
        .command(watch_line, None)?
        .stdout(std::fs::File::create(&watch_out)?)
        .spawn()?;
    set_rules(rules).await?;
    answers(svc, "192.0.2.81").await?;
    eventually(60, "Degraded False", || async {
        Ok(degraded(&client).await?.filter(|(s, _, _)| s == "False"))
    })
    .await?;
    let watched = eventually(60, "the watch shows Idle after a rollout phase", || async {
        let text = std::fs::read_to_string(&watch_out)?;
        let rolled = text.contains("Canary") || text.contains("Rolling");
        let idle = text.lines().last().is_some_and(|l| l.contains("Idle"));
        Ok((rolled && idle).then_some(text))
    })
    .await;
    let _ = watch.kill();
    let _ = watch.wait();
    watched?;
    let events = doc.run("kubectl events -n dns --for knotresolver/resolver")?;
    assert!(events.contains("RolloutComplete"), "{events}");

    // 5. Roll back: the shipped spec again.
    let last_failure =
        doc.run("kubectl get kres -n dns resolver -o jsonpath='{.status.lastFailure}'")?;
    assert_eq!(last_failure, "", "no failed revision in this run");
    doc.run("kubectl apply -n dns -f manifests/examples/knotresolver.yaml")?;
    answers(svc, "192.0.2.80").await?;
    settled(&client).await?;

    // Least privilege: every request of the chart's ServiceAccount so far was granted (but the
    // ones denied while the rule was removed), and every grant was used.
    let used: BTreeSet<(String, String, String)> = cp
        .audit()
        .since(&audit_start)?
        .into_iter()
        .filter(|e| e.user == SA_USER && !e.resource.is_empty())
        .filter(|e| e.code != 403)
        .map(|e| {
            let (_, verb, res) = e.tuple();
            (e.api_group.clone(), res, verb)
        })
        .collect();
    let granted = granted()?;
    let beyond: Vec<_> = used.difference(&granted).collect();
    assert!(beyond.is_empty(), "used without a grant: {beyond:?}");
    let unused: BTreeSet<_> = granted.difference(&used).cloned().collect();
    let expected: BTreeSet<_> = GRANTED_UNUSED
        .iter()
        .map(|(g, r, v)| (g.to_string(), r.to_string(), v.to_string()))
        .collect();
    assert_eq!(unused, expected, "granted but not used (used: {used:?})");
    let ops = std::fs::read_to_string(repo_path("docs/operations.md"))?;
    for (_, r, v) in GRANTED_UNUSED {
        assert!(
            ops.contains(&format!("`{v} {r}`")),
            "docs/operations.md does not say why `{v} {r}` is granted"
        );
    }

    // 6. Upgrade, roll back, remove the operator.
    doc.run("helm upgrade kres-operator charts/kres-operator --namespace kres-operator --set replicaCount=3")?;
    operators_ready(&client, 3).await?;
    let history = doc.run("helm history kres-operator --namespace kres-operator")?;
    assert_eq!(history.lines().count(), 3, "{history}");
    doc.run("helm rollback kres-operator 1 --namespace kres-operator")?;
    operators_ready(&client, 2).await?;
    let out = doc.run("helm uninstall kres-operator --namespace kres-operator")?;
    assert!(
        out.contains("kept due to the resource policy")
            && out.contains("[CustomResourceDefinition] knotresolvers.resolver.kres-operator.io"),
        "helm names what it kept: {out}"
    );
    eventually(60, "the operator pods gone", || async {
        Ok(operator_pods(&client).await?.is_empty().then_some(()))
    })
    .await?;
    assert!(
        cp.kubectl_output(
            &["get", "crd", "knotresolvers.resolver.kres-operator.io"],
            ""
        )?
        .status
        .success()
    );
    let resolver_pods = Api::<Pod>::namespaced(client.clone(), RESOLVERS)
        .list(&ListParams::default().labels("app.kubernetes.io/instance=resolver"))
        .await?;
    assert!(
        !resolver_pods.items.is_empty() && resolver_pods.items.iter().all(pod_ready),
        "the resolver pods outlive the operator"
    );
    // A fresh source port each time: a new conntrack entry, so the answer proves the Service
    // still forwards to live pods.
    assert_eq!(ask(svc, RECORD).await?, "192.0.2.80");
    // A new install of the same release adopts the kept CRD (docs/operations.md).
    let out = chart::helm()?
        .env("KUBECONFIG", &cp.kubeconfig)
        .args(["install", RELEASE, chart::CHART_DIR, "--namespace", RELEASE])
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), RELEASE);
    assert!(deploys.get_opt(RELEASE).await?.is_some());

    // Every command of the document ran or is skipped with a reason.
    for c in &doc.commands {
        assert!(
            doc.ran.contains(c) || SKIPPED.iter().any(|(s, _)| s == c),
            "{DOC}: command neither run nor skipped: {c}"
        );
    }
    for (s, why) in SKIPPED {
        assert!(
            doc.commands.iter().any(|c| c == s),
            "skipped ({why}) but not in {DOC}: {s}"
        );
    }
    Ok(())
}

/// `kubectl events` of the resolver (not a quickstart line: polled while waiting).
fn doc_events(cp: &ControlPlane) -> anyhow::Result<String> {
    Ok(cp.kubectl_stdout(
        &["events", "-n", RESOLVERS, "--for", "knotresolver/resolver"],
        "",
    )?)
}
