//! Least privilege in host mode, against the real supervisord, kresd and kres-cache-gc, with the
//! operator started as root (CI runs as root; these tests fail, not skip, otherwise): workers
//! run as `knot-resolver` while DNS is served on port 53; `notify.sock` ignores foreign senders;
//! an unsafe rundir is refused; a config with a bad path given by SIGHUP or the API changes
//! nothing.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hickory_proto::rr::RecordType;
use http::Method;
use kres_crd::config::path_corpus::{ISSUE_PWN, bad_paths, yaml_quoted};
use kres_operator::http::client::{ApiClient, Target};
use kres_operator::privilege::lookup_user;
use kres_tests::dns::resolve;
use kres_tests::host::Host;
use kres_tests::knotd::{Knotd, Zone};
use kres_tests::net::unique_loopback;
use kres_tests::process::proc_ids;

/// Loopback only: nothing these tests start can reach another host (see
/// `kres_tests::net::isolate_loopback_only`).
#[ctor::ctor(unsafe)]
fn private_network() {
    kres_tests::net::isolate_loopback_only()
}

fn require_root() {
    assert_eq!(
        kres_operator::privilege::effective_uid(),
        0,
        "this test starts the operator as root to show it drops privileges: run it as root \
         (CI does)"
    );
}

/// Wait until the operator log has `needle` more than `before` times.
fn wait_log_count(host: &Host, needle: &str, before: usize) -> Result<usize> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let n = host.log().matches(needle).count();
        if n > before {
            return Ok(n);
        }
        if Instant::now() > deadline {
            bail!("no new {needle:?} in the operator log:\n{}", host.log());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn host_workers_run_as_knot_resolver_serving_port_53() -> Result<()> {
    require_root();
    let kr = lookup_user("knot-resolver").context("Debian's knot-resolver user")?;
    // kresd forwards to authoritative servers on port 53 only.
    let knot = Knotd::start_on(unique_loopback(), 53, &[Zone::example_test()])?;
    let forward = format!(
        "forward:\n  - subtree: example.test\n    servers: [{}]\n    options: {{authoritative: true, dnssec: false}}\n",
        knot.addr.ip()
    );
    let mut host = Host::prepare(2, &forward, Some(53))?;
    host.spawn()?;
    host.wait_converged(None, Duration::from_secs(30))?;
    assert_eq!(host.listen.port(), 53);

    // Answered on port 53 (bound by the root socket holder), then from the shared cache with
    // the authoritative server gone.
    let first = resolve(host.listen, "www.example.test.", RecordType::A)?;
    assert!(!first.is_empty(), "no answer from knotd through kresd");
    drop(knot);
    for _ in 0..4 {
        assert_eq!(
            resolve(host.listen, "www.example.test.", RecordType::A)?,
            first,
            "answer not served from the cache"
        );
    }

    // cache-gc is RUNNING after its startsecs (1 s).
    let deadline = Instant::now() + Duration::from_secs(20);
    let procs = loop {
        let procs = host.processes()?;
        if procs.get("cache-gc").is_some_and(|p| p.state == "RUNNING") {
            break procs;
        }
        if Instant::now() > deadline {
            bail!("cache-gc not RUNNING: {procs:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut unprivileged = vec![];
    for (name, p) in &procs {
        if name.starts_with("kresd") || name == "cache-gc" {
            assert_eq!(p.state, "RUNNING", "{name}: {p:?}");
            let (uids, gids) = proc_ids(p.pid)?;
            assert_eq!(uids, vec![kr.uid; 4], "{name} pid {} uids", p.pid);
            assert_eq!(gids, vec![kr.gid; 4], "{name} pid {} gids", p.pid);
            unprivileged.push(name.clone());
        }
    }
    assert_eq!(unprivileged.len(), 3, "two kresd and cache-gc: {procs:?}");
    // The socket holder and supervisord keep root: they bind port 53 and drop the others.
    assert_eq!(proc_ids(procs["sockets"].pid)?.0[1], 0);
    assert_eq!(proc_ids(host.supervisord_pid()?)?.0[1], 0);

    // The cache belongs to the workers; the rundir to the operator, readable by their group.
    let cache = std::fs::metadata(host.cache_dir())?;
    assert_eq!((cache.uid(), cache.gid()), (kr.uid, kr.gid));
    for entry in std::fs::read_dir(host.cache_dir())? {
        let m = entry?.metadata()?;
        assert_eq!(m.uid(), kr.uid, "cache file not owned by knot-resolver");
    }
    let run = std::fs::metadata(&host.rundir)?;
    assert_eq!(
        (run.uid(), run.gid(), run.mode() & 0o7777),
        (0, kr.gid, 0o750)
    );
    let notify = std::fs::metadata(host.rundir.join("notify.sock"))?;
    assert_eq!(
        (notify.uid(), notify.gid(), notify.mode() & 0o777),
        (0, kr.gid, 0o660)
    );
    Ok(())
}

#[test]
fn host_notify_socket_ignores_a_process_it_did_not_start() -> Result<()> {
    require_root();
    let host = Host::start(1, "")?;
    let status = host.wait_converged(None, Duration::from_secs(30))?;
    let revision = Host::current_revision(&status)?;
    let pids = host.worker_pids()?;
    let sock = host.rundir.join("notify.sock");

    // A local user outside the workers' group cannot even send.
    let denied = Command::new("setpriv")
        .args([
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            "/usr/bin/python3",
            "-c",
        ])
        .arg(SEND)
        .arg(&sock)
        .output()?;
    assert!(!denied.status.success(), "nobody could send to notify.sock");
    assert!(
        String::from_utf8_lossy(&denied.stderr).contains("Permission denied"),
        "{}",
        String::from_utf8_lossy(&denied.stderr)
    );

    // A process of the workers' own user, named like a worker, sends READY=1: counted as
    // foreign (not a child of our supervisord) and ignored.
    let needle = "notify message from a process the operator did not start ignored";
    let before = host.log().matches(needle).count();
    let child = Command::new("setpriv")
        .args([
            "--reuid=knot-resolver",
            "--regid=knot-resolver",
            "--init-groups",
            "bash",
            "-c",
            "exec -a kresd /usr/bin/python3 -c \"$0\" \"$1\"",
        ])
        .arg(SEND)
        .arg(&sock)
        .output()?;
    assert!(
        child.status.success(),
        "{}",
        String::from_utf8_lossy(&child.stderr)
    );
    let sender: u32 = String::from_utf8_lossy(&child.stdout).trim().parse()?;
    wait_log_count(&host, needle, before)?;
    let log = host.log();
    assert!(
        // `pid=N` with the log's colour codes between key and value.
        log.lines()
            .any(|l| l.contains(needle) && l.contains(&format!("{sender}"))),
        "no ignore line for pid {sender}:\n{log}"
    );
    // Processed and ignored: nothing changed.
    let after = host.status()?;
    assert_eq!(Host::current_revision(&after)?, revision);
    assert_eq!(after["converged"], true);
    assert_eq!(host.worker_pids()?, pids);
    Ok(())
}

/// Python: send `READY=1` with a worker's STATUS to argv[1], print own PID.
const SEND: &str = "import os, socket, sys\n\
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n\
s.sendto(b'READY=1\\nSTATUS=kresd0 ready\\n', sys.argv[1])\n\
print(os.getpid())\n";

fn refused(host: &mut Host, expect: &str) -> Result<()> {
    host.spawn()?;
    let code = host.wait_exit(Duration::from_secs(20))?;
    assert_eq!(code, Some(1), "operator log:\n{}", host.log());
    let log = host.log();
    assert!(log.contains(expect), "want {expect:?} in:\n{log}");
    assert!(
        !host.rundir.join("supervisord.conf").exists(),
        "supervisord configured in an unsafe rundir"
    );
    Ok(())
}

#[test]
fn host_unsafe_rundir_is_refused() -> Result<()> {
    require_root();
    // World-writable.
    let mut host = Host::prepare(1, "", None)?;
    std::fs::create_dir(&host.rundir)?;
    std::fs::set_permissions(&host.rundir, std::fs::Permissions::from_mode(0o777))?;
    let expect = format!(
        "rundir {}: mode 0777 is group- or world-writable",
        host.rundir.display()
    );
    refused(&mut host, &expect)?;

    // Owned by another user (who could replace what supervisord runs as root).
    let mut host = Host::prepare(1, "", None)?;
    std::fs::create_dir(&host.rundir)?;
    let kr = lookup_user("knot-resolver")?;
    std::os::unix::fs::chown(&host.rundir, Some(kr.uid), Some(kr.gid))?;
    let expect = format!(
        "rundir {}: owned by uid {}, expected uid 0",
        host.rundir.display(),
        kr.uid
    );
    refused(&mut host, &expect)?;

    // A parent writable by others (not sticky).
    let mut host = Host::prepare(1, "", None)?;
    std::fs::set_permissions(host.dir(), std::fs::Permissions::from_mode(0o777))?;
    let expect = format!("parent {}: mode 0777", host.dir().display());
    refused(&mut host, &expect)
}

#[test]
fn host_bad_paths_by_sighup_or_api_keep_serving_unchanged() -> Result<()> {
    require_root();
    let host = Host::start(2, "")?;
    let status = host.wait_converged(None, Duration::from_secs(30))?;
    let revision = Host::current_revision(&status)?;
    let pids = host.worker_pids()?;
    let programs = program_files(&host.rundir)?;
    let good = host.config_text(2, "");
    let over_long = format!("/{}", "a".repeat(5000));
    let bad = [
        ISSUE_PWN,
        "/var/cache/x\n",
        "/var/cache/x\ry",
        "/var/cache/%(here)s",
        over_long.as_str(),
    ];
    let needle = "configuration rejected; the running fleet is kept";
    for (field, pointer) in [("storage", "/cache/storage"), ("rundir", "/rundir")] {
        for value in bad {
            let text = match field {
                "storage" => good.replace(
                    &format!("storage: {}", host.cache_dir().display()),
                    &format!("storage: {}", yaml_quoted(value)),
                ),
                _ => good.replace(
                    &format!("rundir: {}", host.rundir.display()),
                    &format!("rundir: {}", yaml_quoted(value)),
                ),
            };
            assert_ne!(text, good);
            let before = host.log().matches(needle).count();
            host.write_raw(&text)?;
            host.signal("HUP")?;
            // Proof the reload was processed: its rejection, naming the field.
            wait_log_count(&host, needle, before)?;
            let log = host.log();
            let rejection = log.rfind(needle).map_or("", |i| &log[i..]);
            assert!(
                rejection.contains(pointer),
                "rejection does not name {pointer}: {rejection}"
            );
            let now = host.status()?;
            assert_eq!(Host::current_revision(&now)?, revision, "{value:?}");
            assert_eq!(host.worker_pids()?, pids, "{value:?}");
            assert_eq!(program_files(&host.rundir)?, programs, "{value:?}");
        }
    }
    // The same strings through the API: 422 naming the field and the rule, nothing applied.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let client = ApiClient::new(Target::Unix(host.api_socket()), Duration::from_secs(30));
    for (value, rule) in bad_paths() {
        let body = serde_json::to_string(&value)?;
        let r = rt.block_on(client.request(
            Method::PUT,
            "/v1/config/cache/storage",
            &[("content-type", "application/json")],
            body,
        ))?;
        assert_eq!(r.status, 422, "{value:?}: {}", r.text());
        let errors = r.json()["errors"].clone();
        assert!(
            errors
                .as_array()
                .into_iter()
                .flatten()
                .any(|e| e["pointer"] == "/cache/storage"
                    && e["message"].as_str().is_some_and(|m| m.contains(rule))),
            "{value:?}: want /cache/storage with {rule:?}: {errors}"
        );
    }
    assert_eq!(Host::current_revision(&host.status()?)?, revision);
    assert_eq!(host.worker_pids()?, pids);
    assert_eq!(program_files(&host.rundir)?, programs);
    assert!(!Path::new("/tmp/PWNED").exists());
    // Still serving: the good config again converges on the same revision.
    host.write_raw(&good)?;
    host.signal("HUP")?;
    let back = host.wait_converged(None, Duration::from_secs(30))?;
    assert_eq!(Host::current_revision(&back)?, revision);
    Ok(())
}

/// Names of the program files supervisord includes.
fn program_files(rundir: &Path) -> Result<Vec<String>> {
    let mut names: Vec<String> = std::fs::read_dir(rundir.join("programs"))?
        .map(|e| Ok(e?.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_>>()?;
    names.sort();
    Ok(names)
}
