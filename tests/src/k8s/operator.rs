//! The environment of the `kres-operator kube` end-to-end tests: a namespace of the shared test
//! control plane with a node agent, the operator running as ServiceAccount `kres-operator`
//! bound to the ClusterRole of manifests/rbac.yaml (not as admin), and the helpers those tests
//! share (kubectl, DNS questions from the node, EndpointSlice and pod watches).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, Service, ServiceAccount};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kres_crd::k8s::KnotResolver;
use kube::api::{ListParams, PostParams};
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use serde_json::json;

use crate::k8s::wait::{eventually, pod_ready};
use crate::k8s::{ControlPlane, TestNode};
use crate::process::ChildGuard;

type R = anyhow::Result<()>;

pub const CRD_NAME: &str = "knotresolvers.resolver.kres-operator.io";
pub const REVISION: &str = "resolver.kres-operator.io/revision";
pub const SLOT: &str = "resolver.kres-operator.io/slot";

pub fn repo_file(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(rel)
}

/// `kubectl args` (admin) with `stdin`: stdout, or an error with stderr.
pub fn kubectl(cp: &ControlPlane, args: &[&str], stdin: &str) -> anyhow::Result<String> {
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
pub fn documents(rel: &str, kind: &str) -> anyhow::Result<Vec<serde_json::Value>> {
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
pub struct Env {
    pub cp: &'static ControlPlane,
    pub ns: String,
    pub client: kube::Client,
    pub _node: TestNode,
    pub operator: Option<ChildGuard>,
    pub log: PathBuf,
    /// The operator's /healthz /readyz /metrics /status address.
    pub http: SocketAddr,
}

impl Env {
    pub async fn new(prefix: &str) -> anyhow::Result<Env> {
        test_logging();
        let cp = ControlPlane::shared().await?;
        cp.install_crd(&std::fs::read_to_string(repo_file("manifests/crd.yaml"))?)
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
        bind_service_account(&client, &ns, "kres-operator", "kres-operator").await?;
        let log = cp.dir().join(format!("kres-operator-{ns}.log"));
        let http = http_address();
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

    pub async fn start_operator(&mut self) -> R {
        self.operator = Some(self.spawn_operator(self.http, &[], "kres-operator").await?);
        Ok(())
    }

    /// One more operator process as the ServiceAccount: `--listen http`, `extra` arguments,
    /// `$POD_NAME` (its leader-election identity) `pod_name`, logging to the same file.
    pub async fn spawn_operator(
        &self,
        http: SocketAddr,
        extra: &[&str],
        pod_name: &str,
    ) -> anyhow::Result<ChildGuard> {
        self.spawn_operator_as("kres-operator", http, extra, pod_name)
            .await
    }

    /// [`Env::spawn_operator`] as ServiceAccount `account` of the namespace.
    pub async fn spawn_operator_as(
        &self,
        account: &str,
        http: SocketAddr,
        extra: &[&str],
        pod_name: &str,
    ) -> anyhow::Result<ChildGuard> {
        let kubeconfig = self
            .cp
            .kubeconfig_for_service_account(&self.ns, account)
            .await?;
        let bin = crate::host::operator_binary()?;
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
        Ok(crate::process::spawn(cmd)?)
    }

    /// The operator's last log lines and the pods' state, for failure messages.
    pub fn log_tail(&self) -> String {
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
    pub fn get(&self, path: &str) -> anyhow::Result<(String, String)> {
        http_get(self.http, path)
    }

    pub fn resolvers(&self) -> Api<KnotResolver> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    pub fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    pub fn apply(&self, yaml: &str) -> R {
        kubectl(self.cp, &["apply", "-n", &self.ns, "-f", "-"], yaml).map(|_| ())
    }

    /// `kubectl wait --for=condition=<cond>` on resolver `name`.
    pub fn wait_condition(&self, name: &str, cond: &str, secs: u64) -> R {
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

    /// Wait until resolver `name`'s status describes its current generation (so a status of
    /// the spec before an edit does not count) and says Available with current == update
    /// revision, and every regular pod is Ready on it; returns that revision and the pods.
    pub async fn converged(
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
            let observed =
                s.observed_generation.is_some() && s.observed_generation == r.metadata.generation;
            let ok = observed
                && available
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

    /// The `replicas` regular pods, once exactly they exist and all are Ready on `revision`.
    pub async fn converged_on(
        &self,
        replicas: usize,
        revision: &str,
    ) -> anyhow::Result<((), BTreeMap<String, Pod>)> {
        let pods = &self.pods();
        let all = eventually(60, &format!("pods on {revision} only"), || async move {
            let list = pods.list(&ListParams::default()).await?;
            let regular: BTreeMap<String, Pod> = list
                .items
                .into_iter()
                .filter(|p| p.labels().get(SLOT).is_some_and(|s| s != "canary"))
                .map(|p| (p.name_any(), p))
                .collect();
            let ok = regular.len() == replicas
                && regular.values().all(|p| {
                    pod_ready(p) && p.labels().get(REVISION).map(String::as_str) == Some(revision)
                });
            Ok(ok.then_some(regular))
        })
        .await?;
        Ok(((), all))
    }

    /// `status.updateRevision` of resolver `name` now.
    pub async fn update_revision(&self, name: &str) -> anyhow::Result<String> {
        self.resolvers()
            .get(name)
            .await?
            .status
            .and_then(|s| s.update_revision)
            .ok_or_else(|| anyhow::anyhow!("{name}: no updateRevision"))
    }

    pub async fn events(&self) -> anyhow::Result<Vec<Event>> {
        Ok(Api::<Event>::namespaced(self.client.clone(), &self.ns)
            .list(&ListParams::default())
            .await?
            .items)
    }
}

/// A listen address for one more operator's HTTP endpoint: port 8080 on a loopback address of
/// its own. A port picked on 127.0.0.1 and bound later can meanwhile become the source port of
/// one of the many client connections to the apiserver, and the operator then fails to bind.
pub fn http_address() -> SocketAddr {
    SocketAddr::new(crate::net::unique_loopback().into(), 8080)
}

/// The cache directory (`-c`) of the running `kres-cache-gc` process of pod `uid` (the node
/// agent runs containers as host processes; a memory emptyDir's host path holds the pod UID).
pub fn cache_gc_dir(uid: &str) -> Option<PathBuf> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let raw = std::fs::read(e.path().join("cmdline")).ok()?;
        let argv: Vec<String> = raw
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if !argv.first()?.ends_with("kres-cache-gc") {
            return None;
        }
        let dir = argv.iter().skip_while(|a| *a != "-c").nth(1)?;
        dir.contains(uid).then(|| PathBuf::from(dir))
    })
}

/// GET `path` from an operator's HTTP endpoint at `addr`: (status line, body).
pub fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<(String, String)> {
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
pub async fn ask(server: SocketAddr, name: &str) -> anyhow::Result<String> {
    crate::k8s::netns::ask_from_node(server, name, false).await
}

pub fn pod_ip(p: &Pod) -> anyhow::Result<String> {
    p.status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .ok_or_else(|| anyhow::anyhow!("{}: no pod IP", p.name_any()))
}

pub async fn ready_endpoints(
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

pub fn cluster_ip(svc: &Service) -> anyhow::Result<SocketAddr> {
    let ip = svc
        .spec
        .as_ref()
        .and_then(|s| s.cluster_ip.clone())
        .ok_or_else(|| anyhow::anyhow!("no ClusterIP"))?;
    Ok(format!("{ip}:53").parse()?)
}

pub fn kresctl() -> anyhow::Result<PathBuf> {
    let op = crate::host::operator_binary()?;
    Ok(op.with_file_name("kresctl"))
}

/// The example resolver with `record` as its local record, fast rollout timings. `drainSeconds`
/// is the time kube-proxy has, after the EndpointSlice dropped a draining pod, to stop sending it
/// queries before it is deleted: its nftables rules are re-synced at most once a second
/// (`minSyncPeriod`), later on a loaded machine, so 1 s lost a query through the ClusterIP in
/// one CI run out of many; 3 s leaves room (the product's default is 5 s).
pub fn example_with(record: &str, script: Option<&str>) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(repo_file("manifests/examples/knotresolver.yaml"))?;
    let mut v: serde_json::Value = serde_norway::from_str(&text)?;
    v["spec"]["config"]["local-data"]["records"] = json!(record);
    if let Some(s) = script {
        v["spec"]["config"]["lua"] = json!({ "script": s });
    }
    v["spec"]["rollout"] = json!({ "minReadySeconds": 2, "drainSeconds": 3 });
    Ok(serde_json::to_string(&v)?)
}

/// What the watches saw during a rollout: the namespace's pods, and the fewest ready endpoints
/// of the Service at any EndpointSlice event.
#[derive(Default)]
pub struct Seen {
    pub pods: PodLog,
    pub min_ready: Option<usize>,
}

/// Log the node agent's warnings (what it cannot run) to the test's output; once per process.
pub fn test_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("warn,kube_client=off")
        .with_ansi(false)
        .with_test_writer()
        .try_init();
}

/// Watch the pods of `ns` and the EndpointSlices of Service `svc` (see [`Seen`]).
pub fn watch_rollout(client: &kube::Client, ns: &str, svc: &str) -> Arc<Mutex<Seen>> {
    let pods = Api::<Pod>::namespaced(client.clone(), ns);
    let seen = watch_log(pods, |s: &mut Seen, ev| s.pods.record(ev));
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

/// ServiceAccount `name` in `ns`, bound (RoleBinding `name`) to ClusterRole `cluster_role`.
pub async fn bind_service_account(
    client: &kube::Client,
    ns: &str,
    name: &str,
    cluster_role: &str,
) -> R {
    Api::<ServiceAccount>::namespaced(client.clone(), ns)
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({ "metadata": { "name": name } }))?,
        )
        .await?;
    Api::<RoleBinding>::namespaced(client.clone(), ns)
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": { "name": name },
                "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": cluster_role },
                "subjects": [{ "kind": "ServiceAccount", "name": name, "namespace": ns }],
            }))?,
        )
        .await?;
    Ok(())
}

/// The value of `series` (`name{label="v",...}`, labels as the exporter orders them) in
/// Prometheus text, if present.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

impl Env {
    /// The operator's successful reconciles of resolver `name` (from /metrics; 0 before the
    /// first).
    pub fn reconciles(&self, name: &str) -> anyhow::Result<f64> {
        let (line, text) = self.get("/metrics")?;
        anyhow::ensure!(line.contains(" 200 "), "/metrics: {line}");
        Ok(metric(
            &text,
            &format!(
                "kres_resolver_reconciles_total{{namespace=\"{}\",name=\"{name}\",result=\"ok\"}}",
                self.ns
            ),
        )
        .unwrap_or(0.0))
    }
}

/// What a [`query_loop`] saw: answers by their text, and every failure.
#[derive(Clone, Debug, Default)]
pub struct Tally {
    pub answers: BTreeMap<String, usize>,
    pub failures: Vec<String>,
}

impl Tally {
    pub fn total(&self) -> usize {
        self.answers.values().sum::<usize>() + self.failures.len()
    }
}

/// A client asking `name A` from the node ([`ask`]: UDP, a fresh source port, one try with a
/// 2 s timeout) one query after another until stopped or `max` queries were sent.
pub struct QueryLoop {
    stop: Arc<std::sync::atomic::AtomicBool>,
    tally: Arc<Mutex<Tally>>,
    task: tokio::task::JoinHandle<()>,
}

pub fn query_loop(server: SocketAddr, name: &str, max: usize) -> QueryLoop {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let (s, t, name) = (stop.clone(), tally.clone(), name.to_string());
    let task = tokio::spawn(async move {
        for _ in 0..max {
            if s.load(std::sync::atomic::Ordering::Relaxed) {
                break;
            }
            let r = ask(server, &name).await;
            if let Ok(mut t) = t.lock() {
                match r {
                    Ok(a) => *t.answers.entry(a).or_default() += 1,
                    Err(e) => t.failures.push(e.to_string()),
                }
            }
        }
    });
    QueryLoop { stop, tally, task }
}

impl QueryLoop {
    /// What it saw so far.
    pub fn tally(&self) -> Tally {
        self.tally.lock().map(|t| t.clone()).unwrap_or_default()
    }

    /// Stop after the query in flight; what it saw.
    pub async fn stop(self) -> Tally {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let QueryLoop { tally, task, .. } = self;
        let _ = task.await;
        tally.lock().map(|t| t.clone()).unwrap_or_default()
    }
}

/// The events (events.k8s.io) of a namespace in the order the watch delivered them, from the
/// moment the watch was established (`ready`); a series update of an earlier event counts as
/// one more occurrence.
#[derive(Default)]
pub struct EventLog {
    pub ready: bool,
    /// (reason, name of the related object (the slot's pod), note).
    pub seen: Vec<(String, String, String)>,
}

impl EventLog {
    /// The position of the first `reason` (about `related`, when given) at or after `from`.
    pub fn position(&self, from: usize, reason: &str, related: Option<&str>) -> Option<usize> {
        self.seen
            .iter()
            .enumerate()
            .skip(from)
            .find_map(|(i, e)| (e.0 == reason && related.is_none_or(|r| e.1 == r)).then_some(i))
    }

    pub fn reasons(&self) -> Vec<String> {
        self.seen
            .iter()
            .map(|(r, rel, _)| format!("{r}({rel})"))
            .collect()
    }
}

/// A log of type `L` kept by a watch on `api`: `f` takes each event with the log locked.
fn watch_log<K, L>(
    api: Api<K>,
    f: impl Fn(&mut L, watcher::Event<K>) + Send + 'static,
) -> Arc<Mutex<L>>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
    L: Default + Send + 'static,
{
    let log = Arc::new(Mutex::new(L::default()));
    let l = log.clone();
    tokio::spawn(
        watcher(api, watcher::Config::default()).for_each(move |ev| {
            if let (Ok(ev), Ok(mut l)) = (ev, l.lock()) {
                f(&mut l, ev);
            }
            std::future::ready(())
        }),
    );
    log
}

/// Watch the events of `ns`; wait with [`EventLog::ready`] before causing any.
pub fn watch_events(client: &kube::Client, ns: &str) -> Arc<Mutex<EventLog>> {
    let api = Api::<Event>::namespaced(client.clone(), ns);
    watch_log(api, |l: &mut EventLog, ev| match ev {
        watcher::Event::InitDone => l.ready = true,
        watcher::Event::Apply(e) if l.ready => {
            let related = e.related.and_then(|r| r.name).unwrap_or_default();
            l.seen.push((
                e.reason.unwrap_or_default(),
                related,
                e.note.unwrap_or_default(),
            ));
        }
        _ => {}
    })
}

/// The pods of a namespace as a watch saw them.
#[derive(Default)]
pub struct PodLog {
    pub ready: bool,
    /// Every pod (uid, name, revision label) in the order first seen.
    pub created: Vec<(String, String, String)>,
    /// The pods that exist now (uid -> name), terminating ones included.
    pub live: BTreeMap<String, String>,
    /// The most pods that existed at once.
    pub max_live: usize,
}

impl PodLog {
    /// Names of the pods created on `revision`, in order of creation.
    pub fn created_on(&self, revision: &str) -> Vec<String> {
        self.created
            .iter()
            .filter(|(_, _, rev)| rev == revision)
            .map(|(_, name, _)| name.clone())
            .collect()
    }

    /// Note one watch event.
    fn record(&mut self, ev: watcher::Event<Pod>) {
        match ev {
            watcher::Event::InitDone => self.ready = true,
            watcher::Event::Apply(p) | watcher::Event::InitApply(p) => {
                let uid = p.uid().unwrap_or_default();
                if !self.created.iter().any(|(u, _, _)| *u == uid) {
                    let rev = p.labels().get(REVISION).cloned().unwrap_or_default();
                    self.created.push((uid.clone(), p.name_any(), rev));
                }
                self.live.insert(uid, p.name_any());
                self.max_live = self.max_live.max(self.live.len());
            }
            watcher::Event::Delete(p) => {
                self.live.remove(&p.uid().unwrap_or_default());
            }
            _ => {}
        }
    }

    /// The uids of the pods named `name` on `revision` (several: the slot was replaced again).
    pub fn uids(&self, name: &str, revision: &str) -> Vec<String> {
        self.created
            .iter()
            .filter(|(_, n, r)| n == name && r == revision)
            .map(|(u, _, _)| u.clone())
            .collect()
    }
}

/// Watch the pods of `ns`; wait with [`PodLog::ready`] before relying on it.
pub fn watch_pods(client: &kube::Client, ns: &str) -> Arc<Mutex<PodLog>> {
    watch_log(Api::<Pod>::namespaced(client.clone(), ns), PodLog::record)
}

/// Wait until `f` holds for what the watch behind `log` saw.
pub async fn seen<L, T>(
    log: &Arc<Mutex<L>>,
    secs: u64,
    what: &str,
    f: impl Fn(&L) -> Option<T>,
) -> anyhow::Result<T> {
    let f = &f;
    eventually(secs, what, || async move {
        let l = log.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
        Ok(f(&l))
    })
    .await
}

impl Env {
    /// Wait until the operator processed resolver `name`'s current spec
    /// (`status.observedGeneration == metadata.generation`).
    pub async fn processed(&self, name: &str) -> R {
        let resolvers = &self.resolvers();
        eventually(60, &format!("{name}: generation observed"), || async move {
            let r = resolvers.get(name).await?;
            let observed = r.status.as_ref().and_then(|s| s.observed_generation);
            Ok((observed.is_some() && observed == r.metadata.generation).then_some(()))
        })
        .await
        .map_err(|e| anyhow::anyhow!("{e}\n--- operator log ---\n{}", self.log_tail()))
    }

    /// Wait until the operator finished a reconcile of `name` beyond `after` (its counter);
    /// returns the new count.
    pub async fn reconciled_beyond(&self, name: &str, after: f64) -> anyhow::Result<f64> {
        eventually(
            30,
            &format!("a reconcile of {name} beyond {after}"),
            || async move {
                let n = self.reconciles(name)?;
                Ok((n > after).then_some(n))
            },
        )
        .await
    }

    /// The operator's ServiceAccount's write requests (create, update, patch, delete) in the
    /// audit log after `mark`.
    pub fn operator_writes(
        &self,
        mark: &crate::k8s::audit::AuditMark,
    ) -> anyhow::Result<Vec<crate::k8s::audit::AuditEvent>> {
        let user = format!("system:serviceaccount:{}:kres-operator", self.ns);
        Ok(self
            .cp
            .audit()
            .since(mark)?
            .into_iter()
            .filter(|e| e.user == user && e.is_write())
            .collect())
    }

    /// `kresctl kube --kubeconfig <kubeconfig> -n <ns> args`: (success, stdout, stderr).
    pub fn kresctl_kube(
        &self,
        kubeconfig: &std::path::Path,
        args: &[&str],
    ) -> anyhow::Result<(bool, String, String)> {
        let out = Command::new(kresctl()?)
            .arg("kube")
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(["-n", &self.ns])
            .args(args)
            .output()?;
        Ok((
            out.status.success(),
            String::from_utf8(out.stdout)?,
            String::from_utf8(out.stderr)?,
        ))
    }
}
