//! Request routing and the endpoint handlers. See docs/api.md for the contract.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Body;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use super::doc::{self, BodyFormat, DocError};
use super::guard::{self, GuardError};
use super::heavy::{self, WorkFailed};
use super::metrics::{self, ScrapeMetrics};
use super::plane::{ApplyError, ControlPlane, FieldError};
use super::server::ServerConfig;
use super::worker::WorkerControl;

/// Shared state of the handlers.
pub struct ApiState {
    cfg: ServerConfig,
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

type Resp = Response<Full<Bytes>>;

/// An error response: status + JSON body `{"status", "error", ...extra}`.
struct ApiError {
    status: StatusCode,
    message: String,
    extra: Option<(&'static str, Value)>,
    headers: Vec<(header::HeaderName, String)>,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            extra: None,
            headers: Vec::new(),
        }
    }

    fn with(mut self, key: &'static str, value: Value) -> Self {
        self.extra = Some((key, value));
        self
    }

    fn header(mut self, name: header::HeaderName, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    fn into_response(self) -> Resp {
        let mut body = json!({"status": self.status.as_u16(), "error": self.message});
        if let (Some((k, v)), Some(obj)) = (self.extra, body.as_object_mut()) {
            obj.insert(k.to_owned(), v);
        }
        let mut resp = json_response(self.status, &body);
        for (name, value) in self.headers {
            if let Ok(v) = HeaderValue::from_str(&value) {
                resp.headers_mut().insert(name, v);
            }
        }
        resp
    }
}

impl From<DocError> for ApiError {
    fn from(e: DocError) -> Self {
        let status = match &e {
            DocError::Parse { .. } => StatusCode::BAD_REQUEST,
            DocError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            DocError::NotFound(_) => StatusCode::NOT_FOUND,
            DocError::TooManyOps { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            DocError::Patch { .. } | DocError::TooLarge { .. } | DocError::NotAnObject => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
        };
        // Where it applies, the field: a patch operation (`/3`) or the edited pointer.
        let field = match &e {
            DocError::Patch { index, message } => Some((format!("/{index}"), message.clone())),
            DocError::TooManyOps { .. } => Some((
                format!("/{}", doc::MAX_PATCH_OPS),
                format!("at most {} operations", doc::MAX_PATCH_OPS),
            )),
            DocError::TooLarge { pointer, limit } => Some((
                pointer.clone(),
                format!("the configuration would be larger than {limit} bytes of JSON"),
            )),
            _ => None,
        };
        let err = ApiError::new(status, e.to_string());
        match field {
            Some((pointer, message)) => {
                err.with("errors", json!([FieldError { pointer, message }]))
            }
            None => err,
        }
    }
}

impl From<GuardError> for ApiError {
    fn from(e: GuardError) -> Self {
        let status = match e {
            GuardError::ForeignOrigin { .. } => StatusCode::FORBIDDEN,
            GuardError::ContentType { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        };
        ApiError::new(status, e.to_string())
    }
}

impl From<WorkFailed> for ApiError {
    fn from(e: WorkFailed) -> Self {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    }
}

impl From<ApplyError> for ApiError {
    fn from(e: ApplyError) -> Self {
        match e {
            ApplyError::Invalid(errors) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid configuration")
                    .with("errors", json!(errors))
            }
            ApplyError::Rejected { revision, reasons } => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "change rejected by the fleet; workers rolled back",
            )
            .with(
                "rejected",
                json!({"revision": revision, "reasons": reasons}),
            ),
            ApplyError::Superseded { by } => ApiError::new(
                StatusCode::CONFLICT,
                format!("superseded by a newer change (etag {by})"),
            ),
            ApplyError::BaseChanged { current } => ApiError::new(
                StatusCode::PRECONDITION_FAILED,
                format!("the configuration changed meanwhile (etag now {current})"),
            ),
            ApplyError::Unavailable(m) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, m),
        }
    }
}

fn json_response(status: StatusCode, value: &Value) -> Resp {
    let mut body = serde_json::to_vec_pretty(value).unwrap_or_default();
    body.push(b'\n');
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

fn text_response(status: StatusCode, content_type: &'static str, body: String) -> Resp {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

fn with_etag(mut resp: Resp, etag: &str) -> Resp {
    if let Ok(v) = HeaderValue::from_str(etag) {
        resp.headers_mut().insert(header::ETAG, v);
    }
    resp
}

/// The routes: which methods a path allows.
enum Route {
    Config(String),
    Status,
    Healthz,
    Readyz,
    Metrics,
    Schema,
    Reload,
    Stop,
    CacheClear,
    History,
    Rollback,
}

impl Route {
    fn find(path: &str) -> Option<Route> {
        Some(match path {
            "/status" => Route::Status,
            "/healthz" => Route::Healthz,
            "/readyz" => Route::Readyz,
            "/metrics" => Route::Metrics,
            "/schema" => Route::Schema,
            "/reload" => Route::Reload,
            "/stop" => Route::Stop,
            "/cache/clear" => Route::CacheClear,
            "/v1/history" => Route::History,
            "/v1/rollback" => Route::Rollback,
            p if p == "/v1/config" || p.starts_with("/v1/config/") => {
                Route::Config(doc::pointer_from_path(&p["/v1/config".len()..]))
            }
            _ => return None,
        })
    }

    fn allowed(&self) -> &'static [Method] {
        match self {
            Route::Config(p) if p.is_empty() => &[Method::GET, Method::PUT, Method::PATCH],
            Route::Config(_) => &[Method::GET, Method::PUT, Method::PATCH, Method::DELETE],
            Route::Status
            | Route::Healthz
            | Route::Readyz
            | Route::Metrics
            | Route::Schema
            | Route::History => &[Method::GET],
            Route::Reload | Route::Stop | Route::CacheClear | Route::Rollback => &[Method::POST],
        }
    }
}

/// Handle one request.
pub async fn handle<B>(state: Arc<ApiState>, req: Request<B>) -> Resp
where
    B: Body<Data = Bytes> + Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let resp = match route(&state, req).await {
        Ok(resp) => resp,
        Err(e) => e.into_response(),
    };
    tracing::debug!(%method, %path, status = resp.status().as_u16(), "API request");
    resp
}

async fn route<B>(state: &Arc<ApiState>, req: Request<B>) -> Result<Resp, ApiError>
where
    B: Body<Data = Bytes> + Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let Some(route) = Route::find(req.uri().path()) else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no such endpoint: {}", req.uri().path()),
        ));
    };
    let allowed = route.allowed();
    if !allowed.contains(req.method()) {
        let allow = allowed
            .iter()
            .map(Method::as_str)
            .collect::<Vec<_>>()
            .join(", ");
        return Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("method {} not allowed here; allowed: {allow}", req.method()),
        )
        .header(header::ALLOW, allow));
    }
    if guard::is_mutating(req.method()) {
        let h = req.headers();
        guard::check(
            req.method(),
            header_str(h, header::ORIGIN).as_deref(),
            header_str(h, header::HOST).as_deref(),
            header_str(h, header::CONTENT_TYPE).as_deref(),
        )?;
    }
    let cfg = &state.cfg;
    let is_change = matches!(route, Route::Config(_)) && req.method() != Method::GET
        || matches!(route, Route::Reload | Route::Rollback);
    let bound = if is_change {
        cfg.change_timeout
    } else {
        cfg.request_timeout
    };
    let work = async {
        match route {
            Route::Healthz => Ok(json_response(StatusCode::OK, &json!({"status": "alive"}))),
            Route::Readyz => {
                let status = state.plane.status();
                let ready = status.ready();
                let code = if ready {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                Ok(json_response(
                    code,
                    &json!({"ready": ready, "current-revision": status.current_revision}),
                ))
            }
            Route::Status => Ok(json_response(
                StatusCode::OK,
                &serde_json::to_value(state.plane.status()).unwrap_or(Value::Null),
            )),
            Route::Schema => Ok(json_response(StatusCode::OK, &state.plane.schema())),
            Route::Metrics => get_metrics(state).await,
            Route::Reload => {
                let applied = state.plane.reload().await?;
                Ok(with_etag(
                    json_response(StatusCode::OK, &json!(applied)),
                    &applied.etag,
                ))
            }
            Route::Stop => {
                state.plane.stop().await?;
                Ok(json_response(StatusCode::OK, &json!({"stopping": true})))
            }
            Route::CacheClear => {
                let body = read_body(req, cfg.max_body_bytes).await?;
                cache_clear(state, body.0, body.1).await
            }
            Route::Config(pointer) => config(state, req, &pointer).await,
            Route::History => Ok(json_response(
                StatusCode::OK,
                &json!({"revisions": state.plane.history()}),
            )),
            Route::Rollback => {
                let (_, body) = read_body(req, cfg.max_body_bytes).await?;
                let revision = rollback_revision(&body)?;
                let applied = state.plane.rollback(revision).await?;
                Ok(with_etag(
                    json_response(StatusCode::OK, &json!(applied)),
                    &applied.etag,
                ))
            }
        }
    };
    match tokio::time::timeout(bound, work).await {
        Ok(r) => r,
        Err(_) => Err(ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            format!(
                "not finished within {} s; a change goes on in the background, see GET /status",
                bound.as_secs()
            ),
        )),
    }
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
async fn read_body<B>(req: Request<B>, limit: usize) -> Result<(Option<String>, Bytes), ApiError>
where
    B: Body<Data = Bytes> + Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let content_type = header_str(req.headers(), header::CONTENT_TYPE);
    let mut too_large = declared.is_some_and(|n| n > limit as u64);
    let mut body = std::pin::pin!(req.into_body());
    let mut buf = bytes::BytesMut::new();
    let mut seen = 0usize;
    let drain = async {
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| {
                let e: Box<dyn std::error::Error + Send + Sync> = e.into();
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("cannot read request body: {e}"),
                )
            })?;
            if let Ok(data) = frame.into_data() {
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

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<String> {
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

async fn get_metrics(state: &Arc<ApiState>) -> Result<Resp, ApiError> {
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

async fn config<B>(state: &Arc<ApiState>, req: Request<B>, pointer: &str) -> Result<Resp, ApiError>
where
    B: Body<Data = Bytes> + Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let if_match = header_str(req.headers(), header::IF_MATCH);
    let if_none_match = header_str(req.headers(), header::IF_NONE_MATCH);
    let wants_yaml = header_str(req.headers(), header::ACCEPT)
        .is_some_and(|a| a.contains("yaml") && !a.contains("json"));
    let dry_run = query_flag(req.uri().query(), "dry-run");
    let method = req.method().clone();

    if method == Method::GET {
        let (plane, pointer) = (state.plane.clone(), pointer.to_owned());
        return heavy::run(move || {
            let current = plane.config();
            let etag = doc::etag_of(&current);
            if if_none_match
                .as_deref()
                .is_some_and(|h| doc::etag_matches(h, &etag))
            {
                let mut resp = Response::new(Full::new(Bytes::new()));
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
        let (plane, edit, pointer) = (state.plane.clone(), edit.clone(), pointer.to_owned());
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
            return Ok(json_response(StatusCode::OK, &json!(plan)));
        }
        match state.plane.apply(new, &etag).await {
            Ok(applied) => {
                return Ok(with_etag(
                    json_response(StatusCode::OK, &json!(applied)),
                    &applied.etag,
                ));
            }
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

/// `POST /cache/clear` body, as upstream's cache clear API.
#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct CacheClear {
    name: Option<String>,
    #[serde(default)]
    exact_name: bool,
    rr_type: Option<String>,
    chunk_size: Option<u64>,
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

async fn cache_clear(
    state: &Arc<ApiState>,
    content_type: Option<String>,
    body: Bytes,
) -> Result<Resp, ApiError> {
    let req: CacheClear = if body.iter().all(u8::is_ascii_whitespace) {
        CacheClear::default()
    } else {
        let format = doc::body_format(content_type.as_deref())?;
        let value = heavy::run(move || doc::parse_body(&body, format)).await??;
        serde_json::from_value(value).map_err(|e| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid cache clear request",
            )
            .with(
                "errors",
                json!([FieldError {
                    pointer: String::new(),
                    message: e.to_string()
                }]),
            )
        })?
    };
    let lua = cache_clear_lua(&req).map_err(|errors| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid cache clear request",
        )
        .with("errors", json!(errors))
    })?;
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
