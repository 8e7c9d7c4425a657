//! `kres-operator host`: file source + supervisord backend + reconcile loop + signals.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use kres_crd::config::ConfigErrors;
use kres_crd::lua::SocketMode;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

use super::desired::desired_from;
use super::{HostStatus, Status, drive, stop};
use crate::backend::BackendError;
use crate::backend::supervisord::conf::Layout;
use crate::backend::supervisord::{SupervisordBackend, SupervisordSettings};
use crate::metrics::OperatorMetrics;
use crate::privilege::{PrivilegeError, WorkerUser, default_rundir, worker_dir, worker_user};
use crate::reconcile::{Context, FileRevisionStore};
use crate::source::file::{FileSource, SourceError};

/// Options of `kres-operator host`.
#[derive(Clone, Debug)]
pub struct HostOptions {
    /// The config.yaml.
    pub config: PathBuf,
    /// Follow changes of the file.
    pub watch: bool,
    /// Leave supervisord and the workers running when the operator exits.
    pub keep_workers_on_exit: bool,
    /// Rundir override (default: the config's `rundir`).
    pub rundir: Option<PathBuf>,
    /// Where the rollout state is kept (default: `<rundir>/state`).
    pub state_dir: Option<PathBuf>,
    /// Address of the workers' private probe endpoints.
    pub probe_address: IpAddr,
    /// How long a worker may take to become ready.
    pub start_timeout: Duration,
    /// How long a worker being stopped may finish its open TCP/DoT/DoH connections.
    pub drain_timeout: Duration,
    /// supervisord binary.
    pub supervisord: String,
    /// kresd binary.
    pub kresd: String,
    /// User the workers run as when the operator runs as root (default `knot-resolver`).
    pub worker_user: Option<String>,
}

/// Why host mode could not run.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// The config file is missing or invalid at start.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The backend could not be set up.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// The worker user or a directory is unsafe or unusable.
    #[error(transparent)]
    Privilege(#[from] PrivilegeError),
    /// Signal handlers or the working directory.
    #[error("{0}")]
    Setup(String),
}

/// How listening sockets reach kresd in host mode: bound once by the holder, inherited.
pub const SOCKETS: SocketMode = SocketMode::Inherited;

/// Run host mode until SIGTERM/SIGINT.
pub async fn run_host(opts: HostOptions) -> Result<(), HostError> {
    let start_timeout = opts.start_timeout;
    let worker = worker_user(opts.worker_user.as_deref())?;
    let build: crate::source::Build =
        Arc::new(move |cfg| desired_from(cfg, SOCKETS, start_timeout));
    // Every config that passed the pipeline gets its cache directory prepared for the workers
    // (created, or checked to belong to them) before it can become desired; dry runs do not.
    let prepare: crate::source::Prepare = {
        let worker = worker.clone();
        Arc::new(move |cfg| {
            prepare_cache(cfg, worker.as_ref())
                .map_err(|e| ConfigErrors::single("/cache/storage", e.to_string()))
        })
    };
    let source = FileSource::open(&opts.config, build, Some(prepare))?;
    let first = source
        .current()
        .ok_or_else(|| HostError::Setup("no config".into()))?;
    let first_rundir = first.config.rundir.clone();
    let rundir = opts
        .rundir
        .clone()
        .or_else(|| first_rundir.as_ref().map(|r| r.as_path().to_path_buf()))
        .or_else(default_rundir)
        .ok_or_else(|| {
            HostError::Setup(
                "no rundir: set `rundir` in the config, --rundir, or XDG_RUNTIME_DIR".into(),
            )
        })?;
    let rundir = std::path::absolute(&rundir)
        .map_err(|e| HostError::Setup(format!("rundir {}: {e}", rundir.display())))?;
    // The cache must belong to the workers before any of them starts.
    let mut settings = SupervisordSettings::new(rundir.clone());
    settings.worker_user = worker.clone();
    settings.probe_ip = opts.probe_address;
    settings.supervisord = opts.supervisord.clone();
    settings.kresd = opts.kresd.clone();
    settings.drain_timeout = opts.drain_timeout;
    let exe = std::env::current_exe()
        .map_err(|e| HostError::Setup(format!("own executable: {e}")))?
        .display()
        .to_string();
    let holder_socket = Layout {
        rundir: rundir.clone(),
    }
    .holder_socket();
    settings.holder = Some(exe.clone());
    settings.launcher = vec![
        exe,
        "launch".into(),
        "--holder".into(),
        holder_socket.display().to_string(),
    ];
    if let Some(w) = &worker {
        // launch receives the sockets as root, then drops to the worker user and execs kresd.
        settings.launcher.extend(["--user".into(), w.name.clone()]);
    }
    settings.launcher.push("--".into());
    let backend = SupervisordBackend::new(settings)?;
    let status_file = backend.layout().status_file();
    tracing::info!(config = %opts.config.display(), rundir = %rundir.display(), "host mode");

    let sig = |kind| signal(kind).map_err(|e| HostError::Setup(format!("signal handler: {e}")));
    let mut sigterm = sig(SignalKind::terminate())?;
    let mut sigint = sig(SignalKind::interrupt())?;
    let mut sighup = sig(SignalKind::hangup())?;
    let reload = source.reload_handle();
    let desired_rx = source.subscribe();
    tokio::spawn(source.clone().run(opts.watch, Duration::from_secs(1)));
    let mut rundir_rx = source.subscribe();
    tokio::spawn(async move {
        while rundir_rx.changed().await.is_ok() {
            let changed = rundir_rx
                .borrow_and_update()
                .as_ref()
                .is_some_and(|a| a.config.rundir != first_rundir);
            if changed {
                tracing::warn!("rundir changes need an operator restart; keeping the old one");
            }
        }
    });

    let (status_tx, status_rx) = watch::channel(Status::default());
    let (durable_tx, durable_rx) = watch::channel(Arc::default());
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let metrics = Arc::new(OperatorMetrics::default());
    // The HTTP API (issue 4): listener from the config's `management`.
    let api = crate::host::plane::start_api(crate::host::plane::HostPlaneParts {
        source: source.clone(),
        status: status_rx,
        history: durable_rx,
        shutdown: shutdown_tx.clone(),
        rundir: rundir.clone(),
        metrics: metrics.clone(),
    })
    .await
    .map_err(|e| HostError::Setup(format!("API: {e}")))?;
    let state_dir = opts
        .state_dir
        .clone()
        .unwrap_or_else(|| rundir.join("state"));
    let store = FileRevisionStore::open(&state_dir)
        .map_err(|e| HostError::Setup(format!("state directory: {e}")))?;
    let sink = HostStatus {
        status: status_tx,
        file: Some(status_file),
        durable: Some(durable_tx),
    };
    // A rejected API change (or rollback) is reverted here, not by the request: the last good
    // config goes back to the file whether or not the client still waits.
    let revert_source = source.clone();
    let ctx = Context::new(backend, Box::new(store), Box::new(sink), metrics)
        .map_err(|e| HostError::Setup(format!("rollout state: {e}")))?
        .on_rejected(Box::new(move |change, good| {
            let (source, seq, good) = (revert_source.clone(), change.seq, good.to_owned());
            tokio::task::spawn_blocking(move || match source.revert(seq, &good) {
                Ok(Some(a)) => tracing::info!(rejected = seq, seq = a.seq, revision = %a.desired.revision, "last good configuration restored"),
                Ok(None) => tracing::info!(rejected = seq, "not reverted: a newer change came"),
                Err(e) => tracing::error!(error = %e, "could not restore the last good configuration"),
            });
        }));
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = sighup.recv() => {
                    tracing::info!("SIGHUP: re-reading the configuration");
                    reload.notify_one();
                }
                _ = sigterm.recv() => break,
                _ = sigint.recv() => break,
            }
        }
        tracing::info!("shutting down");
        let _ = shutdown_tx.send(true);
    });
    let mut rejections = source.subscribe_rejections();
    let show_rejections = async {
        while rejections.changed().await.is_ok() {
            let rejection = rejections.borrow_and_update().clone();
            ctx.config_rejected(rejection).await;
        }
        // The source outlives the loop; should its channel close, keep driving.
        std::future::pending::<()>().await
    };
    tokio::select! {
        () = drive(&ctx, desired_rx, shutdown_rx) => {}
        () = show_rejections => {}
    }
    api.shutdown().await;
    if opts.keep_workers_on_exit {
        tracing::info!("leaving supervisord and the workers running");
    } else {
        stop(&ctx).await?;
        tracing::info!("workers and supervisord stopped");
    }
    Ok(())
}

/// Create the cache directory owned by the workers, or check that an existing one is theirs.
fn prepare_cache(
    cfg: &kres_crd::config::ResolverConfig,
    worker: Option<&WorkerUser>,
) -> Result<(), PrivilegeError> {
    worker_dir("cache.storage", cfg.cache.storage.as_path(), worker)
}
