//! The operator's own Prometheus metrics (prometheus-client types).
//!
//! The reconcile loop increments these; `GET /metrics` encodes them together with the gauges it
//! derives from the status snapshot and every worker's kresd counters (see `http::metrics`).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Label set `{result="..."}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    /// Outcome, e.g. `succeeded`, `failed`, `superseded` (rollouts) or `ok`, `error` (reloads).
    pub result: String,
}

impl ResultLabel {
    /// `{result=<r>}`.
    pub fn new(result: &str) -> Self {
        Self {
            result: result.to_owned(),
        }
    }
}

/// Counters and histograms the reconcile loop updates. Cloning shares the same metrics.
#[derive(Clone, Debug)]
pub struct OperatorMetrics {
    /// `kres_reconciles_total`: reconcile loop iterations.
    pub reconciles: Counter,
    /// `kres_rollouts_total{result}`: finished rollouts by result.
    pub rollouts: Family<ResultLabel, Counter>,
    /// `kres_rollout_duration_seconds`: time from rollout start to its end.
    pub rollout_duration: Histogram,
    /// `kres_config_reloads_total{result}`: re-reads of the config source (SIGHUP, POST /reload).
    pub config_reloads: Family<ResultLabel, Counter>,
}

impl Default for OperatorMetrics {
    fn default() -> Self {
        Self {
            reconciles: Counter::default(),
            rollouts: Family::default(),
            // 50 ms .. ~105 s.
            rollout_duration: Histogram::new(exponential_buckets(0.05, 2.0, 12)),
            config_reloads: Family::default(),
        }
    }
}

impl OperatorMetrics {
    /// Register (clones of) every metric into `registry` under the `kres_` names.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "kres_reconciles",
            "Reconcile loop iterations",
            self.reconciles.clone(),
        );
        registry.register(
            "kres_rollouts",
            "Finished rollouts by result",
            self.rollouts.clone(),
        );
        registry.register(
            "kres_rollout_duration_seconds",
            "Duration of rollouts, start to end, in seconds",
            self.rollout_duration.clone(),
        );
        registry.register(
            "kres_config_reloads",
            "Re-reads of the configuration source (SIGHUP, POST /reload) by result",
            self.config_reloads.clone(),
        );
    }
}
