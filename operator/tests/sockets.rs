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
use kres_operator::kresd::notify::{NotifyAccess, NotifyListener};
use kres_operator::sockets::{self, BindSpec};
use kres_tests::dns;
use kres_tests::net::{free_port, unique_loopback};

/// Loopback only: nothing these tests start can reach another host (see
/// `kres_tests::net::isolate_loopback_only`).
#[ctor::ctor(unsafe)]
fn private_network() {
    kres_tests::net::isolate_loopback_only()
}

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
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
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
    // And a launcher without a holder fails clearly after --holder-wait, without running kresd.
    let t = Instant::now();
    let out = Command::new(BIN)
        .arg("launch")
        .arg("--holder")
        .arg(&path)
        .args(["--holder-wait", "0.3", "--", "kresd", "-n"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "waited for the holder"
    );
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
    let port6 = std::net::UdpSocket::bind("[::1]:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let service6 = SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port6));
    let binds = [
        format!("udp:{ip}@{port}"),
        format!("tcp:{ip}@{port}"),
        format!("udp:[::1]@{port6}"),
    ];
    let h = Holder::start(dir.path(), &binds);
    let notify =
        NotifyListener::bind(dir.path().join("notify"), NotifyAccess::owner_only()).unwrap();
    let rundir = rundir_with_config();
    let w1 = Worker::launch(&h.path, rundir.path(), probe_addr(), notify.path());
    let w2 = Worker::launch(&h.path, rundir.path(), probe_addr(), notify.path());
    // READY comes from the launcher's PID: launch execs kresd in place.
    ready(&notify, &w1).await;
    ready(&notify, &w2).await;
    assert_eq!(
        dns::resolve(service6, "localhost.", RecordType::A).unwrap(),
        vec!["127.0.0.1"]
    );
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
    // The holder dies (supervisord would restart it): workers keep serving, and a new holder
    // binds the same addresses (SO_REUSEPORT) while w2 still holds the old sockets.
    drop(h);
    assert_eq!(
        dns::resolve(service, "localhost.", RecordType::A).unwrap(),
        vec!["127.0.0.1"]
    );
    let h = Holder::start(dir.path(), &binds);
    let w3 = Worker::launch(&h.path, rundir.path(), probe_addr(), notify.path());
    ready(&notify, &w3).await;
    for addr in [w2.probe, w3.probe, service, service6] {
        assert_eq!(
            dns::resolve(addr, "localhost.", RecordType::A).unwrap(),
            vec!["127.0.0.1"],
            "{addr}"
        );
    }
    drop((w2, w3));
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
    let notify =
        NotifyListener::bind(dir.path().join("notify"), NotifyAccess::owner_only()).unwrap();
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

/// Three workers serve `service` while dnsperf sends 20,000 queries/s for 3 s; one worker after
/// the other is restarted (SIGTERM, exit, start, READY) every 250 ms. `shared`: workers
/// receive the holder's sockets through `launch`; otherwise each kresd binds the address
/// itself (SO_REUSEPORT), for comparison. Returns (restarts, dnsperf's report).
async fn dnsperf_under_restarts(shared: bool) -> (u32, kres_tests::dnsperf::Report) {
    let dir = tempfile::tempdir().unwrap();
    let ip = unique_loopback();
    let port = free_port(ip);
    let h = Holder::start(
        dir.path(),
        &[format!("udp:{ip}@{port}"), format!("tcp:{ip}@{port}")],
    );
    let notify =
        NotifyListener::bind(dir.path().join("notify"), NotifyAccess::owner_only()).unwrap();
    let rundir = rundir_with_config();
    if !shared {
        drop(h);
        std::fs::write(
            rundir.path().join("config.lua"),
            format!("modules.load('stats')\nnet.listen('{ip}', {port})\n"),
        )
        .unwrap();
    }
    let start = |probe: SocketAddr| {
        if shared {
            Worker::launch(
                &dir.path().join("holder.sock"),
                rundir.path(),
                probe,
                notify.path(),
            )
        } else {
            let child = Command::new("kresd")
                .args(["-n", "-c", "config.lua"])
                .arg(rundir.path())
                .env("NOTIFY_SOCKET", notify.path())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .spawn()
                .expect("kresd");
            Worker { child, probe }
        }
    };
    let mut workers = Vec::new();
    for _ in 0..3 {
        let w = start(probe_addr());
        ready(&notify, &w).await;
        workers.push(w);
    }
    let data = dir.path().join("queries");
    std::fs::write(&data, "localhost A\nlocalhost AAAA\n").unwrap();
    let perf = Command::new("dnsperf")
        .args([
            "-s",
            &ip.to_string(),
            "-p",
            &port.to_string(),
            "-c",
            "4",
            "-t",
            "1",
            "-l",
            "3",
            "-Q",
            "20000",
            "-d",
        ])
        .arg(&data)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("dnsperf must be installed (apt-get install dnsperf)");
    let t = Instant::now();
    let mut restarts = 0;
    while t.elapsed() < Duration::from_millis(2500) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let i = restarts as usize % workers.len();
        let old = workers.remove(i);
        let probe = old.probe;
        old.stop();
        let w = start(probe);
        ready(&notify, &w).await;
        workers.insert(i, w);
        restarts += 1;
    }
    let out = perf.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    (restarts, kres_tests::dnsperf::Report::parse(&text).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "high-rate run (3 s of dnsperf at 20k qps), in `make bench`: cargo test -p kres-operator --test sockets -- --ignored"]
async fn dnsperf_zero_loss_with_shared_sockets() {
    let (restarts, report) = dnsperf_under_restarts(true).await;
    eprintln!(
        "shared sockets: {restarts} restarts, {} queries sent, {} lost, rcodes {:?}, slowest {:.3} s",
        report.sent, report.lost, report.rcodes, report.max_latency_s
    );
    assert!(restarts >= 5, "{restarts} restarts");
    // Every query answered NOERROR within dnsperf's 1 s timeout while workers restart.
    report.check_clean(40_000).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark, for comparison with the shared-socket run"]
async fn dnsperf_with_per_worker_reuseport_binds() {
    let (restarts, report) = dnsperf_under_restarts(false).await;
    let (sent, lost) = (report.sent, report.lost);
    eprintln!(
        "per-worker SO_REUSEPORT binds: {restarts} restarts, {sent} queries sent, {lost} lost"
    );
    assert!(
        restarts >= 5 && sent >= 40_000,
        "{restarts} restarts, {sent} sent"
    );
}

/// supervisord, terminated (with its programs) on drop if the test fails midway.
struct Supervisord(Child);

impl Drop for Supervisord {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            common::signal(self.0.id(), "TERM");
            let _ = self.0.wait();
        }
    }
}

/// `supervisorctl -c CONF ARGS...` output.
fn supervisorctl(conf: &Path, args: &[&str]) -> String {
    let out = Command::new("supervisorctl")
        .arg("-c")
        .arg(conf)
        .args(args)
        .output()
        .expect("supervisorctl (apt-get install supervisor)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The command lines the host backend uses, run by the real supervisord 4.2.5: program
/// `sockets` (the holder) and two workers through `launch`. supervisord closes inherited FDs
/// in its children; the launcher fetches its sockets itself, so that does not matter. When
/// running as root (the host-mode default), workers drop to `knot-resolver` and serve port 53;
/// not root fails the test (see `kres_tests::root`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supervisord_runs_holder_and_launched_workers() {
    let root = kres_tests::root::require_root("the privilege drop to knot-resolver and port 53");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ip = unique_loopback();
    let port = if root { 53 } else { free_port(ip) };
    let service = SocketAddr::from((ip, port));
    let (p0, p1) = (probe_addr(), probe_addr());
    std::fs::write(d.join("config.lua"), "modules.load('stats')\n").unwrap();
    let user = if root {
        let st = Command::new("chown")
            .args(["-R", "knot-resolver:knot-resolver"])
            .arg(d)
            .status()
            .unwrap();
        assert!(
            st.success(),
            "chown to knot-resolver (is knot-resolver installed?)"
        );
        "--user knot-resolver "
    } else {
        ""
    };
    // Workers running as knot-resolver send through the socket's group (mode 0660).
    let access = NotifyAccess {
        group: root.then(|| {
            kres_operator::privilege::lookup_user("knot-resolver")
                .unwrap()
                .gid
        }),
        ..NotifyAccess::owner_only()
    };
    let notify = NotifyListener::bind(d.join("notify"), access).unwrap();
    let (dp, holder) = (d.display(), d.join("holder.sock"));
    let holder = holder.display();
    let mut conf = format!(
        "[supervisord]\nlogfile={dp}/supervisord.log\npidfile={dp}/supervisord.pid\n\
         [unix_http_server]\nfile={dp}/supervisor.sock\n\
         [rpcinterface:supervisor]\nsupervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n\
         [supervisorctl]\nserverurl=unix://{dp}/supervisor.sock\n\
         [program:sockets]\ncommand={BIN} socket-holder --socket {holder} --bind udp:{ip}@{port} --bind tcp:{ip}@{port}\n\
         priority=1\nstartsecs=0\nautorestart=true\nstdout_logfile={dp}/sockets.log\nredirect_stderr=true\n\
         environment=NOTIFY_SOCKET=\"{}\"\n\
         [group:kresd]\nprograms=kresd0,kresd1\n",
        notify.path().display()
    );
    for (i, p) in [p0, p1].iter().enumerate() {
        conf += &format!(
            "[program:kresd{i}]\ncommand={BIN} launch --holder {holder} --probe-listen {}@{} {user}-- kresd -n -c config.lua {dp}\n\
             environment=SYSTEMD_INSTANCE=\"{i}\",NOTIFY_SOCKET=\"{}\"\nstartsecs=0\nstopwaitsecs=5\n\
             stdout_logfile={dp}/kresd{i}.log\nredirect_stderr=true\n",
            p.ip(),
            p.port(),
            notify.path().display()
        );
    }
    let conf_path = d.join("supervisord.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let mut sup = Supervisord(
        Command::new("supervisord")
            .arg("-n")
            .arg("-c")
            .arg(&conf_path)
            .spawn()
            .expect("supervisord (apt-get install supervisor)"),
    );
    let mut pids = Vec::new();
    for name in ["sockets", "kresd:kresd0", "kresd:kresd1"] {
        let mut pid = 0;
        common::wait_for(
            || {
                pid = supervisorctl(&conf_path, &["pid", name])
                    .trim()
                    .parse()
                    .unwrap_or(0);
                pid > 0
            },
            name,
        );
        pids.push(pid);
    }
    // The holder reports READY=1 once it serves.
    let holder_pid = pids.remove(0);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    notify.wait_ready(holder_pid, deadline).await.unwrap();
    for pid in &pids {
        // The PID supervisord reports is the one kresd sends READY=1 from.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        notify.wait_ready(*pid, deadline).await.unwrap_or_else(|e| {
            panic!(
                "{e}\n{}",
                std::fs::read_to_string(d.join("kresd0.log")).unwrap_or_default()
            )
        });
        if root {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
            let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
            assert!(
                !uid_line.split_whitespace().skip(1).any(|u| u == "0"),
                "worker runs unprivileged: {uid_line}"
            );
        }
    }
    for addr in [service, p0, p1] {
        assert_eq!(
            dns::resolve(addr, "localhost.", RecordType::A).unwrap(),
            vec!["127.0.0.1"],
            "{addr}"
        );
    }
    assert_eq!(tcp_query(service, "localhost."), ResponseCode::NoError);
    assert!(supervisorctl(&conf_path, &["shutdown"]).contains("Shut down"));
    assert!(sup.0.wait().unwrap().success());
}
