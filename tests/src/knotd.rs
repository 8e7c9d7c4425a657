//! Run a real knotd (Knot DNS) serving test zones on a loopback address.
//!
//! `Knotd::start(ip, zones)` writes a knot.conf and the zone files into a temp dir, starts
//! `knotd -c knot.conf` in the foreground, and returns once it answers SOA for every zone.

use std::fs;
use std::net::{IpAddr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use tempfile::TempDir;

use crate::dns;

/// One zone: its origin (with trailing dot) and the records after the generated SOA and NS.
#[derive(Debug, Clone)]
pub struct Zone {
    /// Zone origin, e.g. `example.test.`.
    pub origin: String,
    /// Zone-file records (relative names allowed).
    pub records: String,
}

impl Zone {
    /// The standard test zone `example.test.`: `www` A+AAAA, `ipv4only` A only, a TXT and a CNAME.
    pub fn example_test() -> Zone {
        Zone {
            origin: "example.test.".into(),
            records: "www 300 A 192.0.2.10\n\
                      www 300 AAAA 2001:db8::10\n\
                      ipv4only 300 A 192.0.2.44\n\
                      txt 300 TXT \"hello from knotd\"\n\
                      alias 300 CNAME www\n"
                .into(),
        }
    }
}

/// A running knotd; killed when dropped.
pub struct Knotd {
    child: Child,
    /// Where knotd answers (UDP and TCP).
    pub addr: SocketAddr,
    tmp: TempDir,
}

impl Knotd {
    /// Start knotd on `ip` (a free port is chosen) serving `zones`.
    pub fn start(ip: std::net::Ipv4Addr, zones: &[Zone]) -> Result<Knotd> {
        Knotd::start_on(ip, crate::net::free_port(ip), zones)
    }

    /// Start knotd on `ip@port` serving `zones` (ports below 1024 need root).
    pub fn start_on(ip: std::net::Ipv4Addr, port: u16, zones: &[Zone]) -> Result<Knotd> {
        let tmp = tempfile::Builder::new().prefix("knotd-test-").tempdir()?;
        let dir = tmp.path();
        let mut conf = format!(
            "server:\n    rundir: \"{d}\"\n    listen: {ip}@{port}\n\
             database:\n    storage: \"{d}/db\"\n\
             log:\n  - target: stderr\n    any: warning\n\
             template:\n  - id: default\n    storage: \"{d}\"\n    semantic-checks: off\n\
             zone:\n",
            d = dir.display()
        );
        for (i, z) in zones.iter().enumerate() {
            let file = format!("zone{i}.zone");
            let body = format!(
                "$ORIGIN {o}\n$TTL 300\n@ SOA ns.{o} hostmaster.{o} 1 3600 900 604800 300\n@ NS ns.{o}\nns A {ip}\n{r}",
                o = z.origin,
                r = z.records
            );
            fs::write(dir.join(&file), body)?;
            conf.push_str(&format!("  - domain: {}\n    file: {file}\n", z.origin));
        }
        fs::write(dir.join("knot.conf"), conf)?;
        let stderr = fs::File::create(dir.join("knotd.stderr"))?;
        let child = Command::new("knotd")
            .arg("-c")
            .arg(dir.join("knot.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .context("spawn knotd (is knot installed?)")?;
        let mut k = Knotd {
            child,
            addr: SocketAddr::new(IpAddr::V4(ip), port),
            tmp,
        };
        k.wait_ready(zones)?;
        Ok(k)
    }

    fn wait_ready(&mut self, zones: &[Zone]) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        for z in zones {
            loop {
                let ok = dns::query_with(
                    self.addr,
                    &z.origin,
                    RecordType::SOA,
                    Duration::from_millis(100),
                    |m| {
                        m.metadata.recursion_desired = false;
                    },
                )
                .map(|r| dns::rcode(&r) == ResponseCode::NoError && !r.answers.is_empty())
                .unwrap_or(false);
                if ok {
                    break;
                }
                if let Some(status) = self.child.try_wait()? {
                    bail!("knotd exited early ({status}): {}", self.stderr());
                }
                if Instant::now() > deadline {
                    bail!(
                        "knotd does not answer SOA {} at {}; stderr: {}",
                        z.origin,
                        self.addr,
                        self.stderr()
                    );
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(())
    }

    /// knotd's stderr so far.
    pub fn stderr(&self) -> String {
        fs::read_to_string(self.tmp.path().join("knotd.stderr")).unwrap_or_default()
    }
}

impl Drop for Knotd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
