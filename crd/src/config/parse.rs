//! Parsing: YAML/JSON text -> `serde_json::Value` -> typed config, collecting every error.

use serde_json::Value;

use super::ResolverConfig;
use super::error::{ConfigError, ConfigErrors};

/// Largest accepted input document.
pub const MAX_INPUT_BYTES: usize = 4 * 1024 * 1024;

/// Deepest accepted nesting of mappings and sequences.
pub const MAX_DEPTH: usize = 64;

/// Most errors reported for one document.
const MAX_ERRORS: usize = 100;

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
    let value: Value = serde_norway::from_str(text)
        .map_err(|e| ConfigErrors::single("", format!("invalid YAML: {e}")))?;
    from_json_value(value)
}

pub(crate) fn from_json_value(value: Value) -> Result<ResolverConfig, ConfigErrors> {
    let value = match value {
        Value::Null => Value::Object(Default::default()),
        v => v,
    };
    let config = deserialize_collecting(value)?;
    config.validate()?;
    Ok(config)
}

/// Deserializes, and on error removes the offending node and retries, so that every type error
/// is reported, not just the first.
fn deserialize_collecting(mut value: Value) -> Result<ResolverConfig, ConfigErrors> {
    let mut errors = Vec::new();
    loop {
        match serde_path_to_error::deserialize::<_, ResolverConfig>(&value) {
            Ok(config) if errors.is_empty() => return Ok(config),
            Ok(_) => return Err(ConfigErrors(errors)),
            Err(e) => {
                let (pointer, message) = describe(&e);
                let removed = remove_at(&mut value, &pointer);
                errors.push(ConfigError::new(pointer, message));
                if !removed || errors.len() >= MAX_ERRORS {
                    return Err(ConfigErrors(errors));
                }
            }
        }
    }
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
    let message = e.inner().to_string();
    if let Some(field) = unknown_field(&message) {
        pointer.push('/');
        pointer.push_str(&escape_token(field));
    }
    (pointer, message)
}

/// The field name of a serde "unknown field `x`" message.
fn unknown_field(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("unknown field `")?;
    rest.split_once('`').map(|(f, _)| f)
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
