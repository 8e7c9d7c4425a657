//! notify, control and probe against the real kresd 5.6.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{Kresd, signal};
use kres_operator::kresd::control::{
    ControlClient, ControlError, remove_stale_sockets, stale_sockets,
};
use kres_operator::kresd::notify::{NotifyAccess, NotifyError, NotifyListener};
use kres_operator::kresd::probe::{ProbeError, ProbeQuestion, probe};
use kres_tests::net::{free_port, unique_loopback};
use tokio::time::Instant;

/// Loopback only: nothing these tests start can reach another host (see
/// `kres_tests::net::isolate_loopback_only`).
#[ctor::ctor(unsafe)]
fn private_network() {
    kres_tests::net::isolate_loopback_only()
}

fn listen_config(extra: &str) -> (String, SocketAddr) {
    let ip = unique_loopback();
    let port = free_port(ip);
    (
        format!("net.listen('{ip}', {port})\n{extra}\n"),
        SocketAddr::from((ip, port)),
    )
}

#[tokio::test]
async fn ready_arrives_with_kresd_pid_and_probe_answers_locally() {
    let dir = tempfile::tempdir().unwrap();
    let notify =
        NotifyListener::bind(dir.path().join("notify"), NotifyAccess::owner_only()).unwrap();
    let mut events = notify.subscribe();
    let (lua, addr) = listen_config("");
    let k = Kresd::spawn(&lua, &[("NOTIFY_SOCKET", notify.path())]);
    let t = Instant::now();
    notify
        .wait_ready(k.pid(), t + Duration::from_secs(20))
        .await
        .unwrap();
    let first = events.recv().await.unwrap();
    assert_eq!(first.pid, k.pid());
    assert!(first.is_ready(), "{first:?}");
    // READY means the sockets are bound: the probe answers at once, from built-in rules.
    let ans = probe(addr, &ProbeQuestion::default()).await.unwrap();
    assert!(ans.is_noerror(), "{ans:?}");
    assert_eq!(ans.answers, 1);
    // SIGTERM: kresd exits cleanly; waiting for READY of a gone pid fails fast.
    signal(k.pid(), "TERM");
    common::wait_for(
        || !std::path::Path::new(&format!("/proc/{}", k.pid())).exists() || is_zombie(k.pid()),
        "exit",
    );
    let err = probe(
        addr,
        &ProbeQuestion {
            timeout: Duration::from_millis(300),
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, ProbeError::Io { .. } | ProbeError::Timeout { .. }),
        "{err}"
    );
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.contains(") Z "))
        .unwrap_or(true)
}

#[tokio::test]
async fn broken_config_fails_fast_without_ready() {
    let dir = tempfile::tempdir().unwrap();
    let notify =
        NotifyListener::bind(dir.path().join("notify"), NotifyAccess::owner_only()).unwrap();
    let mut k = Kresd::spawn(
        "net.listen('127.0.0.1', \n",
        &[("NOTIFY_SOCKET", notify.path())],
    );
    let pid = k.pid();
    // Reap in the background so /proc/<pid> disappears once it exits.
    let reaper = std::thread::spawn(move || k.child.wait().map(|s| s.code()));
    // The deadline is far away: `Exited` (not `Timeout`) proves the exit was noticed.
    let t = Instant::now();
    let err = notify
        .wait_ready(pid, t + Duration::from_secs(60))
        .await
        .unwrap_err();
    assert!(
        matches!(err, NotifyError::Exited { pid: p, .. } if p == pid),
        "{err}"
    );
    println!("exit noticed after {:?}", t.elapsed());
    assert_eq!(reaper.join().unwrap().unwrap(), Some(1));
}

#[tokio::test]
async fn control_eval_stats_and_errors() {
    let (lua, addr) = listen_config("modules.load('stats')");
    let k = Kresd::spawn(&lua, &[]);
    k.wait_control();
    let mut c = ControlClient::connect(k.control_path(), Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(c.pid().await.unwrap(), k.pid());
    // Multi-line chunk, quotes, long brackets and newlines round-trip exactly.
    let tricky = "a'b\"c\n]]--x\\";
    let chunk = "local t = {}\nt[1] = [==[a'b\"c\n]]--x\\]==]\nreturn t[1]";
    assert_eq!(c.eval(chunk).await.unwrap(), tricky);
    // Errors are distinguishable from values, and the connection stays usable.
    let err = c.eval("error('boom')").await.unwrap_err();
    assert!(
        matches!(&err, ControlError::Lua { message, .. } if message.contains("boom")),
        "{err}"
    );
    let err = c.eval("return (").await.unwrap_err();
    assert!(matches!(&err, ControlError::Lua { .. }), "{err}");
    assert_eq!(c.eval("return 1 + 1").await.unwrap(), "2");
    // Stats count a query we send.
    let before = c.stats().await.unwrap();
    let total = |m: &serde_json::Map<String, serde_json::Value>| {
        m.get("answer.total").and_then(|v| v.as_u64()).unwrap()
    };
    probe(addr, &ProbeQuestion::default()).await.unwrap();
    let after = c.stats().await.unwrap();
    // kresd's own background queries (priming, trust-anchor refresh) count too.
    assert!(total(&after) > total(&before), "{before:?} -> {after:?}");
}

#[tokio::test]
async fn stats_without_module_is_a_lua_error() {
    let (lua, _) = listen_config("");
    let k = Kresd::spawn(&lua, &[]);
    k.wait_control();
    let mut c = ControlClient::connect(k.control_path(), Duration::from_secs(2))
        .await
        .unwrap();
    let err = c.stats().await.unwrap_err();
    assert!(
        matches!(&err, ControlError::Lua { message, .. } if message.contains("stats")),
        "{err}"
    );
}

#[tokio::test]
async fn stopped_kresd_times_out_and_killed_one_leaves_stale_socket() {
    let (lua, _) = listen_config("");
    let k = Kresd::spawn(&lua, &[]);
    k.wait_control();
    let mut c = ControlClient::connect(k.control_path(), Duration::from_millis(300))
        .await
        .unwrap();
    signal(k.pid(), "STOP");
    let t = Instant::now();
    let err = c.eval("return 1").await.unwrap_err();
    assert!(matches!(err, ControlError::Timeout { .. }), "{err}");
    // The bound is 300 ms; 10 s only fails a read that is not bounded at all.
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "took {:?}",
        t.elapsed()
    );
    // A stopped kresd is not stale (its socket still accepts into the backlog).
    let dir = k.rundir.path().join("control");
    assert!(
        stale_sockets(&dir, Duration::from_millis(200))
            .await
            .unwrap()
            .is_empty()
    );
    signal(k.pid(), "KILL");
    common::wait_for(|| is_zombie(k.pid()), "kresd killed");
    let removed = remove_stale_sockets(&dir, Duration::from_millis(200))
        .await
        .unwrap();
    assert_eq!(removed, vec![k.control_path()]);
    assert!(!k.control_path().exists());
}
