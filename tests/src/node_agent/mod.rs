//! A test node agent: the kubelet stand-in of the test control plane (test code only).
//!
//! It registers a Ready Node, binds unscheduled Pods whose nodeSelector it matches to it (no
//! scheduler runs; a pod that does not fit stays Pending) and runs every container of each Pod
//! bound to it as a host process (kresd, or a host executable such as `kres-cache-gc`), all on
//! the pod's IP (198.18.x.y in the test network namespace), sharing the pod's volumes. It
//! reports real status: phase, podIP(s), per container state (Waiting / Running / Terminated
//! with exit code and, for `FallbackToLogsOnError`, the log tail), restartCount and readiness.
//! Readiness comes from the readinessProbe (exec or tcpSocket, with initialDelay / period /
//! timeout / success and failure thresholds), else from kresd's `READY=1` on `NOTIFY_SOCKET`
//! (other programs: ready once running); a failing livenessProbe kills the container, which
//! restartPolicy restarts with exponential back-off (`CrashLoopBackOff`).
//! Deletion is graceful like the kubelet's: the pod turns NotReady first, then the preStop hooks (exec, sleep) run, then SIGTERM, then SIGKILL when the grace
//! period is over, then the pod is deleted with grace 0. Each step is recorded in a
//! [`Journal`] tests read to prove ordering. How a Pod spec maps to processes is described in
//! [`spec`] and docs/development.md. It knows nothing about kres-operator.

mod ip;
mod pod;
pub mod spec;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{
    Binding, Node, NodeAddress, NodeCondition, NodeStatus, ObjectReference, Pod,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// Errors of the node agent.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An API call failed.
    #[error("{0}: {1}")]
    Api(String, #[source] kube::Error),
    /// A file operation failed.
    #[error("{0}: {1}")]
    Io(String, #[source] std::io::Error),
    /// The pod spec cannot be run by this agent.
    #[error("{0}")]
    Spec(String),
    /// Something the pod needs is not there yet (an unbound PersistentVolumeClaim): retried.
    #[error("{0}")]
    NotYet(String),
}

/// A lifecycle step the agent took for a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The process was started.
    Started,
    /// The container turned ready (probe thresholds met, or READY=1).
    Ready,
    /// The container turned not ready (probe, exit, or termination started).
    NotReady,
    /// The liveness probe reached its failure threshold; the container is being killed.
    LivenessFailed,
    /// The preStop hook started.
    PreStop,
    /// The preStop hook finished (or timed out).
    PreStopDone,
    /// SIGTERM was sent (pod termination).
    Sigterm,
    /// SIGKILL was sent because the grace period was over.
    Sigkill,
    /// The process exited with this code (128 + signal when killed).
    Exited(i32),
}

/// One journal entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalEntry {
    /// Wall-clock time, taken just before the step (before the signal is sent, the process
    /// started...), so "slice changed at T < entry.at" proves the order.
    pub at: SystemTime,
    /// `namespace/name` of the pod.
    pub pod: String,
    /// Container name.
    pub container: String,
    /// What happened.
    pub step: Step,
}

/// The agent's record of lifecycle steps (shared by its pod runners).
#[derive(Debug, Clone, Default)]
pub struct Journal(Arc<Mutex<Vec<JournalEntry>>>);

impl Journal {
    pub(crate) fn record(&self, pod: &str, container: &str, step: Step) {
        let entry = JournalEntry {
            at: SystemTime::now(),
            pod: pod.to_string(),
            container: container.to_string(),
            step,
        };
        tracing::debug!("node agent: {pod} {container}: {step:?}");
        if let Ok(mut v) = self.0.lock() {
            v.push(entry);
        }
    }

    /// Every entry so far, oldest first.
    pub fn entries(&self) -> Vec<JournalEntry> {
        self.0.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// The first entry for `pod` (`namespace/name`), `container` and `step`.
    pub fn find(&self, pod: &str, container: &str, step: Step) -> Option<JournalEntry> {
        self.entries()
            .into_iter()
            .find(|e| e.pod == pod && e.container == container && e.step == step)
    }
}

/// Settings of one node agent.
#[derive(Debug, Clone)]
pub struct NodeAgentConfig {
    /// Node name to register.
    pub node_name: String,
    /// Only handle Pods of this namespace (parallel tests each run an agent for their namespace).
    pub namespace: Option<String>,
    /// Per-pod directories (volumes, work dir, log, notify socket) go here.
    pub root_dir: PathBuf,
    /// The kresd executable.
    pub kresd: PathBuf,
    /// Executables of the image run as host programs: a container `command[0]` (or exec probe
    /// command) whose file name is a key here runs the host path instead, e.g. `kres-operator`
    /// → the built binary (as `kresd` maps to [`NodeAgentConfig::kresd`]).
    pub executables: Vec<(String, PathBuf)>,
    /// Node address reported as status.hostIP (and the Node's InternalIP).
    pub host_ip: String,
    /// First restart back-off (the kubelet uses 10 s; tests want it short).
    pub backoff_initial: Duration,
    /// Back-off cap (the kubelet uses 300 s).
    pub backoff_max: Duration,
}

impl NodeAgentConfig {
    /// Defaults: kresd from PATH, host IP 198.18.0.1 (the node address of the test network
    /// namespace), back-off 1 s doubling up to 10 s.
    pub fn new(node_name: impl Into<String>, root_dir: impl Into<PathBuf>) -> Self {
        NodeAgentConfig {
            node_name: node_name.into(),
            namespace: None,
            root_dir: root_dir.into(),
            kresd: PathBuf::from("kresd"),
            executables: Vec::new(),
            host_ip: crate::k8s::netns::NODE_IP.to_string(),
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(10),
        }
    }
}

/// A running node agent. Dropping it (or the tokio runtime it runs on) kills its kresd processes;
/// [`NodeAgent::shutdown`] also removes the Node.
pub struct NodeAgent {
    node_name: String,
    client: Client,
    task: tokio::task::JoinHandle<()>,
    journal: Journal,
}

impl NodeAgent {
    /// Register the Node and start handling Pods.
    pub async fn start(client: Client, config: NodeAgentConfig) -> Result<NodeAgent, Error> {
        std::fs::create_dir_all(&config.root_dir)
            .map_err(|e| Error::Io(format!("create {}", config.root_dir.display()), e))?;
        register_node(&client, &config).await?;
        spec::remove_stale_memory_dirs();
        let node_name = config.node_name.clone();
        let journal = Journal::default();
        let ctx = Arc::new(pod::Ctx {
            client: client.clone(),
            config,
            journal: journal.clone(),
        });
        let task = tokio::spawn(watch_pods(ctx));
        Ok(NodeAgent {
            node_name,
            client,
            task,
            journal,
        })
    }

    /// The lifecycle steps taken so far.
    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    /// The registered node name.
    pub fn node_name(&self) -> &str {
        &self.node_name
    }

    /// Stop: kill every pod's kresd and delete the Node object.
    pub async fn shutdown(mut self) -> Result<(), Error> {
        self.task.abort();
        let _ = (&mut self.task).await;
        let nodes: Api<Node> = Api::all(self.client.clone());
        match nodes
            .delete(&self.node_name, &DeleteParams::default())
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(Error::Api(format!("delete node {}", self.node_name), e)),
        }
    }
}

impl Drop for NodeAgent {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Create (or take over) the Node `cfg.node_name` and report it Ready with `cfg.host_ip`.
pub(crate) async fn register_node(client: &Client, cfg: &NodeAgentConfig) -> Result<(), Error> {
    let nodes: Api<Node> = Api::all(client.clone());
    let node = Node {
        metadata: ObjectMeta {
            name: Some(cfg.node_name.clone()),
            labels: Some(node_labels(&cfg.node_name)),
            ..Default::default()
        },
        ..Default::default()
    };
    match nodes.create(&PostParams::default(), &node).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => return Err(Error::Api(format!("create node {}", cfg.node_name), e)),
    }
    let t = Time(Timestamp::now());
    let cap: std::collections::BTreeMap<String, Quantity> =
        [("cpu", "8"), ("memory", "16Gi"), ("pods", "250")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), Quantity(v.into())))
            .collect();
    let status = NodeStatus {
        addresses: Some(vec![
            NodeAddress {
                type_: "InternalIP".into(),
                address: cfg.host_ip.clone(),
            },
            NodeAddress {
                type_: "Hostname".into(),
                address: cfg.node_name.clone(),
            },
        ]),
        allocatable: Some(cap.clone()),
        capacity: Some(cap),
        conditions: Some(vec![NodeCondition {
            type_: "Ready".into(),
            status: "True".into(),
            reason: Some("KubeletReady".into()),
            message: Some("kres test node agent is posting ready status".into()),
            last_heartbeat_time: Some(t.clone()),
            last_transition_time: Some(t),
        }]),
        ..Default::default()
    };
    nodes
        .patch_status(
            &cfg.node_name,
            &PatchParams::default(),
            &Patch::Merge(&serde_json::json!({ "status": status })),
        )
        .await
        .map_err(|e| Error::Api(format!("set status of node {}", cfg.node_name), e))?;
    Ok(())
}

/// The labels [`register_node`] gives node `node_name`.
fn node_labels(node_name: &str) -> BTreeMap<String, String> {
    [
        ("kubernetes.io/hostname".to_string(), node_name.to_string()),
        ("kubernetes.io/os".to_string(), "linux".to_string()),
    ]
    .into()
}

/// Whether the pod's `nodeSelector` matches the node's labels (the one scheduling rule the
/// agent honours: a pod that does not fit stays Pending, unbound, as with the scheduler).
fn fits(pod: &Pod, node_name: &str) -> bool {
    let labels = node_labels(node_name);
    pod.spec
        .as_ref()
        .and_then(|s| s.node_selector.as_ref())
        .is_none_or(|sel| sel.iter().all(|(k, v)| labels.get(k) == Some(v)))
}

/// Bind an unscheduled pod to our node (what the scheduler would do).
async fn bind(ctx: &pod::Ctx, pod: &Pod) -> Result<(), Error> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let binding = Binding {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(ns.clone()),
            ..Default::default()
        },
        target: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Node".into()),
            name: Some(ctx.config.node_name.clone()),
            ..Default::default()
        },
    };
    match api
        .create_subresource::<_, serde_json::Value>(
            "binding",
            &name,
            &PostParams::default(),
            &binding,
        )
        .await
    {
        Ok(_) => Ok(()),
        // Bound meanwhile (409) or gone (404): the next event tells.
        Err(kube::Error::Api(s)) if s.code == 409 || s.code == 404 => Ok(()),
        Err(e) => Err(Error::Api(format!("bind pod {ns}/{name}"), e)),
    }
}

struct Runner {
    tx: watch::Sender<Pod>,
    abort: tokio::task::AbortHandle,
}

async fn watch_pods(ctx: Arc<pod::Ctx>) {
    let api: Api<Pod> = match &ctx.config.namespace {
        Some(ns) => Api::namespaced(ctx.client.clone(), ns),
        None => Api::all(ctx.client.clone()),
    };
    let mut runners: HashMap<String, Runner> = HashMap::new();
    // Dropping the JoinSet (agent stopped, runtime shut down) aborts every runner, which kills kresd.
    let mut tasks: JoinSet<()> = JoinSet::new();
    let mut relisted: HashSet<String> = HashSet::new();
    let mut stream = watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    while let Some(ev) = stream.next().await {
        while tasks.try_join_next().is_some() {}
        runners.retain(|_, r| !r.abort.is_finished());
        let ev = match ev {
            Ok(ev) => ev,
            Err(e) => {
                tracing::warn!("node agent {}: pod watch: {e}", ctx.config.node_name);
                continue;
            }
        };
        match ev {
            Event::Init => relisted.clear(),
            Event::InitApply(p) | Event::Apply(p) => {
                if let Some(uid) = p.metadata.uid.clone() {
                    relisted.insert(uid);
                }
                handle(&ctx, &mut runners, &mut tasks, p).await;
            }
            Event::Delete(p) => {
                if let Some(r) = p.metadata.uid.as_ref().and_then(|u| runners.remove(u)) {
                    // Dropping the sender tells the runner the pod is gone: kill at once.
                    drop(r.tx);
                }
            }
            Event::InitDone => {
                runners.retain(|uid, _| relisted.contains(uid));
            }
        }
    }
}

async fn handle(
    ctx: &Arc<pod::Ctx>,
    runners: &mut HashMap<String, Runner>,
    tasks: &mut JoinSet<()>,
    p: Pod,
) {
    let Some(uid) = p.metadata.uid.clone() else {
        return;
    };
    let node = p
        .spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .unwrap_or_default();
    if node.is_empty() {
        let scheduler = p
            .spec
            .as_ref()
            .and_then(|s| s.scheduler_name.clone())
            .unwrap_or_default();
        if p.metadata.deletion_timestamp.is_none()
            && (scheduler.is_empty() || scheduler == "default-scheduler")
            && fits(&p, &ctx.config.node_name)
            && let Err(e) = bind(ctx, &p).await
        {
            tracing::warn!("node agent {}: {e}", ctx.config.node_name);
        }
        return;
    }
    if node != ctx.config.node_name {
        return;
    }
    if let Some(r) = runners.get(&uid) {
        r.tx.send_replace(p);
        return;
    }
    let phase = p
        .status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_default();
    if phase == "Succeeded" || phase == "Failed" {
        // A finished pod from an earlier agent: only honour its deletion.
        if p.metadata.deletion_timestamp.is_some() {
            let api: Api<Pod> = Api::namespaced(
                ctx.client.clone(),
                p.metadata.namespace.as_deref().unwrap_or_default(),
            );
            let _ = api
                .delete(
                    p.metadata.name.as_deref().unwrap_or_default(),
                    &DeleteParams::default().grace_period(0),
                )
                .await;
        }
        return;
    }
    let (tx, rx) = watch::channel(p);
    let abort = tasks.spawn(pod::run(ctx.clone(), rx));
    runners.insert(uid, Runner { tx, abort });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(selector: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": { "name": "p" },
            "spec": { "containers": [], "nodeSelector": selector },
        }))
        .expect("pod")
    }

    #[test]
    fn a_pod_fits_only_when_its_node_selector_matches_the_node_labels() {
        assert!(fits(&pod(serde_json::json!({})), "n1"));
        assert!(fits(
            &pod(
                serde_json::json!({ "kubernetes.io/os": "linux", "kubernetes.io/hostname": "n1" })
            ),
            "n1"
        ));
        assert!(!fits(
            &pod(serde_json::json!({ "kubernetes.io/hostname": "n2" })),
            "n1"
        ));
        assert!(!fits(&pod(serde_json::json!({ "disk": "ssd" })), "n1"));
    }
}
