//! Error responses: every error is a JSON [`ErrorBody`] (docs/api.md, "Errors"), built from the
//! typed errors of the layers below, each mapped to one status code.

use bytes::Bytes;
use hyper::header::{self, HeaderName, HeaderValue};
use hyper::{Response, StatusCode};
use schemars::JsonSchema;
use serde::Serialize;

use super::doc::{self, DocError};
use super::guard::GuardError;
use super::heavy::WorkFailed;
use super::plane::{ApplyError, FieldError};

/// A response of the API: status, headers and a complete body.
pub type Resp = Response<Bytes>;

/// The JSON body of every error response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct ErrorBody {
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong.
    pub error: String,
    /// Every offending value, each with its RFC 6901 pointer (into the configuration document,
    /// the request body, or the JSON Patch: `/N` = operation N) and the rule it breaks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<FieldError>>,
    /// What the fleet said when its canary refused a change.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rejected: Option<Rejected>,
}

/// A change the fleet refused (the workers were rolled back to the last good revision).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct Rejected {
    /// Revision that failed, when one was rendered.
    pub revision: Option<String>,
    /// Every reason, e.g. kresd's own error line and the probe result.
    pub reasons: Vec<String>,
}

/// An error response: status, [`ErrorBody`] and extra headers.
#[derive(Debug)]
pub struct ApiError {
    body: Box<ErrorBody>,
    headers: Vec<(HeaderName, String)>,
}

impl ApiError {
    /// An error with a message.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            body: Box::new(ErrorBody {
                status: status.as_u16(),
                error: message.into(),
                errors: None,
                rejected: None,
            }),
            headers: Vec::new(),
        }
    }

    /// `422` with every field error.
    pub fn invalid(message: impl Into<String>, errors: Vec<FieldError>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, message).with_errors(errors)
    }

    /// Add the offending fields.
    pub fn with_errors(mut self, errors: Vec<FieldError>) -> Self {
        self.body.errors = Some(errors);
        self
    }

    /// Add a response header.
    pub fn header(mut self, name: HeaderName, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// The status code.
    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.body.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// The response.
    pub fn into_response(self) -> Resp {
        let mut resp = json_response(self.status(), &*self.body);
        for (name, value) in self.headers {
            if let Ok(v) = HeaderValue::from_str(&value) {
                resp.headers_mut().insert(name, v);
            }
        }
        resp
    }
}

/// A JSON response (pretty-printed, newline-terminated).
pub fn json_response<T: Serialize + ?Sized>(status: StatusCode, value: &T) -> Resp {
    let mut body = serde_json::to_vec_pretty(value).unwrap_or_default();
    body.push(b'\n');
    let mut resp = Response::new(Bytes::from(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// A text response of `content_type`.
pub fn text_response(status: StatusCode, content_type: &'static str, body: String) -> Resp {
    let mut resp = Response::new(Bytes::from(body));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
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
            Some((pointer, message)) => err.with_errors(vec![FieldError { pointer, message }]),
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
            ApplyError::Invalid(errors) => ApiError::invalid("invalid configuration", errors),
            ApplyError::Rejected { revision, reasons } => {
                let mut err = ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "change rejected by the fleet; workers rolled back",
                );
                err.body.rejected = Some(Rejected { revision, reasons });
                err
            }
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
