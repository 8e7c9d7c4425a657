//! `kres-operator kube --listen`: `/healthz`, `/readyz`, `/metrics` (Prometheus text) and
//! `/status` (every resolver's reconciler status, JSON). GET only, no request body read, header
//! read time bounded.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

/// What the endpoints serve.
pub struct Served {
    /// Metrics registry (the reconciler's metrics).
    pub registry: Registry,
    /// `namespace/name` → the reconciler's last status.
    pub statuses: Mutex<BTreeMap<String, serde_json::Value>>,
    /// Per-resolver metrics (registered in `registry`).
    pub resolvers: super::metrics::ResolverMetrics,
    /// The watch caches that have not had their first list yet (`/readyz` is 503 until none).
    pub unsynced: Mutex<std::collections::BTreeSet<String>>,
}

impl Served {
    /// The caches not yet synced, comma-separated (empty when all are).
    pub fn unsynced_list(&self) -> String {
        self.unsynced
            .lock()
            .map(|u| u.iter().cloned().collect::<Vec<_>>().join(", "))
            .unwrap_or_default()
    }
}

fn reply(code: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = code;
    if let Ok(v) = content_type.parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

fn route(served: &Served, req: &Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET only\n".into(),
        );
    }
    match req.uri().path() {
        "/healthz" => reply(StatusCode::OK, "text/plain", "ok\n".into()),
        "/readyz" => {
            let unsynced = served.unsynced_list();
            if unsynced.is_empty() {
                reply(StatusCode::OK, "text/plain", "ok\n".into())
            } else {
                reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    format!("waiting for the watch caches: {unsynced}\n"),
                )
            }
        }
        "/metrics" => {
            let mut text = String::new();
            match prometheus_client::encoding::text::encode(&mut text, &served.registry) {
                Ok(()) => reply(
                    StatusCode::OK,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    text,
                ),
                Err(e) => reply(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "text/plain",
                    format!("{e}\n"),
                ),
            }
        }
        "/status" => {
            let body = served
                .statuses
                .lock()
                .map(|s| serde_json::to_string_pretty(&*s).unwrap_or_default())
                .unwrap_or_default();
            reply(StatusCode::OK, "application/json", body + "\n")
        }
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
    }
}

/// Bind `addr` and serve until the process ends; returns the bound address.
pub async fn serve(addr: SocketAddr, served: Arc<Served>) -> Result<SocketAddr, String> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| format!("listen {addr}: {e}"))?;
    let bound = listener
        .local_addr()
        .map_err(|e| format!("listen {addr}: {e}"))?;
    tracing::info!(%bound, "serving /healthz /readyz /metrics /status");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let served = served.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let resp = route(&served, &req);
                    async move { Ok::<_, Infallible>(resp) }
                });
                let _ = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(5))
                    .max_buf_size(16 * 1024)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(bound)
}
