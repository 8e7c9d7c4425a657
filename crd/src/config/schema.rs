//! The JSON Schema of `config.yaml`, generated from the types.

use super::ResolverConfig;

/// The JSON Schema (draft 2020-12) of [`ResolverConfig`]; single source for `kresctl schema`,
/// `GET /schema`, the CRD's `spec.config` and the docs.
pub fn json_schema() -> serde_json::Value {
    let schema = schemars::schema_for!(ResolverConfig);
    schema.to_value()
}
