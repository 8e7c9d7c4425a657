//! From a `KnotResolver` spec to the planner's desired state: the Kubernetes validation profile
//! (`kres_crd::k8s::validate_spec`), then host mode's one pipeline
//! ([`crate::host::desired::desired_with`]) rendering for the pod (`$POD_IP`, the cache volume),
//! then the pod template. The revision covers the rendered config and the template.

use std::time::Duration;

use kres_crd::config::ConfigErrors;
use kres_crd::k8s::{KnotResolverSpec, validate_spec};
use kres_crd::lua::{RenderOptions, SocketMode};

use super::build::{CACHE_DIR, CACHE_DIR_ENV, PodTemplate, pod_template};
use crate::host::desired::{desired_with, gc_spec_in};
use crate::reconcile::{Desired, revision_of};

/// Default `rollout.startTimeoutSeconds`.
pub const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(60);
/// Default `rollout.minReadySeconds` (3 readiness probe periods, as OpenShift's DNS pods).
pub const DEFAULT_MIN_READY: Duration = Duration::from_secs(9);
/// Default `rollout.drainSeconds`.
pub const DEFAULT_DRAIN: Duration = Duration::from_secs(5);
/// Default `rollout.progressDeadlineSeconds`.
pub const DEFAULT_PROGRESS_DEADLINE: Duration = Duration::from_secs(600);

/// How kresd is rendered for a pod.
pub const POD_RENDER: RenderOptions = RenderOptions {
    sockets: SocketMode::PodIp,
    cache_dir_env: Some(CACHE_DIR_ENV),
};

/// Operator-wide inputs of the pod template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodSettings {
    /// Image when `spec.image` is unset.
    pub default_image: String,
    /// The readiness probe command.
    pub probe_command: Vec<String>,
}

/// The desired state of one KnotResolver.
#[derive(Clone, Debug, PartialEq)]
pub struct PodsDesired {
    /// What the planner works on (`workers` = `spec.replicas`).
    pub desired: Desired,
    /// The pod template of the revision.
    pub template: PodTemplate,
    /// `spec.config` as given.
    pub config: serde_json::Value,
    /// How long a pod stays ready before the rollout goes on.
    pub min_ready: Duration,
    /// How long a drained pod waits after leaving the endpoints.
    pub drain: Duration,
    /// When a rollout without progress is reported.
    pub progress_deadline: Duration,
}

fn seconds(v: Option<i32>, default: Duration) -> Duration {
    v.map_or(default, |s| {
        Duration::from_secs(u64::try_from(s).unwrap_or(0))
    })
}

/// Validate and render `spec`; all errors at once, pointers under `/spec`.
pub fn desired_for_pods(
    spec: &KnotResolverSpec,
    settings: &PodSettings,
) -> Result<PodsDesired, ConfigErrors> {
    let validated = validate_spec(spec)?;
    let start_timeout = seconds(spec.rollout.start_timeout_seconds, DEFAULT_START_TIMEOUT);
    let mut desired = desired_with(&validated.config, &POD_RENDER, start_timeout).map_err(|e| {
        ConfigErrors(
            e.0.into_iter()
                .map(|e| {
                    kres_crd::config::ConfigError::new(
                        format!("{}{}", kres_crd::k8s::CONFIG_POINTER, e.pointer),
                        e.message,
                    )
                })
                .collect(),
        )
    })?;
    // validate_spec bounds replicas to 0..=256.
    desired.workers = u16::try_from(spec.replicas).unwrap_or(0);
    // kres-cache-gc runs in each pod (a container of the template), not fleet-wide.
    desired.gc = None;
    let mut template = pod_template(
        spec,
        &validated.config,
        &settings.default_image,
        &settings.probe_command,
    );
    template.cache_gc = gc_spec_in(&validated.config, CACHE_DIR).map(|gc| gc.args);
    let min_ready = seconds(spec.rollout.min_ready_seconds, DEFAULT_MIN_READY);
    let drain = seconds(spec.rollout.drain_seconds, DEFAULT_DRAIN);
    desired.template = serde_json::to_value(&template).unwrap_or_default();
    desired.revision = revision_of(&desired.config, &desired.template);
    desired.drain = drain;
    desired.soak = min_ready;
    desired.paused = spec.rollout.paused;
    Ok(PodsDesired {
        desired,
        template,
        config: spec.config.clone(),
        min_ready,
        drain,
        progress_deadline: seconds(
            spec.rollout.progress_deadline_seconds,
            DEFAULT_PROGRESS_DEADLINE,
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> PodSettings {
        PodSettings {
            default_image: "kres:1".into(),
            probe_command: vec!["kres-operator".into(), "probe".into()],
        }
    }

    fn spec(v: serde_json::Value) -> KnotResolverSpec {
        serde_json::from_value(v).expect("spec")
    }

    #[test]
    fn renders_for_the_pod_ip_and_cache_volume_with_replicas_as_workers() {
        let d = desired_for_pods(
            &spec(serde_json::json!({
                "replicas": 3,
                "config": { "network": { "listen": [{ "kind": "dns", "port": 5353 }] } },
                "rollout": { "drainSeconds": 2 },
            })),
            &settings(),
        )
        .expect("valid");
        assert_eq!(d.desired.workers, 3);
        assert!(
            d.desired
                .config
                .contains("net.listen(assert(os.getenv('POD_IP')"),
            "{}",
            d.desired.config
        );
        assert!(
            d.desired.config.contains(", 5353, {kind = 'dns'})"),
            "{}",
            d.desired.config
        );
        assert!(d.desired.config.contains("os.getenv('KRES_CACHE_DIR')"));
        assert!(!d.desired.config.contains("0.0.0.0"));
        assert_eq!(d.drain, Duration::from_secs(2));
        assert_eq!(d.min_ready, DEFAULT_MIN_READY);
        assert_eq!(d.template.image, "kres:1");
    }

    #[test]
    fn template_changes_change_the_revision_and_scaling_does_not() {
        let base = serde_json::json!({ "replicas": 2, "config": {} });
        let a = desired_for_pods(&spec(base.clone()), &settings()).expect("valid");
        let mut scaled = base.clone();
        scaled["replicas"] = 5.into();
        let b = desired_for_pods(&spec(scaled), &settings()).expect("valid");
        assert_eq!(a.desired.revision, b.desired.revision);
        let mut image = base;
        image["image"] = "kres:2".into();
        let c = desired_for_pods(&spec(image), &settings()).expect("valid");
        assert_ne!(a.desired.revision, c.desired.revision);
    }

    #[test]
    fn cache_gc_follows_the_garbage_collector_settings_on_the_cache_volume() {
        let on = desired_for_pods(
            &spec(serde_json::json!({ "config": {
            "cache": { "garbage-collector": { "interval": "2s", "threshold": 70 } },
        } })),
            &settings(),
        )
        .expect("valid");
        assert_eq!(
            on.desired.gc, None,
            "not fleet-wide: a container of each pod"
        );
        let args = on.template.cache_gc.clone().expect("on by default");
        assert_eq!(args[..4], ["-c", CACHE_DIR, "-d", "2000"]);
        assert_eq!(args[4..6], ["-u", "70"]);
        let off = desired_for_pods(
            &spec(serde_json::json!({ "config": {
            "cache": { "garbage-collector": { "enable": false } },
        } })),
            &settings(),
        )
        .expect("valid");
        assert_eq!(off.template.cache_gc, None);
        assert_ne!(on.desired.revision, off.desired.revision);
    }

    #[test]
    fn invalid_config_reports_pointers_under_spec_config() {
        let e = desired_for_pods(
            &spec(serde_json::json!({
                "config": { "workers": 2, "forward": [{ "subtree": ".", "servers": ["not-an-ip"] }] },
            })),
            &settings(),
        )
        .expect_err("invalid");
        let pointers: Vec<&str> = e.0.iter().map(|e| e.pointer.as_str()).collect();
        assert!(pointers.contains(&"/spec/config/workers"), "{e}");
        assert!(
            pointers
                .iter()
                .any(|p| p.starts_with("/spec/config/forward/0/servers/0")),
            "{e}"
        );
    }
}
