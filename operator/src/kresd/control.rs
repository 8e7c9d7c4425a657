//! kresd 5.6 control-socket client (`RUNDIR/control/<pid>`).
//!
//! Protocol: on connect kresd prints `> `; after the line `__binary` every reply is a u32
//! big-endian length followed by the payload. Commands are single lines. kresd prints values
//! Lua-style and reports errors as plain text, so [`ControlClient::eval`] sends the chunk
//! hex-encoded, runs it under `pcall` and returns the result hex-encoded with an `ok:`/`err:`
//! tag: no user text is ever parsed as Lua source by the wrapper and results round-trip exactly.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// Largest reply accepted (a full `stats.list()` is a few KiB).
const MAX_REPLY: u32 = 16 * 1024 * 1024;

/// Errors of the control client; every variant names the socket.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// Connecting, reading or writing failed.
    #[error("control socket {path}: {source}")]
    Io {
        /// Socket path.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// kresd did not answer within the per-call timeout (stopped or overloaded worker).
    #[error("control socket {path}: no reply within {timeout:?}")]
    Timeout {
        /// Socket path.
        path: PathBuf,
        /// The timeout.
        timeout: Duration,
    },
    /// kresd replied with something this client does not understand.
    #[error("control socket {path}: unexpected reply: {detail}")]
    Protocol {
        /// Socket path.
        path: PathBuf,
        /// What was wrong.
        detail: String,
    },
    /// The Lua chunk failed (syntax or runtime error); `message` is kresd's error text.
    #[error("control socket {path}: lua error: {message}")]
    Lua {
        /// Socket path.
        path: PathBuf,
        /// Lua error message.
        message: String,
    },
    /// The result was not the JSON that was asked for.
    #[error("control socket {path}: bad JSON from kresd: {source}")]
    Json {
        /// Socket path.
        path: PathBuf,
        /// Cause.
        source: serde_json::Error,
    },
}

/// Path of the control socket kresd creates for `pid` under `rundir`.
pub fn control_socket_path(rundir: &Path, pid: u32) -> PathBuf {
    rundir.join("control").join(pid.to_string())
}

/// A connection to one kresd's control socket, in binary mode.
#[derive(Debug)]
pub struct ControlClient {
    path: PathBuf,
    stream: UnixStream,
    timeout: Duration,
    /// A call timed out or failed mid-reply: the stream position is unknown.
    broken: bool,
}

impl ControlClient {
    /// Connect, read the `> ` prompt and switch to binary mode; `timeout` bounds this and
    /// every later call.
    pub async fn connect(path: impl AsRef<Path>, timeout: Duration) -> Result<Self, ControlError> {
        let path = path.as_ref().to_path_buf();
        let io = |source| ControlError::Io {
            path: path.clone(),
            source,
        };
        let mut stream = within(&path, timeout, UnixStream::connect(&path))
            .await?
            .map_err(io)?;
        let mut prompt = [0u8; 2];
        within(&path, timeout, stream.read_exact(&mut prompt))
            .await?
            .map_err(io)?;
        if &prompt != b"> " {
            return Err(ControlError::Protocol {
                path,
                detail: format!("expected prompt '> ', got {prompt:?}"),
            });
        }
        within(&path, timeout, stream.write_all(b"__binary\n"))
            .await?
            .map_err(io)?;
        Ok(Self {
            path,
            stream,
            timeout,
            broken: false,
        })
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Send one raw command line and return kresd's reply payload as is (Lua-style printed
    /// value, or error text: indistinguishable — prefer [`ControlClient::eval`]).
    pub async fn raw(&mut self, line: &str) -> Result<Vec<u8>, ControlError> {
        if line.contains('\n') {
            return Err(ControlError::Protocol {
                path: self.path.clone(),
                detail: "a raw command must be a single line".into(),
            });
        }
        if self.broken {
            return Err(ControlError::Protocol {
                path: self.path.clone(),
                detail: "connection unusable after an earlier failed call; reconnect".into(),
            });
        }
        let (path, timeout) = (self.path.clone(), self.timeout);
        let io = |source| ControlError::Io {
            path: path.clone(),
            source,
        };
        let stream = &mut self.stream;
        let exchange = async move {
            let mut req = Vec::with_capacity(line.len() + 1);
            req.extend_from_slice(line.as_bytes());
            req.push(b'\n');
            stream.write_all(&req).await?;
            let len = stream.read_u32().await?;
            if len > MAX_REPLY {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("reply of {len} bytes exceeds {MAX_REPLY}"),
                ));
            }
            let mut payload = vec![0u8; len as usize];
            stream.read_exact(&mut payload).await?;
            Ok(payload)
        };
        let result = within(&path, timeout, exchange)
            .await
            .and_then(|r| r.map_err(io));
        self.broken = result.is_err();
        result
    }

    /// Run a Lua chunk (statements; `return x` yields `tostring(x)`) and return its result.
    /// Lua errors come back as [`ControlError::Lua`].
    pub async fn eval(&mut self, lua: &str) -> Result<String, ControlError> {
        let reply = self.raw(&wrap(lua)).await?;
        let text = String::from_utf8_lossy(&reply);
        let protocol = |detail: String| ControlError::Protocol {
            path: self.path.clone(),
            detail,
        };
        let hex = text
            .strip_prefix('\'')
            .and_then(|t| t.strip_suffix('\''))
            .ok_or_else(|| protocol(format!("not a wrapped result: {}", truncate(&text))))?;
        let bytes = unhex(hex).ok_or_else(|| protocol(format!("bad hex: {}", truncate(hex))))?;
        let decoded = String::from_utf8_lossy(&bytes).into_owned();
        if let Some(ok) = decoded.strip_prefix("ok:") {
            Ok(ok.to_string())
        } else if let Some(err) = decoded.strip_prefix("err:") {
            Err(ControlError::Lua {
                path: self.path.clone(),
                message: err.to_string(),
            })
        } else {
            Err(protocol(format!("untagged result: {}", truncate(&decoded))))
        }
    }

    /// Run a Lua expression whose value is a JSON string (e.g. `tojson(x)`) and parse it.
    pub async fn eval_json(&mut self, expr: &str) -> Result<serde_json::Value, ControlError> {
        let text = self.eval(&format!("return {expr}")).await?;
        serde_json::from_str(&text).map_err(|source| ControlError::Json {
            path: self.path.clone(),
            source,
        })
    }

    /// `stats.list()` as a flat JSON object (`answer.total`, ...). Needs the `stats` module
    /// loaded in kresd's config; otherwise the Lua error says so.
    pub async fn stats(
        &mut self,
    ) -> Result<serde_json::Map<String, serde_json::Value>, ControlError> {
        match self.eval_json("tojson(stats.list())").await? {
            serde_json::Value::Object(map) => Ok(map),
            other => Err(ControlError::Protocol {
                path: self.path.clone(),
                detail: format!(
                    "stats.list() is not an object: {}",
                    truncate(&other.to_string())
                ),
            }),
        }
    }

    /// `worker.pid` of the connected kresd.
    pub async fn pid(&mut self) -> Result<u32, ControlError> {
        let text = self.eval("return worker.pid").await?;
        text.trim().parse().map_err(|_| ControlError::Protocol {
            path: self.path.clone(),
            detail: format!("worker.pid is not a number: {}", truncate(&text)),
        })
    }
}

async fn within<T>(
    path: &Path,
    timeout: Duration,
    f: impl Future<Output = T>,
) -> Result<T, ControlError> {
    tokio::time::timeout(timeout, f)
        .await
        .map_err(|_| ControlError::Timeout {
            path: path.to_path_buf(),
            timeout,
        })
}

/// The single-line command that runs `lua` under pcall and returns a hex-encoded, tagged result.
fn wrap(lua: &str) -> String {
    format!(
        "(function() \
local s = ('{}'):gsub('..', function(h) return string.char(tonumber(h, 16)) end) \
local f, e = loadstring(s, '=control') \
local ok, v \
if f then ok, v = pcall(f) else ok, v = false, e end \
local r = (ok and 'ok:' or 'err:') .. tostring(v) \
return (r:gsub('.', function(c) return string.format('%02x', c:byte()) end)) \
end)()",
        hex(lua.as_bytes())
    )
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

fn truncate(s: &str) -> String {
    let mut t: String = s.chars().take(200).collect();
    if t.len() < s.len() {
        t.push('…');
    }
    t
}

/// Control sockets in `dir` (normally `RUNDIR/control`) that refuse connections: left behind
/// by a worker that was killed or crashed. A socket that accepts (live kresd) or times out
/// (stopped kresd) is kept. Returns the paths found; does not remove them.
pub async fn stale_sockets(dir: &Path, timeout: Duration) -> Result<Vec<PathBuf>, ControlError> {
    let io = |source| ControlError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut entries = tokio::fs::read_dir(dir).await.map_err(io)?;
    let mut stale = Vec::new();
    while let Some(entry) = entries.next_entry().await.map_err(io)? {
        let path = entry.path();
        let Ok(ft) = entry.file_type().await else {
            continue;
        };
        if !std::os::unix::fs::FileTypeExt::is_socket(&ft) {
            continue;
        }
        match tokio::time::timeout(timeout, UnixStream::connect(&path)).await {
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => stale.push(path),
            _ => {}
        }
    }
    stale.sort();
    Ok(stale)
}

/// Remove the [`stale_sockets`] of `dir`; returns the removed paths.
pub async fn remove_stale_sockets(
    dir: &Path,
    timeout: Duration,
) -> Result<Vec<PathBuf>, ControlError> {
    let stale = stale_sockets(dir, timeout).await?;
    for path in &stale {
        match tokio::fs::remove_file(path).await {
            Ok(()) => tracing::info!(path = %path.display(), "removed stale control socket"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(ControlError::Io {
                    path: path.clone(),
                    source,
                });
            }
        }
    }
    Ok(stale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let s = "a'b\"c\n]]--\0é";
        assert_eq!(unhex(&hex(s.as_bytes())).unwrap(), s.as_bytes());
        assert_eq!(unhex("0"), None);
        assert_eq!(unhex("zz"), None);
    }

    #[test]
    fn wrapped_command_is_one_line_and_hides_the_chunk() {
        let w = wrap("return 'x'\nerror(']]')");
        assert!(!w.contains('\n'));
        assert!(!w.contains("error"));
    }

    #[tokio::test]
    async fn stale_socket_detected_live_one_kept() {
        let dir = tempfile::tempdir().unwrap();
        let live = tokio::net::UnixListener::bind(dir.path().join("1")).unwrap();
        drop(std::os::unix::net::UnixListener::bind(dir.path().join("2")).unwrap());
        std::fs::write(dir.path().join("3"), b"not a socket").unwrap();
        let t = Duration::from_millis(200);
        let stale = remove_stale_sockets(dir.path(), t).await.unwrap();
        assert_eq!(stale, vec![dir.path().join("2")]);
        assert!(!dir.path().join("2").exists());
        assert!(dir.path().join("1").exists() && dir.path().join("3").exists());
        drop(live);
    }

    #[tokio::test]
    async fn connect_times_out_without_prompt() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c");
        let _l = tokio::net::UnixListener::bind(&path).unwrap();
        // Listener never accepts nor writes: connect succeeds (backlog), prompt never comes.
        let err = ControlClient::connect(&path, Duration::from_millis(100))
            .await
            .unwrap_err();
        assert!(matches!(err, ControlError::Timeout { .. }), "{err}");
    }
}
