//! HTTP semantics of the API (status codes, ETags, pointers, limits, listener) against an in-test
//! fake control plane. What the fleet does is tested against real kresd in tests/tests/api_*.rs.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use hyper::{Method, StatusCode};
use kres_operator::http::client::{ApiClient, Reply, Target};
use kres_operator::http::{
    Applied, ApplyError, Bound, ControlPlane, FieldError, Listen, Plan, PlannedRestart, ServeError,
    ServerConfig, ServerHandle, StatusSnapshot, WorkerControl, WorkerSocket, WorkerStatus, etag_of,
    serve,
};
use kres_operator::metrics::OperatorMetrics;
use serde_json::{Value, json};

/// A fake fleet: validation of a few keys, convergence after `delay_ms` unless a newer change
/// comes first, canary rejection of `lua.script` containing `error(`.
struct Fake {
    config: Mutex<Value>,
    generation: AtomicU64,
    /// Woken on every accepted change (a newer change supersedes a waiting one at once).
    changed: tokio::sync::Notify,
    delay_ms: AtomicU64,
    stopped: AtomicBool,
    ready: AtomicBool,
    metrics: Arc<OperatorMetrics>,
}

impl Fake {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            config: Mutex::new(json!({"workers": 2, "cache": {"size-max": "100M"}, "lua": {}})),
            generation: AtomicU64::new(0),
            changed: tokio::sync::Notify::new(),
            delay_ms: AtomicU64::new(0),
            stopped: AtomicBool::new(false),
            ready: AtomicBool::new(true),
            metrics: Arc::new(OperatorMetrics::default()),
        })
    }

    fn validate(doc: &Value) -> Result<(), ApplyError> {
        let mut errors = Vec::new();
        let obj = doc.as_object().cloned().unwrap_or_default();
        for key in obj.keys() {
            if !matches!(key.as_str(), "workers" | "cache" | "lua") {
                errors.push(FieldError {
                    pointer: format!("/{key}"),
                    message: "unknown field".into(),
                });
            }
        }
        if let Some(w) = obj.get("workers")
            && !w.as_u64().is_some_and(|n| (1..=64).contains(&n))
        {
            errors.push(FieldError {
                pointer: "/workers".into(),
                message: "must be an integer 1..=64".into(),
            });
        }
        if let Some(s) = doc.pointer("/cache/size-max")
            && !s.as_str().is_some_and(|s| s.ends_with('M'))
        {
            errors.push(FieldError {
                pointer: "/cache/size-max".into(),
                message: "must be a size like 100M".into(),
            });
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ApplyError::Invalid(errors))
        }
    }
}

#[async_trait]
impl ControlPlane for Fake {
    fn config(&self) -> Value {
        self.config.lock().unwrap().clone()
    }

    async fn apply(&self, new: Value, base_etag: &str) -> Result<Applied, ApplyError> {
        Self::validate(&new)?;
        let gen_ = {
            let mut cur = self.config.lock().unwrap();
            let etag = etag_of(&cur);
            if etag != base_etag {
                return Err(ApplyError::BaseChanged { current: etag });
            }
            if let Some(script) = new.pointer("/lua/script").and_then(Value::as_str)
                && script.contains("error(")
            {
                return Err(ApplyError::Rejected {
                    revision: Some("bad".into()),
                    reasons: vec![
                        "[system] error while loading config: boom (canary kresd exited 1)".into(),
                    ],
                });
            }
            *cur = new;
            let g = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
            self.changed.notify_waiters();
            g
        };
        let converged = tokio::time::Instant::now()
            + Duration::from_millis(self.delay_ms.load(Ordering::SeqCst));
        loop {
            // Registered before the check, so a change in between still wakes it.
            let newer = self.changed.notified();
            if self.generation.load(Ordering::SeqCst) != gen_ {
                return Err(ApplyError::Superseded {
                    by: etag_of(&self.config()),
                });
            }
            tokio::select! {
                _ = newer => {}
                _ = tokio::time::sleep_until(converged) => break,
            }
        }
        let cur = self.config();
        Ok(Applied {
            etag: etag_of(&cur),
            revision: Some(format!("rev{gen_}")),
        })
    }

    async fn dry_run(&self, new: Value) -> Result<Plan, ApplyError> {
        Self::validate(&new)?;
        let same = new == self.config();
        Ok(Plan {
            restart: if same {
                vec![]
            } else {
                vec![PlannedRestart {
                    slot: "0".into(),
                    reason: "revision change".into(),
                }]
            },
            ..Default::default()
        })
    }

    fn status(&self) -> StatusSnapshot {
        StatusSnapshot {
            current_revision: Some("rev0".into()),
            target_revision: Some("rev0".into()),
            phase: "idle".into(),
            workers: vec![WorkerStatus {
                slot: "0".into(),
                pid: Some(42),
                revision: Some("rev0".into()),
                state: if self.ready.load(Ordering::SeqCst) {
                    "ready".into()
                } else {
                    "starting".into()
                },
                ready_since: None,
            }],
            ..Default::default()
        }
    }

    async fn reload(&self) -> Result<Applied, ApplyError> {
        Ok(Applied {
            etag: etag_of(&self.config()),
            revision: Some("rev0".into()),
        })
    }

    async fn stop(&self) -> Result<(), ApplyError> {
        self.stopped.store(true, Ordering::SeqCst);
        Ok(())
    }

    fn worker_control_sockets(&self) -> Vec<WorkerSocket> {
        vec![
            WorkerSocket {
                worker: "0".into(),
                path: "/fake/0".into(),
            },
            WorkerSocket {
                worker: "1".into(),
                path: "/fake/hang".into(),
            },
        ]
    }

    fn schema(&self) -> Value {
        json!({"type": "object"})
    }

    fn metrics(&self) -> Arc<OperatorMetrics> {
        self.metrics.clone()
    }
}

struct FakeWorkers {
    last_eval: Mutex<Option<String>>,
}

#[async_trait]
impl WorkerControl for FakeWorkers {
    async fn stats(&self, socket: &Path) -> Result<Value, String> {
        if socket.ends_with("hang") {
            tokio::time::sleep(Duration::from_secs(60)).await;
        }
        Ok(json!({"answer.total": 5, "request.udp": 5, "answer.1ms": 5}))
    }

    async fn eval_json(&self, _socket: &Path, expr: &str) -> Result<Value, String> {
        *self.last_eval.lock().unwrap() = Some(expr.to_owned());
        Ok(json!({"count": 3}))
    }
}

struct Api {
    _dir: tempfile::TempDir,
    socket: PathBuf,
    fake: Arc<Fake>,
    workers: Arc<FakeWorkers>,
    client: ApiClient,
    server: Option<ServerHandle>,
}

async fn start() -> Api {
    start_with(|_| {}).await
}

/// [`start`] with `tune` applied to the server's limits.
async fn start_with(tune: impl FnOnce(&mut ServerConfig)) -> Api {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("run/sub/api.sock");
    let fake = Fake::new();
    let workers = Arc::new(FakeWorkers {
        last_eval: Mutex::new(None),
    });
    let mut cfg = ServerConfig::new(Listen::Unix(socket.clone()));
    cfg.max_body_bytes = 4096;
    cfg.change_timeout = Duration::from_secs(5);
    tune(&mut cfg);
    let server = serve(cfg, fake.clone(), workers.clone()).await.unwrap();
    let client = ApiClient::new(Target::Unix(socket.clone()), Duration::from_secs(10));
    Api {
        _dir: dir,
        socket,
        fake,
        workers,
        client,
        server: Some(server),
    }
}

impl Api {
    /// A request, with a JSON content type added where required.
    async fn req(&self, m: Method, path: &str, headers: &[(&str, &str)], body: &str) -> Reply {
        let headers = kres_tests::api::with_json_type(&m, headers);
        self.raw(m, path, &headers, body).await
    }

    /// A request with exactly `headers`.
    async fn raw(&self, m: Method, path: &str, headers: &[(&str, &str)], body: &str) -> Reply {
        self.client
            .request(m, path, headers, body.to_owned())
            .await
            .unwrap()
    }
}

#[tokio::test]
async fn socket_is_private_and_stale_socket_is_replaced() {
    let mut api = start().await;
    let meta = std::fs::metadata(&api.socket).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    // A second server on a live socket is refused.
    let cfg = ServerConfig::new(Listen::Unix(api.socket.clone()));
    let second = serve(cfg.clone(), api.fake.clone(), api.workers.clone()).await;
    assert!(
        matches!(&second, Err(ServeError::InUse(p)) if *p == api.socket),
        "a live socket must not be stolen: {:?}",
        second.as_ref().err()
    );
    // A stale socket (server gone, file left) is replaced.
    let server = api.server.take().unwrap();
    server.shutdown().await;
    let _stale = std::os::unix::net::UnixListener::bind(&api.socket).unwrap();
    drop(_stale);
    assert!(api.socket.exists());
    let again = serve(cfg, api.fake.clone(), api.workers.clone())
        .await
        .unwrap();
    assert_eq!(again.bound(), &Bound::Unix(api.socket.clone()));
    assert_eq!(api.client.get("/healthz").await.unwrap().status, 200);
    // A regular file in the way is never deleted.
    let file = api.socket.with_file_name("not-a-socket");
    std::fs::write(&file, "x").unwrap();
    let refused = serve(
        ServerConfig::new(Listen::Unix(file.clone())),
        api.fake.clone(),
        api.workers.clone(),
    )
    .await;
    assert!(
        matches!(&refused, Err(ServeError::NotASocket(p)) if *p == file),
        "{:?}",
        refused.as_ref().err()
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "x");
    again.shutdown().await;
}

#[tokio::test]
async fn tcp_listener_when_configured() {
    let fake = Fake::new();
    let workers = Arc::new(FakeWorkers {
        last_eval: Mutex::new(None),
    });
    let cfg = ServerConfig::new(Listen::Tcp("127.0.0.1:0".parse().unwrap()));
    let server = serve(cfg, fake, workers).await.unwrap();
    let Bound::Tcp(addr) = server.bound().clone() else {
        panic!("not tcp")
    };
    let client = ApiClient::new(Target::Tcp(addr.to_string()), Duration::from_secs(5));
    assert_eq!(client.get("/healthz").await.unwrap().status, 200);
    server.shutdown().await;
}

#[tokio::test]
async fn get_config_pointers_etags_and_conditional_get() {
    let api = start().await;
    let r = api.req(Method::GET, "/v1/config", &[], "").await;
    assert_eq!(r.status, 200);
    let etag = r.header("etag").unwrap();
    assert_eq!(etag, etag_of(&api.fake.config()));
    assert_eq!(r.json()["workers"], 2);

    let r = api
        .req(Method::GET, "/v1/config/cache/size-max", &[], "")
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), json!("100M"));
    assert_eq!(r.header("etag").unwrap(), etag);

    let r = api.req(Method::GET, "/v1/config/cache/nope", &[], "").await;
    assert_eq!(r.status, 404);
    assert!(r.json()["error"].as_str().unwrap().contains("/cache/nope"));

    let r = api
        .req(Method::GET, "/v1/config", &[("if-none-match", &etag)], "")
        .await;
    assert_eq!(r.status, 304);

    let r = api
        .req(
            Method::GET,
            "/v1/config",
            &[("accept", "application/yaml")],
            "",
        )
        .await;
    assert_eq!(r.status, 200);
    assert!(r.text().contains("size-max: 100M"), "{}", r.text());
}

#[tokio::test]
async fn put_patch_delete_and_their_errors() {
    let api = start().await;
    let etag0 = etag_of(&api.fake.config());

    // PUT a pointer -> 200 + new ETag.
    let r = api
        .req(
            Method::PUT,
            "/v1/config/workers",
            &[("if-match", &etag0)],
            "3",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let etag1 = r.header("etag").unwrap();
    assert_ne!(etag1, etag0);
    assert_eq!(etag1, etag_of(&api.fake.config()));
    assert_eq!(api.fake.config()["workers"], 3);

    // Stale If-Match -> 412, nothing changes.
    let r = api
        .req(
            Method::PUT,
            "/v1/config/workers",
            &[("if-match", &etag0)],
            "4",
        )
        .await;
    assert_eq!(r.status, 412);
    assert_eq!(r.header("etag").unwrap(), etag1);
    assert_eq!(api.fake.config()["workers"], 3);

    // If-None-Match: * on an existing config -> 412.
    let r = api
        .req(
            Method::PUT,
            "/v1/config/workers",
            &[("if-none-match", "*")],
            "4",
        )
        .await;
    assert_eq!(r.status, 412);

    // YAML body.
    let r = api
        .req(
            Method::PUT,
            "/v1/config/cache",
            &[("content-type", "application/yaml")],
            "size-max: 200M\n",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(api.fake.config()["cache"]["size-max"], "200M");

    // Invalid values -> 422 with every pointer.
    let r = api
        .req(
            Method::PUT,
            "/v1/config",
            &[],
            r#"{"workers": 0, "cache": {"size-max": 5}, "bogus": 1}"#,
        )
        .await;
    assert_eq!(r.status, 422);
    let mut ptrs: Vec<String> = r.json()["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["pointer"].as_str().unwrap().to_owned())
        .collect();
    ptrs.sort();
    assert_eq!(ptrs, ["/bogus", "/cache/size-max", "/workers"]);
    assert_eq!(api.fake.config()["workers"], 3);

    // Canary rejection -> 422 with kresd's line.
    let r = api
        .req(Method::PUT, "/v1/config/lua/script", &[], r#""error('x')""#)
        .await;
    assert_eq!(r.status, 422);
    assert!(
        r.text().contains("error while loading config"),
        "{}",
        r.text()
    );

    // Unparsable -> 400; unsupported type -> 415; pointer parent missing -> 404.
    let r = api
        .req(Method::PUT, "/v1/config/workers", &[], "{nope")
        .await;
    assert_eq!(r.status, 400);
    let r = api
        .req(
            Method::PUT,
            "/v1/config/workers",
            &[("content-type", "text/plain")],
            "3",
        )
        .await;
    assert_eq!(r.status, 415);
    let r = api.req(Method::PUT, "/v1/config/no/such", &[], "1").await;
    assert_eq!(r.status, 404);

    // PATCH (RFC 6902).
    let r = api
        .req(
            Method::PATCH,
            "/v1/config",
            &[("content-type", "application/json-patch+json")],
            r#"[{"op":"test","path":"/workers","value":3},{"op":"replace","path":"/workers","value":5}]"#,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(api.fake.config()["workers"], 5);
    let r = api
        .req(
            Method::PATCH,
            "/v1/config",
            &[],
            r#"[{"op":"test","path":"/workers","value":1}]"#,
        )
        .await;
    assert_eq!(r.status, 422);
    let r = api
        .req(Method::PATCH, "/v1/config", &[], r#"{"op":"nope"}"#)
        .await;
    assert_eq!(r.status, 400);

    // DELETE a key -> default; missing -> 404; root -> 405 with Allow.
    let r = api
        .req(Method::DELETE, "/v1/config/cache/size-max", &[], "")
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(api.fake.config()["cache"], json!({}));
    let r = api
        .req(Method::DELETE, "/v1/config/cache/size-max", &[], "")
        .await;
    assert_eq!(r.status, 404);
    let r = api.req(Method::DELETE, "/v1/config", &[], "").await;
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow").unwrap(), "GET, PUT, PATCH");
}

#[tokio::test]
async fn dry_run_changes_nothing() {
    let api = start().await;
    let before = api.fake.config();
    let r = api
        .req(Method::PUT, "/v1/config/workers?dry-run=true", &[], "7")
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["restart"][0]["slot"], "0");
    assert_eq!(api.fake.config(), before);
    let r = api
        .req(Method::PUT, "/v1/config/workers?dry-run=true", &[], "2")
        .await;
    assert_eq!(r.json()["restart"], json!([]));
    let r = api
        .req(Method::PUT, "/v1/config/workers?dry-run=true", &[], "0")
        .await;
    assert_eq!(r.status, 422);
}

#[tokio::test]
async fn superseded_change_gets_409_and_the_newer_wins() {
    let api = Arc::new(start().await);
    // The first change cannot converge before the second arrives: it waits 60 s unless
    // superseded, and the second is sent once the first is the fake's desired config.
    api.fake.delay_ms.store(60_000, Ordering::SeqCst);
    let first = {
        let api = api.clone();
        tokio::spawn(async move { api.req(Method::PUT, "/v1/config/workers", &[], "7").await })
    };
    let t0 = std::time::Instant::now();
    while api.fake.config()["workers"] != 7 {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "first change never arrived"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    api.fake.delay_ms.store(0, Ordering::SeqCst);
    let second = api.req(Method::PUT, "/v1/config/workers", &[], "8").await;
    let first = first.await.unwrap();
    assert_eq!(first.status, 409, "{}", first.text());
    assert_eq!(second.status, 200, "{}", second.text());
    assert_eq!(api.fake.config()["workers"], 8);
}

#[tokio::test]
async fn limits_methods_and_unknown_paths() {
    let api = start().await;
    let big = format!("\"{}\"", "x".repeat(10_000));
    let r = api
        .req(Method::PUT, "/v1/config/lua/script", &[], &big)
        .await;
    assert_eq!(r.status, 413);
    let r = api.req(Method::POST, "/status", &[], "").await;
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow").unwrap(), "GET");
    let r = api.req(Method::GET, "/reload", &[], "").await;
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow").unwrap(), "POST");
    let r = api.req(Method::GET, "/nope", &[], "").await;
    assert_eq!(r.status, 404);
    // Oversized head: hyper refuses it (431) instead of buffering it.
    let huge = "a".repeat(40_000);
    let r = api
        .req(Method::GET, "/status", &[("x-big", &huge)], "")
        .await;
    assert_eq!(r.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
}

#[tokio::test]
async fn status_health_ready_schema_reload_stop() {
    let api = start().await;
    let r = api.req(Method::GET, "/status", &[], "").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["workers"][0]["pid"], 42);
    assert_eq!(r.json()["current-revision"], "rev0");
    assert_eq!(api.req(Method::GET, "/healthz", &[], "").await.status, 200);
    assert_eq!(api.req(Method::GET, "/readyz", &[], "").await.status, 200);
    api.fake.ready.store(false, Ordering::SeqCst);
    assert_eq!(api.req(Method::GET, "/readyz", &[], "").await.status, 503);
    let r = api.req(Method::GET, "/schema", &[], "").await;
    assert_eq!(r.json()["type"], "object");
    let r = api.req(Method::POST, "/reload", &[], "").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("etag").unwrap(), etag_of(&api.fake.config()));
    let r = api.req(Method::POST, "/stop", &[], "").await;
    assert_eq!(r.status, 200);
    assert!(api.fake.stopped.load(Ordering::SeqCst));
}

#[tokio::test]
async fn metrics_do_not_hang_on_a_stuck_worker() {
    let api = start().await;
    let t = std::time::Instant::now();
    let r = api.req(Method::GET, "/metrics", &[], "").await;
    // The stuck worker is bounded by the scrape timeout; 10 s only fails a hang.
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "took {:?}",
        t.elapsed()
    );
    assert_eq!(r.status, 200);
    let lines: Vec<String> = r.text().lines().map(str::to_owned).collect();
    let scrape = prometheus_parse::Scrape::parse(lines.into_iter().map(Ok)).unwrap();
    let find = |name: &str, worker: &str| {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name && s.labels.get("worker") == Some(worker))
            .map(|s| s.value.clone())
    };
    assert!(matches!(
        find("kresd_answer_total", "0"),
        Some(prometheus_parse::Value::Counter(v)) if v == 5.0
    ));
    assert!(matches!(
        find("kres_worker_up", "1"),
        Some(prometheus_parse::Value::Gauge(v)) if v == 0.0
    ));
    assert!(find("kresd_answer_total", "1").is_none());
}

#[tokio::test]
async fn cache_clear_runs_on_one_worker_and_validates() {
    let api = start().await;
    let r = api
        .req(
            Method::POST,
            "/cache/clear",
            &[],
            r#"{"name": "example.com", "exact-name": true, "rr-type": "A"}"#,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["count"], 3);
    assert_eq!(
        api.workers.last_eval.lock().unwrap().as_deref(),
        Some("tojson(cache.clear('example.com.', true, kres.type.A, nil))")
    );
    let r = api
        .req(Method::POST, "/cache/clear", &[], r#"{"rr-type": "A"}"#)
        .await;
    assert_eq!(r.status, 422);
    assert_eq!(r.json()["errors"][0]["pointer"], "/rr-type");
    let r = api
        .req(Method::POST, "/cache/clear", &[], r#"{"nope": 1}"#)
        .await;
    assert_eq!(r.status, 422);
}

#[tokio::test]
async fn mutating_requests_need_a_content_type_and_no_foreign_origin() {
    let api = start().await;
    let before = api.fake.config();
    let json = ("content-type", "application/json");
    // No content type: 415, even for a body-less POST (what a no-cors browser POST can send).
    for (m, path, body) in [
        (Method::POST, "/stop", ""),
        (Method::POST, "/reload", ""),
        (Method::POST, "/cache/clear", ""),
        (Method::PUT, "/v1/config/workers", "3"),
        (
            Method::PATCH,
            "/v1/config",
            r#"[{"op":"replace","path":"/workers","value":3}]"#,
        ),
    ] {
        let r = api.raw(m.clone(), path, &[], body).await;
        assert_eq!(r.status, 415, "{m} {path}: {}", r.text());
        assert!(r.text().contains("Content-Type"), "{}", r.text());
        // The simple types a browser sends without a preflight: 415 as well.
        for ct in ["text/plain", "application/x-www-form-urlencoded"] {
            let r = api
                .raw(m.clone(), path, &[("content-type", ct)], body)
                .await;
            assert_eq!(r.status, 415, "{m} {path} {ct}: {}", r.text());
        }
    }
    // A foreign Origin: 403, also with the right content type; a DNS name even if it matches.
    for (origin, host) in [
        ("http://evil.example", "localhost"),
        ("null", "localhost"),
        ("http://rebind.example", "rebind.example"),
    ] {
        for (m, path, body) in [
            (Method::POST, "/stop", ""),
            (Method::PUT, "/v1/config/workers", "3"),
            (Method::DELETE, "/v1/config/cache/size-max", ""),
        ] {
            let r = api
                .raw(
                    m.clone(),
                    path,
                    &[json, ("origin", origin), ("host", host)],
                    body,
                )
                .await;
            assert_eq!(r.status, 403, "{m} {path} {origin}: {}", r.text());
            assert!(r.text().contains("cross-origin"), "{}", r.text());
        }
    }
    assert!(
        !api.fake.stopped.load(Ordering::SeqCst),
        "a refused /stop stopped"
    );
    assert_eq!(api.fake.config(), before, "a refused change was applied");
    // Reads are not affected by Origin; the server's own origin may change things.
    let r = api
        .raw(
            Method::GET,
            "/status",
            &[("origin", "http://evil.example")],
            "",
        )
        .await;
    assert_eq!(r.status, 200);
    let r = api
        .raw(
            Method::PUT,
            "/v1/config/workers",
            &[json, ("origin", "http://localhost"), ("host", "localhost")],
            "3",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(api.fake.config()["workers"], 3);
    // DELETE needs no content type.
    let r = api
        .raw(Method::DELETE, "/v1/config/cache/size-max", &[], "")
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
}

#[tokio::test]
async fn json_patch_is_bounded_with_the_failing_operation_as_pointer() {
    let api = start().await;
    let patch = |ops: &[Value]| serde_json::to_string(ops).unwrap();
    let ct = [("content-type", "application/json-patch+json")];
    // A failing operation is named by its index.
    let r = api
        .req(
            Method::PATCH,
            "/v1/config",
            &ct,
            &patch(&[
                json!({"op": "replace", "path": "/workers", "value": 3}),
                json!({"op": "remove", "path": "/nope"}),
            ]),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.text());
    assert_eq!(r.json()["errors"][0]["pointer"], "/1", "{}", r.text());
    // Doubling the document with `copy from ""`: refused at the first op past 4 MiB.
    let ops: Vec<Value> = (0..40)
        .map(|i| json!({"op": "copy", "from": "", "path": format!("/x{i}")}))
        .collect();
    let r = api
        .req(Method::PATCH, "/v1/config", &ct, &patch(&ops))
        .await;
    assert_eq!(r.status, 422, "{}", r.text());
    let pointer = r.json()["errors"][0]["pointer"]
        .as_str()
        .unwrap()
        .to_owned();
    let index: usize = pointer[1..].parse().unwrap();
    assert!((10..40).contains(&index), "{pointer}");
    assert!(r.text().contains("4194304 bytes"), "{}", r.text());
    assert_eq!(api.fake.config()["workers"], 2, "nothing applied");
}

#[tokio::test]
async fn every_documented_route_is_served_and_nothing_else() {
    let api = start().await;
    let r = api.req(Method::GET, "/openapi.json", &[], "").await;
    assert_eq!(r.status, 200);
    let committed =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.json"))
            .unwrap();
    assert_eq!(r.text(), committed, "served and committed documents differ");
    let doc = r.json();
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() >= 13, "{:?}", paths.keys());
    let all = [
        Method::GET,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
        Method::POST,
    ];
    for (template, item) in paths {
        let path = template.replace("{pointer}", "workers");
        let documented: Vec<Method> = all
            .iter()
            .filter(|m| item.get(m.as_str().to_ascii_lowercase()).is_some())
            .cloned()
            .collect();
        for m in &all {
            // A changing request with a foreign Origin reaches the route's guard (403) and
            // changes nothing; a read is answered by the route.
            let foreign = [("origin", "http://evil.example"), ("host", "localhost")];
            let headers: &[(&str, &str)] = if *m == Method::GET { &[] } else { &foreign };
            let r = api.raw(m.clone(), &path, headers, "").await;
            if documented.contains(m) {
                let expected: &[u16] = if *m == Method::GET { &[200] } else { &[403] };
                assert!(
                    expected.contains(&r.status.as_u16()),
                    "{m} {path}: {} {}",
                    r.status,
                    r.text()
                );
            } else {
                assert_eq!(r.status, 405, "{m} {path}: {}", r.text());
                let allow: Vec<&str> = documented.iter().map(Method::as_str).collect();
                assert_eq!(r.header("allow").unwrap(), allow.join(", "), "{path}");
            }
        }
    }
    assert!(!api.fake.stopped.load(Ordering::SeqCst));
    // A trailing slash names the same resource (the root pointer for `/v1/config/`).
    for (path, key) in [
        ("/v1/config/", "/workers"),
        ("/v1/config/cache/", "/size-max"),
    ] {
        let r = api.req(Method::GET, path, &[], "").await;
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        assert!(r.json().pointer(key).is_some(), "{path}: {}", r.text());
    }
    let r = api.req(Method::GET, "/status/", &[], "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    for path in ["/nope", "/v1", "/v1/configs", "/status/x", "/openapi"] {
        let r = api.req(Method::GET, path, &[], "").await;
        assert_eq!(r.status, 404, "{path}");
        assert!(r.json()["error"].as_str().unwrap().contains(path), "{path}");
    }
}

#[tokio::test]
async fn silent_and_slow_clients_are_cut_off_after_the_head_read_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let api = start_with(|cfg| cfg.header_read_timeout = Duration::from_millis(500)).await;
    let t0 = std::time::Instant::now();
    // One client sends nothing, one half a request head, one a head one byte per 100 ms.
    let silent = tokio::net::UnixStream::connect(&api.socket).await.unwrap();
    let mut partial = tokio::net::UnixStream::connect(&api.socket).await.unwrap();
    partial
        .write_all(b"GET /status HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut dribble = tokio::net::UnixStream::connect(&api.socket).await.unwrap();
    let dribbler = tokio::spawn(async move {
        for b in b"GET /status HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" {
            if dribble.write_all(&[*b]).await.is_err() {
                return (dribble, true);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        (dribble, false)
    });
    // Meanwhile other clients are served.
    assert_eq!(api.req(Method::GET, "/healthz", &[], "").await.status, 200);
    for (name, mut stream) in [("silent", silent), ("partial", partial)] {
        let mut buf = Vec::new();
        // 10 s only fails a hang; the limit is 0.5 s.
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("{name}: connection still open after 10 s"));
        println!(
            "{name}: closed after {:?} ({read:?}, {} bytes: {:?})",
            t0.elapsed(),
            buf.len(),
            String::from_utf8_lossy(&buf)
        );
        assert!(!String::from_utf8_lossy(&buf).contains("200 OK"), "{name}");
    }
    let (mut dribble, write_failed) = dribbler.await.unwrap();
    let mut buf = Vec::new();
    let closed = write_failed
        || tokio::time::timeout(Duration::from_secs(10), dribble.read_to_end(&mut buf))
            .await
            .is_ok();
    println!("dribble: closed after {:?}", t0.elapsed());
    assert!(closed, "a head sent one byte per 100 ms was never cut off");
}
