//! `spec.config`'s schema: the `config.yaml` JSON Schema projected onto what a structural
//! Kubernetes schema can say (K8S-NOTES §1). The operator's validator stays authoritative.
//!
//! - A union of different JSON types (`T` or a list of `T`, `auto` or an integer, a server as a
//!   string or a mapping, ...) becomes free-form (`x-kubernetes-preserve-unknown-fields`) with a
//!   description listing the alternatives.
//! - No `default`: the apiserver would write it into stored objects; it goes into the
//!   description instead.
//! - Formats Kubernetes does not define and patterns Go's RE2 cannot compile are dropped.
//! - Every mapping with named keys preserves unknown keys, so nothing is pruned (the validator
//!   reports them), and every property is nullable (the datamodel reads `null` as "not set"),
//!   except that the apiserver refuses `null` where an enum applies.
//! - Enums, patterns, ranges, lengths and `required` stay.

use schemars::generate::SchemaSettings;
use schemars::{Schema, SchemaGenerator};
use serde_json::{Map, Value, json};

use crate::config::ResolverConfig;

/// Formats kept: the numeric ones, which Kubernetes defines and which only document the range.
/// String formats (`ipv4`, ...) are dropped too: the apiserver's Go parsers need not agree with the
/// datamodel's, which decides.
const KNOWN_FORMATS: &[&str] = &["int32", "int64", "float", "double"];

/// Keys a structural schema node may carry after the projection; anything else is dropped.
const KEPT_KEYS: &[&str] = &[
    "type",
    "description",
    "properties",
    "additionalProperties",
    "items",
    "required",
    "enum",
    "pattern",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
    "multipleOf",
    "format",
    "nullable",
    "title",
    "x-kubernetes-preserve-unknown-fields",
];

/// `schema_with` for `spec.config`.
pub fn config_schema(_: &mut SchemaGenerator) -> Schema {
    let value = projected_config_schema();
    Schema::try_from(value).unwrap_or_else(|_| Schema::from(true))
}

/// The projected schema of `spec.config` as JSON.
pub fn projected_config_schema() -> Value {
    let generator = SchemaSettings::openapi3()
        .with(|s| {
            s.inline_subschemas = true;
            s.meta_schema = None;
        })
        .into_generator();
    let root = generator
        .into_root_schema_for::<ResolverConfig>()
        .to_value();
    let mut projected = project(&root);
    if let Value::Object(map) = &mut projected {
        // The whole value may be null/absent: spec.config defaults to {} in the operator.
        map.remove("nullable");
        map.insert(
            "description".into(),
            Value::String(
                "Knot Resolver 6 config.yaml (kresd 5.6 subset), validated by the operator; see \
                 docs/config-reference.md. Not allowed here (the pod backend owns them): workers \
                 (use spec.replicas), rundir, management, cache.storage, and network.listen \
                 interface/unix-socket."
                    .into(),
            ),
        );
    }
    projected
}

/// JSON type name of a projected node, if it has exactly one.
fn json_type(node: &Value) -> Option<&str> {
    node.get("type").and_then(Value::as_str)
}

/// A short text for one alternative of a union.
fn describe_alternative(node: &Value) -> String {
    if let Some(values) = node.get("enum").and_then(Value::as_array) {
        let list: Vec<String> = values.iter().map(Value::to_string).collect();
        return list.join(" | ");
    }
    match json_type(node) {
        Some("array") => match node.get("items") {
            Some(items) => format!("a list of ({})", describe_alternative(items)),
            None => "a list".into(),
        },
        Some("object") => "a mapping".into(),
        Some(t) => {
            let mut s = format!("a {t}");
            if let Some(p) = node.get("pattern").and_then(Value::as_str) {
                s.push_str(&format!(" matching {p}"));
            }
            if let (Some(min), Some(max)) = (node.get("minimum"), node.get("maximum")) {
                s.push_str(&format!(" {min}..={max}"));
            }
            s
        }
        None => "any value".into(),
    }
}

/// True when Go's RE2 (the apiserver) compiles what the Rust `regex` crate does; look-around and
/// back-references are Perl-only.
fn re2_compatible(pattern: &str) -> bool {
    !["(?=", "(?!", "(?<=", "(?<!", "\\1", "\\2", "\\k<"]
        .iter()
        .any(|p| pattern.contains(p))
}

fn append_description(map: &mut Map<String, Value>, extra: &str) {
    let text = match map.get("description").and_then(Value::as_str) {
        Some(d) if !d.is_empty() => format!("{} {extra}", d.trim_end()),
        _ => extra.to_string(),
    };
    map.insert("description".into(), Value::String(text));
}

fn free_form(alternatives: &[Value]) -> Value {
    let mut map = Map::new();
    let list: Vec<String> = alternatives.iter().map(describe_alternative).collect();
    append_description(&mut map, &format!("One of: {}.", list.join("; ")));
    map.insert("x-kubernetes-preserve-unknown-fields".into(), json!(true));
    Value::Object(map)
}

/// Projects one schema node (see the module doc).
fn project(node: &Value) -> Value {
    let Some(src) = node.as_object() else {
        // `true`/`false` schemas: anything.
        return json!({ "x-kubernetes-preserve-unknown-fields": true });
    };
    let mut map = src.clone();
    let mut nullable = map.remove("nullable") == Some(json!(true));

    // `type: [T, "null"]`.
    if let Some(Value::Array(types)) = map.get("type").cloned() {
        let non_null: Vec<&Value> = types.iter().filter(|t| *t != "null").collect();
        nullable |= non_null.len() < types.len();
        match non_null.as_slice() {
            [one] => {
                map.insert("type".into(), (*one).clone());
            }
            _ => {
                map.remove("type");
            }
        }
    }
    if let Some(c) = map.remove("const") {
        map.insert("enum".into(), Value::Array(vec![c]));
    }
    if let Some(default) = map.remove("default") {
        append_description(&mut map, &format!("Default: {default}."));
    }

    // Unions.
    for key in ["anyOf", "oneOf", "allOf"] {
        let Some(Value::Array(branches)) = map.remove(key) else {
            continue;
        };
        let mut alternatives: Vec<Value> = Vec::new();
        for b in &branches {
            if json_type(b) == Some("null") || b.get("enum") == Some(&json!([null])) {
                nullable = true;
                continue;
            }
            alternatives.push(project(b));
        }
        let merged = merge_alternatives(key, alternatives);
        for (k, v) in merged {
            match (k.as_str(), map.get("description"), v.as_str()) {
                ("description", Some(_), Some(text)) if text.starts_with("One of:") => {
                    append_description(&mut map, text);
                }
                ("description", Some(_), _) => {}
                _ => {
                    map.insert(k, v);
                }
            }
        }
    }

    // Children.
    if let Some(Value::Object(props)) = map.get_mut("properties") {
        for v in props.values_mut() {
            let mut p = project(v);
            make_nullable(&mut p);
            *v = p;
        }
    }
    if let Some(items) = map.get("items").cloned() {
        map.insert("items".into(), project(&items));
    }
    match map.get("additionalProperties").cloned() {
        Some(Value::Object(_)) if map.contains_key("properties") => {
            map.remove("additionalProperties");
        }
        Some(ap @ Value::Object(_)) => {
            map.insert("additionalProperties".into(), project(&ap));
        }
        Some(_) => {
            map.remove("additionalProperties");
        }
        None => {}
    }
    if map.contains_key("patternProperties") || map.contains_key("propertyNames") {
        map.remove("patternProperties");
        map.remove("propertyNames");
        if !map.contains_key("additionalProperties") {
            map.insert("x-kubernetes-preserve-unknown-fields".into(), json!(true));
        }
    }
    if map.contains_key("properties") {
        map.insert("type".into(), json!("object"));
        map.insert("x-kubernetes-preserve-unknown-fields".into(), json!(true));
    } else if json_type(&Value::Object(map.clone())) == Some("object")
        && !map.contains_key("additionalProperties")
    {
        map.insert("x-kubernetes-preserve-unknown-fields".into(), json!(true));
    }

    // Formats and patterns the apiserver cannot use.
    if let Some(f) = map.get("format").and_then(Value::as_str)
        && !KNOWN_FORMATS.contains(&f)
    {
        map.remove("format");
    }
    if let Some(p) = map.get("pattern").and_then(Value::as_str)
        && !re2_compatible(p)
    {
        map.remove("pattern");
    }
    // An integer range wider than the schema can carry exactly (u64::MAX) says nothing useful.
    for bound in ["minimum", "maximum"] {
        if map
            .get(bound)
            .and_then(Value::as_f64)
            .is_some_and(|b| b.abs() >= 9.007_199_254_740_992e15)
        {
            map.remove(bound);
        }
    }
    map.retain(|k, _| KEPT_KEYS.contains(&k.as_str()));
    if map.contains_key("x-kubernetes-preserve-unknown-fields")
        && !map.contains_key("type")
        && !map.contains_key("properties")
    {
        // Free-form: a structural schema allows no value constraints beside it.
        map.retain(|k, _| {
            matches!(
                k.as_str(),
                "description" | "title" | "x-kubernetes-preserve-unknown-fields"
            )
        });
    }
    let mut node = Value::Object(map);
    if nullable {
        make_nullable(&mut node);
    }
    node
}

/// Marks a property nullable. (kube-apiserver 1.36 still refuses `null` for a property with an
/// `enum`, also with `null` listed: "Unsupported value: null". The enum is kept; such a key must
/// be left out rather than set to null.)
fn make_nullable(node: &mut Value) {
    if let Value::Object(m) = node {
        m.insert("nullable".into(), json!(true));
    }
}

/// One schema standing for projected union `alternatives`.
fn merge_alternatives(key: &str, alternatives: Vec<Value>) -> Map<String, Value> {
    if alternatives.is_empty() {
        return Map::new();
    }
    if alternatives.len() == 1 || key == "allOf" {
        // `allOf` of several parts does not occur in the config schema; the first part wins.
        return alternatives[0].as_object().cloned().unwrap_or_default();
    }
    // Enumerations of one type (`oneOf` of consts, each with its own doc comment).
    let all_enums = alternatives.iter().all(|a| a.get("enum").is_some());
    let types: Vec<Option<&str>> = alternatives.iter().map(json_type).collect();
    let one_type = types[0].is_some() && types.iter().all(|t| *t == types[0]);
    if all_enums {
        let values: Vec<Value> = alternatives
            .iter()
            .filter_map(|a| a.get("enum").and_then(Value::as_array))
            .flatten()
            .cloned()
            .collect();
        let all_strings = values.iter().all(Value::is_string);
        if all_strings {
            let mut m = Map::new();
            m.insert("type".into(), json!("string"));
            m.insert("enum".into(), Value::Array(values));
            return m;
        }
    }
    if one_type && matches!(types[0], Some("string" | "integer" | "number" | "boolean")) {
        // Same scalar type, different constraints: keep the type only.
        let mut m = Map::new();
        m.insert("type".into(), json!(types[0]));
        let list: Vec<String> = alternatives.iter().map(describe_alternative).collect();
        append_description(&mut m, &format!("One of: {}.", list.join("; ")));
        return m;
    }
    free_form(&alternatives)
        .as_object()
        .cloned()
        .unwrap_or_default()
}
