//! One pod's lifecycle: volumes, every container, probes, restarts with back-off, status
//! reports (patched only when they change), graceful termination.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;
use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus, HostIP, LifecycleHandler, Pod, PodCondition, PodIP,
    PodStatus, Probe,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::{Api, Client};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{Error, Journal, NodeAgentConfig, Step, ip, spec};
use crate::process::{self, ChildGuard};

/// Shared by the agent and every pod runner.
pub(crate) struct Ctx {
    pub client: Client,
    pub config: NodeAgentConfig,
    pub journal: Journal,
}

/// How often a runner looks at its processes, notify sockets and probes.
const TICK: Duration = Duration::from_millis(50);

fn now() -> Time {
    Time(Timestamp::now())
}

fn waiting(reason: &str, message: Option<String>) -> ContainerState {
    ContainerState {
        waiting: Some(ContainerStateWaiting {
            reason: Some(reason.into()),
            message,
        }),
        ..Default::default()
    }
}

fn exit_code(st: &ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    st.code().unwrap_or_else(|| 128 + st.signal().unwrap_or(0))
}

/// The newest pod object (the watch guard must not live across an await).
fn latest(rx: &watch::Receiver<Pod>) -> Pod {
    rx.borrow().clone()
}

fn deleting(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
}

/// Runs until the pod is deleted (or the agent stops: dropping this future kills its processes).
pub(crate) async fn run(ctx: Arc<Ctx>, mut rx: watch::Receiver<Pod>) {
    let pod = latest(&rx);
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let Some(pod_ip) = ip::allocate() else {
        tracing::error!("node agent: no free pod IP for {ns}/{name}");
        return;
    };
    let uid_short: String = uid.chars().take(8).collect();
    let pod_dir = ctx.config.root_dir.join(format!("{ns}_{name}_{uid_short}"));
    // Also when the agent stops and this future is dropped mid-lifecycle.
    let _files = PodFiles(vec![pod_dir.clone(), spec::memory_dir(&uid)]);
    let containers = pod
        .spec
        .as_ref()
        .map(|s| s.containers.clone())
        .unwrap_or_default();
    let uid13: String = uid.chars().take(13).collect();
    let conts = containers
        .into_iter()
        .enumerate()
        .map(|(i, c)| Cont::new(c, &ctx.config.root_dir, &uid13, i, &pod_dir))
        .collect();
    let start_time = now();
    let mut runner = Runner {
        api: Api::namespaced(ctx.client.clone(), &ns),
        ctx: ctx.clone(),
        full_name: format!("{ns}/{name}"),
        name,
        uid: uid.clone(),
        pod_ip,
        pod_dir,
        conts,
        phase: "Pending",
        ready_since: start_time.clone(),
        start_time,
        last_patch: None,
        restart_policy: pod
            .spec
            .as_ref()
            .and_then(|s| s.restart_policy.clone())
            .unwrap_or_else(|| "Always".into()),
        grace_seconds: pod
            .spec
            .as_ref()
            .and_then(|s| s.termination_grace_period_seconds),
    };
    if let Err(e) = runner.lifecycle(&mut rx).await {
        tracing::warn!("node agent: pod {}: {e}", runner.full_name);
    }
    for c in &mut runner.conts {
        c.kill();
        let _ = std::fs::remove_file(&c.notify_path);
    }
    ip::release(pod_ip);
}

/// A pod's directories on the node, removed when dropped.
struct PodFiles(Vec<std::path::PathBuf>);

impl Drop for PodFiles {
    fn drop(&mut self) {
        for dir in &self.0 {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// A probe with the kubelet's period / threshold semantics.
struct Prober {
    probe: Probe,
    successes: i32,
    failures: i32,
    /// Readiness starts failed, liveness starts succeeded.
    ok: bool,
    next: Option<Instant>,
    inflight: Option<JoinHandle<bool>>,
}

impl Prober {
    fn new(probe: Probe, initially_ok: bool) -> Prober {
        Prober {
            probe,
            successes: 0,
            failures: 0,
            ok: initially_ok,
            next: None,
            inflight: None,
        }
    }

    fn period(&self) -> Duration {
        Duration::from_secs(self.probe.period_seconds.unwrap_or(10).max(1) as u64)
    }

    fn timeout(&self) -> Duration {
        Duration::from_secs(self.probe.timeout_seconds.unwrap_or(1).max(1) as u64)
    }

    /// Collect a finished probe and start the next one when due; returns the current verdict.
    fn poll(
        &mut self,
        started: Instant,
        launch: &spec::Launch,
        pod_ip: Ipv4Addr,
        c: &Container,
        kresd: &Path,
    ) -> bool {
        if let Some(h) = self.inflight.as_mut()
            && h.is_finished()
        {
            let passed = h.now_or_never().and_then(Result::ok).unwrap_or(false);
            self.inflight = None;
            if passed {
                self.successes += 1;
                self.failures = 0;
                if self.successes >= self.probe.success_threshold.unwrap_or(1).max(1) {
                    self.ok = true;
                }
            } else {
                self.failures += 1;
                self.successes = 0;
                if self.failures >= self.probe.failure_threshold.unwrap_or(3).max(1) {
                    self.ok = false;
                }
            }
        }
        let now = Instant::now();
        let first = started
            + Duration::from_secs(self.probe.initial_delay_seconds.unwrap_or(0).max(0) as u64);
        let due = self.next.unwrap_or(first);
        if self.inflight.is_none() && now >= due {
            self.next = Some(now + self.period());
            self.inflight = Some(tokio::spawn(run_probe(
                self.probe.clone(),
                self.timeout(),
                launch.clone(),
                pod_ip,
                c.clone(),
                kresd.to_path_buf(),
            )));
        }
        self.ok
    }

    fn reset(&mut self, initially_ok: bool) {
        if let Some(h) = self.inflight.take() {
            h.abort();
        }
        *self = Prober::new(self.probe.clone(), initially_ok);
    }
}

/// One probe: exec (exit 0 within the timeout), tcpSocket (connect within the timeout) or
/// httpGet (a 2xx/3xx status within the timeout).
async fn run_probe(
    probe: Probe,
    timeout: Duration,
    launch: spec::Launch,
    pod_ip: Ipv4Addr,
    c: Container,
    kresd: PathBuf,
) -> bool {
    if let Some(cmd) = probe.exec.as_ref().and_then(|e| e.command.as_deref()) {
        return match launch.exec(cmd, &kresd) {
            Ok(cmd) => run_bounded(cmd, timeout).await == Some(0),
            Err(e) => {
                tracing::warn!("node agent: exec probe of {}: {e}", c.name);
                false
            }
        };
    }
    if let Some(t) = &probe.tcp_socket {
        let Some(port) = port_of(&t.port, &c, "tcpSocket") else {
            return false;
        };
        return matches!(
            tokio::time::timeout(timeout, tokio::net::TcpStream::connect((pod_ip, port))).await,
            Ok(Ok(_))
        );
    }
    if let Some(h) = &probe.http_get {
        let Some(port) = port_of(&h.port, &c, "httpGet") else {
            return false;
        };
        let host = h.host.clone().unwrap_or_else(|| pod_ip.to_string());
        let path = h.path.clone().unwrap_or_else(|| "/".into());
        return matches!(
            tokio::time::timeout(timeout, http_status(&host, port, &path)).await,
            Ok(Ok(code)) if (200..400).contains(&code)
        );
    }
    tracing::warn!(
        "node agent: probe of {}: only exec, tcpSocket and httpGet are supported",
        c.name
    );
    false
}

/// The status code of `GET http://host:port/path` (the kubelet's httpGet probe: 200-399 pass).
async fn http_status(host: &str, port: u16, path: &str) -> std::io::Result<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect((host, port)).await?;
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: kube-probe/test-node-agent\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await?;
    let mut head = Vec::new();
    let mut buf = [0u8; 512];
    while !head.contains(&b'\n') && head.len() < 4096 {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    line.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP response: {line:?}")))
}

/// A `kind` probe's port: a number or the name of one of the container's ports (a warning
/// when it is neither).
fn port_of(p: &IntOrString, c: &Container, kind: &str) -> Option<u16> {
    let port = match p {
        IntOrString::Int(n) => u16::try_from(*n).ok(),
        IntOrString::String(name) => c
            .ports
            .iter()
            .flatten()
            .find(|cp| cp.name.as_deref() == Some(name.as_str()))
            .and_then(|cp| u16::try_from(cp.container_port).ok()),
    };
    if port.is_none() {
        tracing::warn!("node agent: {kind} probe of {}: unknown port {p:?}", c.name);
    }
    port
}

/// Run `cmd` (stdout/stderr discarded) for at most `timeout`; its exit code, None on timeout.
async fn run_bounded(mut cmd: std::process::Command, timeout: Duration) -> Option<i32> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = match process::spawn(cmd) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!("node agent: exec: {e}");
            return Some(127);
        }
    };
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(Some(st)) = child.try_wait() {
            return Some(exit_code(&st));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None // dropping the guard kills the process group
}

/// One container of the pod.
struct Cont {
    spec: Container,
    launch: Option<spec::Launch>,
    child: Option<ChildGuard>,
    notify: Option<std::os::unix::net::UnixDatagram>,
    notify_path: PathBuf,
    log_path: PathBuf,
    started_at: Option<Time>,
    started: Option<Instant>,
    state: ContainerState,
    last_state: Option<ContainerState>,
    restart_count: i32,
    ready: bool,
    notified_ready: bool,
    readiness: Option<Prober>,
    liveness: Option<Prober>,
    backoff: Option<Duration>,
    restart_at: Option<Instant>,
    /// Terminated for good (restartPolicy says no).
    done: bool,
}

impl Cont {
    fn new(spec: Container, root: &Path, uid13: &str, i: usize, pod_dir: &Path) -> Cont {
        Cont {
            readiness: spec.readiness_probe.clone().map(|p| Prober::new(p, false)),
            liveness: spec.liveness_probe.clone().map(|p| Prober::new(p, true)),
            // Short path: unix socket paths are limited to 108 bytes, pod directory names are not.
            notify_path: root.join(format!("{uid13}-{i}.notify")),
            log_path: pod_dir.join("logs").join(format!("{}.log", spec.name)),
            spec,
            launch: None,
            child: None,
            notify: None,
            started_at: None,
            started: None,
            state: waiting("ContainerCreating", None),
            last_state: None,
            restart_count: 0,
            ready: false,
            notified_ready: false,
            backoff: None,
            restart_at: None,
            done: false,
        }
    }

    fn running(&self) -> bool {
        self.child.is_some()
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
        }
    }

    /// The terminated state for an exit, with the FallbackToLogsOnError message.
    fn terminated(&self, code: i32) -> ContainerState {
        let message = (code != 0
            && self.spec.termination_message_policy.as_deref() == Some("FallbackToLogsOnError"))
        .then(|| log_tail(&self.log_path))
        .flatten();
        ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: code,
                reason: Some(if code == 0 { "Completed" } else { "Error" }.into()),
                message,
                started_at: self.started_at.clone(),
                finished_at: Some(now()),
                container_id: self.container_id(),
                signal: None,
            }),
            ..Default::default()
        }
    }

    fn container_id(&self) -> Option<String> {
        self.child
            .as_ref()
            .map(|c| format!("kres-test-node-agent://{}", c.pid()))
            .or_else(|| {
                self.state
                    .terminated
                    .as_ref()
                    .and_then(|t| t.container_id.clone())
            })
    }
}

/// The kubelet's FallbackToLogsOnError: the log's last 80 lines, at most 2048 bytes.
fn log_tail(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let lines: Vec<&str> = text.lines().collect();
    let mut tail = lines[lines.len().saturating_sub(80)..].join("\n");
    if tail.len() > 2048 {
        let mut cut = tail.len() - 2048;
        while !tail.is_char_boundary(cut) {
            cut += 1;
        }
        tail = tail[cut..].to_string();
    }
    let tail = tail.trim().to_string();
    (!tail.is_empty()).then_some(tail)
}

struct Runner {
    api: Api<Pod>,
    ctx: Arc<Ctx>,
    full_name: String,
    name: String,
    uid: String,
    pod_ip: Ipv4Addr,
    pod_dir: PathBuf,
    conts: Vec<Cont>,
    phase: &'static str,
    start_time: Time,
    ready_since: Time,
    last_patch: Option<serde_json::Value>,
    /// spec.restartPolicy (immutable).
    restart_policy: String,
    /// spec.terminationGracePeriodSeconds (immutable).
    grace_seconds: Option<i64>,
}

impl Runner {
    fn journal(&self, container: &str, step: Step) {
        self.ctx.journal.record(&self.full_name, container, step);
    }

    async fn lifecycle(&mut self, rx: &mut watch::Receiver<Pod>) -> Result<(), Error> {
        self.patch_status().await;
        // Volumes and invocations; retried while something is missing.
        loop {
            let pod = latest(rx);
            if deleting(&pod) {
                return self.finish(&pod).await;
            }
            match self.prepare(&pod).await {
                Ok(()) => break,
                Err(e) => {
                    let reason = match e {
                        Error::NotYet(_) => "ContainerCreating",
                        _ => "CreateContainerConfigError",
                    };
                    for c in &mut self.conts {
                        c.state = waiting(reason, Some(e.to_string()));
                    }
                    self.patch_status().await;
                    if self.sleep_or_deleted(rx, Duration::from_millis(500)).await {
                        return self.finish(&latest(rx)).await;
                    }
                }
            }
        }
        for i in 0..self.conts.len() {
            self.start(i);
        }
        loop {
            self.patch_status().await;
            if !self.conts.is_empty() && self.conts.iter().all(|c| c.done) {
                let failed = self.conts.iter().any(|c| {
                    c.state
                        .terminated
                        .as_ref()
                        .is_some_and(|t| t.exit_code != 0)
                });
                self.phase = if failed { "Failed" } else { "Succeeded" };
                self.patch_status().await;
                while !deleting(&latest(rx)) {
                    if rx.changed().await.is_err() {
                        return Ok(());
                    }
                }
                return self.finish(&latest(rx)).await;
            }
            tokio::select! {
                _ = tokio::time::sleep(TICK) => self.tick().await,
                changed = rx.changed() => {
                    if changed.is_err() {
                        // Removed without grace (force deletion): stop at once.
                        for c in &mut self.conts { c.kill(); }
                        return Ok(());
                    }
                    let pod = latest(rx);
                    if deleting(&pod) {
                        self.terminate(&pod, rx).await;
                        return self.finish(&latest(rx)).await;
                    }
                }
            }
        }
    }

    async fn prepare(&mut self, pod: &Pod) -> Result<(), Error> {
        let cfg = &self.ctx.config;
        let volumes = spec::volumes(&self.ctx.client, pod, &self.pod_dir).await?;
        for c in &mut self.conts {
            c.launch = Some(
                spec::prepare(
                    &self.ctx.client,
                    pod,
                    &c.spec,
                    &volumes,
                    &self.pod_dir,
                    self.pod_ip,
                    &cfg.host_ip,
                    &cfg.kresd,
                    &cfg.executables,
                )
                .await?,
            );
        }
        let logs = self.pod_dir.join("logs");
        std::fs::create_dir_all(&logs)
            .map_err(|e| Error::Io(format!("create {}", logs.display()), e))
    }

    /// Start container `i` (its launch is prepared).
    fn start(&mut self, i: usize) {
        let name = self.name.clone();
        let c = &mut self.conts[i];
        let Some(launch) = c.launch.clone() else {
            return;
        };
        let spawned = (|| -> Result<ChildGuard, String> {
            let _ = std::fs::remove_file(&c.notify_path);
            let notify = std::os::unix::net::UnixDatagram::bind(&c.notify_path)
                .map_err(|e| format!("bind {}: {e}", c.notify_path.display()))?;
            notify
                .set_nonblocking(true)
                .map_err(|e| format!("notify socket: {e}"))?;
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&c.log_path)
                .map_err(|e| format!("open {}: {e}", c.log_path.display()))?;
            let log2 = log.try_clone().map_err(|e| format!("dup log: {e}"))?;
            let mut cmd = std::process::Command::new(&launch.program);
            cmd.args(&launch.args)
                .current_dir(&launch.cwd)
                .env_clear()
                .env("PATH", spec::HOST_PATH)
                .env("HOSTNAME", &name)
                .envs(launch.env.iter().map(|(k, v)| (k, v)))
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(log2);
            if launch.is_kresd {
                cmd.env("NOTIFY_SOCKET", &c.notify_path);
            }
            if let Some(dir) = &launch.service_account {
                spec::mount_service_account(&mut cmd, dir)
                    .map_err(|e| format!("service account mount: {e}"))?;
            }
            let child = process::spawn(cmd)
                .map_err(|e| format!("exec {}: {e}", launch.program.display()))?;
            c.notify = Some(notify);
            Ok(child)
        })();
        match spawned {
            Ok(child) => {
                c.child = Some(child);
                c.started = Some(Instant::now());
                c.started_at = Some(now());
                c.notified_ready = false;
                c.state = ContainerState {
                    running: Some(ContainerStateRunning {
                        started_at: c.started_at.clone(),
                    }),
                    ..Default::default()
                };
                if let Some(p) = c.readiness.as_mut() {
                    p.reset(false);
                }
                if let Some(p) = c.liveness.as_mut() {
                    p.reset(true);
                }
                let cname = c.spec.name.clone();
                self.journal(&cname, Step::Started);
            }
            Err(message) => {
                // Like a shell that cannot exec: exit code 127, then the restart policy.
                c.state = waiting("RunContainerError", Some(message));
                self.exited(i, 127);
            }
        }
    }

    /// Container `i` exited with `code`: record it, schedule a restart or mark it done.
    fn exited(&mut self, i: usize, code: i32) {
        let cfg = self.ctx.config.clone();
        let policy = self.restart_policy.clone();
        let c = &mut self.conts[i];
        let ran = c.started.map(|s| s.elapsed()).unwrap_or_default();
        let terminated = c.terminated(code);
        c.child = None;
        c.notify = None;
        c.ready = false;
        let restart = policy == "Always" || (policy == "OnFailure" && code != 0);
        let cname = c.spec.name.clone();
        if !restart {
            c.state = terminated;
            c.done = true;
        } else {
            let backoff = match c.backoff {
                Some(b) if ran <= cfg.backoff_max * 2 => (b * 2).min(cfg.backoff_max),
                _ => cfg.backoff_initial,
            };
            c.backoff = Some(backoff);
            c.last_state = Some(terminated);
            c.state = waiting(
                "CrashLoopBackOff",
                Some(format!(
                    "back-off {}s restarting failed container",
                    backoff.as_secs_f32()
                )),
            );
            c.restart_at = Some(Instant::now() + backoff);
        }
        self.journal(&cname, Step::Exited(code));
    }

    /// Look at processes, notify sockets and probes; restart what is due.
    async fn tick(&mut self) {
        let kresd = self.ctx.config.kresd.clone();
        for i in 0..self.conts.len() {
            let exited = match self.conts[i].child.as_mut().map(|ch| ch.try_wait()) {
                Some(Ok(Some(st))) => Some(exit_code(&st)),
                _ => None,
            };
            if let Some(code) = exited {
                let was_ready = self.conts[i].ready;
                self.exited(i, code);
                if was_ready {
                    let n = self.conts[i].spec.name.clone();
                    self.journal(&n, Step::NotReady);
                }
                continue;
            }
            if let Some(at) = self.conts[i].restart_at
                && Instant::now() >= at
            {
                self.conts[i].restart_at = None;
                self.conts[i].restart_count += 1;
                self.start(i);
                continue;
            }
            let pod_ip = self.pod_ip;
            let c = &mut self.conts[i];
            if !c.running() {
                continue;
            }
            let mut buf = [0u8; 4096];
            while let Some(Ok(n)) = c.notify.as_ref().map(|s| s.recv(&mut buf)) {
                if String::from_utf8_lossy(&buf[..n])
                    .lines()
                    .any(|l| l == "READY=1")
                {
                    c.notified_ready = true;
                }
            }
            let (Some(started), Some(launch)) = (c.started, c.launch.clone()) else {
                continue;
            };
            let ready = match c.readiness.as_mut() {
                Some(p) => p.poll(started, &launch, pod_ip, &c.spec, &kresd),
                None => !launch.is_kresd || c.notified_ready,
            };
            let alive = match c.liveness.as_mut() {
                Some(p) => p.poll(started, &launch, pod_ip, &c.spec, &kresd),
                None => true,
            };
            let name = c.spec.name.clone();
            if ready != c.ready {
                c.ready = ready;
                self.journal(&name, if ready { Step::Ready } else { Step::NotReady });
            }
            if !alive {
                self.journal(&name, Step::LivenessFailed);
                let grace = self.grace(None);
                if let Some(child) = self.conts[i].child.as_mut() {
                    stop(child, grace).await;
                }
            }
        }
    }

    /// The pod's termination grace period (the deletion's, else the spec's, else 30 s).
    fn grace(&self, pod: Option<&Pod>) -> Duration {
        let secs = pod
            .and_then(|p| p.metadata.deletion_grace_period_seconds)
            .or(self.grace_seconds)
            .unwrap_or(30)
            .max(0);
        Duration::from_secs(secs as u64)
    }

    /// Graceful termination as the kubelet does it: NotReady first, then the preStop hooks,
    /// then SIGTERM, then SIGKILL when the grace period (which includes the hooks) is over.
    async fn terminate(&mut self, pod: &Pod, rx: &mut watch::Receiver<Pod>) {
        let deadline = Instant::now() + self.grace(Some(pod));
        for i in 0..self.conts.len() {
            if self.conts[i].ready {
                self.conts[i].ready = false;
                let n = self.conts[i].spec.name.clone();
                self.journal(&n, Step::NotReady);
            }
            self.conts[i].restart_at = None;
        }
        self.patch_status().await;

        let kresd = self.ctx.config.kresd.clone();
        let mut hooks = Vec::new();
        for c in &self.conts {
            let (Some(hook), Some(launch), true) = (
                c.spec.lifecycle.as_ref().and_then(|l| l.pre_stop.clone()),
                c.launch.clone(),
                c.running(),
            ) else {
                continue;
            };
            let name = c.spec.name.clone();
            self.journal(&name, Step::PreStop);
            let journal = self.ctx.journal.clone();
            let full = self.full_name.clone();
            let kresd = kresd.clone();
            hooks.push(async move {
                run_hook(&hook, &launch, &kresd, deadline).await;
                journal.record(&full, &name, Step::PreStopDone);
            });
        }
        futures::future::join_all(hooks).await;

        for c in &self.conts {
            if let Some(child) = &c.child {
                self.journal(&c.spec.name, Step::Sigterm);
                child.signal(libc::SIGTERM);
            }
        }
        loop {
            let mut all_exited = true;
            for i in 0..self.conts.len() {
                let st = match self.conts[i].child.as_mut().map(|ch| ch.try_wait()) {
                    Some(Ok(Some(st))) => Some(exit_code(&st)),
                    Some(_) => {
                        all_exited = false;
                        None
                    }
                    None => None,
                };
                if let Some(code) = st {
                    let c = &mut self.conts[i];
                    c.state = c.terminated(code);
                    c.child = None;
                    c.done = true;
                    let n = c.spec.name.clone();
                    self.journal(&n, Step::Exited(code));
                }
            }
            if all_exited {
                break;
            }
            if Instant::now() >= deadline || rx.has_changed().is_err() {
                for i in 0..self.conts.len() {
                    if self.conts[i].running() {
                        let n = self.conts[i].spec.name.clone();
                        self.journal(&n, Step::Sigkill);
                        let c = &mut self.conts[i];
                        let state = c.terminated(137);
                        c.kill();
                        c.state = state;
                        c.done = true;
                        self.journal(&n, Step::Exited(137));
                    }
                }
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.patch_status().await;
    }

    /// Sleep, or return true early when the pod is being deleted.
    async fn sleep_or_deleted(&self, rx: &mut watch::Receiver<Pod>, d: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + d;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => return false,
                changed = rx.changed() => {
                    if changed.is_err() || deleting(&latest(rx)) {
                        return true;
                    }
                }
            }
        }
    }

    /// The pod is being deleted and nothing runs any more: remove it for good (grace 0).
    async fn finish(&mut self, pod: &Pod) -> Result<(), Error> {
        if !deleting(pod) {
            return Ok(());
        }
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(self.uid.clone()),
                resource_version: None,
            }),
            ..Default::default()
        };
        match self.api.delete(&self.name, &dp).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
            Err(e) => Err(Error::Api(format!("delete pod {}", self.name), e)),
        }
    }

    /// Patch the pod status if it differs from the last one sent (no writes in steady state).
    async fn patch_status(&mut self) {
        let cfg = &self.ctx.config;
        let all_started = self.conts.iter().all(|c| c.started.is_some());
        if self.phase == "Pending" && all_started {
            self.phase = "Running";
        }
        let ready = !self.conts.is_empty() && self.conts.iter().all(|c| c.ready);
        let was_ready = self
            .last_patch
            .as_ref()
            .and_then(|v| v.pointer("/status/conditions"))
            .and_then(|cs| cs.as_array())
            .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
            .is_some_and(|c| c["status"] == "True");
        if ready != was_ready {
            self.ready_since = now();
        }
        let cond = |type_: &str, ok: bool, since: &Time| PodCondition {
            type_: type_.into(),
            status: if ok { "True" } else { "False" }.into(),
            last_transition_time: Some(since.clone()),
            ..Default::default()
        };
        let statuses: Vec<ContainerStatus> = self
            .conts
            .iter()
            .map(|c| ContainerStatus {
                name: c.spec.name.clone(),
                image: c.spec.image.clone().unwrap_or_default(),
                image_id: String::new(),
                ready: c.ready,
                restart_count: c.restart_count,
                started: Some(c.running()),
                state: Some(c.state.clone()),
                last_state: c.last_state.clone(),
                container_id: c.container_id(),
                ..Default::default()
            })
            .collect();
        let status = PodStatus {
            phase: Some(self.phase.into()),
            host_ip: Some(cfg.host_ip.clone()),
            host_ips: Some(vec![HostIP {
                ip: cfg.host_ip.clone(),
            }]),
            pod_ip: Some(self.pod_ip.to_string()),
            pod_ips: Some(vec![PodIP {
                ip: self.pod_ip.to_string(),
            }]),
            start_time: Some(self.start_time.clone()),
            conditions: Some(vec![
                cond("PodScheduled", true, &self.start_time),
                cond("PodReadyToStartContainers", true, &self.start_time),
                cond("Initialized", true, &self.start_time),
                cond("ContainersReady", ready, &self.ready_since),
                cond("Ready", ready, &self.ready_since),
            ]),
            container_statuses: Some(statuses),
            ..Default::default()
        };
        let patch = serde_json::json!({ "status": status });
        if self.last_patch.as_ref() == Some(&patch) {
            return;
        }
        match self
            .api
            .patch_status(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => self.last_patch = Some(patch),
            // Already gone: the runner ends via the watch channel.
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            // Transient API trouble must not kill the pod: the next tick reports again.
            Err(e) => tracing::warn!("node agent: patch status of pod {}: {e}", self.name),
        }
    }
}

/// Run a preStop hook (exec or sleep), bounded by the termination deadline.
async fn run_hook(hook: &LifecycleHandler, launch: &spec::Launch, kresd: &Path, deadline: Instant) {
    let left = deadline.saturating_duration_since(Instant::now());
    if let Some(cmd) = hook.exec.as_ref().and_then(|e| e.command.as_deref()) {
        match launch.exec(cmd, kresd) {
            Ok(cmd) => {
                run_bounded(cmd, left).await;
            }
            Err(e) => tracing::warn!("node agent: preStop: {e}"),
        }
    } else if let Some(s) = &hook.sleep {
        tokio::time::sleep(Duration::from_secs(s.seconds.max(0) as u64).min(left)).await;
    } else {
        tracing::warn!("node agent: preStop: only exec and sleep hooks are supported");
    }
}

/// SIGTERM, wait up to `grace`, SIGKILL.
async fn stop(child: &mut ChildGuard, grace: Duration) {
    child.signal(libc::SIGTERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    child.signal(libc::SIGKILL);
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A server answering every connection with `status_line` once.
    async fn server(status_line: &'static str) -> u16 {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(format!("{status_line}\r\nContent-Length: 0\r\n\r\n").as_bytes())
                    .await;
            }
        });
        port
    }

    #[tokio::test]
    async fn http_probes_read_the_status_code() {
        let ok = server("HTTP/1.1 200 OK").await;
        let unavailable = server("HTTP/1.1 503 Service Unavailable").await;
        assert_eq!(http_status("127.0.0.1", ok, "/readyz").await.unwrap(), 200);
        assert_eq!(
            http_status("127.0.0.1", unavailable, "/readyz")
                .await
                .unwrap(),
            503
        );
        let garbage = server("SSH-2.0-OpenSSH").await;
        assert!(http_status("127.0.0.1", garbage, "/").await.is_err());
    }
}
