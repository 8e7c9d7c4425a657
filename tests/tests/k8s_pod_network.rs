//! The pod network and the node agent's kubelet semantics, with real components: etcd,
//! kube-apiserver, kube-controller-manager (endpointslice, persistentvolume-binder), kube-proxy
//! in nftables mode and kresd, all inside this test binary's private network namespace.
//! They FAIL (never skip) when the tooling is missing, telling how to build it.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use hickory_proto::rr::RecordType;
use k8s_openapi::api::core::v1::{
    ConfigMap, ContainerStatus, PersistentVolume, PersistentVolumeClaim, Pod, Service,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kres_tests::dns;
use kres_tests::k8s::netns;
use kres_tests::k8s::wait::{eventually, pod_ready};
use kres_tests::k8s::{ControlPlane, TestNode};
use kres_tests::node_agent::Step;
use kube::Api;
use kube::api::{DeleteParams, ListParams, PostParams};

type R = anyhow::Result<()>;

#[ctor::ctor(unsafe)]
fn private_network() {
    netns::isolate_process()
}

/// kresd answers `who.kres-test. A` with its own pod IP: the answer names the backend.
const WHO_CONF: &str = "net.listen(os.getenv('POD_IP'), 53, { kind = 'dns' })\n\
                        modules.load('hints > iterate')\n\
                        hints['who.kres-test.'] = os.getenv('POD_IP')\n";

fn config_map(name: &str, kresd_conf: &str) -> anyhow::Result<ConfigMap> {
    Ok(serde_json::from_value(serde_json::json!({
        "metadata": { "name": name },
        "data": { "kresd.conf": kresd_conf },
    }))?)
}

/// Env every test container gets: its pod IP, name and uid; `CTL` is the test's control
/// directory (a hostPath volume; env values under a mountPath are rewritten to the host path,
/// so `sh -c '... $CTL/...'` in probes and hooks reaches it).
fn pod_env() -> serde_json::Value {
    serde_json::json!([
        { "name": "POD_IP", "valueFrom": { "fieldRef": { "fieldPath": "status.podIP" } } },
        { "name": "POD_NAME", "valueFrom": { "fieldRef": { "fieldPath": "metadata.name" } } },
        { "name": "POD_UID", "valueFrom": { "fieldRef": { "fieldPath": "metadata.uid" } } },
        { "name": "CTL", "value": "/ctl" },
    ])
}

/// A kresd pod labelled `app: resolver` with config map `kresd`, the control directory `ctl`
/// mounted at /ctl, and `kresd` container fields from `extra` (probes, lifecycle...).
fn kresd_pod(name: &str, ctl: &Path, extra: serde_json::Value) -> anyhow::Result<Pod> {
    let mut container = serde_json::json!({
        "name": "kresd",
        "image": "docker.io/cznic/knot-resolver:5",
        "args": ["-c", "/etc/knot-resolver/kresd.conf"],
        "env": pod_env(),
        "ports": [{ "name": "dns-tcp", "containerPort": 53, "protocol": "TCP" }],
        "volumeMounts": [
            { "name": "config", "mountPath": "/etc/knot-resolver" },
            { "name": "ctl", "mountPath": "/ctl" },
        ],
    });
    if let (Some(c), Some(e)) = (container.as_object_mut(), extra.as_object()) {
        c.extend(e.clone());
    }
    Ok(serde_json::from_value(serde_json::json!({
        "metadata": { "name": name, "labels": { "app": "resolver" } },
        "spec": {
            "terminationGracePeriodSeconds": 10,
            "containers": [container],
            "volumes": [
                { "name": "config", "configMap": { "name": "kresd" } },
                { "name": "ctl", "hostPath": { "path": ctl.display().to_string(), "type": "Directory" } },
            ],
        },
    }))?)
}

struct Env {
    cp: &'static ControlPlane,
    ns: String,
    client: kube::Client,
    node: TestNode,
    ctl: tempfile::TempDir,
}

impl Env {
    async fn new(prefix: &str) -> anyhow::Result<Env> {
        let cp = ControlPlane::shared().await?;
        let ns = cp.namespace(prefix).await?;
        let client = cp.admin_client().await?;
        let node = cp.node_agent(&ns).await?;
        let ctl = tempfile::Builder::new().prefix("kres-ctl-").tempdir()?;
        Ok(Env {
            cp,
            ns,
            client,
            node,
            ctl,
        })
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    async fn create_config(&self, conf: &str) -> R {
        Api::<ConfigMap>::namespaced(self.client.clone(), &self.ns)
            .create(&PostParams::default(), &config_map("kresd", conf)?)
            .await?;
        Ok(())
    }

    /// Wait until pod `name` is Running and Ready; returns it.
    async fn ready_pod(&self, name: &str) -> anyhow::Result<Pod> {
        let pods = &self.pods();
        eventually(60, &format!("pod {name} Ready"), || async move {
            let p = pods.get(name).await?;
            Ok(pod_ready(&p).then_some(p))
        })
        .await
    }

    fn journal_pod(&self, name: &str) -> String {
        format!("{}/{name}", self.ns)
    }
}

fn pod_ip(p: &Pod) -> anyhow::Result<String> {
    p.status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .ok_or_else(|| anyhow::anyhow!("pod without podIP"))
}

fn container<'a>(p: &'a Pod, name: &str) -> Option<&'a ContainerStatus> {
    p.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == name)
}

/// Endpoint addresses of `service`'s EndpointSlices with their `ready` condition.
async fn endpoints(api: &Api<EndpointSlice>, service: &str) -> anyhow::Result<Vec<(String, bool)>> {
    let lp = ListParams::default().labels(&format!("kubernetes.io/service-name={service}"));
    Ok(api
        .list(&lp)
        .await?
        .items
        .into_iter()
        .flat_map(|s| s.endpoints.into_iter().flatten())
        .flat_map(|e| {
            let ready = e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(false);
            e.addresses.into_iter().map(move |a| (a, ready))
        })
        .collect())
}

async fn ready_endpoints(
    api: &Api<EndpointSlice>,
    service: &str,
) -> anyhow::Result<BTreeSet<String>> {
    Ok(endpoints(api, service)
        .await?
        .into_iter()
        .filter_map(|(a, ready)| ready.then_some(a))
        .collect())
}

/// `who.kres-test. A` from the node with a fresh source port: the answering pod's IP.
async fn who(server: SocketAddr, tcp: bool) -> anyhow::Result<String> {
    netns::ask_from_node(server, "who.kres-test.", tcp).await
}

async fn who_udp(server: SocketAddr) -> anyhow::Result<String> {
    who(server, false).await
}

async fn who_tcp(server: SocketAddr) -> anyhow::Result<String> {
    who(server, true).await
}

fn since(t: SystemTime, later: SystemTime) -> String {
    match later.duration_since(t) {
        Ok(d) => format!("+{:.3} s", d.as_secs_f64()),
        Err(e) => format!("-{:.3} s", e.duration().as_secs_f64()),
    }
}

#[tokio::test]
async fn a_service_reaches_ready_pods_through_kube_proxy_and_drops_unready_and_deleted_ones() -> R {
    let env = Env::new("svc").await?;
    env.create_config(WHO_CONF).await?;
    let svc: Service = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "resolver" },
        "spec": {
            "selector": { "app": "resolver" },
            "ports": [
                { "name": "dns", "port": 53, "protocol": "UDP" },
                { "name": "dns-tcp", "port": 53, "protocol": "TCP" },
            ],
        },
    }))?;
    let svc = Api::<Service>::namespaced(env.client.clone(), &env.ns)
        .create(&PostParams::default(), &svc)
        .await?;
    let cluster_ip = svc
        .spec
        .and_then(|s| s.cluster_ip)
        .ok_or_else(|| anyhow::anyhow!("no ClusterIP"))?;
    let service: SocketAddr = format!("{cluster_ip}:53").parse()?;

    // Readiness: an exec probe in the pod's environment ($POD_NAME, $POD_IP, $CTL): kresd
    // answers and the test has not marked the pod unready. preStop: ask the pod's own kresd
    // (proves it still serves during the hook), then wait a second.
    let extra = serde_json::json!({
        "readinessProbe": {
            "exec": { "command": ["sh", "-c", "test ! -e \"$CTL/unready-$POD_NAME\" && \
                kdig +short +timeout=2 +retry=0 @\"$POD_IP\" who.kres-test. A | grep -q ."] },
            // Two failures in a row: one slow probe on a loaded machine must not flap a pod.
            "periodSeconds": 1, "timeoutSeconds": 5, "failureThreshold": 2, "successThreshold": 1,
        },
        "lifecycle": { "preStop": { "exec": { "command": ["sh", "-c",
            "kdig +short +timeout=1 +retry=0 @\"$POD_IP\" who.kres-test. A > \"$CTL/prestop-$POD_NAME\"; sleep 1"] } } },
    });
    let names = ["r0", "r1", "r2"];
    for n in names {
        env.pods()
            .create(
                &PostParams::default(),
                &kresd_pod(n, env.ctl.path(), extra.clone())?,
            )
            .await?;
    }
    let mut ips = Vec::new();
    for n in names {
        ips.push(pod_ip(&env.ready_pod(n).await?)?);
    }
    let all: BTreeSet<String> = ips.iter().cloned().collect();
    assert!(ips.iter().all(|ip| ip.starts_with("198.18.")), "{ips:?}");
    let slices: Api<EndpointSlice> = Api::namespaced(env.client.clone(), &env.ns);
    let slices = &slices;
    let all_ref = &all;
    eventually(60, "3 ready endpoints", || async move {
        Ok((ready_endpoints(slices, "resolver").await? == *all_ref).then_some(()))
    })
    .await?;

    // Through the ClusterIP, over UDP and TCP, every pod answers (random backend choice).
    let seen = eventually(30, "every pod answering via the ClusterIP over UDP", || {
        let mut seen = BTreeSet::new();
        async move {
            for _ in 0..60 {
                seen.insert(who_udp(service).await?);
            }
            Ok((seen == *all_ref).then_some(seen))
        }
    })
    .await?;
    assert_eq!(seen, all);
    let mut seen_tcp = BTreeSet::new();
    for _ in 0..60 {
        seen_tcp.insert(who_tcp(service).await?);
        if seen_tcp == all {
            break;
        }
    }
    assert_eq!(
        seen_tcp, all,
        "every pod answers via the ClusterIP over TCP"
    );

    // r1's readiness probe starts failing: its endpoint turns not ready, kube-proxy stops
    // sending to it, while its kresd still runs and answers on its pod IP.
    let t0 = SystemTime::now();
    std::fs::write(env.ctl.path().join("unready-r1"), "")?;
    let r1 = ips[1].clone();
    let r1_ref = &r1;
    eventually(30, "r1's endpoint not ready", || async move {
        Ok((!ready_endpoints(slices, "resolver").await?.contains(r1_ref)).then_some(()))
    })
    .await?;
    let t_slice = SystemTime::now();
    let streak_start = Instant::now();
    let mut streak = 0;
    let mut t_clean = SystemTime::now();
    while streak < 60 {
        anyhow::ensure!(
            streak_start.elapsed() < Duration::from_secs(30),
            "kube-proxy still sends to r1 30 s after its endpoint turned not ready"
        );
        let who = who_udp(service).await?;
        if who == r1 {
            streak = 0;
        } else {
            if streak == 0 {
                t_clean = SystemTime::now();
            }
            streak += 1;
        }
    }
    println!(
        "readiness probe failed at 0: endpoint not ready {}, no query to r1 from {} on (60 in a row)",
        since(t0, t_slice),
        since(t0, t_clean)
    );
    let r1_pod = env.pods().get("r1").await?;
    assert!(!pod_ready(&r1_pod), "r1 must be NotReady");
    assert_eq!(
        who_udp(format!("{r1}:53").parse()?).await?,
        r1,
        "r1's kresd still runs; only the Service left it"
    );

    // Deleting r2: its endpoint leaves before its kresd gets SIGTERM.
    let r2 = ips[2].clone();
    let r2_ref = &r2;
    env.pods().delete("r2", &DeleteParams::default()).await?;
    let t_del = SystemTime::now();
    let deadline = Instant::now() + Duration::from_secs(30);
    while ready_endpoints(slices, "resolver").await?.contains(r2_ref) {
        anyhow::ensure!(
            Instant::now() < deadline,
            "r2's endpoint still ready 30 s after deletion"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let t_gone = SystemTime::now();
    // Its kresd still answers on its pod IP after the endpoint left.
    let direct = who_udp(format!("{r2}:53").parse()?).await;
    let t_direct = SystemTime::now();
    let pods = &env.pods();
    eventually(30, "pod r2 removed", || async move {
        Ok(pods.get_opt("r2").await?.is_none().then_some(()))
    })
    .await?;
    let journal = env.node.agent.journal();
    let jp = env.journal_pod("r2");
    let step = |s: Step| {
        journal
            .find(&jp, "kresd", s)
            .map(|e| e.at)
            .ok_or_else(|| anyhow::anyhow!("no {s:?} for r2 in {:#?}", journal.entries()))
    };
    let (not_ready, pre_stop, pre_stop_done, sigterm) = (
        step(Step::NotReady)?,
        step(Step::PreStop)?,
        step(Step::PreStopDone)?,
        step(Step::Sigterm)?,
    );
    println!(
        "deleted r2 at 0: endpoint not ready observed {}, agent NotReady {}, preStop {}..{}, SIGTERM {}",
        since(t_del, t_gone),
        since(t_del, not_ready),
        since(t_del, pre_stop),
        since(t_del, pre_stop_done),
        since(t_del, sigterm)
    );
    assert!(t_gone < sigterm, "the endpoint must leave before SIGTERM");
    assert_eq!(direct?, r2, "r2's kresd answered after its endpoint left");
    assert!(t_direct < sigterm);
    assert!(not_ready <= pre_stop && pre_stop <= pre_stop_done && pre_stop_done <= sigterm);
    // The preStop hook ran while kresd still served: it got kresd's own answer.
    let hook_answer = std::fs::read_to_string(env.ctl.path().join("prestop-r2"))?;
    assert_eq!(
        hook_answer.trim(),
        r2,
        "preStop hook's query to its own kresd"
    );

    // Only r0 is left in the data path (r1 not ready, r2 gone).
    for _ in 0..30 {
        let who = who_udp(service).await.with_context(|| {
            format!(
                "agent journal of r0: {:?}",
                journal
                    .entries()
                    .into_iter()
                    .filter(|e| e.pod == env.journal_pod("r0"))
                    .map(|e| e.step)
                    .collect::<Vec<_>>()
            )
        })?;
        assert_eq!(who, ips[0]);
    }
    env.node.agent.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn probes_decide_readiness_and_liveness_and_a_crash_reports_kresds_error() -> R {
    let env = Env::new("probes").await?;
    let audit_start = env.cp.audit().mark()?;
    env.create_config(WHO_CONF).await?;
    let pods = &env.pods();
    // A readiness probe that always fails (and counts its runs): the pod is never Ready
    // although kresd runs and answers.
    let never = kresd_pod(
        "never",
        env.ctl.path(),
        serde_json::json!({
            "readinessProbe": {
                "exec": { "command": ["sh", "-c", "echo run >> \"$CTL/never-probes\"; exit 1"] },
                "periodSeconds": 1,
            },
            "livenessProbe": { "tcpSocket": { "port": "dns-tcp" }, "periodSeconds": 1 },
        }),
    )?;
    pods.create(&PostParams::default(), &never).await?;
    // A liveness probe that fails: the container is killed and restarted.
    let dying = kresd_pod(
        "dying",
        env.ctl.path(),
        serde_json::json!({
            "livenessProbe": {
                "exec": { "command": ["sh", "-c", "test -e \"$CTL/alive\""] },
                "initialDelaySeconds": 1, "periodSeconds": 1, "failureThreshold": 2,
            },
        }),
    )?;
    pods.create(&PostParams::default(), &dying).await?;

    let probes = env.ctl.path().join("never-probes");
    let probes = &probes;
    let mut was_ready = false;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let p = pods.get("never").await?;
        was_ready |= pod_ready(&p);
        let runs = std::fs::read_to_string(probes)
            .unwrap_or_default()
            .lines()
            .count();
        if runs >= 4 {
            let ip = pod_ip(&p)?;
            assert_eq!(
                who_udp(format!("{ip}:53").parse()?).await?,
                ip,
                "kresd serves"
            );
            let c = container(&p, "kresd").ok_or_else(|| anyhow::anyhow!("no status"))?;
            assert!(
                c.state.as_ref().and_then(|s| s.running.as_ref()).is_some(),
                "{c:?}"
            );
            assert!(!c.ready && c.restart_count == 0, "{c:?}");
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "readiness probe ran {runs} times in 60 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        !was_ready,
        "a pod whose readiness probe always fails was Ready"
    );
    let p = pods.get("never").await?;
    assert!(!pod_ready(&p), "still not Ready after 4 probe runs");

    // Steady state: while the probes keep running (and failing), the agent writes nothing
    // (status is patched only when it changes). Proof of activity: 3 more probe runs.
    let quiet = env.cp.audit().mark()?;
    let runs_then = std::fs::read_to_string(probes)?.lines().count();
    eventually(30, "3 more readiness probe runs", || async move {
        let runs = std::fs::read_to_string(probes)?.lines().count();
        Ok((runs >= runs_then + 3).then_some(()))
    })
    .await?;
    let writes: Vec<_> = env
        .cp
        .audit()
        .since(&quiet)?
        .into_iter()
        .filter(|e| e.is_write() && e.namespace == env.ns && e.name == "never")
        .collect();
    assert!(writes.is_empty(), "writes in steady state: {writes:#?}");
    // The audit log records who did what: the admin created the pod, the agent (admin
    // credentials too) bound it and patched its status.
    let tuples: BTreeSet<_> = env
        .cp
        .audit()
        .since(&audit_start)?
        .into_iter()
        .filter(|e| e.namespace == env.ns && e.name == "never")
        .map(|e| e.tuple())
        .collect();
    for (verb, res) in [
        ("create", "pods"),
        ("create", "pods/binding"),
        ("patch", "pods/status"),
    ] {
        let t = (
            "kres-test-admin".to_string(),
            verb.to_string(),
            res.to_string(),
        );
        assert!(
            tuples.contains(&t),
            "{t:?} not in the audit log: {tuples:?}"
        );
    }

    let restarted = eventually(60, "dying restarted by its liveness probe", || async move {
        let p = pods.get("dying").await?;
        Ok(container(&p, "kresd")
            .filter(|c| c.restart_count >= 1)
            .cloned())
    })
    .await?;
    assert!(
        restarted
            .last_state
            .as_ref()
            .and_then(|s| s.terminated.as_ref())
            .is_some(),
        "{restarted:?}"
    );
    assert!(
        env.node
            .agent
            .journal()
            .find(&env.journal_pod("dying"), "kresd", Step::LivenessFailed)
            .is_some()
    );

    // A crash (restartPolicy Never): FallbackToLogsOnError puts kresd's error in the
    // termination message; the default policy (File, no file) leaves it empty.
    let crash: Pod = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "crash" },
        "spec": {
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": "fallback",
                    "image": "docker.io/cznic/knot-resolver:5",
                    "args": ["-c", "/etc/knot-resolver/kresd.conf"],
                    "terminationMessagePolicy": "FallbackToLogsOnError",
                    "volumeMounts": [{ "name": "config", "mountPath": "/etc/knot-resolver" }],
                },
                {
                    "name": "file",
                    "image": "docker.io/cznic/knot-resolver:5",
                    "args": ["-c", "/etc/knot-resolver/kresd.conf"],
                    "volumeMounts": [{ "name": "config", "mountPath": "/etc/knot-resolver" }],
                },
            ],
            "volumes": [{ "name": "config", "configMap": { "name": "crash" } }],
        },
    }))?;
    Api::<ConfigMap>::namespaced(env.client.clone(), &env.ns)
        .create(
            &PostParams::default(),
            &config_map("crash", "error('kres-test deliberate crash')\n")?,
        )
        .await?;
    pods.create(&PostParams::default(), &crash).await?;
    let failed = eventually(60, "pod crash Failed", || async move {
        let p = pods.get("crash").await?;
        Ok((p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Failed")).then_some(p))
    })
    .await?;
    let term = |name: &str| {
        container(&failed, name)
            .and_then(|c| c.state.as_ref())
            .and_then(|s| s.terminated.clone())
            .ok_or_else(|| anyhow::anyhow!("{name} not terminated: {failed:?}"))
    };
    let fallback = term("fallback")?;
    assert_ne!(fallback.exit_code, 0);
    let msg = fallback.message.unwrap_or_default();
    assert!(
        msg.contains("error while loading config") && msg.contains("kres-test deliberate crash"),
        "termination message: {msg:?}"
    );
    assert_eq!(term("file")?.message, None);
    env.node.agent.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn termination_runs_a_sleep_pre_stop_hook_then_sigterm_then_sigkill_after_the_grace_period()
-> R {
    let env = Env::new("grace").await?;
    // A container that ignores SIGTERM (its `sleep` children die, the loop goes on).
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "stubborn" },
        "spec": {
            "terminationGracePeriodSeconds": 3,
            "containers": [{
                "name": "loop",
                "image": "docker.io/library/busybox:1",
                "command": ["sh", "-c", "trap '' TERM; while :; do sleep 0.1; done"],
                "lifecycle": { "preStop": { "sleep": { "seconds": 1 } } },
            }],
        },
    }))?;
    let pods = &env.pods();
    pods.create(&PostParams::default(), &pod).await?;
    env.ready_pod("stubborn").await?;
    pods.delete("stubborn", &DeleteParams::default()).await?;
    eventually(30, "pod stubborn removed", || async move {
        Ok(pods.get_opt("stubborn").await?.is_none().then_some(()))
    })
    .await?;
    let journal = env.node.agent.journal();
    let jp = env.journal_pod("stubborn");
    let steps: Vec<(Step, SystemTime)> = journal
        .entries()
        .into_iter()
        .filter(|e| e.pod == jp && e.container == "loop")
        .map(|e| (e.step, e.at))
        .collect();
    let order: Vec<Step> = steps.iter().map(|(s, _)| *s).collect();
    assert_eq!(
        order,
        vec![
            Step::Started,
            Step::Ready,
            Step::NotReady,
            Step::PreStop,
            Step::PreStopDone,
            Step::Sigterm,
            Step::Sigkill,
            Step::Exited(137),
        ],
        "{steps:?}"
    );
    let at = |s: Step| steps.iter().find(|(x, _)| *x == s).map(|(_, t)| *t);
    let (not_ready, sigterm, sigkill) = (
        at(Step::NotReady).unwrap_or(SystemTime::UNIX_EPOCH),
        at(Step::Sigterm).unwrap_or(SystemTime::UNIX_EPOCH),
        at(Step::Sigkill).unwrap_or(SystemTime::UNIX_EPOCH),
    );
    println!(
        "NotReady at 0: SIGTERM {}, SIGKILL {} (grace period 3 s incl. a 1 s preStop sleep)",
        since(not_ready, sigterm),
        since(not_ready, sigkill)
    );
    env.node.agent.shutdown().await?;
    Ok(())
}

/// statfs(2) f_type of a path (TMPFS_MAGIC = 0x01021994).
fn fs_type(p: &Path) -> anyhow::Result<i64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(p.as_os_str().as_bytes())?;
    // SAFETY: statfs on a NUL-terminated path into a zeroed struct we own.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    anyhow::ensure!(
        r == 0,
        "statfs {}: {}",
        p.display(),
        std::io::Error::last_os_error()
    );
    Ok(st.f_type as i64)
}

#[tokio::test]
async fn a_kresd_with_a_cache_gc_sidecar_keeps_pvc_data_across_pod_recreation() -> R {
    let env = Env::new("pvc").await?;
    // kresd appends its pod uid to a file on the claim and serves the number of lines.
    let conf = "net.listen(os.getenv('POD_IP'), 53, { kind = 'dns' })\n\
                cache.open(10 * MB, 'lmdb://' .. os.getenv('CACHE_DIR'))\n\
                local boots = os.getenv('DATA_DIR') .. '/boots'\n\
                local f = assert(io.open(boots, 'a'))\n\
                f:write(os.getenv('POD_UID') .. '\\n')\n\
                f:close()\n\
                local n = 0\n\
                for _ in io.lines(boots) do n = n + 1 end\n\
                modules.load('hints > iterate')\n\
                hints['boots.kres-test.'] = '192.0.2.' .. n\n";
    env.create_config(conf).await?;
    let data = env.ctl.path().join("pv");
    std::fs::create_dir(&data)?;
    let pv: PersistentVolume = serde_json::from_value(serde_json::json!({
        "metadata": { "name": format!("{}-data", env.ns) },
        "spec": {
            "capacity": { "storage": "1Gi" },
            "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": "kres-test-manual",
            "hostPath": { "path": data.display().to_string(), "type": "Directory" },
        },
    }))?;
    Api::<PersistentVolume>::all(env.client.clone())
        .create(&PostParams::default(), &pv)
        .await?;
    let pvc: PersistentVolumeClaim = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "data" },
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": "kres-test-manual",
            "resources": { "requests": { "storage": "100Mi" } },
        },
    }))?;
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(env.client.clone(), &env.ns);
    pvcs.create(&PostParams::default(), &pvc).await?;

    let mut env_vars = pod_env();
    if let Some(a) = env_vars.as_array_mut() {
        a.push(serde_json::json!({ "name": "DATA_DIR", "value": "/data" }));
        a.push(serde_json::json!({ "name": "CACHE_DIR", "value": "/cache" }));
    }
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "stateful" },
        "spec": {
            "shareProcessNamespace": true,
            "terminationGracePeriodSeconds": 5,
            "containers": [
                {
                    "name": "kresd",
                    "image": "docker.io/cznic/knot-resolver:5",
                    "args": ["-c", "/etc/knot-resolver/kresd.conf"],
                    "env": env_vars,
                    "volumeMounts": [
                        { "name": "config", "mountPath": "/etc/knot-resolver" },
                        { "name": "data", "mountPath": "/data" },
                        { "name": "cache", "mountPath": "/cache" },
                    ],
                },
                {
                    "name": "cache-gc",
                    "image": "docker.io/cznic/knot-resolver:5",
                    "command": ["kres-cache-gc", "-c", "/cache", "-d", "1000"],
                    "volumeMounts": [{ "name": "cache", "mountPath": "/cache" }],
                },
            ],
            "volumes": [
                { "name": "config", "configMap": { "name": "kresd" } },
                { "name": "data", "persistentVolumeClaim": { "claimName": "data" } },
                { "name": "cache", "emptyDir": { "medium": "Memory" } },
            ],
        },
    }))?;

    let pods = &env.pods();
    let mut uids = Vec::new();
    for round in 1..=2 {
        pods.create(&PostParams::default(), &pod).await?;
        // Both containers run and are ready (kresd after READY=1, the sidecar once running).
        let p = eventually(
            60,
            "pod stateful Ready with both containers",
            || async move {
                let p = pods.get("stateful").await?;
                let both = ["kresd", "cache-gc"]
                    .iter()
                    .all(|c| container(&p, c).is_some_and(|s| s.ready));
                Ok((pod_ready(&p) && both).then_some(p))
            },
        )
        .await?;
        let uid = p.metadata.uid.clone().unwrap_or_default();
        let ip = pod_ip(&p)?;
        let answers = tokio::task::spawn_blocking(move || {
            dns::resolve(
                format!("{ip}:53").parse()?,
                "boots.kres-test.",
                RecordType::A,
            )
        })
        .await??;
        assert_eq!(
            answers,
            vec![format!("192.0.2.{round}")],
            "pod {round} sees the lines of every earlier pod on the claim"
        );
        // The Memory emptyDir is a tmpfs holding kresd's cache, shared with the sidecar.
        let cache = kres_tests::node_agent::spec::memory_dir(&uid).join("cache");
        assert!(cache.join("data.mdb").exists(), "{}", cache.display());
        assert_eq!(fs_type(&cache)?, 0x0102_1994, "tmpfs");
        uids.push(uid.clone());

        pods.delete("stateful", &DeleteParams::default()).await?;
        eventually(30, "pod stateful removed", || async move {
            Ok(pods.get_opt("stateful").await?.is_none().then_some(()))
        })
        .await?;
        let gone = kres_tests::node_agent::spec::memory_dir(&uid);
        eventually(10, "the Memory emptyDir removed with its pod", || {
            let gone = gone.clone();
            async move { Ok((!gone.exists()).then_some(())) }
        })
        .await?;
    }
    assert_eq!(
        std::fs::read_to_string(data.join("boots"))?,
        format!("{}\n{}\n", uids[0], uids[1])
    );
    let bound = pvcs.get("data").await?;
    assert_eq!(
        bound.spec.and_then(|s| s.volume_name),
        Some(format!("{}-data", env.ns)),
        "bound by the controller-manager's persistentvolume-binder"
    );
    env.node.agent.shutdown().await?;
    Ok(())
}

/// Processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    dir.filter_map(|e| {
        let e = e.ok()?;
        e.file_name().to_str()?.parse::<u32>().ok()?;
        let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        cmd.contains(needle).then_some(cmd)
    })
    .collect()
}

/// PIDs of processes in the network namespace with inode `ino`.
fn processes_in_netns(ino: u64) -> Vec<u32> {
    use std::os::unix::fs::MetadataExt;
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    dir.filter_map(|e| {
        let e = e.ok()?;
        let pid = e.file_name().to_str()?.parse::<u32>().ok()?;
        let m = std::fs::metadata(e.path().join("ns/net")).ok()?;
        (m.ino() == ino).then_some(pid)
    })
    .collect()
}

/// `nft list tables` in the host's network namespace (the one this binary started in).
fn host_nft_tables() -> anyhow::Result<String> {
    let mut cmd = std::process::Command::new("nft");
    cmd.args(["list", "tables"]);
    let out = netns::output_in_original_namespace(cmd)?;
    anyhow::ensure!(
        out.status.success(),
        "nft list tables: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

#[tokio::test]
async fn an_aborting_test_binary_leaves_no_namespace_process_or_nftables_rule_behind() -> R {
    const CHILD: &str = "KRES_K8S_NETNS_ABORT_CHILD";
    if std::env::var_os(CHILD).is_some() {
        // Child mode: control plane + kube-proxy with a Service programmed, then die uncleanly.
        let cp = ControlPlane::shared().await?;
        let ns = cp.namespace("abort").await?;
        let client = cp.admin_client().await?;
        let svc: Service = serde_json::from_value(serde_json::json!({
            "metadata": { "name": "x" },
            "spec": { "ports": [{ "port": 53, "protocol": "UDP" }] },
        }))?;
        let svc = Api::<Service>::namespaced(client, &ns)
            .create(&PostParams::default(), &svc)
            .await?;
        let ip = svc.spec.and_then(|s| s.cluster_ip).unwrap_or_default();
        let ip = &ip;
        eventually(30, "kube-proxy rules for the Service", || async move {
            let out = tokio::process::Command::new("nft")
                .args(["list", "table", "ip", "kube-proxy"])
                .output()
                .await?;
            Ok(String::from_utf8_lossy(&out.stdout)
                .contains(ip.as_str())
                .then_some(()))
        })
        .await?;
        println!("NETNS={}", netns::current_inode()?);
        println!("CPDIR={}", cp.dir().display());
        std::process::abort();
    }
    assert!(
        !host_nft_tables()?.contains("kube-proxy"),
        "the host's namespace already has kube-proxy tables: {}",
        host_nft_tables()?
    );
    let out = tokio::process::Command::new(std::env::current_exe()?)
        .args([
            "--exact",
            "an_aborting_test_binary_leaves_no_namespace_process_or_nftables_rule_behind",
            "--nocapture",
        ])
        .env(CHILD, "1")
        .output()
        .await?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "the child must abort");
    let field = |k: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .map(str::to_string)
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "child did not report {k}: {stdout} {}",
                    String::from_utf8_lossy(&out.stderr)
                )
            })
    };
    let ino: u64 = field("NETNS=")?.parse()?;
    let dir = field("CPDIR=")?;
    assert_ne!(
        ino,
        netns::current_inode()?,
        "the child had a namespace of its own"
    );
    let (dir_ref, started) = (&dir, Instant::now());
    eventually(20, "no process of the aborted test binary", || async move {
        Ok(
            (processes_mentioning(dir_ref).is_empty() && processes_in_netns(ino).is_empty())
                .then_some(()),
        )
    })
    .await?;
    println!("children gone {:?} after the abort", started.elapsed());
    // Nothing names the namespace, so the kernel freed it (with its nftables rules).
    for e in std::fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .flatten()
    {
        use std::os::unix::fs::MetadataExt;
        assert_ne!(
            std::fs::metadata(e.path()).map(|m| m.ino()).ok(),
            Some(ino),
            "{} names the aborted namespace",
            e.path().display()
        );
    }
    let host = host_nft_tables()?;
    assert!(!host.contains("kube-proxy"), "host nftables: {host}");
    // abort() skips the atexit hook: the directory is left, remove it here.
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
