//! `lua`: custom Lua passed to kresd as is.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::types::FilePath;

/// Custom Lua configuration. `script` is the only raw passthrough into kresd's config.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct LuaConfig {
    /// Ignore the declarative configuration for workers; use only `script` / `script-file`.
    pub script_only: bool,
    /// Lua appended to the worker configuration, verbatim (unchecked, raw passthrough).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub script: Option<String>,
    /// File with Lua for the workers, loaded verbatim.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub script_file: Option<FilePath>,
    /// Ignore the declarative configuration for the policy loader (Knot Resolver 6.x only).
    pub policy_script_only: bool,
    /// Lua for the policy loader (Knot Resolver 6.x only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy_script: Option<String>,
    /// File with Lua for the policy loader (Knot Resolver 6.x only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy_script_file: Option<FilePath>,
}
