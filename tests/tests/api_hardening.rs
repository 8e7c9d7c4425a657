//! Request hygiene of the HTTP API against a real `kres-operator host` (real supervisord and
//! kresd): bounded JSON Patch work that does not stall a rollout, content type and Origin rules
//! over TCP, `kresctl` on a closed pipe, `kresctl config diff` of large configs.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use hickory_proto::rr::RecordType;
use hyper::Method;
use kres_operator::http::client::{Reply, Target};
use kres_tests::api::Api;
use kres_tests::dns;
use kres_tests::host::Host;
use serde_json::{Value, json};

/// Loopback only: nothing these tests start can reach another host (see
/// `kres_tests::net::isolate_loopback_only`).
#[ctor::ctor(unsafe)]
fn private_network() {
    kres_tests::net::isolate_loopback_only()
}

const JSON: (&str, &str) = ("content-type", "application/json");
const JSON_PATCH: (&str, &str) = ("content-type", "application/json-patch+json");

fn local(addr: &str) -> String {
    format!("local-data:\n  addresses:\n    api.test: {addr}\n")
}

/// A field of `/proc/PID/status` in kB (`VmRSS`, `VmHWM`).
fn proc_kb(pid: u32, field: &str) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .with_context(|| format!("no {field} in /proc/{pid}/status"))
}

fn kresctl() -> Result<std::path::PathBuf> {
    Ok(kres_tests::host::operator_binary()?.with_file_name("kresctl"))
}

/// The first error's pointer of an error reply.
fn first_pointer(r: &Reply) -> String {
    r.json()["errors"][0]["pointer"]
        .as_str()
        .unwrap_or("")
        .to_owned()
}

#[test]
fn api_hostile_patches_are_refused_while_a_rollout_completes_and_status_answers() -> Result<()> {
    let host = Host::start(2, &local("192.0.2.10"))?;
    let before = host.wait_converged(None, Duration::from_secs(30))?;
    let rev0 = Host::current_revision(&before)?;
    let api = Api::new(Target::Unix(host.api_socket()))?;
    let op = host.pid().context("operator pid")?;
    let etag0 = api
        .req(Method::GET, "/v1/config", &[], "")
        .header("etag")
        .context("etag")?;

    // 18 copies of the whole document onto itself (2^18 times its size if nothing stopped it),
    // the same as 1000 operations, and 1001 harmless operations.
    let copies = |n: usize| {
        let ops: Vec<Value> = (0..n)
            .map(|i| json!({"op": "copy", "from": "", "path": format!("/x{i}")}))
            .collect();
        Value::Array(ops).to_string()
    };
    let too_many = Value::Array(vec![
        json!({"op": "test", "path": "/workers", "value": 2});
        1001
    ])
    .to_string();

    let done = std::sync::atomic::AtomicBool::new(false);
    let (rollout, hostile, status_max) = std::thread::scope(|sc| -> Result<_> {
        // A real rollout (canary + 2 workers) through the API.
        let rollout = sc.spawn(|| {
            let api = Api::new(Target::Unix(host.api_socket())).expect("api");
            let t = Instant::now();
            let r = api.raw(
                Method::PUT,
                "/v1/config/local-data/addresses/api.test.",
                &[JSON],
                r#""192.0.2.11""#,
            );
            (r, t.elapsed())
        });
        host.wait_status("the rollout to start", Duration::from_secs(20), |s| {
            s["desired-revision"].as_str().is_some_and(|d| d != rev0) && s["converged"] == false
        })?;
        // /status keeps answering while the hostile requests run.
        let poller = sc.spawn(|| {
            let api = Api::new(Target::Unix(host.api_socket())).expect("api");
            let mut max = Duration::ZERO;
            let mut answered = 0;
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                let t = Instant::now();
                let r = api.raw(Method::GET, "/status", &[], "");
                assert_eq!(r.status, 200, "{}", r.text());
                max = max.max(t.elapsed());
                answered += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            (max, answered)
        });
        let mut hostile = vec![];
        for (name, body, code) in [
            ("18 self-copies", copies(18), 422),
            ("1000 self-copies", copies(1000), 422),
            ("1001 operations", too_many.clone(), 413),
        ] {
            let t = Instant::now();
            let r = api.raw(Method::PATCH, "/v1/config", &[JSON_PATCH], &body);
            hostile.push((name, r, code, t.elapsed()));
        }
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        let status = poller.join().expect("poller");
        Ok((rollout.join().expect("rollout"), hostile, status))
    })?;

    let rss_kb = proc_kb(op, "VmRSS")?;
    let hwm_kb = proc_kb(op, "VmHWM")?;
    println!(
        "operator VmRSS {} MB, peak VmHWM {} MB",
        rss_kb / 1024,
        hwm_kb / 1024
    );
    for (name, r, code, took) in &hostile {
        println!("{name}: {} in {took:?}", r.status);
        assert_eq!(r.status.as_u16(), *code, "{name}: {}", r.text());
        // A deadline that only fails a hung request (the measured time is printed above).
        assert!(*took < Duration::from_secs(10), "{name} took {took:?}");
    }
    // The first copy past 4 MiB is named; it is the same operation however long the patch is.
    let at = first_pointer(&hostile[0].1);
    assert!(
        at.starts_with('/') && at[1..].parse::<usize>().is_ok_and(|i| i < 18),
        "{at}"
    );
    assert_eq!(first_pointer(&hostile[1].1), at);
    assert!(
        hostile[0].1.text().contains("4194304 bytes"),
        "{}",
        hostile[0].1.text()
    );
    assert_eq!(first_pointer(&hostile[2].1), "/1000");
    assert!(hwm_kb < 100 * 1024, "operator peak RSS {hwm_kb} kB");
    let (status_max, answered) = status_max;
    println!("/status answered {answered} times during the requests, slowest {status_max:?}");
    assert!(answered > 0 && status_max < Duration::from_secs(10));

    // The rollout completed, and it is the only change.
    let (r, took) = rollout;
    println!("concurrent rollout: {} in {took:?}", r.status);
    assert_eq!(r.status, 200, "{}", r.text());
    let answer = dns::resolve(host.listen, "api.test.", RecordType::A)?;
    assert_eq!(answer, ["192.0.2.11"]);
    let now = api.raw(Method::GET, "/v1/config", &[], "");
    assert_ne!(now.header("etag").as_deref(), Some(etag0.as_str()));
    assert!(
        now.json().get("x0").is_none(),
        "a refused patch was applied"
    );

    // `kresctl status | head -0`: the reader is gone before kresctl writes.
    let out = kres_tests::process::output_with_closed_stdout(
        Command::new(kresctl()?)
            .arg("-s")
            .arg(host.api_socket())
            .arg("status"),
    )?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(141), "{err}");
    assert!(err.is_empty(), "kresctl wrote to stderr: {err}");
    // And `kresctl status | head -1` through a real shell pipe, with pipefail: the first line.
    let out = Command::new("bash")
        .arg("-c")
        .arg(r#"set -o pipefail; "$0" -s "$1" status | head -1"#)
        .arg(kresctl()?)
        .arg(host.api_socket())
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("phase:") && text.lines().count() == 1,
        "{text}"
    );
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("panicked"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

#[test]
fn api_over_tcp_refuses_cross_origin_and_simple_requests() -> Result<()> {
    let mut host = Host::start(2, &local("192.0.2.10"))?;
    host.wait_converged(None, Duration::from_secs(30))?;
    let addr = host.restart_with_tcp_api()?;
    let (ip, port) = (addr.ip(), addr.port());
    let api = Api::new(Target::Tcp(format!("{ip}:{port}")))?;
    // The new operator's own status (status.json may still be the old one's).
    let fleet_ready = |s: &Value| {
        let w = s["workers"].as_array().cloned().unwrap_or_default();
        s["phase"] == "idle" && w.len() == 2 && w.iter().all(|w| w["state"] == "ready")
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !fleet_ready(&api.raw(Method::GET, "/status", &[], "").json()) {
        assert!(Instant::now() < deadline, "fleet not ready: {}", host.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    let pids0 = host.worker_pids()?;
    assert_eq!(pids0.len(), 2, "{pids0:?}");
    let file0 = std::fs::read(&host.config)?;
    let etag0 = api
        .req(Method::GET, "/v1/config", &[], "")
        .header("etag")
        .context("etag")?;

    // What a web page in a browser on this host can send: refused before anything happens.
    let evil = ("origin", "http://evil.example");
    for (headers, code) in [
        // fetch(..., {method: "POST", mode: "no-cors"}): a simple request, no preflight.
        (vec![evil, ("content-type", "text/plain")], 403),
        (vec![evil], 403),
        // A JSON POST from another origin would need a preflight; refused anyway.
        (vec![evil, JSON], 403),
        // DNS rebinding: the page's own name resolves to the listener.
        (
            vec![
                ("origin", "http://rebind.example:80"),
                ("host", "rebind.example:80"),
                JSON,
            ],
            403,
        ),
        // No Origin (curl, scripts) but no JSON/YAML content type: 415.
        (vec![], 415),
        (
            vec![("content-type", "application/x-www-form-urlencoded")],
            415,
        ),
    ] {
        let r = api.raw(Method::POST, "/stop", &headers, "");
        assert_eq!(r.status.as_u16(), code, "{headers:?}: {}", r.text());
    }
    // Wrong or missing content type on a change: 415, nothing applied.
    for headers in [vec![("content-type", "text/plain")], vec![]] {
        let r = api.raw(Method::PUT, "/v1/config/workers", &headers, "3");
        assert_eq!(r.status, 415, "{headers:?}: {}", r.text());
    }
    let r = api.raw(
        Method::PUT,
        "/v1/config/workers",
        &[JSON, ("origin", "http://evil.example")],
        "3",
    );
    assert_eq!(r.status, 403, "{}", r.text());

    // The fleet kept running, unchanged.
    let s = api.raw(Method::GET, "/status", &[], "");
    assert_eq!(s.status, 200);
    assert!(fleet_ready(&s.json()), "{}", s.text());
    assert_eq!(host.worker_pids()?, pids0);
    assert_eq!(std::fs::read(&host.config)?, file0, "config file changed");
    assert_eq!(
        api.raw(Method::GET, "/v1/config", &[], "").header("etag"),
        Some(etag0)
    );
    assert_eq!(
        dns::resolve(host.listen, "api.test.", RecordType::A)?,
        ["192.0.2.10"]
    );

    // The same requests done right work: no Origin, or this server's own.
    let r = api.raw(Method::POST, "/reload", &[JSON], "");
    assert_eq!(r.status, 200, "{}", r.text());
    let own = format!("http://{ip}:{port}");
    let r = api.raw(
        Method::PUT,
        "/v1/config/local-data/addresses/api.test.",
        &[JSON, ("origin", own.as_str())],
        r#""192.0.2.12""#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        dns::resolve(host.listen, "api.test.", RecordType::A)?,
        ["192.0.2.12"]
    );
    // kresctl sends what is required; `stop` last.
    let url = format!("http://{ip}:{port}");
    for cmd in ["reload", "stop"] {
        let out = Command::new(kresctl()?)
            .args(["--url", &url, cmd])
            .output()?;
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "kresctl {cmd}: {err}");
    }
    let code = host.wait_exit(Duration::from_secs(30))?;
    assert_eq!(code, Some(0), "{}", host.log());
    Ok(())
}

#[test]
fn kresctl_config_diff_of_a_2mib_config() -> Result<()> {
    // 2 MiB of Lua in the running config; the new file changes one line of it.
    let lines: Vec<String> = (0..120_000).map(|i| format!("-- line {i:>10}")).collect();
    let script = |lines: &[String]| {
        let body: Vec<String> = lines.iter().map(|l| format!("    {l}")).collect();
        format!("lua:\n  script: |\n{}\n", body.join("\n"))
    };
    let old = script(&lines);
    assert!(old.len() > 2 * 1024 * 1024);
    let host = Host::start(1, &old)?;
    host.wait_converged(None, Duration::from_secs(60))?;
    let mut changed = lines.clone();
    changed[60_000] = "-- changed".into();
    let new = host.dir().join("new.yaml");
    std::fs::write(&new, host.config_text(1, &script(&changed)))?;

    let t = Instant::now();
    let mut child = Command::new(kresctl()?)
        .arg("-s")
        .arg(host.api_socket())
        .args(["config", "diff"])
        .arg(&new)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut out = String::new();
    child
        .stdout
        .take()
        .context("stdout")?
        .read_to_string(&mut out)?;
    let st = child.wait_with_output()?;
    println!("kresctl config diff of 2 MiB configs: {:?}", t.elapsed());
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let minus: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with('-') && *l != "--- current")
        .collect();
    let plus: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with('+') && *l != "+++ target")
        .collect();
    assert_eq!(minus, ["--- line      60000"], "{out}");
    assert_eq!(plus, ["+-- changed"], "{out}");
    assert!(out.contains("worker 0"), "{out}");
    Ok(())
}
