//! Validate + render time (harness = false; prints numbers). Run with `make bench`.
//!
//! Cases: the shipped example config, and a large one (1,000 local-data names, 100 forward zones).

use std::hint::black_box;
use std::time::{Duration, Instant};

use kres_crd::config::ResolverConfig;
use kres_crd::lua::{RenderOptions, render, revision};

fn large_config() -> String {
    let mut y = String::from(
        "network:\n  listen:\n    - interface: 127.0.0.1@5353\nlocal-data:\n  addresses:\n",
    );
    for i in 0..1000 {
        y.push_str(&format!(
            "    host{i}.bench.test: [192.0.{}.{}, '2001:db8::{:x}']\n",
            i / 250,
            i % 250 + 1,
            i + 1
        ));
    }
    y.push_str("forward:\n");
    for i in 0..100 {
        y.push_str(&format!(
            "  - subtree: zone{i}.bench.test\n    servers: ['127.0.0.{}@53', '127.0.1.{}']\n",
            i % 250 + 1,
            i % 250 + 1
        ));
    }
    y
}

struct Stats {
    median: Duration,
    p99: Duration,
    mean: Duration,
}

fn measure(mut f: impl FnMut(), min_iters: usize, min_time: Duration) -> Stats {
    for _ in 0..10 {
        f();
    }
    let mut samples = Vec::new();
    let start = Instant::now();
    while samples.len() < min_iters || start.elapsed() < min_time {
        let t = Instant::now();
        f();
        samples.push(t.elapsed());
    }
    samples.sort();
    let mean = samples.iter().sum::<Duration>() / samples.len() as u32;
    Stats {
        median: samples[samples.len() / 2],
        p99: samples[samples.len() * 99 / 100],
        mean,
    }
}

fn report(name: &str, what: &str, s: &Stats) {
    println!(
        "{name:<28} {what:<22} median {:>9.1} us   mean {:>9.1} us   p99 {:>9.1} us",
        s.median.as_secs_f64() * 1e6,
        s.mean.as_secs_f64() * 1e6,
        s.p99.as_secs_f64() * 1e6
    );
}

fn bench(name: &str, yaml: &str) {
    let opts = RenderOptions::default();
    let config = match ResolverConfig::from_yaml_str(yaml) {
        Ok(c) => c,
        Err(e) => panic!("{name}: invalid: {e}"),
    };
    let lua = render(&config, &opts).unwrap_or_else(|e| panic!("{name}: {e}"));
    println!(
        "{name}: {} bytes of YAML -> {} bytes of Lua (revision {})",
        yaml.len(),
        lua.len(),
        revision(lua.as_bytes())
    );
    let budget = Duration::from_secs(2);
    let s = measure(
        || {
            black_box(ResolverConfig::from_yaml_str(black_box(yaml)).ok());
        },
        50,
        budget,
    );
    report(name, "parse+validate", &s);
    let s = measure(
        || {
            black_box(render(black_box(&config), &opts).ok());
        },
        50,
        budget,
    );
    report(name, "render", &s);
    let s = measure(
        || {
            let c = ResolverConfig::from_yaml_str(black_box(yaml)).ok();
            black_box(c.map(|c| render(&c, &opts)));
        },
        50,
        budget,
    );
    report(name, "parse+validate+render", &s);
}

/// How long hostile input takes to be refused (the tests check that it is, not how fast).
fn bench_rejection(name: &str, yaml: &str) {
    assert!(
        ResolverConfig::from_yaml_str(yaml).is_err(),
        "{name}: accepted"
    );
    let s = measure(
        || {
            black_box(ResolverConfig::from_yaml_str(black_box(yaml)).err());
        },
        5,
        Duration::from_secs(2),
    );
    report(name, "rejected", &s);
}

/// Nine levels of ten aliases each: 10^9 nodes once expanded.
fn alias_bomb() -> String {
    let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..10 {
        let p = i - 1;
        bomb.push_str(&format!(
            "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
        ));
    }
    bomb
}

fn main() {
    let example = include_str!("../../manifests/examples/config.yaml");
    bench("example config.yaml", example);
    bench("large (1000 names, 100 fwd)", &large_config());
    bench_rejection("alias bomb (10^9 nodes)", &alias_bomb());
    bench_rejection(
        "10 MiB document",
        &format!("nsid: '{}'\n", "x".repeat(10 * 1024 * 1024)),
    );
}
