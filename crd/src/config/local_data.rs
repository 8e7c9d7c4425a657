//! `local-data`: static records, hosts files, rules and RPZ.

use std::collections::BTreeMap;
use std::net::IpAddr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::types::{
    AutoBool, DomainName, FilePath, IdPattern, ListOrItem, TimeUnit, null_as_default, unique_keys,
};

/// What a rule does with the whole subtree under its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RuleSubtree {
    /// Answer NODATA for the subtree (empty zone).
    Empty,
    /// Answer NXDOMAIN for the subtree.
    Nxdomain,
    /// Answer every name in the subtree with the rule's addresses.
    Redirect,
}

/// An advanced local-data rule.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct LocalDataRule {
    /// Hostname(s) the rule applies to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<ListOrItem<DomainName>>,
    /// Treat the name(s) as a whole subtree.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subtree: Option<RuleSubtree>,
    /// Address(es) to answer with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<ListOrItem<IpAddr>>,
    /// File(s) in /etc/hosts format.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<ListOrItem<FilePath>>,
    /// Records in DNS zone file format.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub records: Option<String>,
    /// Tags linking the rule to views (Knot Resolver 6.x only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<IdPattern>>,
    /// TTL of the answers (default: local-data ttl).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl: Option<TimeUnit>,
    /// Synthesize NODATA for other types of matching names.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nodata: Option<bool>,
}

/// What an RPZ logs when it matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RpzLog {
    /// Log the client IP address.
    Ip,
    /// Log the query name.
    Name,
}

/// A Response Policy Zone.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RpzConfig {
    /// Path to the RPZ zone file.
    pub file: FilePath,
    /// Reload the file when it changes ('auto' = yes where supported; kresd 5.x watches RPZ files itself).
    #[serde(default)]
    pub watchdog: AutoBool,
    /// Tags linking the RPZ to views (Knot Resolver 6.x only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<IdPattern>>,
    /// What to log when the RPZ matches (Knot Resolver 6.x only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<Vec<RpzLog>>,
}

/// Local data: forward (A/AAAA) and reverse (PTR) records, rules and RPZ.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct LocalDataConfig {
    /// Default TTL of local data.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl: Option<TimeUnit>,
    /// Synthesize NODATA for other types of matching names.
    pub nodata: bool,
    /// Hostname to address(es) pairs.
    #[serde(
        deserialize_with = "unique_keys",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub addresses: BTreeMap<DomainName, ListOrItem<IpAddr>>,
    /// Files in /etc/hosts format.
    #[serde(
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub addresses_files: Vec<FilePath>,
    /// Records in DNS zone file format.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub records: Option<String>,
    /// Advanced rules.
    #[serde(
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub rules: Vec<LocalDataRule>,
    /// Response Policy Zones.
    #[serde(
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub rpz: Vec<RpzConfig>,
}

impl Default for LocalDataConfig {
    fn default() -> Self {
        Self {
            ttl: None,
            nodata: true,
            addresses: BTreeMap::new(),
            addresses_files: Vec::new(),
            records: None,
            rules: Vec::new(),
            rpz: Vec::new(),
        }
    }
}
