//! Benchmark (ignored by default; run with `cargo test -p kres-tests --test api_bench -- --ignored
//! --nocapture`): latency of GET /status and of a no-op PUT, and /metrics scrape time with 8
//! workers, against a real operator + supervisord + kresd. Results: docs/BENCHMARKS.md.

use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use hyper::Method;
use kres_operator::http::client::{ApiClient, Target};
use kres_tests::host::Host;

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
        let r = rt.block_on(client.request(m.clone(), path, &[], body.to_owned()))?;
        out.push(t.elapsed());
        ensure!(r.status == 200, "{m} {path}: {} {}", r.status, r.text());
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
    Ok(())
}
