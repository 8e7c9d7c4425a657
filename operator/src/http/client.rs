//! A small client for the API (kresctl, tests): one HTTP/1.1 request per connection, over the
//! unix socket or TCP.

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper::header::HeaderMap;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

/// Where the API is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Unix socket path.
    Unix(PathBuf),
    /// `host:port` of a TCP listener.
    Tcp(String),
}

/// Errors talking to the API (not HTTP error statuses: those are a [`Reply`]).
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Connecting failed.
    #[error("cannot connect to the API at {target}: {source}")]
    Connect {
        /// Where.
        target: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The HTTP exchange failed.
    #[error("HTTP error talking to {target}: {message}")]
    Http {
        /// Where.
        target: String,
        /// What.
        message: String,
    },
    /// No reply in time.
    #[error("no reply from {target} within {} s", .timeout.as_secs())]
    Timeout {
        /// Where.
        target: String,
        /// Bound.
        timeout: Duration,
    },
}

/// An HTTP reply.
#[derive(Debug, Clone)]
pub struct Reply {
    /// Status code.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// Body.
    pub body: Bytes,
}

impl Reply {
    /// The body as text (lossy UTF-8).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON (`Null` if it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// A header as text.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }
}

/// Client for one API endpoint.
#[derive(Debug, Clone)]
pub struct ApiClient {
    target: Target,
    timeout: Duration,
}

impl ApiClient {
    /// A client; `timeout` bounds each whole request (changes wait for convergence: be generous).
    pub fn new(target: Target, timeout: Duration) -> Self {
        Self { target, timeout }
    }

    fn describe(&self) -> String {
        match &self.target {
            Target::Unix(p) => p.display().to_string(),
            Target::Tcp(a) => a.clone(),
        }
    }

    /// Send `method path` with `headers` and `body`.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Result<Reply, ClientError> {
        let target = self.describe();
        let work = async {
            match &self.target {
                Target::Unix(p) => {
                    let s = tokio::net::UnixStream::connect(p).await.map_err(|source| {
                        ClientError::Connect {
                            target: target.clone(),
                            source,
                        }
                    })?;
                    exchange(s, &target, method, path, headers, body.into()).await
                }
                Target::Tcp(a) => {
                    let s = tokio::net::TcpStream::connect(a).await.map_err(|source| {
                        ClientError::Connect {
                            target: target.clone(),
                            source,
                        }
                    })?;
                    exchange(s, &target, method, path, headers, body.into()).await
                }
            }
        };
        tokio::time::timeout(self.timeout, work)
            .await
            .map_err(|_| ClientError::Timeout {
                target: target.clone(),
                timeout: self.timeout,
            })?
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> Result<Reply, ClientError> {
        self.request(Method::GET, path, &[], Bytes::new()).await
    }
}

async fn exchange<S>(
    stream: S,
    target: &str,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Result<Reply, ClientError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let http = |e: &dyn std::fmt::Display| ClientError::Http {
        target: target.to_owned(),
        message: e.to_string(),
    };
    let (mut sender, conn) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| http(&e))?;
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    let host = if target.starts_with('/') {
        "localhost"
    } else {
        target
    };
    let mut builder = Request::builder().method(method).uri(path);
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        builder = builder.header("host", host);
    }
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    let req = builder.body(Full::new(body)).map_err(|e| http(&e))?;
    let resp = sender.send_request(req).await.map_err(|e| http(&e))?;
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| http(&e))?
        .to_bytes();
    driver.abort();
    Ok(Reply {
        status,
        headers,
        body,
    })
}
