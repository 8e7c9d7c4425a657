//! The kube-apiserver audit log (level Metadata: who did what to which object, no bodies), so
//! tests can assert least privilege and "no writes in steady state".
//!
//! ```no_run
//! # async fn f(cp: &kres_tests::k8s::ControlPlane) -> Result<(), kres_tests::k8s::Error> {
//! let mark = cp.audit().mark()?;
//! // ... let the system run ...
//! let writes: Vec<_> = cp.audit().since(&mark)?.into_iter()
//!     .filter(|e| e.user == "system:serviceaccount:ns:kres-operator" && e.is_write())
//!     .collect();
//! assert!(writes.is_empty(), "{writes:#?}");
//! # Ok(()) }
//! ```

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::Error;

/// The audit policy: every request at level Metadata, one event per request (when the response
/// is complete; watches also when their response starts).
pub(crate) const POLICY: &str = "apiVersion: audit.k8s.io/v1\n\
kind: Policy\n\
omitStages: [\"RequestReceived\"]\n\
rules:\n\
- level: Metadata\n";

/// One audited request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    /// Authenticated user name (client certificate CN, `system:serviceaccount:NS:NAME`...).
    pub user: String,
    /// Kubernetes verb: get, list, watch, create, update, patch, delete, deletecollection.
    pub verb: String,
    /// API group ("" for core).
    pub api_group: String,
    /// Resource (plural, e.g. `pods`); empty for non-resource URLs such as /readyz.
    pub resource: String,
    /// Subresource (`status`, `binding`, `token`...), empty if none.
    pub subresource: String,
    /// Namespace, empty for cluster-scoped objects.
    pub namespace: String,
    /// Object name, empty for collections.
    pub name: String,
    /// HTTP status code of the response (0 if the event has none).
    pub code: u16,
    /// `ResponseComplete` or `ResponseStarted` (watches) or `Panic`.
    pub stage: String,
    /// RFC 3339 time the stage was reached.
    pub time: String,
}

impl AuditEvent {
    /// A request that changes state (create, update, patch, delete, deletecollection).
    pub fn is_write(&self) -> bool {
        matches!(
            self.verb.as_str(),
            "create" | "update" | "patch" | "delete" | "deletecollection"
        )
    }

    /// `(user, verb, resource[/subresource])`, the tuple RBAC is about.
    pub fn tuple(&self) -> (String, String, String) {
        let res = if self.subresource.is_empty() {
            self.resource.clone()
        } else {
            format!("{}/{}", self.resource, self.subresource)
        };
        (self.user.clone(), self.verb.clone(), res)
    }
}

/// A point in the audit log (byte offset of the next event).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditMark(u64);

/// The audit log file of one control plane.
#[derive(Debug, Clone)]
pub struct AuditLog {
    path: PathBuf,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawEvent {
    #[serde(default)]
    stage: String,
    #[serde(default)]
    verb: String,
    #[serde(default)]
    user: RawUser,
    #[serde(default)]
    object_ref: Option<RawObjectRef>,
    #[serde(default)]
    response_status: Option<RawStatus>,
    #[serde(default)]
    stage_timestamp: String,
}

#[derive(Deserialize, Default)]
struct RawUser {
    #[serde(default)]
    username: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RawObjectRef {
    #[serde(default)]
    resource: String,
    #[serde(default)]
    subresource: String,
    #[serde(default)]
    namespace: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    api_group: String,
}

#[derive(Deserialize)]
struct RawStatus {
    #[serde(default)]
    code: u16,
}

impl AuditLog {
    pub(crate) fn new(path: PathBuf) -> AuditLog {
        AuditLog { path }
    }

    /// The log file (JSON lines, `audit.k8s.io/v1` Event objects).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The current end of the log: [`AuditLog::since`] returns what comes after it.
    pub fn mark(&self) -> Result<AuditMark, Error> {
        match std::fs::metadata(&self.path) {
            Ok(m) => Ok(AuditMark(m.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(AuditMark(0)),
            Err(e) => Err(Error::Io(format!("stat {}", self.path.display()), e)),
        }
    }

    /// Every complete event written after `mark`, oldest first.
    pub fn since(&self, mark: &AuditMark) -> Result<Vec<AuditEvent>, Error> {
        let io = |e| Error::Io(format!("read {}", self.path.display()), e);
        let mut f = std::fs::File::open(&self.path).map_err(io)?;
        f.seek(SeekFrom::Start(mark.0)).map_err(io)?;
        let mut text = String::new();
        f.read_to_string(&mut text).map_err(io)?;
        Ok(parse(&text))
    }
}

/// Parse complete JSON lines (a trailing partial line, still being written, is skipped).
fn parse(text: &str) -> Vec<AuditEvent> {
    let complete = match text.rfind('\n') {
        Some(i) => &text[..i],
        None => "",
    };
    complete
        .lines()
        .filter_map(|l| serde_json::from_str::<RawEvent>(l).ok())
        .map(|r| {
            let o = r.object_ref.unwrap_or_default();
            AuditEvent {
                user: r.user.username,
                verb: r.verb,
                api_group: o.api_group,
                resource: o.resource,
                subresource: o.subresource,
                namespace: o.namespace,
                name: o.name,
                code: r.response_status.map(|s| s.code).unwrap_or(0),
                stage: r.stage,
                time: r.stage_timestamp,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_complete_lines_only() {
        let text = concat!(
            r#"{"kind":"Event","stage":"ResponseComplete","verb":"patch","user":{"username":"agent","groups":["system:masters"]},"objectRef":{"resource":"pods","namespace":"ns","name":"p","apiVersion":"v1","subresource":"status"},"responseStatus":{"code":200},"stageTimestamp":"2026-11-30T00:00:00.000000Z"}"#,
            "\n",
            r#"{"kind":"Event","stage":"ResponseComplete","verb":"get","user":{"username":"x"},"requestURI":"/readyz","responseStatus":{"code":200}}"#,
            "\n",
            r#"{"kind":"Event","stage":"Resp"#
        );
        let evs = parse(text);
        assert_eq!(evs.len(), 2, "{evs:?}");
        assert_eq!(
            evs[0].tuple(),
            ("agent".into(), "patch".into(), "pods/status".into())
        );
        assert!(evs[0].is_write() && !evs[1].is_write());
        assert_eq!((evs[0].namespace.as_str(), evs[0].code), ("ns", 200));
        assert_eq!(evs[1].resource, "");
    }
}
