//! Editing the configuration document: ETags, JSON pointers (RFC 6901), JSON Patch (RFC 6902)
//! and request body decoding (JSON or YAML).
//!
//! Edits are bounded: a JSON Patch has at most [`MAX_PATCH_OPS`] operations, and no edit may make
//! the document's compact JSON larger than the datamodel's input limit
//! ([`kres_crd::config::MAX_INPUT_BYTES`], 4 MiB; or the document's own size if it already is
//! larger). A patch is checked before each operation, so `copy` of the whole document onto
//! itself stops at the first operation that would cross the limit without building it.

use json_patch::{Patch, PatchOperation};
use kres_crd::config::MAX_INPUT_BYTES;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Most operations in one JSON Patch (`413` above). A patch is applied in one request, each
/// operation costs up to a copy of the (at most 4 MiB) document: this bounds a request's CPU time.
pub const MAX_PATCH_OPS: usize = 1000;

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
    /// A JSON Patch operation failed (422); `index` is its position in the patch.
    #[error("JSON Patch operation {index} failed: {message}")]
    Patch {
        /// Index of the failed operation (its pointer in the patch document is `/{index}`).
        index: usize,
        /// What failed.
        message: String,
    },
    /// The JSON Patch has more than [`MAX_PATCH_OPS`] operations (413).
    #[error("a JSON Patch may have at most {MAX_PATCH_OPS} operations; this one has {count}")]
    TooManyOps {
        /// Operations in the patch.
        count: usize,
    },
    /// The edit would make the document larger than `limit` bytes of JSON (422). `pointer` is the
    /// failing patch operation (`/3`, into the patch) or the URL pointer of a `PUT`.
    #[error(
        "{pointer}: the configuration would be larger than {limit} bytes of JSON, the limit for a config"
    )]
    TooLarge {
        /// Patch operation (`/{index}`) or URL pointer.
        pointer: String,
        /// Limit in bytes.
        limit: usize,
    },
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
    /// `application/json`.
    Json,
    /// `application/yaml`, `application/x-yaml`, `text/yaml`.
    Yaml,
    /// `application/json-patch+json`.
    JsonPatch,
}

/// Which format a `Content-Type` header names (none: an error, see [`super::guard`]).
pub fn body_format(content_type: Option<&str>) -> Result<BodyFormat, DocError> {
    let Some(ct) = content_type else {
        return Err(DocError::UnsupportedMediaType("none".into()));
    };
    let media = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match media.as_str() {
        "application/json" => Ok(BodyFormat::Json),
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
    let (_, limit) = size_and_limit(doc);
    if json_len_within(&new, limit).is_none() {
        return Err(DocError::TooLarge {
            pointer: pointer.to_owned(),
            limit,
        });
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

/// Decode a JSON Patch document, refusing more than [`MAX_PATCH_OPS`] operations before
/// decoding them.
pub fn parse_patch(patch_doc: Value) -> Result<Patch, DocError> {
    if let Some(count) = patch_doc.as_array().map(Vec::len)
        && count > MAX_PATCH_OPS
    {
        return Err(DocError::TooManyOps { count });
    }
    serde_json::from_value(patch_doc).map_err(|e| DocError::Parse {
        format: "JSON Patch",
        message: e.to_string(),
    })
}

/// Apply an RFC 6902 patch to the value at `pointer` (operation paths are relative to it), one
/// operation at a time, refusing (before applying it) the first operation after which the whole
/// document could be larger than the size limit. Atomic: on any error nothing is returned.
pub fn patch(doc: &Value, pointer: &str, ops: &Patch) -> Result<Value, DocError> {
    if ops.0.len() > MAX_PATCH_OPS {
        return Err(DocError::TooManyOps { count: ops.0.len() });
    }
    let (whole, limit) = size_and_limit(doc);
    let mut new = doc.clone();
    let target = new
        .pointer_mut(pointer)
        .ok_or_else(|| DocError::NotFound(pointer.to_owned()))?;
    // The rest of the document does not change: bound the target to what is left of the limit.
    let start = json_len_within(target, limit).unwrap_or(limit);
    let room = limit - (whole - start);
    let mut size = start;
    for (index, op) in ops.0.iter().enumerate() {
        let too_large = || DocError::TooLarge {
            pointer: format!("/{index}"),
            limit,
        };
        let grown = match growth(target, op, room.saturating_sub(size)) {
            Some(g) if size + g <= room => size + g,
            // `size` is an upper bound (removals are not subtracted): measure before refusing.
            _ => {
                size = json_len_within(target, room).ok_or_else(too_large)?;
                growth(target, op, room - size)
                    .map(|g| size + g)
                    .filter(|s| *s <= room)
                    .ok_or_else(too_large)?
            }
        };
        // Applied to a private copy, so no undo log (`patch` would keep every replaced value).
        json_patch::patch_unsafe(target, std::slice::from_ref(op)).map_err(|e| {
            DocError::Patch {
                index,
                message: format!("at path '{}': {}", e.path, e.kind),
            }
        })?;
        size = grown;
    }
    if !new.is_object() {
        return Err(DocError::NotAnObject);
    }
    Ok(new)
}

/// The JSON size of `doc` and the size limit for its edits: the datamodel's input limit, or
/// `doc`'s own size if it is already larger (canonical JSON with defaults can exceed the YAML it
/// came from).
fn size_and_limit(doc: &Value) -> (usize, usize) {
    match json_len_within(doc, MAX_INPUT_BYTES) {
        Some(size) => (size, MAX_INPUT_BYTES),
        None => {
            let size = json_len_within(doc, usize::MAX).unwrap_or(MAX_INPUT_BYTES);
            (size, size)
        }
    }
}

/// Upper bound of how many bytes `op` adds to the compact JSON of `target`; `None` when that is
/// more than `room` (measuring stops there, so a huge value costs at most `room` bytes of work).
fn growth(target: &Value, op: &PatchOperation, room: usize) -> Option<usize> {
    // A new member costs its escaped key (at most 6 bytes per byte), quotes, colon and comma.
    let member = |path: &str| 6 * path.len() + 4;
    // Bytes of the value a replacement removes (0 when nothing is replaced).
    let replaced = |path: &str, object_member_only: bool| {
        let in_object = || {
            path.rfind('/')
                .and_then(|i| target.pointer(&path[..i]))
                .is_some_and(Value::is_object)
        };
        match target.pointer(path) {
            Some(old) if !object_member_only || in_object() => {
                json_len_within(old, usize::MAX).unwrap_or(0)
            }
            _ => 0,
        }
    };
    let written = |value: &Value, old: usize, extra: usize| {
        json_len_within(value, room.saturating_add(old)).map(|n| (n + extra).saturating_sub(old))
    };
    let g = match op {
        PatchOperation::Add(o) => {
            let path = o.path.as_str();
            // `add` onto an existing object member replaces it; into an array it inserts.
            let old = replaced(path, true);
            written(&o.value, old, if old > 0 { 0 } else { member(path) })?
        }
        PatchOperation::Replace(o) => written(&o.value, replaced(o.path.as_str(), false), 0)?,
        PatchOperation::Copy(o) => match target.pointer(o.from.as_str()) {
            Some(v) => json_len_within(v, room)? + member(o.path.as_str()),
            // Fails when applied.
            None => 0,
        },
        PatchOperation::Move(o) => member(o.path.as_str()),
        PatchOperation::Remove(_) | PatchOperation::Test(_) => 0,
    };
    (g <= room).then_some(g)
}

/// Length of `value`'s compact JSON if it is at most `cap` bytes, else `None`; serialisation
/// stops as soon as it passes `cap`.
pub fn json_len_within(value: &Value, cap: usize) -> Option<usize> {
    struct Counter {
        len: usize,
        cap: usize,
    }
    impl std::io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.len = self.len.saturating_add(buf.len());
            if self.len > self.cap {
                return Err(std::io::Error::other("over the cap"));
            }
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter { len: 0, cap };
    serde_json::to_writer(&mut counter, value).ok()?;
    Some(counter.len)
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
        assert!(matches!(
            body_format(None),
            Err(DocError::UnsupportedMediaType(_))
        ));
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

    fn patched(doc: &Value, pointer: &str, ops: Value) -> Result<Value, DocError> {
        patch(doc, pointer, &parse_patch(ops)?)
    }

    #[test]
    fn json_patch_relative_to_pointer() {
        let doc = json!({"cache": {"size-max": "100M"}, "workers": 1});
        let d = patched(
            &doc,
            "",
            json!([{"op": "replace", "path": "/workers", "value": 2}]),
        )
        .unwrap();
        assert_eq!(d["workers"], 2);
        let d = patched(
            &doc,
            "/cache",
            json!([{"op": "add", "path": "/ttl-min", "value": "5s"}]),
        )
        .unwrap();
        assert_eq!(d["cache"]["ttl-min"], "5s");
        let e = patched(
            &doc,
            "",
            json!([
                {"op": "add", "path": "/a", "value": 1},
                {"op": "test", "path": "/workers", "value": 3}
            ]),
        )
        .unwrap_err();
        assert!(
            matches!(&e, DocError::Patch { index: 1, message } if message.contains("/workers")),
            "{e}"
        );
        assert!(matches!(
            patched(&doc, "", json!({"op": "bogus"})),
            Err(DocError::Parse { .. })
        ));
        assert!(matches!(
            patched(&doc, "/nope", json!([])),
            Err(DocError::NotFound(_))
        ));
    }

    /// A document of about `bytes` bytes of JSON.
    fn doc_of(bytes: usize) -> Value {
        json!({"workers": 1, "lua": {"script": "-".repeat(bytes)}})
    }

    #[test]
    fn json_len_within_counts_and_stops_at_the_cap() {
        let v = json!({"a": [1, "x\n"]});
        let n = serde_json::to_vec(&v).unwrap().len();
        assert_eq!(json_len_within(&v, n), Some(n));
        assert_eq!(json_len_within(&v, n - 1), None);
    }

    #[test]
    fn self_copy_stops_before_the_document_passes_the_limit() {
        // 18 copies of the whole document would be 2^18 times its size.
        let doc = doc_of(3000);
        let ops: Vec<Value> = (0..18)
            .map(|i| json!({"op": "copy", "from": "", "path": format!("/x{i}")}))
            .collect();
        let e = patched(&doc, "", Value::Array(ops)).unwrap_err();
        let DocError::TooLarge { pointer, limit } = &e else {
            panic!("{e}")
        };
        assert_eq!(*limit, MAX_INPUT_BYTES);
        // 3 KB doubles to 3 MiB after op 9 (/9 = 10th op); the 11th op (/10) would pass 4 MiB.
        assert_eq!(pointer, "/10", "{e}");
        assert!(e.to_string().contains("4194304 bytes"), "{e}");
    }

    #[test]
    fn patch_op_count_is_bounded() {
        let doc = doc_of(10);
        let op = json!({"op": "replace", "path": "/workers", "value": 2});
        let ok = Value::Array(vec![op.clone(); MAX_PATCH_OPS]);
        assert_eq!(patched(&doc, "", ok).unwrap()["workers"], 2);
        let too_many = Value::Array(vec![op; MAX_PATCH_OPS + 1]);
        assert!(matches!(
            patched(&doc, "", too_many),
            Err(DocError::TooManyOps { count }) if count == MAX_PATCH_OPS + 1
        ));
    }

    #[test]
    fn removals_make_room_again() {
        // 3 MiB: adding 2 MiB is refused, removing first and then adding fits.
        let doc = doc_of(3 * 1024 * 1024);
        let big = "+".repeat(2 * 1024 * 1024);
        let add = json!({"op": "add", "path": "/nsid", "value": big});
        let e = patched(&doc, "", json!([add.clone()])).unwrap_err();
        assert!(
            matches!(&e, DocError::TooLarge { pointer, .. } if pointer == "/0"),
            "{e}"
        );
        let ops = json!([
            {"op": "add", "path": "/x", "value": 1},
            {"op": "remove", "path": "/lua"},
            add
        ]);
        let d = patched(&doc, "", ops).unwrap();
        assert!(d.get("lua").is_none() && d["nsid"].as_str().is_some());
        // Replacing a big value by one of the same size fits (the old one is not counted twice).
        let replace =
            json!([{"op": "replace", "path": "/lua/script", "value": "=".repeat(3 * 1024 * 1024)}]);
        assert!(patched(&doc, "", replace).is_ok());
        // A patch below a pointer counts the rest of the document.
        let e = patched(
            &doc,
            "/lua",
            json!([{"op": "add", "path": "/more", "value": "=".repeat(1024 * 1024 + 1)}]),
        )
        .unwrap_err();
        assert!(matches!(e, DocError::TooLarge { .. }), "{e}");
    }

    #[test]
    fn put_is_bounded_too() {
        let doc = doc_of(3 * 1024 * 1024 + 512 * 1024);
        let e = put(&doc, "/nsid", json!("x".repeat(1024 * 1024))).unwrap_err();
        assert!(
            matches!(&e, DocError::TooLarge { pointer, .. } if pointer == "/nsid"),
            "{e}"
        );
        assert!(put(&doc, "/nsid", json!("x")).is_ok());
    }
}
