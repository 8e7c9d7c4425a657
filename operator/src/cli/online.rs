//! Online `kresctl` commands: talk to a running operator's HTTP API (docs/api.md).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use hyper::Method;
use serde_json::Value;

use crate::http::client::{ApiClient, ClientError, Reply, Target};

/// Default API socket: the config's default `management.unix-socket`.
pub const DEFAULT_SOCKET: &str = kres_crd::config::DEFAULT_API_SOCKET;

/// Exit code when the API answered with an error status, or could not be reached.
pub const EXIT_API: u8 = 1;

/// The content type every POST carries, even without a body: the API refuses requests a browser
/// could send cross-origin without a preflight (docs/api.md, "Exposure").
const JSON: &[(&str, &str)] = &[("content-type", "application/json")];

/// How to reach the API, and the output format.
#[derive(Debug, Clone, Args)]
pub struct ConnArgs {
    /// The API's unix socket.
    #[arg(short = 's', long, global = true, env = "KRESCTL_SOCKET", default_value = DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// The API over TCP instead, e.g. http://127.0.0.1:5000 (when `management.interface` is set).
    #[arg(long, global = true)]
    pub url: Option<String>,
    /// Print the API's JSON instead of human output.
    #[arg(long, global = true)]
    pub json: bool,
    /// Seconds to wait for an answer (a change waits until the fleet converged).
    #[arg(long, global = true, default_value_t = 330)]
    pub timeout: u64,
}

/// `kresctl config ...`.
#[derive(Debug, Subcommand)]
pub enum ConfigCmd {
    /// Print the configuration, or the value at a JSON pointer (e.g. /cache/size-max).
    Get {
        /// JSON pointer; the whole configuration if omitted.
        pointer: Option<String>,
    },
    /// Set the value at a JSON pointer; waits until applied or rejected.
    Set {
        /// JSON pointer, e.g. /workers.
        pointer: String,
        /// The value: JSON (`4`, `"x"`, `{"a": 1}`), else taken as a string.
        #[arg(required_unless_present = "file", conflicts_with = "file")]
        value: Option<String>,
        /// Read the value from a JSON or YAML file (`-` = stdin, JSON or YAML).
        #[arg(short = 'f', long)]
        file: Option<PathBuf>,
    },
    /// Remove the value at a JSON pointer (back to its default); waits like `set`.
    Delete {
        /// JSON pointer.
        pointer: String,
    },
    /// Show what replacing the configuration with FILE would do (dry run; nothing changes).
    Diff {
        /// New config.yaml (YAML or JSON).
        file: PathBuf,
    },
}

/// `kresctl cache ...`.
#[derive(Debug, Subcommand)]
pub enum CacheCmd {
    /// Clear the shared cache, or the part under NAME.
    Clear {
        /// Domain name whose subtree (or exact name) is cleared; everything if omitted.
        name: Option<String>,
        /// Clear only NAME itself, not its subtree.
        #[arg(long)]
        exact_name: bool,
        /// Record type to clear (needs --exact-name), e.g. AAAA.
        #[arg(long)]
        rr_type: Option<String>,
        /// Records removed per step when clearing a subtree.
        #[arg(long)]
        chunk_size: Option<u64>,
    },
}

fn target(conn: &ConnArgs) -> Target {
    match &conn.url {
        Some(url) => {
            let rest = url
                .strip_prefix("http://")
                .unwrap_or(url)
                .trim_end_matches('/');
            Target::Tcp(rest.split('/').next().unwrap_or(rest).to_owned())
        }
        None => Target::Unix(conn.socket.clone()),
    }
}

/// URL path of the config resource at `pointer` (percent-encoding what a URL cannot carry).
fn config_path(pointer: &str) -> String {
    let mut out = String::from("/v1/config");
    let pointer = pointer.trim();
    if pointer.is_empty() || pointer == "/" {
        return out;
    }
    if !pointer.starts_with('/') {
        out.push('/');
    }
    for b in pointer.bytes() {
        if b.is_ascii_alphanumeric() || b"/-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn content_type_for(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()) {
        Some("json") => "application/json",
        _ => "application/yaml",
    }
}

fn read_input(path: &Path) -> Result<(String, &'static str), String> {
    let shown = if path == Path::new("-") {
        "stdin".to_string()
    } else {
        path.display().to_string()
    };
    let bytes = super::read_config_input(path).map_err(|e| format!("cannot read {shown}: {e}"))?;
    if bytes.len() > kres_crd::config::MAX_INPUT_BYTES {
        return Err(format!(
            "{shown} is larger than {} bytes, the limit for a config",
            kres_crd::config::MAX_INPUT_BYTES
        ));
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        format!(
            "{shown} is not valid UTF-8 (invalid byte at offset {})",
            e.utf8_error().valid_up_to()
        )
    })?;
    // YAML is a superset of JSON; stdin is sent as YAML.
    let content_type = if path == Path::new("-") {
        "application/yaml"
    } else {
        content_type_for(path)
    };
    Ok((text, content_type))
}

/// Print an error reply for humans: message, every pointer error, every rejection reason.
fn print_error(reply: &Reply) {
    let body = reply.json();
    let msg = body
        .get("error")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| reply.text());
    eprintln!("error ({}): {msg}", reply.status.as_u16());
    if let Some(errors) = body.get("errors").and_then(Value::as_array) {
        for e in errors {
            eprintln!(
                "  {}: {}",
                e.get("pointer").and_then(Value::as_str).unwrap_or(""),
                e.get("message").and_then(Value::as_str).unwrap_or("")
            );
        }
    }
    if let Some(reasons) = body.pointer("/rejected/reasons").and_then(Value::as_array) {
        for r in reasons {
            eprintln!("  {}", r.as_str().unwrap_or(""));
        }
    }
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

fn finish(reply: &Reply, conn: &ConnArgs, human: impl FnOnce(&Reply)) -> ExitCode {
    if !reply.status.is_success() {
        if conn.json {
            outln!("{}", reply.text().trim_end());
        } else {
            print_error(reply);
        }
        return ExitCode::from(EXIT_API);
    }
    if conn.json {
        outln!("{}", reply.text().trim_end());
    } else {
        human(reply);
    }
    ExitCode::SUCCESS
}

fn print_applied(reply: &Reply) {
    let body = reply.json();
    outln!(
        "applied: revision {} (etag {})",
        body.get("revision")
            .and_then(Value::as_str)
            .unwrap_or("unknown"),
        body.get("etag").and_then(Value::as_str).unwrap_or("")
    );
}

fn print_plan(reply: &Reply) {
    let plan = reply.json();
    let s = |p: &str| plan.pointer(p).and_then(Value::as_str).unwrap_or("none");
    outln!(
        "revision: {} -> {}",
        s("/current-revision"),
        s("/target-revision")
    );
    match plan.get("restart").and_then(Value::as_array) {
        Some(r) if !r.is_empty() => {
            outln!("restart:");
            for w in r {
                outln!(
                    "  worker {}: {}",
                    w.get("slot").and_then(Value::as_str).unwrap_or("?"),
                    w.get("reason").and_then(Value::as_str).unwrap_or("")
                );
            }
        }
        _ => outln!("restart: none"),
    }
    if let Some(live) = plan.get("live").and_then(Value::as_array)
        && !live.is_empty()
    {
        outln!("applied live:");
        for l in live {
            outln!("  {}", l.as_str().unwrap_or(""));
        }
    }
    let diff = s("/lua-diff");
    if diff != "none" && !diff.is_empty() {
        outln!("{diff}");
    }
}

fn print_status(reply: &Reply) {
    print_status_json(&reply.json());
}

/// Print a status in the API's shape (`GET /status`; `kresctl kube status` maps a
/// KnotResolver's into it): phase, conditions, revisions, workers, last failure, events.
pub(super) fn print_status_json(st: &Value) {
    let s = |v: &Value, p: &str| {
        v.pointer(p)
            .map(|x| match x {
                Value::String(s) => s.clone(),
                Value::Null => "-".to_owned(),
                other => other.to_string(),
            })
            .unwrap_or_else(|| "-".to_owned())
    };
    outln!("phase:            {}", s(st, "/phase"));
    for c in st
        .get("conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        outln!(
            "{:<17} {:<5} {}: {}",
            format!("{}:", s(c, "/type")),
            s(c, "/status"),
            s(c, "/reason"),
            s(c, "/message")
        );
    }
    outln!("current revision: {}", s(st, "/current-revision"));
    outln!("target revision:  {}", s(st, "/target-revision"));
    outln!("workers:");
    for w in st
        .get("workers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        // A host worker has a pid, a pod its name.
        let id = match w.get("pod") {
            Some(_) => format!("pod {:<24}", s(w, "/pod")),
            None => format!("pid {:<8}", s(w, "/pid")),
        };
        outln!(
            "  {:<7} {id} {:<9} revision {:<18} ready since {}",
            s(w, "/slot"),
            s(w, "/state"),
            s(w, "/revision"),
            s(w, "/ready-since")
        );
    }
    if let Some(gc) = st.get("cache-gc").filter(|v| !v.is_null()) {
        outln!(
            "cache-gc:         {} (pid {})",
            s(gc, "/state"),
            s(gc, "/pid")
        );
    }
    if let Some(f) = st.get("last-failure").filter(|v| !v.is_null()) {
        outln!(
            "last failure:     revision {} at {}: {}",
            s(f, "/revision"),
            s(f, "/time"),
            s(f, "/reason")
        );
    }
    let events: Vec<&Value> = st
        .get("events")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .collect();
    if !events.is_empty() {
        outln!("recent events:");
        for e in events.iter().rev().take(5).rev() {
            outln!("  {} {}", s(e, "/time"), s(e, "/message"));
        }
    }
}

/// `kresctl history`: one revision per line, newest first.
fn print_history(reply: &Reply) {
    print_history_json(&reply.json());
}

/// Print `{"revisions": [HistoryEntry...]}`, newest first (`kresctl history`, `kresctl kube
/// history`).
pub(super) fn print_history_json(v: &Value) {
    let s = |e: &Value, p: &str| {
        e.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    for e in v["revisions"].as_array().into_iter().flatten() {
        let mut marks = vec![];
        if e["desired"] == true {
            marks.push("desired");
        }
        if e["last-good"] == true {
            marks.push("last good");
        }
        let changed: Vec<&str> = e["changed"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        outln!(
            "{}  {}  {:<10}  changed: {}{}",
            s(e, "/desired-at"),
            s(e, "/revision"),
            s(e, "/state"),
            if changed.is_empty() {
                "-".to_owned()
            } else {
                changed.join(", ")
            },
            if marks.is_empty() {
                String::new()
            } else {
                format!("  ({})", marks.join(", "))
            },
        );
        if let Some(r) = e["reason"].as_str() {
            outln!("    reason: {r}");
        }
    }
}

/// The online commands, parsed.
#[derive(Debug)]
pub enum Online {
    /// `config ...`
    Config(ConfigCmd),
    /// `status`
    Status,
    /// `metrics`
    Metrics,
    /// `reload`
    Reload,
    /// `history`
    History,
    /// `rollback [REVISION]`
    Rollback(Option<String>),
    /// `stop`
    Stop,
    /// `cache ...`
    Cache(CacheCmd),
}

/// Run one online command against the API.
pub fn run(cmd: Online, conn: &ConnArgs) -> ExitCode {
    block_on(run_async(cmd, conn))
}

/// Run `fut` on a current-thread runtime (kresctl's online commands).
pub(super) fn block_on(fut: impl std::future::Future<Output = ExitCode>) -> ExitCode {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(fut),
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            ExitCode::from(EXIT_API)
        }
    }
}

async fn run_async(cmd: Online, conn: &ConnArgs) -> ExitCode {
    let client = ApiClient::new(target(conn), Duration::from_secs(conn.timeout));
    let result: Result<ExitCode, String> = async {
        let e = |e: ClientError| e.to_string();
        Ok(match cmd {
            Online::Config(ConfigCmd::Get { pointer }) => {
                let path = config_path(pointer.as_deref().unwrap_or(""));
                let accept = if conn.json {
                    "application/json"
                } else {
                    "application/yaml"
                };
                let reply = client
                    .request(Method::GET, &path, &[("accept", accept)], "")
                    .await
                    .map_err(e)?;
                finish(&reply, conn, |r| out!("{}", r.text()))
            }
            Online::Config(ConfigCmd::Set {
                pointer,
                value,
                file,
            }) => {
                let (body, ct) = match (value, file) {
                    (_, Some(f)) => read_input(&f)?,
                    (Some(v), None) => {
                        let json = serde_json::from_str::<Value>(&v)
                            .unwrap_or_else(|_| Value::String(v.clone()));
                        (json.to_string(), "application/json")
                    }
                    (None, None) => return Err("give a VALUE or -f FILE".to_owned()),
                };
                let reply = client
                    .request(
                        Method::PUT,
                        &config_path(&pointer),
                        &[("content-type", ct)],
                        body,
                    )
                    .await
                    .map_err(e)?;
                finish(&reply, conn, print_applied)
            }
            Online::Config(ConfigCmd::Delete { pointer }) => {
                let reply = client
                    .request(Method::DELETE, &config_path(&pointer), &[], "")
                    .await
                    .map_err(e)?;
                finish(&reply, conn, print_applied)
            }
            Online::Config(ConfigCmd::Diff { file }) => {
                let (body, ct) = read_input(&file)?;
                let reply = client
                    .request(
                        Method::PUT,
                        "/v1/config?dry-run=true",
                        &[("content-type", ct)],
                        body,
                    )
                    .await
                    .map_err(e)?;
                finish(&reply, conn, print_plan)
            }
            Online::Status => {
                let reply = client.get("/status").await.map_err(e)?;
                finish(&reply, conn, print_status)
            }
            Online::Metrics => {
                let reply = client.get("/metrics").await.map_err(e)?;
                // Prometheus text either way.
                if reply.status.is_success() {
                    out!("{}", reply.text());
                    ExitCode::SUCCESS
                } else {
                    finish(&reply, conn, |_| {})
                }
            }
            Online::Reload => {
                let reply = client
                    .request(Method::POST, "/reload", JSON, "")
                    .await
                    .map_err(e)?;
                finish(&reply, conn, print_applied)
            }
            Online::History => {
                let reply = client.get("/v1/history").await.map_err(e)?;
                finish(&reply, conn, print_history)
            }
            Online::Rollback(revision) => {
                let body = match revision {
                    Some(r) => serde_json::json!({ "revision": r }).to_string(),
                    None => String::new(),
                };
                let reply = client
                    .request(
                        Method::POST,
                        "/v1/rollback",
                        &[("content-type", "application/json")],
                        body,
                    )
                    .await
                    .map_err(e)?;
                finish(&reply, conn, print_applied)
            }
            Online::Stop => {
                let reply = client
                    .request(Method::POST, "/stop", JSON, "")
                    .await
                    .map_err(e)?;
                finish(&reply, conn, |_| outln!("stopping"))
            }
            Online::Cache(CacheCmd::Clear {
                name,
                exact_name,
                rr_type,
                chunk_size,
            }) => {
                let mut body = serde_json::Map::new();
                if let Some(n) = name {
                    body.insert("name".into(), Value::String(n));
                }
                if exact_name {
                    body.insert("exact-name".into(), Value::Bool(true));
                }
                if let Some(t) = rr_type {
                    body.insert("rr-type".into(), Value::String(t));
                }
                if let Some(c) = chunk_size {
                    body.insert("chunk-size".into(), Value::from(c));
                }
                let reply = client
                    .request(
                        Method::POST,
                        "/cache/clear",
                        JSON,
                        Value::Object(body).to_string(),
                    )
                    .await
                    .map_err(e)?;
                finish(&reply, conn, |r| outln!("{}", pretty(&r.json())))
            }
        })
    }
    .await;
    match result {
        Ok(code) => code,
        Err(msg) => {
            eprintln!("error: {msg}");
            ExitCode::from(EXIT_API)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_paths() {
        assert_eq!(config_path(""), "/v1/config");
        assert_eq!(config_path("/"), "/v1/config");
        assert_eq!(config_path("/cache/size-max"), "/v1/config/cache/size-max");
        assert_eq!(config_path("workers"), "/v1/config/workers");
        assert_eq!(config_path("/a b/c~1d"), "/v1/config/a%20b/c~1d");
    }

    #[test]
    fn targets() {
        let mut c = ConnArgs {
            socket: "/x.sock".into(),
            url: None,
            json: false,
            timeout: 1,
        };
        assert_eq!(target(&c), Target::Unix("/x.sock".into()));
        c.url = Some("http://127.0.0.1:5000/".into());
        assert_eq!(target(&c), Target::Tcp("127.0.0.1:5000".into()));
    }
}
