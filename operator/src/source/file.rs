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
//! Every version goes through the source's [`Build`] (validation and desired state): an invalid
//! file on reload is logged with every error (JSON pointer and line:column) and the previous
//! config stays in force: the fleet is not touched. Changes submitted by the API (and reverts,
//! rollbacks) are written to the file first ([`super::persist::write_back`]), then published.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kres_crd::config::{ConfigErrors, ResolverConfig};
use tokio::sync::{Notify, watch};

use super::persist::{PersistError, write_back};
use super::{Accepted, Build, Origin, Prepare};
use crate::reconcile::{ChangeSeq, ConfigRejection, RejectedField};

/// Reading, checking or writing the config file failed.
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
    /// The config is not valid (every rule of the pipeline, with pointers).
    #[error("{path}: invalid configuration:\n{errors}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Every error found.
        errors: ConfigErrors,
    },
    /// The file could not be written.
    #[error(transparent)]
    Write(#[from] PersistError),
    /// The config was not the one the change was based on.
    #[error("the configuration changed meanwhile")]
    BaseChanged,
    /// The config could not be serialised to YAML.
    #[error("cannot serialise the configuration: {0}")]
    Serialise(String),
}

impl SourceError {
    /// What the status shows of an error about the file's content or readability (None for
    /// errors of a change submitted through the API, which its caller is told about).
    fn rejection(&self) -> Option<ConfigRejection> {
        let field = |pointer: &str, message: String| RejectedField {
            pointer: pointer.to_string(),
            message,
        };
        match self {
            SourceError::Read { path, source } => Some(ConfigRejection {
                source: path.display().to_string(),
                errors: vec![field("", source.to_string())],
            }),
            SourceError::Invalid { path, errors } => Some(ConfigRejection {
                source: path.display().to_string(),
                errors: errors
                    .errors()
                    .iter()
                    .map(|e| field(&e.pointer, e.message.clone()))
                    .collect(),
            }),
            _ => None,
        }
    }
}

/// Read the config file (bounded by the datamodel's size limit) and parse it.
pub fn load(path: &Path) -> Result<(ResolverConfig, String), SourceError> {
    let read_err = |source| SourceError::Read {
        path: path.to_path_buf(),
        source,
    };
    let mut text = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| {
            std::io::Read::read_to_end(
                &mut std::io::Read::take(f, kres_crd::config::MAX_INPUT_BYTES as u64 + 1),
                &mut text,
            )
        })
        .map_err(read_err)?;
    let invalid = |errors| SourceError::Invalid {
        path: path.to_path_buf(),
        errors,
    };
    if text.len() > kres_crd::config::MAX_INPUT_BYTES {
        return Err(invalid(ConfigErrors::single(
            "",
            format!(
                "input is larger than {} bytes (4 MiB), the limit for a config",
                kres_crd::config::MAX_INPUT_BYTES
            ),
        )));
    }
    let cfg = ResolverConfig::from_yaml_bytes(&text).map_err(invalid)?;
    // from_yaml_bytes refuses non-UTF-8.
    Ok((cfg, String::from_utf8_lossy(&text).into_owned()))
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

/// Mutable state, changed under one lock (reads and writes of the file are serialised).
struct State {
    /// The file version read or written last.
    read: Option<Stamp>,
    /// The last sequence number given out.
    seq: ChangeSeq,
}

/// `build`, then `prepare`, with errors about the file at `path`.
fn accept(
    path: &Path,
    build: &Build,
    prepare: Option<&Prepare>,
    config: &ResolverConfig,
) -> Result<crate::reconcile::Desired, SourceError> {
    let invalid = |errors| SourceError::Invalid {
        path: path.to_path_buf(),
        errors,
    };
    let desired = build(config).map_err(invalid)?;
    if let Some(prepare) = prepare {
        prepare(config).map_err(invalid)?;
    }
    Ok(desired)
}

/// A file source publishing the current accepted config.
pub struct FileSource {
    path: PathBuf,
    build: Build,
    prepare: Option<Prepare>,
    tx: watch::Sender<Option<Arc<Accepted>>>,
    rejected: watch::Sender<Option<ConfigRejection>>,
    reload: Arc<Notify>,
    state: Mutex<State>,
}

impl FileSource {
    /// Read `path` now and run it through `build` (then `prepare`); an invalid or missing file
    /// is an error (nothing to start with).
    pub fn open(
        path: &Path,
        build: Build,
        prepare: Option<Prepare>,
    ) -> Result<Arc<FileSource>, SourceError> {
        let read = stamp(path);
        let (config, text) = load(path)?;
        let desired = accept(path, &build, prepare.as_ref(), &config)?;
        let first = Accepted {
            seq: 1,
            origin: Origin::File,
            config,
            text,
            desired,
        };
        let (tx, _) = watch::channel(Some(Arc::new(first)));
        Ok(Arc::new(FileSource {
            path: path.to_path_buf(),
            build,
            prepare,
            tx,
            rejected: watch::channel(None).0,
            reload: Arc::new(Notify::new()),
            state: Mutex::new(State { read, seq: 1 }),
        }))
    }

    /// The config file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Run `config` through the pipeline and prepare it: what every change goes through before
    /// it is written or published.
    fn accept(&self, config: &ResolverConfig) -> Result<crate::reconcile::Desired, SourceError> {
        accept(&self.path, &self.build, self.prepare.as_ref(), config)
    }

    /// Run `config` through the pipeline without publishing or preparing it (dry runs: nothing
    /// on the machine changes).
    pub fn build(&self, config: &ResolverConfig) -> Result<crate::reconcile::Desired, SourceError> {
        (self.build)(config).map_err(|errors| SourceError::Invalid {
            path: self.path.clone(),
            errors,
        })
    }

    /// Receiver of the current accepted config.
    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<Accepted>>> {
        self.tx.subscribe()
    }

    /// Receiver of why the file's latest content was refused (None once it is accepted again).
    pub fn subscribe_rejections(&self) -> watch::Receiver<Option<ConfigRejection>> {
        self.rejected.subscribe()
    }

    /// The current accepted config.
    pub fn current(&self) -> Option<Arc<Accepted>> {
        self.tx.borrow().clone()
    }

    /// A handle that triggers a re-read (what SIGHUP does).
    pub fn reload_handle(&self) -> Arc<Notify> {
        self.reload.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Publish `config` unless it equals the current one; returns what is current afterwards.
    fn publish(
        &self,
        state: &mut State,
        config: ResolverConfig,
        text: String,
        desired: crate::reconcile::Desired,
        origin: Origin,
    ) -> Arc<Accepted> {
        // What is written and published now is valid: an earlier refusal no longer describes
        // the file.
        self.rejected.send_if_modified(|r| r.take().is_some());
        if let Some(cur) = self.current()
            && cur.config == config
        {
            return cur;
        }
        state.seq += 1;
        let accepted = Arc::new(Accepted {
            seq: state.seq,
            origin,
            config,
            text,
            desired,
        });
        tracing::info!(seq = state.seq, ?origin, revision = %accepted.desired.revision, "configuration accepted");
        self.tx.send_replace(Some(accepted.clone()));
        accepted
    }

    /// Re-read the file; publish it when valid and different. Returns the current accepted
    /// config afterwards (the previous one when the file did not change).
    pub fn reload(&self) -> Result<Arc<Accepted>, SourceError> {
        let mut state = self.lock();
        state.read = stamp(&self.path);
        let before = state.seq;
        let result = load(&self.path).and_then(|(config, text)| {
            let desired = self.accept(&config)?;
            Ok(self.publish(&mut state, config, text, desired, Origin::File))
        });
        match &result {
            // One outcome line per re-read (tests wait for it as proof the re-read happened).
            Ok(a) if a.seq != before => {
                tracing::info!(path = %self.path.display(), seq = a.seq, "configuration changed")
            }
            Ok(a) => {
                tracing::info!(path = %self.path.display(), seq = a.seq, "configuration re-read; unchanged")
            }
            Err(e) => {
                tracing::error!(error = %e, "configuration rejected; the running fleet is kept")
            }
        }
        let rejection = result.as_ref().err().and_then(|e| e.rejection());
        self.rejected.send_if_modified(|r| {
            let changed = *r != rejection;
            *r = rejection;
            changed
        });
        result
    }

    /// Make `config` the desired config: check it (every rule of the pipeline), check `base`
    /// against the current config (optimistic concurrency), write it to the file (dated backup
    /// of the previous content), publish it. A config equal to the current one is not written
    /// again; the current one is returned.
    pub fn submit(
        &self,
        config: ResolverConfig,
        origin: Origin,
        base: impl FnOnce(Option<&ResolverConfig>) -> bool,
    ) -> Result<Arc<Accepted>, SourceError> {
        let desired = self.accept(&config)?;
        let mut state = self.lock();
        let current = self.current();
        if !base(current.as_deref().map(|a| &a.config)) {
            return Err(SourceError::BaseChanged);
        }
        if let Some(cur) = current
            && cur.config == config
        {
            return Ok(cur);
        }
        let text =
            serde_norway::to_string(&config).map_err(|e| SourceError::Serialise(e.to_string()))?;
        write_back(&self.path, &text)?;
        state.read = stamp(&self.path);
        Ok(self.publish(&mut state, config, text, desired, origin))
    }

    /// Make the config `text` (kept as is, comments included) the desired config: checked by
    /// the pipeline, written to the file (dated backup), published. With `only_if`, nothing
    /// happens (None) unless change `only_if` is still the current one.
    pub fn submit_text(
        &self,
        text: &str,
        origin: Origin,
        only_if: Option<ChangeSeq>,
    ) -> Result<Option<Arc<Accepted>>, SourceError> {
        let invalid = |errors| SourceError::Invalid {
            path: self.path.clone(),
            errors,
        };
        let config = ResolverConfig::from_yaml_str(text).map_err(invalid)?;
        let desired = self.accept(&config)?;
        let mut state = self.lock();
        if let Some(seq) = only_if
            && self.current().is_none_or(|c| c.seq != seq)
        {
            return Ok(None);
        }
        write_back(&self.path, text)?;
        state.read = stamp(&self.path);
        Ok(Some(self.publish(
            &mut state,
            config,
            text.to_owned(),
            desired,
            origin,
        )))
    }

    /// Put `text` (the last good config) back as the desired config after the fleet rejected
    /// change `seq`, unless a later change came meanwhile (then None).
    pub fn revert(&self, seq: ChangeSeq, text: &str) -> Result<Option<Arc<Accepted>>, SourceError> {
        self.submit_text(text, Origin::Revert, Some(seq))
    }

    /// [`Self::reload`] on the blocking pool: reading, parsing (up to 4 MiB of YAML), validating
    /// and rendering stay off the runtime thread (reconcile loop, API).
    async fn reload_off_thread(self: &Arc<Self>) {
        let this = self.clone();
        if let Err(e) = tokio::task::spawn_blocking(move || this.reload()).await {
            tracing::error!(error = %e, "configuration re-read failed; the running fleet is kept");
        }
    }

    /// Serve reload requests, and with `watch` poll the file every `interval`. Runs forever.
    pub async fn run(self: Arc<Self>, watch: bool, interval: Duration) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = self.reload.notified() => {
                    self.reload_off_thread().await;
                }
                _ = tick.tick(), if watch => {
                    let now = stamp(&self.path);
                    let last = self.lock().read;
                    if now != last {
                        if now.is_some() {
                            self.reload_off_thread().await;
                        } else {
                            self.lock().read = now;
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

    fn workers(rx: &watch::Receiver<Option<Arc<Accepted>>>) -> usize {
        rx.borrow()
            .as_ref()
            .map(|c| c.config.worker_count())
            .unwrap_or(0)
    }

    fn host_build() -> Build {
        Arc::new(|cfg| {
            crate::host::desired::desired_from(
                cfg,
                crate::host::run::SOCKETS,
                Duration::from_secs(1),
            )
        })
    }

    #[tokio::test]
    async fn reload_keeps_the_last_valid_config() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("config.yaml");
        write(&path, 2);
        let src = FileSource::open(&path, host_build(), None).expect("valid");
        let rx = src.subscribe();
        let rejections = src.subscribe_rejections();
        assert_eq!(workers(&rx), 2);
        std::fs::write(&path, "workers: 2\nno-such-key: 1\n").expect("write");
        assert!(src.reload().is_err());
        assert_eq!(workers(&rx), 2);
        let refused = rejections
            .borrow()
            .clone()
            .expect("the refusal is published");
        assert_eq!(refused.source, path.display().to_string());
        assert_eq!(
            refused
                .errors
                .iter()
                .map(|e| e.pointer.as_str())
                .collect::<Vec<_>>(),
            ["/no-such-key"],
            "{refused:?}"
        );
        write(&path, 3);
        assert_eq!(src.reload().expect("valid").seq, 2);
        assert_eq!(workers(&rx), 3);
        assert_eq!(*rejections.borrow(), None, "a valid re-read clears it");
        assert_eq!(
            src.reload().expect("valid").seq,
            2,
            "same content is no change"
        );
    }

    #[test]
    fn the_pipeline_refuses_what_only_rendering_found_before() {
        // A trust anchor that is also a negative trust anchor (kresd refuses it), and an
        // interface name host mode cannot bind: each reported by pointer, the config kept.
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("config.yaml");
        write(&path, 2);
        let src = FileSource::open(&path, host_build(), None).expect("valid");
        for (text, pointer) in [
            (
                "dnssec:\n  trust-anchors: ['a.test. DS 1 8 2 AB']\n  negative-trust-anchors: [a.test]\n",
                "/dnssec/negative-trust-anchors/0",
            ),
            (
                "network:\n  listen:\n    - interface: lo\n",
                "/network/listen/0/interface",
            ),
        ] {
            std::fs::write(&path, text).expect("write");
            let Err(SourceError::Invalid { errors, .. }) = src.reload() else {
                panic!("accepted: {text}");
            };
            let pointers: Vec<&str> = errors.0.iter().map(|e| e.pointer.as_str()).collect();
            assert_eq!(pointers, [pointer], "{errors}");
            assert_eq!(src.current().expect("kept").seq, 1);
        }
    }

    #[test]
    fn submit_writes_the_file_and_gives_the_next_sequence_number() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("config.yaml");
        write(&path, 2);
        let src = FileSource::open(&path, host_build(), None).expect("valid");
        let four = ResolverConfig::from_yaml_str("workers: 4\n").expect("valid");
        let stale = src.submit(four.clone(), Origin::Api, |_| false);
        assert!(matches!(stale, Err(SourceError::BaseChanged)));
        let a = src.submit(four.clone(), Origin::Api, |_| true).expect("ok");
        assert_eq!((a.seq, a.origin), (2, Origin::Api));
        assert_eq!(
            load(&path).expect("written").0.worker_count(),
            4,
            "the file holds the change"
        );
        let again = src.submit(four, Origin::Api, |_| true).expect("ok");
        assert_eq!(again.seq, 2, "an unchanged config is not a new change");
    }

    #[test]
    fn invalid_file_names_the_field() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("config.yaml");
        std::fs::write(&path, "workers: 0\n").expect("write");
        let err = FileSource::open(&path, host_build(), None)
            .err()
            .expect("invalid");
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
        let src = FileSource::open(&d.join("config.yaml"), host_build(), None).expect("valid");
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
