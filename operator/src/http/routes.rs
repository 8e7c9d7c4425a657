//! The route table ([`ROUTES`]) and the endpoint handlers. See docs/api.md for the contract.
//!
//! Every endpoint is one [`Route`]: method, path, deadline, handler and what it takes and answers.
//! The server's warp filters ([`super::filters`]) and the OpenAPI document
//! ([`super::openapi`]) are both built from this table, so a route cannot be served without being
//! documented.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Response, StatusCode};
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::doc::{self, BodyFormat, DocError};
use super::error::{ApiError, Resp, json_response, text_response};
use super::heavy;
use super::metrics::{self, ScrapeMetrics};
use super::plane::{
    Applied, ApplyError, ControlPlane, FieldError, HistoryEntry, Plan, StatusSnapshot,
};
use super::server::ServerConfig;
use super::worker::WorkerControl;

/// Shared state of the handlers.
pub struct ApiState {
    pub(super) cfg: ServerConfig,
    plane: Arc<dyn ControlPlane>,
    control: Arc<dyn WorkerControl>,
    scrape: ScrapeMetrics,
}

impl ApiState {
    /// State for one server.
    pub fn new(
        cfg: ServerConfig,
        plane: Arc<dyn ControlPlane>,
        control: Arc<dyn WorkerControl>,
    ) -> Self {
        Self {
            cfg,
            plane,
            control,
            scrape: ScrapeMetrics::default(),
        }
    }
}

/// A request body, read by the handler (not before: a request waiting for a heavy-work permit
/// leaves its body in the socket buffers).
pub type BodyStream = Pin<Box<dyn Stream<Item = Result<Bytes, warp::Error>> + Send>>;

/// A request as a handler gets it.
pub struct ApiRequest {
    /// The method.
    pub method: Method,
    /// The JSON pointer of a `/v1/config/{pointer}` route (percent-decoded), else `""`.
    pub pointer: String,
    /// The headers.
    pub headers: HeaderMap,
    /// The raw query string, if any.
    pub query: Option<String>,
    /// The body, unread.
    pub body: BodyStream,
}

/// What a handler returns.
pub type HandlerFuture = Pin<Box<dyn Future<Output = Result<Resp, ApiError>> + Send>>;

/// An endpoint's handler.
pub type Handler = fn(Arc<ApiState>, ApiRequest) -> HandlerFuture;

/// The JSON Schema of a body, by its Rust type.
pub type SchemaOf = fn(&mut SchemaGenerator) -> Schema;

/// How long a route may take before it answers `504`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deadline {
    /// [`ServerConfig::request_timeout`].
    Request,
    /// [`ServerConfig::change_timeout`]: the route waits for the fleet to converge.
    Change,
}

/// A response body as documented.
#[derive(Debug, Clone, Copy)]
pub enum Body {
    /// JSON of this schema.
    Json(SchemaOf),
    /// Text of this media type.
    Text(&'static str),
    /// No body.
    Empty,
}

/// One documented answer of a route.
#[derive(Debug, Clone, Copy)]
pub struct Answer {
    /// Status code.
    pub status: u16,
    /// When it is sent.
    pub description: &'static str,
    /// What it carries.
    pub body: Body,
}

/// The request body a route reads.
#[derive(Debug, Clone, Copy)]
pub struct RequestBody {
    /// Its schema.
    pub schema: SchemaOf,
    /// Whether it must be present.
    pub required: bool,
}

/// One endpoint: a method on a path.
#[derive(Debug)]
pub struct Route {
    /// The method.
    pub method: Method,
    /// The path; a final `{pointer}` segment matches a JSON pointer (the rest of the path).
    pub path: &'static str,
    /// One line: what it does.
    pub summary: &'static str,
    /// How long it may take.
    pub deadline: Deadline,
    /// The body it reads, if any.
    pub request: Option<RequestBody>,
    /// Whether it takes `?dry-run=true`.
    pub dry_run: bool,
    /// Its answers, besides the error codes every route of its kind can give.
    pub answers: &'static [Answer],
    /// Error codes specific to it (an [`super::error::ErrorBody`] each).
    pub errors: &'static [u16],
    /// The handler.
    pub handler: Handler,
}

impl Route {
    /// The route's timeout under `cfg`.
    pub fn timeout(&self, cfg: &ServerConfig) -> Duration {
        match self.deadline {
            Deadline::Request => cfg.request_timeout,
            Deadline::Change => cfg.change_timeout,
        }
    }
}

/// `T`'s schema (a reference into the document's components where `T` has a name).
pub fn schema<T: JsonSchema>(generator: &mut SchemaGenerator) -> Schema {
    generator.subschema_for::<T>()
}

/// `GET /healthz`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Alive {
    /// Always `alive`.
    pub status: String,
}

/// `GET /readyz`.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub struct Readiness {
    /// Whether a worker is ready on the current revision.
    pub ready: bool,
    /// The revision the fleet serves.
    pub current_revision: Option<String>,
}

/// `POST /stop`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Stopping {
    /// Always `true`.
    pub stopping: bool,
}

/// `GET /v1/history`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct History {
    /// Newest first.
    pub revisions: Vec<HistoryEntry>,
}

/// `POST /v1/rollback` body (or none: the newest good revision other than the desired one).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RollbackRequest {
    /// The good revision to make desired again.
    pub revision: Option<String>,
}

/// `POST /cache/clear` body, as upstream's cache clear API (every field optional).
#[derive(Debug, Deserialize, Default, JsonSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct CacheClear {
    /// Clear this name (and, unless `exact-name`, its subtree); default: everything.
    name: Option<String>,
    /// Clear only `name` itself.
    #[serde(default)]
    exact_name: bool,
    /// Only this record type (needs `exact-name: true`).
    rr_type: Option<String>,
    /// Records removed per round when clearing a subtree (default 100).
    chunk_size: Option<u64>,
}

/// `POST /cache/clear` answer: kresd's `cache.clear()` result, e.g. `{"count": 12, "round": 1}`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct CacheCleared {
    /// Records removed.
    pub count: Option<u64>,
    /// Rounds used (subtree clearing).
    pub round: Option<u64>,
}

/// A JSON Patch (RFC 6902): at most [`doc::MAX_PATCH_OPS`] operations.
fn json_patch_schema(_: &mut SchemaGenerator) -> Schema {
    schemars::json_schema!({
        "description": "RFC 6902 JSON Patch; paths are relative to the URL's pointer",
        "type": "array",
        "maxItems": doc::MAX_PATCH_OPS,
        "items": {
            "type": "object",
            "required": ["op", "path"],
            "properties": {
                "op": {"enum": ["add", "remove", "replace", "move", "copy", "test"]},
                "path": {"type": "string"},
                "from": {"type": "string"},
                "value": true
            }
        }
    })
}

/// The configuration document (the Knot Resolver 6 `config.yaml` model, defaults filled in).
fn config_schema(generator: &mut SchemaGenerator) -> Schema {
    generator.subschema_for::<kres_crd::config::ResolverConfig>()
}

/// Any JSON value (a part of the configuration document).
fn any_value(_: &mut SchemaGenerator) -> Schema {
    schemars::json_schema!(true)
}

/// A JSON Schema document.
fn json_schema_schema(_: &mut SchemaGenerator) -> Schema {
    schemars::json_schema!({
        "description": "a JSON Schema (draft 2020-12)",
        "type": "object"
    })
}

/// An OpenAPI document.
fn openapi_schema(_: &mut SchemaGenerator) -> Schema {
    schemars::json_schema!({
        "description": "an OpenAPI 3.1 document",
        "type": "object",
        "required": ["openapi", "paths"]
    })
}

const CHANGED: Answer = Answer {
    status: 200,
    description: "the fleet converged on the change (new `ETag` header)",
    body: Body::Json(schema::<Applied>),
};
const DRY_RUN_PLAN: Answer = Answer {
    status: 200,
    description: "with `?dry-run=true`: what the change would do; nothing changed",
    body: Body::Json(schema::<Plan>),
};
/// Errors of every configuration change.
const CHANGE_ERRORS: &[u16] = &[400, 404, 409, 412, 413, 422];
/// Errors of a re-read or rollback (the change comes from the file or the history).
const RELOAD_ERRORS: &[u16] = &[409, 422, 503];

const CONFIG_GET: &[Answer] = &[
    Answer {
        status: 200,
        description: "the value at the pointer (`ETag` header; `Accept: application/yaml` for YAML)",
        body: Body::Json(any_value),
    },
    Answer {
        status: 304,
        description: "`If-None-Match` matches the current ETag",
        body: Body::Empty,
    },
];
const CONFIG_ROOT_GET: &[Answer] = &[
    Answer {
        status: 200,
        description: "the desired configuration (`ETag` header; `Accept: application/yaml` for YAML)",
        body: Body::Json(config_schema),
    },
    CONFIG_GET[1],
];
const CONFIG_CHANGE: &[Answer] = &[CHANGED, DRY_RUN_PLAN];

const PUT_BODY: Option<RequestBody> = Some(RequestBody {
    schema: any_value,
    required: true,
});
const PATCH_BODY: Option<RequestBody> = Some(RequestBody {
    schema: json_patch_schema,
    required: true,
});

/// A change of the configuration document (`PUT`, `PATCH`, `DELETE` under `/v1/config`).
const fn config_change(
    method: Method,
    path: &'static str,
    summary: &'static str,
    request: Option<RequestBody>,
) -> Route {
    Route {
        method,
        path,
        summary,
        deadline: Deadline::Change,
        request,
        dry_run: true,
        answers: CONFIG_CHANGE,
        errors: CHANGE_ERRORS,
        handler: |s, r| h(config(s, r)),
    }
}

fn h<F>(f: F) -> HandlerFuture
where
    F: Future<Output = Result<Resp, ApiError>> + Send + 'static,
{
    Box::pin(f)
}

/// Every endpoint of the API.
pub static ROUTES: &[Route] = &[
    Route {
        method: Method::GET,
        path: "/healthz",
        summary: "liveness: 200 while the process runs",
        deadline: Deadline::Request,
        request: None,
        dry_run: false,
        answers: &[Answer {
            status: 200,
            description: "alive",
            body: Body::Json(schema::<Alive>),
        }],
        errors: &[],
        handler: |_, _| {
            h(async {
                Ok(json_response(
                    StatusCode::OK,
                    &Alive {
                        status: "alive".into(),
                    },
                ))
            })
        },
    },
    Route {
        method: Method::GET,
        path: "/readyz",
        summary: "readiness: 200 iff at least one worker is ready on the current revision",
        deadline: Deadline::Request,
        request: None,
        dry_run: false,
        answers: &[
            Answer {
                status: 200,
                description: "ready",
                body: Body::Json(schema::<Readiness>),
            },
            Answer {
                status: 503,
                description: "not ready",
                body: Body::Json(schema::<Readiness>),
            },
        ],
        errors: &[],
        handler: |s, _| h(readyz(s)),
    },
    Route {
        method: Method::GET,
        path: "/status",
        summary: "the operator's status: revisions, rollout phase, workers, events, last failure",
        deadline: Deadline::Request,
        request: None,
        dry_run: false,
        answers: &[Answer {
            status: 200,
            description: "the status",
            body: Body::Json(schema::<StatusSnapshot>),
        }],
        errors: &[],
        handler: |s, _| h(async move { Ok(json_response(StatusCode::OK, &s.plane.status())) }),
    },
    Route {
        method: Method::GET,
        path: "/metrics",
        summary: "Prometheus metrics of the operator and of every worker (text format 0.0.4)",
        deadline: Deadline::Request,
        request: None,
        dry_run: false,
        answers: &[Answer {
            status: 200,
            description: "the metrics",
            body: Body::Text(metrics::CONTENT_TYPE),
        }],
        errors: &[],
        handler: |s, _| h(get_metrics(s)),
    },
    Route {
        method: Method::GET,
        path: "/schema",
        summary: "JSON Schema of the configuration document",
        deadline: Deadline::Request,
        request: None,
        dry_run: false,
        answers: &[Answer {
            status: 200,
            description: "the schema",
            body: Body::Json(json_schema_schema),
        }],
        errors: &[],
        handler: |s, _| h(async move { Ok(json_response(StatusCode::OK, &s.plane.schema())) }),
    },
    Route {
        method: Method::GET,
        path: "/openapi.json",
        summary: "this API as an OpenAPI 3.1 document",
        deadline: Deadline::Request,
        request: None,
        dry_run: false,
        answers: &[Answer {
            status: 200,
            description: "the document",
            body: Body::Json(openapi_schema),
        }],
        errors: &[],
        handler: |_, _| h(async { Ok(json_response(StatusCode::OK, super::openapi::document())) }),
    },
    Route {
        method: Method::POST,
        path: "/reload",
        summary: "re-read the configuration file (as SIGHUP); returns like a change",
        deadline: Deadline::Change,
        request: None,
        dry_run: false,
        answers: &[CHANGED],
        errors: RELOAD_ERRORS,
        handler: |s, _| h(reload(s)),
    },
    Route {
        method: Method::POST,
        path: "/stop",
        summary: "stop the workers and the operator",
        deadline: Deadline::Request,
        request: None,
        dry_run: false,
        answers: &[Answer {
            status: 200,
            description: "stopping",
            body: Body::Json(schema::<Stopping>),
        }],
        errors: &[503],
        handler: |s, _| h(stop(s)),
    },
    Route {
        method: Method::POST,
        path: "/cache/clear",
        summary: "clear the shared cache (kresd's cache.clear() on one worker)",
        deadline: Deadline::Request,
        request: Some(RequestBody {
            schema: schema::<CacheClear>,
            required: false,
        }),
        dry_run: false,
        answers: &[Answer {
            status: 200,
            description: "kresd's result",
            body: Body::Json(schema::<CacheCleared>),
        }],
        errors: &[400, 413, 422, 503],
        handler: |s, r| h(cache_clear(s, r)),
    },
    Route {
        method: Method::GET,
        path: "/v1/history",
        summary: "the last revisions, newest first",
        deadline: Deadline::Request,
        request: None,
        dry_run: false,
        answers: &[Answer {
            status: 200,
            description: "the history",
            body: Body::Json(schema::<History>),
        }],
        errors: &[],
        handler: |s, _| {
            h(async move {
                let history = History {
                    revisions: s.plane.history(),
                };
                Ok(json_response(StatusCode::OK, &history))
            })
        },
    },
    Route {
        method: Method::POST,
        path: "/v1/rollback",
        summary: "make a previous good revision's configuration desired again; returns like a change",
        deadline: Deadline::Change,
        request: Some(RequestBody {
            schema: schema::<RollbackRequest>,
            required: false,
        }),
        dry_run: false,
        answers: &[CHANGED],
        errors: &[400, 409, 413, 422, 503],
        handler: |s, r| h(rollback(s, r)),
    },
    Route {
        method: Method::GET,
        path: "/v1/config",
        summary: "the desired configuration",
        deadline: Deadline::Request,
        request: None,
        dry_run: false,
        answers: CONFIG_ROOT_GET,
        errors: &[],
        handler: |s, r| h(config(s, r)),
    },
    config_change(
        Method::PUT,
        "/v1/config",
        "replace the whole configuration (omitted keys take their defaults)",
        Some(RequestBody {
            schema: config_schema,
            required: true,
        }),
    ),
    config_change(
        Method::PATCH,
        "/v1/config",
        "apply a JSON Patch to the configuration",
        PATCH_BODY,
    ),
    Route {
        method: Method::GET,
        path: "/v1/config/{pointer}",
        summary: "the value at a JSON pointer into the configuration",
        deadline: Deadline::Request,
        request: None,
        dry_run: false,
        answers: CONFIG_GET,
        errors: &[404],
        handler: |s, r| h(config(s, r)),
    },
    config_change(
        Method::PUT,
        "/v1/config/{pointer}",
        "replace (or create in an existing object, `-` appends to an array) the value at a pointer",
        PUT_BODY,
    ),
    config_change(
        Method::PATCH,
        "/v1/config/{pointer}",
        "apply a JSON Patch to the value at a pointer (operation paths relative to it)",
        PATCH_BODY,
    ),
    config_change(
        Method::DELETE,
        "/v1/config/{pointer}",
        "remove the key at a pointer, which puts its default back",
        None,
    ),
];

fn with_etag(mut resp: Resp, etag: &str) -> Resp {
    if let Ok(v) = HeaderValue::from_str(etag) {
        resp.headers_mut().insert(header::ETAG, v);
    }
    resp
}

fn applied_response(applied: &Applied) -> Resp {
    with_etag(json_response(StatusCode::OK, applied), &applied.etag)
}

async fn readyz(state: Arc<ApiState>) -> Result<Resp, ApiError> {
    let status = state.plane.status();
    let ready = status.ready();
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = Readiness {
        ready,
        current_revision: status.current_revision,
    };
    Ok(json_response(code, &body))
}

async fn reload(state: Arc<ApiState>) -> Result<Resp, ApiError> {
    let applied = state.plane.reload().await?;
    Ok(applied_response(&applied))
}

async fn stop(state: Arc<ApiState>) -> Result<Resp, ApiError> {
    state.plane.stop().await?;
    Ok(json_response(StatusCode::OK, &Stopping { stopping: true }))
}

async fn rollback(state: Arc<ApiState>, req: ApiRequest) -> Result<Resp, ApiError> {
    let (_, body) = read_body(req, state.cfg.max_body_bytes).await?;
    let revision = rollback_revision(&body)?;
    let applied = state.plane.rollback(revision).await?;
    Ok(applied_response(&applied))
}

/// The body of `POST /v1/rollback`: empty, or `{"revision": "<revision>"}`.
fn rollback_revision(body: &[u8]) -> Result<Option<String>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let bad = |m: &str| {
        ApiError::from(ApplyError::Invalid(vec![FieldError {
            pointer: "/revision".into(),
            message: m.into(),
        }]))
    };
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(o)) if o.keys().all(|k| k == "revision") => match o.get("revision") {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(r)) => Ok(Some(r.clone())),
            Some(_) => Err(bad("must be a string")),
        },
        Ok(_) => Err(bad(
            "the body must be {\"revision\": \"<revision>\"} or empty",
        )),
        Err(e) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("body is not JSON: {e}"),
        )),
    }
}

/// Most bytes read and thrown away from a too-large body before answering 413, so the client
/// (still sending) reads the answer instead of a connection reset.
const DRAIN_MAX: usize = 16 * 1024 * 1024;

/// Read a body up to `limit` bytes (413 above); returns (content-type, bytes).
async fn read_body(req: ApiRequest, limit: usize) -> Result<(Option<String>, Bytes), ApiError> {
    let declared = req
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let content_type = header_str(&req.headers, header::CONTENT_TYPE);
    let mut too_large = declared.is_some_and(|n| n > limit as u64);
    let mut body = req.body;
    let mut buf = bytes::BytesMut::new();
    let mut seen = 0usize;
    let drain = async {
        while let Some(data) = body.next().await {
            let data = data.map_err(|e| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("cannot read request body: {e}"),
                )
            })?;
            seen += data.len();
            if seen > limit {
                too_large = true;
                buf.clear();
            }
            if too_large {
                if seen > DRAIN_MAX {
                    break;
                }
            } else {
                buf.extend_from_slice(&data);
            }
        }
        Ok::<(), ApiError>(())
    };
    // A slow or stuck sender of an oversized body is not waited for long.
    match tokio::time::timeout(Duration::from_secs(5), drain).await {
        Ok(r) => r?,
        Err(_) if too_large => {}
        Err(_) => {
            return Err(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "request body not received in time",
            ));
        }
    }
    if too_large {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body larger than {limit} bytes"),
        ));
    }
    Ok((content_type, buf.freeze()))
}

/// A header's value, if it is text.
pub fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn query_flag(query: Option<&str>, key: &str) -> bool {
    query.unwrap_or("").split('&').any(|kv| {
        let mut it = kv.splitn(2, '=');
        it.next() == Some(key) && matches!(it.next(), None | Some("true") | Some("1"))
    })
}

async fn get_metrics(state: Arc<ApiState>) -> Result<Resp, ApiError> {
    let sockets = state.plane.worker_control_sockets();
    let workers =
        metrics::scrape_workers(sockets, state.cfg.scrape_timeout, state.control.clone()).await;
    let text = metrics::encode(
        &state.plane.metrics(),
        &state.scrape,
        &state.plane.status(),
        workers,
    )
    .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "cannot encode metrics"))?;
    Ok(text_response(StatusCode::OK, metrics::CONTENT_TYPE, text))
}

/// The edit a config request makes, applied to the current document.
enum Edit {
    Put(Value),
    Patch(json_patch::Patch),
    Delete,
}

async fn config(state: Arc<ApiState>, req: ApiRequest) -> Result<Resp, ApiError> {
    let if_match = header_str(&req.headers, header::IF_MATCH);
    let if_none_match = header_str(&req.headers, header::IF_NONE_MATCH);
    let wants_yaml = header_str(&req.headers, header::ACCEPT)
        .is_some_and(|a| a.contains("yaml") && !a.contains("json"));
    let dry_run = query_flag(req.query.as_deref(), "dry-run");
    let method = req.method.clone();
    let pointer = req.pointer.clone();

    if method == Method::GET {
        let plane = state.plane.clone();
        return heavy::run(move || {
            let current = plane.config();
            let etag = doc::etag_of(&current);
            if if_none_match
                .as_deref()
                .is_some_and(|h| doc::etag_matches(h, &etag))
            {
                let mut resp = Response::new(Bytes::new());
                *resp.status_mut() = StatusCode::NOT_MODIFIED;
                return Ok(with_etag(resp, &etag));
            }
            let value = doc::get(&current, &pointer)?;
            let resp = if wants_yaml {
                let text = serde_norway::to_string(value).map_err(|e| {
                    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("YAML: {e}"))
                })?;
                text_response(StatusCode::OK, "application/yaml", text)
            } else {
                json_response(StatusCode::OK, value)
            };
            Ok(with_etag(resp, &etag))
        })
        .await?;
    }

    let edit = if method == Method::DELETE {
        Edit::Delete
    } else {
        // The body is buffered and decoded under a heavy-work permit (bounded memory), off the
        // runtime thread.
        let permit = heavy::permit().await;
        let (ct, body) = read_body(req, state.cfg.max_body_bytes).await?;
        let format = doc::body_format(ct.as_deref())?;
        if method == Method::PUT && format == BodyFormat::JsonPatch {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "PUT takes a JSON or YAML value; send JSON Patch documents with PATCH",
            ));
        }
        let put = method == Method::PUT;
        heavy::run_with(permit, move || {
            let value = doc::parse_body(&body, format)?;
            Ok::<_, DocError>(if put {
                Edit::Put(value)
            } else {
                Edit::Patch(doc::parse_patch(value)?)
            })
        })
        .await??
    };
    let edit = Arc::new(edit);

    // Optimistic concurrency: read, check preconditions, edit, submit against the read ETag.
    // A concurrent change between read and submit is retried unless the client pinned an ETag.
    for _ in 0..5 {
        let (plane, edit, pointer) = (state.plane.clone(), edit.clone(), pointer.clone());
        let (match_h, none_match_h) = (if_match.clone(), if_none_match.clone());
        let (new, etag) = heavy::run(move || {
            let current = plane.config();
            let etag = doc::etag_of(&current);
            if let Some(h) = &match_h
                && !doc::etag_matches(h, &etag)
            {
                return Err(precondition(&etag, "If-Match does not match"));
            }
            if let Some(h) = &none_match_h
                && doc::etag_matches(h, &etag)
            {
                return Err(precondition(&etag, "If-None-Match matches"));
            }
            let new = match &*edit {
                Edit::Put(v) => doc::put(&current, &pointer, v.clone()),
                Edit::Patch(p) => doc::patch(&current, &pointer, p),
                Edit::Delete => doc::delete(&current, &pointer),
            }?;
            Ok((new, etag))
        })
        .await??;
        if dry_run {
            let plan = state.plane.dry_run(new).await?;
            return Ok(json_response(StatusCode::OK, &plan));
        }
        match state.plane.apply(new, &etag).await {
            Ok(applied) => return Ok(applied_response(&applied)),
            Err(ApplyError::BaseChanged { current }) => {
                if if_match.is_some() {
                    return Err(precondition(
                        &current,
                        "the configuration changed meanwhile",
                    ));
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::new(
        StatusCode::CONFLICT,
        "the configuration kept changing under this request; retry",
    ))
}

fn precondition(etag: &str, why: &str) -> ApiError {
    ApiError::new(
        StatusCode::PRECONDITION_FAILED,
        format!("precondition failed: {why} (current etag {etag})"),
    )
    .header(header::ETAG, etag)
}

/// The Lua call `cache.clear(...)` for a validated request.
fn cache_clear_lua(req: &CacheClear) -> Result<String, Vec<FieldError>> {
    let mut errors = Vec::new();
    let err = |p: &str, m: &str| FieldError {
        pointer: p.to_owned(),
        message: m.to_owned(),
    };
    if let Some(name) = &req.name {
        let ok = !name.is_empty()
            && name.len() <= 255
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '*'));
        if !ok {
            errors.push(err(
                "/name",
                "must be a domain name (letters, digits, '-', '_', '.')",
            ));
        }
    }
    if let Some(t) = &req.rr_type {
        if !req.exact_name {
            errors.push(err(
                "/rr-type",
                "'rr-type' is only supported with 'exact-name: true'",
            ));
        }
        let ok = t.len() <= 16
            && t.chars().next().is_some_and(|c| c.is_ascii_uppercase())
            && t.chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit());
        if !ok {
            errors.push(err(
                "/rr-type",
                "must be a record type name such as A or AAAA",
            ));
        }
    }
    if req.chunk_size == Some(0) {
        errors.push(err("/chunk-size", "must be a positive integer"));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    // kresd's cache.clear(name, exact_name, rr_type, chunk_size); the chunk size only applies to
    // subtree clearing. The name goes through the one Lua quoting function.
    let name = req
        .name
        .as_ref()
        .map(|n| {
            if n.ends_with('.') {
                kres_crd::lua::quote(n)
            } else {
                kres_crd::lua::quote(&format!("{n}."))
            }
        })
        .unwrap_or_else(|| "nil".to_owned());
    let rr = req
        .rr_type
        .as_ref()
        .map(|t| format!("kres.type.{t}"))
        .unwrap_or_else(|| "nil".to_owned());
    let chunk = if req.exact_name {
        "nil".to_owned()
    } else {
        req.chunk_size.unwrap_or(100).to_string()
    };
    Ok(format!(
        "tojson(cache.clear({name}, {}, {rr}, {chunk}))",
        req.exact_name
    ))
}

async fn cache_clear(state: Arc<ApiState>, req: ApiRequest) -> Result<Resp, ApiError> {
    let (content_type, body) = read_body(req, state.cfg.max_body_bytes).await?;
    let req: CacheClear = if body.iter().all(u8::is_ascii_whitespace) {
        CacheClear::default()
    } else {
        let format = doc::body_format(content_type.as_deref())?;
        let value = heavy::run(move || doc::parse_body(&body, format)).await??;
        serde_json::from_value(value).map_err(|e| {
            ApiError::invalid(
                "invalid cache clear request",
                vec![FieldError {
                    pointer: String::new(),
                    message: e.to_string(),
                }],
            )
        })?
    };
    let lua = cache_clear_lua(&req)
        .map_err(|errors| ApiError::invalid("invalid cache clear request", errors))?;
    // The cache is shared by all workers: one worker clears it for all.
    let sockets = state.plane.worker_control_sockets();
    let mut last_err = "no running worker".to_owned();
    for s in sockets {
        match tokio::time::timeout(
            state.cfg.request_timeout,
            state.control.eval_json(&s.path, &lua),
        )
        .await
        {
            Ok(Ok(result)) => return Ok(json_response(StatusCode::OK, &result)),
            Ok(Err(e)) => last_err = format!("worker {}: {e}", s.worker),
            Err(_) => last_err = format!("worker {}: timed out", s.worker),
        }
    }
    Err(ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("cache not cleared: {last_err}"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_clear_lua_shapes() {
        let all = cache_clear_lua(&CacheClear::default()).unwrap();
        assert_eq!(all, "tojson(cache.clear(nil, false, nil, 100))");
        let exact = cache_clear_lua(&CacheClear {
            name: Some("example.com".into()),
            exact_name: true,
            rr_type: Some("AAAA".into()),
            chunk_size: None,
        })
        .unwrap();
        assert_eq!(
            exact,
            "tojson(cache.clear('example.com.', true, kres.type.AAAA, nil))"
        );
        let bad = cache_clear_lua(&CacheClear {
            name: Some("x']]; os.exit()".into()),
            exact_name: false,
            rr_type: Some("a".into()),
            chunk_size: Some(0),
        })
        .unwrap_err();
        let ptrs: Vec<_> = bad.iter().map(|e| e.pointer.as_str()).collect();
        assert_eq!(ptrs, ["/name", "/rr-type", "/rr-type", "/chunk-size"]);
    }

    #[test]
    fn query_flags() {
        assert!(query_flag(Some("dry-run=true"), "dry-run"));
        assert!(query_flag(Some("a=b&dry-run"), "dry-run"));
        assert!(!query_flag(Some("dry-run=false"), "dry-run"));
        assert!(!query_flag(None, "dry-run"));
    }
}
