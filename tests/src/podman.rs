//! Real podman (rootful, `--runtime runc`) with a private image store, for tests of the image
//! `make image` builds (image/build.sh).
//!
//! Every call is bounded by coreutils `timeout`. [`Podman`] keeps its storage in a temp dir of
//! its own, so tests never touch (or depend on) the host's podman images; containers it
//! started are removed on drop, then the store with the temp dir.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tempfile::TempDir;

/// Resource limits for `podman run`: podman's defaults ask for more than this sandbox's hard
/// limits (nofile 20000, nproc 32768) and fail with "error setting rlimit".
pub const RUN_LIMITS: [&str; 4] = [
    "--ulimit",
    "nofile=20000:20000",
    "--ulimit",
    "nproc=32768:32768",
];

/// How long one podman command may take before the test fails (hung-only bound).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

/// What image/build.sh wrote next to the archives (`build-info`, `key=value` lines).
#[derive(Debug, Clone)]
pub struct ImageBuild {
    /// The directory holding `kres-operator.oci.tar`, `kres-operator.docker.tar`, `build-info`.
    pub dir: PathBuf,
    /// The image reference the archives carry (`localhost/kres-operator:VERSION`).
    pub reference: String,
    /// The image's default user as `UID:GID`.
    pub user: String,
}

impl ImageBuild {
    /// The build output: `$KRES_IMAGE_OUT`, else `<cargo target dir>/image` (the target dir is
    /// found from the test executable, `<target>/<profile>/deps/<test>`).
    pub fn locate() -> Result<ImageBuild> {
        let dir = match std::env::var_os("KRES_IMAGE_OUT") {
            Some(d) => PathBuf::from(d),
            None => {
                let exe = std::env::current_exe()?;
                exe.ancestors()
                    .nth(3)
                    .context("cargo target dir above the test executable")?
                    .join("image")
            }
        };
        let info_path = dir.join("build-info");
        let info = std::fs::read_to_string(&info_path).with_context(|| {
            format!(
                "{} missing: build the image first (`make image`; `make test` does)",
                info_path.display()
            )
        })?;
        let fields: BTreeMap<&str, &str> = info.lines().filter_map(|l| l.split_once('=')).collect();
        let field = |k: &str| -> Result<String> {
            fields
                .get(k)
                .map(|v| v.to_string())
                .with_context(|| format!("{k} in {}", info_path.display()))
        };
        Ok(ImageBuild {
            reference: field("ref")?,
            user: field("user")?,
            dir,
        })
    }

    /// The OCI archive.
    pub fn oci_archive(&self) -> PathBuf {
        self.dir.join("kres-operator.oci.tar")
    }

    /// The docker-archive.
    pub fn docker_archive(&self) -> PathBuf {
        self.dir.join("kres-operator.docker.tar")
    }
}

/// A podman with a private store (graph root and run root in a temp dir).
pub struct Podman {
    tmp: TempDir,
    containers: Vec<String>,
}

impl Podman {
    /// A podman with an empty store of its own under /var/tmp (on disk: overlay needs a real
    /// filesystem, and layers are too big for a tmpfs).
    pub fn new() -> Result<Podman> {
        let tmp = tempfile::Builder::new()
            .prefix("kres-podman-")
            .tempdir_in("/var/tmp")?;
        Ok(Podman {
            tmp,
            containers: Vec::new(),
        })
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new("timeout");
        cmd.arg("--kill-after=5")
            .arg(COMMAND_TIMEOUT.as_secs().to_string())
            .arg("podman")
            .arg("--root")
            .arg(self.tmp.path().join("storage"))
            .arg("--runroot")
            .arg(self.tmp.path().join("run"))
            .args(["--runtime", "runc"]);
        cmd
    }

    /// Run `podman ARGS` and return its output, whatever the exit status.
    pub fn output(&self, args: &[&str]) -> Result<Output> {
        let out = self
            .command()
            .args(args)
            .output()
            .context("run podman (is it installed? `make deps`)")?;
        if out.status.code() == Some(124) {
            bail!("podman {args:?} did not finish within {COMMAND_TIMEOUT:?}");
        }
        Ok(out)
    }

    /// Run `podman ARGS`, fail on a non-zero exit (with its stderr), return stdout.
    pub fn run(&self, args: &[&str]) -> Result<String> {
        let out = self.output(args)?;
        if !out.status.success() {
            bail!(
                "podman {args:?} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Load an archive (`oci-archive` or `docker-archive`) into the private store.
    pub fn load(&self, archive: &Path) -> Result<String> {
        let path = archive
            .to_str()
            .with_context(|| format!("non-UTF-8 path {}", archive.display()))?;
        self.run(&["load", "--quiet", "--input", path])
    }

    /// `podman run --detach --name NAME ARGS`; the container is removed on drop.
    pub fn start(&mut self, name: &str, args: &[&str]) -> Result<()> {
        let mut all = vec!["run", "--detach", "--name", name];
        all.extend_from_slice(args);
        self.containers.push(name.to_string());
        self.run(&all).map(|_| ())
    }

    /// `podman inspect --format FORMAT NAME`, trimmed.
    pub fn inspect(&self, name: &str, format: &str) -> Result<String> {
        Ok(self
            .run(&["inspect", "--format", format, name])?
            .trim()
            .to_string())
    }

    /// The host pid of a running container's first process.
    pub fn pid(&self, name: &str) -> Result<u32> {
        let pid = self.inspect(name, "{{.State.Pid}}")?;
        pid.parse()
            .with_context(|| format!("pid of container {name}: {pid:?}"))
    }

    /// A container's stdout and stderr so far (for failure messages).
    pub fn logs(&self, name: &str) -> String {
        match self.output(&["logs", name]) {
            Ok(o) => format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => format!("(no logs: {e:#})"),
        }
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        for name in std::mem::take(&mut self.containers) {
            if let Err(e) = self.run(&["rm", "--force", "--time", "0", &name]) {
                eprintln!("cleanup: {e:#}");
            }
        }
        // Deletes (and unmounts) the layers; the store itself goes with the temp dir. Not
        // `system reset`: that also deletes the host's podman networks.
        if let Err(e) = self.run(&["rmi", "--all", "--force"]) {
            eprintln!("cleanup: {e:#}");
        }
    }
}
