//! Editing the configuration document: ETags, JSON pointers (RFC 6901), JSON Patch (RFC 6902)
//! and request body decoding (JSON or YAML).

use serde_json::Value;
use sha2::{Digest, Sha256};

/// Errors while decoding a body or editing the document. Each maps to one HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum DocError {
    /// Body is not valid JSON/YAML (400).
    #[error("cannot parse the request body as {format}: {message}")]
    Parse {
        /// `JSON`, `YAML` or `JSON Patch`.
        format: &'static str,
        /// Parser message (with line/column when the parser gives one).
        message: String,
    },
    /// Content type we do not read (415).
    #[error("unsupported content type '{0}': use application/json or application/yaml")]
    UnsupportedMediaType(String),
    /// URL pointer does not name an existing value (404), or its parent does not exist.
    #[error("no value at JSON pointer '{0}'")]
    NotFound(String),
    /// A JSON Patch operation failed (422).
    #[error("JSON Patch failed: {0}")]
    Patch(String),
    /// The edit would leave something other than an object as the document (422).
    #[error("the configuration document must be a JSON object")]
    NotAnObject,
}

/// Strong ETag (quoted) of a configuration document: SHA-256 of its canonical JSON (keys sorted,
/// no whitespace), first 16 bytes, hex.
pub fn etag_of(doc: &Value) -> String {
    // serde_json's Map is a BTreeMap (no `preserve_order`), so to_vec is canonical.
    let bytes = serde_json::to_vec(doc).unwrap_or_default();
    let digest = Sha256::digest(&bytes);
    format!("\"{}\"", hex::encode(&digest[..16]))
}

/// True if an `If-Match`/`If-None-Match` header value matches `etag` (`*` matches anything;
/// comma-separated lists allowed; weak tags `W/"..."` never match a strong comparison).
pub fn etag_matches(header: &str, etag: &str) -> bool {
    header
        .split(',')
        .map(str::trim)
        .any(|t| t == "*" || t == etag)
}

/// Body formats the API reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFormat {
    /// `application/json` (also the default when no Content-Type is given).
    Json,
    /// `application/yaml`, `application/x-yaml`, `text/yaml`.
    Yaml,
    /// `application/json-patch+json`.
    JsonPatch,
}

/// Which format a `Content-Type` header names.
pub fn body_format(content_type: Option<&str>) -> Result<BodyFormat, DocError> {
    let Some(ct) = content_type else {
        return Ok(BodyFormat::Json);
    };
    let media = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match media.as_str() {
        "" | "application/json" => Ok(BodyFormat::Json),
        "application/yaml" | "application/x-yaml" | "text/yaml" | "text/x-yaml" => {
            Ok(BodyFormat::Yaml)
        }
        "application/json-patch+json" => Ok(BodyFormat::JsonPatch),
        _ => Err(DocError::UnsupportedMediaType(ct.to_owned())),
    }
}

/// Decode a JSON or YAML body into a value.
pub fn parse_body(body: &[u8], format: BodyFormat) -> Result<Value, DocError> {
    match format {
        BodyFormat::Json | BodyFormat::JsonPatch => {
            serde_json::from_slice(body).map_err(|e| DocError::Parse {
                format: "JSON",
                message: e.to_string(),
            })
        }
        BodyFormat::Yaml => {
            let text = std::str::from_utf8(body).map_err(|e| DocError::Parse {
                format: "YAML",
                message: e.to_string(),
            })?;
            serde_norway::from_str(text).map_err(|e| DocError::Parse {
                format: "YAML",
                message: e.to_string(),
            })
        }
    }
}

/// Decode a URL path tail (`/cache/size-max`, percent-encoded) into a JSON pointer.
pub fn pointer_from_path(tail: &str) -> String {
    let tail = tail.trim_end_matches('/');
    percent_decode(tail)
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
            if let Ok(b) = u8::from_str_radix(hex, 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn unescape(token: &str) -> String {
    token.replace("~1", "/").replace("~0", "~")
}

/// Split a pointer into (parent pointer, last token). `None` for the root pointer.
fn split_last(pointer: &str) -> Option<(&str, String)> {
    let idx = pointer.rfind('/')?;
    Some((&pointer[..idx], unescape(&pointer[idx + 1..])))
}

/// The value at `pointer` (404 if absent).
pub fn get<'a>(doc: &'a Value, pointer: &str) -> Result<&'a Value, DocError> {
    doc.pointer(pointer)
        .ok_or_else(|| DocError::NotFound(pointer.to_owned()))
}

/// Replace (or create, in an existing object; or append with `-` to an existing array) the value
/// at `pointer`. The root pointer replaces the whole document.
pub fn put(doc: &Value, pointer: &str, value: Value) -> Result<Value, DocError> {
    let mut new = doc.clone();
    match split_last(pointer) {
        None => new = value,
        Some((parent, token)) => {
            let target = new
                .pointer_mut(parent)
                .ok_or_else(|| DocError::NotFound(parent.to_owned()))?;
            match target {
                Value::Object(map) => {
                    map.insert(token, value);
                }
                Value::Array(items) => {
                    if token == "-" {
                        items.push(value);
                    } else {
                        let idx: usize = token
                            .parse()
                            .map_err(|_| DocError::NotFound(pointer.to_owned()))?;
                        let slot = items
                            .get_mut(idx)
                            .ok_or_else(|| DocError::NotFound(pointer.to_owned()))?;
                        *slot = value;
                    }
                }
                _ => return Err(DocError::NotFound(pointer.to_owned())),
            }
        }
    }
    if !new.is_object() {
        return Err(DocError::NotAnObject);
    }
    Ok(new)
}

/// Remove the value at `pointer` (a removed key falls back to its default). 404 if absent.
pub fn delete(doc: &Value, pointer: &str) -> Result<Value, DocError> {
    let mut new = doc.clone();
    let (parent, token) =
        split_last(pointer).ok_or_else(|| DocError::NotFound(pointer.to_owned()))?;
    let target = new
        .pointer_mut(parent)
        .ok_or_else(|| DocError::NotFound(pointer.to_owned()))?;
    let removed = match target {
        Value::Object(map) => map.remove(&token).is_some(),
        Value::Array(items) => match token.parse::<usize>() {
            Ok(i) if i < items.len() => {
                items.remove(i);
                true
            }
            _ => false,
        },
        _ => false,
    };
    if !removed {
        return Err(DocError::NotFound(pointer.to_owned()));
    }
    Ok(new)
}

/// Apply an RFC 6902 patch to the value at `pointer` (operation paths are relative to it).
pub fn patch(doc: &Value, pointer: &str, patch_doc: Value) -> Result<Value, DocError> {
    let ops: json_patch::Patch =
        serde_json::from_value(patch_doc).map_err(|e| DocError::Parse {
            format: "JSON Patch",
            message: e.to_string(),
        })?;
    let mut new = doc.clone();
    let target = new
        .pointer_mut(pointer)
        .ok_or_else(|| DocError::NotFound(pointer.to_owned()))?;
    json_patch::patch(target, &ops).map_err(|e| DocError::Patch(e.to_string()))?;
    if !new.is_object() {
        return Err(DocError::NotAnObject);
    }
    Ok(new)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn etag_is_stable_and_content_sensitive() {
        let a = json!({"b": 1, "a": [1, 2]});
        let b: Value = serde_json::from_str(r#"{"a":[1,2],"b":1}"#).unwrap();
        assert_eq!(etag_of(&a), etag_of(&b));
        assert_ne!(etag_of(&a), etag_of(&json!({"b": 2, "a": [1, 2]})));
        assert!(etag_of(&a).starts_with('"') && etag_of(&a).len() == 34);
    }

    #[test]
    fn etag_match_rules() {
        assert!(etag_matches("*", "\"x\""));
        assert!(etag_matches("\"y\", \"x\"", "\"x\""));
        assert!(!etag_matches("W/\"x\"", "\"x\""));
        assert!(!etag_matches("\"y\"", "\"x\""));
    }

    #[test]
    fn content_types() {
        assert_eq!(body_format(None).unwrap(), BodyFormat::Json);
        assert_eq!(
            body_format(Some("application/json; charset=utf-8")).unwrap(),
            BodyFormat::Json
        );
        assert_eq!(
            body_format(Some("application/yaml")).unwrap(),
            BodyFormat::Yaml
        );
        assert!(matches!(
            body_format(Some("text/plain")),
            Err(DocError::UnsupportedMediaType(_))
        ));
    }

    #[test]
    fn yaml_and_json_bodies() {
        let v = parse_body(b"workers: 2\ncache:\n  size-max: 10M\n", BodyFormat::Yaml).unwrap();
        assert_eq!(v, json!({"workers": 2, "cache": {"size-max": "10M"}}));
        assert!(matches!(
            parse_body(b"{nope", BodyFormat::Json),
            Err(DocError::Parse { .. })
        ));
        assert!(matches!(
            parse_body(b"a: [", BodyFormat::Yaml),
            Err(DocError::Parse { .. })
        ));
    }

    #[test]
    fn pointers_from_paths() {
        assert_eq!(pointer_from_path(""), "");
        assert_eq!(pointer_from_path("/"), "");
        assert_eq!(pointer_from_path("/cache/size-max"), "/cache/size-max");
        assert_eq!(pointer_from_path("/a%20b/c~1d"), "/a b/c~1d");
        assert_eq!(pointer_from_path("/bad%zz%4"), "/bad%zz%4");
    }

    #[test]
    fn get_put_delete() {
        let doc = json!({"cache": {"size-max": "100M"}, "list": [1, 2], "a/b": 1});
        assert_eq!(get(&doc, "/cache/size-max").unwrap(), "100M");
        assert_eq!(get(&doc, "/a~1b").unwrap(), 1);
        assert!(matches!(get(&doc, "/nope"), Err(DocError::NotFound(_))));

        let d = put(&doc, "/cache/size-max", json!("5M")).unwrap();
        assert_eq!(d["cache"]["size-max"], "5M");
        let d = put(&doc, "/cache/ttl-max", json!("1d")).unwrap();
        assert_eq!(d["cache"]["ttl-max"], "1d");
        let d = put(&doc, "/list/-", json!(3)).unwrap();
        assert_eq!(d["list"], json!([1, 2, 3]));
        let d = put(&doc, "/list/0", json!(9)).unwrap();
        assert_eq!(d["list"], json!([9, 2]));
        assert!(matches!(
            put(&doc, "/list/7", json!(1)),
            Err(DocError::NotFound(_))
        ));
        assert!(matches!(
            put(&doc, "/no/such", json!(1)),
            Err(DocError::NotFound(_))
        ));
        assert!(matches!(
            put(&doc, "", json!(1)),
            Err(DocError::NotAnObject)
        ));

        let d = delete(&doc, "/cache/size-max").unwrap();
        assert_eq!(d["cache"], json!({}));
        let d = delete(&doc, "/list/0").unwrap();
        assert_eq!(d["list"], json!([2]));
        assert!(matches!(
            delete(&doc, "/cache/nope"),
            Err(DocError::NotFound(_))
        ));
        assert!(matches!(delete(&doc, ""), Err(DocError::NotFound(_))));
    }

    #[test]
    fn json_patch_relative_to_pointer() {
        let doc = json!({"cache": {"size-max": "100M"}, "workers": 1});
        let d = patch(
            &doc,
            "",
            json!([{"op": "replace", "path": "/workers", "value": 2}]),
        )
        .unwrap();
        assert_eq!(d["workers"], 2);
        let d = patch(
            &doc,
            "/cache",
            json!([{"op": "add", "path": "/ttl-min", "value": "5s"}]),
        )
        .unwrap();
        assert_eq!(d["cache"]["ttl-min"], "5s");
        assert!(matches!(
            patch(
                &doc,
                "",
                json!([{"op": "test", "path": "/workers", "value": 3}])
            ),
            Err(DocError::Patch(_))
        ));
        assert!(matches!(
            patch(&doc, "", json!({"op": "bogus"})),
            Err(DocError::Parse { .. })
        ));
        assert!(matches!(
            patch(&doc, "/nope", json!([])),
            Err(DocError::NotFound(_))
        ));
    }
}
