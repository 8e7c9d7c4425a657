//! The `KnotResolver` custom resource (`resolver.kres-operator.io/v1alpha1`): spec and status.

// Each `printcolumn(...)` of `#[kube]` repeats `type_ = ...`: not a duplicated attribute.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, PersistentVolumeClaimSpec, ResourceRequirements, ServicePort, Toleration,
    TopologySpreadConstraint,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube_derive::CustomResource;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

/// API group of the resource.
pub const GROUP: &str = "resolver.kres-operator.io";
/// API version of the resource.
pub const VERSION: &str = "v1alpha1";
/// Most entries kept in `status.failedRevisions`.
pub const MAX_FAILED_REVISIONS: usize = 10;

/// A fleet of kresd pods serving one Knot Resolver configuration, changed by canary and
/// one-pod-at-a-time rollouts with automatic rollback.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "resolver.kres-operator.io",
    version = "v1alpha1",
    kind = "KnotResolver",
    plural = "knotresolvers",
    singular = "knotresolver",
    shortname = "kres",
    namespaced,
    status = "KnotResolverStatus",
    derive = "PartialEq",
    doc = "A fleet of Knot Resolver (kresd) pods serving one config.yaml, rolled out canary-first, one pod at a time, with automatic rollback.",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(
        name = "Replicas",
        type_ = "integer",
        json_path = ".spec.replicas",
        description = "desired pods"
    ),
    printcolumn(
        name = "Ready",
        type_ = "integer",
        json_path = ".status.readyReplicas",
        description = "ready pods"
    ),
    printcolumn(
        name = "Up-to-date",
        type_ = "integer",
        json_path = ".status.updatedReplicas",
        description = "pods on the target revision"
    ),
    printcolumn(
        name = "Revision",
        type_ = "string",
        json_path = ".status.currentRevision",
        description = "last good revision"
    ),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Available",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Available\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    printcolumn(
        name = "Target",
        type_ = "string",
        json_path = ".status.updateRevision",
        description = "revision being rolled out",
        priority = 1
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Degraded\")].reason",
        description = "why Degraded",
        priority = 1
    ),
    crates(
        kube_core = "::kube_core",
        k8s_openapi = "::k8s_openapi",
        schemars = "::schemars",
        serde = "::serde",
        serde_json = "::serde_json"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct KnotResolverSpec {
    /// Number of kresd pods (slots `<name>-0` ..). Replaces config.yaml's `workers`.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 0, max = 256))]
    pub replicas: i32,
    /// Container image with kresd 5.6 (default: the operator's own image).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// The Knot Resolver 6 `config.yaml` (kresd 5.6 subset) without what the pod backend owns:
    /// `workers` (use `replicas`), `rundir`, `management`, `cache.storage`, and listen
    /// `interface`/`unix-socket` (each pod listens on its own IP; `kind` and `port` stay).
    /// Validated by the operator; errors are reported in status with pointers under /spec/config.
    #[serde(default = "empty_object")]
    #[schemars(schema_with = "super::schema::config_schema", transform = no_default)]
    pub config: serde_json::Value,
    /// How revisions are rolled out.
    #[serde(default)]
    pub rollout: RolloutSpec,
    /// The Service in front of the ready pods.
    #[serde(default)]
    pub service: ServiceSpec,
    /// Scheduling and resources of the pods.
    #[serde(default)]
    pub pod_template: PodTemplateSpec,
    /// The PodDisruptionBudget of the pods.
    #[serde(default)]
    pub pod_disruption_budget: PodDisruptionBudgetSpec,
    /// Where each pod keeps its DNS cache.
    #[serde(default)]
    pub cache: CacheSpec,
}

fn default_replicas() -> i32 {
    1
}

/// `spec.config` gets no `default`: the apiserver would write it into stored objects.
fn no_default(schema: &mut Schema) {
    schema.remove("default");
}

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(Default::default())
}

/// Rollout timing.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "!has(self.progressDeadlineSeconds) || !has(self.minReadySeconds) || self.progressDeadlineSeconds > self.minReadySeconds",
    "message": "progressDeadlineSeconds must be greater than minReadySeconds",
    "fieldPath": ".progressDeadlineSeconds"
}]))]
pub struct RolloutSpec {
    /// Seconds a new pod may take to become ready before its revision fails (default 60).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 3600))]
    pub start_timeout_seconds: Option<i32>,
    /// Seconds a new pod must stay ready (and answer the operator's DNS probe) before the
    /// rollout continues (default 9).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 3600))]
    pub min_ready_seconds: Option<i32>,
    /// Seconds between a pod leaving the Service's endpoints and its deletion (default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 600))]
    pub drain_seconds: Option<i32>,
    /// Seconds after which a rollout that made no progress is reported as
    /// ProgressDeadlineExceeded (default 600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 86400))]
    pub progress_deadline_seconds: Option<i32>,
    /// Hold rollouts: no canary or replacement until false again (a rollout under way stops
    /// where it is). A missing or exited pod is still re-created, on the current revision.
    #[serde(default)]
    pub paused: bool,
}

/// Type of the Service.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ServiceType {
    /// A cluster-internal virtual IP.
    #[default]
    ClusterIP,
    /// ClusterIP plus a port on every node.
    NodePort,
    /// NodePort plus an external load balancer.
    LoadBalancer,
}

/// The Service in front of the ready pods.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpec {
    /// Service type (default ClusterIP).
    #[serde(default, rename = "type")]
    pub type_: ServiceType,
    /// Annotations of the Service (e.g. for a load balancer).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Ports (default: one per `network.listen` entry of the config, UDP and TCP for `dns`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<ServicePort>>,
}

/// Overrides of the pod template.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodTemplateSpec {
    /// Extra labels of the pods.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Extra annotations of the pods.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Resources of the kresd container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Resources of the cache-gc container (kres-cache-gc, present unless
    /// `config.cache.garbage-collector.enable` is false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_gc_resources: Option<ResourceRequirements>,
    /// Node selector of the pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,
    /// Tolerations of the pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<Toleration>>,
    /// Affinity of the pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// Topology spread constraints (default: hostname and zone, maxSkew 1, ScheduleAnyway).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topology_spread_constraints: Option<Vec<TopologySpreadConstraint>>,
    /// PriorityClass of the pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
}

/// The PodDisruptionBudget of the pods.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodDisruptionBudgetSpec {
    /// Create a PodDisruptionBudget (only when replicas > 1).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Pods that may be evicted at once (number or percentage; default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<IntOrString>,
}

impl Default for PodDisruptionBudgetSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            max_unavailable: None,
        }
    }
}

fn default_true() -> bool {
    true
}

/// Where each pod keeps its DNS cache. Never one volume shared by two pods: LMDB tracks its
/// readers by PID.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CacheSpec {
    /// A PersistentVolumeClaim per slot (`<name>-cache-<slot>`), so a replaced pod starts with a
    /// warm cache. Default: a memory-backed emptyDir sized from `cache.size-max`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_claim_template: Option<PersistentVolumeClaimSpec>,
}

/// Rollout phase.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ResolverPhase {
    /// Converged: nothing to do.
    Idle,
    /// First start or scale-up.
    Starting,
    /// The canary pod runs the target revision and is being gated.
    Canary,
    /// Regular pods are being replaced, one at a time.
    Rolling,
    /// All regular pods run the target; the canary is being removed.
    Finishing,
    /// The target failed; pods are put back on the last good revision.
    RollingBack,
}

/// A revision that failed, and why.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RevisionFailure {
    /// The failed revision.
    pub revision: String,
    /// Machine-readable reason (e.g. `CanaryFailed`, `StartTimeout`).
    pub reason: String,
    /// What happened, e.g. kresd's error line.
    pub message: String,
    /// When the failure was detected (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
}

/// Observed state, written by the operator.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KnotResolverStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The last good revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_revision: Option<String>,
    /// The revision being rolled out (equal to currentRevision when converged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_revision: Option<String>,
    /// Pods that exist (regular slots and the canary).
    #[serde(default)]
    pub replicas: i32,
    /// Pods that are ready.
    #[serde(default)]
    pub ready_replicas: i32,
    /// Pods on the target revision.
    #[serde(default)]
    pub updated_replicas: i32,
    /// Rollout phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<ResolverPhase>,
    /// Label selector of the pods (for the scale subresource).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// The most recent failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<RevisionFailure>,
    /// Revisions that failed and are not retried until the spec changes (newest last).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10))]
    pub failed_revisions: Vec<RevisionFailure>,
    /// `Available`, `Progressing` and `Degraded`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
}

/// Conditions as a list-map keyed by `type` (server-side apply merges them per type).
fn conditions_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "description": "Available, Progressing and Degraded, each with status, reason, message, observedGeneration and lastTransitionTime.",
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["type"],
        "items": {
            "type": "object",
            "required": ["type", "status", "lastTransitionTime", "reason", "message"],
            "properties": {
                "type": { "type": "string", "description": "Available, Progressing or Degraded.", "maxLength": 316 },
                "status": { "type": "string", "enum": ["True", "False", "Unknown"] },
                "observedGeneration": { "type": "integer", "format": "int64", "minimum": 0 },
                "lastTransitionTime": { "type": "string", "format": "date-time" },
                "reason": { "type": "string", "maxLength": 1024 },
                "message": { "type": "string", "maxLength": 32768 }
            }
        }
    })
}
