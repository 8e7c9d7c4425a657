//! Shape check guided by the JSON Schema: serde would accept a sequence where a struct is
//! expected (positional fields); config.yaml sections must be mappings.

use std::sync::OnceLock;

use serde_json::Value;

use super::error::ConfigError;
use super::parse::escape_token;

fn schema() -> &'static Value {
    static SCHEMA: OnceLock<Value> = OnceLock::new();
    SCHEMA.get_or_init(super::json_schema)
}

/// Name of a JSON value's kind, in YAML words.
pub(crate) fn kind_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a sequence",
        Value::Object(_) => "a mapping",
    }
}

/// Pointers (with errors) of sequences found where the schema wants a mapping.
pub(crate) fn check(value: &Value) -> Vec<ConfigError> {
    let root = schema();
    let mut errors = Vec::new();
    walk(root, root, value, String::new(), &mut errors);
    errors
}

fn resolve<'a>(root: &'a Value, mut s: &'a Value) -> &'a Value {
    for _ in 0..16 {
        match s.get("$ref").and_then(Value::as_str) {
            Some(r) => match r.strip_prefix('#').and_then(|p| root.pointer(p)) {
                Some(target) => s = target,
                None => return s,
            },
            None => return s,
        }
    }
    s
}

fn wants_object_only(s: &Value) -> bool {
    match s.get("type") {
        Some(Value::String(t)) => t == "object",
        Some(Value::Array(ts)) => {
            ts.iter().any(|t| t == "object") && !ts.iter().any(|t| t == "array")
        }
        _ => false,
    }
}

fn walk(
    root: &Value,
    schema: &Value,
    value: &Value,
    pointer: String,
    errors: &mut Vec<ConfigError>,
) {
    let s = resolve(root, schema);
    if let Some(branches) = s
        .get("anyOf")
        .or_else(|| s.get("oneOf"))
        .and_then(Value::as_array)
    {
        let mut non_null = branches
            .iter()
            .filter(|b| b.get("type").and_then(Value::as_str) != Some("null"));
        if let (Some(only), None) = (non_null.next(), non_null.next()) {
            walk(root, only, value, pointer, errors);
        }
        return;
    }
    match value {
        Value::Array(items) => {
            if wants_object_only(s) {
                errors.push(ConfigError::new(
                    pointer,
                    format!("must be a mapping, got {}", kind_name(value)),
                ));
            } else if let Some(item) = s.get("items").filter(|i| i.is_object()) {
                for (i, v) in items.iter().enumerate() {
                    walk(root, item, v, format!("{pointer}/{i}"), errors);
                }
            }
        }
        Value::Object(map) => {
            let props = s.get("properties");
            let extra = s.get("additionalProperties").filter(|a| a.is_object());
            let closed = s.get("additionalProperties") == Some(&Value::Bool(false));
            for (k, v) in map {
                // `key:` with no value means "not set" and is dropped before serde sees it, so
                // serde's unknown-key check would never see the key either: checked here.
                if v.is_null() && closed && props.and_then(|p| p.get(k)).is_none() {
                    errors.push(ConfigError::new(
                        format!("{pointer}/{}", escape_token(k)),
                        unknown_key(k, props),
                    ));
                    continue;
                }
                if let Some(sub) = props.and_then(|p| p.get(k)).or(extra) {
                    walk(
                        root,
                        sub,
                        v,
                        format!("{pointer}/{}", escape_token(k)),
                        errors,
                    );
                }
            }
        }
        _ => {}
    }
}

/// The message of an unknown key, worded like serde's (see `parse::humanize`).
fn unknown_key(key: &str, props: Option<&Value>) -> String {
    let allowed: Vec<&str> = props
        .and_then(Value::as_object)
        .map(|p| p.keys().map(String::as_str).collect())
        .unwrap_or_default();
    if allowed.is_empty() {
        format!("unknown key '{key}'; no keys are allowed here")
    } else {
        format!("unknown key '{key}'; allowed keys: {}", allowed.join(", "))
    }
}
