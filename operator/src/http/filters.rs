//! The API as one warp filter, built from the route table ([`ROUTES`]).
//!
//! Each route is a filter: its path (a final `{pointer}` segment takes the rest of the path as a
//! JSON pointer), its method, then the request's headers, query and (unread) body, handed to
//! [`dispatch`], which applies the checks every route shares: the `Origin` / `Content-Type` guard
//! on changing requests and the route's deadline. After every route come, per path, a filter
//! answering `405` with the path's `Allow` list, and last a `404` for any other path; so every
//! request gets an answer from a filter, and every answer is a JSON error body or the route's own.

use std::sync::Arc;

use bytes::Buf;
use futures::StreamExt;
use hyper::header::{self, HeaderMap};
use hyper::{Method, StatusCode};
use warp::Filter;
use warp::filters::BoxedFilter;
use warp::path::{FullPath, Tail};

use super::doc;
use super::error::{ApiError, Resp};
use super::guard;
use super::routes::{ApiRequest, ApiState, BodyStream, ROUTES, Route, header_str};

/// The whole API: every route of [`ROUTES`], then `405` and `404` answers.
pub fn api(state: Arc<ApiState>) -> BoxedFilter<(Resp,)> {
    let mut filters: Vec<BoxedFilter<(Resp,)>> = ROUTES
        .iter()
        .map(|route| served(route, state.clone()))
        .collect();
    let mut paths: Vec<&'static str> = Vec::new();
    for route in ROUTES {
        if !paths.contains(&route.path) {
            paths.push(route.path);
        }
    }
    filters.extend(paths.into_iter().map(method_not_allowed));
    let not_found = warp::path::full()
        .map(|full: FullPath| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no such endpoint: {}", full.as_str()),
            )
            .into_response()
        })
        .boxed();
    // f1.or(f2.or(... .or(not_found))): tried in order, the 404 last.
    filters
        .into_iter()
        .rev()
        .fold(not_found, |rest, f| f.or(rest).unify().boxed())
}

/// The methods the table serves on `path`, as an `Allow` header lists them.
pub fn allowed(path: &str) -> String {
    ROUTES
        .iter()
        .filter(|r| r.path == path)
        .map(|r| r.method.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Matches `template` (e.g. `/v1/config/{pointer}`) and extracts the JSON pointer (`""` for a
/// path without `{pointer}`; a `{pointer}` never matches an empty one).
fn path(template: &'static str) -> BoxedFilter<(String,)> {
    let mut filter = warp::any().boxed();
    for segment in template.trim_start_matches('/').split('/') {
        if segment == "{pointer}" {
            return filter
                .and(warp::path::tail())
                .and_then(|tail: Tail| async move {
                    let pointer = doc::pointer_from_path(&format!("/{}", tail.as_str()));
                    if pointer.is_empty() {
                        Err(warp::reject::not_found())
                    } else {
                        Ok(pointer)
                    }
                })
                .boxed();
        }
        filter = filter.and(warp::path(segment)).boxed();
    }
    filter.and(warp::path::end()).map(String::new).boxed()
}

/// Matches requests of `method`.
fn method_is(method: &'static Method) -> BoxedFilter<()> {
    warp::method()
        .and_then(move |m: Method| async move {
            if m == *method {
                Ok(())
            } else {
                Err(warp::reject::not_found())
            }
        })
        .untuple_one()
        .boxed()
}

/// The route's filter: path, method, request parts, [`dispatch`].
fn served(route: &'static Route, state: Arc<ApiState>) -> BoxedFilter<(Resp,)> {
    let query = warp::query::raw()
        .map(Some)
        .or(warp::any().map(|| None))
        .unify();
    let body = warp::body::stream().map(boxed_body);
    path(route.path)
        .and(method_is(&route.method))
        .and(warp::header::headers_cloned())
        .and(query)
        .and(body)
        .then(
            move |pointer: String, headers: HeaderMap, query: Option<String>, body: BodyStream| {
                let req = ApiRequest {
                    method: route.method.clone(),
                    pointer,
                    headers,
                    query,
                    body,
                };
                dispatch(state.clone(), route, req)
            },
        )
        .boxed()
}

/// The body as a stream of `Bytes`.
fn boxed_body<S, B>(stream: S) -> BodyStream
where
    S: futures::Stream<Item = Result<B, warp::Error>> + Send + 'static,
    B: Buf,
{
    Box::pin(stream.map(|chunk| chunk.map(|mut b| b.copy_to_bytes(b.remaining()))))
}

/// `405` for any method `path` does not serve, with the `Allow` list.
fn method_not_allowed(path_template: &'static str) -> BoxedFilter<(Resp,)> {
    let allow = allowed(path_template);
    path(path_template)
        .and(warp::method())
        .map(move |_pointer: String, method: Method| {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("method {method} not allowed here; allowed: {allow}"),
            )
            .header(header::ALLOW, allow.clone())
            .into_response()
        })
        .boxed()
}

/// Run `route`'s handler after the checks every route shares, within its deadline.
async fn dispatch(state: Arc<ApiState>, route: &'static Route, req: ApiRequest) -> Resp {
    let method = req.method.clone();
    let resp = match checked(state, route, req).await {
        Ok(resp) => resp,
        Err(e) => e.into_response(),
    };
    tracing::debug!(%method, path = route.path, status = resp.status().as_u16(), "API request");
    resp
}

async fn checked(
    state: Arc<ApiState>,
    route: &'static Route,
    req: ApiRequest,
) -> Result<Resp, ApiError> {
    if guard::is_mutating(&req.method) {
        let h = &req.headers;
        guard::check(
            &req.method,
            header_str(h, header::ORIGIN).as_deref(),
            header_str(h, header::HOST).as_deref(),
            header_str(h, header::CONTENT_TYPE).as_deref(),
        )?;
    }
    let bound = route.timeout(&state.cfg);
    match tokio::time::timeout(bound, (route.handler)(state, req)).await {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_lists_come_from_the_table() {
        assert_eq!(allowed("/v1/config"), "GET, PUT, PATCH");
        assert_eq!(allowed("/v1/config/{pointer}"), "GET, PUT, PATCH, DELETE");
        assert_eq!(allowed("/reload"), "POST");
    }
}
