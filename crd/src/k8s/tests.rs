//! Unit tests of the KnotResolver resource, its projected config schema and its validation
//! profile. The apiserver's own verdict is in tests/tests/k8s_crd.rs.

use kube_core::CustomResourceExt;
use serde_json::{Value, json};

use super::*;
use crate::config::ResolverConfig;
use crate::config::generated_tests::repo_file;

/// Every node of a schema with its JSON pointer.
fn nodes<'a>(v: &'a Value, at: String, out: &mut Vec<(String, &'a Value)>) {
    if let Value::Object(map) = v {
        out.push((at.clone(), v));
        for (k, child) in map {
            match (k.as_str(), child) {
                ("properties", Value::Object(props)) => {
                    for (name, p) in props {
                        nodes(p, format!("{at}/properties/{name}"), out);
                    }
                }
                ("items" | "additionalProperties", c) => nodes(c, format!("{at}/{k}"), out),
                ("anyOf" | "oneOf" | "allOf", Value::Array(bs)) => {
                    for (i, b) in bs.iter().enumerate() {
                        nodes(b, format!("{at}/{k}/{i}"), out);
                    }
                }
                _ => {}
            }
        }
    }
}

fn config_nodes() -> Vec<(String, Value)> {
    let schema = projected_config_schema();
    let mut out = Vec::new();
    nodes(&schema, String::new(), &mut out);
    out.into_iter().map(|(p, v)| (p, v.clone())).collect()
}

#[test]
fn projected_schema_has_no_unions_defaults_or_unknown_formats() {
    let nodes = config_nodes();
    assert!(nodes.len() > 100, "{} nodes", nodes.len());
    for (at, node) in &nodes {
        for key in [
            "anyOf", "oneOf", "allOf", "not", "default", "$ref", "const", "examples",
        ] {
            assert!(node.get(key).is_none(), "{at} has {key}: {node}");
        }
        if let Some(f) = node.get("format").and_then(Value::as_str) {
            assert!(
                ["int32", "int64", "float", "double"].contains(&f),
                "{at}: format {f}"
            );
        }
        if let Some(p) = node.get("pattern").and_then(Value::as_str) {
            assert!(!p.contains("(?!") && !p.contains("(?="), "{at}: {p}");
        }
        if let Some(t) = node.get("type") {
            assert!(t.is_string(), "{at}: type {t} is not one type");
        }
    }
}

/// The apiserver's structural rules that can be checked here: every node has a type unless it
/// is free-form, free-form nodes carry no value constraints, objects with properties preserve
/// unknown keys (so nothing is pruned), properties and additionalProperties are exclusive.
#[test]
fn projected_schema_is_structural_and_prunes_nothing() {
    for (at, node) in config_nodes() {
        let free = node.get("x-kubernetes-preserve-unknown-fields") == Some(&json!(true));
        assert!(
            free || node.get("type").is_some(),
            "{at} has no type: {node}"
        );
        if free && node.get("type").is_none() {
            let keys: Vec<&String> = node.as_object().unwrap().keys().collect();
            assert!(
                keys.iter().all(|k| matches!(
                    k.as_str(),
                    "description" | "title" | "nullable" | "x-kubernetes-preserve-unknown-fields"
                )),
                "{at}: constraints beside a free-form node: {keys:?}"
            );
        }
        if node.get("properties").is_some() {
            assert!(
                free,
                "{at}: an object with properties would prune unknown keys"
            );
            assert!(node.get("additionalProperties").is_none(), "{at}");
        }
        if at.contains("/properties/") && !at.ends_with("/items") {
            let last = at.rsplit('/').nth(1);
            if last == Some("properties") {
                assert_eq!(node.get("nullable"), Some(&json!(true)), "{at}");
            }
        }
    }
}

#[test]
fn mixed_unions_become_free_form_with_their_alternatives_described() {
    let s = projected_config_schema();
    let workers = &s["properties"]["workers"];
    assert_eq!(
        workers["x-kubernetes-preserve-unknown-fields"], true,
        "{workers}"
    );
    let text = workers["description"].as_str().unwrap();
    assert!(
        text.contains("\"auto\"") && text.contains("integer"),
        "{text}"
    );
    assert!(text.contains("Default: 1."), "{text}");
    // T or a list of T.
    let subtree = &s["properties"]["forward"]["items"]["properties"]["subtree"];
    assert_eq!(
        subtree["x-kubernetes-preserve-unknown-fields"], true,
        "{subtree}"
    );
    assert!(
        subtree["description"]
            .as_str()
            .unwrap()
            .contains("a list of"),
        "{subtree}"
    );
    // A server: an address string or a mapping.
    let server = &s["properties"]["forward"]["items"]["properties"]["servers"]["items"];
    assert_eq!(
        server["x-kubernetes-preserve-unknown-fields"], true,
        "{server}"
    );
    assert!(server.get("type").is_none(), "{server}");
    // Plain enums and ranges stay.
    let kind = &s["properties"]["network"]["properties"]["listen"]["items"]["properties"]["kind"];
    assert_eq!(kind["type"], "string", "{kind}");
    assert!(
        kind["enum"].as_array().unwrap().contains(&json!("dot")),
        "{kind}"
    );
    let pipeline = &s["properties"]["network"]["properties"]["tcp-pipeline"];
    assert_eq!(pipeline["type"], "integer", "{pipeline}");
    assert_eq!(pipeline["maximum"], 65535, "{pipeline}");
    assert!(
        pipeline["description"]
            .as_str()
            .unwrap()
            .contains("Default: 100."),
        "{pipeline}"
    );
}

fn corpus() -> Vec<(String, Value)> {
    let mut out = Vec::new();
    let text = std::fs::read_to_string(repo_file("crd/testdata/union-configs.yaml")).unwrap();
    for (i, doc) in text.split("\n---\n").enumerate() {
        let v: Value = serde_norway::from_str(doc).unwrap();
        out.push((format!("union-configs.yaml#{i}"), v));
    }
    for name in ["config.yaml", "config-full.yaml"] {
        let text =
            std::fs::read_to_string(repo_file(&format!("manifests/examples/{name}"))).unwrap();
        out.push((name.to_string(), serde_norway::from_str(&text).unwrap()));
    }
    out
}

#[test]
fn the_corpus_is_accepted_by_the_datamodel() {
    let corpus = corpus();
    assert!(corpus.len() >= 12, "{}", corpus.len());
    for (name, v) in corpus {
        ResolverConfig::from_json_value(v).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

#[test]
fn crd_has_the_names_subresources_and_columns() {
    let crd = serde_json::to_value(KnotResolver::crd()).unwrap();
    assert_eq!(
        crd["metadata"]["name"],
        "knotresolvers.resolver.kres-operator.io"
    );
    assert_eq!(crd["spec"]["scope"], "Namespaced");
    assert_eq!(crd["spec"]["names"]["shortNames"], json!(["kres"]));
    let v = &crd["spec"]["versions"][0];
    assert_eq!(v["name"], "v1alpha1");
    assert_eq!(v["subresources"]["status"], json!({}));
    assert_eq!(
        v["subresources"]["scale"],
        json!({"specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas", "labelSelectorPath": ".status.selector"})
    );
    let columns: Vec<(&str, i64)> = v["additionalPrinterColumns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap(),
                c["priority"].as_i64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(
        columns,
        [
            ("Replicas", 0),
            ("Ready", 0),
            ("Up-to-date", 0),
            ("Revision", 0),
            ("Phase", 0),
            ("Available", 0),
            ("Age", 0),
            ("Target", 1),
            ("Reason", 1)
        ]
    );
    let spec = &v["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"];
    // kube's rewriter kept the projection; the field's doc comment is its description.
    let mut config = spec["config"].clone();
    let mut projected = projected_config_schema();
    config.as_object_mut().unwrap().remove("description");
    projected.as_object_mut().unwrap().remove("description");
    // Through JSONSchemaProps (bounds become floats), `required` in any order.
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaProps;
    let props: JSONSchemaProps = serde_json::from_value(projected).unwrap();
    let mut projected = serde_json::to_value(props).unwrap();
    sort_required(&mut config);
    sort_required(&mut projected);
    assert_eq!(config, projected);
    let conditions =
        &v["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]["conditions"];
    assert_eq!(conditions["x-kubernetes-list-type"], "map");
    assert_eq!(conditions["x-kubernetes-list-map-keys"], json!(["type"]));
}

fn sort_required(v: &mut Value) {
    match v {
        Value::Object(map) => {
            if let Some(Value::Array(r)) = map.get_mut("required") {
                r.sort_by(|a, b| a.as_str().cmp(&b.as_str()));
            }
            map.values_mut().for_each(sort_required);
        }
        Value::Array(items) => items.iter_mut().for_each(sort_required),
        _ => {}
    }
}

fn spec(config: Value) -> KnotResolverSpec {
    KnotResolverSpec {
        replicas: 3,
        config,
        ..Default::default()
    }
}

fn pointers(r: Result<ValidatedSpec, crate::config::ConfigErrors>) -> Vec<String> {
    match r {
        Ok(v) => panic!("accepted: {:?}", v.spec),
        Err(e) => e.iter().map(|e| e.pointer.clone()).collect(),
    }
}

#[test]
fn a_k8s_config_validates_and_listens_on_the_pod_address() {
    let v = validate_spec(&spec(json!({
        "network": { "listen": [ { "kind": "dns" }, { "kind": "dot", "port": 8853 } ] },
        "local-data": { "addresses": { "www.example": "192.0.2.1" } }
    })))
    .unwrap_or_else(|e| panic!("{e}"));
    let listen = &v.config.network.listen;
    assert_eq!(listen.len(), 2);
    assert_eq!(listen[1].effective_port(), 8853);
    assert!(
        v.lua.contains("net.listen('0.0.0.0', 853") || v.lua.contains("0.0.0.0"),
        "{}",
        v.lua
    );
    assert!(v.lua.contains("www.example"), "{}", v.lua);

    // No listen given: plain DNS on port 53 of the pod.
    let v = validate_spec(&spec(json!({}))).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(v.config.network.listen.len(), 1);
    assert_eq!(v.config.network.listen[0].effective_port(), 53);
    // A null config is an empty one.
    validate_spec(&spec(Value::Null)).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn what_the_pod_backend_owns_is_refused_with_pointers() {
    let got = pointers(validate_spec(&spec(json!({
        "workers": 2,
        "rundir": "/run/x",
        "management": { "interface": "127.0.0.1@5000" },
        "cache": { "storage": "/var/cache/x", "size-max": "10M" },
        "network": { "listen": [
            { "interface": "127.0.0.1@53" },
            { "kind": "dot" },
            { "unix-socket": "/run/dns.sock" }
        ] }
    }))));
    assert_eq!(
        got,
        [
            "/spec/config/workers",
            "/spec/config/rundir",
            "/spec/config/management",
            "/spec/config/cache/storage",
            "/spec/config/network/listen/0/interface",
            "/spec/config/network/listen/2/unix-socket",
        ]
    );
    // `workers: 1` too: any value is refused, replicas is the only count.
    let e = validate_spec(&spec(json!({ "workers": 1 }))).unwrap_err();
    assert!(e.0[0].message.contains("spec.replicas"), "{e}");
}

#[test]
fn datamodel_errors_point_under_spec_config_together_with_spec_errors() {
    let mut s = spec(json!({
        "forward": [ { "subtree": "example.test", "servers": ["not-an-ip"] } ],
        "cache": { "ttl-min": "1d", "ttl-max": "1h" },
        "nonsense": true
    }));
    s.replicas = 300;
    s.image = Some("bad image".into());
    s.rollout.min_ready_seconds = Some(30);
    s.rollout.progress_deadline_seconds = Some(30);
    let got = pointers(validate_spec(&s));
    assert_eq!(
        got,
        [
            "/spec/replicas",
            "/spec/rollout/progressDeadlineSeconds",
            "/spec/image",
            "/spec/config/forward/0/servers/0",
            "/spec/config/nonsense",
            "/spec/config/cache/ttl-max",
        ]
    );
    // Not a mapping.
    assert_eq!(pointers(validate_spec(&spec(json!([1])))), ["/spec/config"]);
    // kresd 5.x cannot do it: a render error, also under /spec/config.
    let got = pointers(validate_spec(&spec(
        json!({ "rate-limiting": { "enable": true } }),
    )));
    assert_eq!(got.len(), 1);
    assert!(got[0].starts_with("/spec/config/rate-limiting"), "{got:?}");
}

#[test]
fn rendered_lua_over_900_kib_is_refused() {
    // ~1 MiB of records: valid for the datamodel, too big for one ConfigMap.
    let mut records = String::new();
    let mut i = 0;
    while records.len() < 1_000_000 {
        records.push_str(&format!(
            "host{i}.example.test. 300 IN A 192.0.2.{}\n",
            i % 250
        ));
        i += 1;
    }
    let e = validate_spec(&spec(json!({ "local-data": { "records": records } }))).unwrap_err();
    assert_eq!(e.0.len(), 1, "{e}");
    assert_eq!(e.0[0].pointer, "/spec/config");
    assert!(e.0[0].message.contains("900 KiB"), "{e}");
}

#[test]
fn the_example_knotresolver_validates() {
    let text = std::fs::read_to_string(repo_file("manifests/examples/knotresolver.yaml")).unwrap();
    let kr: KnotResolver = serde_norway::from_str(&text).unwrap();
    assert_eq!(kr.spec.replicas, 3);
    let v = validate_spec(&kr.spec).unwrap_or_else(|e| panic!("{e}"));
    assert!(!v.config.local_data.addresses.is_empty() || v.config.local_data.records.is_some());
}

/// Every `manifests/examples/knotresolver*.yaml`, by file name.
fn example_resolvers() -> Vec<(String, KnotResolver)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(repo_file("manifests/examples")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("knotresolver") && name.ends_with(".yaml") {
            let text = std::fs::read_to_string(&path).unwrap();
            let kr: KnotResolver =
                serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
            out.push((name, kr));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Each example is accepted by the validation profile and shows what its name promises.
#[test]
fn every_example_knotresolver_validates_and_shows_its_feature() {
    let examples = example_resolvers();
    let names: Vec<&str> = examples.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "knotresolver-blocklist.yaml",
            "knotresolver-caching.yaml",
            "knotresolver-dnssec-nta.yaml",
            "knotresolver-split-horizon.yaml",
            "knotresolver-warm-cache.yaml",
            "knotresolver.yaml",
        ]
    );
    for (name, kr) in &examples {
        let v = validate_spec(&kr.spec).unwrap_or_else(|e| panic!("{name}:\n{e}"));
        let c = &v.config;
        let lua = &v.lua;
        match name.as_str() {
            "knotresolver-blocklist.yaml" => {
                assert_eq!(c.local_data.rules.len(), 3, "{name}");
                assert!(lua.contains("ads.example.test"), "{name}: {lua}");
            }
            "knotresolver-caching.yaml" => {
                assert!(c.cache.prefetch.prediction.enable, "{name}");
                assert!(c.options.serve_stale, "{name}");
            }
            "knotresolver-dnssec-nta.yaml" => {
                assert!(c.dnssec.enable, "{name}");
                assert_eq!(c.dnssec.negative_trust_anchors.len(), 2, "{name}");
                assert!(lua.contains("broken-dnssec.example.test"), "{name}: {lua}");
            }
            "knotresolver-split-horizon.yaml" => {
                assert!(lua.contains("dns1.corp.example.test"), "{name}: {lua}");
                assert!(lua.contains("policy.TLS_FORWARD("), "{name}: {lua}");
                assert!(lua.contains("pin_sha256"), "{name}: {lua}");
            }
            "knotresolver-warm-cache.yaml" => {
                let claim = kr.spec.cache.volume_claim_template.as_ref();
                assert!(claim.is_some(), "{name}: no volumeClaimTemplate");
            }
            _ => {}
        }
    }
}
