//! The file source: `config.yaml` read at start, re-read on demand (SIGHUP) and, with `--watch`,
//! when it changes.
//!
//! Watching polls the path once a second and compares (device, inode, mtime, size) of what the
//! path resolves to. Measured choice over inotify (`notify`): a Kubernetes ConfigMap mount swaps
//! the `..data` symlink atomically, which inotify on the file never reports (the watched inode
//! does not change) and which on the directory arrives as a burst of events to debounce; a stat
//! per second costs ~2 µs, needs no extra dependency, and works the same for editors that
//! write-and-rename, plain overwrites, and symlink swaps. Content is compared too, so a touch
//! without change is no reload.
//!
//! An invalid file on reload is logged with every error (JSON pointer and line:column) and the
//! previous config stays in force: the fleet is not touched.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use kres_crd::config::{ConfigErrors, ResolverConfig};
use tokio::sync::{Notify, watch};

/// Reading the config file failed.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a valid config.
    #[error("{path}: invalid configuration:\n{errors}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Every error found.
        errors: ConfigErrors,
    },
}

/// Read and validate the config file.
pub fn load(path: &Path) -> Result<ResolverConfig, SourceError> {
    let text = std::fs::read(path).map_err(|source| SourceError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    ResolverConfig::from_yaml_bytes(&text).map_err(|errors| SourceError::Invalid {
        path: path.to_path_buf(),
        errors,
    })
}

/// What identifies one version of the file behind `path` (symlinks followed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    mtime_ns: i128,
    len: u64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp {
        dev: m.dev(),
        ino: m.ino(),
        mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
        len: m.len(),
    })
}

/// A file source publishing the current valid config.
pub struct FileSource {
    path: PathBuf,
    tx: watch::Sender<Option<Arc<ResolverConfig>>>,
    reload: Arc<Notify>,
    /// The file version read last.
    read: Option<Stamp>,
}

impl FileSource {
    /// Read `path` now; an invalid or missing file is an error (nothing to start with).
    pub fn open(path: &Path) -> Result<FileSource, SourceError> {
        let read = stamp(path);
        let cfg = load(path)?;
        let (tx, _) = watch::channel(Some(Arc::new(cfg)));
        Ok(FileSource {
            path: path.to_path_buf(),
            tx,
            reload: Arc::new(Notify::new()),
            read,
        })
    }

    /// Receiver of the current valid config.
    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<ResolverConfig>>> {
        self.tx.subscribe()
    }

    /// A handle that triggers a re-read (what SIGHUP does).
    pub fn reload_handle(&self) -> Arc<Notify> {
        self.reload.clone()
    }

    /// Re-read the file; publish it when valid and different. Returns whether it changed.
    pub fn reload(&self) -> bool {
        self.publish(load(&self.path))
    }

    /// [`Self::reload`] with the parsing (up to 4 MiB of YAML) on the blocking pool, so the
    /// runtime thread (reconcile loop, API) is not held by it.
    async fn reload_off_thread(&self) -> bool {
        let path = self.path.clone();
        match tokio::task::spawn_blocking(move || load(&path)).await {
            Ok(loaded) => self.publish(loaded),
            Err(e) => {
                tracing::error!(error = %e, "configuration re-read failed; the running fleet is kept");
                false
            }
        }
    }

    /// Publish a loaded config when valid and different. Returns whether it changed.
    fn publish(&self, loaded: Result<ResolverConfig, SourceError>) -> bool {
        match loaded {
            Ok(cfg) => {
                let changed = self.tx.send_if_modified(|cur| {
                    if cur.as_deref() == Some(&cfg) {
                        return false;
                    }
                    *cur = Some(Arc::new(cfg));
                    true
                });
                if changed {
                    tracing::info!(path = %self.path.display(), "configuration changed");
                } else {
                    tracing::info!(path = %self.path.display(), "configuration re-read; unchanged");
                }
                changed
            }
            Err(e) => {
                tracing::error!(error = %e, "configuration rejected; the running fleet is kept");
                false
            }
        }
    }

    /// Serve reload requests, and with `watch` poll the file every `interval`. Runs forever.
    pub async fn run(self, watch: bool, interval: Duration) {
        let mut last = self.read;
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = self.reload.notified() => {
                    last = stamp(&self.path);
                    self.reload_off_thread().await;
                }
                _ = tick.tick(), if watch => {
                    let now = stamp(&self.path);
                    if now != last {
                        last = now;
                        if now.is_some() {
                            self.reload_off_thread().await;
                        } else {
                            tracing::warn!(path = %self.path.display(), "configuration file is gone; keeping the last one");
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, workers: u32) {
        std::fs::write(path, format!("workers: {workers}\n")).expect("write");
    }

    fn workers(rx: &watch::Receiver<Option<Arc<ResolverConfig>>>) -> usize {
        rx.borrow().as_ref().map(|c| c.worker_count()).unwrap_or(0)
    }

    #[tokio::test]
    async fn reload_keeps_the_last_valid_config() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("config.yaml");
        write(&path, 2);
        let src = FileSource::open(&path).expect("valid");
        let rx = src.subscribe();
        assert_eq!(workers(&rx), 2);
        std::fs::write(&path, "workers: 2\nno-such-key: 1\n").expect("write");
        assert!(!src.reload());
        assert_eq!(workers(&rx), 2);
        write(&path, 3);
        assert!(src.reload());
        assert_eq!(workers(&rx), 3);
        assert!(!src.reload(), "same content is no change");
    }

    #[test]
    fn invalid_file_names_the_field() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("config.yaml");
        std::fs::write(&path, "workers: 0\n").expect("write");
        let err = FileSource::open(&path).err().expect("invalid");
        assert!(err.to_string().contains("/workers"), "{err}");
    }

    #[tokio::test]
    async fn watch_follows_configmap_style_symlink_swaps() {
        // Kubernetes layout: config.yaml -> ..data/config.yaml, ..data -> ..<timestamp>
        let dir = tempfile::tempdir().expect("tmp");
        let d = dir.path();
        std::fs::create_dir(d.join("..v1")).expect("mkdir");
        write(&d.join("..v1/config.yaml"), 1);
        std::os::unix::fs::symlink("..v1", d.join("..data")).expect("symlink");
        std::os::unix::fs::symlink("..data/config.yaml", d.join("config.yaml")).expect("symlink");
        let src = FileSource::open(&d.join("config.yaml")).expect("valid");
        let mut rx = src.subscribe();
        tokio::spawn(src.run(true, Duration::from_millis(20)));
        std::fs::create_dir(d.join("..v2")).expect("mkdir");
        write(&d.join("..v2/config.yaml"), 4);
        std::os::unix::fs::symlink("..v2", d.join("..data_tmp")).expect("symlink");
        std::fs::rename(d.join("..data_tmp"), d.join("..data")).expect("atomic swap");
        std::fs::remove_dir_all(d.join("..v1")).expect("old version gone");
        tokio::time::timeout(Duration::from_secs(5), rx.changed())
            .await
            .expect("change seen")
            .expect("sender alive");
        assert_eq!(workers(&rx), 4);
    }
}
