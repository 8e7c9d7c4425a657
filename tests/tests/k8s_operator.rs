//! `kres-operator kube` end to end against the real control plane (etcd, kube-apiserver,
//! kube-controller-manager, kube-proxy) with the node agent as the kubelet: the operator binary
//! runs with a ServiceAccount token bound to the ClusterRole of manifests/rbac.yaml (not as
//! admin), KnotResolvers are applied with `kubectl`, and every answer comes from real kresd
//! pods, through their pod IPs and the Service's ClusterIP.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service, ServiceAccount};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::RoleBinding;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kres_crd::k8s::KnotResolver;
use kres_tests::k8s::wait::{eventually, pod_ready};
use kres_tests::k8s::{ControlPlane, TestNode};
use kres_tests::process::ChildGuard;
use kube::api::{ListParams, PostParams};
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use serde_json::json;

type R = anyhow::Result<()>;

#[ctor::ctor(unsafe)]
fn private_network() {
    kres_tests::k8s::netns::isolate_process()
}

const CRD_NAME: &str = "knotresolvers.resolver.kres-operator.io";
const REVISION: &str = "resolver.kres-operator.io/revision";
const SLOT: &str = "resolver.kres-operator.io/slot";

fn repo_file(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(rel)
}

/// `kubectl args` (admin) with `stdin`: stdout, or an error with stderr.
fn kubectl(cp: &ControlPlane, args: &[&str], stdin: &str) -> anyhow::Result<String> {
    let out = cp.kubectl_output(args, stdin)?;
    anyhow::ensure!(
        out.status.success(),
        "kubectl {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

/// The YAML documents of a manifest file of kind `kind`.
fn documents(rel: &str, kind: &str) -> anyhow::Result<Vec<serde_json::Value>> {
    let text = std::fs::read_to_string(repo_file(rel))?;
    let mut out = Vec::new();
    for doc in text.split("\n---\n") {
        let v: serde_json::Value = serde_norway::from_str(doc)?;
        if v["kind"] == json!(kind) {
            out.push(v);
        }
    }
    Ok(out)
}

/// A namespace with a node agent and the operator running as ServiceAccount `kres-operator`,
/// bound (RoleBinding) to the ClusterRole shipped in manifests/rbac.yaml.
struct Env {
    cp: &'static ControlPlane,
    ns: String,
    client: kube::Client,
    _node: TestNode,
    operator: Option<ChildGuard>,
    log: PathBuf,
    /// The operator's /healthz /readyz /metrics /status address.
    http: SocketAddr,
}

impl Env {
    async fn new(prefix: &str) -> anyhow::Result<Env> {
        // The node agent reports what it cannot run as warnings.
        let _ = tracing_subscriber::fmt()
            .with_env_filter("warn,kube_client=off")
            .with_ansi(false)
            .with_test_writer()
            .try_init();
        let cp = ControlPlane::shared().await?;
        let crd = std::fs::read_to_string(repo_file("manifests/crd.yaml"))?;
        kubectl(cp, &["apply", "--server-side", "-f", "-"], &crd)?;
        let crds: Api<CustomResourceDefinition> = Api::all(cp.admin_client().await?);
        let crds = &crds;
        eventually(30, "the KnotResolver CRD Established", || async move {
            let crd = crds.get(CRD_NAME).await?;
            let conditions = crd.status.and_then(|s| s.conditions).unwrap_or_default();
            Ok(conditions
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
                .then_some(()))
        })
        .await?;
        for role in documents("manifests/rbac.yaml", "ClusterRole")? {
            kubectl(
                cp,
                &["apply", "--server-side", "-f", "-"],
                &role.to_string(),
            )?;
        }
        let ns = cp.namespace(prefix).await?;
        let client = cp.admin_client().await?;
        let node = cp.node_agent(&ns).await?;
        Api::<ServiceAccount>::namespaced(client.clone(), &ns)
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({ "metadata": { "name": "kres-operator" } }))?,
            )
            .await?;
        Api::<RoleBinding>::namespaced(client.clone(), &ns)
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({
                    "metadata": { "name": "kres-operator" },
                    "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "kres-operator" },
                    "subjects": [{ "kind": "ServiceAccount", "name": "kres-operator", "namespace": ns }],
                }))?,
            )
            .await?;
        let log = cp.dir().join(format!("kres-operator-{ns}.log"));
        let ip = std::net::Ipv4Addr::LOCALHOST;
        let http = SocketAddr::new(ip.into(), kres_tests::net::free_port(ip));
        let mut env = Env {
            cp,
            ns,
            client,
            _node: node,
            operator: None,
            log,
            http,
        };
        env.start_operator().await?;
        Ok(env)
    }

    async fn start_operator(&mut self) -> R {
        self.operator = Some(self.spawn_operator(self.http, &[], "kres-operator").await?);
        Ok(())
    }

    /// One more operator process as the ServiceAccount: `--listen http`, `extra` arguments,
    /// `$POD_NAME` (its leader-election identity) `pod_name`, logging to the same file.
    async fn spawn_operator(
        &self,
        http: SocketAddr,
        extra: &[&str],
        pod_name: &str,
    ) -> anyhow::Result<ChildGuard> {
        let kubeconfig = self
            .cp
            .kubeconfig_for_service_account(&self.ns, "kres-operator")
            .await?;
        let bin = kres_tests::host::operator_binary()?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let mut cmd = Command::new(&bin);
        cmd.args([
            "kube",
            "--namespace",
            &self.ns,
            "--listen",
            &http.to_string(),
        ])
        .args(extra)
        .arg("--image")
        .arg("kres-operator:test")
        .arg("--probe-binary")
        .arg(&bin)
        .env("KUBECONFIG", &kubeconfig)
        .env("POD_NAME", pod_name)
        .env("RUST_LOG", "info,kres_operator=debug,kube=warn")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
        Ok(kres_tests::process::spawn(cmd)?)
    }

    /// The operator's last log lines and the pods' state, for failure messages.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let pods = kubectl(
            self.cp,
            &[
                "get",
                "pods,configmaps,kres",
                "-n",
                &self.ns,
                "-o",
                "wide",
                "--show-labels",
            ],
            "",
        )
        .unwrap_or_else(|e| e.to_string());
        let status = kubectl(self.cp, &["get", "kres", "-n", &self.ns, "-o", "yaml"], "")
            .unwrap_or_else(|e| e.to_string());
        format!(
            "{}\n--- objects ---\n{pods}\n--- resolvers ---\n{status}",
            lines[lines.len().saturating_sub(40)..].join("\n")
        )
    }

    /// GET `path` from the operator's HTTP endpoint: (status line, body).
    fn get(&self, path: &str) -> anyhow::Result<(String, String)> {
        http_get(self.http, path)
    }

    fn resolvers(&self) -> Api<KnotResolver> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    fn apply(&self, yaml: &str) -> R {
        kubectl(self.cp, &["apply", "-n", &self.ns, "-f", "-"], yaml).map(|_| ())
    }

    /// `kubectl wait --for=condition=<cond>` on resolver `name`.
    fn wait_condition(&self, name: &str, cond: &str, secs: u64) -> R {
        kubectl(
            self.cp,
            &[
                "wait",
                "-n",
                &self.ns,
                &format!("--for=condition={cond}"),
                &format!("--timeout={secs}s"),
                &format!("knotresolver/{name}"),
            ],
            "",
        )
        .map(|_| ())
        .map_err(|e| anyhow::anyhow!("{e}\n--- operator log ---\n{}", self.log_tail()))
    }

    /// Wait until resolver `name` is Available with current == update revision and every
    /// regular pod Ready on it; returns that revision and the pods by name.
    async fn converged(
        &self,
        name: &str,
        replicas: usize,
    ) -> anyhow::Result<(String, BTreeMap<String, Pod>)> {
        let (resolvers, pods) = (&self.resolvers(), &self.pods());
        eventually(120, &format!("{name} converged"), || async move {
            let r = resolvers.get(name).await?;
            let Some(s) = r.status.clone() else {
                return Ok(None);
            };
            let available = s
                .conditions
                .iter()
                .any(|c| c.type_ == "Available" && c.status == "True");
            let (Some(cur), Some(upd)) = (s.current_revision.clone(), s.update_revision.clone())
            else {
                return Ok(None);
            };
            let list = pods
                .list(&ListParams::default().labels(&format!("app.kubernetes.io/instance={name}")))
                .await?;
            let all: BTreeMap<String, Pod> =
                list.items.into_iter().map(|p| (p.name_any(), p)).collect();
            let ok = available
                && cur == upd
                && all.len() == replicas
                && all
                    .values()
                    .all(|p| pod_ready(p) && p.labels().get(REVISION) == Some(&cur));
            Ok(ok.then_some((cur, all)))
        })
        .await
        .map_err(|e| anyhow::anyhow!("{e}\n--- operator log ---\n{}", self.log_tail()))
    }

    async fn events(&self) -> anyhow::Result<Vec<Event>> {
        Ok(Api::<Event>::namespaced(self.client.clone(), &self.ns)
            .list(&ListParams::default())
            .await?
            .items)
    }
}

/// GET `path` from an operator's HTTP endpoint at `addr`: (status line, body).
fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<(String, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    Ok((
        head.lines().next().unwrap_or_default().to_string(),
        body.to_string(),
    ))
}

/// `name A` from the node with a fresh source port (see [`netns::ask_from_node`]).
async fn ask(server: SocketAddr, name: &str) -> anyhow::Result<String> {
    kres_tests::k8s::netns::ask_from_node(server, name, false).await
}

fn pod_ip(p: &Pod) -> anyhow::Result<String> {
    p.status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .ok_or_else(|| anyhow::anyhow!("{}: no pod IP", p.name_any()))
}

async fn ready_endpoints(
    client: &kube::Client,
    ns: &str,
    svc: &str,
) -> anyhow::Result<BTreeSet<String>> {
    let slices = Api::<EndpointSlice>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(&format!("kubernetes.io/service-name={svc}")))
        .await?;
    Ok(slices
        .items
        .into_iter()
        .flat_map(|s| s.endpoints.into_iter().flatten())
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(false))
        .flat_map(|e| e.addresses)
        .collect())
}

fn cluster_ip(svc: &Service) -> anyhow::Result<SocketAddr> {
    let ip = svc
        .spec
        .as_ref()
        .and_then(|s| s.cluster_ip.clone())
        .ok_or_else(|| anyhow::anyhow!("no ClusterIP"))?;
    Ok(format!("{ip}:53").parse()?)
}

fn kresctl() -> anyhow::Result<PathBuf> {
    let op = kres_tests::host::operator_binary()?;
    Ok(op.with_file_name("kresctl"))
}

/// The example resolver with `record` as its local record, fast rollout timings.
fn example_with(record: &str, script: Option<&str>) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(repo_file("manifests/examples/knotresolver.yaml"))?;
    let mut v: serde_json::Value = serde_norway::from_str(&text)?;
    v["spec"]["config"]["local-data"]["records"] = json!(record);
    if let Some(s) = script {
        v["spec"]["config"]["lua"] = json!({ "script": s });
    }
    v["spec"]["rollout"] = json!({ "minReadySeconds": 2, "drainSeconds": 1 });
    Ok(serde_json::to_string(&v)?)
}

/// What the watches saw during a rollout.
#[derive(Default)]
struct Seen {
    /// Pod names in order of creation (first time each uid was seen), with their revision.
    created: Vec<(String, String, String)>,
    /// Fewest ready endpoints seen at any EndpointSlice event.
    min_ready: Option<usize>,
}

fn watch_rollout(client: &kube::Client, ns: &str, svc: &str) -> Arc<Mutex<Seen>> {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let pods = Api::<Pod>::namespaced(client.clone(), ns);
    let s = seen.clone();
    tokio::spawn(
        watcher(pods, watcher::Config::default()).for_each(move |ev| {
            if let Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) = ev
                && let Ok(mut s) = s.lock()
            {
                let uid = p.uid().unwrap_or_default();
                if !s.created.iter().any(|(u, _, _)| *u == uid) {
                    let rev = p.labels().get(REVISION).cloned().unwrap_or_default();
                    s.created.push((uid, p.name_any(), rev));
                }
            }
            std::future::ready(())
        }),
    );
    let slices = Api::<EndpointSlice>::namespaced(client.clone(), ns);
    let s = seen.clone();
    let cfg = watcher::Config::default().labels(&format!("kubernetes.io/service-name={svc}"));
    tokio::spawn(watcher(slices, cfg).for_each(move |ev| {
        if let Ok(watcher::Event::Apply(sl)) = ev
            && let Ok(mut s) = s.lock()
        {
            let ready = sl
                .endpoints
                .iter()
                .flatten()
                .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(false))
                .count();
            s.min_ready = Some(s.min_ready.map_or(ready, |m| m.min(ready)));
        }
        std::future::ready(())
    }));
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_apply_knotresolver_end_to_end() -> R {
    let env = Env::new("kres-e2e").await?;
    let example = repo_file("manifests/examples/knotresolver.yaml");
    env.apply(&std::fs::read_to_string(&example)?)?;
    env.wait_condition("resolver", "Available", 120)?;
    let (r1, pods) = env.converged("resolver", 3).await?;
    assert_eq!(
        pods.keys().cloned().collect::<Vec<_>>(),
        ["resolver-0", "resolver-1", "resolver-2"]
    );

    // The immutable ConfigMap of the revision holds what `kresctl convert` renders.
    let cm = Api::<ConfigMap>::namespaced(env.client.clone(), &env.ns)
        .get(&format!("resolver-{r1}"))
        .await?;
    assert_eq!(cm.immutable, Some(true));
    let convert = Command::new(kresctl()?)
        .args(["convert", "--knotresolver"])
        .arg(&example)
        .output()?;
    assert!(
        convert.status.success(),
        "{}",
        String::from_utf8_lossy(&convert.stderr)
    );
    assert_eq!(
        cm.data
            .as_ref()
            .and_then(|d| d.get("kresd.conf"))
            .map(String::as_str),
        Some(String::from_utf8(convert.stdout)?.as_str())
    );

    // The Service's EndpointSlices list exactly the ready pods; every pod and the ClusterIP
    // answer the record.
    let ips: BTreeSet<String> = pods.values().map(pod_ip).collect::<anyhow::Result<_>>()?;
    let client = &env.client;
    let ns = env.ns.as_str();
    let ips_ref = &ips;
    eventually(30, "EndpointSlice = pod IPs", || async move {
        Ok((ready_endpoints(client, ns, "resolver").await? == *ips_ref).then_some(()))
    })
    .await?;
    for ip in &ips {
        let addr: SocketAddr = format!("{ip}:53").parse()?;
        assert_eq!(
            ask(addr, "www.corp.example.test.").await?,
            "192.0.2.80",
            "pod {ip}"
        );
    }
    let svc = Api::<Service>::namespaced(env.client.clone(), &env.ns)
        .get("resolver")
        .await?;
    let service = cluster_ip(&svc)?;
    for _ in 0..3 {
        assert_eq!(ask(service, "www.corp.example.test.").await?, "192.0.2.80");
    }
    assert!(env.get("/healthz")?.0.contains(" 200 "));
    let (line, status) = env.get("/status")?;
    assert!(
        line.contains(" 200 ") && status.contains(&format!("{}/resolver", env.ns)),
        "{line} {status}"
    );
    let (_, metrics) = env.get("/metrics")?;
    assert!(metrics.contains("kres_reconciles_total"), "{metrics}");
    let columns = kubectl(env.cp, &["get", "kres", "-n", &env.ns, "resolver"], "")?;
    assert!(
        columns.contains("REPLICAS") && columns.contains("AVAILABLE") && columns.contains(&r1),
        "{columns}"
    );

    // A config edit: canary first, then one slot at a time; ready endpoints never below 3.
    let seen = watch_rollout(&env.client, &env.ns, "resolver");
    env.apply(&example_with(
        "www.corp.example.test. 300 A 192.0.2.81\n",
        None,
    )?)?;
    let (r2, new_pods) = env.converged("resolver", 3).await?;
    assert_ne!(r1, r2);
    let (created, min_ready) = {
        let seen = seen.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
        (seen.created.clone(), seen.min_ready)
    };
    let created_new: Vec<&str> = created
        .iter()
        .filter(|(_, _, rev)| *rev == r2)
        .map(|(_, name, _)| name.as_str())
        .collect();
    assert_eq!(
        created_new.first(),
        Some(&"resolver-canary"),
        "{created_new:?}"
    );
    let mut regular: Vec<&str> = created_new[1..].to_vec();
    regular.sort();
    assert_eq!(
        regular,
        ["resolver-0", "resolver-1", "resolver-2"],
        "{created_new:?}"
    );
    assert!(
        min_ready.is_some_and(|m| m >= 3),
        "ready endpoints dropped to {min_ready:?}"
    );
    for p in new_pods.values() {
        let addr: SocketAddr = format!("{}:53", pod_ip(p)?).parse()?;
        assert_eq!(ask(addr, "www.corp.example.test.").await?, "192.0.2.81");
    }
    assert_eq!(ask(service, "www.corp.example.test.").await?, "192.0.2.81");
    let reasons: Vec<String> = env
        .events()
        .await?
        .into_iter()
        .filter_map(|e| e.reason)
        .collect();
    assert!(
        reasons.iter().any(|r| r == "RolloutComplete"),
        "{reasons:?}"
    );

    // Scaling through the scale subresource: 3 -> 5 -> 2, no new revision.
    for (n, names) in [
        (
            5,
            &[
                "resolver-0",
                "resolver-1",
                "resolver-2",
                "resolver-3",
                "resolver-4",
            ][..],
        ),
        (2, &["resolver-0", "resolver-1"][..]),
    ] {
        kubectl(
            env.cp,
            &[
                "scale",
                "-n",
                &env.ns,
                "kres/resolver",
                &format!("--replicas={n}"),
            ],
            "",
        )?;
        let (rev, pods) = env.converged("resolver", n).await?;
        assert_eq!(rev, r2);
        assert_eq!(pods.keys().map(String::as_str).collect::<Vec<_>>(), names);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_canary_or_invalid_spec_touches_no_pod_then_recovery_recreation_and_gc() -> R {
    let env = Env::new("kres-fail").await?;
    env.apply(&example_with(
        "www.corp.example.test. 300 A 192.0.2.80\n",
        None,
    )?)?;
    let (r1, pods) = env.converged("resolver", 3).await?;
    let uids = |pods: &BTreeMap<String, Pod>| -> BTreeMap<String, String> {
        pods.iter()
            .filter(|(_, p)| p.labels().get(SLOT).is_some_and(|s| s != "canary"))
            .map(|(n, p)| (n.clone(), p.uid().unwrap_or_default()))
            .collect()
    };
    let before = uids(&pods);

    // lua.script error('x'): the canary crash-loops, the revision fails with kresd's line.
    env.apply(&example_with(
        "www.corp.example.test. 300 A 192.0.2.80\n",
        Some("error('kres-e2e-x')"),
    )?)?;
    env.wait_condition("resolver", "Degraded", 120)?;
    let r = env.resolvers().get("resolver").await?;
    let s = r.status.clone().unwrap_or_default();
    let degraded = s
        .conditions
        .iter()
        .find(|c| c.type_ == "Degraded")
        .ok_or_else(|| anyhow::anyhow!("no Degraded"))?;
    assert_eq!(degraded.reason, "RevisionRejected");
    assert!(
        degraded.message.contains("kres-e2e-x"),
        "{}",
        degraded.message
    );
    assert_eq!(s.current_revision.as_deref(), Some(r1.as_str()));
    assert!(
        s.failed_revisions
            .iter()
            .any(|f| Some(&f.revision) == s.update_revision.as_ref())
    );
    let (_, after) = env.converged_on(&r1).await?;
    assert_eq!(uids(&after), before, "a regular pod was replaced");
    let events = env.events().await?;
    assert!(
        events
            .iter()
            .any(|e| e.reason.as_deref() == Some("RevisionFailed")
                && e.type_.as_deref() == Some("Warning")),
        "{:?}",
        events.iter().map(|e| &e.reason).collect::<Vec<_>>()
    );

    // A spec the validator refuses: Degraded InvalidConfig naming the field, nothing touched.
    let mut bad: serde_json::Value = serde_json::from_str(&example_with(
        "www.corp.example.test. 300 A 192.0.2.80\n",
        None,
    )?)?;
    bad["spec"]["config"]["forward"] = json!([{ "subtree": ".", "servers": ["not-an-ip"] }]);
    env.apply(&bad.to_string())?;
    let resolvers = &env.resolvers();
    let message = eventually(60, "Degraded InvalidConfig", || async move {
        let r = resolvers.get("resolver").await?;
        Ok(r.status.and_then(|s| {
            s.conditions
                .into_iter()
                .find(|c| c.type_ == "Degraded" && c.reason == "InvalidConfig")
                .map(|c| c.message)
        }))
    })
    .await?;
    assert!(
        message.contains("/spec/config/forward/0/servers/0"),
        "{message}"
    );
    let (_, after) = env.converged_on(&r1).await?;
    assert_eq!(uids(&after), before, "an invalid spec touched a pod");

    // Fixing the spec recovers: Available on a new revision.
    env.apply(&example_with(
        "www.corp.example.test. 300 A 192.0.2.82\n",
        None,
    )?)?;
    let (r3, pods) = env.converged("resolver", 3).await?;
    assert_ne!(r3, r1);

    // A pod deleted by hand is recreated (a new UID, same slot and revision).
    let old_uid = pods["resolver-1"].uid();
    env.pods()
        .delete("resolver-1", &kube::api::DeleteParams::default())
        .await?;
    let pods_api = &env.pods();
    let old_uid = &old_uid;
    eventually(60, "resolver-1 recreated and Ready", || async move {
        let p = pods_api.get_opt("resolver-1").await?;
        Ok(p.filter(|p| p.uid() != *old_uid && pod_ready(p))
            .map(|p| p.labels().get(REVISION).cloned()))
    })
    .await?
    .filter(|rev| *rev == r3)
    .ok_or_else(|| anyhow::anyhow!("recreated on another revision"))?;

    // Deleting the KnotResolver garbage-collects its pods, ConfigMaps, Service and PDB.
    kubectl(env.cp, &["delete", "-n", &env.ns, "kres/resolver"], "")?;
    let (client, ns) = (&env.client, env.ns.as_str());
    eventually(60, "owned objects garbage-collected", || async move {
        let lp = ListParams::default().labels("app.kubernetes.io/instance=resolver");
        let pods = Api::<Pod>::namespaced(client.clone(), ns).list(&lp).await?;
        let cms = Api::<ConfigMap>::namespaced(client.clone(), ns)
            .list(&lp)
            .await?;
        let svc = Api::<Service>::namespaced(client.clone(), ns)
            .list(&lp)
            .await?;
        let pdb = Api::<PodDisruptionBudget>::namespaced(client.clone(), ns)
            .list(&lp)
            .await?;
        Ok((pods.items.is_empty()
            && cms.items.is_empty()
            && svc.items.is_empty()
            && pdb.items.is_empty())
        .then_some(()))
    })
    .await?;
    Ok(())
}

impl Env {
    /// The regular pods, once none but them exist and all are Ready on `revision`.
    async fn converged_on(&self, revision: &str) -> anyhow::Result<((), BTreeMap<String, Pod>)> {
        let pods = &self.pods();
        let all = eventually(60, &format!("pods on {revision} only"), || async move {
            let list = pods.list(&ListParams::default()).await?;
            let regular: BTreeMap<String, Pod> = list
                .items
                .into_iter()
                .filter(|p| p.labels().get(SLOT).is_some_and(|s| s != "canary"))
                .map(|p| (p.name_any(), p))
                .collect();
            let ok = regular.len() == 3
                && regular.values().all(|p| {
                    pod_ready(p) && p.labels().get(REVISION).map(String::as_str) == Some(revision)
                });
            Ok(ok.then_some(regular))
        })
        .await?;
        Ok(((), all))
    }
}

/// Two operators with `--leader-elect` on the Role shipped in manifests/rbac.yaml: one holds the
/// Lease and reconciles, the standby does not; killing the holder hands the Lease to the standby,
/// which takes over the resolver without restarting a pod.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_election_hands_over_without_restarting_pods() -> R {
    use k8s_openapi::api::coordination::v1::Lease;
    use k8s_openapi::api::rbac::v1::Role;
    let mut env = Env::new("kres-lease").await?;
    env.operator = None; // the default operator does not take part in the election
    // The leader-election Role and its binding, moved into this namespace.
    for kind in ["Role", "RoleBinding"] {
        for mut doc in documents("manifests/rbac.yaml", kind)? {
            doc["metadata"]["namespace"] = json!(env.ns);
            if let Some(subjects) = doc.get_mut("subjects").and_then(|s| s.as_array_mut()) {
                for s in subjects {
                    s["namespace"] = json!(env.ns);
                }
            }
            kubectl(
                env.cp,
                &["apply", "--server-side", "-f", "-"],
                &doc.to_string(),
            )?;
        }
    }
    assert!(
        Api::<Role>::namespaced(env.client.clone(), &env.ns)
            .get("kres-operator-leader-election")
            .await
            .is_ok()
    );
    let ip = std::net::Ipv4Addr::LOCALHOST;
    let elect = ["--leader-elect", "--lease-namespace", env.ns.as_str()];
    let http_a = SocketAddr::new(ip.into(), kres_tests::net::free_port(ip));
    let mut a = Some(env.spawn_operator(http_a, &elect, "operator-a").await?);
    let http_b = SocketAddr::new(ip.into(), kres_tests::net::free_port(ip));
    let mut b = Some(env.spawn_operator(http_b, &elect, "operator-b").await?);
    let leases: Api<Lease> = Api::namespaced(env.client.clone(), &env.ns);
    let leases = &leases;
    let holder = || async move {
        let lease = leases.get_opt("kres-operator").await?;
        Ok::<_, anyhow::Error>(
            lease
                .and_then(|l| l.spec)
                .and_then(|s| s.holder_identity)
                .filter(|h| !h.is_empty()),
        )
    };
    let first = eventually(60, "a Lease holder", || async move { holder().await })
        .await
        .map_err(|e| anyhow::anyhow!("{e}\n{}", env.log_tail()))?;
    assert!(
        ["operator-a", "operator-b"].contains(&first.as_str()),
        "{first}"
    );

    env.apply(&example_with(
        "www.corp.example.test. 300 A 192.0.2.80\n",
        None,
    )?)?;
    env.wait_condition("resolver", "Available", 120)?;
    let (revision, pods) = env.converged("resolver", 3).await?;
    let uids: BTreeMap<String, Option<String>> = pods
        .iter()
        .map(|(n, p)| (n.clone(), p.metadata.uid.clone()))
        .collect();
    // Only the holder reconciled: the standby's /status lists no resolver.
    let (leader_http, standby_http) = if first == "operator-a" {
        (http_a, http_b)
    } else {
        (http_b, http_a)
    };
    let status = |addr: SocketAddr| -> anyhow::Result<String> { Ok(http_get(addr, "/status")?.1) };
    let key = format!("\"{}/resolver\"", env.ns);
    let key = key.as_str();
    assert!(status(leader_http)?.contains(key), "leader /status");
    let standby = status(standby_http)?;
    assert!(!standby.contains(key), "the standby reconciled: {standby}");

    // Kill the holder: the standby takes the Lease and then reconciles the resolver.
    let started = std::time::Instant::now();
    if first == "operator-a" {
        a = None;
    } else {
        b = None;
    }
    let first = first.as_str();
    let second = eventually(60, "the standby holds the Lease", || async move {
        Ok(holder().await?.filter(|h| h != first))
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", env.log_tail()))?;
    eprintln!(
        "lease handed over to {second} after {:?}",
        started.elapsed()
    );
    eventually(
        60,
        "the new leader reconciled the resolver",
        || async move {
            Ok(status(standby_http)
                .ok()
                .filter(|s| s.contains(key))
                .map(|_| ()))
        },
    )
    .await?;
    let (after, pods) = env.converged("resolver", 3).await?;
    assert_eq!(after, revision);
    let uids_after: BTreeMap<String, Option<String>> = pods
        .iter()
        .map(|(n, p)| (n.clone(), p.metadata.uid.clone()))
        .collect();
    assert_eq!(uids_after, uids, "a pod was restarted by the takeover");
    drop((a, b));
    Ok(())
}
