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
use kres_tests::knotd::{Knotd, Zone};
use serde_json::{Value, json};

/// Loopback only: nothing these tests start can reach another host (see
/// `kres_tests::net::isolate_loopback_only`).
#[ctor::ctor(unsafe)]
fn private_network() {
    kres_tests::net::isolate_loopback_only()
}

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

/// The dated backups of the host's config file (`config.yaml.<time>.bak`), oldest first.
fn config_backups(host: &Host) -> Vec<std::path::PathBuf> {
    kres_operator::source::persist::backups(&host.config)
}

/// Run `kresctl -s <the host's API socket> ARGS`: (success, stdout, stderr).
fn kresctl(host: &Host, args: &[&str]) -> Result<(bool, String, String)> {
    let bin = kres_tests::host::operator_binary()?.with_file_name("kresctl");
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
    // A long start timeout: the 409 case below needs a canary that stays unready.
    let host = Host::start_with(2, &local("192.0.2.10"), &["--start-timeout-ms", "60000"])?;
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
    // The operator puts the last good config back as the desired one (a new change).
    let s = host.wait_status(
        "the last good config desired again",
        Duration::from_secs(30),
        |s| s["desired-revision"] == rev0.as_str() && s["converged"] == true,
    )?;
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
    // A dry run changes nothing on the machine: a new cache directory is not created.
    let new_cache = host.dir().join("dry-run-cache");
    let r = api.req(
        Method::PUT,
        "/v1/config/cache/storage?dry-run=true",
        &[],
        &json!(new_cache.display().to_string()).to_string(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        !new_cache.exists(),
        "a dry run created {}",
        new_cache.display()
    );

    // A real change: 200 once converged, new ETag, persisted with a dated backup.
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
    let backups = config_backups(&host);
    let newest = backups.last().context("no backup")?;
    assert!(
        std::fs::read_to_string(newest)?.contains("192.0.2.10"),
        "{backups:?}"
    );

    // The old ETag is now stale: 412.
    let r = api.req(
        Method::PUT,
        "/v1/config/workers",
        &[("if-match", &etag0)],
        "3",
    );
    assert_eq!(r.status, 412);

    // A SIGHUP re-reads the same (API-written) content: the operator logs the re-read as
    // unchanged, no new desired state follows, the ETag stays.
    let outcome = host.reload_publishing_nothing()?;
    assert!(outcome.contains("re-read; unchanged"), "{outcome}");
    let r = api.req(Method::GET, "/v1/config", &[], "");
    assert_eq!(r.header("etag").as_deref(), Some(etag1.as_str()));

    // 409: a change superseded by a newer one before it converged. The first change's canary
    // waits in its Lua for a gate file before it finishes loading (no READY=1), so it cannot
    // converge; the second change is sent once that canary was started, the gate is opened
    // only after the first request answered. No step depends on timing.
    // (A superseded canary that is still starting blocks the next change until it is ready or
    // times out: the planner waits for any starting slot. Hence the gate is opened at the end.)
    let gate = tempfile::Builder::new()
        .prefix("kres-gate-")
        .tempdir_in("/tmp")?;
    std::fs::set_permissions(gate.path(), std::fs::Permissions::from_mode(0o755))?;
    let gate_file = gate.path().join("open");
    let script = format!(
        "while not io.open('{}') do os.execute('sleep 0.05') end",
        gate_file.display()
    );
    let (first, second) = std::thread::scope(|sc| -> Result<(Reply, Reply)> {
        let first = sc.spawn(|| {
            let api = api_of(&host).expect("api");
            api.req(
                Method::PUT,
                "/v1/config/lua/script",
                &[],
                &json!(script).to_string(),
            )
        });
        host.wait_status("the first change's canary", Duration::from_secs(30), |s| {
            s["desired-revision"] != rev1.as_str()
                && s["desired-revision"].as_str().is_some_and(|d| {
                    s["events"].as_array().is_some_and(|ev| {
                        ev.iter()
                            .any(|e| e["message"] == format!("canary slot: start on {d}").as_str())
                    })
                })
        })?;
        // A JSON Patch whose `test` operation holds (the first change is the desired config).
        let patch = json!([
            {"op": "test", "path": "/lua/script", "value": script},
            {"op": "remove", "path": "/lua/script"},
            {"op": "replace", "path": "/local-data/addresses/api.test.", "value": "192.0.2.13"},
        ]);
        let patch = patch.to_string();
        let host = &host;
        let second = sc.spawn(move || {
            let api = api_of(host).expect("api");
            api.req(
                Method::PATCH,
                "/v1/config",
                &[("content-type", "application/json-patch+json")],
                &patch,
            )
        });
        let first = first.join().map_err(|_| anyhow::anyhow!("first request"))?;
        std::fs::write(&gate_file, "")?;
        std::fs::set_permissions(&gate_file, std::fs::Permissions::from_mode(0o644))?;
        let second = second
            .join()
            .map_err(|_| anyhow::anyhow!("second request"))?;
        Ok((first, second))
    })?;
    assert_eq!(first.status, 409, "{}", first.text());
    assert_eq!(second.status, 200, "{}", second.text());
    assert_eq!(
        api.req(Method::GET, "/v1/config/lua/script", &[], "")
            .status,
        404
    );
    let answer = dns::resolve(host.listen, "api.test.", RecordType::A)?;
    assert!(format!("{answer:?}").contains("192.0.2.13"), "{answer:?}");

    // DELETE a key: back to the datamodel's default (100M, docs/config-reference.md).
    let default: Value =
        serde_json::to_value(kres_crd::config::ResolverConfig::default())?["cache"]["size-max"]
            .clone();
    assert_eq!(default, json!("100M"));
    let r = api.req(Method::DELETE, "/v1/config/cache/size-max", &[], "");
    assert_eq!(r.status, 200, "{}", r.text());
    let r = api.req(Method::GET, "/v1/config/cache/size-max", &[], "");
    assert_eq!(r.json(), default, "{}", r.text());
    let saved: Value = serde_norway::from_str(&std::fs::read_to_string(&host.config)?)?;
    assert!(
        saved["cache"].get("size-max").is_none_or(|v| *v == default),
        "{saved:#}"
    );

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

/// With the upstream gone, `name` is not answered from the cache any more: kresd fails the
/// lookup (SERVFAIL) or does not reply in 10 s; a cached answer would come at once.
fn assert_cache_miss(host: &Host, name: &str, rtype: RecordType) {
    match dns::query_with(host.listen, name, rtype, Duration::from_secs(10), |_| {}) {
        Ok(m) => assert!(
            dns::answers(&m).is_empty(),
            "{name} {rtype} still answered after the clear: {:?} {:?}",
            dns::rcode(&m),
            dns::answers(&m)
        ),
        Err(e) => println!("{name} {rtype}: no reply after the clear ({e})"),
    }
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
    let deadline = Instant::now() + Duration::from_secs(20);
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

/// Cache clear on a filled cache: resolve through a real knotd, stop knotd (the answer now comes
/// from the cache alone), clear that name, and it is a miss again (no upstream: no answer).
/// One worker: the clear runs on one worker, and another worker's open LMDB read transaction
/// may still see the cleared record for a while (seen once in a 2-worker run).
#[test]
fn api_cache_clear_empties_a_filled_cache() -> Result<()> {
    let knot = Knotd::start(kres_tests::net::unique_loopback(), &[Zone::example_test()])?;
    let forward = format!(
        "{}forward:\n  - subtree: example.test\n    servers: ['{}@{}']\n    options:\n      dnssec: false\n",
        local("192.0.2.10"),
        knot.addr.ip(),
        knot.addr.port()
    );
    let host = Host::start(1, &forward)?;
    host.wait_converged(None, Duration::from_secs(30))?;
    let api = api_of(&host)?;
    let www = "www.example.test.";
    assert_eq!(
        dns::resolve(host.listen, www, RecordType::A)?,
        ["192.0.2.10"]
    );
    assert_eq!(
        dns::resolve(host.listen, www, RecordType::AAAA)?,
        ["2001:db8::10"]
    );
    drop(knot);
    for _ in 0..4 {
        assert_eq!(
            dns::resolve(host.listen, www, RecordType::A)?,
            ["192.0.2.10"]
        );
    }
    let r = api.req(
        Method::POST,
        "/cache/clear",
        &[("content-type", "application/json")],
        r#"{"name": "www.example.test", "exact-name": true, "rr-type": "A"}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let count = r.json()["count"].as_u64().context("count")?;
    assert!(
        count >= 1,
        "nothing cleared from a filled cache: {}",
        r.text()
    );
    assert_cache_miss(&host, www, RecordType::A);
    // The AAAA record was not named: still cached. A full clear removes it too.
    assert_eq!(
        dns::resolve(host.listen, www, RecordType::AAAA)?,
        ["2001:db8::10"]
    );
    let r = api.req(Method::POST, "/cache/clear", &[], "");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_cache_miss(&host, www, RecordType::AAAA);
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
    // The per-worker bound is 200 ms; 10 s only fails a scrape that hangs on the stopped worker.
    println!("scrape with a SIGSTOPped worker took {took:?}");
    assert!(took < Duration::from_secs(10), "scrape took {took:?}");
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
    let run = |args: &[&str]| kresctl(&host, args);
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

/// `PUT path` with a chunked body of `total` bytes written straight to the unix socket (no
/// Content-Length, so only counting the chunks can find it too large); the raw response.
fn raw_chunked_put(socket: &Path, path: &str, total: usize) -> Result<String> {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(socket)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        s,
        "PUT {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )?;
    let chunk = vec![b' '; 64 * 1024];
    let mut sent = 0;
    while sent < total {
        let wrote = s
            .write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
            .and_then(|()| s.write_all(&chunk))
            .and_then(|()| s.write_all(b"\r\n"));
        if wrote.is_err() {
            // The server answered early and closed: read what it said.
            break;
        }
        sent += chunk.len();
    }
    let _ = s.write_all(b"0\r\n\r\n");
    let mut resp = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
        resp.extend_from_slice(&buf[..n]);
    }
    Ok(String::from_utf8_lossy(&resp).into_owned())
}

/// The HTTP details the docs promise, against the real operator (the fake plane in
/// operator/tests/http_fake.rs covers them too): YAML out and in, `If-None-Match: *`, a JSON
/// Patch `test` operation that fails, an oversized head (431) and an oversized chunked body
/// (413). Nothing rejected reaches the fleet.
#[test]
fn api_http_details_against_the_real_operator() -> Result<()> {
    let host = Host::start(1, &local("192.0.2.10"))?;
    host.wait_converged(None, Duration::from_secs(30))?;
    let api = api_of(&host)?;
    let pids0 = pids(&host);
    let json_reply = api.req(Method::GET, "/v1/config", &[], "");
    let etag0 = json_reply.header("etag").context("etag")?;

    // Accept: application/yaml: the same document and ETag, as YAML.
    let r = api.req(
        Method::GET,
        "/v1/config",
        &[("accept", "application/yaml")],
        "",
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/yaml")
    );
    assert_eq!(r.header("etag").as_deref(), Some(etag0.as_str()));
    let yaml: Value = serde_norway::from_str(&r.text())?;
    assert_eq!(yaml, json_reply.json());

    // If-None-Match: * always fails: the document exists.
    let r = api.req(
        Method::PUT,
        "/v1/config/workers",
        &[("if-none-match", "*")],
        "2",
    );
    assert_eq!(r.status, 412, "{}", r.text());

    // A JSON Patch whose `test` operation fails: 422, nothing applied.
    let r = api.req(
        Method::PATCH,
        "/v1/config",
        &[("content-type", "application/json-patch+json")],
        r#"[{"op": "test", "path": "/workers", "value": 7},
            {"op": "replace", "path": "/workers", "value": 2}]"#,
    );
    assert_eq!(r.status, 422, "{}", r.text());

    // A request head over 16 KiB: 431.
    let huge = "a".repeat(40_000);
    let r = api.req(Method::GET, "/status", &[("x-big", &huge)], "");
    assert_eq!(r.status.as_u16(), 431, "{}", r.text());

    // A chunked body over the 4 MiB body limit: 413 (no Content-Length to go by).
    let raw = raw_chunked_put(&host.api_socket(), "/v1/config/lua/script", 5 * 1024 * 1024)?;
    assert!(
        raw.starts_with("HTTP/1.1 413"),
        "{}",
        raw.lines().next().unwrap_or_default()
    );
    let r = api.req(Method::GET, "/v1/config", &[], "");
    assert_eq!(r.header("etag").as_deref(), Some(etag0.as_str()));
    assert_eq!(pids(&host), pids0, "a rejected request restarted workers");

    // A YAML body is applied like JSON.
    let r = api.req(
        Method::PUT,
        "/v1/config/local-data/addresses",
        &[("content-type", "application/yaml")],
        "api.test.: 192.0.2.31\n",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        dns::resolve(host.listen, "api.test.", RecordType::A)?,
        ["192.0.2.31"]
    );
    Ok(())
}

#[test]
fn api_put_returns_when_that_change_converged_and_a_rejection_is_reverted_by_the_operator()
-> Result<()> {
    let host = Host::start(2, &local("192.0.2.20"))?;
    let s0 = host.wait_converged(None, Duration::from_secs(30))?;
    let rev0 = Host::current_revision(&s0)?;
    let api = api_of(&host)?;

    // Workers 2 -> 4: same revision; the answer comes only once 4 workers are ready.
    let r = api.req(Method::PUT, "/v1/config/workers", &[], "4");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["revision"], rev0.as_str(), "{}", r.text());
    let s = api.req(Method::GET, "/status", &[], "").json();
    let ready: Vec<&Value> = s["workers"]
        .as_array()
        .context("workers")?
        .iter()
        .filter(|w| w["state"] == "ready" && w["revision"] == rev0.as_str())
        .collect();
    assert_eq!(
        ready.len(),
        4,
        "answered before 4 workers were ready: {s:#}"
    );
    assert_eq!(
        (s["converged"].clone(), s["workers-desired"].clone()),
        (json!(true), json!(4))
    );
    let seq_after_scale = s["change-seq"].as_u64().context("change-seq")?;

    // A change the fleet rejects, the client gone mid-rollout (once the change was accepted,
    // before any answer): the operator still reverts the file to the last good config
    // (workers: 4), not to what the request saw or to nothing.
    let good_file = std::fs::read_to_string(&host.config)?;
    {
        use std::io::Write;
        let body = r#""error('x')""#;
        let mut conn = std::os::unix::net::UnixStream::connect(host.api_socket())?;
        write!(
            conn,
            "PUT /v1/config/lua/script HTTP/1.1\r\nhost: kres\r\ncontent-type: application/json\r\n\
             content-length: {}\r\n\r\n{body}",
            body.len()
        )?;
        // The change is accepted (a new change sequence) and being rolled out...
        host.wait_status("the change accepted", Duration::from_secs(30), |s| {
            s["change-seq"]
                .as_u64()
                .is_some_and(|n| n > seq_after_scale)
        })?;
        // ...and the client is gone before any answer.
        conn.shutdown(std::net::Shutdown::Both)?;
    }
    let s = host.wait_status(
        "the rejection and the revert",
        Duration::from_secs(30),
        |s| {
            s["failed-revisions"]
                .as_array()
                .is_some_and(|f| !f.is_empty())
                && s["desired-revision"] == rev0.as_str()
                && s["change-seq"]
                    .as_u64()
                    .is_some_and(|n| n >= seq_after_scale + 2)
                && s["converged"] == true
        },
    )?;
    let reason = s["last-failure"]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("x"), "{s:#}");
    assert_eq!(std::fs::read_to_string(&host.config)?, good_file);
    let backups = config_backups(&host);
    let rejected = backups.last().context("no backup")?;
    assert!(
        std::fs::read_to_string(rejected)?.contains("error('x')"),
        "the rejected content is kept as a backup: {backups:?}"
    );
    Ok(())
}

#[test]
fn kresctl_history_and_rollback_return_dns_to_a_previous_revision() -> Result<()> {
    let host = Host::start(1, &local("192.0.2.30"))?;
    let s0 = host.wait_converged(None, Duration::from_secs(30))?;
    let rev0 = Host::current_revision(&s0)?;
    let api = api_of(&host)?;
    let run = |args: &[&str]| kresctl(&host, args);
    let r = api.req(
        Method::PUT,
        "/v1/config/local-data/addresses/api.test.",
        &[],
        r#""192.0.2.31""#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let rev1 = r.json()["revision"]
        .as_str()
        .context("revision")?
        .to_owned();
    assert_ne!(rev1, rev0);
    assert_eq!(
        dns::resolve(host.listen, "api.test.", RecordType::A)?,
        vec!["192.0.2.31"]
    );

    // History: newest first, both good, what changed.
    let (ok, out, err) = run(&["--json", "history"])?;
    assert!(ok, "{err}");
    let h: Value = serde_json::from_str(&out)?;
    let revs: Vec<(&str, &str)> = h["revisions"]
        .as_array()
        .context("revisions")?
        .iter()
        .map(|e| {
            (
                e["revision"].as_str().unwrap_or(""),
                e["state"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        revs,
        [(rev1.as_str(), "good"), (rev0.as_str(), "good")],
        "{out}"
    );
    assert_eq!(h["revisions"][0]["changed"], json!(["local-data"]), "{out}");
    let (ok, out, err) = run(&["history"])?;
    assert!(ok, "{err}");
    assert!(
        out.lines()
            .next()
            .is_some_and(|l| l.contains(&rev1) && l.contains("desired")),
        "{out}"
    );

    // Rolling back to a revision that is not in the history is refused, naming the field.
    let (ok, _, err) = run(&["rollback", "0123456789abcdef"])?;
    assert!(!ok);
    assert!(err.contains("/revision"), "{err}");

    // Rollback (default: the previous good revision): DNS answers as before, file rewritten.
    let (ok, out, err) = run(&["rollback"])?;
    assert!(ok, "{err}");
    assert!(out.contains(&rev0), "{out}");
    assert_eq!(Host::current_revision(&host.status()?)?, rev0);
    assert_eq!(
        dns::resolve(host.listen, "api.test.", RecordType::A)?,
        vec!["192.0.2.30"]
    );
    let file = std::fs::read_to_string(&host.config)?;
    assert!(
        file.contains("192.0.2.30") && !file.contains("192.0.2.31"),
        "{file}"
    );
    let backups = config_backups(&host);
    let newest = backups.last().context("no backup")?;
    assert!(
        std::fs::read_to_string(newest)?.contains("192.0.2.31"),
        "{backups:?}"
    );
    Ok(())
}
