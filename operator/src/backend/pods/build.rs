//! Pure builders of the objects the pod backend owns: a Pod per slot, an immutable ConfigMap
//! per revision (rendered config + pod template), the Service and the PodDisruptionBudget. No
//! I/O: the backend applies what these return.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource,
    EnvVar, EnvVarSource, ExecAction, ObjectFieldSelector, PersistentVolumeClaim,
    PersistentVolumeClaimSpec, PersistentVolumeClaimVolumeSource, Pod, PodSecurityContext, PodSpec,
    Probe, SeccompProfile, SecurityContext, Service, ServicePort, ServiceSpec as K8sServiceSpec,
    Volume, VolumeMount,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kres_crd::config::{ListenKind, ResolverConfig};
use kres_crd::k8s::{KnotResolverSpec, PodTemplateSpec, ServiceType};
use kres_crd::lua::POD_IP_ENV;
use serde::{Deserialize, Serialize};

use crate::reconcile::{Revision, Slot};

/// `app.kubernetes.io/name` of everything the operator creates.
pub const LABEL_NAME: &str = "app.kubernetes.io/name";
/// Its value.
pub const APP_NAME: &str = "knot-resolver";
/// `app.kubernetes.io/instance`: the KnotResolver's name.
pub const LABEL_INSTANCE: &str = "app.kubernetes.io/instance";
/// `app.kubernetes.io/managed-by`.
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Its value (also the server-side apply field manager).
pub const MANAGER: &str = "kres-operator";
/// The pod's slot: `0`, `1`, ... or `canary`.
pub const LABEL_SLOT: &str = "resolver.kres-operator.io/slot";
/// The revision a pod runs or a ConfigMap holds.
pub const LABEL_REVISION: &str = "resolver.kres-operator.io/revision";
/// `true` while the Service may send the pod traffic; `false` once it is being drained.
pub const LABEL_SERVING: &str = "resolver.kres-operator.io/serving";
/// Unix time (ms) the drain of a pod began (set with `serving=false`).
pub const ANNOTATION_DRAIN_SINCE: &str = "resolver.kres-operator.io/drain-since";

/// ConfigMap key of the rendered kresd config.
pub const KEY_KRESD_CONF: &str = "kresd.conf";
/// ConfigMap key of the pod template ([`PodTemplate`] as JSON).
pub const KEY_POD_TEMPLATE: &str = "pod.json";
/// ConfigMap key of `spec.config` (JSON) the revision was rendered from.
pub const KEY_CONFIG: &str = "config.json";

/// Where the config volume is mounted in the kresd container.
pub const CONFIG_DIR: &str = "/etc/knot-resolver";
/// kresd's run directory (an emptyDir).
pub const RUN_DIR: &str = "/run/knot-resolver";
/// The cache volume's mount path.
pub const CACHE_DIR: &str = "/var/cache/knot-resolver";
/// The environment variable naming the cache directory (see `RenderOptions::cache_dir_env`).
pub const CACHE_DIR_ENV: &str = "KRES_CACHE_DIR";
/// The name of the pod's kresd container (the first; the backend reads its ports).
pub const KRESD_CONTAINER: &str = "kresd";
/// The name of the pod's kres-cache-gc container.
pub const CACHE_GC_CONTAINER: &str = "cache-gc";
/// The uid kresd runs as in the image (the Debian package's `knot-resolver` user).
pub const KRESD_UID: i64 = 100;
/// The gid of the cache and run volumes.
pub const KRESD_GID: i64 = 101;

/// Everything a pod is built from besides its name, slot and revision. Part of the revision
/// (stored in the revision's ConfigMap), so a rollback recreates exactly the last good pods.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodTemplate {
    /// Container image with kresd 5.6 and the operator binary (the readiness probe).
    pub image: String,
    /// The readiness probe's command (`kres-operator probe`).
    pub probe_command: Vec<String>,
    /// Container ports: (name, port, protocol).
    pub ports: Vec<PortSpec>,
    /// Size limit of the memory-backed cache volume.
    pub cache_size_limit: Option<Quantity>,
    /// The resolver's pod template overrides (labels, resources, scheduling).
    #[serde(default)]
    pub overrides: PodTemplateSpec,
    /// `spec.cache.volumeClaimTemplate`: each regular slot keeps its cache on its own claim
    /// ([`cache_claim_name`]); `None`: the memory-backed emptyDir. (Absent when `None`, so
    /// revisions without it keep their hash.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_claim: Option<PersistentVolumeClaimSpec>,
    /// `kres-cache-gc` arguments (`cache.garbage-collector`) for the pod's `cache-gc`
    /// container; `None`: no such container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_gc: Option<Vec<String>>,
}

/// One port kresd listens on.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PortSpec {
    /// Port name (≤ 15 characters, unique per pod).
    pub name: String,
    /// Port number.
    pub port: u16,
    /// `UDP` or `TCP`.
    pub protocol: String,
}

/// The ports of `config`'s listen entries: `dns` on UDP and TCP, the other kinds on TCP.
pub fn listen_ports(config: &ResolverConfig) -> Vec<PortSpec> {
    let mut out: Vec<PortSpec> = Vec::new();
    for l in &config.network.listen {
        let port = l.effective_port();
        let (base, protocols): (&str, &[&str]) = match l.kind {
            ListenKind::Dns => ("dns", &["UDP", "TCP"]),
            ListenKind::Dot => ("dot", &["TCP"]),
            ListenKind::Doh2 | ListenKind::DohLegacy | ListenKind::Doh2Insecure => {
                ("doh", &["TCP"])
            }
            ListenKind::Doq | ListenKind::Xdp => ("dns", &["UDP"]),
        };
        for protocol in protocols {
            if out
                .iter()
                .any(|p| p.port == port && p.protocol == *protocol)
            {
                continue;
            }
            let suffix = protocol.to_ascii_lowercase();
            let mut name = format!("{base}-{suffix}");
            if out.iter().any(|p| p.name == name) {
                name = format!("{base}{port}-{suffix}");
            }
            out.push(PortSpec {
                name,
                port,
                protocol: (*protocol).to_string(),
            });
        }
    }
    out
}

/// The pod template of a validated `spec` (`config`: its validated config).
pub fn pod_template(
    spec: &KnotResolverSpec,
    config: &ResolverConfig,
    default_image: &str,
    probe_command: &[String],
) -> PodTemplate {
    let t = &spec.pod_template;
    // The cache lives in memory: size-max plus 10 % for LMDB's own pages.
    let cache_bytes = config.cache.size_max.bytes();
    PodTemplate {
        image: spec
            .image
            .clone()
            .unwrap_or_else(|| default_image.to_string()),
        probe_command: probe_command.to_vec(),
        ports: listen_ports(config),
        cache_size_limit: Some(Quantity((cache_bytes + cache_bytes / 10).to_string())),
        overrides: t.clone(),
        cache_claim: spec.cache.volume_claim_template.clone(),
        cache_gc: None,
    }
}

/// The object a resolver's objects belong to: the resolver's name, namespace and owner
/// reference.
#[derive(Clone, Debug, PartialEq)]
pub struct Owner {
    /// KnotResolver name.
    pub name: String,
    /// Its namespace.
    pub namespace: String,
    /// Controller owner reference to it.
    pub reference: OwnerReference,
}

/// Labels every object of resolver `name` carries (the selector of its pods).
pub fn selector_labels(name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_NAME.to_string(), APP_NAME.to_string()),
        (LABEL_INSTANCE.to_string(), name.to_string()),
        (LABEL_MANAGED_BY.to_string(), MANAGER.to_string()),
    ])
}

/// The label selector string of resolver `name`'s pods (status.selector, list/watch).
pub fn selector_string(name: &str) -> String {
    selector_labels(name)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The slot label value (`0`, `canary`).
pub fn slot_value(slot: Slot) -> String {
    slot.worker_id()
}

/// Pod name of `slot`: `<name>-<i>` or `<name>-canary`.
pub fn pod_name(name: &str, slot: Slot) -> String {
    format!("{name}-{}", slot_value(slot))
}

/// The cache claim of regular slot `slot`: `<name>-cache-<slot>`. One per slot, so no two pods
/// open one LMDB cache at once (a slot's pod is deleted and gone before its successor starts);
/// kept across pod replacements, so the successor starts warm.
pub fn cache_claim_name(name: &str, slot: u16) -> String {
    format!("{name}-cache-{slot}")
}

/// The PersistentVolumeClaim of regular slot `slot` from the template's `spec`, owned by the
/// resolver (garbage-collected with it; kept when the slot is scaled away).
pub fn cache_claim(
    owner: &Owner,
    slot: u16,
    spec: &PersistentVolumeClaimSpec,
) -> PersistentVolumeClaim {
    let mut labels = selector_labels(&owner.name);
    labels.insert(LABEL_SLOT.into(), slot_value(Slot::Worker(slot)));
    PersistentVolumeClaim {
        metadata: meta(owner, cache_claim_name(&owner.name, slot), labels),
        spec: Some(spec.clone()),
        status: None,
    }
}

/// The cache volume of `slot`'s pod: its claim for a regular slot when the template has one;
/// else (and always for the canary, which is temporary) a memory-backed emptyDir.
fn cache_volume(owner: &Owner, slot: Slot, template: &PodTemplate) -> Volume {
    match (slot, &template.cache_claim) {
        (Slot::Worker(i), Some(_)) => Volume {
            name: "cache".into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: cache_claim_name(&owner.name, i),
                read_only: None,
            }),
            ..Volume::default()
        },
        _ => Volume {
            name: "cache".into(),
            empty_dir: Some(EmptyDirVolumeSource {
                medium: Some("Memory".into()),
                size_limit: template.cache_size_limit.clone(),
            }),
            ..Volume::default()
        },
    }
}

/// ConfigMap name of `revision`: `<name>-<revision>`.
pub fn config_map_name(name: &str, revision: &str) -> String {
    format!("{name}-{revision}")
}

fn meta(owner: &Owner, name: String, labels: BTreeMap<String, String>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(owner.namespace.clone()),
        labels: Some(labels),
        owner_references: Some(vec![owner.reference.clone()]),
        ..ObjectMeta::default()
    }
}

/// The immutable ConfigMap of `revision`: the rendered config, `spec.config` and the template.
pub fn config_map(
    owner: &Owner,
    revision: &Revision,
    kresd_conf: &str,
    config: &serde_json::Value,
    template: &PodTemplate,
) -> ConfigMap {
    let mut labels = selector_labels(&owner.name);
    labels.insert(LABEL_REVISION.into(), revision.clone());
    ConfigMap {
        metadata: meta(owner, config_map_name(&owner.name, revision), labels),
        immutable: Some(true),
        data: Some(BTreeMap::from([
            (KEY_KRESD_CONF.to_string(), kresd_conf.to_string()),
            (KEY_CONFIG.to_string(), config.to_string()),
            (
                KEY_POD_TEMPLATE.to_string(),
                serde_json::to_string(template).unwrap_or_default(),
            ),
        ])),
        ..ConfigMap::default()
    }
}

/// The pod of `slot` on `revision`, built from the revision's template.
pub fn pod(owner: &Owner, slot: Slot, revision: &Revision, template: &PodTemplate) -> Pod {
    let o = &template.overrides;
    let mut labels = o.labels.clone();
    labels.extend(selector_labels(&owner.name));
    labels.insert(LABEL_SLOT.into(), slot_value(slot));
    labels.insert(LABEL_REVISION.into(), revision.clone());
    labels.insert(LABEL_SERVING.into(), "true".into());
    let mut metadata = meta(owner, pod_name(&owner.name, slot), labels);
    if !o.annotations.is_empty() {
        metadata.annotations = Some(o.annotations.clone());
    }
    let mount = |name: &str, path: &str, read_only: bool| VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: read_only.then_some(true),
        ..VolumeMount::default()
    };
    let kresd = Container {
        name: KRESD_CONTAINER.into(),
        image: Some(template.image.clone()),
        command: Some(vec!["kresd".into()]),
        args: Some(vec![
            "-n".into(),
            "-c".into(),
            format!("{CONFIG_DIR}/{KEY_KRESD_CONF}"),
            RUN_DIR.into(),
        ]),
        env: Some(vec![
            EnvVar {
                name: POD_IP_ENV.into(),
                value_from: Some(EnvVarSource {
                    field_ref: Some(ObjectFieldSelector {
                        field_path: "status.podIP".into(),
                        ..ObjectFieldSelector::default()
                    }),
                    ..EnvVarSource::default()
                }),
                ..EnvVar::default()
            },
            EnvVar {
                name: CACHE_DIR_ENV.into(),
                value: Some(CACHE_DIR.into()),
                ..EnvVar::default()
            },
        ]),
        ports: Some(
            template
                .ports
                .iter()
                .map(|p| ContainerPort {
                    name: Some(p.name.clone()),
                    container_port: i32::from(p.port),
                    protocol: Some(p.protocol.clone()),
                    ..ContainerPort::default()
                })
                .collect(),
        ),
        readiness_probe: Some(Probe {
            exec: Some(ExecAction {
                command: Some(template.probe_command.clone()),
            }),
            period_seconds: Some(2),
            timeout_seconds: Some(2),
            failure_threshold: Some(2),
            success_threshold: Some(1),
            ..Probe::default()
        }),
        resources: o.resources.clone(),
        security_context: Some(unprivileged(&["NET_BIND_SERVICE"])),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        volume_mounts: Some(vec![
            mount("config", CONFIG_DIR, true),
            mount("run", RUN_DIR, false),
            mount("cache", CACHE_DIR, false),
        ]),
        ..Container::default()
    };
    // kres-cache-gc on the same cache volume. LMDB tells its readers apart by PID, so the
    // containers share one PID namespace (no two processes of the pod with one PID).
    let cache_gc = template.cache_gc.as_ref().map(|args| Container {
        name: CACHE_GC_CONTAINER.into(),
        image: Some(template.image.clone()),
        command: Some(vec!["kres-cache-gc".into()]),
        args: Some(args.clone()),
        resources: o.cache_gc_resources.clone(),
        security_context: Some(unprivileged(&[])),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        volume_mounts: Some(vec![mount("cache", CACHE_DIR, false)]),
        ..Container::default()
    });
    Pod {
        metadata,
        spec: Some(PodSpec {
            share_process_namespace: cache_gc.is_some().then_some(true),
            containers: std::iter::once(kresd).chain(cache_gc).collect(),
            volumes: Some(vec![
                Volume {
                    name: "config".into(),
                    config_map: Some(ConfigMapVolumeSource {
                        name: config_map_name(&owner.name, revision),
                        ..ConfigMapVolumeSource::default()
                    }),
                    ..Volume::default()
                },
                Volume {
                    name: "run".into(),
                    empty_dir: Some(EmptyDirVolumeSource::default()),
                    ..Volume::default()
                },
                cache_volume(owner, slot, template),
            ]),
            security_context: Some(PodSecurityContext {
                fs_group: Some(KRESD_GID),
                seccomp_profile: Some(SeccompProfile {
                    type_: "RuntimeDefault".into(),
                    ..SeccompProfile::default()
                }),
                ..PodSecurityContext::default()
            }),
            automount_service_account_token: Some(false),
            enable_service_links: Some(false),
            termination_grace_period_seconds: Some(10),
            node_selector: o.node_selector.clone(),
            tolerations: o.tolerations.clone(),
            affinity: o.affinity.clone(),
            topology_spread_constraints: o.topology_spread_constraints.clone(),
            priority_class_name: o.priority_class_name.clone(),
            ..PodSpec::default()
        }),
        status: None,
    }
}

/// A container's security context: uid 100 / gid 101, no privilege escalation, read-only root
/// filesystem, every capability dropped but `add`.
fn unprivileged(add: &[&str]) -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        run_as_user: Some(KRESD_UID),
        run_as_group: Some(KRESD_GID),
        capabilities: Some(Capabilities {
            add: (!add.is_empty()).then(|| add.iter().map(|c| c.to_string()).collect()),
            drop: Some(vec!["ALL".into()]),
        }),
        ..SecurityContext::default()
    }
}

/// The Service of resolver `owner`: ports from `spec.service.ports`, else from `ports`;
/// selecting the resolver's pods that serve (`serving=true`).
pub fn service(owner: &Owner, spec: &KnotResolverSpec, ports: &[PortSpec]) -> Service {
    let mut selector = selector_labels(&owner.name);
    selector.insert(LABEL_SERVING.into(), "true".into());
    let mut metadata = meta(owner, owner.name.clone(), selector_labels(&owner.name));
    if !spec.service.annotations.is_empty() {
        metadata.annotations = Some(spec.service.annotations.clone());
    }
    let ports = spec.service.ports.clone().unwrap_or_else(|| {
        ports
            .iter()
            .map(|p| ServicePort {
                name: Some(p.name.clone()),
                port: i32::from(p.port),
                protocol: Some(p.protocol.clone()),
                target_port: Some(IntOrString::Int(i32::from(p.port))),
                ..ServicePort::default()
            })
            .collect()
    });
    let type_ = match spec.service.type_ {
        ServiceType::ClusterIP => "ClusterIP",
        ServiceType::NodePort => "NodePort",
        ServiceType::LoadBalancer => "LoadBalancer",
    };
    Service {
        metadata,
        spec: Some(K8sServiceSpec {
            type_: Some(type_.into()),
            selector: Some(selector),
            ports: Some(ports),
            // kresd answers from the address the query came to: no need for a session.
            publish_not_ready_addresses: Some(false),
            ..K8sServiceSpec::default()
        }),
        status: None,
    }
}

/// The PodDisruptionBudget of resolver `owner`, or `None` when there should be none (disabled,
/// or fewer than 2 replicas: a budget would block node drains forever).
pub fn pod_disruption_budget(
    owner: &Owner,
    spec: &KnotResolverSpec,
) -> Option<PodDisruptionBudget> {
    if !spec.pod_disruption_budget.enabled || spec.replicas < 2 {
        return None;
    }
    Some(PodDisruptionBudget {
        metadata: meta(owner, owner.name.clone(), selector_labels(&owner.name)),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(
                spec.pod_disruption_budget
                    .max_unavailable
                    .clone()
                    .unwrap_or(IntOrString::Int(1)),
            ),
            selector: Some(LabelSelector {
                match_labels: Some(selector_labels(&owner.name)),
                ..LabelSelector::default()
            }),
            unhealthy_pod_eviction_policy: Some("AlwaysAllow".into()),
            ..PodDisruptionBudgetSpec::default()
        }),
        status: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ResourceRequirements;

    fn owner() -> Owner {
        Owner {
            name: "res".into(),
            namespace: "ns".into(),
            reference: OwnerReference {
                api_version: "resolver.kres-operator.io/v1alpha1".into(),
                kind: "KnotResolver".into(),
                name: "res".into(),
                uid: "u-1".into(),
                controller: Some(true),
                ..OwnerReference::default()
            },
        }
    }

    fn config(yaml: &str) -> ResolverConfig {
        ResolverConfig::from_yaml_str(yaml).expect("valid")
    }

    #[test]
    fn ports_per_kind_and_unique_names() {
        let c = config(
            "network:\n  listen:\n    - interface: 0.0.0.0\n    - interface: 0.0.0.0\n      port: 5353\n    - interface: 0.0.0.0\n      kind: dot\n",
        );
        let ports: Vec<(String, u16, String)> = listen_ports(&c)
            .into_iter()
            .map(|p| (p.name, p.port, p.protocol))
            .collect();
        assert_eq!(
            ports,
            [
                ("dns-udp".into(), 53, "UDP".into()),
                ("dns-tcp".into(), 53, "TCP".into()),
                ("dns5353-udp".into(), 5353, "UDP".into()),
                ("dns5353-tcp".into(), 5353, "TCP".into()),
                ("dot-tcp".into(), 853, "TCP".into()),
            ]
        );
    }

    fn template() -> PodTemplate {
        let spec: KnotResolverSpec = serde_json::from_value(serde_json::json!({
            "replicas": 3,
            "podTemplate": { "labels": { "team": "dns" }, "nodeSelector": { "zone": "a" } },
        }))
        .expect("spec");
        let c = config("network:\n  listen:\n    - interface: 0.0.0.0\ncache:\n  size-max: 100M\n");
        pod_template(
            &spec,
            &c,
            "kres:1",
            &["kres-operator".into(), "probe".into()],
        )
    }

    #[test]
    fn pod_has_labels_owner_probe_env_and_the_revision_config() {
        let t = template();
        let p = pod(&owner(), Slot::Worker(2), &"abc".to_string(), &t);
        let m = &p.metadata;
        assert_eq!(m.name.as_deref(), Some("res-2"));
        let labels = m.labels.clone().unwrap_or_default();
        for (k, v) in [
            (LABEL_NAME, APP_NAME),
            (LABEL_INSTANCE, "res"),
            (LABEL_MANAGED_BY, MANAGER),
            (LABEL_SLOT, "2"),
            (LABEL_REVISION, "abc"),
            (LABEL_SERVING, "true"),
            ("team", "dns"),
        ] {
            assert_eq!(labels.get(k).map(String::as_str), Some(v), "{k}");
        }
        assert_eq!(
            m.owner_references.as_ref().map(|o| o[0].uid.as_str()),
            Some("u-1")
        );
        let spec = p.spec.expect("spec");
        let c = &spec.containers[0];
        assert_eq!(c.image.as_deref(), Some("kres:1"));
        let probe = c.readiness_probe.as_ref().and_then(|p| p.exec.as_ref());
        assert_eq!(
            probe.and_then(|e| e.command.clone()),
            Some(vec!["kres-operator".to_string(), "probe".into()])
        );
        let env = c.env.clone().unwrap_or_default();
        assert_eq!(
            env[0]
                .value_from
                .as_ref()
                .and_then(|v| v.field_ref.as_ref())
                .map(|f| f.field_path.as_str()),
            Some("status.podIP")
        );
        assert_eq!(env[0].name, POD_IP_ENV);
        let volumes = spec.volumes.unwrap_or_default();
        assert_eq!(
            volumes[0].config_map.as_ref().map(|c| c.name.as_str()),
            Some("res-abc")
        );
        let cache = volumes[2].empty_dir.as_ref().expect("cache emptyDir");
        assert_eq!(cache.medium.as_deref(), Some("Memory"));
        assert_eq!(
            cache.size_limit,
            Some(Quantity("115343360".into())),
            "100 MiB + 10 %"
        );
        assert_eq!(
            spec.node_selector,
            Some(BTreeMap::from([("zone".into(), "a".into())]))
        );
        let sc = c.security_context.as_ref().expect("securityContext");
        assert_eq!(sc.run_as_non_root, Some(true));
        assert_eq!(
            pod(&owner(), Slot::Surge, &"abc".to_string(), &t)
                .metadata
                .name
                .as_deref(),
            Some("res-canary")
        );
    }

    #[test]
    fn cache_gc_is_a_second_unprivileged_container_sharing_the_pid_namespace() {
        let mut t = template();
        let without = pod(&owner(), Slot::Worker(0), &"abc".to_string(), &t);
        let spec = without.spec.expect("spec");
        assert_eq!(spec.containers.len(), 1);
        assert_eq!(spec.share_process_namespace, None);
        assert!(
            serde_json::to_value(&t)
                .expect("json")
                .get("cacheGc")
                .is_none(),
            "templates without it keep their hash"
        );
        t.cache_gc = Some(vec![
            "-c".into(),
            CACHE_DIR.into(),
            "-d".into(),
            "1000".into(),
        ]);
        let resources: ResourceRequirements = serde_json::from_value(serde_json::json!({
            "requests": { "cpu": "10m", "memory": "32Mi" }, "limits": { "memory": "64Mi" },
        }))
        .expect("resources");
        t.overrides.cache_gc_resources = Some(resources.clone());
        let spec = pod(&owner(), Slot::Worker(0), &"abc".to_string(), &t)
            .spec
            .expect("spec");
        assert_eq!(spec.share_process_namespace, Some(true));
        let [kresd, gc] = &spec.containers[..] else {
            panic!("two containers: {:?}", spec.containers);
        };
        assert_eq!(
            kresd.name, KRESD_CONTAINER,
            "kresd first: the backend reads its ports"
        );
        assert_eq!(gc.name, CACHE_GC_CONTAINER);
        assert_eq!(gc.image.as_deref(), Some("kres:1"));
        assert_eq!(gc.command, Some(vec!["kres-cache-gc".to_string()]));
        assert_eq!(gc.args, t.cache_gc);
        assert_eq!(gc.resources, Some(resources));
        assert_eq!(kresd.resources, None, "kresd keeps its own");
        let mounts = gc.volume_mounts.clone().unwrap_or_default();
        assert_eq!(
            mounts
                .iter()
                .map(|m| (m.name.as_str(), m.mount_path.as_str(), m.read_only))
                .collect::<Vec<_>>(),
            [("cache", CACHE_DIR, None)]
        );
        let sc = gc.security_context.clone().expect("securityContext");
        assert_eq!(sc.run_as_non_root, Some(true));
        assert_eq!(sc.run_as_user, Some(KRESD_UID));
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        let caps = sc.capabilities.expect("capabilities");
        assert_eq!((caps.add, caps.drop), (None, Some(vec!["ALL".to_string()])));
    }

    #[test]
    fn regular_slots_get_their_own_cache_claim_and_the_canary_memory() {
        let mut t = template();
        let no_claim = serde_json::to_value(&t).expect("json");
        assert!(
            no_claim.get("cacheClaim").is_none(),
            "old revisions keep their hash"
        );
        t.cache_claim = Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            ..PersistentVolumeClaimSpec::default()
        });
        let volumes = |slot| {
            pod(&owner(), slot, &"abc".to_string(), &t)
                .spec
                .and_then(|s| s.volumes)
                .unwrap_or_default()
        };
        let claim = volumes(Slot::Worker(1))
            .into_iter()
            .find(|v| v.name == "cache")
            .and_then(|v| v.persistent_volume_claim)
            .map(|c| c.claim_name);
        assert_eq!(claim.as_deref(), Some("res-cache-1"));
        let canary = volumes(Slot::Surge)
            .into_iter()
            .find(|v| v.name == "cache")
            .expect("cache");
        assert!(canary.persistent_volume_claim.is_none() && canary.empty_dir.is_some());
        let pvc = cache_claim(&owner(), 1, t.cache_claim.as_ref().expect("claim"));
        assert_eq!(pvc.metadata.name.as_deref(), Some("res-cache-1"));
        assert_eq!(
            pvc.metadata
                .owner_references
                .as_ref()
                .map(|o| o[0].uid.as_str()),
            Some("u-1")
        );
    }

    #[test]
    fn config_map_is_immutable_and_holds_config_and_template() {
        let t = template();
        let cm = config_map(
            &owner(),
            &"abc".into(),
            "-- lua",
            &serde_json::json!({"a": 1}),
            &t,
        );
        assert_eq!(cm.metadata.name.as_deref(), Some("res-abc"));
        assert_eq!(cm.immutable, Some(true));
        let data = cm.data.expect("data");
        assert_eq!(data[KEY_KRESD_CONF], "-- lua");
        let back: PodTemplate = serde_json::from_str(&data[KEY_POD_TEMPLATE]).expect("template");
        assert_eq!(back, t);
    }

    #[test]
    fn service_selects_serving_pods_and_pdb_only_for_several_replicas() {
        let t = template();
        let mut spec = KnotResolverSpec {
            replicas: 3,
            ..KnotResolverSpec::default()
        };
        spec.pod_disruption_budget.enabled = true;
        let svc = service(&owner(), &spec, &t.ports);
        let s = svc.spec.expect("spec");
        assert_eq!(
            s.selector
                .as_ref()
                .and_then(|s| s.get(LABEL_SERVING))
                .map(String::as_str),
            Some("true")
        );
        assert_eq!(s.ports.map(|p| p.len()), Some(2));
        let pdb = pod_disruption_budget(&owner(), &spec).expect("pdb for 3");
        let ps = pdb.spec.expect("spec");
        assert_eq!(ps.max_unavailable, Some(IntOrString::Int(1)));
        assert!(
            ps.selector
                .and_then(|s| s.match_labels)
                .is_some_and(|l| !l.contains_key(LABEL_SERVING)),
            "the budget covers draining pods too"
        );
        spec.replicas = 1;
        assert_eq!(pod_disruption_budget(&owner(), &spec), None);
    }

    #[test]
    fn selector_string_is_sorted_labels() {
        assert_eq!(
            selector_string("r"),
            "app.kubernetes.io/instance=r,app.kubernetes.io/managed-by=kres-operator,app.kubernetes.io/name=knot-resolver"
        );
    }
}
