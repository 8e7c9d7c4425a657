//! Child processes that never outlive the test binary.
//!
//! Every child is started from one dedicated, never-exiting "spawner" thread with
//! `PR_SET_PDEATHSIG(SIGKILL)` (the kernel ties that signal to the thread that forked the child,
//! so spawning from a test or tokio thread would kill the child when that thread ends) and in a
//! process group of its own. [`ChildGuard`] kills the whole group on drop; if the test binary
//! panics, aborts or is killed, the kernel delivers SIGKILL to the children.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

type Job = (Command, mpsc::Sender<io::Result<Child>>);

fn spawner() -> &'static Mutex<mpsc::Sender<Job>> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<Job>>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("child-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
                // The sender lives in a static, so this loop only ends with the process.
                loop {
                    std::thread::park();
                }
            })
            .map(|_| ())
            .unwrap_or_else(|e| tracing::error!("cannot start the child spawner thread: {e}"));
        Mutex::new(tx)
    })
}

/// Spawn `cmd` in a new process group with SIGKILL as its parent-death signal.
pub fn spawn(mut cmd: Command) -> io::Result<ChildGuard> {
    cmd.process_group(0);
    // SAFETY: only async-signal-safe calls (prctl, getppid, _exit) between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl.
            if libc::getppid() == 1 {
                libc::_exit(1);
            }
            Ok(())
        });
    }
    let (tx, rx) = mpsc::channel();
    spawner()
        .lock()
        .map_err(|_| io::Error::other("child spawner lock poisoned"))?
        .send((cmd, tx))
        .map_err(|_| io::Error::other("child spawner thread is gone"))?;
    let child = rx
        .recv()
        .map_err(|_| io::Error::other("child spawner thread is gone"))??;
    Ok(ChildGuard { child: Some(child) })
}

/// A spawned child; dropping it SIGKILLs its process group and reaps it.
#[derive(Debug)]
pub struct ChildGuard {
    child: Option<Child>,
}

impl ChildGuard {
    /// The child's PID (also its process group id).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// `Some(status)` if the child has exited.
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        match self.child.as_mut() {
            Some(c) => c.try_wait(),
            None => Ok(None),
        }
    }

    /// Send `signal` to the child's whole process group.
    pub fn signal(&self, signal: i32) {
        let pid = self.pid() as i32;
        if pid > 0 {
            // SAFETY: plain kill(2) on our own child's process group.
            unsafe {
                libc::kill(-pid, signal);
            }
        }
    }

    /// SIGTERM, wait up to `grace`, then SIGKILL; returns the exit status.
    pub fn stop(&mut self, grace: Duration) -> io::Result<ExitStatus> {
        self.signal(libc::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Some(st) = self.try_wait()? {
                return Ok(st);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.kill()
    }

    /// SIGKILL the process group and reap the child.
    pub fn kill(&mut self) -> io::Result<ExitStatus> {
        self.signal(libc::SIGKILL);
        match self.child.as_mut() {
            Some(c) => c.wait(),
            None => Err(io::Error::other("child already reaped")),
        }
    }

    /// Take the raw child out; the caller becomes responsible for it (no kill on drop).
    pub fn into_inner(mut self) -> Option<Child> {
        self.child.take()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            if let Ok(Some(_)) = c.try_wait() {
                return;
            }
            let pid = c.id() as i32;
            // SAFETY: kill(2) on our own child's process group.
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
            }
            let _ = c.wait();
        }
    }
}

/// Run `cmd` to completion with its standard output a pipe whose reader is already closed (what
/// `cmd | head -0` does: every write gets EPIPE) and stderr captured.
///
/// The read end is closed before the child starts, and the pipe holds only 4 KiB: should a
/// process forked meanwhile by another test thread briefly hold a copy of the read end, a
/// writer of more than 4 KiB blocks until that copy is gone and then gets EPIPE, instead of
/// succeeding into the buffer.
pub fn output_with_closed_stdout(cmd: &mut Command) -> io::Result<std::process::Output> {
    use std::os::fd::AsRawFd;
    let (reader, writer) = io::pipe()?;
    // SAFETY: fcntl on a pipe fd we own; F_SETPIPE_SZ takes an int and touches no memory.
    if unsafe { libc::fcntl(writer.as_raw_fd(), libc::F_SETPIPE_SZ, 4096) } < 0 {
        return Err(io::Error::last_os_error());
    }
    drop(reader);
    cmd.stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
}

/// Real, effective, saved and filesystem uid and gid of `pid` (`/proc/PID/status`).
pub fn proc_ids(pid: u32) -> anyhow::Result<(Vec<u32>, Vec<u32>)> {
    use anyhow::Context;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> anyhow::Result<Vec<u32>> {
        let line = status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .with_context(|| format!("{name} in /proc/{pid}/status"))?;
        Ok(line
            .split_whitespace()
            .filter_map(|v| v.parse().ok())
            .collect())
    };
    Ok((field("Uid:")?, field("Gid:")?))
}
