//! `dnssec`: validation and trust anchors.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::types::{DomainName, FilePath, null_as_default};

/// A zone file holding trust anchors.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct TrustAnchorFile {
    /// Path to the zone file with the trust anchors.
    pub file: FilePath,
    /// Do not update the file (RFC 5011 key rollover).
    #[serde(default)]
    pub read_only: bool,
}

/// DNSSEC configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct DnssecConfig {
    /// Validate DNSSEC.
    pub enable: bool,
    /// Log each DNSSEC validation failure (at logging level notice or more verbose).
    pub log_bogus: bool,
    /// Root key sentinel (RFC 8509).
    pub sentinel: bool,
    /// Signal trust anchor knowledge with key tag queries (RFC 8145 section 5).
    pub signal_query: bool,
    /// Trust anchors as DS or DNSKEY records in zone file format.
    #[serde(
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub trust_anchors: Vec<String>,
    /// Zone files with trust anchors.
    #[serde(
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub trust_anchors_files: Vec<TrustAnchorFile>,
    /// Domain names under which DNSSEC validation is disabled (RFC 7646).
    #[serde(
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub negative_trust_anchors: Vec<DomainName>,
}

impl Default for DnssecConfig {
    fn default() -> Self {
        Self {
            enable: true,
            log_bogus: false,
            sentinel: true,
            signal_query: true,
            trust_anchors: Vec::new(),
            trust_anchors_files: Vec::new(),
            negative_trust_anchors: Vec::new(),
        }
    }
}

/// The owner name of a trust anchor in presentation format (its first token), lower-cased and
/// absolute (`A.test DS ...` -> `a.test.`).
pub fn trust_anchor_owner(ta: &str) -> Option<String> {
    ta.split_whitespace().next().map(|o| {
        let o = o.to_ascii_lowercase();
        if o.ends_with('.') { o } else { format!("{o}.") }
    })
}
