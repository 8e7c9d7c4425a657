//! Shared listening sockets: `kres-operator socket-holder` + `kres-operator launch` with the
//! real kresd 5.6.

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use kres_operator::kresd::control::ControlClient;
use kres_operator::kresd::notify::NotifyListener;
use kres_operator::sockets::{self, BindSpec};
use kres_tests::dns;
use kres_tests::net::{free_port, unique_loopback};

const BIN: &str = env!("CARGO_BIN_EXE_kres-operator");

/// A running holder process; killed on drop.
struct Holder {
    child: Child,
    path: PathBuf,
}

impl Holder {
    fn start(dir: &Path, binds: &[String]) -> Holder {
        let path = dir.join("holder.sock");
        let mut cmd = Command::new(BIN);
        cmd.arg("socket-holder").arg("--socket").arg(&path);
        for b in binds {
            cmd.args(["--bind", b]);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn holder");
        let h = Holder { child, path };
        common::wait_for(|| sockets::fetch(&h.path).is_ok(), "socket holder serving");
        h
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One worker started through `kres-operator launch`; killed on drop.
struct Worker {
    child: Child,
    probe: SocketAddr,
}

impl Worker {
    fn launch(holder: &Path, rundir: &Path, probe: SocketAddr, notify: &Path) -> Worker {
        let child = Command::new(BIN)
            .arg("launch")
            .arg("--holder")
            .arg(holder)
            .arg("--probe-listen")
            .arg(format!("{}@{}", probe.ip(), probe.port()))
            .args(["--", "kresd", "-n", "-c", "config.lua"])
            .arg(rundir)
            .env("NOTIFY_SOCKET", notify)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn launch");
        Worker { child, probe }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM and reap.
    fn stop(mut self) {
        common::signal(self.pid(), "TERM");
        let st = self.child.wait().expect("wait worker");
        assert_eq!(st.code(), Some(0), "clean exit on SIGTERM");
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn rundir_with_config() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    // No net.listen at all: every socket is inherited.
    std::fs::write(d.path().join("config.lua"), "modules.load('stats')\n").unwrap();
    d
}

async fn ready(notify: &NotifyListener, w: &Worker) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    notify
        .wait_ready(w.pid(), deadline)
        .await
        .unwrap_or_else(|e| panic!("worker {}: {e}", w.pid()));
}

fn probe_addr() -> SocketAddr {
    let ip = unique_loopback();
    SocketAddr::from((ip, free_port(ip)))
}

/// One DNS query over TCP (length-prefixed), returning the rcode.
fn tcp_query(server: SocketAddr, name: &str) -> ResponseCode {
    let mut s = TcpStream::connect(server).expect("tcp connect");
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut msg = Message::new(4242, MessageType::Query, OpCode::Query);
    msg.metadata.recursion_desired = true;
    msg.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
    let wire = msg.to_vec().unwrap();
    let mut framed = (wire.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&wire);
    s.write_all(&framed).unwrap();
    let mut len = [0u8; 2];
    s.read_exact(&mut len).unwrap();
    let mut reply = vec![0u8; u16::from_be_bytes(len) as usize];
    s.read_exact(&mut reply).unwrap();
    Message::from_vec(&reply).unwrap().metadata.response_code
}

#[test]
fn holder_bind_error_is_clear_and_nonzero() {
    let dir = tempfile::tempdir().unwrap();
    let ip = unique_loopback();
    let port = free_port(ip);
    let path = dir.path().join("holder.sock");
    let out = Command::new(BIN)
        .arg("socket-holder")
        .arg("--socket")
        .arg(&path)
        .args([
            "--bind",
            &format!("udp:{ip}@{port}"),
            "--bind",
            "udp:192.0.2.55@5353",
            "--bind",
            "tcp:192.0.2.55@5353",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bind to '192.0.2.55@5353' (UDP): Cannot assign requested address"),
        "{stderr}"
    );
    assert!(
        stderr.contains("bind to '192.0.2.55@5353' (TCP): Cannot assign requested address"),
        "{stderr}"
    );
    assert!(!path.exists(), "nothing is served after a bind error");
    // A bad spec is refused by the argument parser, naming the spec.
    let out = Command::new(BIN)
        .args([
            "socket-holder",
            "--socket",
            "x",
            "--bind",
            "tcp:127.0.0.1@443:doh2",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("kind 'doh2' cannot be passed"));
    // And a launcher without a holder fails clearly, without running kresd.
    let out = Command::new(BIN)
        .arg("launch")
        .arg("--holder")
        .arg(&path)
        .args(["--", "kresd", "-n"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("socket holder") && stderr.contains("connect"),
        "{stderr}"
    );
}

#[test]
fn rebind_keeps_sockets_and_refuses_atomically() {
    let dir = tempfile::tempdir().unwrap();
    let ip = unique_loopback();
    let (p1, p2) = (free_port(ip), free_port(Ipv4Addr::new(127, 0, 0, 1)));
    let a: BindSpec = format!("udp:{ip}@{p1}").parse().unwrap();
    let b: BindSpec = format!("tcp:{ip}@{p2}").parse().unwrap();
    let h = Holder::start(dir.path(), &[a.to_string()]);
    let ino = |fd: &std::os::fd::OwnedFd| rustix::fs::fstat(fd).unwrap().st_ino;
    let first = sockets::fetch(&h.path).unwrap();
    assert_eq!(first.iter().map(|s| s.spec).collect::<Vec<_>>(), vec![a]);
    assert_eq!(sockets::rebind(&h.path, &[b, a]).unwrap(), vec![b, a]);
    let second = sockets::fetch(&h.path).unwrap();
    assert_eq!(
        ino(&second[1].fd),
        ino(&first[0].fd),
        "kept socket is the same kernel socket"
    );
    TcpStream::connect(b.addr).expect("new TCP socket listens");
    let bad: BindSpec = "udp:192.0.2.55@5353".parse().unwrap();
    let err = sockets::rebind(&h.path, &[a, bad]).unwrap_err().to_string();
    assert!(err.contains("bind to '192.0.2.55@5353' (UDP)"), "{err}");
    assert_eq!(
        sockets::fetch(&h.path).unwrap().len(),
        2,
        "held set unchanged after a failed rebind"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_share_sockets_and_answer_on_own_probe_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let ip = unique_loopback();
    let port = free_port(ip);
    let service = SocketAddr::from((ip, port));
    let h = Holder::start(
        dir.path(),
        &[format!("udp:{ip}@{port}"), format!("tcp:{ip}@{port}")],
    );
    let notify = NotifyListener::bind(dir.path().join("notify")).unwrap();
    let rundir = rundir_with_config();
    let w1 = Worker::launch(&h.path, rundir.path(), probe_addr(), notify.path());
    let w2 = Worker::launch(&h.path, rundir.path(), probe_addr(), notify.path());
    // READY comes from the launcher's PID: launch execs kresd in place.
    ready(&notify, &w1).await;
    ready(&notify, &w2).await;
    assert_eq!(
        dns::resolve(service, "localhost.", RecordType::A).unwrap(),
        vec!["127.0.0.1"]
    );
    assert_eq!(tcp_query(service, "localhost."), ResponseCode::NoError);
    for (w, other) in [(&w1, &w2), (&w2, &w1)] {
        assert_eq!(
            dns::resolve(w.probe, "localhost.", RecordType::A).unwrap(),
            vec!["127.0.0.1"]
        );
        // The worker's own endpoints: the shared ones and its probe endpoint, not the other's.
        let ctl = rundir.path().join("control").join(w.pid().to_string());
        let mut c = ControlClient::connect(&ctl, Duration::from_secs(2))
            .await
            .unwrap();
        let list = c.eval("return tojson(net.list())").await.unwrap();
        assert!(list.contains(&w.probe.ip().to_string()), "{list}");
        assert!(list.contains(&ip.to_string()), "{list}");
        assert!(!list.contains(&other.probe.ip().to_string()), "{list}");
        assert_eq!(c.pid().await.unwrap(), w.pid());
    }
    // Stop one: its probe endpoint goes away, the service keeps answering.
    let gone = w1.probe;
    w1.stop();
    assert!(
        dns::query_with(
            gone,
            "localhost.",
            RecordType::A,
            Duration::from_millis(300),
            |_| {}
        )
        .is_err()
    );
    for _ in 0..20 {
        assert_eq!(
            dns::resolve(service, "localhost.", RecordType::A).unwrap(),
            vec!["127.0.0.1"]
        );
    }
    assert_eq!(tcp_query(service, "localhost."), ResponseCode::NoError);
    drop(w2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarting_a_worker_loses_no_query() {
    let dir = tempfile::tempdir().unwrap();
    let ip = unique_loopback();
    let port = free_port(ip);
    let service = SocketAddr::from((ip, port));
    let h = Holder::start(
        dir.path(),
        &[format!("udp:{ip}@{port}"), format!("tcp:{ip}@{port}")],
    );
    let notify = NotifyListener::bind(dir.path().join("notify")).unwrap();
    let rundir = rundir_with_config();
    let stable = Worker::launch(&h.path, rundir.path(), probe_addr(), notify.path());
    let mut moving = Worker::launch(&h.path, rundir.path(), probe_addr(), notify.path());
    ready(&notify, &stable).await;
    ready(&notify, &moving).await;

    // A client sending queries back to back (each waits up to 1 s for its answer).
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, lost) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let client = {
        let (stop, sent, lost) = (stop.clone(), sent.clone(), lost.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                sent.fetch_add(1, Ordering::Relaxed);
                let ok = dns::query_with(
                    service,
                    "localhost.",
                    RecordType::A,
                    Duration::from_secs(1),
                    |_| {},
                )
                .is_ok_and(|r| dns::rcode(&r) == ResponseCode::NoError);
                if !ok {
                    lost.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    let t = Instant::now();
    for _ in 0..5 {
        let probe = moving.probe;
        moving.stop();
        moving = Worker::launch(&h.path, rundir.path(), probe, notify.path());
        ready(&notify, &moving).await;
    }
    let restarts = t.elapsed();
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.store(true, Ordering::Relaxed);
    client.join().unwrap();
    let (sent, lost) = (sent.load(Ordering::Relaxed), lost.load(Ordering::Relaxed));
    eprintln!("5 restarts in {restarts:?}: {sent} queries, {lost} lost");
    assert!(sent > 100, "client ran ({sent} queries)");
    assert_eq!(lost, 0, "{lost} of {sent} queries lost");
    drop(stable);
}
