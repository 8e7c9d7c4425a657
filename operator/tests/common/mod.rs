//! Shared helpers for the operator's integration tests: spawning the real kresd 5.6.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A kresd child in its own temp rundir; killed on drop.
pub struct Kresd {
    pub child: Child,
    pub rundir: tempfile::TempDir,
}

impl Kresd {
    /// `kresd -n -c config.lua RUNDIR` with `lua` as config and `env` added. Panics (test
    /// failure) when kresd is not installed.
    pub fn spawn(lua: &str, env: &[(&str, &Path)]) -> Kresd {
        let rundir = tempfile::tempdir().expect("tempdir");
        std::fs::write(rundir.path().join("config.lua"), lua).expect("write config");
        let mut cmd = Command::new("kresd");
        cmd.args(["-n", "-c", "config.lua"]).arg(rundir.path());
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let child = cmd
            .spawn()
            .expect("kresd 5.6 must be installed (apt-get install knot-resolver)");
        Kresd { child, rundir }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn control_path(&self) -> PathBuf {
        self.rundir
            .path()
            .join("control")
            .join(self.pid().to_string())
    }

    /// Wait until the control socket accepts connections: kresd binds the path before it
    /// calls listen(), so a connect between the two is refused although the file exists.
    pub fn wait_control(&self) {
        let path = self.control_path();
        wait_for(
            || std::os::unix::net::UnixStream::connect(&path).is_ok(),
            "kresd control socket to accept",
        );
    }
}

impl Drop for Kresd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Poll `f` for up to 5 s.
pub fn wait_for(mut f: impl FnMut() -> bool, what: &str) {
    let t = Instant::now();
    while !f() {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// `kill -SIG pid`.
pub fn signal(pid: u32, sig: &str) {
    let st = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .expect("kill");
    assert!(st.success(), "kill -{sig} {pid}");
}
