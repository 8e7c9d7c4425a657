//! The listener (unix socket by default, TCP only when configured) and the connection loop:
//! each accepted connection is served by hyper-util's connection builder, HTTP/1.1 only, with
//! bounded header size and header read time, running the API's warp filter
//! ([`super::filters::api`]) through `warp::service`.

use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::error::Resp;
use super::filters;
use super::plane::ControlPlane;
use super::routes::ApiState;
use super::worker::WorkerControl;

/// The API's filter, shared by every connection.
type Api = warp::filters::BoxedFilter<(Resp,)>;

/// Where the API listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    /// Unix socket path (mode 0600; parent directory created; a stale socket file replaced).
    Unix(PathBuf),
    /// TCP `ip:port` (only when the config's `management.interface` says so).
    Tcp(SocketAddr),
}

/// Limits and timeouts of the API server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Where to listen.
    pub listen: Listen,
    /// Largest request body accepted (413 above).
    pub max_body_bytes: usize,
    /// Largest request head (request line + headers); hyper answers 431 above.
    pub max_header_bytes: usize,
    /// Time allowed to receive a request head.
    pub header_read_timeout: Duration,
    /// Bound of every request except config changes (504 above).
    pub request_timeout: Duration,
    /// Bound of a config change's wait for convergence (504 above; the change goes on).
    pub change_timeout: Duration,
    /// Bound of one worker's stats read during `GET /metrics`.
    pub scrape_timeout: Duration,
}

impl ServerConfig {
    /// Defaults: 4 MiB bodies (the datamodel's input limit, so any valid config file can be
    /// `PUT`), 16 KiB heads, 10 s head read, 30 s requests, 300 s changes, 200 ms per worker
    /// scrape.
    pub fn new(listen: Listen) -> Self {
        Self {
            listen,
            max_body_bytes: kres_crd::config::MAX_INPUT_BYTES,
            max_header_bytes: 16 * 1024,
            header_read_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            change_timeout: Duration::from_secs(300),
            scrape_timeout: Duration::from_millis(200),
        }
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Creating the socket's directory failed.
    #[error("cannot create directory {path}: {source}")]
    Dir {
        /// Directory.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// Something that is not a socket is in the way.
    #[error("{0} exists and is not a socket; refusing to replace it")]
    NotASocket(PathBuf),
    /// Another process serves on that socket.
    #[error("{0} is in use by a running server")]
    InUse(PathBuf),
    /// bind/chmod/rename failed.
    #[error("cannot listen on {what}: {source}")]
    Bind {
        /// Socket path or address.
        what: String,
        /// Cause.
        source: std::io::Error,
    },
}

/// Bound address of a running server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bound {
    /// Unix socket path.
    Unix(PathBuf),
    /// TCP address (with the real port if 0 was asked).
    Tcp(SocketAddr),
}

/// A running API server. Dropping it does not stop it; call [`ServerHandle::shutdown`].
#[derive(Debug)]
pub struct ServerHandle {
    bound: Bound,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl ServerHandle {
    /// Where it listens.
    pub fn bound(&self) -> &Bound {
        &self.bound
    }

    /// Stop accepting, and remove the unix socket file.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        if let Bound::Unix(path) = &self.bound {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Bind `cfg.listen` and serve the API for `plane` until shut down.
pub async fn serve(
    cfg: ServerConfig,
    plane: Arc<dyn ControlPlane>,
    control: Arc<dyn WorkerControl>,
) -> Result<ServerHandle, ServeError> {
    let api = filters::api(Arc::new(ApiState::new(cfg.clone(), plane, control)));
    let (stop, stop_rx) = watch::channel(false);
    let (listener, bound) = match &cfg.listen {
        Listen::Unix(path) => (
            AnyListener::Unix(bind_unix(path).await?),
            Bound::Unix(path.clone()),
        ),
        Listen::Tcp(addr) => {
            let err = |source| ServeError::Bind {
                what: addr.to_string(),
                source,
            };
            let l = TcpListener::bind(addr).await.map_err(err)?;
            let local = l.local_addr().map_err(err)?;
            (AnyListener::Tcp(l), Bound::Tcp(local))
        }
    };
    tracing::info!(listen = ?bound, "API listening");
    let task = tokio::spawn(accept_loop(api, stop_rx, listener, cfg));
    Ok(ServerHandle { bound, stop, task })
}

enum AnyListener {
    Unix(UnixListener),
    Tcp(TcpListener),
}

/// Bind a unix socket at `path` that only its owner can use.
///
/// The socket is bound inside a fresh 0700 directory next to `path`, made 0600, then renamed
/// into place, so it is never reachable with looser permissions. A stale socket (nobody
/// accepting) is replaced; a live one or a non-socket file is an error.
async fn bind_unix(path: &Path) -> Result<UnixListener, ServeError> {
    let bind_err = |source| ServeError::Bind {
        what: path.display().to_string(),
        source,
    };
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|source| ServeError::Dir {
        path: parent.to_path_buf(),
        source,
    })?;
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if tokio::net::UnixStream::connect(path).await.is_ok() {
                return Err(ServeError::InUse(path.to_path_buf()));
            }
            std::fs::remove_file(path).map_err(bind_err)?;
        }
        Ok(_) => return Err(ServeError::NotASocket(path.to_path_buf())),
        Err(_) => {}
    }
    let private = tempfile::Builder::new()
        .prefix(".kres-api-")
        .tempdir_in(parent)
        .map_err(bind_err)?;
    std::fs::set_permissions(private.path(), std::fs::Permissions::from_mode(0o700))
        .map_err(bind_err)?;
    let tmp = private.path().join("s");
    let listener = UnixListener::bind(&tmp).map_err(bind_err)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).map_err(bind_err)?;
    std::fs::rename(&tmp, path).map_err(bind_err)?;
    Ok(listener)
}

async fn accept_loop(
    api: Api,
    mut stop: watch::Receiver<bool>,
    listener: AnyListener,
    cfg: ServerConfig,
) {
    loop {
        let accepted = tokio::select! {
            _ = stop.changed() => return,
            r = async {
                match &listener {
                    AnyListener::Unix(l) => l.accept().await.map(|(s, _)| {
                        tokio::spawn(serve_conn(api.clone(), s, cfg.clone()));
                    }),
                    AnyListener::Tcp(l) => l.accept().await.map(|(s, _)| {
                        tokio::spawn(serve_conn(api.clone(), s, cfg.clone()));
                    }),
                }
            } => r,
        };
        if let Err(e) = accepted {
            tracing::warn!(error = %e, "API accept failed");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Serve one connection: HTTP/1.1 only (an HTTP/2 preface is not waited for, so the head
/// read timeout bounds a silent client from its first byte), heads up to `max_header_bytes`
/// (`431` above), `header_read_timeout` to send one.
async fn serve_conn<S>(api: Api, stream: S, cfg: ServerConfig)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new()).http1_only();
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(cfg.header_read_timeout)
        .max_buf_size(cfg.max_header_bytes.max(8192));
    let svc = TowerToHyperService::new(warp::service(api));
    if let Err(e) = builder.serve_connection(TokioIo::new(stream), svc).await {
        tracing::debug!(error = %e, "API connection ended with an error");
    }
}
