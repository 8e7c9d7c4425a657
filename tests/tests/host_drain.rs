//! Draining a worker before a rollout stops it, against the real supervisord + kresd: a TCP
//! client that keeps its connection busy through the rollout gets every answer, a fresh
//! connection during the drain lands on another worker, and kresd closes the drained
//! connection only once it is idle.

use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hickory_proto::rr::RecordType;
use kres_operator::kresd::drain::{TCP_LISTEN, client_connections, process_tcp_sockets};
use kres_tests::dns::{TcpDns, answers};
use kres_tests::host::Host;

/// Loopback only: nothing these tests start can reach another host (see
/// `kres_tests::net::isolate_loopback_only`).
#[ctor::ctor(unsafe)]
fn private_network() {
    kres_tests::net::isolate_loopback_only()
}

fn local(addr: &str) -> String {
    format!("local-data:\n  addresses:\n    svc.test: {addr}\n")
}

/// The worker `pid` holds the server side of a connection from `client`.
fn holds(pid: u32, listen: SocketAddr, client: SocketAddr) -> bool {
    client_connections(pid, &[listen])
        .map(|c| c.iter().any(|s| s.remote == client))
        .unwrap_or(false)
}

/// `text` without ANSI colour sequences (`ESC [ ... m`).
fn plain(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            chars.by_ref().find(|c| *c == 'm');
        } else {
            out.push(c);
        }
    }
    out
}

#[test]
fn host_rollout_drains_tcp_connection_before_stopping_the_worker() -> anyhow::Result<()> {
    let mut host = Host::prepare(1, &local("192.0.2.10"), None)?;
    host.spawn_with(&["--drain-timeout-ms", "20000"])?;
    let before = host.wait_converged(None, Duration::from_secs(30))?;
    let old = Host::current_revision(&before)?;
    let old_pid = *host.worker_pids()?.get("kresd0").context("kresd0 runs")?;
    let listen = host.listen;
    let ask = |c: &mut TcpDns| -> anyhow::Result<Vec<String>> {
        let reply = c
            .query("svc.test.", RecordType::A)
            .with_context(|| format!("operator log:\n{}", host.log()))?;
        Ok(answers(&reply))
    };

    // A connection to the only worker, busy (a query every 20 ms) from before the change until
    // the worker has closed its listener and a while after.
    let mut busy = TcpDns::connect(listen, Duration::from_secs(3))?;
    assert_eq!(ask(&mut busy)?, ["192.0.2.10"]);
    assert!(holds(old_pid, listen, busy.local_addr()?));
    host.write_config(1, &local("192.0.2.20"))?;
    host.signal("HUP")?;
    let mut answered = 1;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let sockets = process_tcp_sockets(old_pid).with_context(|| {
            format!(
                "old worker {old_pid} gone before it drained; log:\n{}",
                host.log()
            )
        })?;
        if !sockets
            .iter()
            .any(|s| s.state == TCP_LISTEN && s.local == listen)
        {
            break;
        }
        if Instant::now() > deadline {
            bail!("old worker still listens after 30 s; log:\n{}", host.log());
        }
        assert_eq!(ask(&mut busy)?, ["192.0.2.10"], "answer {answered}");
        answered += 1;
        thread::sleep(Duration::from_millis(20));
    }
    // Draining: the listener is closed, the established connection is still served.
    for _ in 0..25 {
        assert_eq!(ask(&mut busy)?, ["192.0.2.10"], "answer {answered}");
        answered += 1;
        thread::sleep(Duration::from_millis(20));
    }
    assert!(
        holds(old_pid, listen, busy.local_addr()?),
        "the busy connection is still the old worker's"
    );

    // A fresh connection is accepted by another worker (the canary, on the new revision).
    let mut fresh = TcpDns::connect(listen, Duration::from_secs(3))?;
    assert_eq!(ask(&mut fresh)?, ["192.0.2.20"]);
    let client = fresh.local_addr()?;
    assert!(!holds(old_pid, listen, client));
    let others: Vec<u32> = host
        .worker_pids()?
        .into_values()
        .filter(|p| *p != old_pid)
        .collect();
    assert!(
        others.iter().any(|p| holds(*p, listen, client)),
        "fresh connection {client} not held by any of {others:?}"
    );
    drop(fresh);

    // The client goes idle: kresd closes the connection, then the worker is stopped.
    let idle = Instant::now();
    busy.wait_closed_within(Duration::from_secs(15))?;
    let closed_after = idle.elapsed();
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::path::Path::new(&format!("/proc/{old_pid}")).exists() {
        if Instant::now() > deadline {
            bail!(
                "old worker {old_pid} not stopped after its drain; log:\n{}",
                host.log()
            );
        }
        thread::sleep(Duration::from_millis(20));
    }
    println!(
        "{answered} answers on the drained connection; closed {closed_after:?} after it went idle"
    );
    let log = plain(&host.log());
    assert!(
        log.lines()
            .any(|l| l.contains("drained") && l.contains("kresd0") && l.contains("connections=1")),
        "{log}"
    );

    let after = host.wait_converged(Some(&old), Duration::from_secs(60))?;
    assert_eq!(Host::worker_revisions(&after).len(), 1);
    let mut again = TcpDns::connect(listen, Duration::from_secs(3))?;
    assert_eq!(ask(&mut again)?, ["192.0.2.20"]);
    Ok(())
}
