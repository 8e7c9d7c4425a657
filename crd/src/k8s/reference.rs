//! The KnotResolver reference (Markdown) generated from the CRD's OpenAPI schema: one table per
//! object of `spec` and `status`, in the shape of the config reference.

/// Paths whose contents are documented elsewhere: `spec.config` (the config reference) and the
/// Kubernetes types the spec embeds (their own API reference).
const DOCUMENTED_ELSEWHERE: &[&str] = &[
    "spec.config",
    "spec.podTemplate.resources",
    "spec.podTemplate.affinity",
    "spec.podTemplate.tolerations[]",
    "spec.podTemplate.topologySpreadConstraints[]",
    "spec.cache.volumeClaimTemplate",
    "spec.service.ports[]",
];

/// Markdown reference of the KnotResolver resource, generated from [`super::crd_yaml`]'s schema.
pub fn reference_markdown() -> String {
    use kube_core::CustomResourceExt;
    let crd = serde_json::to_value(super::KnotResolver::crd()).unwrap_or_default();
    let root = crd
        .pointer("/spec/versions/0/schema/openAPIV3Schema")
        .cloned()
        .unwrap_or_default();
    let mut out = String::from("# KnotResolver reference\n\n");
    out.push_str(
        "<!-- Generated from the CRD by kres-crd (k8s::reference_markdown). Do not edit; run \
         `KRES_UPDATE_GENERATED=1 cargo test -p kres-crd generated` to update. -->\n\n",
    );
    out.push_str(&format!(
        "`{}/{}`, kind `KnotResolver`, namespaced, short name `kres`; subresources `status` and \
         `scale`. `spec.config` is the Knot Resolver 6 `config.yaml` without what the pod backend \
         owns (see [config-reference.md](config-reference.md) and docs/kubernetes.md); the \
         Kubernetes types the spec embeds (resources, affinity, tolerations, topology spread \
         constraints, the PVC spec, service ports) are those of the Kubernetes API reference. \
         `status` is written by the operator.\n",
        super::GROUP,
        super::VERSION
    ));
    let stop = |path: &str| DOCUMENTED_ELSEWHERE.contains(&path);
    for part in ["spec", "status"] {
        if let Some(obj) = root.pointer(&format!("/properties/{part}")) {
            out.push_str(&crate::config::sections_markdown(&root, obj, part, &stop));
        }
    }
    out
}
