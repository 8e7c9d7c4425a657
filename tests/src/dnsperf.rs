//! Run the real `dnsperf` and read its summary: queries sent, completed, lost, and the count of
//! every response code, so a run that "completed" with SERVFAILs does not pass as clean.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

/// The summary dnsperf prints at the end of a run.
#[derive(Debug, Clone)]
pub struct Report {
    /// `Queries sent`.
    pub sent: u64,
    /// `Queries completed` (answered, whatever the response code).
    pub completed: u64,
    /// `Queries lost` (no reply within dnsperf's `-t` timeout).
    pub lost: u64,
    /// `Response codes`: NOERROR, SERVFAIL, ... -> count.
    pub rcodes: BTreeMap<String, u64>,
    /// The slowest reply, in seconds (`Average Latency ... max`).
    pub max_latency_s: f64,
    /// dnsperf's whole standard output.
    pub text: String,
}

impl Report {
    /// Parse dnsperf's standard output.
    pub fn parse(text: &str) -> Result<Report> {
        let field = |key: &str| -> Result<&str> {
            text.lines()
                .find_map(|l| l.trim().strip_prefix(key))
                .map(str::trim)
                .with_context(|| format!("no '{key}' in dnsperf output:\n{text}"))
        };
        let count = |key: &str| -> Result<u64> {
            let rest = field(key)?;
            rest.split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
                .with_context(|| format!("'{key}' is not a count: {rest}"))
        };
        let mut rcodes = BTreeMap::new();
        // "NOERROR 3990 (99.75%), SERVFAIL 10 (0.25%)"; absent when nothing completed.
        if let Ok(codes) = field("Response codes:") {
            for part in codes.split(',') {
                let mut it = part.split_whitespace();
                if let (Some(code), Some(n)) = (it.next(), it.next()) {
                    let n: u64 = n
                        .parse()
                        .with_context(|| format!("response code count: {codes}"))?;
                    rcodes.insert(code.to_string(), n);
                }
            }
        }
        // "0.000158 (min 0.000025, max 0.004995)"
        let max_latency_s = field("Average Latency (s):")
            .ok()
            .and_then(|l| l.split("max ").nth(1))
            .and_then(|m| m.trim_end_matches(')').trim().parse().ok())
            .unwrap_or(0.0);
        Ok(Report {
            sent: count("Queries sent:")?,
            completed: count("Queries completed:")?,
            lost: count("Queries lost:")?,
            rcodes,
            max_latency_s,
            text: text.to_string(),
        })
    }

    /// Replies with response code `code`.
    pub fn rcode(&self, code: &str) -> u64 {
        self.rcodes.get(code).copied().unwrap_or(0)
    }

    /// Every query sent was answered NOERROR and none was lost: no SERVFAIL or REFUSED slips in
    /// as "completed", and no reply took longer than dnsperf's `-t` timeout (no stall that
    /// long). At least `min_sent` queries went out (a real load).
    pub fn check_clean(&self, min_sent: u64) -> Result<()> {
        if self.sent < min_sent {
            bail!(
                "only {} queries sent (< {min_sent}):\n{}",
                self.sent,
                self.text
            );
        }
        if self.lost != 0 || self.completed != self.sent {
            bail!(
                "{} of {} queries lost (a reply slower than the timeout counts as lost):\n{}",
                self.lost,
                self.sent,
                self.text
            );
        }
        if self.rcode("NOERROR") != self.completed {
            bail!(
                "not every reply is NOERROR: {:?} of {} completed:\n{}",
                self.rcodes,
                self.completed,
                self.text
            );
        }
        Ok(())
    }
}

/// Run `dnsperf -s IP -p PORT -d data ARGS...` to the end and parse its summary.
pub fn run(server: SocketAddr, data: &Path, args: &[&str]) -> Result<Report> {
    let out = Command::new("dnsperf")
        .args([
            "-s",
            &server.ip().to_string(),
            "-p",
            &server.port().to_string(),
        ])
        .arg("-d")
        .arg(data)
        .args(args)
        .output()
        .context("dnsperf must be installed (apt-get install dnsperf)")?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    if !out.status.success() {
        bail!(
            "dnsperf failed ({}): {text}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Report::parse(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUT: &str = "\
Statistics:

  Queries sent:         4000
  Queries completed:    4000 (100.00%)
  Queries lost:         0 (0.00%)

  Response codes:       NOERROR 3990 (99.75%), SERVFAIL 10 (0.25%)
  Average packet size:  request 27, response 43
  Run time (s):         2.000194
  Queries per second:   1999.806019

  Average Latency (s):  0.000158 (min 0.000025, max 0.004995)
";

    #[test]
    fn servfail_is_not_clean() {
        let r = Report::parse(OUT).expect("parse");
        assert_eq!((r.sent, r.completed, r.lost), (4000, 4000, 0));
        assert_eq!(r.rcode("NOERROR"), 3990);
        assert_eq!(r.rcode("SERVFAIL"), 10);
        assert!((r.max_latency_s - 0.004995).abs() < 1e-9);
        let err = r
            .check_clean(1000)
            .expect_err("SERVFAIL must fail the check");
        assert!(err.to_string().contains("SERVFAIL"), "{err}");
        let clean = Report::parse(
            &OUT.replace(", SERVFAIL 10 (0.25%)", "")
                .replace("3990", "4000"),
        )
        .expect("parse");
        clean.check_clean(1000).expect("clean");
        assert!(clean.check_clean(5000).is_err(), "too few queries sent");
    }
}
