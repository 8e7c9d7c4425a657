//! The OpenAPI 3.1 document of the API (`GET /openapi.json`, committed as docs/openapi.json),
//! generated from the route table ([`ROUTES`]) and the schemars schemas of the request and
//! response types, so it lists exactly the routes the server serves.

use std::sync::OnceLock;

use schemars::SchemaGenerator;
use schemars::generate::SchemaSettings;
use serde_json::{Map, Value, json};

use super::error::ErrorBody;
use super::guard;
use super::routes::{Body, ROUTES, Route, schema};

/// What an error code means (docs/api.md, "Errors").
pub fn error_description(status: u16) -> &'static str {
    match status {
        400 => "the body is not valid JSON / YAML / JSON Patch",
        403 => "a changing request with a foreign `Origin`",
        404 => "the JSON pointer names nothing (or its parent does not exist)",
        409 => {
            "a later change with a different desired state replaced this one before it converged"
        }
        412 => "`If-Match` does not match the current ETag, or `If-None-Match` does",
        413 => {
            "body larger than 4 MiB, or a JSON Patch of more than 1000 operations (pointer `/1000`)"
        }
        415 => {
            "no JSON or YAML (for PATCH also JSON Patch) `Content-Type`, also with an empty body"
        }
        422 => {
            "invalid (`errors`, each with its pointer and rule), or the fleet rejected it \
             (`rejected`, kresd's error line); nothing was applied"
        }
        503 => "the operator cannot do it now (no worker, shutting down)",
        504 => "not finished in time; a change goes on, follow it in `GET /status`",
        _ => "error",
    }
}

/// The document, generated once.
pub fn document() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(generate)
}

/// Generate the document.
pub fn generate() -> Value {
    let mut generator = SchemaSettings::draft2020_12()
        .with(|s| s.definitions_path = "#/components/schemas/".into())
        .into_generator();
    let error = schema::<ErrorBody>(&mut generator).to_value();
    let mut paths = Map::new();
    for route in ROUTES {
        let op = operation(route, &mut generator, &error);
        if let Value::Object(item) = paths
            .entry(route.path.to_owned())
            .or_insert_with(|| json!({}))
        {
            item.insert(route.method.as_str().to_ascii_lowercase(), op);
        }
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "kres-operator API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The HTTP API of kres-operator (docs/api.md). Every error is JSON \
                (`ErrorBody`); a path not listed answers 404, a method not listed for a path 405 \
                with an `Allow` header.",
        },
        "paths": paths,
        "components": {"schemas": generator.take_definitions(true)},
    })
}

/// `GET /v1/config/{pointer}` -> `getV1ConfigPointer`.
fn operation_id(route: &Route) -> String {
    let mut id = route.method.as_str().to_ascii_lowercase();
    for word in route.path.split(|c: char| !c.is_ascii_alphanumeric()) {
        let mut chars = word.chars();
        if let Some(first) = chars.next() {
            id.push(first.to_ascii_uppercase());
            id.extend(chars);
        }
    }
    id
}

fn operation(route: &Route, generator: &mut SchemaGenerator, error: &Value) -> Value {
    let mutating = guard::is_mutating(&route.method);
    let mut op = Map::new();
    op.insert("operationId".into(), json!(operation_id(route)));
    op.insert("summary".into(), json!(route.summary));
    if mutating {
        op.insert(
            "description".into(),
            json!(
                "A changing request: needs a JSON or YAML `Content-Type` (also without a body; \
                 DELETE needs none), refused with a foreign `Origin`."
            ),
        );
    }
    let mut parameters = Vec::new();
    if route.path.contains("{pointer}") {
        parameters.push(json!({
            "name": "pointer",
            "in": "path",
            "required": true,
            "description": "RFC 6901 JSON pointer into the configuration, percent-encoded; \
                its `/` separators stay in the path (`/v1/config/cache/size-max`)",
            "schema": {"type": "string"},
        }));
    }
    if route.dry_run {
        parameters.push(json!({
            "name": "dry-run",
            "in": "query",
            "required": false,
            "description": "`true`: validate and return the plan without applying it",
            "schema": {"type": "boolean"},
        }));
    }
    if route.path.starts_with("/v1/config") {
        let (name, what) = if mutating {
            (
                "If-Match",
                "apply only if the configuration's ETag is this one (412 otherwise)",
            )
        } else {
            (
                "If-None-Match",
                "304 if the configuration's ETag is this one",
            )
        };
        parameters.push(json!({
            "name": name,
            "in": "header",
            "required": false,
            "description": what,
            "schema": {"type": "string"},
        }));
    }
    if !parameters.is_empty() {
        op.insert("parameters".into(), Value::Array(parameters));
    }
    if let Some(body) = route.request {
        let schema = (body.schema)(generator).to_value();
        let media: &[&str] = if route.method == hyper::Method::PATCH {
            &[
                "application/json-patch+json",
                "application/json",
                "application/yaml",
            ]
        } else {
            &["application/json", "application/yaml"]
        };
        let content: Map<String, Value> = media
            .iter()
            .map(|m| ((*m).to_owned(), json!({"schema": schema})))
            .collect();
        op.insert(
            "requestBody".into(),
            json!({"required": body.required, "content": content}),
        );
    }
    let mut responses = Map::new();
    for status in route.answers.iter().map(|a| a.status) {
        let key = status.to_string();
        if responses.contains_key(&key) {
            continue;
        }
        // One response per status: several answers with one status are alternatives.
        let same: Vec<_> = route
            .answers
            .iter()
            .filter(|a| a.status == status)
            .collect();
        let description: Vec<&str> = same.iter().map(|a| a.description).collect();
        let mut r = Map::new();
        r.insert("description".into(), json!(description.join("; or ")));
        let mut json_schemas: Vec<Value> = Vec::new();
        for answer in &same {
            match answer.body {
                Body::Json(s) => json_schemas.push(s(generator).to_value()),
                Body::Text(media) => {
                    r.insert(
                        "content".into(),
                        json!({media: {"schema": {"type": "string"}}}),
                    );
                }
                Body::Empty => {}
            }
        }
        let schema = match json_schemas.len() {
            0 => None,
            1 => json_schemas.pop(),
            _ => Some(json!({"oneOf": json_schemas})),
        };
        if let Some(schema) = schema {
            r.insert(
                "content".into(),
                json!({"application/json": {"schema": schema}}),
            );
        }
        responses.insert(key, Value::Object(r));
    }
    let shared: &[u16] = if mutating { &[403, 415, 504] } else { &[504] };
    for status in route.errors.iter().chain(shared) {
        responses.entry(status.to_string()).or_insert_with(|| {
            json!({
                "description": error_description(*status),
                "content": {"application/json": {"schema": error}},
            })
        });
    }
    op.insert("responses".into(), Value::Object(responses));
    Value::Object(op)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file of the repository, by its path from the top.
    fn repo_file(rel: &str) -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(rel)
    }

    #[test]
    fn generated_openapi_is_current() {
        let mut text = serde_json::to_string_pretty(&generate()).unwrap();
        text.push('\n');
        let path = repo_file("docs/openapi.json");
        if std::env::var_os("KRES_UPDATE_GENERATED").is_some_and(|v| v == "1") {
            std::fs::write(&path, &text).unwrap();
            return;
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == text,
            "docs/openapi.json is out of date with the code; regenerate with \
             `KRES_UPDATE_GENERATED=1 cargo test -p kres-operator --lib generated` and commit it"
        );
    }

    #[test]
    fn every_route_is_documented_once_with_its_schemas_resolvable() {
        let doc = generate();
        let mut ids = std::collections::BTreeSet::new();
        for route in ROUTES {
            let op = &doc["paths"][route.path][route.method.as_str().to_ascii_lowercase()];
            assert!(op.is_object(), "{} {} missing", route.method, route.path);
            assert!(ids.insert(op["operationId"].as_str().unwrap().to_owned()));
        }
        let documented: usize = doc["paths"]
            .as_object()
            .unwrap()
            .values()
            .map(|item| item.as_object().unwrap().len())
            .sum();
        assert_eq!(documented, ROUTES.len());
        // Every `$ref` names a component.
        let text = doc.to_string();
        for part in text.split("\"$ref\":\"").skip(1) {
            let target = &part[..part.find('"').unwrap()];
            let name = target.strip_prefix("#/components/schemas/").unwrap();
            assert!(
                doc["components"]["schemas"].get(name).is_some(),
                "dangling {target}"
            );
        }
        assert_eq!(
            operation_id(&ROUTES[ROUTES.len() - 1]),
            "deleteV1ConfigPointer"
        );
    }
}
