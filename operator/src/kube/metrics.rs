//! Per-resolver metrics of `kres-operator kube`: reconcile counts and durations, and the rollout
//! phase. Labelled `{namespace, name}` (plus `result` or `phase`, each from a fixed set), and
//! removed when the resolver is deleted, so the number of series is bounded by the resolvers
//! that exist.

use std::time::Duration;

use kres_crd::k8s::ResolverPhase;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// `{namespace, name}` of a KnotResolver.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResolverLabels {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

/// `{namespace, name, result}`: `ok` or `error`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// `ok` or `error` (the reconcile is retried).
    pub result: String,
}

/// `{namespace, name, phase}`: one of [`PHASES`].
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// The status phase (`Idle`, `Starting`, `Canary`, `Rolling`, `Finishing`, `RollingBack`).
    pub phase: String,
}

/// Every phase, as `kres_resolver_phase` exports them (1 for the current one, 0 for the rest).
pub const PHASES: [ResolverPhase; 6] = [
    ResolverPhase::Idle,
    ResolverPhase::Starting,
    ResolverPhase::Canary,
    ResolverPhase::Rolling,
    ResolverPhase::Finishing,
    ResolverPhase::RollingBack,
];

const RESULTS: [&str; 2] = ["ok", "error"];

fn phase_name(p: &ResolverPhase) -> String {
    format!("{p:?}")
}

fn new_histogram() -> Histogram {
    // 1 ms .. ~16 s: a reconcile step reads stores and issues at most a few API requests
    // (the operator's DNS probe of a new pod is the slow part).
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

/// The per-resolver metrics. Cloning shares them.
#[derive(Clone, Debug)]
pub struct ResolverMetrics {
    /// `kres_resolver_reconciles_total{namespace,name,result}`.
    reconciles: Family<ResultLabels, Counter>,
    /// `kres_resolver_reconcile_duration_seconds{namespace,name}`.
    duration: Family<ResolverLabels, Histogram, fn() -> Histogram>,
    /// `kres_resolver_phase{namespace,name,phase}`.
    phase: Family<PhaseLabels, Gauge>,
}

impl Default for ResolverMetrics {
    fn default() -> Self {
        ResolverMetrics {
            reconciles: Family::default(),
            duration: Family::new_with_constructor(new_histogram),
            phase: Family::default(),
        }
    }
}

impl ResolverMetrics {
    /// Register (clones of) the families into `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "kres_resolver_reconciles",
            "Reconciles of each KnotResolver by result (error: retried with back-off)",
            self.reconciles.clone(),
        );
        registry.register(
            "kres_resolver_reconcile_duration_seconds",
            "Duration of each KnotResolver's reconciles, in seconds",
            self.duration.clone(),
        );
        registry.register(
            "kres_resolver_phase",
            "Rollout phase of each KnotResolver: 1 for the current phase, 0 for the others",
            self.phase.clone(),
        );
    }

    /// One reconcile of `namespace/name` ended after `took`.
    pub fn reconciled(&self, namespace: &str, name: &str, ok: bool, took: Duration) {
        self.reconciles
            .get_or_create(&ResultLabels {
                namespace: namespace.into(),
                name: name.into(),
                result: if ok { "ok" } else { "error" }.into(),
            })
            .inc();
        self.duration
            .get_or_create(&ResolverLabels {
                namespace: namespace.into(),
                name: name.into(),
            })
            .observe(took.as_secs_f64());
    }

    /// `namespace/name` is in `phase`.
    pub fn set_phase(&self, namespace: &str, name: &str, phase: &ResolverPhase) {
        for p in &PHASES {
            self.phase
                .get_or_create(&PhaseLabels {
                    namespace: namespace.into(),
                    name: name.into(),
                    phase: phase_name(p),
                })
                .set(i64::from(p == phase));
        }
    }

    /// `namespace/name` was deleted: drop its series.
    pub fn forget(&self, namespace: &str, name: &str) {
        for result in RESULTS {
            self.reconciles.remove(&ResultLabels {
                namespace: namespace.into(),
                name: name.into(),
                result: result.into(),
            });
        }
        self.duration.remove(&ResolverLabels {
            namespace: namespace.into(),
            name: name.into(),
        });
        for p in &PHASES {
            self.phase.remove(&PhaseLabels {
                namespace: namespace.into(),
                name: name.into(),
                phase: phase_name(p),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(m: &ResolverMetrics) -> String {
        let mut r = Registry::default();
        m.register(&mut r);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &r).expect("encode");
        out
    }

    #[test]
    fn counts_durations_and_phase_per_resolver_and_forgets_deleted_ones() {
        let m = ResolverMetrics::default();
        m.reconciled("ns", "a", true, Duration::from_millis(3));
        m.reconciled("ns", "a", true, Duration::from_millis(3));
        m.reconciled("ns", "a", false, Duration::from_millis(3));
        m.reconciled("ns", "b", true, Duration::from_millis(3));
        m.set_phase("ns", "a", &ResolverPhase::Canary);
        let t = text(&m);
        assert!(
            t.contains(r#"kres_resolver_reconciles_total{namespace="ns",name="a",result="ok"} 2"#),
            "{t}"
        );
        assert!(
            t.contains(
                r#"kres_resolver_reconciles_total{namespace="ns",name="a",result="error"} 1"#
            ),
            "{t}"
        );
        assert!(
            t.contains(
                r#"kres_resolver_reconcile_duration_seconds_count{namespace="ns",name="a"} 3"#
            ),
            "{t}"
        );
        assert!(
            t.contains(r#"kres_resolver_phase{namespace="ns",name="a",phase="Canary"} 1"#),
            "{t}"
        );
        assert!(
            t.contains(r#"kres_resolver_phase{namespace="ns",name="a",phase="Idle"} 0"#),
            "{t}"
        );
        m.set_phase("ns", "a", &ResolverPhase::Idle);
        assert!(
            text(&m).contains(r#"kres_resolver_phase{namespace="ns",name="a",phase="Idle"} 1"#)
        );
        m.forget("ns", "a");
        let t = text(&m);
        assert!(!t.contains(r#"name="a""#), "{t}");
        assert!(t.contains(r#"name="b""#), "{t}");
    }
}
