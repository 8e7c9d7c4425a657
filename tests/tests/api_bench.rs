//! Benchmark (ignored by default; run with `cargo test -p kres-tests --test api_bench -- --ignored
//! --nocapture`): latency of GET /status and of a no-op PUT, /metrics scrape time with 8
//! workers, and the answer time of a hostile JSON Patch with `/status` latency meanwhile, against
//! a real operator + supervisord + kresd. Results: docs/BENCHMARKS.md.

use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use hyper::Method;
use kres_operator::http::client::{ApiClient, Target};
use kres_tests::host::Host;

/// Loopback only: nothing these tests start can reach another host (see
/// `kres_tests::net::isolate_loopback_only`).
#[ctor::ctor(unsafe)]
fn private_network() {
    kres_tests::net::isolate_loopback_only()
}

fn percentiles(mut v: Vec<Duration>) -> (Duration, Duration, Duration) {
    v.sort();
    let at = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize];
    (at(0.5), at(0.99), v[v.len() - 1])
}

fn run(
    rt: &tokio::runtime::Runtime,
    client: &ApiClient,
    n: usize,
    m: Method,
    path: &str,
    body: &str,
) -> Result<Vec<Duration>> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let ct: &[(&str, &str)] = match m {
            Method::PATCH => &[("content-type", "application/json-patch+json")],
            Method::GET => &[],
            _ => &[("content-type", "application/json")],
        };
        let r = rt.block_on(client.request(m.clone(), path, ct, body.to_owned()))?;
        out.push(t.elapsed());
        let want = if m == Method::PATCH { 422 } else { 200 };
        ensure!(r.status == want, "{m} {path}: {} {}", r.status, r.text());
    }
    Ok(out)
}

#[test]
#[ignore = "benchmark"]
fn api_latency_and_scrape_time() -> Result<()> {
    let host = Host::start(8, "")?;
    host.wait_converged(None, Duration::from_secs(60))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let client = ApiClient::new(Target::Unix(host.api_socket()), Duration::from_secs(30));
    // Warm up (first scrape loads kresd's stats module).
    run(&rt, &client, 5, Method::GET, "/metrics", "")?;
    for (name, n, m, path, body) in [
        ("GET /status", 1000, Method::GET, "/status", ""),
        (
            "PUT /v1/config/workers (no-op)",
            300,
            Method::PUT,
            "/v1/config/workers",
            "8",
        ),
        ("GET /metrics (8 workers)", 200, Method::GET, "/metrics", ""),
    ] {
        let (p50, p99, max) = percentiles(run(&rt, &client, n, m, path, body)?);
        println!("BENCH {name}: n={n} p50={p50:?} p99={p99:?} max={max:?}");
    }

    // 18 `copy` of the whole document onto itself (refused at the 4 MiB limit, 422), one after
    // the other, while a second client polls /status.
    let copies: Vec<serde_json::Value> = (0..18)
        .map(|i| serde_json::json!({"op": "copy", "from": "", "path": format!("/x{i}")}))
        .collect();
    let copies = serde_json::Value::Array(copies).to_string();
    let done = std::sync::atomic::AtomicBool::new(false);
    let (patches, status) = std::thread::scope(|sc| -> Result<_> {
        let poller = sc.spawn(|| -> Result<Vec<Duration>> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let mut out = vec![];
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                out.extend(run(&rt, &client, 1, Method::GET, "/status", "")?);
            }
            Ok(out)
        });
        let patches = run(&rt, &client, 20, Method::PATCH, "/v1/config", &copies);
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        let status = poller.join().expect("poller")?;
        Ok((patches?, status))
    })?;
    let n = patches.len();
    let (p50, p99, max) = percentiles(patches);
    println!("BENCH PATCH 18 self-copies (422): n={n} p50={p50:?} p99={p99:?} max={max:?}");
    let n = status.len();
    let (p50, p99, max) = percentiles(status);
    println!("BENCH GET /status meanwhile: n={n} p50={p50:?} p99={p99:?} max={max:?}");
    Ok(())
}
