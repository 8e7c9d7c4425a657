//! `GET /metrics`: the operator's own metrics plus every worker's kresd counters.
//!
//! Workers are scraped concurrently, each with its own timeout, so a stopped (SIGSTOP) or hung
//! worker costs at most that timeout and is reported as `kres_worker_up{worker} 0` and
//! `kres_worker_scrape_errors_total{worker}`.
//!
//! kresd's `stats.list()` keys map to Prometheus names as follows (all counters, label `worker`):
//! `<group>.total` -> `kresd_<group>_total`; `<group>.<name>` -> `kresd_<group>_<name>_total`
//! (characters outside `[a-zA-Z0-9_]` become `_`); the latency buckets `answer.1ms` ..
//! `answer.1500ms`, `answer.slow` -> cumulative `kresd_answer_latency_bucket_total{le="<seconds>"}`
//! (`le="+Inf"` = all answers). kresd 5.6 does not report the latency sum, so this is exported as
//! cumulative counters with an `le` label (usable by `histogram_quantile`) rather than as a
//! Prometheus histogram, which would need a sum.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::exemplar::Exemplar;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::task::JoinSet;

use super::plane::{StatusSnapshot, WorkerSocket};
use super::worker::WorkerControl;
use crate::metrics::OperatorMetrics;

/// `Content-Type` of the response (Prometheus text format 0.0.4).
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// kresd latency bucket keys (non-cumulative counts) and their upper bounds in seconds.
const LATENCY_BUCKETS: [(&str, f64); 9] = [
    ("answer.1ms", 0.001),
    ("answer.10ms", 0.01),
    ("answer.50ms", 0.05),
    ("answer.100ms", 0.1),
    ("answer.250ms", 0.25),
    ("answer.500ms", 0.5),
    ("answer.1000ms", 1.0),
    ("answer.1500ms", 1.5),
    ("answer.slow", f64::INFINITY),
];

/// Label set `{worker="..."}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WorkerLabel {
    /// Worker slot.
    pub worker: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RevisionLabel {
    revision: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LatencyLabel {
    worker: String,
    le: String,
}

/// One worker's scrape result: its counters, or why they could not be read.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerStats {
    /// Worker slot.
    pub worker: String,
    /// `stats.list()` as flat key -> value, or the error.
    pub stats: Result<BTreeMap<String, f64>, String>,
}

/// Numeric entries of kresd's `stats.list()` (a flat JSON object of numbers).
pub fn parse_stats(value: &serde_json::Value) -> Result<BTreeMap<String, f64>, String> {
    let obj = value
        .as_object()
        .ok_or_else(|| "stats are not a JSON object".to_owned())?;
    Ok(obj
        .iter()
        .filter_map(|(k, v)| v.as_f64().map(|n| (k.clone(), n)))
        .collect())
}

/// Read every worker's stats concurrently; each read is bounded by `timeout`.
pub async fn scrape_workers(
    sockets: Vec<WorkerSocket>,
    timeout: Duration,
    control: Arc<dyn WorkerControl>,
) -> Vec<WorkerStats> {
    let mut set = JoinSet::new();
    for (i, s) in sockets.iter().enumerate() {
        let control = control.clone();
        let path = s.path.clone();
        set.spawn(async move {
            let stats = match tokio::time::timeout(timeout, control.stats(&path)).await {
                Ok(Ok(raw)) => parse_stats(&raw),
                Ok(Err(e)) => Err(e),
                Err(_) => Err(format!("no answer within {} ms", timeout.as_millis())),
            };
            (i, stats)
        });
    }
    let mut out: Vec<WorkerStats> = sockets
        .iter()
        .map(|s| WorkerStats {
            worker: s.worker.clone(),
            stats: Err("scrape task failed".to_owned()),
        })
        .collect();
    while let Some(joined) = set.join_next().await {
        if let Ok((i, stats)) = joined
            && let Some(slot) = out.get_mut(i)
        {
            slot.stats = stats;
        }
    }
    out
}

/// Prometheus name of a kresd stats key (without the `_total` suffix the encoder adds).
pub fn kresd_metric_name(key: &str) -> String {
    let key = key.strip_suffix(".total").unwrap_or(key);
    let mut name = String::from("kresd_");
    name.extend(
        key.chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }),
    );
    name
}

/// Per-scrape collector for the workers' kresd counters.
#[derive(Debug)]
struct KresdCollector {
    workers: Vec<WorkerStats>,
}

fn encode_counter_value(
    enc: &mut prometheus_client::encoding::MetricEncoder<'_>,
    v: f64,
) -> Result<(), std::fmt::Error> {
    let none: Option<&Exemplar<WorkerLabel, f64>> = None;
    if v.fract() == 0.0 && v >= 0.0 && v < u64::MAX as f64 {
        let none_u: Option<&Exemplar<WorkerLabel, u64>> = None;
        enc.encode_counter(&(v as u64), none_u)
    } else {
        enc.encode_counter(&v, none)
    }
}

impl Collector for KresdCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // name -> [(worker, value)], so each metric gets one descriptor.
        let mut by_name: BTreeMap<String, (String, Vec<(String, f64)>)> = BTreeMap::new();
        let mut latency: Vec<(String, Vec<(String, f64)>)> = Vec::new();
        for w in &self.workers {
            let Ok(stats) = &w.stats else { continue };
            for (key, value) in stats {
                if LATENCY_BUCKETS.iter().any(|(k, _)| k == key) {
                    continue;
                }
                by_name
                    .entry(kresd_metric_name(key))
                    .or_insert_with(|| (key.clone(), Vec::new()))
                    .1
                    .push((w.worker.clone(), *value));
            }
            if LATENCY_BUCKETS.iter().any(|(k, _)| stats.contains_key(*k)) {
                let mut cumulative = 0.0;
                let mut buckets = Vec::new();
                for (k, le) in LATENCY_BUCKETS {
                    cumulative += stats.get(k).copied().unwrap_or(0.0);
                    let le = if le.is_infinite() {
                        "+Inf".to_owned()
                    } else {
                        le.to_string()
                    };
                    buckets.push((le, cumulative));
                }
                latency.push((w.worker.clone(), buckets));
            }
        }
        for (name, (key, series)) in &by_name {
            let help = format!("kresd counter '{key}' (stats.list())");
            let mut metric = encoder.encode_descriptor(name, &help, None, MetricType::Counter)?;
            for (worker, value) in series {
                let labels = WorkerLabel {
                    worker: worker.clone(),
                };
                let mut fam = metric.encode_family(&labels)?;
                encode_counter_value(&mut fam, *value)?;
            }
        }
        if !latency.is_empty() {
            let mut metric = encoder.encode_descriptor(
                "kresd_answer_latency_bucket",
                "Answers by latency, cumulative, upper bound le in seconds (kresd answer.<N>ms)",
                None,
                MetricType::Counter,
            )?;
            for (worker, buckets) in &latency {
                for (le, value) in buckets {
                    let labels = LatencyLabel {
                        worker: worker.clone(),
                        le: le.clone(),
                    };
                    let mut fam = metric.encode_family(&labels)?;
                    encode_counter_value(&mut fam, *value)?;
                }
            }
        }
        Ok(())
    }
}

/// Metrics kept across scrapes by the HTTP layer.
#[derive(Debug, Default, Clone)]
pub struct ScrapeMetrics {
    /// `kres_worker_scrape_errors_total{worker}`.
    pub scrape_errors: Family<WorkerLabel, Counter>,
}

/// Encode one scrape: operator metrics, status-derived gauges, worker counters.
pub fn encode(
    operator: &OperatorMetrics,
    scrape: &ScrapeMetrics,
    status: &StatusSnapshot,
    workers: Vec<WorkerStats>,
) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::default();
    operator.register(&mut registry);

    let by_state: Family<StateLabel, Gauge> = Family::default();
    for w in &status.workers {
        by_state
            .get_or_create(&StateLabel {
                state: w.state.clone(),
            })
            .inc();
    }
    registry.register("kres_workers", "Workers by state", by_state);

    let revision: Family<RevisionLabel, Gauge> = Family::default();
    if let Some(rev) = &status.current_revision {
        revision
            .get_or_create(&RevisionLabel {
                revision: rev.clone(),
            })
            .set(1);
    }
    registry.register(
        "kres_revision_info",
        "Revision the fleet converged on (value is always 1)",
        revision,
    );

    let up: Family<WorkerLabel, Gauge> = Family::default();
    for w in &workers {
        let label = WorkerLabel {
            worker: w.worker.clone(),
        };
        up.get_or_create(&label).set(i64::from(w.stats.is_ok()));
        if w.stats.is_err() {
            scrape.scrape_errors.get_or_create(&label).inc();
        }
    }
    registry.register(
        "kres_worker_up",
        "1 if the worker's control socket answered the last scrape in time, else 0",
        up,
    );
    registry.register(
        "kres_worker_scrape_errors",
        "Failed or timed-out reads of a worker's stats",
        scrape.scrape_errors.clone(),
    );
    registry.register_collector(Box::new(KresdCollector { workers }));

    let mut out = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::plane::WorkerStatus;
    use serde_json::json;

    #[test]
    fn names() {
        assert_eq!(kresd_metric_name("answer.total"), "kresd_answer");
        assert_eq!(kresd_metric_name("answer.noerror"), "kresd_answer_noerror");
        assert_eq!(kresd_metric_name("request.udp"), "kresd_request_udp");
        assert_eq!(kresd_metric_name("a-b.c d"), "kresd_a_b_c_d");
    }

    #[test]
    fn parse() {
        let s = parse_stats(&json!({"answer.total":3,"request.udp":2,"x":"str"})).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s["answer.total"], 3.0);
        assert!(parse_stats(&json!([1])).is_err());
    }

    struct Fake;
    #[async_trait::async_trait]
    impl WorkerControl for Fake {
        async fn stats(&self, socket: &std::path::Path) -> Result<serde_json::Value, String> {
            if socket.to_str() == Some("/hang") {
                tokio::time::sleep(Duration::from_secs(30)).await;
            }
            Ok(json!({"answer.total": 7, "answer.1ms": 2, "answer.10ms": 1, "answer.slow": 4}))
        }
        async fn eval_json(
            &self,
            _: &std::path::Path,
            _: &str,
        ) -> Result<serde_json::Value, String> {
            Err("unused".into())
        }
    }

    #[tokio::test]
    async fn slow_worker_is_bounded_and_reported() {
        let sockets = vec![
            WorkerSocket {
                worker: "0".into(),
                path: "/fast".into(),
            },
            WorkerSocket {
                worker: "1".into(),
                path: "/hang".into(),
            },
        ];
        let start = std::time::Instant::now();
        let out = scrape_workers(sockets, Duration::from_millis(100), Arc::new(Fake)).await;
        // Bounded by the 100 ms scrape timeout; 10 s only fails a hang.
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "took {:?}",
            start.elapsed()
        );
        assert_eq!(out[0].stats.as_ref().unwrap()["answer.total"], 7.0);
        assert!(out[1].stats.is_err());

        let status = StatusSnapshot {
            current_revision: Some("abc".into()),
            workers: vec![WorkerStatus {
                slot: "0".into(),
                pid: Some(1),
                revision: Some("abc".into()),
                state: "ready".into(),
                ready_since: None,
            }],
            ..Default::default()
        };
        let scrape = ScrapeMetrics::default();
        let text = encode(&OperatorMetrics::default(), &scrape, &status, out).unwrap();
        assert!(
            text.contains("kresd_answer_total{worker=\"0\"} 7\n"),
            "{text}"
        );
        assert!(text.contains("kres_worker_up{worker=\"1\"} 0\n"), "{text}");
        assert!(text.contains("kres_worker_scrape_errors_total{worker=\"1\"} 1\n"));
        assert!(text.contains("kres_workers{state=\"ready\"} 1\n"));
        assert!(text.contains("kres_revision_info{revision=\"abc\"} 1\n"));
        assert!(text.contains("kresd_answer_latency_bucket_total{worker=\"0\",le=\"0.01\"} 3\n"));
        assert!(text.contains("kresd_answer_latency_bucket_total{worker=\"0\",le=\"+Inf\"} 7\n"));
        assert!(text.contains("kres_rollouts_total") || text.contains("kres_reconciles_total"));
    }
}
