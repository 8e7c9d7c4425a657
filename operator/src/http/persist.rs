//! Writing API changes back to the configuration file, atomically, keeping a `.bak`.
//!
//! The file the operator was started with stays the one source of truth: an API change is
//! written to it, so it survives restarts and SIGHUP / `POST /reload` re-read the same content.

use std::io::Write;
use std::path::{Path, PathBuf};

/// Writing the configuration file failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot write {path}: {source}")]
pub struct PersistError {
    /// The file.
    pub path: PathBuf,
    /// Cause.
    #[source]
    pub source: std::io::Error,
}

/// The file that `path` names, symlinks followed (so a symlinked config stays a symlink).
fn resolve(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

/// `<file>.bak` next to the (resolved) config file.
pub fn backup_path(path: &Path) -> PathBuf {
    let real = resolve(path);
    let mut name = real.file_name().unwrap_or_default().to_os_string();
    name.push(".bak");
    real.with_file_name(name)
}

fn atomic_write(path: &Path, content: &[u8]) -> Result<(), PersistError> {
    let err = |source| PersistError {
        path: path.to_path_buf(),
        source,
    };
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".kres-config-")
        .tempfile_in(dir)
        .map_err(err)?;
    tmp.write_all(content).map_err(err)?;
    tmp.as_file().sync_all().map_err(err)?;
    // Keep the original file's permissions.
    if let Ok(meta) = std::fs::metadata(path) {
        std::fs::set_permissions(tmp.path(), meta.permissions()).map_err(err)?;
    }
    tmp.persist(path).map_err(|e| err(e.error))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(err)?;
    Ok(())
}

/// Replace the content of the config file at `path` with `content`: the previous content goes
/// to `<file>.bak`, then the new one is written to a temporary file in the same directory,
/// fsynced, and renamed over the file (then the directory is fsynced).
pub fn write_back(path: &Path, content: &str) -> Result<(), PersistError> {
    let real = resolve(path);
    if let Ok(old) = std::fs::read(&real) {
        if old == content.as_bytes() {
            return Ok(());
        }
        atomic_write(&backup_path(path), &old)?;
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
        assert_eq!(
            std::fs::read_to_string(backup_path(&path)).unwrap(),
            "workers: 1\n"
        );
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
        assert_eq!(
            std::fs::read_to_string(dir.path().join("real.yaml.bak")).unwrap(),
            "workers: 1\n"
        );
    }
}
