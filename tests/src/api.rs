//! A blocking client for the operator's HTTP API in tests.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use hyper::Method;
use kres_operator::http::client::{ApiClient, Reply, Target};

/// `headers` plus `Content-Type: application/json` for PUT, PATCH and POST when `headers` name
/// none (the API requires one on those methods).
pub fn with_json_type<'a>(m: &Method, headers: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut headers = headers.to_vec();
    let needs_type = matches!(*m, Method::PUT | Method::PATCH | Method::POST);
    if needs_type
        && !headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
    {
        headers.push(("content-type", "application/json"));
    }
    headers
}

/// Blocking API client (its own single-threaded runtime).
pub struct Api {
    rt: tokio::runtime::Runtime,
    client: ApiClient,
}

impl Api {
    /// A client for `target`, once its `/healthz` answers (up to 15 s).
    pub fn new(target: Target) -> Result<Api> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let api = Api {
            rt,
            client: ApiClient::new(target.clone(), Duration::from_secs(120)),
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        while api.try_raw(Method::GET, "/healthz", &[], "").is_err() {
            if Instant::now() > deadline {
                bail!("the API at {target:?} never answered");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(api)
    }

    /// A request with exactly `headers`.
    pub fn try_raw(
        &self,
        m: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Result<Reply> {
        Ok(self
            .rt
            .block_on(self.client.request(m, path, headers, body.to_owned()))?)
    }

    /// A request with exactly `headers`; panics if there is no HTTP answer.
    pub fn raw(&self, m: Method, path: &str, headers: &[(&str, &str)], body: &str) -> Reply {
        self.try_raw(m, path, headers, body).expect("API request")
    }

    /// A request, with a JSON content type added where required ([`with_json_type`]).
    pub fn req(&self, m: Method, path: &str, headers: &[(&str, &str)], body: &str) -> Reply {
        let headers = with_json_type(&m, headers);
        self.raw(m, path, &headers, body)
    }
}
