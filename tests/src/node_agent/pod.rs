//! One pod's lifecycle: prepare, run kresd, report status, restart with back-off, honour deletion.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, HostIP, Pod, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::{Api, Client};
use tokio::net::UnixDatagram;
use tokio::sync::watch;

use super::{Error, NodeAgentConfig, ip, spec};
use crate::process::{self, ChildGuard};

/// Shared by the agent and every pod runner.
pub(crate) struct Ctx {
    pub client: Client,
    pub config: NodeAgentConfig,
}

/// What the runner reports in the pod status.
struct Report {
    phase: &'static str,
    state: ContainerState,
    last_state: Option<ContainerState>,
    restart_count: i32,
    ready: bool,
    started: bool,
    container_id: Option<String>,
    start_time: Time,
    ready_since: Time,
}

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

/// Runs until the pod is deleted (or the agent stops: dropping this future kills kresd).
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
    let mut runner = Runner {
        api: Api::namespaced(ctx.client.clone(), &ns),
        ctx: ctx.clone(),
        name: name.clone(),
        uid: uid.clone(),
        pod_ip,
        pod_dir,
        report: Report {
            phase: "Pending",
            state: waiting("ContainerCreating", None),
            last_state: None,
            restart_count: 0,
            ready: false,
            started: false,
            container_id: None,
            start_time: now(),
            ready_since: now(),
        },
    };
    if let Err(e) = runner.lifecycle(&mut rx).await {
        tracing::warn!("node agent: pod {ns}/{name}: {e}");
    }
    ip::release(pod_ip);
    let _ = std::fs::remove_dir_all(&runner.pod_dir);
    let uid13: String = uid.chars().take(13).collect();
    let _ = std::fs::remove_file(ctx.config.root_dir.join(format!("{uid13}.notify")));
}

struct Runner {
    api: Api<Pod>,
    ctx: Arc<Ctx>,
    name: String,
    uid: String,
    pod_ip: Ipv4Addr,
    pod_dir: PathBuf,
    report: Report,
}

enum Outcome {
    Exited(ExitStatus, Instant),
    Deleted,
}

impl Runner {
    async fn lifecycle(&mut self, rx: &mut watch::Receiver<Pod>) -> Result<(), Error> {
        let cfg = self.ctx.config.clone();
        let mut backoff = cfg.backoff_initial;
        self.patch_status(&latest(rx)).await?;
        loop {
            let pod = latest(rx);
            if deleting(&pod) {
                return self.finish(&pod).await;
            }
            let launch = match spec::prepare(
                &self.ctx.client,
                &pod,
                &self.pod_dir,
                self.pod_ip,
                &cfg.host_ip,
            )
            .await
            {
                Ok(l) => l,
                Err(e) => {
                    self.report.state = waiting("CreateContainerConfigError", Some(e.to_string()));
                    self.patch_status(&pod).await?;
                    if self.sleep_or_deleted(rx, Duration::from_secs(1)).await {
                        return self.finish(&latest(rx)).await;
                    }
                    continue;
                }
            };
            match self.run_once(rx, &pod, launch).await? {
                Outcome::Deleted => return self.finish(&latest(rx)).await,
                Outcome::Exited(status, started) => {
                    let code = exit_code(&status);
                    let pod = latest(rx);
                    let policy = pod
                        .spec
                        .as_ref()
                        .and_then(|s| s.restart_policy.clone())
                        .unwrap_or_else(|| "Always".into());
                    let restart = policy == "Always" || (policy == "OnFailure" && code != 0);
                    let ran = started.elapsed();
                    if ran > cfg.backoff_max * 2 {
                        backoff = cfg.backoff_initial;
                    }
                    if !restart {
                        self.report.phase = if code == 0 { "Succeeded" } else { "Failed" };
                        self.patch_status(&pod).await?;
                        while !deleting(&latest(rx)) {
                            if rx.changed().await.is_err() {
                                return Ok(());
                            }
                        }
                        return self.finish(&latest(rx)).await;
                    }
                    let terminated = self.report.state.clone();
                    self.report.last_state = Some(terminated);
                    self.report.state = waiting(
                        "CrashLoopBackOff",
                        Some(format!(
                            "back-off {}s restarting failed container",
                            backoff.as_secs_f32()
                        )),
                    );
                    self.patch_status(&pod).await?;
                    if self.sleep_or_deleted(rx, backoff).await {
                        return self.finish(&latest(rx)).await;
                    }
                    backoff = (backoff * 2).min(cfg.backoff_max);
                    self.report.restart_count += 1;
                }
            }
        }
    }

    /// Start kresd and supervise it until it exits or the pod is deleted.
    async fn run_once(
        &mut self,
        rx: &mut watch::Receiver<Pod>,
        pod: &Pod,
        launch: spec::Launch,
    ) -> Result<Outcome, Error> {
        // Short path: unix socket paths are limited to 108 bytes, pod directory names are not.
        let uid_short: String = self.uid.chars().take(13).collect();
        let notify_path = self.ctx.config.root_dir.join(format!("{uid_short}.notify"));
        let _ = std::fs::remove_file(&notify_path);
        let notify = UnixDatagram::bind(&notify_path)
            .map_err(|e| Error::Io(format!("bind {}", notify_path.display()), e))?;
        let log_path = self.pod_dir.join("container.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| Error::Io(format!("open {}", log_path.display()), e))?;
        let log2 = log
            .try_clone()
            .map_err(|e| Error::Io("dup log".into(), e))?;
        let mut cmd = Command::new(&self.ctx.config.kresd);
        cmd.args(&launch.args)
            .current_dir(&launch.cwd)
            .env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .env("HOSTNAME", &self.name)
            .envs(launch.env.iter().map(|(k, v)| (k, v)))
            .env("NOTIFY_SOCKET", &notify_path)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2);
        let started = Instant::now();
        let mut child: ChildGuard = match process::spawn(cmd) {
            Ok(c) => c,
            Err(e) => {
                self.report.state = waiting(
                    "RunContainerError",
                    Some(format!("exec {}: {e}", self.ctx.config.kresd.display())),
                );
                self.patch_status(pod).await?;
                // Like a shell that cannot exec: exit code 127.
                return Ok(Outcome::Exited(
                    std::os::unix::process::ExitStatusExt::from_raw(127 << 8),
                    started,
                ));
            }
        };
        let started_at = now();
        self.report.phase = "Running";
        self.report.started = true;
        self.report.container_id = Some(format!("kres-test-node-agent://{}", child.pid()));
        self.report.state = ContainerState {
            running: Some(ContainerStateRunning {
                started_at: Some(started_at.clone()),
            }),
            ..Default::default()
        };
        self.patch_status(pod).await?;
        let mut buf = [0u8; 4096];
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(50)) => {
                    if let Ok(Some(status)) = child.try_wait() {
                        let code = exit_code(&status);
                        self.report.ready = false;
                        self.report.state = ContainerState {
                            terminated: Some(ContainerStateTerminated {
                                exit_code: code,
                                reason: Some(if code == 0 { "Completed" } else { "Error" }.into()),
                                message: last_line(&log_path),
                                started_at: Some(started_at.clone()),
                                finished_at: Some(now()),
                                container_id: self.report.container_id.clone(),
                                signal: None,
                            }),
                            ..Default::default()
                        };
                        return Ok(Outcome::Exited(status, started));
                    }
                }
                r = notify.recv(&mut buf) => {
                    if let Ok(n) = r
                        && String::from_utf8_lossy(&buf[..n]).lines().any(|l| l == "READY=1")
                        && !self.report.ready
                    {
                        self.report.ready = true;
                        self.report.ready_since = now();
                        self.patch_status(&latest(rx)).await?;
                    }
                }
                changed = rx.changed() => {
                    let gone = changed.is_err();
                    let pod = latest(rx);
                    if gone || deleting(&pod) {
                        let grace = if gone { 0 } else { pod.metadata.deletion_grace_period_seconds.unwrap_or(30).max(0) as u64 };
                        stop(&mut child, Duration::from_secs(grace)).await;
                        return Ok(Outcome::Deleted);
                    }
                }
            }
        }
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

    async fn patch_status(&mut self, pod: &Pod) -> Result<(), Error> {
        let r = &self.report;
        let cfg = &self.ctx.config;
        let t = now();
        let cond = |type_: &str, ok: bool, since: &Time| PodCondition {
            type_: type_.into(),
            status: if ok { "True" } else { "False" }.into(),
            last_transition_time: Some(since.clone()),
            ..Default::default()
        };
        let spec = pod.spec.as_ref();
        let mut statuses = Vec::new();
        for (i, c) in spec
            .map(|s| s.containers.as_slice())
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            statuses.push(if i == 0 {
                ContainerStatus {
                    name: c.name.clone(),
                    image: c.image.clone().unwrap_or_default(),
                    image_id: String::new(),
                    ready: r.ready,
                    restart_count: r.restart_count,
                    started: Some(r.started && r.state.running.is_some()),
                    state: Some(r.state.clone()),
                    last_state: r.last_state.clone(),
                    container_id: r.container_id.clone(),
                    ..Default::default()
                }
            } else {
                ContainerStatus {
                    name: c.name.clone(),
                    image: c.image.clone().unwrap_or_default(),
                    state: Some(waiting(
                        "NotSupportedByTestNodeAgent",
                        Some("only the first container runs".into()),
                    )),
                    ..Default::default()
                }
            });
        }
        let status = PodStatus {
            phase: Some(r.phase.into()),
            host_ip: Some(cfg.host_ip.clone()),
            host_ips: Some(vec![HostIP {
                ip: cfg.host_ip.clone(),
            }]),
            pod_ip: Some(self.pod_ip.to_string()),
            pod_ips: Some(vec![PodIP {
                ip: self.pod_ip.to_string(),
            }]),
            start_time: Some(r.start_time.clone()),
            qos_class: Some("BestEffort".into()),
            conditions: Some(vec![
                cond("PodScheduled", true, &r.start_time),
                cond("PodReadyToStartContainers", true, &r.start_time),
                cond("Initialized", true, &r.start_time),
                cond(
                    "ContainersReady",
                    r.ready,
                    if r.ready { &r.ready_since } else { &t },
                ),
                cond("Ready", r.ready, if r.ready { &r.ready_since } else { &t }),
            ]),
            container_statuses: Some(statuses),
            ..Default::default()
        };
        let patch = serde_json::json!({ "status": status });
        match self
            .api
            .patch_status(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => Ok(()),
            // Already gone: the runner ends via the watch channel.
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            // Transient API trouble must not kill the pod: the next change reports again.
            Err(e) => {
                tracing::warn!("node agent: patch status of pod {}: {e}", self.name);
                Ok(())
            }
        }
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
    let _ = child.kill();
}

/// Last non-empty line of the container log (the kubelet's FallbackToLogsOnError message).
fn last_line(path: &std::path::Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(|l| l.to_string())
}
