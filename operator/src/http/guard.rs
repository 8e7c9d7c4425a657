//! Checks of a mutating request (`PUT`, `PATCH`, `DELETE`, `POST`) before any work, against
//! browsers used as a proxy (docs/api.md, "Exposure"):
//!
//! - An `Origin` header (browsers send one with every non-GET request) must name this server as
//!   the client addressed it (`http://` + the `Host` header), and that host must be an IP literal
//!   or `localhost`, so a page served under a DNS name that resolves to this listener (DNS
//!   rebinding) is refused as well. Clients that are not browsers send no `Origin`.
//! - `PUT`, `PATCH` and `POST` need a JSON or YAML `Content-Type`, even with an empty body: a
//!   browser page can only send those cross-origin after a CORS preflight, which this server never
//!   answers positively, so a "no-cors" form-style `POST /stop` never reaches a handler.
//!   `DELETE` takes no body; a `Content-Type` on it, if any, must be JSON or YAML too.

use hyper::Method;

use super::doc::{self, BodyFormat};

/// Why a mutating request is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GuardError {
    /// `Origin` is not this server (403).
    #[error(
        "cross-origin request refused: Origin '{origin}' is not this server ({host}); \
         changes are only taken from clients that send no Origin or this server's own"
    )]
    ForeignOrigin {
        /// The request's `Origin`.
        origin: String,
        /// The request's `Host` (or `none`).
        host: String,
    },
    /// Missing or wrong `Content-Type` (415).
    #[error("{method} needs Content-Type: application/json or application/yaml{patch} (got {got})")]
    ContentType {
        /// The request method.
        method: String,
        /// `", or application/json-patch+json"` for PATCH.
        patch: &'static str,
        /// What was sent (`none` if nothing).
        got: String,
    },
}

/// True for the methods that change something.
pub fn is_mutating(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Check a mutating request's `Origin`, `Host` and `Content-Type` headers.
pub fn check(
    method: &Method,
    origin: Option<&str>,
    host: Option<&str>,
    content_type: Option<&str>,
) -> Result<(), GuardError> {
    if let Some(origin) = origin
        && !same_origin(origin, host)
    {
        return Err(GuardError::ForeignOrigin {
            origin: origin.to_owned(),
            host: host.unwrap_or("none").to_owned(),
        });
    }
    let format = match content_type {
        None if *method == Method::DELETE => return Ok(()),
        None => None,
        Some(ct) => doc::body_format(Some(ct)).ok(),
    };
    let ok = match format {
        Some(BodyFormat::Json | BodyFormat::Yaml) => true,
        Some(BodyFormat::JsonPatch) => *method == Method::PATCH,
        None => false,
    };
    if ok {
        return Ok(());
    }
    Err(GuardError::ContentType {
        method: method.to_string(),
        patch: if *method == Method::PATCH {
            ", or application/json-patch+json"
        } else {
            ""
        },
        got: content_type.unwrap_or("none").to_owned(),
    })
}

/// `origin` is `http://HOST` for the request's `Host`, and HOST names no DNS name.
fn same_origin(origin: &str, host: Option<&str>) -> bool {
    let Some(host) = host else { return false };
    let matches = origin
        .strip_prefix("http://")
        .is_some_and(|o| o.eq_ignore_ascii_case(host));
    matches && literal_host(host)
}

/// The host part of a `Host` header is an IP literal or `localhost`.
fn literal_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const JSON: Option<&str> = Some("application/json");

    #[test]
    fn origins() {
        let host = Some("127.0.0.1:5000");
        assert!(check(&Method::POST, None, host, JSON).is_ok());
        assert!(check(&Method::POST, Some("http://127.0.0.1:5000"), host, JSON).is_ok());
        assert!(
            check(
                &Method::POST,
                Some("http://[::1]:5000"),
                Some("[::1]:5000"),
                JSON
            )
            .is_ok()
        );
        assert!(
            check(
                &Method::POST,
                Some("http://localhost:5000"),
                Some("localhost:5000"),
                JSON
            )
            .is_ok()
        );
        for (origin, host) in [
            ("http://evil.example", host),
            ("null", host),
            ("https://127.0.0.1:5000", host),
            ("http://127.0.0.1:5001", host),
            ("http://127.0.0.1:5000", None),
            // DNS rebinding: the page's own name resolves to the listener.
            ("http://rebind.example:5000", Some("rebind.example:5000")),
        ] {
            let e = check(&Method::POST, Some(origin), host, JSON).unwrap_err();
            assert!(
                matches!(e, GuardError::ForeignOrigin { .. }),
                "{origin}: {e}"
            );
        }
    }

    #[test]
    fn content_types() {
        let ok = |m: Method, ct: Option<&str>| check(&m, None, None, ct).is_ok();
        assert!(ok(Method::POST, JSON));
        assert!(ok(Method::PUT, Some("application/yaml; charset=utf-8")));
        assert!(ok(Method::PATCH, Some("application/json-patch+json")));
        assert!(ok(Method::DELETE, None));
        assert!(!ok(Method::POST, None), "an empty-body POST still needs it");
        assert!(!ok(Method::PUT, None));
        assert!(!ok(Method::POST, Some("text/plain")));
        assert!(!ok(Method::POST, Some("application/x-www-form-urlencoded")));
        assert!(!ok(Method::POST, Some("multipart/form-data; boundary=x")));
        assert!(!ok(Method::PUT, Some("application/json-patch+json")));
        assert!(!ok(Method::DELETE, Some("text/plain")));
        let e = check(&Method::PATCH, None, None, Some("text/plain")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "PATCH needs Content-Type: application/json or application/yaml, or \
             application/json-patch+json (got text/plain)"
        );
    }
}
