//! supervisord's XML-RPC API over its unix socket (`POST /RPC2`, HTTP/1.1, one connection per
//! call; faults arrive as HTTP 200 with a `<fault>` body).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use super::xmlrpc::{self, Value, XmlRpcError};

/// Failure of one RPC call.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    /// The socket could not be reached or the connection broke.
    #[error("supervisord at {socket}: {source}")]
    Io {
        /// The unix socket.
        socket: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// No answer in time.
    #[error("supervisord at {socket}: {method} timed out after {after:?}")]
    Timeout {
        /// The unix socket.
        socket: PathBuf,
        /// The method called.
        method: String,
        /// The time limit.
        after: Duration,
    },
    /// A non-200 status or a broken HTTP response.
    #[error("supervisord {method}: bad HTTP response: {message}")]
    Http {
        /// The method called.
        method: String,
        /// What was wrong.
        message: String,
    },
    /// XML-RPC fault or malformed body.
    #[error("supervisord {method}: {source}")]
    XmlRpc {
        /// The method called.
        method: String,
        /// The fault.
        #[source]
        source: XmlRpcError,
    },
    /// The response did not have the expected shape.
    #[error("supervisord {method}: unexpected response {value:?}")]
    Shape {
        /// The method called.
        method: String,
        /// What came back.
        value: Value,
    },
}

impl RpcError {
    /// The fault name (`BAD_NAME`, `NOT_RUNNING`, ...), when this is a fault.
    pub fn fault_name(&self) -> Option<&str> {
        match self {
            RpcError::XmlRpc {
                source: XmlRpcError::Fault { message, .. },
                ..
            } => Some(message.split(':').next().unwrap_or(message)),
            _ => None,
        }
    }

    /// Whether supervisord could not be reached at all.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, RpcError::Io { .. } | RpcError::Timeout { .. })
    }
}

/// One process as `getAllProcessInfo` reports it.
#[derive(Clone, Debug, PartialEq)]
pub struct ProcessInfo {
    /// Program name.
    pub name: String,
    /// State name (`RUNNING`, `EXITED`, `STOPPED`, `STARTING`, `BACKOFF`, `FATAL`, ...).
    pub state: String,
    /// PID (0 when not running).
    pub pid: u32,
    /// Exit status of the last exit.
    pub exit_status: i64,
    /// Spawn error text, if any.
    pub spawn_error: String,
    /// Unix time of the last start.
    pub start: i64,
}

/// One program as `getAllConfigInfo` reports it.
#[derive(Clone, Debug, PartialEq)]
pub struct ProgramConfig {
    /// Program name.
    pub name: String,
    /// Its command line.
    pub command: String,
}

/// What supervisord runs, read in one round trip: its PID, every process, every configured
/// program (see [`Supervisor::snapshot`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Snapshot {
    /// supervisord's PID.
    pub pid: u32,
    /// All processes.
    pub infos: Vec<ProcessInfo>,
    /// All configured programs.
    pub configs: Vec<ProgramConfig>,
}

/// A client of one supervisord.
#[derive(Clone, Debug)]
pub struct Supervisor {
    socket: PathBuf,
    timeout: Duration,
    /// `reloadConfig` calls made (supervisord re-reads every program file: the costly call).
    reloads: Arc<AtomicU64>,
    /// Round trips made (each call, a multicall counting once).
    calls: Arc<AtomicU64>,
}

impl Supervisor {
    /// A client for the supervisord listening on `socket`.
    pub fn new(socket: &Path) -> Supervisor {
        Supervisor {
            socket: socket.to_path_buf(),
            timeout: Duration::from_secs(10),
            reloads: Arc::new(AtomicU64::new(0)),
            calls: Arc::new(AtomicU64::new(0)),
        }
    }

    /// How many round trips (calls; a multicall is one) this client made.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// How many `reloadConfig` calls this client made.
    pub fn reloads(&self) -> u64 {
        self.reloads.load(Ordering::Relaxed)
    }

    /// Call `method` with `params`.
    pub async fn call(&self, method: &str, params: &[Value]) -> Result<Value, RpcError> {
        self.call_with_timeout(method, params, self.timeout).await
    }

    async fn call_with_timeout(
        &self,
        method: &str,
        params: &[Value],
        limit: Duration,
    ) -> Result<Value, RpcError> {
        let body = xmlrpc::encode_call(method, params);
        self.calls.fetch_add(1, Ordering::Relaxed);
        let fut = self.exchange(method, body);
        let started = std::time::Instant::now();
        let text = tokio::time::timeout(limit, fut)
            .await
            .map_err(|_| RpcError::Timeout {
                socket: self.socket.clone(),
                method: method.to_string(),
                after: limit,
            })??;
        tracing::debug!(
            method,
            took_us = started.elapsed().as_micros() as u64,
            "rpc"
        );
        xmlrpc::decode_response(&text).map_err(|source| RpcError::XmlRpc {
            method: method.to_string(),
            source,
        })
    }

    async fn exchange(&self, method: &str, body: String) -> Result<String, RpcError> {
        let io = |source| RpcError::Io {
            socket: self.socket.clone(),
            source,
        };
        let mut stream = UnixStream::connect(&self.socket).await.map_err(io)?;
        let request = format!(
            "POST /RPC2 HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/xml\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await.map_err(io)?;
        let http = |message: String| RpcError::Http {
            method: method.to_string(),
            message,
        };
        let mut buf = Vec::with_capacity(4096);
        let mut chunk = [0u8; 8192];
        let header_end = loop {
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                break i + 4;
            }
            let n = stream.read(&mut chunk).await.map_err(io)?;
            if n == 0 {
                return Err(http("connection closed before headers".into()));
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..header_end]).to_string();
        let status = head.lines().next().unwrap_or("");
        if !status.contains(" 200 ") {
            return Err(http(format!("status line {status:?}")));
        }
        let length = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse::<usize>())
            })
            .transpose()
            .map_err(|_| http("bad Content-Length".into()))?;
        let mut body = buf.split_off(header_end);
        match length {
            Some(len) => {
                while body.len() < len {
                    let n = stream.read(&mut chunk).await.map_err(io)?;
                    if n == 0 {
                        return Err(http("connection closed mid-body".into()));
                    }
                    body.extend_from_slice(&chunk[..n]);
                }
                body.truncate(len);
            }
            None => {
                stream.read_to_end(&mut body).await.map_err(io)?;
            }
        }
        String::from_utf8(body).map_err(|_| http("body is not UTF-8".into()))
    }

    fn shape(method: &str, value: Value) -> RpcError {
        RpcError::Shape {
            method: method.to_string(),
            value,
        }
    }

    /// supervisord's PID (also a liveness check).
    pub async fn pid(&self) -> Result<u32, RpcError> {
        let m = "supervisor.getPID";
        let v = self.call(m, &[]).await?;
        v.as_int()
            .map(|p| p as u32)
            .ok_or_else(|| Self::shape(m, v))
    }

    /// All processes.
    pub async fn all_process_info(&self) -> Result<Vec<ProcessInfo>, RpcError> {
        let m = "supervisor.getAllProcessInfo";
        parse_process_infos(m, self.call(m, &[]).await?)
    }

    /// All configured programs.
    pub async fn all_config_info(&self) -> Result<Vec<ProgramConfig>, RpcError> {
        let m = "supervisor.getAllConfigInfo";
        parse_config_infos(m, self.call(m, &[]).await?)
    }

    /// All processes and all configured programs, read in one round trip (one supervisord
    /// event-loop iteration, so both describe the same moment).
    pub async fn processes_and_configs(
        &self,
    ) -> Result<(Vec<ProcessInfo>, Vec<ProgramConfig>), RpcError> {
        let (p, c) = (
            "supervisor.getAllProcessInfo",
            "supervisor.getAllConfigInfo",
        );
        let mut results = self
            .multicall(&[(p, vec![]), (c, vec![])])
            .await?
            .into_iter();
        let (Some(infos), Some(configs)) = (results.next(), results.next()) else {
            return Err(RpcError::Http {
                method: "system.multicall".into(),
                message: "fewer results than calls".into(),
            });
        };
        Ok((
            parse_process_infos(p, infos?)?,
            parse_config_infos(c, configs?)?,
        ))
    }

    /// supervisord's PID, every process and every configured program in one round trip (one
    /// event-loop iteration of supervisord, so all three describe the same moment).
    pub async fn snapshot(&self) -> Result<Snapshot, RpcError> {
        let (g, p, c) = (
            "supervisor.getPID",
            "supervisor.getAllProcessInfo",
            "supervisor.getAllConfigInfo",
        );
        let mut results = self
            .multicall(&[(g, vec![]), (p, vec![]), (c, vec![])])
            .await?
            .into_iter();
        let (Some(pid), Some(infos), Some(configs)) =
            (results.next(), results.next(), results.next())
        else {
            return Err(RpcError::Http {
                method: "system.multicall".into(),
                message: "fewer results than calls".into(),
            });
        };
        let pid = pid?;
        Ok(Snapshot {
            pid: pid
                .as_int()
                .map(|p| p as u32)
                .ok_or_else(|| Self::shape(g, pid))?,
            infos: parse_process_infos(p, infos?)?,
            configs: parse_config_infos(c, configs?)?,
        })
    }

    /// Call non-blocking methods (no `wait`) in one `system.multicall` round trip, in order.
    /// One result per call: supervisord returns each call's value as is, a fault as a
    /// `{faultCode, faultString}` struct (made an [`RpcError::XmlRpc`] fault here).
    pub async fn multicall(
        &self,
        calls: &[(&str, Vec<Value>)],
    ) -> Result<Vec<Result<Value, RpcError>>, RpcError> {
        let m = "system.multicall";
        let list = calls
            .iter()
            .map(|(name, params)| {
                Value::Struct(
                    [
                        ("methodName".to_string(), Value::from(*name)),
                        ("params".to_string(), Value::Array(params.clone())),
                    ]
                    .into_iter()
                    .collect(),
                )
            })
            .collect();
        let v = self.call(m, &[Value::Array(list)]).await?;
        let Value::Array(items) = v else {
            return Err(Self::shape(m, v));
        };
        if items.len() != calls.len() {
            return Err(Self::shape(m, Value::Array(items)));
        }
        Ok(items
            .into_iter()
            .zip(calls)
            .map(
                |(item, (name, _))| match (item.get("faultCode"), item.get("faultString")) {
                    (Some(code), Some(text)) => Err(RpcError::XmlRpc {
                        method: name.to_string(),
                        source: XmlRpcError::Fault {
                            code: code.as_int().unwrap_or(0),
                            message: text.as_str().unwrap_or_default().to_string(),
                        },
                    }),
                    _ => Ok(item),
                },
            )
            .collect())
    }

    /// Re-read the configuration files; returns (added, changed, removed) group names.
    pub async fn reload_config(&self) -> Result<[Vec<String>; 3], RpcError> {
        let m = "supervisor.reloadConfig";
        self.reloads.fetch_add(1, Ordering::Relaxed);
        parse_reload(m, self.call(m, &[]).await?)
    }

    /// Add a process group from the (reloaded) configuration; its programs autostart.
    pub async fn add_process_group(&self, name: &str) -> Result<(), RpcError> {
        self.call("supervisor.addProcessGroup", &[name.into()])
            .await
            .map(drop)
    }

    /// Remove a stopped process group.
    pub async fn remove_process_group(&self, name: &str) -> Result<(), RpcError> {
        self.call("supervisor.removeProcessGroup", &[name.into()])
            .await
            .map(drop)
    }

    /// Start a process (without waiting for `startsecs`).
    pub async fn start_process(&self, name: &str) -> Result<(), RpcError> {
        self.call("supervisor.startProcess", &[name.into(), false.into()])
            .await
            .map(drop)
    }

    /// Stop a process and wait until it is stopped (up to supervisord's `stopwaitsecs`).
    pub async fn stop_process(&self, name: &str) -> Result<(), RpcError> {
        let limit = Duration::from_secs(30);
        self.call_with_timeout("supervisor.stopProcess", &[name.into(), true.into()], limit)
            .await
            .map(drop)
    }

    /// The last `length` bytes of a process's stdout log (stderr is redirected into it).
    pub async fn tail_stdout(&self, name: &str, length: i64) -> Result<String, RpcError> {
        let m = "supervisor.tailProcessStdoutLog";
        let v = self
            .call(m, &[name.into(), 0.into(), length.into()])
            .await?;
        match v.as_array() {
            Some([Value::Str(s), ..]) => Ok(s.clone()),
            _ => Err(Self::shape(m, v)),
        }
    }

    /// Shut supervisord down (stops every process first).
    pub async fn shutdown(&self) -> Result<(), RpcError> {
        self.call("supervisor.shutdown", &[]).await.map(drop)
    }
}

fn parse_reload(m: &str, v: Value) -> Result<[Vec<String>; 3], RpcError> {
    let names = |x: &Value| -> Vec<String> {
        x.as_array()
            .unwrap_or(&[])
            .iter()
            .filter_map(|n| n.as_str().map(str::to_string))
            .collect()
    };
    let outer = v
        .as_array()
        .and_then(|a| a.first())
        .and_then(Value::as_array);
    match outer {
        Some([a, c, r]) => Ok([names(a), names(c), names(r)]),
        _ => Err(Supervisor::shape(m, v)),
    }
}

/// Parse an XML-RPC array of structs with `one`; any item it cannot read is a shape error.
fn parse_structs<T>(
    m: &str,
    v: Value,
    one: impl Fn(&Value) -> Option<T>,
) -> Result<Vec<T>, RpcError> {
    let items = v
        .as_array()
        .ok_or_else(|| Supervisor::shape(m, v.clone()))?;
    items
        .iter()
        .map(|p| one(p).ok_or_else(|| Supervisor::shape(m, p.clone())))
        .collect()
}

fn parse_process_infos(m: &str, v: Value) -> Result<Vec<ProcessInfo>, RpcError> {
    parse_structs(m, v, |p| {
        Some(ProcessInfo {
            name: p.get("name")?.as_str()?.to_string(),
            state: p.get("statename")?.as_str()?.to_string(),
            pid: p.get("pid")?.as_int()? as u32,
            exit_status: p.get("exitstatus").and_then(Value::as_int).unwrap_or(0),
            spawn_error: p
                .get("spawnerr")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            start: p.get("start").and_then(Value::as_int).unwrap_or(0),
        })
    })
}

fn parse_config_infos(m: &str, v: Value) -> Result<Vec<ProgramConfig>, RpcError> {
    parse_structs(m, v, |p| {
        Some(ProgramConfig {
            name: p.get("name")?.as_str()?.to_string(),
            command: p.get("command")?.as_str()?.to_string(),
        })
    })
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
