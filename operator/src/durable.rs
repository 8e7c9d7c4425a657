//! Durable file writes: a crash or power loss leaves either the old or the new content.

use std::io::Write;
use std::path::{Path, PathBuf};

/// Writing a file failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot write {path}: {source}")]
pub struct PersistError {
    /// The file.
    pub path: PathBuf,
    /// Cause.
    #[source]
    pub source: std::io::Error,
}

/// Atomically replace `path` with `content`: temporary file in the same directory, fsync,
/// rename, fsync of the directory. Keeps the permissions of the file it replaces.
pub fn atomic_write(path: &Path, content: &[u8]) -> Result<(), PersistError> {
    let err = |source| PersistError {
        path: path.to_path_buf(),
        source,
    };
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".kres-tmp-")
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
