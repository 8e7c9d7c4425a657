//! `cache`: the DNS cache, its garbage collector, prefill and prefetch.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::types::{
    DomainName, FilePath, IntNonNegative, IntPositive, Percent, SizeSuffix, SizeUnit, TimeSuffix,
    TimeUnit, null_as_default,
};

/// Default cache directory (upstream: `/var/cache/knot-resolver`).
pub const DEFAULT_CACHE_DIR: &str = "/var/cache/knot-resolver";

pub(crate) const fn time(value: u64, suffix: TimeSuffix) -> TimeUnit {
    TimeUnit { value, suffix }
}

/// Periodic import of zone data over HTTP into the cache.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct PrefillConfig {
    /// Origin of the imported data; only the root zone '.' is supported.
    pub origin: DomainName,
    /// URL of the zone data.
    pub url: String,
    /// Interval between refreshes of the imported data.
    #[serde(default = "default_refresh_interval")]
    pub refresh_interval: TimeUnit,
    /// CA certificate bundle used to authenticate the HTTPS connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<FilePath>,
}

fn default_refresh_interval() -> TimeUnit {
    time(1, TimeSuffix::D)
}

/// Cache garbage collector (kres-cache-gc) settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct GarbageCollectorConfig {
    /// Run the cache garbage collector.
    pub enable: bool,
    /// How often the garbage collector runs.
    pub interval: TimeUnit,
    /// Cache usage in percent that triggers a collection.
    pub threshold: Percent,
    /// Percent of the used cache to free.
    pub release: Percent,
    /// Maximum temporary memory for copied keys (0 = unlimited).
    pub temp_keys_space: SizeUnit,
    /// Maximum deleted records per read-write transaction (0 = unlimited).
    pub rw_deletes: IntNonNegative,
    /// Maximum read records per read-write transaction (0 = unlimited).
    pub rw_reads: IntNonNegative,
    /// Maximum duration of a read-write transaction (0 = unlimited).
    pub rw_duration: TimeUnit,
    /// Wait time between two read-write transactions.
    pub rw_delay: TimeUnit,
    /// Only report what would be deleted.
    pub dry_run: bool,
}

impl Default for GarbageCollectorConfig {
    fn default() -> Self {
        Self {
            enable: true,
            interval: time(1, TimeSuffix::S),
            threshold: Percent(80),
            release: Percent(10),
            temp_keys_space: SizeUnit {
                value: 0,
                suffix: SizeSuffix::M,
            },
            rw_deletes: IntNonNegative(100),
            rw_reads: IntNonNegative(200),
            rw_duration: time(0, TimeSuffix::Us),
            rw_delay: time(0, TimeSuffix::Us),
            dry_run: false,
        }
    }
}

/// Prediction of queries from usage patterns (kresd `predict` module).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct PredictionConfig {
    /// Enable prediction.
    pub enable: bool,
    /// Sampling window length.
    pub window: TimeUnit,
    /// Number of windows kept in memory.
    pub period: IntPositive,
}

impl Default for PredictionConfig {
    fn default() -> Self {
        Self {
            enable: false,
            window: time(15, TimeSuffix::M),
            period: IntPositive(24),
        }
    }
}

/// Keeping the cache hot by prefetching.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct PrefetchConfig {
    /// Prefetch expiring records.
    pub expiring: bool,
    /// Prefetch records predicted from usage patterns.
    pub prediction: PredictionConfig,
}

/// DNS resolver cache configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Cache directory.
    pub storage: FilePath,
    /// Maximum size of the cache.
    pub size_max: SizeUnit,
    /// Periodic cache garbage collection (kres-cache-gc).
    pub garbage_collector: GarbageCollectorConfig,
    /// Minimum TTL of cache entries.
    pub ttl_min: TimeUnit,
    /// Maximum TTL of cache entries; must be >= ttl-min.
    pub ttl_max: TimeUnit,
    /// How long a nameserver that gave no (useful) answer is ignored.
    pub ns_timeout: TimeUnit,
    /// Periodic import of zone data into the cache.
    #[serde(
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub prefill: Vec<PrefillConfig>,
    /// Prefetching of expiring and predicted records.
    pub prefetch: PrefetchConfig,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            storage: FilePath(DEFAULT_CACHE_DIR.into()),
            size_max: SizeUnit {
                value: 100,
                suffix: SizeSuffix::M,
            },
            garbage_collector: GarbageCollectorConfig::default(),
            ttl_min: time(5, TimeSuffix::S),
            ttl_max: time(1, TimeSuffix::D),
            ns_timeout: time(1000, TimeSuffix::Ms),
            prefill: Vec::new(),
            prefetch: PrefetchConfig::default(),
        }
    }
}
