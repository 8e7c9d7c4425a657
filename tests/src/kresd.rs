//! Run a real kresd 5.x on a Lua config for a test.
//!
//! `Kresd::start(lua)` writes the config into a temp dir, spawns `kresd -n -c CONFIG RUNDIR` with
//! `NOTIFY_SOCKET` pointing at a datagram socket owned by the harness, and returns once kresd sent
//! `READY=1`. An early exit is reported with kresd's stderr. The process is killed on drop.

use std::ffi::OsString;
use std::fs;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tempfile::TempDir;

use crate::control::Control;

/// How to start kresd.
#[derive(Debug)]
pub struct KresdOptions {
    /// Extra command-line arguments (e.g. `-S FD`).
    pub args: Vec<OsString>,
    /// Extra environment variables.
    pub env: Vec<(OsString, OsString)>,
    /// How long to wait for `READY=1`.
    pub ready_timeout: Duration,
    /// A file descriptor to give kresd as its stdin (FD 0), e.g. a socket for `-S 0`.
    pub stdin: Option<OwnedFd>,
}

impl Default for KresdOptions {
    fn default() -> Self {
        KresdOptions {
            args: Vec::new(),
            env: Vec::new(),
            ready_timeout: Duration::from_secs(10),
            stdin: None,
        }
    }
}

/// A running kresd; killed when dropped.
pub struct Kresd {
    child: Child,
    /// The working directory holding the config, the rundir and the stderr log.
    pub dir: PathBuf,
    /// kresd's rundir (its working directory; holds `control/<pid>`).
    pub rundir: PathBuf,
    stderr_path: PathBuf,
    _tmp: Option<TempDir>,
}

impl Kresd {
    /// Start kresd on `lua` in a fresh temp dir and wait until it is ready.
    pub fn start(lua: &str) -> Result<Kresd> {
        let tmp = tempfile::Builder::new().prefix("kresd-test-").tempdir()?;
        let dir = tmp.path().to_path_buf();
        let mut k = Kresd::start_in(&dir, lua, &KresdOptions::default())?;
        k._tmp = Some(tmp);
        Ok(k)
    }

    /// Start kresd on `lua` inside `dir` (which must exist; files a test wants kresd to read,
    /// such as RPZ files, can be placed there first).
    pub fn start_in(dir: &Path, lua: &str, opts: &KresdOptions) -> Result<Kresd> {
        let config = dir.join("kresd.lua");
        fs::write(&config, lua)?;
        let rundir = dir.join("run");
        fs::create_dir_all(&rundir)?;
        let notify_path = dir.join("notify.sock");
        let _ = fs::remove_file(&notify_path);
        let notify = UnixDatagram::bind(&notify_path).context("bind NOTIFY_SOCKET")?;
        notify.set_read_timeout(Some(Duration::from_millis(50)))?;
        let stderr_path = dir.join("kresd.stderr");
        let stderr = fs::File::create(&stderr_path)?;
        let mut cmd = Command::new("kresd");
        cmd.arg("-n").arg("-c").arg(&config);
        cmd.args(&opts.args);
        cmd.arg(&rundir)
            .env("NOTIFY_SOCKET", &notify_path)
            .envs(opts.env.iter().map(|(k, v)| (k, v)))
            .stdin(match &opts.stdin {
                Some(fd) => Stdio::from(fd.try_clone()?),
                None => Stdio::null(),
            })
            .stdout(stderr.try_clone()?)
            .stderr(stderr);
        let child = cmd
            .spawn()
            .context("spawn kresd (is knot-resolver installed?)")?;
        let mut k = Kresd {
            child,
            dir: dir.to_path_buf(),
            rundir,
            stderr_path,
            _tmp: None,
        };
        k.wait_ready(&notify, opts.ready_timeout)?;
        Ok(k)
    }

    fn wait_ready(&mut self, notify: &UnixDatagram, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 4096];
        loop {
            if let Ok(n) = notify.recv(&mut buf)
                && String::from_utf8_lossy(&buf[..n])
                    .lines()
                    .any(|l| l == "READY=1")
            {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!("kresd exited early ({status}): {}", self.error_line());
            }
            if Instant::now() > deadline {
                bail!(
                    "kresd not ready after {timeout:?}; stderr: {}",
                    self.stderr()
                );
            }
        }
    }

    /// kresd's log so far (stdout and stderr: the configured log target may be either).
    pub fn stderr(&self) -> String {
        fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// The most telling line of stderr: the first error line, else the last line.
    pub fn error_line(&self) -> String {
        let err = self.stderr();
        err.lines()
            .find(|l| l.contains("error") || l.contains("rror:"))
            .or_else(|| err.lines().last())
            .unwrap_or("")
            .to_string()
    }

    /// kresd's PID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether kresd is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Path of this kresd's control socket.
    pub fn control_path(&self) -> PathBuf {
        self.rundir.join("control").join(self.pid().to_string())
    }

    /// A new control-socket session.
    pub fn control(&self) -> Result<Control> {
        Control::connect(&self.control_path())
    }

    /// Evaluate a Lua expression over the control socket and return it as JSON.
    pub fn eval_json(&self, expr: &str) -> Result<serde_json::Value> {
        self.control()?.eval_json(expr)
    }
}

impl Drop for Kresd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start kresd on `lua` and expect it to fail; return its error line.
pub fn start_failure(lua: &str) -> Result<String> {
    match Kresd::start(lua) {
        Ok(_) => bail!("kresd started, but it was expected to fail"),
        Err(e) => Ok(format!("{e:#}")),
    }
}
