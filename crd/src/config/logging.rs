//! `logging`: log level, targets, debug groups, dnstap.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::types::SocketPath;

/// Log verbosity.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Default,
    Serialize,
    Deserialize,
    JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum LogLevel {
    /// Critical.
    Crit,
    /// Errors.
    Err,
    /// Warnings.
    Warning,
    /// Notices (default).
    #[default]
    Notice,
    /// Informational.
    Info,
    /// Debug.
    Debug,
}

impl LogLevel {
    /// The name used in config.yaml (and kresd's `log_level()`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Crit => "crit",
            Self::Err => "err",
            Self::Warning => "warning",
            Self::Notice => "notice",
            Self::Info => "info",
            Self::Debug => "debug",
        }
    }
}

/// Where logs go.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum LogTarget {
    /// syslog.
    Syslog,
    /// Standard error.
    Stderr,
    /// Standard output.
    Stdout,
    /// `$KRES_LOGGING_TARGET`, else stdout (default).
    #[default]
    FromEnv,
}

/// A logging group whose level is raised to debug.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
pub enum LogGroup {
    /// Process group `manager`.
    #[serde(rename = "manager")]
    Manager,
    /// Process group `supervisord`.
    #[serde(rename = "supervisord")]
    Supervisord,
    /// Process group `policy-loader`.
    #[serde(rename = "policy-loader")]
    PolicyLoader,
    /// Process group `kresd`.
    #[serde(rename = "kresd")]
    Kresd,
    /// Process group `cache-gc`.
    #[serde(rename = "cache-gc")]
    CacheGc,
    /// Manager group `files`.
    #[serde(rename = "files")]
    Files,
    /// Manager group `metrics`.
    #[serde(rename = "metrics")]
    Metrics,
    /// Manager group `server`.
    #[serde(rename = "server")]
    Server,
    /// kresd log group `system`.
    #[serde(rename = "system")]
    System,
    /// kresd log group `cache`.
    #[serde(rename = "cache")]
    Cache,
    /// kresd log group `io`.
    #[serde(rename = "io")]
    Io,
    /// kresd log group `net`.
    #[serde(rename = "net")]
    Net,
    /// kresd log group `ta`.
    #[serde(rename = "ta")]
    Ta,
    /// kresd log group `tasent`.
    #[serde(rename = "tasent")]
    Tasent,
    /// kresd log group `tasign`.
    #[serde(rename = "tasign")]
    Tasign,
    /// kresd log group `taupd`.
    #[serde(rename = "taupd")]
    Taupd,
    /// kresd log group `tls`.
    #[serde(rename = "tls")]
    Tls,
    /// kresd log group `gnutls`.
    #[serde(rename = "gnutls")]
    Gnutls,
    /// kresd log group `tls_cl`.
    #[serde(rename = "tls_cl")]
    TlsCl,
    /// kresd log group `xdp`.
    #[serde(rename = "xdp")]
    Xdp,
    /// kresd log group `doh`.
    #[serde(rename = "doh")]
    Doh,
    /// kresd log group `dnssec`.
    #[serde(rename = "dnssec")]
    Dnssec,
    /// kresd log group `hint`.
    #[serde(rename = "hint")]
    Hint,
    /// kresd log group `plan`.
    #[serde(rename = "plan")]
    Plan,
    /// kresd log group `iterat`.
    #[serde(rename = "iterat")]
    Iterat,
    /// kresd log group `valdtr`.
    #[serde(rename = "valdtr")]
    Valdtr,
    /// kresd log group `resolv`.
    #[serde(rename = "resolv")]
    Resolv,
    /// kresd log group `select`.
    #[serde(rename = "select")]
    Select,
    /// kresd log group `zoncut`.
    #[serde(rename = "zoncut")]
    Zoncut,
    /// kresd log group `cookie`.
    #[serde(rename = "cookie")]
    Cookie,
    /// kresd log group `statis`.
    #[serde(rename = "statis")]
    Statis,
    /// kresd log group `rebind`.
    #[serde(rename = "rebind")]
    Rebind,
    /// kresd log group `worker`.
    #[serde(rename = "worker")]
    Worker,
    /// kresd log group `policy`.
    #[serde(rename = "policy")]
    Policy,
    /// kresd log group `daf`.
    #[serde(rename = "daf")]
    Daf,
    /// kresd log group `timejm`.
    #[serde(rename = "timejm")]
    Timejm,
    /// kresd log group `timesk`.
    #[serde(rename = "timesk")]
    Timesk,
    /// kresd log group `graphi`.
    #[serde(rename = "graphi")]
    Graphi,
    /// kresd log group `prefil`.
    #[serde(rename = "prefil")]
    Prefil,
    /// kresd log group `primin`.
    #[serde(rename = "primin")]
    Primin,
    /// kresd log group `srvstl`.
    #[serde(rename = "srvstl")]
    Srvstl,
    /// kresd log group `wtchdg`.
    #[serde(rename = "wtchdg")]
    Wtchdg,
    /// kresd log group `nsid`.
    #[serde(rename = "nsid")]
    Nsid,
    /// kresd log group `dnstap`.
    #[serde(rename = "dnstap")]
    Dnstap,
    /// kresd log group `tests`.
    #[serde(rename = "tests")]
    Tests,
    /// kresd log group `dotaut`.
    #[serde(rename = "dotaut")]
    Dotaut,
    /// kresd log group `http`.
    #[serde(rename = "http")]
    Http,
    /// kresd log group `contrl`.
    #[serde(rename = "contrl")]
    Contrl,
    /// kresd log group `module`.
    #[serde(rename = "module")]
    Module,
    /// kresd log group `devel`.
    #[serde(rename = "devel")]
    Devel,
    /// kresd log group `renum`.
    #[serde(rename = "renum")]
    Renum,
    /// kresd log group `exterr`.
    #[serde(rename = "exterr")]
    Exterr,
    /// kresd log group `rules`.
    #[serde(rename = "rules")]
    Rules,
    /// kresd log group `prlayr`.
    #[serde(rename = "prlayr")]
    Prlayr,
    /// kresd log group `defer`.
    #[serde(rename = "defer")]
    Defer,
    /// kresd log group `doq`.
    #[serde(rename = "doq")]
    Doq,
    /// kresd log group `ngtcp2`.
    #[serde(rename = "ngtcp2")]
    Ngtcp2,
}

impl LogGroup {
    /// The name used in config.yaml (for kresd groups, kresd's group name).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Manager => "manager",
            Self::Supervisord => "supervisord",
            Self::PolicyLoader => "policy-loader",
            Self::Kresd => "kresd",
            Self::CacheGc => "cache-gc",
            Self::Files => "files",
            Self::Metrics => "metrics",
            Self::Server => "server",
            Self::System => "system",
            Self::Cache => "cache",
            Self::Io => "io",
            Self::Net => "net",
            Self::Ta => "ta",
            Self::Tasent => "tasent",
            Self::Tasign => "tasign",
            Self::Taupd => "taupd",
            Self::Tls => "tls",
            Self::Gnutls => "gnutls",
            Self::TlsCl => "tls_cl",
            Self::Xdp => "xdp",
            Self::Doh => "doh",
            Self::Dnssec => "dnssec",
            Self::Hint => "hint",
            Self::Plan => "plan",
            Self::Iterat => "iterat",
            Self::Valdtr => "valdtr",
            Self::Resolv => "resolv",
            Self::Select => "select",
            Self::Zoncut => "zoncut",
            Self::Cookie => "cookie",
            Self::Statis => "statis",
            Self::Rebind => "rebind",
            Self::Worker => "worker",
            Self::Policy => "policy",
            Self::Daf => "daf",
            Self::Timejm => "timejm",
            Self::Timesk => "timesk",
            Self::Graphi => "graphi",
            Self::Prefil => "prefil",
            Self::Primin => "primin",
            Self::Srvstl => "srvstl",
            Self::Wtchdg => "wtchdg",
            Self::Nsid => "nsid",
            Self::Dnstap => "dnstap",
            Self::Tests => "tests",
            Self::Dotaut => "dotaut",
            Self::Http => "http",
            Self::Contrl => "contrl",
            Self::Module => "module",
            Self::Devel => "devel",
            Self::Renum => "renum",
            Self::Exterr => "exterr",
            Self::Rules => "rules",
            Self::Prlayr => "prlayr",
            Self::Defer => "defer",
            Self::Doq => "doq",
            Self::Ngtcp2 => "ngtcp2",
        }
    }

    /// True for a kresd log group (as opposed to a process or manager group).
    pub fn is_kresd_group(self) -> bool {
        !matches!(
            self,
            Self::Manager
                | Self::Supervisord
                | Self::PolicyLoader
                | Self::Kresd
                | Self::CacheGc
                | Self::Files
                | Self::Metrics
                | Self::Server
        )
    }
}

impl LogGroup {
    /// True when kresd 5.6 knows this group (the groups added in 6.x are not).
    pub fn in_kresd5(self) -> bool {
        self.is_kresd_group()
            && !matches!(
                self,
                Self::Rules | Self::Prlayr | Self::Defer | Self::Doq | Self::Ngtcp2
            )
    }
}

impl fmt::Display for LogGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// dnstap: logging DNS queries and responses to a unix socket.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct DnstapConfig {
    /// Enable dnstap.
    pub enable: bool,
    /// Unix socket the dnstap messages are sent to (required when enabled).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unix_socket: Option<SocketPath>,
    /// Log queries from clients in wire format.
    pub log_queries: bool,
    /// Log responses to clients in wire format.
    pub log_responses: bool,
    /// Log TCP round-trip times.
    pub log_tcp_rtt: bool,
}

/// Logging and debugging configuration.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct LoggingConfig {
    /// Global log level.
    pub level: LogLevel,
    /// Global log target.
    pub target: LogTarget,
    /// Groups logged at debug level regardless of `level` (no duplicates).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub groups: Option<Vec<LogGroup>>,
    /// dnstap logging.
    pub dnstap: DnstapConfig,
}
