//! Parsing: YAML/JSON text -> `serde_json::Value` -> typed config, collecting every error.

use std::collections::HashMap;

use serde_json::Value;

use super::ResolverConfig;
use super::error::{ConfigError, ConfigErrors};
use super::{shape, yaml};

/// Largest accepted input document.
pub const MAX_INPUT_BYTES: usize = 4 * 1024 * 1024;

/// Deepest accepted nesting of mappings and sequences.
pub const MAX_DEPTH: usize = 64;

/// Most errors reported for one document.
const MAX_ERRORS: usize = 100;

/// Start of the note that ends a truncated error list.
const TOO_MANY: &str = "too many errors";

/// Node visits allowed for error collection (rounds x document nodes).
const WORK_BUDGET_NODES: usize = 4_000_000;

pub(crate) fn from_yaml_bytes(bytes: &[u8]) -> Result<ResolverConfig, ConfigErrors> {
    check_size(bytes.len())?;
    match std::str::from_utf8(bytes) {
        Ok(text) => from_yaml_str(text),
        Err(e) => Err(ConfigErrors::single(
            "",
            format!(
                "input is not valid UTF-8 (invalid byte at offset {})",
                e.valid_up_to()
            ),
        )),
    }
}

fn check_size(len: usize) -> Result<(), ConfigErrors> {
    if len > MAX_INPUT_BYTES {
        return Err(ConfigErrors::single(
            "",
            format!("input is {len} bytes; the limit is {MAX_INPUT_BYTES} bytes (4 MiB)"),
        ));
    }
    Ok(())
}

pub(crate) fn from_yaml_str(text: &str) -> Result<ResolverConfig, ConfigErrors> {
    check_size(text.len())?;
    let (value, index) = yaml::parse(text).map_err(ConfigErrors::from)?;
    from_json_value(value).map_err(|mut errors| {
        for e in &mut errors.0 {
            if e.location.is_none() && !e.message.starts_with(TOO_MANY) {
                let at_key =
                    e.message.starts_with("unknown key") || e.message.starts_with("duplicate key");
                e.location = index.locate(&e.pointer, at_key);
            }
        }
        // Source order reads best.
        errors.0.sort_by_key(|e| (e.location.is_none(), e.location));
        errors
    })
}

pub(crate) fn from_json_value(value: Value) -> Result<ResolverConfig, ConfigErrors> {
    let value = match value {
        Value::Null => Value::Object(Default::default()),
        v => v,
    };
    let nodes = check_depth(&value)?;
    if !value.is_object() {
        return Err(ConfigErrors::single(
            "",
            format!(
                "the configuration must be a mapping, got {}",
                shape::kind_name(&value)
            ),
        ));
    }
    let config = deserialize_collecting(value, nodes)?;
    config.validate()?;
    Ok(config)
}

/// Removes `key: null` members: an empty YAML value means "not set" (the default).
fn strip_null_members(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(strip_null_members);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_null_members),
        _ => {}
    }
}

/// Rejects values nested deeper than [`MAX_DEPTH`] (JSON input does not pass the YAML parser).
/// Returns the number of nodes.
fn check_depth(value: &Value) -> Result<usize, ConfigError> {
    let mut stack = vec![(value, String::new(), 0usize)];
    let mut nodes = 0usize;
    while let Some((v, pointer, depth)) = stack.pop() {
        nodes += 1;
        let children: Box<dyn Iterator<Item = (String, &Value)>> = match v {
            Value::Array(items) => {
                Box::new(items.iter().enumerate().map(|(i, v)| (i.to_string(), v)))
            }
            Value::Object(map) => Box::new(map.iter().map(|(k, v)| (escape_token(k), v))),
            _ => continue,
        };
        if depth >= MAX_DEPTH {
            return Err(ConfigError::new(
                pointer,
                format!("document is nested too deeply (the limit is {MAX_DEPTH} levels)"),
            ));
        }
        for (token, child) in children {
            stack.push((child, format!("{pointer}/{token}"), depth + 1));
        }
    }
    Ok(nodes)
}

/// Deserializes, and on error removes the offending node and retries, so that every type error
/// is reported, not just the first. Pointers refer to the original document.
fn deserialize_collecting(mut value: Value, nodes: usize) -> Result<ResolverConfig, ConfigErrors> {
    // Each round deserializes the whole document: bound the total work for huge documents.
    let max_rounds = (WORK_BUDGET_NODES / nodes.max(1)).clamp(10, MAX_ERRORS);
    let mut rounds = 0usize;
    // The shape check sees `key: null` members (unknown keys among them); deserialization
    // does not.
    let mut errors: Vec<ConfigError> = shape::check(&value);
    strip_null_members(&mut value);
    let mut removed = RemovedIndices::default();
    // Remove the misshapen nodes, last first so that array indices stay valid.
    let mut pointers: Vec<String> = errors.iter().map(|e| e.pointer.clone()).collect();
    pointers.sort_by_key(|p| std::cmp::Reverse(pointer_key(p)));
    for p in pointers {
        let was_array_item = matches!(parent_of(&value, &p), Some(Value::Array(_)));
        if remove_at(&mut value, &p) && was_array_item {
            removed.record(&p);
        }
    }
    loop {
        match serde_path_to_error::deserialize::<_, ResolverConfig>(&value) {
            Ok(config) if errors.is_empty() => return Ok(config),
            Ok(pruned) => {
                // Also report the semantic errors of what remains, except those about the
                // nodes already reported (removing a bad node can cause a semantic error).
                if let Err(semantic) = pruned.validate() {
                    for s in semantic.0 {
                        let original = removed.to_original(&value, &s.pointer);
                        if !errors.iter().any(|t| related(&t.pointer, &original)) {
                            errors.push(ConfigError::new(original, s.message));
                        }
                    }
                }
                errors.truncate(MAX_ERRORS);
                return Err(ConfigErrors(errors));
            }
            Err(e) => {
                let (pointer, message) = describe(&e);
                let original = removed.to_original(&value, &pointer);
                let done = errors
                    .iter()
                    .any(|x| x.pointer == original && x.message == message);
                if !done && !is_consequence(&errors, &original, &message) {
                    errors.push(ConfigError::new(original.clone(), message));
                }
                let was_array_item = matches!(parent_of(&value, &pointer), Some(Value::Array(_)));
                let progressed = !done && remove_at(&mut value, &pointer);
                rounds += 1;
                if !progressed {
                    return Err(ConfigErrors(errors));
                }
                if errors.len() >= MAX_ERRORS || rounds >= max_rounds {
                    errors.push(ConfigError::new(
                        "",
                        format!("{TOO_MANY}; stopped after the first {}", errors.len()),
                    ));
                    return Err(ConfigErrors(errors));
                }
                if was_array_item {
                    removed.record(&original);
                }
            }
        }
    }
}

/// True when one pointer is the other or an ancestor of it.
fn related(a: &str, b: &str) -> bool {
    let under =
        |x: &str, y: &str| x.len() > y.len() && x.starts_with(y) && x[y.len()..].starts_with('/');
    a == b || under(a, b) || under(b, a)
}

/// Sort key of a pointer that orders array indices numerically.
fn pointer_key(p: &str) -> Vec<(u64, String)> {
    p.split('/')
        .map(|t| match t.parse::<u64>() {
            Ok(n) => (n, String::new()),
            Err(_) => (u64::MAX, t.to_string()),
        })
        .collect()
}

/// True for "missing required key 'k'" at `pointer` when an error at `pointer/k` was already
/// reported (the key went missing because its bad value was removed).
fn is_consequence(errors: &[ConfigError], pointer: &str, message: &str) -> bool {
    let Some(key) = message
        .strip_prefix("missing required key '")
        .and_then(|r| r.strip_suffix('\''))
    else {
        return false;
    };
    let child = format!("{pointer}/{}", escape_token(key));
    errors
        .iter()
        .any(|e| e.pointer == child || e.pointer.starts_with(&format!("{child}/")))
}

/// Array elements removed during error collection, by the original pointer of their array.
#[derive(Default)]
struct RemovedIndices(HashMap<String, Vec<usize>>);

impl RemovedIndices {
    /// Records that the element at original pointer `original` was removed.
    fn record(&mut self, original: &str) {
        if let Some((array, idx)) = original.rsplit_once('/')
            && let Ok(i) = idx.parse::<usize>()
        {
            let list = self.0.entry(array.to_string()).or_default();
            list.push(i);
            list.sort_unstable();
        }
    }

    /// Translates a pointer into the current (pruned) document into one into the original.
    fn to_original(&self, current: &Value, pointer: &str) -> String {
        let mut original = String::new();
        let mut node = Some(current);
        for token in pointer.split('/').skip(1) {
            let is_array = matches!(node, Some(Value::Array(_)));
            node = node.and_then(|n| match n {
                Value::Array(items) => token.parse::<usize>().ok().and_then(|i| items.get(i)),
                Value::Object(map) => map.get(&unescape_token(token)),
                _ => None,
            });
            let translated = match (is_array, token.parse::<usize>()) {
                (true, Ok(mut i)) => {
                    if let Some(gone) = self.0.get(&original) {
                        for r in gone {
                            if *r <= i {
                                i += 1;
                            }
                        }
                    }
                    i.to_string()
                }
                _ => token.to_string(),
            };
            original.push('/');
            original.push_str(&translated);
        }
        original
    }
}

fn parent_of<'a>(root: &'a Value, pointer: &str) -> Option<&'a Value> {
    pointer
        .rsplit_once('/')
        .and_then(|(parent, _)| root.pointer(parent))
}

/// Pointer and message of a deserialization error; unknown fields point at the field itself.
fn describe(e: &serde_path_to_error::Error<serde_json::Error>) -> (String, String) {
    let mut pointer = String::new();
    for seg in e.path().iter() {
        use serde_path_to_error::Segment;
        match seg {
            Segment::Seq { index } => {
                pointer.push('/');
                pointer.push_str(&index.to_string());
            }
            Segment::Map { key } | Segment::Enum { variant: key } => {
                pointer.push('/');
                pointer.push_str(&escape_token(key));
            }
            Segment::Unknown => {}
        }
    }
    (pointer, humanize(&e.inner().to_string()))
}

/// Rewrites serde's wording into rule-naming messages.
fn humanize(raw: &str) -> String {
    let ticks = |s: &str| s.replace("` or `", ", ").replace('`', "");
    if let Some(rest) = raw.strip_prefix("unknown field `")
        && let Some((field, tail)) = rest.split_once('`')
    {
        return match tail.strip_prefix(", expected one of ") {
            Some(list) => format!("unknown key '{field}'; allowed keys: {}", ticks(list)),
            None => match tail.strip_prefix(", expected ") {
                Some(one) => format!("unknown key '{field}'; allowed keys: {}", ticks(one)),
                None => format!("unknown key '{field}'; no keys are allowed here"),
            },
        };
    }
    if let Some(rest) = raw.strip_prefix("unknown variant `")
        && let Some((variant, tail)) = rest.split_once('`')
    {
        let allowed = tail
            .strip_prefix(", expected one of ")
            .or_else(|| tail.strip_prefix(", expected "))
            .map(ticks)
            .unwrap_or_default();
        return format!("must be one of {allowed}; got '{variant}'");
    }
    if let Some(rest) = raw.strip_prefix("missing field `")
        && let Some((field, _)) = rest.split_once('`')
    {
        return format!("missing required key '{field}'");
    }
    if let Some(rest) = raw.strip_prefix("invalid type: ") {
        let rest = [
            ("expected u8", "expected an integer"),
            ("expected u16", "expected an integer"),
            ("expected u32", "expected an integer"),
            ("expected u64", "expected an integer"),
            ("expected i128", "expected an integer"),
            ("expected f64", "expected a number"),
        ]
        .iter()
        .fold(rest.to_string(), |acc, (from, to)| acc.replace(from, to));
        // "expected struct CacheConfig" -> "expected a mapping"; "map" -> "mapping".
        let rest = match rest.split_once("expected struct ") {
            Some((head, _)) => format!("{head}expected a mapping"),
            None => rest,
        };
        let rest = match rest.strip_prefix("map,") {
            Some(tail) => format!("mapping,{tail}"),
            None => rest,
        };
        return format!("wrong type: {rest}");
    }
    if let Some(rest) = raw.strip_prefix("invalid value: ") {
        let rest = ["u8", "u16", "u32", "u64"]
            .iter()
            .fold(rest.to_string(), |acc, t| {
                acc.replace(&format!("expected {t}"), "expected a non-negative integer")
            });
        return format!("invalid value: {rest}");
    }
    raw.to_string()
}

/// Escapes one JSON pointer reference token (RFC 6901).
pub(crate) fn escape_token(s: &str) -> String {
    s.replace('~', "~0").replace('/', "~1")
}

fn unescape_token(s: &str) -> String {
    s.replace("~1", "/").replace("~0", "~")
}

/// Removes the node at `pointer`; false when there is nothing to remove.
fn remove_at(root: &mut Value, pointer: &str) -> bool {
    let Some((parent, last)) = pointer.rsplit_once('/') else {
        return false;
    };
    let last = unescape_token(last);
    match root.pointer_mut(parent) {
        Some(Value::Object(map)) => map.remove(&last).is_some(),
        Some(Value::Array(items)) => match last.parse::<usize>() {
            Ok(i) if i < items.len() => {
                items.remove(i);
                true
            }
            _ => false,
        },
        _ => false,
    }
}
