//! Host-mode benchmarks (`make bench`; ignored by `cargo test`): change -> converged for
//! N = 1, 2, 4, 8 against N+1 bare kresd starts, queries lost during a rollout under load,
//! operator idle RSS and start-up time. Prints a Markdown table for docs/BENCHMARKS.md.
//!
//! The bare start is kresd on the config the workers run (the fleet's rendered `kresd.conf`,
//! its cache of the same size in a fresh directory), measured right before each N; the start
//! on a minimal config (`hints` only, kresd's default 100 MB cache) is printed beside it.

use std::thread;
use std::time::{Duration, Instant};

use kres_tests::dnsperf;
use kres_tests::host::Host;
use kres_tests::kresd::{Kresd, KresdOptions};
use serde_json::Value;

/// Loopback only: nothing these tests start can reach another host (see
/// `kres_tests::net::isolate_loopback_only`).
#[ctor::ctor(unsafe)]
fn private_network() {
    kres_tests::net::isolate_loopback_only()
}

fn local(n: u32) -> String {
    format!("local-data:\n  addresses:\n    svc.test: 192.0.2.{n}\n")
}

fn wait(host: &Host, timeout: Duration, ok: impl Fn(&Value) -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(s) = host.status()
            && ok(&s)
        {
            return Ok(());
        }
        thread::sleep(Duration::from_millis(2));
    }
    anyhow::bail!("timeout; log:\n{}", host.log())
}

fn converged_on_other(old: &str) -> impl Fn(&Value) -> bool {
    let old = old.to_string();
    move |s: &Value| {
        s["converged"] == true && s["current-revision"].as_str().is_some_and(|r| r != old)
    }
}

/// kresd exec -> READY=1, median of 9 starts on `lua`, each in a fresh directory (`@DIR@` in
/// `lua` is replaced by it).
fn bare_start(lua: &str) -> anyhow::Result<Duration> {
    let mut times = vec![];
    for _ in 0..9 {
        let dir = tempfile::Builder::new().prefix("kresd-bare-").tempdir()?;
        let lua = lua.replace("@DIR@", &dir.path().display().to_string());
        std::fs::create_dir(dir.path().join("cache"))?;
        let t = Instant::now();
        let k = Kresd::start_in(dir.path(), &lua, &KresdOptions::default())?;
        times.push(t.elapsed());
        drop(k);
    }
    Ok(median(times))
}

/// The config the fleet's workers run, with its cache in `@DIR@/cache` instead.
fn worker_config(host: &Host) -> anyhow::Result<String> {
    let revision = Host::current_revision(&host.status()?)?;
    let path = host
        .rundir
        .join("revisions")
        .join(&revision)
        .join("kresd.conf");
    let lua = std::fs::read_to_string(&path)?;
    let cache = host.cache_dir().display().to_string();
    anyhow::ensure!(
        lua.contains(&cache),
        "{} does not name {cache}",
        path.display()
    );
    Ok(lua.replace(&cache, "@DIR@/cache"))
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        })
        .unwrap_or(0)
}

#[test]
#[ignore = "benchmark: run with `make bench`"]
fn host_bench() -> anyhow::Result<()> {
    println!(
        "| N | change -> converged (median of 3) | bare start, worker config / minimal | \
         (N+1) x bare start | ratio | ratio to the minimal start |"
    );
    println!("|---|---|---|---|---|---|");
    for n in [1u32, 2, 4, 8] {
        let host = Host::start(n, &local(1))?;
        host.wait_converged(None, Duration::from_secs(60))?;
        // Bare kresd (exec -> READY=1, median of 9), right before this N's rollouts.
        let bare = bare_start(&worker_config(&host)?)?;
        let minimal = bare_start("modules.load('hints > iterate')\n")?;
        let mut times = vec![];
        for round in 2..5 {
            let old = Host::current_revision(&host.status()?)?;
            host.write_config(n, &local(round))?;
            let t = Instant::now();
            host.signal("HUP")?;
            wait(&host, Duration::from_secs(60), converged_on_other(&old))?;
            times.push(t.elapsed());
        }
        let m = median(times);
        let budget = bare * (n + 1);
        println!(
            "| {n} | {m:.0?} | {bare:.1?} / {minimal:.1?} | {budget:.0?} | {:.2} | {:.2} |",
            m.as_secs_f64() / budget.as_secs_f64(),
            m.as_secs_f64() / (minimal * (n + 1)).as_secs_f64()
        );
    }

    // Queries lost during a rollout of 4 workers under ~20k qps (dnsperf, 4 clients).
    println!("\n| run | queries sent | completed | lost | response codes |\n|---|---|---|---|---|");
    let host = Host::start(4, &local(1))?;
    host.wait_converged(None, Duration::from_secs(60))?;
    let queries = host.dir().join("q.txt");
    std::fs::write(&queries, "svc.test A\n")?;
    for run in 1..=3 {
        let old = Host::current_revision(&host.status()?)?;
        let (server, q) = (host.listen, queries.clone());
        let perf = thread::spawn(move || {
            dnsperf::run(
                server,
                &q,
                &["-l", "4", "-Q", "20000", "-c", "4", "-t", "2"],
            )
        });
        thread::sleep(Duration::from_millis(800));
        host.write_config(4, &local(10 + run))?;
        host.signal("HUP")?;
        wait(&host, Duration::from_secs(60), converged_on_other(&old))?;
        let report = perf.join().map_err(|_| anyhow::anyhow!("dnsperf"))??;
        println!(
            "| {run} | {} | {} | {} | {:?} |",
            report.sent, report.completed, report.lost, report.rcodes
        );
        // The numbers printed are the numbers checked: none lost, all NOERROR.
        report.check_clean(20_000)?;
    }
    let pid = host.pid().unwrap_or(0);
    thread::sleep(Duration::from_secs(2));
    println!(
        "\noperator idle RSS (4 workers, converged): {} KiB",
        rss_kib(pid)
    );
    drop(host);

    // Start-up: operator exec -> 4 workers converged (supervisord started by the operator), and
    // a restarted operator adopting a running fleet.
    let t = Instant::now();
    let mut host = Host::start(4, &local(1))?;
    wait(&host, Duration::from_secs(60), |s| s["converged"] == true)?;
    let cold = t.elapsed();
    host.kill_operator()?;
    std::fs::remove_file(host.rundir.join("status.json"))?;
    let t = Instant::now();
    host.spawn()?;
    wait(&host, Duration::from_secs(60), |s| s["converged"] == true)?;
    let adopt = t.elapsed();
    println!(
        "cold start -> 4 workers converged: {cold:.0?}; restart + adoption -> converged: {adopt:.0?}"
    );
    Ok(())
}

/// DNS gap when supervisord is SIGKILLed (docs/architecture.md): queries every 5 ms (200 ms
/// timeout) from before the kill until the fleet is recovered; the gap is the longest time
/// between two answered queries. Median of 3.
#[test]
#[ignore = "benchmark: run with `make bench`"]
fn host_bench_supervisord_kill_dns_gap() -> anyhow::Result<()> {
    let mut gaps = vec![];
    for _ in 0..3 {
        let host = Host::start(2, &local(1))?;
        wait(&host, Duration::from_secs(60), |s| s["converged"] == true)?;
        let supervisord = host.supervisord_pid()?;
        let old_pids: Vec<u32> = host.worker_pids()?.into_values().collect();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (flag, server) = (stop.clone(), host.listen);
        let prober = thread::spawn(move || {
            let mut answered = vec![];
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                let ok = kres_tests::dns::query_with(
                    server,
                    "svc.test.",
                    hickory_proto::rr::RecordType::A,
                    Duration::from_millis(200),
                    |_| {},
                )
                .is_ok_and(|m| !kres_tests::dns::answers(&m).is_empty());
                if ok {
                    answered.push(Instant::now());
                }
                thread::sleep(Duration::from_millis(5));
            }
            answered
        });
        thread::sleep(Duration::from_millis(300));
        std::process::Command::new("kill")
            .args(["-KILL", &supervisord.to_string()])
            .status()?;
        // Recovered: a new supervisord, and both workers ready with PIDs other than before.
        let deadline = Instant::now() + Duration::from_secs(60);
        while host.supervisord_pid().ok().is_none_or(|p| p == supervisord) {
            anyhow::ensure!(Instant::now() < deadline, "supervisord not replaced");
            thread::sleep(Duration::from_millis(10));
        }
        wait(&host, Duration::from_secs(60), |s| {
            s["converged"] == true
                && s["workers"].as_array().is_some_and(|w| {
                    w.len() == 2
                        && w.iter().all(|w| {
                            w["state"] == "ready"
                                && w["pid"]
                                    .as_u64()
                                    .is_some_and(|p| !old_pids.contains(&(p as u32)))
                        })
                })
        })?;
        thread::sleep(Duration::from_millis(300));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let answered = prober.join().map_err(|_| anyhow::anyhow!("prober"))?;
        let gap = answered
            .windows(2)
            .map(|w| w[1] - w[0])
            .max()
            .unwrap_or_default();
        gaps.push(gap);
    }
    println!(
        "DNS gap after SIGKILL of supervisord (2 workers, queries every 5 ms): median {:.0?} of {gaps:.0?}",
        median(gaps.clone())
    );
    Ok(())
}

/// One dnsperf run over a rollout: the rollout's duration and dnsperf's report.
fn rollout_under_dnsperf(
    host: &Host,
    round: u32,
    dnsperf_args: &[&str],
) -> anyhow::Result<(Duration, kres_tests::dnsperf::Report)> {
    let old = Host::current_revision(&host.status()?)?;
    let queries = host.dir().join("q.txt");
    std::fs::write(&queries, "svc.test A\n")?;
    let perf = std::process::Command::new("dnsperf")
        .args(["-s", &host.listen.ip().to_string()])
        .args(["-p", &host.listen.port().to_string()])
        .arg("-d")
        .arg(&queries)
        .args(["-l", "120", "-t", "2"])
        .args(dnsperf_args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    thread::sleep(Duration::from_secs(1));
    host.write_config(4, &local(round))?;
    let t = Instant::now();
    host.signal("HUP")?;
    let waited = wait(host, Duration::from_secs(120), converged_on_other(&old));
    let rollout = t.elapsed();
    // One more second of load on the new fleet, then stop dnsperf (SIGINT: it reports).
    thread::sleep(Duration::from_secs(1));
    std::process::Command::new("kill")
        .args(["-s", "INT", &perf.id().to_string()])
        .status()?;
    let out = perf.wait_with_output()?;
    waited?;
    let report = kres_tests::dnsperf::Report::parse(&String::from_utf8_lossy(&out.stdout))?;
    Ok((rollout, report))
}

/// Queries lost during a rollout of 4 workers at 10k qps, UDP and TCP, without drain
/// (`--drain-timeout-ms 0`) and with the default drain; TCP with dnsperf's persistent
/// connections (4 clients, busy), with 100 mostly idle ones, and with short ones (a new
/// connection every 20 queries).
#[test]
#[ignore = "benchmark: run with `make bench`"]
fn host_bench_rollout_drain() -> anyhow::Result<()> {
    println!("| drain | transport | rollout | queries sent | completed | lost |");
    println!("|---|---|---|---|---|---|");
    let modes: [(&str, &[&str]); 4] = [
        ("UDP", &["-m", "udp", "-c", "4", "-Q", "10000"]),
        (
            "TCP, 4 persistent connections",
            &["-m", "tcp", "-c", "4", "-Q", "10000"],
        ),
        (
            "TCP, 100 persistent connections at 1 q/s each",
            &["-m", "tcp", "-c", "100", "-Q", "100", "-q", "100"],
        ),
        (
            "TCP, 20 queries per connection",
            &[
                "-m",
                "tcp",
                "-c",
                "4",
                "-Q",
                "10000",
                "-O",
                "num-queries-per-conn=20",
            ],
        ),
    ];
    for drain_ms in ["0", "5000"] {
        let mut host = Host::prepare(4, &local(1), None)?;
        host.spawn_with(&["--drain-timeout-ms", drain_ms])?;
        host.wait_converged(None, Duration::from_secs(60))?;
        let mut round = 20;
        for (name, args) in modes {
            for _ in 0..2 {
                round += 1;
                let (t, r) = rollout_under_dnsperf(&host, round, args)?;
                println!(
                    "| {drain_ms} ms | {name} | {t:.1?} | {} | {} | {} |",
                    r.sent, r.completed, r.lost
                );
            }
        }
    }
    Ok(())
}
