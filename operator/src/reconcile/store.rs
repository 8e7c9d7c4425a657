//! The durable part of the rollout state: last good revision, failed revisions (with kresd's
//! reason), and a history of the last [`HISTORY`] revisions with their config and times.
//!
//! [`RevisionStore`] is backend-neutral: host mode keeps one JSON file under a state directory
//! ([`FileRevisionStore`]); the Kubernetes mode will keep the same [`Durable`] in the resource's
//! status and ConfigMaps. The reconciler loads it once at start and saves it whenever it changed,
//! so an operator restart neither retries a failed revision nor guesses the last good one.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::model::Revision;
use super::rollout::Failure;

/// How many revisions the history keeps (the last good one is kept beyond that).
pub const HISTORY: usize = 10;

/// What became of a revision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RevisionState {
    /// Desired, not (yet) served by every slot.
    Pending,
    /// Served by every regular slot, ready.
    Good,
    /// Rejected (a gate failed, or its endpoints could not be had).
    Failed,
    /// Replaced by another desired revision before it became good or failed.
    Superseded,
}

/// One revision in the history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct RevisionRecord {
    /// The revision (hash of the rendered worker config).
    pub revision: Revision,
    /// What became of it.
    pub state: RevisionState,
    /// Unix time (ms) it was first desired.
    pub desired_at_unix_ms: u64,
    /// Unix time (ms) of its last state change.
    pub changed_at_unix_ms: u64,
    /// The config (config.yaml text) it was desired with, last seen.
    pub config: String,
    /// Its service endpoints in the backend's notation (host: socket holder bind specs).
    pub endpoints: Vec<String>,
    /// Why it failed, when it did.
    pub reason: Option<String>,
}

/// Everything that must survive an operator restart.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Durable {
    /// The revision the rollout state was last about (the desired one).
    pub target: Option<Revision>,
    /// Last revision every regular slot ran ready on.
    pub last_good: Option<Revision>,
    /// Rejected revisions, not retried until the desired revision changes.
    pub failed: BTreeMap<Revision, Failure>,
    /// The last revisions, oldest first.
    pub history: VecDeque<RevisionRecord>,
}

impl Durable {
    /// The revisions whose staged config must be kept: the target, the last good one, the
    /// failed ones and those in the history.
    pub fn kept_revisions(&self) -> BTreeSet<Revision> {
        self.target
            .iter()
            .chain(&self.last_good)
            .chain(self.failed.keys())
            .chain(self.history.iter().map(|r| &r.revision))
            .cloned()
            .collect()
    }

    /// The record of `revision`, if kept.
    pub fn record(&self, revision: &str) -> Option<&RevisionRecord> {
        self.history.iter().rev().find(|r| r.revision == revision)
    }

    fn record_mut(&mut self, revision: &str) -> Option<&mut RevisionRecord> {
        self.history
            .iter_mut()
            .rev()
            .find(|r| r.revision == revision)
    }

    /// `revision` is desired (again) with `config`: it moves to the end of the history as
    /// pending; the previous target, if still pending, is superseded.
    pub fn desired(&mut self, revision: &str, config: &str, endpoints: &[String], at_unix_ms: u64) {
        if let Some(prev) = self.target.clone()
            && prev != revision
            && let Some(r) = self.record_mut(&prev)
            && r.state == RevisionState::Pending
        {
            r.state = RevisionState::Superseded;
            r.changed_at_unix_ms = at_unix_ms;
        }
        let desired_at = self
            .record(revision)
            .map_or(at_unix_ms, |r| r.desired_at_unix_ms);
        let state = if self.failed.contains_key(revision) {
            RevisionState::Failed
        } else {
            RevisionState::Pending
        };
        let reason = self.failed.get(revision).map(|f| f.reason.clone());
        self.history.retain(|r| r.revision != revision);
        self.history.push_back(RevisionRecord {
            revision: revision.to_owned(),
            state,
            desired_at_unix_ms: desired_at,
            changed_at_unix_ms: at_unix_ms,
            config: config.to_owned(),
            endpoints: endpoints.to_vec(),
            reason,
        });
        self.trim();
    }

    /// Record the state of `revision`, if kept.
    pub fn set_state(
        &mut self,
        revision: &str,
        state: RevisionState,
        reason: Option<&str>,
        at: u64,
    ) {
        if let Some(r) = self.record_mut(revision) {
            r.state = state;
            r.changed_at_unix_ms = at;
            r.reason = reason.map(str::to_owned);
        }
    }

    /// Drop the oldest records beyond [`HISTORY`] (never the last good one or the target), and
    /// failures of revisions no longer kept.
    fn trim(&mut self) {
        while self.history.len() > HISTORY {
            let keep = |r: &RevisionRecord| {
                Some(&r.revision) == self.last_good.as_ref()
                    || Some(&r.revision) == self.target.as_ref()
            };
            let Some(i) = self.history.iter().position(|r| !keep(r)) else {
                break;
            };
            self.history.remove(i);
        }
        let kept: Vec<Revision> = self.history.iter().map(|r| r.revision.clone()).collect();
        self.failed.retain(|rev, _| kept.contains(rev));
    }
}

/// Loading or saving the durable state failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Reading, writing or creating the state.
    #[error("{path}: {source}")]
    Io {
        /// What was accessed.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The stored state is not readable.
    #[error("{path}: not a revision store: {message}")]
    Corrupt {
        /// What was read.
        path: PathBuf,
        /// Why it was refused.
        message: String,
    },
}

/// Where the durable rollout state lives.
pub trait RevisionStore: Send {
    /// The stored state (the default when nothing was stored yet).
    fn load(&self) -> Result<Durable, StoreError>;
    /// Replace the stored state, atomically.
    fn save(&mut self, state: &Durable) -> Result<(), StoreError>;
}

/// Host mode's store: `<dir>/revisions.json`, replaced atomically (temporary file, fsync,
/// rename, directory fsync). The directory is created mode 0700.
#[derive(Debug)]
pub struct FileRevisionStore {
    file: PathBuf,
}

/// The format version written to `revisions.json`.
const FORMAT: u32 = 1;

#[derive(Serialize, Deserialize)]
struct OnDisk {
    format: u32,
    #[serde(flatten)]
    state: Durable,
}

impl FileRevisionStore {
    /// Open (creating `dir` when missing) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .and_then(|()| std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)))
            .map_err(|source| StoreError::Io {
                path: dir.to_path_buf(),
                source,
            })?;
        Ok(Self {
            file: dir.join("revisions.json"),
        })
    }

    /// The file the state is kept in.
    pub fn file(&self) -> &Path {
        &self.file
    }
}

impl RevisionStore for FileRevisionStore {
    fn load(&self) -> Result<Durable, StoreError> {
        let bytes = match std::fs::read(&self.file) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Durable::default()),
            Err(source) => {
                return Err(StoreError::Io {
                    path: self.file.clone(),
                    source,
                });
            }
        };
        let corrupt = |message: String| StoreError::Corrupt {
            path: self.file.clone(),
            message,
        };
        let disk: OnDisk = serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
        if disk.format != FORMAT {
            return Err(corrupt(format!(
                "format {} (this operator reads format {FORMAT})",
                disk.format
            )));
        }
        Ok(disk.state)
    }

    fn save(&mut self, state: &Durable) -> Result<(), StoreError> {
        let json = serde_json::to_vec_pretty(&OnDisk {
            format: FORMAT,
            state: state.clone(),
        })
        .map_err(|e| StoreError::Corrupt {
            path: self.file.clone(),
            message: e.to_string(),
        })?;
        crate::durable::atomic_write(&self.file, &json).map_err(|e| StoreError::Io {
            path: e.path,
            source: e.source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(rev: &str) -> Failure {
        Failure {
            revision: rev.into(),
            slot: Some(super::super::Slot::Surge),
            reason: "exited with status 1; worker log: error: x".into(),
            at_unix_ms: 5,
        }
    }

    #[test]
    fn history_keeps_the_last_revisions_and_the_last_good_one() {
        let mut d = Durable::default();
        d.desired("good", "workers: 1\n", &[], 1);
        d.set_state("good", RevisionState::Good, None, 2);
        d.last_good = Some("good".into());
        d.target = Some("good".into());
        for i in 0..HISTORY + 3 {
            let rev = format!("r{i}");
            d.desired(&rev, "x", &[], 10 + i as u64);
            d.target = Some(rev);
        }
        assert_eq!(d.history.len(), HISTORY);
        assert_eq!(d.history[0].revision, "good", "the last good one stays");
        assert_eq!(d.record("r0"), None, "the oldest others went");
        assert_eq!(d.record("r1").map(|r| r.state), None);
        assert_eq!(
            d.record("r11").map(|r| r.state),
            Some(RevisionState::Superseded)
        );
        assert_eq!(
            d.record("r12").map(|r| r.state),
            Some(RevisionState::Pending)
        );
    }

    #[test]
    fn file_store_round_trips_and_refuses_garbage() {
        let dir = tempfile::tempdir().expect("tmp");
        let state_dir = dir.path().join("state");
        let mut store = FileRevisionStore::open(&state_dir).expect("open");
        assert_eq!(store.load().expect("empty"), Durable::default());
        let mut d = Durable::default();
        d.desired(
            "bad",
            "lua:\n  script: error('x')\n",
            &["udp:127.0.0.1@53".into()],
            1,
        );
        d.failed.insert("bad".into(), failure("bad"));
        d.set_state("bad", RevisionState::Failed, Some("exited"), 2);
        d.target = Some("bad".into());
        store.save(&d).expect("save");
        let mode = std::fs::metadata(&state_dir)
            .expect("dir")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
        let again = FileRevisionStore::open(&state_dir).expect("open");
        assert_eq!(again.load().expect("load"), d);
        std::fs::write(store.file(), "{").expect("write");
        assert!(matches!(store.load(), Err(StoreError::Corrupt { .. })));
    }
}
