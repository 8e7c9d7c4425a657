//! `options`: fine-tuning of resolver behaviour.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Glue record strictness.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum GlueChecking {
    /// Accept in-bailiwick glue (default).
    #[default]
    Normal,
    /// Accept glue only from the delegating zone itself.
    Strict,
    /// Accept all glue.
    Permissive,
}

/// Fine-tuning global parameters of DNS resolver operation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct OptionsConfig {
    /// Glue records strictness checking level.
    pub glue_checking: GlueChecking,
    /// QNAME minimisation: send minimum information in recursive queries (privacy).
    pub minimize: bool,
    /// Permit queries to loopback addresses.
    pub query_loopback: bool,
    /// Reorder records within an RRset each time it is served from cache.
    pub reorder_rrset: bool,
    /// Randomize query character case (0x20).
    pub query_case_randomization: bool,
    /// Prime the cache with root NS (RFC 8109).
    pub priming: bool,
    /// Protection against DNS rebinding attacks.
    pub rebinding_protection: bool,
    /// Answer queries without the RD bit with REFUSED.
    pub refuse_no_rd: bool,
    /// Detect jumps of the system time against DNSSEC signature validity of '. NS'.
    pub time_jump_detection: bool,
    /// Workarounds for known DNS protocol violators.
    pub violators_workarounds: bool,
    /// Serve expired records when upstream servers cannot be reached.
    pub serve_stale: bool,
}

impl Default for OptionsConfig {
    fn default() -> Self {
        Self {
            glue_checking: GlueChecking::Normal,
            minimize: true,
            query_loopback: false,
            reorder_rrset: true,
            query_case_randomization: true,
            priming: true,
            rebinding_protection: false,
            refuse_no_rd: true,
            time_jump_detection: true,
            violators_workarounds: false,
            serve_stale: false,
        }
    }
}
