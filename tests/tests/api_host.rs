//! The HTTP API against a real `kres-operator host` (real supervisord + kresd): every endpoint
//! and error code, persistence, dry runs, metrics from real workers, kresctl.

use std::collections::BTreeMap;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use hickory_proto::rr::RecordType;
use hyper::Method;
use kres_operator::http::client::{Reply, Target};
use kres_tests::api::Api;
use kres_tests::dns;
use kres_tests::host::Host;
use serde_json::{Value, json};

/// The API client for `host`'s unix socket.
fn api_of(host: &Host) -> Result<Api> {
    Api::new(Target::Unix(host.api_socket())).with_context(|| host.log())
}

fn local(addr: &str) -> String {
    format!("local-data:\n  addresses:\n    api.test: {addr}\n")
}

fn pids(host: &Host) -> BTreeMap<String, u32> {
    host.worker_pids().expect("worker pids")
}

/// Listening TCP sockets (inodes) of process `pid`.
fn tcp_listeners_of(pid: u32) -> Vec<String> {
    let mut inodes = vec![];
    for e in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
    {
        if let Ok(t) = std::fs::read_link(e.path())
            && let Some(i) = t
                .to_str()
                .and_then(|s| s.strip_prefix("socket:["))
                .and_then(|s| s.strip_suffix(']'))
        {
            inodes.push(i.to_owned());
        }
    }
    let mut out = vec![];
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        for line in std::fs::read_to_string(table)
            .unwrap_or_default()
            .lines()
            .skip(1)
        {
            let f: Vec<&str> = line.split_whitespace().collect();
            // st == 0A: LISTEN; inode is field 9.
            if f.len() > 9 && f[3] == "0A" && inodes.iter().any(|i| i == f[9]) {
                out.push(f[1].to_owned());
            }
        }
    }
    out
}

/// method, path, headers, body, expected status.
type Case<'a> = (Method, &'a str, Vec<(&'a str, &'a str)>, String, u16);

fn error_pointers(r: &Reply) -> Vec<String> {
    let mut p: Vec<String> = r.json()["errors"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["pointer"].as_str().map(str::to_owned))
        .collect();
    p.sort();
    p
}

#[test]
fn api_config_endpoints_codes_and_persistence() -> Result<()> {
    let host = Host::start(2, &local("192.0.2.10"))?;
    let before = host.wait_converged(None, Duration::from_secs(30))?;
    let rev0 = Host::current_revision(&before)?;
    let api = api_of(&host)?;

    // Listener: a 0600 unix socket, no TCP listener in the operator.
    let meta = std::fs::metadata(host.api_socket())?;
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let op = host.pid().context("operator pid")?;
    assert!(
        tcp_listeners_of(op).is_empty(),
        "operator listens on TCP: {:?}",
        tcp_listeners_of(op)
    );

    // GET with ETag, pointers, 304, 404.
    let r = api.req(Method::GET, "/v1/config", &[], "");
    assert_eq!(r.status, 200);
    let etag0 = r.header("etag").context("etag")?;
    assert_eq!(r.json()["workers"], 2);
    let r = api.req(Method::GET, "/v1/config/workers", &[], "");
    assert_eq!((r.status.as_u16(), r.json()), (200, json!(2)));
    let r = api.req(Method::GET, "/v1/config", &[("if-none-match", &etag0)], "");
    assert_eq!(r.status, 304);
    let r = api.req(Method::GET, "/v1/config/no/such", &[], "");
    assert_eq!(r.status, 404);

    // Every rejected request leaves the workers alone.
    let pids0 = pids(&host);
    assert_eq!(pids0.len(), 2, "{pids0:?}");
    let cases: Vec<Case> = vec![
        (
            Method::PUT,
            "/v1/config/workers",
            vec![],
            "{nope".into(),
            400,
        ),
        (
            Method::PUT,
            "/v1/config/workers",
            vec![("content-type", "text/plain")],
            "3".into(),
            415,
        ),
        (
            Method::PUT,
            "/v1/config/lua/script",
            vec![],
            format!("\"{}\"", "-".repeat(5 * 1024 * 1024)),
            413,
        ),
        (
            Method::PUT,
            "/v1/config/workers",
            vec![("if-match", "\"stale\"")],
            "3".into(),
            412,
        ),
        (Method::DELETE, "/v1/config", vec![], String::new(), 405),
        (Method::POST, "/status", vec![], String::new(), 405),
        (Method::PUT, "/v1/config/no/such", vec![], "1".into(), 404),
        (Method::GET, "/no-such-endpoint", vec![], String::new(), 404),
    ];
    for (m, path, headers, body, code) in &cases {
        let r = api.req(m.clone(), path, headers, body);
        assert_eq!(r.status.as_u16(), *code, "{m} {path}: {}", r.text());
        assert!(r.json()["error"].is_string(), "{m} {path}: {}", r.text());
    }
    let r = api.req(Method::DELETE, "/v1/config", &[], "");
    assert_eq!(r.header("allow").as_deref(), Some("GET, PUT, PATCH"));

    // 422: validation, every error with its pointer.
    let r = api.req(
        Method::PATCH,
        "/v1/config",
        &[("content-type", "application/json-patch+json")],
        r#"[{"op":"replace","path":"/workers","value":0},
            {"op":"add","path":"/cache/size-max","value":"lots"},
            {"op":"add","path":"/no-such-key","value":1}]"#,
    );
    assert_eq!(r.status, 422, "{}", r.text());
    let ptrs = error_pointers(&r);
    assert!(ptrs.contains(&"/cache/size-max".to_owned()), "{}", r.text());
    assert!(ptrs.contains(&"/no-such-key".to_owned()), "{}", r.text());
    assert!(ptrs.contains(&"/workers".to_owned()), "{}", r.text());
    // A range error alone.
    let r = api.req(Method::PUT, "/v1/config/workers", &[], "0");
    assert_eq!(r.status, 422, "{}", r.text());
    assert_eq!(error_pointers(&r), ["/workers"], "{}", r.text());

    // 422: rejected by the canary, with kresd's own line; the fleet and the file are untouched.
    let file_before = std::fs::read_to_string(&host.config)?;
    let r = api.req(
        Method::PUT,
        "/v1/config/lua/script",
        &[],
        r#""error('api-canary-boom')""#,
    );
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(r.text().contains("api-canary-boom"), "{}", r.text());
    assert_eq!(pids(&host), pids0, "a rejected change restarted workers");
    let s = host.wait_converged(None, Duration::from_secs(30))?;
    assert_eq!(s["current-revision"], rev0.as_str());
    let file_after: Value = serde_norway::from_str(&std::fs::read_to_string(&host.config)?)?;
    let file_before: Value = serde_norway::from_str(&file_before)?;
    assert_eq!(
        file_after["lua"].get("script"),
        file_before["lua"].get("script"),
        "the rejected config stayed in the file"
    );
    assert_eq!(pids(&host), pids0);

    // Dry runs: one restarting every worker, one restarting nothing.
    let r = api.req(
        Method::PUT,
        "/v1/config/local-data/addresses/api.test.?dry-run=true",
        &[],
        r#""192.0.2.11""#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let plan = r.json();
    let slots: Vec<&str> = plan["restart"]
        .as_array()
        .context("restart")?
        .iter()
        .filter_map(|w| w["slot"].as_str())
        .collect();
    assert_eq!(slots, ["0", "1"], "{}", r.text());
    assert!(
        r.json()["lua-diff"]
            .as_str()
            .unwrap_or("")
            .contains("192.0.2.11")
    );
    let r = api.req(Method::PUT, "/v1/config/workers?dry-run=true", &[], "2");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["restart"], json!([]), "{}", r.text());
    assert_eq!(pids(&host), pids0, "a dry run restarted workers");

    // A real change: 200 once converged, new ETag, persisted with a .bak.
    let r = api.req(
        Method::PUT,
        "/v1/config/local-data/addresses/api.test.",
        &[("if-match", &etag0)],
        r#""192.0.2.11""#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let etag1 = r.header("etag").context("etag")?;
    assert_ne!(etag1, etag0);
    let rev1 = r.json()["revision"]
        .as_str()
        .context("revision")?
        .to_owned();
    assert_ne!(rev1, rev0);
    let s = host.status()?;
    assert_eq!(s["current-revision"], rev1.as_str());
    assert_eq!(s["converged"], true);
    let answer = dns::resolve(host.listen, "api.test.", RecordType::A)?;
    assert!(format!("{answer:?}").contains("192.0.2.11"), "{answer:?}");
    let saved = std::fs::read_to_string(&host.config)?;
    assert!(saved.contains("192.0.2.11"), "{saved}");
    let bak = host.config.with_file_name("config.yaml.bak");
    assert!(std::fs::read_to_string(bak)?.contains("192.0.2.10"));

    // The old ETag is now stale: 412.
    let r = api.req(
        Method::PUT,
        "/v1/config/workers",
        &[("if-match", &etag0)],
        "3",
    );
    assert_eq!(r.status, 412);

    // A SIGHUP re-reads the same (API-written) content: nothing changes.
    host.signal("HUP")?;
    std::thread::sleep(Duration::from_millis(300));
    let r = api.req(Method::GET, "/v1/config", &[], "");
    assert_eq!(r.header("etag").as_deref(), Some(etag1.as_str()));

    // 409: a change superseded by a newer one before it converged.
    let (first, second) = std::thread::scope(|sc| {
        let t = sc.spawn(|| {
            let api = api_of(&host).expect("api");
            api.req(
                Method::PUT,
                "/v1/config/local-data/addresses/api.test.",
                &[],
                r#""192.0.2.12""#,
            )
        });
        // Send the second change once the first one is rolling (desired, not converged yet).
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(s) = host.status()
                && s["desired-revision"] != rev1.as_str()
                && s["converged"] == false
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let second = api.req(
            Method::PUT,
            "/v1/config/local-data/addresses/api.test.",
            &[],
            r#""192.0.2.13""#,
        );
        (t.join().expect("thread"), second)
    });
    assert_eq!(first.status, 409, "{}", first.text());
    assert_eq!(second.status, 200, "{}", second.text());
    let answer = dns::resolve(host.listen, "api.test.", RecordType::A)?;
    assert!(format!("{answer:?}").contains("192.0.2.13"), "{answer:?}");

    // DELETE a key: back to the default.
    let r = api.req(Method::DELETE, "/v1/config/cache/size-max", &[], "");
    assert_eq!(r.status, 200, "{}", r.text());
    let r = api.req(Method::GET, "/v1/config/cache/size-max", &[], "");
    assert_ne!(r.json(), json!("20M"));

    // POST /reload re-reads the file.
    let mut text = std::fs::read_to_string(&host.config)?;
    text = text.replace("192.0.2.13", "192.0.2.14");
    std::fs::write(&host.config, text)?;
    let r = api.req(Method::POST, "/reload", &[], "");
    assert_eq!(r.status, 200, "{}", r.text());
    let answer = dns::resolve(host.listen, "api.test.", RecordType::A)?;
    assert!(format!("{answer:?}").contains("192.0.2.14"), "{answer:?}");
    Ok(())
}

#[test]
fn api_status_health_schema_cache_and_stop() -> Result<()> {
    let mut host = Host::start(2, &local("192.0.2.10"))?;
    host.wait_converged(None, Duration::from_secs(30))?;
    let api = api_of(&host)?;

    let r = api.req(Method::GET, "/status", &[], "");
    assert_eq!(r.status, 200);
    let s = r.json();
    let workers = s["workers"].as_array().context("workers")?;
    assert_eq!(workers.len(), 2, "{s:#}");
    let status_pids: Vec<u64> = workers.iter().filter_map(|w| w["pid"].as_u64()).collect();
    let real: Vec<u64> = pids(&host).values().map(|p| u64::from(*p)).collect();
    let mut a = status_pids.clone();
    let mut b = real.clone();
    a.sort();
    b.sort();
    assert_eq!(a, b, "{s:#}");
    assert!(workers.iter().all(|w| w["state"] == "ready"));
    assert!(
        workers[0]["ready-since"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );
    assert_eq!(s["phase"], "idle");
    assert!(
        s["events"]
            .as_array()
            .is_some_and(|e| !e.is_empty() && e.len() <= 20)
    );
    assert_eq!(s["current-revision"], s["target-revision"]);
    // The cache garbage collector is enabled by default and runs under supervisord.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let s = api.req(Method::GET, "/status", &[], "").json();
        if s["cache-gc"]["state"] == "running" && s["cache-gc"]["pid"].is_u64() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "cache-gc state: {:#}",
            s["cache-gc"]
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    assert_eq!(api.req(Method::GET, "/healthz", &[], "").status, 200);
    assert_eq!(api.req(Method::GET, "/readyz", &[], "").status, 200);
    let r = api.req(Method::GET, "/schema", &[], "");
    assert_eq!(r.status, 200);
    assert!(
        r.json()["properties"]["workers"].is_object(),
        "{}",
        r.text()
    );

    // Cache clear: fill the cache through a local-data name, clear, kresd reports a count.
    let r = api.req(
        Method::POST,
        "/cache/clear",
        &[("content-type", "application/json")],
        r#"{"name": "example.test", "exact-name": true, "rr-type": "A"}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json()["count"].is_number(), "{}", r.text());
    let r = api.req(Method::POST, "/cache/clear", &[], "");
    assert_eq!(r.status, 200, "{}", r.text());
    let r = api.req(Method::POST, "/cache/clear", &[], r#"{"rr-type": "A"}"#);
    assert_eq!(r.status, 422);
    assert_eq!(error_pointers(&r), ["/rr-type"]);

    // readyz follows the workers: SIGSTOP does not change readiness, so stop via the API.
    let r = api.req(Method::POST, "/stop", &[], "");
    assert_eq!(r.status, 200);
    let deadline = Instant::now() + Duration::from_secs(20);
    while host.pid().is_some() && Instant::now() < deadline {
        if !Path::new(&format!("/proc/{}", host.pid().unwrap_or(0))).exists()
            || std::fs::read_to_string(format!("/proc/{}/stat", host.pid().unwrap_or(0)))
                .map(|s| s.contains(") Z "))
                .unwrap_or(true)
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        Instant::now() < deadline,
        "operator did not stop after POST /stop"
    );
    assert!(!host.api_socket().exists(), "API socket left behind");
    host.kill_operator()?;
    Ok(())
}

fn sample(scrape: &prometheus_parse::Scrape, name: &str, worker: &str) -> Option<f64> {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name && s.labels.get("worker") == Some(worker))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => f64::NAN,
        })
}

fn scrape(api: &Api) -> (prometheus_parse::Scrape, Duration) {
    let t = Instant::now();
    let r = api.req(Method::GET, "/metrics", &[], "");
    let took = t.elapsed();
    assert_eq!(r.status, 200);
    let lines: Vec<std::io::Result<String>> = r.text().lines().map(|l| Ok(l.to_owned())).collect();
    (
        prometheus_parse::Scrape::parse(lines.into_iter()).expect("prometheus text"),
        took,
    )
}

#[test]
fn api_metrics_count_queries_and_survive_a_stopped_worker() -> Result<()> {
    let host = Host::start(2, &local("192.0.2.10"))?;
    host.wait_converged(None, Duration::from_secs(30))?;
    let api = api_of(&host)?;

    let (first, _) = scrape(&api);
    let total = |s: &prometheus_parse::Scrape| {
        ["0", "1"]
            .iter()
            .filter_map(|w| sample(s, "kresd_request_udp_total", w))
            .sum::<f64>()
    };
    assert!(
        sample(&first, "kres_worker_up", "0") == Some(1.0),
        "{:?}",
        first.samples
    );
    let before = total(&first);
    for _ in 0..20 {
        dns::resolve(host.listen, "api.test.", RecordType::A)?;
    }
    let (second, _) = scrape(&api);
    let after = total(&second);
    assert!(after >= before + 20.0, "udp requests {before} -> {after}");
    assert!(
        second
            .samples
            .iter()
            .any(|s| s.metric == "kres_revision_info"
                && s.value == prometheus_parse::Value::Gauge(1.0)),
        "no kres_revision_info"
    );
    assert!(
        second
            .samples
            .iter()
            .any(|s| s.metric == "kres_workers" && s.labels.get("state") == Some("ready")),
        "no kres_workers{{state=ready}}"
    );

    // A SIGSTOPped worker must not hang the scrape; it is reported down.
    let status = host.status()?;
    let w0 = status["workers"]
        .as_array()
        .and_then(|w| {
            w.iter()
                .find(|w| w["slot"]["worker"] == 0 || w["slot"] == json!({"worker": 0}))
        })
        .and_then(|w| w["pid"].as_u64())
        .or_else(|| pids(&host).get("kresd0").map(|p| u64::from(*p)))
        .context("worker 0 pid")?;
    Command::new("kill")
        .args(["-STOP", &w0.to_string()])
        .status()?;
    let (third, took) = scrape(&api);
    Command::new("kill")
        .args(["-CONT", &w0.to_string()])
        .status()?;
    assert!(took < Duration::from_secs(2), "scrape took {took:?}");
    assert_eq!(sample(&third, "kres_worker_up", "0"), Some(0.0));
    assert_eq!(sample(&third, "kres_worker_up", "1"), Some(1.0));
    assert!(sample(&third, "kres_worker_scrape_errors_total", "0").is_some_and(|v| v >= 1.0));
    Ok(())
}

#[test]
fn kresctl_online_commands() -> Result<()> {
    let host = Host::start(1, &local("192.0.2.10"))?;
    host.wait_converged(None, Duration::from_secs(30))?;
    let _api = api_of(&host)?;
    let bin = kres_tests::host::operator_binary()?.with_file_name("kresctl");
    let run = |args: &[&str]| -> Result<(bool, String, String)> {
        let out = Command::new(&bin)
            .arg("-s")
            .arg(host.api_socket())
            .args(args)
            .output()
            .with_context(|| format!("run {}", bin.display()))?;
        Ok((
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    };
    let (ok, out, err) = run(&["status"])?;
    assert!(ok, "{err}");
    assert!(out.contains("phase:") && out.contains("ready"), "{out}");
    let (ok, out, _) = run(&["--json", "config", "get", "/workers"])?;
    assert!(ok);
    assert_eq!(out.trim(), "1");
    let (ok, out, err) = run(&[
        "config",
        "set",
        "/local-data/addresses/api.test.",
        "192.0.2.20",
    ])?;
    assert!(ok, "{err}");
    assert!(out.contains("applied: revision"), "{out}");
    let answer = dns::resolve(host.listen, "api.test.", RecordType::A)?;
    assert!(format!("{answer:?}").contains("192.0.2.20"), "{answer:?}");
    let (ok, _, err) = run(&["config", "set", "/workers", "0"])?;
    assert!(!ok);
    assert!(err.contains("/workers"), "{err}");
    let new = host.dir().join("new.yaml");
    std::fs::write(&new, host.config_text(1, &local("192.0.2.21")))?;
    let (ok, out, err) = run(&["config", "diff", new.to_str().context("path")?])?;
    assert!(ok, "{err}");
    assert!(
        out.contains("worker 0") && out.contains("192.0.2.21"),
        "{out}"
    );
    let (ok, out, _) = run(&["metrics"])?;
    assert!(ok && out.contains("kres_worker_up"), "{out}");
    let (ok, out, err) = run(&["cache", "clear"])?;
    assert!(ok, "{err}");
    assert!(out.contains("count"), "{out}");
    let (ok, out, _) = run(&["completion", "bash"])?;
    assert!(ok && out.contains("kresctl"));
    let (ok, _, err) = run(&["config", "delete", "/no/such"])?;
    assert!(!ok && err.contains("404"), "{err}");
    Ok(())
}

#[test]
fn api_tcp_listener_only_when_configured() -> Result<()> {
    let mut host = Host::start(1, &local("192.0.2.10"))?;
    host.wait_converged(None, Duration::from_secs(30))?;
    api_of(&host)?;
    // Restart the operator with `management.interface` instead of the unix socket.
    let addr = host.restart_with_tcp_api()?;
    let (ip, port) = (addr.ip(), addr.port());
    let bin = kres_tests::host::operator_binary()?.with_file_name("kresctl");
    let deadline = Instant::now() + Duration::from_secs(15);
    let out = loop {
        let out = Command::new(&bin)
            .args(["--url", &format!("http://{ip}:{port}"), "--json", "status"])
            .output()?;
        if out.status.success() || Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        host.log()
    );
    let status: Value = serde_json::from_slice(&out.stdout)?;
    assert!(status["workers"].is_array(), "{status:#}");
    let op = host.pid().context("operator pid")?;
    assert_eq!(
        tcp_listeners_of(op).len(),
        1,
        "exactly the configured TCP listener"
    );
    assert!(
        !host.api_socket().exists(),
        "no unix socket when TCP is configured"
    );
    Ok(())
}

#[test]
fn api_readyz_is_503_until_a_worker_serves_the_current_revision() -> Result<()> {
    // The very first config fails in kresd: nothing can serve, the operator itself is alive.
    let host = Host::start(1, "lua:\n  script: error('readyz-first-boom')\n")?;
    let api = api_of(&host)?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = api.req(Method::GET, "/status", &[], "").json();
        if s["last-failure"].is_object() {
            break;
        }
        assert!(Instant::now() < deadline, "no failure reported: {s:#}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(api.req(Method::GET, "/healthz", &[], "").status, 200);
    assert_eq!(api.req(Method::GET, "/readyz", &[], "").status, 503);

    // A good config arrives (file + SIGHUP): readyz follows the worker becoming ready.
    host.write_config(1, &local("192.0.2.33"))?;
    host.signal("HUP")?;
    host.wait_converged(None, Duration::from_secs(30))?;
    assert_eq!(api.req(Method::GET, "/readyz", &[], "").status, 200);
    assert_eq!(
        dns::resolve(host.listen, "api.test.", RecordType::A)?,
        ["192.0.2.33"]
    );
    Ok(())
}
