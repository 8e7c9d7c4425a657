//! The config reference (Markdown) generated from the JSON Schema: one table per section with
//! key, type, default and description.

use std::fmt::Write as _;

use serde_json::Value;

/// Markdown reference of every `config.yaml` section, generated from [`super::json_schema`].
pub fn reference_markdown() -> String {
    let root = super::json_schema();
    let mut out = String::new();
    out.push_str("# config.yaml reference\n\n");
    out.push_str(
        "<!-- Generated from the JSON Schema by kres-crd (config::reference_markdown). Do not edit; \
         run `KRES_UPDATE_GENERATED=1 cargo test -p kres-crd generated` to update. -->\n\n",
    );
    out.push_str(
        "Keys follow Knot Resolver 6 `config.yaml` (schema version 1). Sizes are `<int>(B|K|M|G)`, \
         times `<int>(us|ms|s|m|h|d)`, domain names are normalised (IDNA, lowercase, trailing dot). \
         Paths have no control characters, no `%` and no leading or trailing whitespace, and are at \
         most 4095 bytes (socket paths: 107); `rundir` and `cache.storage` are absolute. \
         Settings marked *Knot Resolver 6.x only* parse but fail validation: kresd 5.x cannot do them.\n",
    );
    out.push_str(&sections_markdown(&root, &root, "", &|_| false));
    out
}

/// One Markdown table per object of `obj` (at `path`, `""` for the top level) and, recursively,
/// of its nested objects and lists of objects, except below the paths `stop` accepts; `root`
/// resolves `$ref`s. Shared by the config and the KnotResolver references.
pub(crate) fn sections_markdown(
    root: &Value,
    obj: &Value,
    path: &str,
    stop: &dyn Fn(&str) -> bool,
) -> String {
    let mut sections = Vec::new();
    section(root, obj, path, &mut sections, 0, stop);
    let mut out = String::new();
    for (title, table) in sections {
        let _ = write!(out, "\n## {title}\n\n{table}");
    }
    out
}

fn resolve<'a>(root: &'a Value, s: &'a Value) -> (&'a Value, Option<&'a str>) {
    match s.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let name = r.rsplit('/').next();
            match r.strip_prefix('#').and_then(|p| root.pointer(p)) {
                Some(target) => (target, name),
                None => (s, name),
            }
        }
        None => (s, None),
    }
}

/// The object schema with properties behind `s` (through $ref, arrays and nullable anyOf).
fn object_of<'a>(root: &'a Value, s: &'a Value) -> Option<(&'a Value, bool)> {
    let (s, _) = resolve(root, s);
    if s.get("properties").is_some() {
        return Some((s, false));
    }
    if let Some(items) = s.get("items") {
        return object_of(root, items).map(|(o, _)| (o, true));
    }
    if let Some(branches) = s.get("anyOf").and_then(Value::as_array) {
        // The first branch that is (a list of) mappings, e.g. a server object beside 'ip@port'.
        return branches.iter().find_map(|b| object_of(root, b));
    }
    None
}

fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

fn type_name(root: &Value, s: &Value) -> String {
    let (r, name) = resolve(root, s);
    if let Some(consts) = r.get("oneOf").and_then(Value::as_array) {
        let values: Vec<String> = consts
            .iter()
            .filter_map(|c| c.get("const").map(|v| format!("`{}`", plain(v))))
            .collect();
        if values.len() == consts.len() {
            return format!("one of {}", values.join(", "));
        }
    }
    if let Some(c) = r.get("const") {
        return format!("`{}`", plain(c));
    }
    if let Some(branches) = r.get("anyOf").and_then(Value::as_array) {
        let parts: Vec<String> = branches
            .iter()
            .filter(|b| b.get("type").and_then(Value::as_str) != Some("null"))
            .map(|b| type_name(root, b))
            .collect();
        return parts.join(" or ");
    }
    if r.get("properties").is_some() {
        return "mapping".into();
    }
    let ty = match r.get("type") {
        Some(Value::String(t)) => t.clone(),
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(Value::as_str)
            .filter(|t| *t != "null")
            .collect::<Vec<_>>()
            .join(" or "),
        // The apiserver's structural-schema spellings (the KnotResolver CRD).
        _ if r.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) => {
            "integer or string".into()
        }
        _ if r.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true)) => {
            "any".into()
        }
        _ => String::new(),
    };
    match ty.as_str() {
        "array" => match r.get("items") {
            Some(items) => format!("list of {}", type_name(root, items)),
            None => "list".into(),
        },
        "object" => match r.get("additionalProperties").filter(|a| a.is_object()) {
            Some(v) => format!("mapping of name to {}", type_name(root, v)),
            None => "mapping".into(),
        },
        "integer" | "number" => match (r.get("minimum"), r.get("maximum")) {
            (Some(min), Some(max)) => format!("{ty} {}..={}", bound(min), bound(max)),
            (Some(min), None) => format!("{ty} >= {}", bound(min)),
            _ => ty,
        },
        "string" => match name {
            Some("TimeUnit") => "time".into(),
            Some("SizeUnit") => "size".into(),
            Some("DomainName") => "domain name".into(),
            Some("FilePath") => "path".into(),
            Some("SocketPath") => "socket path".into(),
            Some(n) => n.to_string(),
            None => match r.get("format").and_then(Value::as_str) {
                Some(f) => format!("string ({f})"),
                None => "string".into(),
            },
        },
        _ => name.map(str::to_string).unwrap_or(ty),
    }
}

/// A schema bound as written by a person: `1`, not the `1.0` of the CRD's float fields.
fn bound(v: &Value) -> String {
    match v.as_f64() {
        Some(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", f as i64),
        _ => v.to_string(),
    }
}

fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn section(
    root: &Value,
    obj: &Value,
    path: &str,
    out: &mut Vec<(String, String)>,
    depth: usize,
    stop: &dyn Fn(&str) -> bool,
) {
    let Some(props) = obj.get("properties").and_then(Value::as_object) else {
        return;
    };
    let required: Vec<&str> = obj
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let title = if path.is_empty() {
        "top level".to_string()
    } else {
        format!("`{path}`")
    };
    let mut table = String::from("| key | type | default | description |\n|---|---|---|---|\n");
    let mut nested = Vec::new();
    for (key, schema) in props {
        let (resolved, _) = resolve(root, schema);
        let description = schema
            .get("description")
            .or_else(|| resolved.get("description"))
            .and_then(Value::as_str)
            .unwrap_or("");
        let default = if required.contains(&key.as_str()) {
            "required".to_string()
        } else {
            match schema.get("default") {
                Some(Value::Object(_)) => "see below".to_string(),
                Some(v) => format!("`{}`", v),
                None => "not set".to_string(),
            }
        };
        let _ = writeln!(
            table,
            "| `{key}` | {} | {} | {} |",
            cell(&type_name(root, schema)),
            cell(&default),
            cell(description)
        );
        if let Some((child, is_list)) = object_of(root, schema) {
            let child_path = match (path.is_empty(), is_list) {
                (true, false) => key.clone(),
                (true, true) => format!("{key}[]"),
                (false, false) => format!("{path}.{key}"),
                (false, true) => format!("{path}.{key}[]"),
            };
            nested.push((child.clone(), child_path));
        }
    }
    out.push((title, table));
    if depth < 8 {
        for (child, child_path) in nested {
            if !stop(&child_path) {
                section(root, &child, &child_path, out, depth + 1, stop);
            }
        }
    }
}
