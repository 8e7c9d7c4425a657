//! Run the real `kres-operator host` (which starts the real supervisord and kresd) for a test.
//!
//! Each [`Host`] has its own temp dir (config, rundir, cache) and its own loopback address; the
//! operator's probe endpoints use a second address of its own. On drop everything started is
//! stopped: the operator (SIGTERM), then supervisord and any process left in the rundir.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use kres_operator::backend::supervisord::rpc::{ProcessInfo, Supervisor};
use serde_json::Value;
use tempfile::TempDir;

use crate::net::{free_port, unique_loopback};

/// Path of the `kres-operator` binary next to the test executable (built by `cargo test
/// --workspace`, or built here on demand).
pub fn operator_binary() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().and_then(Path::parent).context("target dir")?;
    let bin = dir.join("kres-operator");
    if !bin.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let st = Command::new(cargo)
            .args(["build", "-p", "kres-operator", "--bin", "kres-operator"])
            .status()?;
        if !st.success() || !bin.exists() {
            bail!(
                "kres-operator binary missing at {} and could not be built",
                bin.display()
            );
        }
    }
    Ok(bin)
}

/// What the file source logs when it has finished one re-read (`operator/src/source/file.rs`).
pub const RELOAD_OUTCOMES: [&str; 3] = [
    "configuration changed",
    "configuration re-read; unchanged",
    "configuration rejected",
];

/// The operator log's re-read outcome lines, oldest first.
fn reload_outcomes(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| l.contains("source::file") && RELOAD_OUTCOMES.iter().any(|o| l.contains(o)))
        .collect()
}

/// A running `kres-operator host`.
pub struct Host {
    child: Option<Child>,
    dir: TempDir,
    /// The service address (the config's `network.listen`).
    pub listen: SocketAddr,
    /// The probe address.
    pub probe_ip: Ipv4Addr,
    /// The config file.
    pub config: PathBuf,
    /// The rundir.
    pub rundir: PathBuf,
    runtime: tokio::runtime::Runtime,
}

impl Host {
    /// Write a config (`workers`, plus `extra` YAML appended at top level) and start the operator.
    pub fn start(workers: u32, extra: &str) -> Result<Host> {
        Host::start_with(workers, extra, &[])
    }

    /// [`Host::start`] with extra `host` arguments (e.g. `--start-timeout-ms`).
    pub fn start_with(workers: u32, extra: &str, args: &[&str]) -> Result<Host> {
        let mut host = Host::prepare(workers, extra, None)?;
        host.spawn_with(args)?;
        Ok(host)
    }

    /// Like [`Host::start`] but not started yet, listening on `port` (a free one when `None`)
    /// of its own loopback address.
    pub fn prepare(workers: u32, extra: &str, port: Option<u16>) -> Result<Host> {
        let ip = unique_loopback();
        let probe_ip = unique_loopback();
        let listen = SocketAddr::from((ip, port.unwrap_or_else(|| free_port(ip))));
        let dir = tempfile::Builder::new().prefix("kres-host-").tempdir()?;
        // Workers started by a root operator run as knot-resolver: they must reach the rundir
        // and the cache below this directory (tempfile makes it 0700).
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )?;
        let rundir = dir.path().join("run");
        let config = dir.path().join("config.yaml");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let host = Host {
            child: None,
            dir,
            listen,
            probe_ip,
            config,
            rundir,
            runtime,
        };
        host.write_config(workers, extra)?;
        Ok(host)
    }

    /// The config text for `workers` and `extra`.
    pub fn config_text(&self, workers: u32, extra: &str) -> String {
        format!(
            "rundir: {}\nmanagement:\n  unix-socket: {}\nworkers: {workers}\nnetwork:\n  listen:\n    - interface: {}@{}\n\
             cache:\n  storage: {}\n  size-max: 20M\n{extra}",
            self.rundir.display(),
            self.api_socket().display(),
            self.listen.ip(),
            self.listen.port(),
            self.cache_dir().display(),
        )
    }

    /// Replace the config file (the operator sees it on SIGHUP).
    pub fn write_config(&self, workers: u32, extra: &str) -> Result<()> {
        self.write_raw(&self.config_text(workers, extra))
    }

    /// Replace the config file with `text` as is.
    pub fn write_raw(&self, text: &str) -> Result<()> {
        let tmp = self.config.with_extension("tmp");
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, &self.config)?;
        Ok(())
    }

    /// Start the operator process (again).
    pub fn spawn(&mut self) -> Result<()> {
        self.spawn_with(&[])
    }

    /// Start the operator process (again) with extra `host` arguments.
    pub fn spawn_with(&mut self, extra: &[&str]) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("operator.log"))?;
        let child = Command::new(operator_binary()?)
            .args(["host", "--config"])
            .arg(&self.config)
            .args(["--probe-address", &self.probe_ip.to_string()])
            .args(extra)
            .env("RUST_LOG", "info,kres_operator=debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("spawn kres-operator")?;
        self.child = Some(child);
        Ok(())
    }

    /// The operator's PID.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Send a signal to the operator.
    pub fn signal(&self, sig: &str) -> Result<()> {
        let pid = self.pid().context("operator not running")?;
        kill(sig, pid)
    }

    /// Wait up to `timeout` for the operator to exit; its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<Option<i32>> {
        let deadline = Instant::now() + timeout;
        let mut child = self.child.take().context("operator not running")?;
        while Instant::now() < deadline {
            if let Some(st) = child.try_wait()? {
                return Ok(st.code());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child = Some(child);
        bail!("operator did not exit within {timeout:?}")
    }

    /// SIGKILL the operator and reap it.
    pub fn kill_operator(&mut self) -> Result<()> {
        if let Some(mut c) = self.child.take() {
            c.kill()?;
            c.wait()?;
        }
        Ok(())
    }

    /// The operator's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("operator.log")).unwrap_or_default()
    }

    /// How many re-reads of the config file the operator has finished (SIGHUP, `POST /reload`,
    /// `--watch`): the file source logs exactly one outcome line per re-read.
    pub fn reloads_processed(&self) -> usize {
        reload_outcomes(&self.log()).len()
    }

    /// SIGHUP the operator and wait (up to 10 s) until it has processed that re-read; returns
    /// the outcome line, so a "nothing changed" check afterwards is about a processed event.
    pub fn reload(&self) -> Result<String> {
        let before = self.reloads_processed();
        self.signal("HUP")?;
        self.wait_reloads(before + 1)
    }

    /// [`Host::reload`] that must publish nothing: no new `configuration accepted` line follows
    /// the re-read. Returns the re-read's outcome line.
    pub fn reload_publishing_nothing(&self) -> Result<String> {
        let accepted = || self.log().matches("configuration accepted").count();
        let before = accepted();
        let outcome = self.reload()?;
        anyhow::ensure!(
            accepted() == before,
            "the re-read ({outcome}) published a new desired state:\n{}",
            self.log()
        );
        Ok(outcome)
    }

    /// Wait (up to 10 s) until `n` re-reads were processed; the last outcome line.
    pub fn wait_reloads(&self, n: usize) -> Result<String> {
        let t0 = Instant::now();
        loop {
            let log = self.log();
            let outcomes = reload_outcomes(&log);
            if outcomes.len() >= n {
                return Ok(outcomes[n - 1].to_string());
            }
            if t0.elapsed() > Duration::from_secs(10) {
                bail!(
                    "re-read {n} not processed after {:?}; operator log:\n{log}",
                    t0.elapsed()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Remove the status file, so the next status read is one the (re)started operator wrote.
    pub fn forget_status(&self) -> Result<()> {
        match std::fs::remove_file(self.rundir.join("status.json")) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    /// The status snapshot the operator writes (`RUNDIR/status.json`).
    pub fn status(&self) -> Result<Value> {
        let text = std::fs::read_to_string(self.rundir.join("status.json"))?;
        Ok(serde_json::from_str(&text)?)
    }

    /// Wait until `ok(status)` holds; fails with the last status and the log tail.
    pub fn wait_status(
        &self,
        what: &str,
        timeout: Duration,
        ok: impl Fn(&Value) -> bool,
    ) -> Result<Value> {
        let deadline = Instant::now() + timeout;
        let mut last = Value::Null;
        while Instant::now() < deadline {
            if let Ok(s) = self.status() {
                if ok(&s) {
                    return Ok(s);
                }
                last = s;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        let log = self.log();
        let tail: Vec<&str> = log
            .lines()
            .rev()
            .take(30)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        bail!(
            "timeout waiting for {what}; last status:\n{last:#}\noperator log tail:\n{}",
            tail.join("\n")
        )
    }

    /// Wait until converged on a revision other than `not` (None: any); returns the status.
    pub fn wait_converged(&self, not: Option<&str>, timeout: Duration) -> Result<Value> {
        self.wait_status("convergence", timeout, |s| {
            s["converged"] == Value::Bool(true)
                && s["current-revision"]
                    .as_str()
                    .is_some_and(|r| Some(r) != not)
        })
    }

    /// Wait until a change was rejected (a failed revision) and the fleet settled again.
    pub fn wait_rejected(&self, timeout: Duration) -> Result<Value> {
        self.wait_status("rejection", timeout, |s| {
            s["failed-revisions"]
                .as_array()
                .is_some_and(|f| !f.is_empty())
                && s["converged"] == true
        })
    }

    /// The messages of the status's rollout events, oldest first.
    pub fn events(status: &Value) -> Vec<String> {
        status["events"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["message"].as_str().map(str::to_string))
            .collect()
    }

    /// supervisord's own view: program name -> process info.
    pub fn processes(&self) -> Result<BTreeMap<String, ProcessInfo>> {
        let rpc = Supervisor::new(&self.rundir.join("supervisord.sock"));
        let list = self.runtime.block_on(rpc.all_process_info())?;
        Ok(list.into_iter().map(|p| (p.name.clone(), p)).collect())
    }

    /// supervisord's PID.
    pub fn supervisord_pid(&self) -> Result<u32> {
        let rpc = Supervisor::new(&self.rundir.join("supervisord.sock"));
        Ok(self.runtime.block_on(rpc.pid())?)
    }

    /// Worker program -> PID, for RUNNING workers (`kresd0`, ..., `kresd-canary`).
    pub fn worker_pids(&self) -> Result<BTreeMap<String, u32>> {
        Ok(self
            .processes()?
            .into_iter()
            .filter(|(n, p)| n.starts_with("kresd") && p.state == "RUNNING")
            .map(|(n, p)| (n, p.pid))
            .collect())
    }

    /// The status's `current-revision`; an error (not an empty string) when it is missing, so a
    /// comparison between two revisions cannot pass by accident.
    pub fn current_revision(status: &Value) -> Result<String> {
        status["current-revision"]
            .as_str()
            .map(str::to_string)
            .with_context(|| format!("no current-revision in status: {status}"))
    }

    /// Revision of every worker as the status reports it.
    pub fn worker_revisions(status: &Value) -> Vec<String> {
        status["workers"]
            .as_array()
            .map(|w| {
                w.iter()
                    .filter_map(|w| w["revision"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The operator's HTTP API socket (`management.unix-socket`, in the rundir).
    pub fn api_socket(&self) -> PathBuf {
        self.rundir.join("kres-api.sock")
    }

    /// The cache directory (`cache.storage`).
    pub fn cache_dir(&self) -> PathBuf {
        self.dir.path().join("cache")
    }

    /// The temp dir (logs, config).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Restart the operator with the API on TCP (`management.interface` on a loopback address of
    /// its own) instead of the unix socket; it adopts the running workers. Returns the address.
    pub fn restart_with_tcp_api(&mut self) -> Result<SocketAddr> {
        let ip = unique_loopback();
        let addr = SocketAddr::from((ip, free_port(ip)));
        self.kill_operator()?;
        let text = std::fs::read_to_string(&self.config)?.replace(
            &format!("unix-socket: {}", self.api_socket().display()),
            &format!("interface: {ip}@{}", addr.port()),
        );
        if !text.contains("interface: 127.") {
            bail!("no management.unix-socket to replace in {text}");
        }
        self.write_raw(&text)?;
        let _ = std::fs::remove_file(self.api_socket());
        self.spawn()?;
        Ok(addr)
    }
}

fn kill(sig: &str, pid: u32) -> Result<()> {
    let st = Command::new("kill")
        .args(["-s", sig, &pid.to_string()])
        .status()?;
    if !st.success() {
        bail!("kill -s {sig} {pid} failed");
    }
    Ok(())
}

/// PIDs of processes whose environment names `rundir` (`KRES_RUNDIR=`).
fn processes_of(rundir: &Path) -> Vec<u32> {
    let needle = format!("KRES_RUNDIR={}", rundir.display());
    let mut pids = vec![];
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        if let Ok(env) = std::fs::read(e.path().join("environ"))
            && env.split(|b| *b == 0).any(|kv| kv == needle.as_bytes())
        {
            pids.push(pid);
        }
    }
    pids
}

impl Drop for Host {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = kill("TERM", c.id());
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        // After a SIGKILLed operator supervisord may still run: stop it and what it ran.
        let rpc = Supervisor::new(&self.rundir.join("supervisord.sock"));
        if let Ok(pid) = self.runtime.block_on(rpc.pid()) {
            let _ = self.runtime.block_on(rpc.shutdown());
            let deadline = Instant::now() + Duration::from_secs(20);
            while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        for pid in processes_of(&self.rundir) {
            let _ = kill("KILL", pid);
        }
    }
}
