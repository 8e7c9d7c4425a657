//! The host backend: kresd workers as supervisord programs, driven over XML-RPC.
//!
//! - supervisord runs from `RUNDIR/supervisord.conf` with its socket and pidfile in the rundir;
//!   the operator starts it when none answers (after clearing away orphans of a dead one) and
//!   adopts it when one does. supervisord daemonizes into its own session, so signals aimed at
//!   the operator (SIGHUP, Ctrl-C) never reach kresd, and workers outlive the operator.
//! - One program (and group) per slot: `kresd<i>` and `kresd-canary`, plus `cache-gc` and, with
//!   shared sockets, the holder `sockets`. Programs are added/removed with `reloadConfig` +
//!   `addProcessGroup` / `removeProcessGroup`.
//! - A worker's revision and private probe endpoint are in its command line
//!   (`-c RUNDIR/revisions/<rev>/kresd.conf`, `-a IP@PORT`). `stage` writes the program files of
//!   the surge slot and of every existing worker slot for the new revision and re-reads them
//!   with one `reloadConfig` per rollout; `start` then only adds the staged program. Since
//!   `getAllConfigInfo` then describes the staged command, not the process in the slot, `start`
//!   records what a worker was started on in `RUNDIR/workers/<program>.json` (atomic rename,
//!   before the program is added): `observe` reads revisions from there, so a restarted
//!   operator and exited workers keep theirs. A freshly started supervisord starts every
//!   program from its file, so the files are first put back to what the records say ran.
//! - Ready = `READY=1` from the worker's PID on the operator's `NOTIFY_SOCKET`, then a DNS probe
//!   answered on the worker's private endpoint. Workers that already ran when the operator
//!   adopted supervisord only need the probe. `NOTIFY_SOCKET` counts only messages from direct
//!   children of the supervisord in use (every worker is one: `launch` execs kresd in place).
//! - Least privilege: with a worker user (operator started as root) kresd and kres-cache-gc run
//!   as that user; supervisord and the socket holder stay root. The rundir is the operator's
//!   (0750, group: the workers'), `control/` the workers' (see [`crate::privilege`]).

pub mod conf;
pub mod rpc;
pub mod xmlrpc;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{Mutex, broadcast};
use tracing::Instrument;

use self::conf::{GC_PROGRAM, HOLDER_PROGRAM, Layout, Program, WorkerCommand};
use self::rpc::{ProcessInfo, ProgramConfig, RpcError, Snapshot, Supervisor};
use super::{Backend, BackendError, BackendResult};
use crate::kresd::control::remove_stale_sockets;
use crate::kresd::drain::{DrainOutcome, drain};
use crate::kresd::notify::{Notification, NotifyAccess, NotifyListener};
use crate::kresd::probe::{ProbeQuestion, probe};
use crate::privilege::{WorkerUser, operator_dir, worker_dir};
use crate::reconcile::{
    Desired, GcSpec, Observed, ObservedSlot, Revision, Slot, SlotState, WorkerRef,
};
use crate::sockets::{BindSpec, Proto, rebind};

/// How the supervisord backend runs things.
#[derive(Clone, Debug)]
pub struct SupervisordSettings {
    /// The rundir: supervisord's files, revisions, logs, kresd's working directory.
    pub rundir: PathBuf,
    /// The supervisord binary.
    pub supervisord: String,
    /// The kresd binary.
    pub kresd: String,
    /// The kres-cache-gc binary.
    pub cache_gc: String,
    /// Address for the workers' private probe endpoints (a free port each).
    pub probe_ip: IpAddr,
    /// argv prefix that wraps kresd (the shared-socket launcher); empty: kresd binds itself.
    pub launcher: Vec<String>,
    /// The `kres-operator` executable that runs the shared-socket holder (`socket-holder`
    /// subcommand), when sockets are shared.
    pub holder: Option<String>,
    /// How long one probe waits for its reply.
    pub probe_timeout: Duration,
    /// The user kresd and kres-cache-gc run as; `None`: as the operator.
    pub worker_user: Option<WorkerUser>,
    /// How long a worker being stopped may keep serving its open stream (TCP, DoT, DoH)
    /// connections after its stream listeners are closed (see [`crate::kresd::drain`]);
    /// zero: stopped at once.
    pub drain_timeout: Duration,
}

impl SupervisordSettings {
    /// Defaults for `rundir`: Debian's binaries from `PATH`, probes on 127.0.0.1.
    pub fn new(rundir: PathBuf) -> SupervisordSettings {
        SupervisordSettings {
            rundir,
            supervisord: "supervisord".into(),
            kresd: "kresd".into(),
            cache_gc: "kres-cache-gc".into(),
            probe_ip: IpAddr::from([127, 0, 0, 1]),
            launcher: vec![],
            holder: None,
            probe_timeout: Duration::from_millis(500),
            worker_user: None,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
        }
    }
}

/// Default of [`SupervisordSettings::drain_timeout`]: off. Measured with dnsperf over TCP
/// (docs/BENCHMARKS.md) draining lengthened rollouts by the bound per worker and lost more
/// queries, not fewer; it helps clients that pause between queries (see `host_drain`).
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::ZERO;

#[derive(Default)]
struct State {
    /// PIDs that passed READY + probe, with when (monotonic, unix ms).
    ready: HashMap<u32, (Duration, u64)>,
    /// When a (program, pid) was first seen not ready.
    first_seen: HashMap<(String, u32), Duration>,
    /// When a program was first seen exited.
    exited_seen: HashMap<String, Duration>,
    /// PIDs drained (stream listeners closed, connections finished or the bound passed).
    drained: HashSet<u32>,
    /// PIDs already running when this supervisord was adopted: they need only the probe.
    adopted: HashSet<u32>,
    /// The adopted set is computed at the next observation.
    adopt_pending: bool,
    /// PID of the supervisord in use.
    supervisord_pid: Option<u32>,
    /// The same, for the notify listener's sender filter (0: none yet).
    notify_parent: Arc<AtomicU32>,
    /// The endpoints the holder should hold (last `set_endpoints`).
    endpoints: Option<Vec<String>>,
    /// The endpoints the running holder is known to hold.
    held: Option<Vec<String>>,
}

/// Which call a kept [`Snapshot`] is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ViewFor {
    /// `ensure` read it: the `observe` that follows uses it.
    Observe,
    /// `observe` read it: the request that follows (start, drain, stop, ...) uses it for its
    /// lookups (the PID to stop, the staged command, the probe endpoint).
    Request,
}

/// A snapshot one call read and the next call of a reconcile step reuses, so a step costs
/// one XML-RPC round trip of observation (see [`SupervisordBackend::view`]).
struct View {
    taken: Instant,
    snapshot: Snapshot,
    next: ViewFor,
}

/// How old a kept snapshot may be and still stand in for a fresh one. Reusing one is never
/// wrong (it is what the planner decided on), only a delay; the bound keeps the delay short
/// when a caller other than the executor (tests, the conformance suite) spaces its calls.
const VIEW_TTL: Duration = Duration::from_millis(250);

/// The supervisord backend.
pub struct SupervisordBackend {
    settings: SupervisordSettings,
    layout: Layout,
    rpc: Supervisor,
    notify: NotifyListener,
    events: Mutex<broadcast::Receiver<Notification>>,
    state: std::sync::Mutex<State>,
    /// The snapshot the previous call of this step read (see [`View`]).
    view: std::sync::Mutex<Option<View>>,
    epoch: Instant,
}

/// Parent PID of `pid` (`/proc/PID/stat` field 4), if it is alive.
fn parent_pid(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn op(e: RpcError) -> BackendError {
    BackendError::Transient(e.to_string())
}

/// Ignore the faults that mean "already in the wanted state".
fn tolerate(r: Result<(), RpcError>, faults: &[&str]) -> BackendResult<()> {
    match r {
        Err(e) if e.fault_name().is_some_and(|f| faults.contains(&f)) => Ok(()),
        r => r.map_err(op),
    }
}

impl SupervisordBackend {
    /// Prepare the rundir and bind the operator's NOTIFY_SOCKET. Needs a tokio runtime.
    pub fn new(settings: SupervisordSettings) -> BackendResult<SupervisordBackend> {
        let layout = Layout {
            rundir: settings.rundir.clone(),
        };
        // Workers read the rundir (their configs, the notify socket) through their group.
        let group = settings.worker_user.as_ref().map(|w| w.gid);
        let shared = if group.is_some() { 0o750 } else { 0o700 };
        for (what, dir, mode) in [
            ("rundir", layout.rundir.clone(), shared),
            ("programs dir", layout.programs_dir(), 0o700),
            ("logs dir", layout.logs_dir(), 0o700),
            ("revisions dir", layout.rundir.join("revisions"), shared),
            ("workers dir", layout.workers_dir(), 0o700),
        ] {
            let group = group.filter(|_| mode & 0o070 != 0);
            operator_dir(what, &dir, mode, group)
                .map_err(|e| BackendError::Transient(e.to_string()))?;
        }
        for (what, dir) in [
            ("kresd dir", layout.kresd_dir()),
            ("control dir", layout.control_dir()),
        ] {
            worker_dir(what, &dir, settings.worker_user.as_ref())
                .map_err(|e| BackendError::Transient(e.to_string()))?;
        }
        let notify_parent = Arc::new(AtomicU32::new(0));
        let known = notify_parent.clone();
        let pidfile = layout.supervisord_pidfile();
        let access = NotifyAccess {
            group,
            // A direct child of our supervisord: the one in use, or (while it is starting and
            // already spawning programs) the one its pidfile in our rundir names.
            accept: Box::new(move |pid| {
                let Some(parent) = parent_pid(pid).filter(|p| *p != 0) else {
                    return false;
                };
                parent == known.load(Ordering::Relaxed)
                    || std::fs::read_to_string(&pidfile)
                        .ok()
                        .and_then(|p| p.trim().parse::<u32>().ok())
                        == Some(parent)
            }),
        };
        let notify = NotifyListener::bind(layout.notify_socket(), access).map_err(|e| {
            BackendError::Transient(format!(
                "NOTIFY_SOCKET {}: {e}",
                layout.notify_socket().display()
            ))
        })?;
        let events = Mutex::new(notify.subscribe());
        Ok(SupervisordBackend {
            rpc: Supervisor::new(&layout.supervisord_socket()),
            settings,
            layout,
            notify,
            events,
            state: std::sync::Mutex::new(State {
                notify_parent,
                ..State::default()
            }),
            view: std::sync::Mutex::new(None),
            epoch: Instant::now(),
        })
    }

    /// The files' layout.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The XML-RPC client.
    pub fn rpc(&self) -> &Supervisor {
        &self.rpc
    }

    /// PID of the supervisord in use, once known.
    pub fn supervisord_pid(&self) -> Option<u32> {
        self.lock().supervisord_pid
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    /// The snapshot the previous call of this step kept for `next` (taken: one call uses it
    /// at most), if still fresh; else a fresh one (one round trip).
    async fn view(&self, next: ViewFor) -> BackendResult<(Instant, Snapshot)> {
        let kept = self
            .view
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .filter(|v| v.next == next && v.taken.elapsed() < VIEW_TTL);
        match kept {
            Some(v) => Ok((v.taken, v.snapshot)),
            None => {
                let taken = Instant::now();
                Ok((taken, self.rpc.snapshot().await.map_err(op)?))
            }
        }
    }

    /// Keep `snapshot` (read at `taken`) for the next call of this step.
    fn keep_view(&self, taken: Instant, snapshot: Snapshot, next: ViewFor) {
        *self.view.lock().unwrap_or_else(|p| p.into_inner()) = Some(View {
            taken,
            snapshot,
            next,
        });
    }

    /// Drop the kept snapshot (what it describes is about to change).
    fn forget_view(&self) {
        *self.view.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// The snapshot a request looks things up in: the one `observe` just read, or a fresh one.
    async fn request_view(&self) -> BackendResult<Snapshot> {
        Ok(self.view(ViewFor::Request).await?.1)
    }

    /// Start supervisord from our config, after clearing away processes left by a dead one.
    async fn start_supervisord(&self) -> BackendResult<()> {
        let orphans = find_processes_of(&self.layout.rundir);
        if !orphans.is_empty() {
            tracing::warn!(
                ?orphans,
                "supervisord is gone; stopping its orphaned programs"
            );
            terminate(&orphans, Duration::from_secs(3)).await;
        }
        for stale in [
            self.layout.supervisord_socket(),
            self.layout.supervisord_pidfile(),
        ] {
            let _ = std::fs::remove_file(stale);
        }
        self.restore_worker_programs()?;
        let conf = self.layout.supervisord_conf();
        write_file(&conf, &conf::supervisord_conf(&self.layout)?)?;
        tracing::info!(conf = %conf.display(), "starting supervisord");
        let out = tokio::process::Command::new(&self.settings.supervisord)
            .arg("-c")
            .arg(&conf)
            .env_remove("NOTIFY_SOCKET")
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .map_err(|e| BackendError::io(format!("run {}", self.settings.supervisord), e))?;
        if !out.status.success() {
            return Err(BackendError::Transient(format!(
                "supervisord exited with {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.rpc.pid().await {
                Ok(pid) => {
                    let mut st = self.lock();
                    st.supervisord_pid = Some(pid);
                    st.notify_parent.store(pid, Ordering::Relaxed);
                    st.adopted.clear();
                    st.adopt_pending = false;
                    tracing::info!(pid, "supervisord up");
                    return Ok(());
                }
                Err(e) if Instant::now() > deadline => {
                    return Err(BackendError::Transient(format!(
                        "supervisord did not come up: {e}"
                    )));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }

    /// Remove control sockets of workers that are gone (SIGKILL/crash leave them behind).
    async fn clean_control_sockets(&self) {
        let dir = self.layout.control_dir();
        if dir.exists()
            && let Err(e) = remove_stale_sockets(&dir, Duration::from_millis(200)).await
        {
            tracing::warn!(error = %e, "stale control sockets not cleaned");
        }
    }

    /// Stop and remove a program if it exists (in `infos`); its `.conf` goes too.
    async fn remove_program(&self, name: &str, infos: &[ProcessInfo]) -> BackendResult<()> {
        let pid = infos.iter().find(|p| p.name == name).map(|p| p.pid);
        if pid.is_some() {
            tolerate(
                self.rpc.stop_process(name).await,
                &["NOT_RUNNING", "BAD_NAME"],
            )?;
            tolerate(self.rpc.remove_process_group(name).await, &["BAD_NAME"])?;
        }
        for file in [
            self.layout.program_conf(name),
            self.layout.worker_record(name),
        ] {
            match std::fs::remove_file(&file) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(BackendError::io(format!("remove {}", file.display()), e));
                }
                _ => {}
            }
        }
        if let Some(pid) = pid.filter(|p| *p > 0) {
            self.notify.forget(pid);
            self.lock().ready.remove(&pid);
            // A clean exit removes it; a killed worker leaves it behind.
            let _ = std::fs::remove_file(self.layout.control_dir().join(pid.to_string()));
        }
        Ok(())
    }

    /// Drain a running worker: close its stream listeners and let its open connections
    /// finish, at most `drain_timeout` (only with shared sockets: the other workers keep the
    /// listeners; without a bound or streams nothing is done). Failures are logged; the worker
    /// counts as drained anyway. Returns the drained worker's PID, `None` when none runs.
    async fn drain_worker(&self, name: &str) -> BackendResult<Option<u32>> {
        let timeout = self.settings.drain_timeout;
        let running = self
            .request_view()
            .await?
            .infos
            .into_iter()
            .find(|p| p.name == name && p.state == "RUNNING" && p.pid > 0);
        let Some(p) = running else {
            return Ok(None);
        };
        let endpoints = self.lock().endpoints.clone().unwrap_or_default();
        let streams: Vec<SocketAddr> = endpoints
            .iter()
            .filter_map(|e| e.parse::<BindSpec>().ok())
            .filter(|s| s.proto == Proto::Tcp)
            .map(|s| s.addr)
            .collect();
        if timeout.is_zero() || self.settings.holder.is_none() || streams.is_empty() {
            return Ok(Some(p.pid));
        }
        let control = self.layout.control_dir().join(p.pid.to_string());
        let outcome = drain(&control, p.pid, &streams, timeout)
            .instrument(tracing::info_span!("drain", program = %name, pid = p.pid))
            .await;
        match outcome {
            Ok(DrainOutcome::Idle {
                connections,
                waited,
            }) => tracing::info!(
                program = %name,
                connections,
                waited_ms = waited.as_millis() as u64,
                "drained"
            ),
            Ok(DrainOutcome::TimedOut { connections, open }) => tracing::warn!(
                program = %name,
                connections,
                open,
                timeout_ms = timeout.as_millis() as u64,
                "drain timed out; open connections are cut"
            ),
            Err(e) => tracing::warn!(program = %name, error = %e, "not drained"),
        }
        Ok(Some(p.pid))
    }

    /// What the worker program `name` was started on: its record, else (a worker started
    /// before records existed, or by a freshly started supervisord from its file) the
    /// program's staged command, which is then recorded.
    fn worker_of(&self, name: &str, configs: &[ProgramConfig]) -> Option<WorkerCommand> {
        if let Some(w) = self.worker_record(name) {
            return Some(w);
        }
        let staged = configs.iter().find(|c| c.name == name)?;
        let w = conf::parse_worker_command(&staged.command)?;
        if let Err(e) = self.write_worker_record(name, &w) {
            tracing::warn!(program = %name, error = %e, "cannot record the worker's revision");
        }
        Some(w)
    }

    /// The record `start` wrote for the worker program `name`.
    fn worker_record(&self, name: &str) -> Option<WorkerCommand> {
        let path = self.layout.worker_record(name);
        let text = std::fs::read(&path).ok()?;
        match serde_json::from_slice(&text) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "unreadable worker record; ignored");
                None
            }
        }
    }

    /// Write the record atomically (temporary file + rename), without fsync: a record describes
    /// a running process, which does not outlive the machine either (an fsync cost 10 ms median,
    /// 24 ms at worst, per started worker on the busy development machine, docs/BENCHMARKS.md).
    fn write_worker_record(&self, name: &str, w: &WorkerCommand) -> BackendResult<()> {
        let path = self.layout.worker_record(name);
        let json = serde_json::to_string(w).map_err(|e| {
            BackendError::io(
                format!("encode {}", path.display()),
                std::io::Error::other(e),
            )
        })?;
        write_file(&path, &json)
    }

    /// Before a fresh supervisord starts every program from its file: put each recorded
    /// worker's file back to what it ran (a file may hold a staged revision), and drop records
    /// of programs without a file.
    fn restore_worker_programs(&self) -> BackendResult<()> {
        let Ok(entries) = std::fs::read_dir(self.layout.workers_dir()) else {
            return Ok(());
        };
        for e in entries.flatten() {
            let file = e.file_name();
            let Some(name) = file.to_str().and_then(|n| n.strip_suffix(".json")) else {
                continue;
            };
            let record = self.worker_record(name);
            let slot = conf::slot_of_program(name);
            match (slot, record) {
                (
                    Some(slot),
                    Some(WorkerCommand {
                        revision,
                        probe: Some(probe),
                    }),
                ) if self.layout.program_conf(name).exists() => {
                    let program = self.worker_program(slot, &revision, probe);
                    write_file(
                        &self.layout.program_conf(name),
                        &conf::program_conf(&self.layout, &program)?,
                    )?;
                }
                _ => {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        Ok(())
    }

    /// The revisions staged in `RUNDIR/revisions/`.
    fn staged_revisions(&self) -> BTreeSet<Revision> {
        let Ok(entries) = std::fs::read_dir(self.layout.rundir.join("revisions")) else {
            return BTreeSet::new();
        };
        entries
            .flatten()
            .filter(|e| e.path().join("kresd.conf").exists())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect()
    }

    /// Write a program's `.conf` and add it (it autostarts).
    async fn add_program(&self, program: &Program) -> BackendResult<()> {
        write_file(
            &self.layout.program_conf(&program.name),
            &conf::program_conf(&self.layout, program)?,
        )?;
        self.rpc.reload_config().await.map_err(op)?;
        tolerate(
            self.rpc.add_process_group(&program.name).await,
            &["ALREADY_ADDED"],
        )
    }

    /// The probe endpoint kept for program `name`: recorded, else in its staged command.
    fn probe_of(&self, name: &str, configs: &[ProgramConfig]) -> Option<SocketAddr> {
        self.worker_record(name).and_then(|w| w.probe).or_else(|| {
            let staged = configs.iter().find(|c| c.name == name)?;
            conf::parse_worker_command(&staged.command)?.probe
        })
    }

    /// Stage `desired.revision` for the surge slot and every existing worker slot below
    /// `desired.workers`: write their program files and re-read them with one `reloadConfig`,
    /// so that `start` only adds them. Processes keep running on what their records say.
    async fn stage_programs(&self, desired: &Desired) -> BackendResult<()> {
        let Snapshot { infos, configs, .. } = self.request_view().await?;
        let mut slots = vec![Slot::Surge];
        for p in &infos {
            let Some(slot) = conf::slot_of_program(&p.name) else {
                continue;
            };
            // Record what runs before its staged command changes.
            let _ = self.worker_of(&p.name, &configs);
            if let Slot::Worker(i) = slot
                && i < desired.workers
                && !slots.contains(&slot)
            {
                slots.push(slot);
            }
        }
        let mut taken = HashSet::new();
        let mut programs = vec![];
        for slot in slots {
            let probe = match self.probe_of(&conf::program_name(slot), &configs) {
                Some(p) => p,
                None => self.allocate_probe(&configs, &taken)?,
            };
            taken.insert(probe.port());
            programs.push(self.worker_program(slot, &desired.revision, probe));
        }
        for program in &programs {
            write_file(
                &self.layout.program_conf(&program.name),
                &conf::program_conf(&self.layout, program)?,
            )?;
        }
        self.rpc.reload_config().await.map_err(op)?;
        tracing::debug!(revision = %desired.revision, programs = programs.len(), "programs staged");
        Ok(())
    }

    fn worker_program(&self, slot: Slot, revision: &str, probe: SocketAddr) -> Program {
        let command = conf::worker_command(
            &self.layout,
            &self.settings.launcher,
            &self.settings.kresd,
            revision,
            probe,
        );
        Program {
            name: conf::program_name(slot),
            command,
            env: vec![
                ("SYSTEMD_INSTANCE".into(), slot.worker_id()),
                (
                    "NOTIFY_SOCKET".into(),
                    self.layout.notify_socket().display().to_string(),
                ),
                ("KRES_REVISION".into(), revision.to_string()),
                (
                    "KRES_RUNDIR".into(),
                    self.layout.rundir.display().to_string(),
                ),
            ],
            // The launcher drops to the worker user itself (after receiving the sockets).
            user: None,
            priority: 100,
            exitcodes: "0,1",
            startsecs: 0,
            startretries: 0,
        }
    }

    /// A free port on the probe address, not used by another slot's endpoint (staged in
    /// `configs`, recorded, or in `taken`).
    fn allocate_probe(
        &self,
        configs: &[ProgramConfig],
        taken: &HashSet<u16>,
    ) -> BackendResult<SocketAddr> {
        let mut used: HashSet<u16> = configs
            .iter()
            .filter_map(|c| {
                let staged = conf::parse_worker_command(&c.command)?.probe;
                let recorded = self.worker_record(&c.name).and_then(|w| w.probe);
                Some([staged, recorded].into_iter().flatten().map(|p| p.port()))
            })
            .flatten()
            .collect();
        used.extend(taken);
        for _ in 0..50 {
            let udp = UdpSocket::bind((self.settings.probe_ip, 0))
                .map_err(|e| BackendError::io(format!("bind {}", self.settings.probe_ip), e))?;
            let addr = udp
                .local_addr()
                .map_err(|e| BackendError::io("probe address".to_string(), e))?;
            if used.contains(&addr.port()) || TcpListener::bind(addr).is_err() {
                continue;
            }
            return Ok(addr);
        }
        Err(BackendError::Transient(format!(
            "no free port on {}",
            self.settings.probe_ip
        )))
    }

    fn holder_program(&self, exe: &str, endpoints: &[String]) -> Program {
        let mut command = vec![
            exe.to_string(),
            "socket-holder".into(),
            "--socket".into(),
            self.layout.holder_socket().display().to_string(),
        ];
        for e in endpoints {
            command.push("--bind".into());
            command.push(e.clone());
        }
        Program {
            name: HOLDER_PROGRAM.into(),
            command,
            env: vec![(
                "KRES_RUNDIR".into(),
                self.layout.rundir.display().to_string(),
            )],
            // Binds the listening sockets (port 53): stays root.
            user: None,
            priority: 10,
            exitcodes: "0",
            startsecs: 0,
            startretries: 3,
        }
    }

    /// Make sure the holder program runs (added with the current endpoints when absent or dead
    /// in `infos`). Returns whether it was (re)added.
    async fn ensure_holder(&self, infos: &[ProcessInfo]) -> BackendResult<bool> {
        let Some(exe) = self.settings.holder.clone() else {
            return Ok(false);
        };
        let Some(endpoints) = self.lock().endpoints.clone() else {
            return Ok(false);
        };
        let info = infos.iter().find(|p| p.name == HOLDER_PROGRAM);
        if info.is_some_and(|p| matches!(p.state.as_str(), "RUNNING" | "STARTING")) {
            return Ok(false);
        }
        if let Some(p) = &info {
            tracing::warn!(state = %p.state, "socket holder not running; starting it again");
        }
        self.remove_program(HOLDER_PROGRAM, infos).await?;
        let _ = std::fs::remove_file(self.layout.holder_socket());
        self.add_program(&self.holder_program(&exe, &endpoints))
            .await?;
        // Workers need the holder's socket: wait until it exists.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self.layout.holder_socket().exists() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.lock().held = Some(endpoints);
        Ok(true)
    }

    async fn slot_from(
        &self,
        p: &ProcessInfo,
        revision: Revision,
        probe_addr: Option<SocketAddr>,
        slot: Slot,
        now: Duration,
    ) -> ObservedSlot {
        let mut detail = None;
        let mut ready_since_unix_ms = None;
        let (state, since) = match p.state.as_str() {
            "RUNNING" => {
                let known = self.lock().ready.get(&p.pid).copied();
                if self.lock().drained.contains(&p.pid) {
                    (SlotState::Drained, now)
                } else if let Some((at, ms)) = known {
                    ready_since_unix_ms = Some(ms);
                    (SlotState::Ready, at)
                } else {
                    let notified = self.notify.state(p.pid).is_some_and(|s| s.ready);
                    let adopted = self.lock().adopted.contains(&p.pid);
                    let first = *self
                        .lock()
                        .first_seen
                        .entry((p.name.clone(), p.pid))
                        .or_insert(now);
                    if notified || adopted {
                        let result = match probe_addr {
                            Some(addr) => {
                                let q = ProbeQuestion {
                                    timeout: self.settings.probe_timeout,
                                    ..ProbeQuestion::default()
                                };
                                let t = Instant::now();
                                let r = probe(addr, &q).await.map(drop).map_err(|e| e.to_string());
                                tracing::debug!(
                                    pid = p.pid,
                                    took_us = t.elapsed().as_micros() as u64,
                                    ok = r.is_ok(),
                                    "probe"
                                );
                                r
                            }
                            None => Ok(()),
                        };
                        match result {
                            Ok(()) => {
                                let ms = unix_ms();
                                self.lock().ready.insert(p.pid, (now, ms));
                                ready_since_unix_ms = Some(ms);
                                (SlotState::Ready, now)
                            }
                            Err(e) => {
                                detail = Some(format!("READY=1 received but {e}"));
                                (SlotState::Starting, first)
                            }
                        }
                    } else {
                        detail = Some("no READY=1 yet".into());
                        (SlotState::Starting, first)
                    }
                }
            }
            "STOPPING" => (SlotState::Stopping, now),
            "STARTING" | "BACKOFF" => {
                if !p.spawn_error.is_empty() {
                    detail = Some(p.spawn_error.clone());
                }
                let first = *self
                    .lock()
                    .first_seen
                    .entry((p.name.clone(), p.pid))
                    .or_insert(now);
                (SlotState::Starting, first)
            }
            "EXITED" => {
                detail = Some(format!("exited with status {}", p.exit_status));
                let first = *self.lock().exited_seen.entry(p.name.clone()).or_insert(now);
                (SlotState::Exited, first)
            }
            "STOPPED" => (SlotState::Stopped, now),
            other => {
                detail = Some(format!("supervisord state {other}: {}", p.spawn_error));
                (SlotState::Failed, now)
            }
        };
        if state != SlotState::Exited {
            self.lock().exited_seen.remove(&p.name);
        }
        let pid = (p.pid > 0).then_some(p.pid);
        ObservedSlot {
            slot,
            revision,
            state,
            worker: pid.map(|pid| WorkerRef {
                name: p.name.clone(),
                address: probe_addr.map(|a| a.ip()),
                control: Some(
                    self.layout
                        .control_dir()
                        .join(pid.to_string())
                        .display()
                        .to_string(),
                ),
                pid: Some(pid),
            }),
            since,
            ready_since_unix_ms,
            detail,
        }
    }
}

impl Backend for SupervisordBackend {
    async fn ensure(&self) -> BackendResult<bool> {
        // A new step: what the previous one kept is not used.
        self.forget_view();
        let taken = Instant::now();
        let (started, snapshot) = match self.rpc.snapshot().await {
            Ok(snapshot) => {
                let pid = snapshot.pid;
                let adopted = {
                    let mut st = self.lock();
                    let new = st.supervisord_pid != Some(pid);
                    if new {
                        tracing::info!(pid, "adopting running supervisord");
                        st.supervisord_pid = Some(pid);
                        st.notify_parent.store(pid, Ordering::Relaxed);
                        st.adopt_pending = true;
                    }
                    new
                };
                if adopted {
                    self.clean_control_sockets().await;
                }
                (false, Some(snapshot))
            }
            Err(e) if e.is_unreachable() => {
                if self.lock().supervisord_pid.is_some() {
                    tracing::warn!(error = %e, "supervisord stopped answering; restarting it");
                }
                self.start_supervisord().await?;
                self.lock().held = None;
                self.clean_control_sockets().await;
                (true, None)
            }
            Err(e) => return Err(op(e)),
        };
        let (taken, snapshot) = match snapshot {
            Some(s) => (taken, s),
            // A new supervisord: nothing kept from the old one counts.
            None => (Instant::now(), self.rpc.snapshot().await.map_err(op)?),
        };
        if self.ensure_holder(&snapshot.infos).await? {
            // The snapshot misses the holder just added: the next observation reads anew.
            self.forget_view();
        } else {
            self.keep_view(taken, snapshot, ViewFor::Observe);
        }
        Ok(started)
    }

    async fn observe(&self) -> BackendResult<Observed> {
        let (taken, snapshot) = self.view(ViewFor::Observe).await?;
        let Snapshot { infos, configs, .. } = &snapshot;
        let now = self.now();
        {
            let mut st = self.lock();
            if st.adopt_pending {
                st.adopted = infos
                    .iter()
                    .filter(|p| p.state == "RUNNING" && conf::slot_of_program(&p.name).is_some())
                    .map(|p| p.pid)
                    .collect();
                st.adopt_pending = false;
                tracing::info!(workers = st.adopted.len(), "adopted running workers");
            }
        }
        let mut observed = Observed {
            now,
            slots: vec![],
            gc: None,
            endpoints: self.lock().held.clone(),
            staged: self.staged_revisions(),
        };
        for p in infos {
            let command = configs
                .iter()
                .find(|c| c.name == p.name)
                .map(|c| c.command.as_str());
            if p.name == GC_PROGRAM {
                let args = command.map(conf::split_command).unwrap_or_default();
                observed.gc = Some(GcSpec {
                    args: args.into_iter().skip(1).collect(),
                });
                continue;
            }
            let Some(slot) = conf::slot_of_program(&p.name) else {
                continue;
            };
            let Some(cmd) = self.worker_of(&p.name, configs) else {
                tracing::warn!(program = %p.name, "worker program without a revision in its command; ignored");
                continue;
            };
            let s = self.slot_from(p, cmd.revision, cmd.probe, slot, now).await;
            observed.slots.push(s);
        }
        // Forget what belongs to processes that are gone.
        let live: HashSet<u32> = infos.iter().map(|p| p.pid).filter(|p| *p > 0).collect();
        let mut st = self.lock();
        let gone: Vec<u32> = st
            .ready
            .keys()
            .filter(|p| !live.contains(p))
            .copied()
            .collect();
        for pid in gone {
            st.ready.remove(&pid);
            self.notify.forget(pid);
        }
        st.first_seen
            .retain(|(_, pid), _| *pid == 0 || live.contains(pid));
        st.adopted.retain(|pid| live.contains(pid));
        st.drained.retain(|pid| live.contains(pid));
        drop(st);
        self.keep_view(taken, snapshot, ViewFor::Request);
        Ok(observed)
    }

    async fn stage(&self, desired: &Desired) -> BackendResult<()> {
        let path = self.layout.revision_config(&desired.revision);
        if path.exists() {
            return Ok(());
        }
        let dir = self.layout.revision_dir(&desired.revision);
        std::fs::create_dir_all(&dir)
            .map_err(|e| BackendError::io(format!("create {}", dir.display()), e))?;
        write_file(&path, &desired.config)?;
        self.stage_programs(desired).await
    }

    async fn start(&self, slot: Slot, revision: &Revision) -> BackendResult<()> {
        let name = conf::program_name(slot);
        let Snapshot { infos, configs, .. } = self.request_view().await?;
        let staged = configs
            .iter()
            .find(|c| c.name == name)
            .map(|c| conf::split_command(&c.command));
        let probe = self.probe_of(&name, &configs);
        // An exited or stopped worker's program goes; its probe endpoint is kept.
        self.remove_program(&name, &infos).await?;
        let probe = match probe {
            Some(p) => p,
            None => self.allocate_probe(&configs, &HashSet::new())?,
        };
        self.lock().exited_seen.remove(&name);
        let program = self.worker_program(slot, revision, probe);
        self.write_worker_record(
            &name,
            &WorkerCommand {
                revision: revision.clone(),
                probe: Some(probe),
            },
        )?;
        if staged.as_ref() == Some(&program.command) {
            // Staged by `stage`: supervisord already has this program; keep its file.
            write_file(
                &self.layout.program_conf(&name),
                &conf::program_conf(&self.layout, &program)?,
            )?;
            return tolerate(self.rpc.add_process_group(&name).await, &["ALREADY_ADDED"]);
        }
        self.add_program(&program).await
    }

    async fn drain(&self, slot: Slot) -> BackendResult<()> {
        let name = conf::program_name(slot);
        if let Some(pid) = self.drain_worker(&name).await? {
            self.lock().drained.insert(pid);
        }
        Ok(())
    }

    async fn stop(&self, slot: Slot) -> BackendResult<()> {
        let infos = self.request_view().await?.infos;
        self.remove_program(&conf::program_name(slot), &infos).await
    }

    async fn collect_revisions(&self, keep: &BTreeSet<Revision>) -> BackendResult<()> {
        // Configs of removed groups stay in getAllConfigInfo until the next reloadConfig: only
        // programs that still exist count.
        let Snapshot { infos, configs, .. } = self.request_view().await?;
        let used: HashSet<Revision> = configs
            .iter()
            .filter(|c| infos.iter().any(|p| p.name == c.name))
            .filter(|c| conf::slot_of_program(&c.name).is_some())
            .flat_map(|c| {
                let staged = conf::parse_worker_command(&c.command).map(|w| w.revision);
                let ran = self.worker_of(&c.name, &configs).map(|w| w.revision);
                [staged, ran].into_iter().flatten()
            })
            .collect();
        for revision in self.staged_revisions() {
            if keep.contains(&revision) || used.contains(&revision) {
                continue;
            }
            let dir = self.layout.revision_dir(&revision);
            std::fs::remove_dir_all(&dir)
                .map_err(|e| BackendError::io(format!("remove {}", dir.display()), e))?;
            tracing::debug!(%revision, "staged revision removed");
        }
        Ok(())
    }

    async fn set_endpoints(&self, endpoints: &[String]) -> BackendResult<()> {
        let view = self.view.lock().unwrap_or_else(|p| p.into_inner()).take();
        let Some(exe) = self.settings.holder.clone() else {
            // Workers bind their own sockets: nothing to hold.
            let mut st = self.lock();
            st.endpoints = Some(endpoints.to_vec());
            st.held = Some(endpoints.to_vec());
            return Ok(());
        };
        let known = {
            let mut st = self.lock();
            st.endpoints = Some(endpoints.to_vec());
            st.held.clone()
        };
        if known.as_deref() == Some(endpoints) {
            return Ok(());
        }
        // Unknown (adopted holder): its command line says what it bound.
        let (held, infos) = match known {
            Some(h) => (Some(h), vec![]),
            None => {
                let snapshot = match view.filter(|v| v.taken.elapsed() < VIEW_TTL) {
                    Some(v) => v.snapshot,
                    None => self.rpc.snapshot().await.map_err(op)?,
                };
                let held = snapshot
                    .configs
                    .iter()
                    .find(|c| c.name == HOLDER_PROGRAM)
                    .map(|c| {
                        conf::split_command(&c.command)
                            .windows(2)
                            .filter(|w| w[0] == "--bind")
                            .map(|w| w[1].clone())
                            .collect::<Vec<_>>()
                    });
                (held, snapshot.infos)
            }
        };
        match held {
            None => self.ensure_holder(&infos).await.map(drop),
            Some(h) if h == endpoints => {
                self.lock().held = Some(h);
                Ok(())
            }
            Some(_) => {
                let rejected = |reason: String| BackendError::Rejected {
                    pointer: Some("/network/listen".into()),
                    reason,
                };
                let specs = endpoints
                    .iter()
                    .map(|e| e.parse::<BindSpec>())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| rejected(e.to_string()))?;
                let socket = self.layout.holder_socket();
                tokio::task::spawn_blocking(move || rebind(&socket, &specs))
                    .await
                    .map_err(|e| BackendError::Transient(format!("rebind task: {e}")))?
                    .map_err(|e| rejected(e.to_string()))?;
                tracing::info!(?endpoints, "socket holder rebound");
                // A holder started again later (supervisord restart) binds the new set.
                let program = self.holder_program(&exe, endpoints);
                write_file(
                    &self.layout.program_conf(HOLDER_PROGRAM),
                    &conf::program_conf(&self.layout, &program)?,
                )?;
                self.lock().held = Some(endpoints.to_vec());
                Ok(())
            }
        }
    }

    async fn set_gc(&self, spec: Option<&GcSpec>) -> BackendResult<()> {
        let infos = self.request_view().await?.infos;
        self.remove_program(GC_PROGRAM, &infos).await?;
        let Some(spec) = spec else { return Ok(()) };
        let mut command = vec![self.settings.cache_gc.clone()];
        command.extend(spec.args.iter().cloned());
        self.add_program(&Program {
            name: GC_PROGRAM.into(),
            command,
            env: vec![(
                "KRES_RUNDIR".into(),
                self.layout.rundir.display().to_string(),
            )],
            user: self.settings.worker_user.as_ref().map(|w| w.name.clone()),
            priority: 200,
            exitcodes: "0",
            startsecs: 1,
            startretries: 3,
        })
        .await
    }

    async fn wait_change(&self, timeout: Duration) {
        let mut rx = self.events.lock().await;
        let mut pending = false;
        while let Ok(_) | Err(broadcast::error::TryRecvError::Lagged(_)) = rx.try_recv() {
            pending = true;
        }
        if pending {
            return;
        }
        let _ = tokio::time::timeout(timeout, rx.recv()).await;
    }

    async fn log_tail(&self, slot: Slot, max_bytes: usize) -> BackendResult<String> {
        self.rpc
            .tail_stdout(&conf::program_name(slot), max_bytes as i64)
            .await
            .map_err(op)
    }

    async fn shutdown(&self) -> BackendResult<()> {
        let pid = self.lock().supervisord_pid;
        tolerate(self.rpc.shutdown().await, &["SHUTDOWN_STATE"])?;
        if let Some(pid) = pid {
            let deadline = Instant::now() + Duration::from_secs(20);
            while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Ok(())
    }
}

fn write_file(path: &Path, content: &str) -> BackendResult<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, content)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| BackendError::io(format!("write {}", path.display()), e))
}

/// PIDs of processes whose environment says they belong to `rundir` (`KRES_RUNDIR=`).
fn find_processes_of(rundir: &Path) -> Vec<u32> {
    let needle = format!("KRES_RUNDIR={}", rundir.display());
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    let mut pids = vec![];
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(env) = std::fs::read(e.path().join("environ")) else {
            continue;
        };
        if env.split(|b| *b == 0).any(|kv| kv == needle.as_bytes()) {
            pids.push(pid);
        }
    }
    pids
}

/// SIGTERM `pids`, wait up to `grace`, SIGKILL what is left.
async fn terminate(pids: &[u32], grace: Duration) {
    use rustix::process::{Pid, Signal, kill_process};
    let signal = |sig: Signal| {
        for pid in pids {
            if let Some(p) = Pid::from_raw(*pid as i32) {
                let _ = kill_process(p, sig);
            }
        }
    };
    signal(Signal::TERM);
    let deadline = Instant::now() + grace;
    let alive = || {
        pids.iter()
            .any(|p| Path::new(&format!("/proc/{p}/environ")).exists() && !is_zombie(*p))
    };
    while alive() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if alive() {
        signal(Signal::KILL);
    }
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}
