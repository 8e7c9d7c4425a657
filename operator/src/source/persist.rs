//! Writing the configuration file atomically, keeping dated backups of what it replaced.
//!
//! The file the operator was started with stays the one source of truth: an API change, a
//! revert of a rejected change and a rollback are written to it, so they survive restarts and
//! SIGHUP / `POST /reload` re-read the same content. Each write first saves the previous content
//! as `<file>.<RFC 3339 UTC time>.bak` next to it; the newest [`BACKUPS_KEPT`] are kept.

use std::path::{Path, PathBuf};

pub use crate::durable::PersistError;
use crate::durable::atomic_write;

/// The file that `path` names, symlinks followed (so a symlinked config stays a symlink).
fn resolve(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

/// How many dated backups of the config file are kept.
pub const BACKUPS_KEPT: usize = 5;

/// `<file>.<time>.bak` next to the (resolved) config file, for a write at `unix_ms`.
pub fn backup_path(path: &Path, unix_ms: u64) -> PathBuf {
    let real = resolve(path);
    let mut name = real.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{}.bak", crate::time::rfc3339_secs(unix_ms)));
    real.with_file_name(name)
}

/// The dated backups of the config file at `path`, oldest first.
pub fn backups(path: &Path) -> Vec<PathBuf> {
    let real = resolve(path);
    let (Some(dir), Some(base)) = (real.parent(), real.file_name()) else {
        return vec![];
    };
    let prefix = format!("{}.", base.to_string_lossy());
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .map(|n| n.to_string_lossy())
                .and_then(|n| n.strip_prefix(&prefix).map(str::to_owned))
                .is_some_and(|rest| {
                    rest.ends_with("Z.bak") && rest.len() == "2026-11-30T01:02:03Z.bak".len()
                })
        })
        .collect();
    // RFC 3339 UTC times of one width sort chronologically.
    found.sort();
    found
}

/// Replace the content of the config file at `path` with `content`: the previous content goes
/// to a dated backup (the oldest beyond [`BACKUPS_KEPT`] are removed), then the new one is
/// written atomically ([`atomic_write`]). Symlinks are followed.
pub fn write_back(path: &Path, content: &str) -> Result<(), PersistError> {
    let real = resolve(path);
    if let Ok(old) = std::fs::read(&real) {
        if old == content.as_bytes() {
            return Ok(());
        }
        atomic_write(&backup_path(path, crate::time::unix_ms()), &old)?;
        let all = backups(path);
        for stale in &all[..all.len().saturating_sub(BACKUPS_KEPT)] {
            if let Err(e) = std::fs::remove_file(stale) {
                tracing::debug!(file = %stale.display(), error = %e, "old backup not removed");
            }
        }
    }
    atomic_write(&real, content.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_atomically_and_keeps_a_backup() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yaml");
        std::fs::write(&path, "workers: 1\n").unwrap();
        write_back(&path, "workers: 2\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "workers: 2\n");
        let b = backups(&path);
        assert_eq!(b.len(), 1, "{b:?}");
        assert_eq!(std::fs::read_to_string(&b[0]).unwrap(), "workers: 1\n");
        // No temporary files left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }

    #[test]
    fn a_symlinked_config_stays_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real.yaml");
        let link = dir.path().join("config.yaml");
        std::fs::write(&real, "workers: 1\n").unwrap();
        std::os::unix::fs::symlink(&real, &link).unwrap();
        write_back(&link, "workers: 3\n").unwrap();
        assert!(
            std::fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(std::fs::read_to_string(&real).unwrap(), "workers: 3\n");
        let b = backups(&real);
        assert_eq!(backups(&link), b, "found through the symlink too");
        assert_eq!(b.len(), 1, "{b:?}");
        assert_eq!(b[0].parent(), Some(dir.path()), "{b:?}");
        assert_eq!(std::fs::read_to_string(&b[0]).unwrap(), "workers: 1\n");
    }

    #[test]
    fn keeps_the_newest_backups_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yaml");
        std::fs::write(&path, "workers: 1\n").unwrap();
        // Backups from earlier writes, one per second of 2026-11-30T01:02:0x.
        for s in 0..7u64 {
            let at = 1_795_914_120_000 + s * 1000;
            std::fs::write(backup_path(&path, at), format!("old {s}\n")).unwrap();
        }
        std::fs::write(dir.path().join("config.yaml.notes.bak"), "not ours").unwrap();
        write_back(&path, "workers: 2\n").unwrap();
        let b = backups(&path);
        assert_eq!(b.len(), BACKUPS_KEPT, "{b:?}");
        // The newest is the content just replaced; the oldest ones went.
        assert_eq!(
            std::fs::read_to_string(&b[BACKUPS_KEPT - 1]).unwrap(),
            "workers: 1\n"
        );
        assert_eq!(std::fs::read_to_string(&b[0]).unwrap(), "old 3\n");
        assert!(dir.path().join("config.yaml.notes.bak").exists());
    }
}
