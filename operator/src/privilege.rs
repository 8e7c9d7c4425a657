//! Least privilege on a host: who the workers run as, and the directories the operator trusts.
//!
//! Started as root, the operator runs kresd and kres-cache-gc as an unprivileged user
//! (`knot-resolver` by default); the socket holder keeps binding privileged ports as root.
//! Directories the operator writes (the rundir and its state directories) must be owned by the
//! operator and not writable by group or others, and so must every ancestor unless it is
//! sticky (`/tmp`), like sshd's StrictModes: whoever can write them could replace what the
//! operator hands to supervisord, which runs as root.

use std::ffi::CString;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The default worker user when the operator runs as root (created by Debian's knot-resolver).
pub const DEFAULT_WORKER_USER: &str = "knot-resolver";

/// Errors of user lookup and directory checks; each names the user or path and the rule.
#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    /// The worker user cannot be used.
    #[error("worker user '{name}': {message}")]
    User {
        /// The user name asked for.
        name: String,
        /// What is wrong.
        message: String,
    },
    /// A directory is unsafe or could not be prepared.
    #[error("{what} {}: {message}", path.display())]
    Dir {
        /// What the directory is for (`rundir`, `cache.storage`...).
        what: String,
        /// The directory.
        path: PathBuf,
        /// The rule broken or the OS error.
        message: String,
    },
}

/// A user the workers run as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerUser {
    /// User name (what supervisord's `user=` and `launch --user` get).
    pub name: String,
    /// Its uid.
    pub uid: u32,
    /// Its primary gid.
    pub gid: u32,
}

/// The operator's effective uid.
pub fn effective_uid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// Look up a user by name (a numeric uid without passwd entry is accepted, gid = uid).
pub fn lookup_user(name: &str) -> Result<WorkerUser, PrivilegeError> {
    let fail = |message: String| PrivilegeError::User {
        name: name.to_string(),
        message,
    };
    let cname = CString::new(name).map_err(|_| fail("contains NUL".into()))?;
    let mut pwd = std::mem::MaybeUninit::<libc::passwd>::uninit();
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: all pointers are valid for the duration of the call; buf outlives the use of pwd.
    let rc = unsafe {
        libc::getpwnam_r(
            cname.as_ptr(),
            pwd.as_mut_ptr(),
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        )
    };
    if rc != 0 {
        return Err(fail(std::io::Error::from_raw_os_error(rc).to_string()));
    }
    if result.is_null() {
        if let Ok(uid) = name.parse::<u32>() {
            return Ok(WorkerUser {
                name: name.to_string(),
                uid,
                gid: uid,
            });
        }
        return Err(fail("no such user".into()));
    }
    // SAFETY: getpwnam_r returned success with result == pwd, so pwd is initialised.
    let pwd = unsafe { pwd.assume_init() };
    Ok(WorkerUser {
        name: name.to_string(),
        uid: pwd.pw_uid,
        gid: pwd.pw_gid,
    })
}

/// Who the workers run as. As root: `requested` or [`DEFAULT_WORKER_USER`], never root itself.
/// Otherwise `None` (the operator's own user); naming a user then is an error (it needs root).
pub fn worker_user(requested: Option<&str>) -> Result<Option<WorkerUser>, PrivilegeError> {
    if effective_uid() != 0 {
        return match requested {
            None => Ok(None),
            Some(name) => Err(PrivilegeError::User {
                name: name.to_string(),
                message: "running workers as another user needs an operator started as root".into(),
            }),
        };
    }
    let user = lookup_user(requested.unwrap_or(DEFAULT_WORKER_USER))?;
    if user.uid == 0 {
        return Err(PrivilegeError::User {
            name: user.name,
            message: "workers must not run as root (uid 0)".into(),
        });
    }
    Ok(Some(user))
}

/// The default rundir: `/run/kres-operator` as root, `$XDG_RUNTIME_DIR/kres-operator`
/// otherwise (`None` when that variable is unset or not absolute).
pub fn default_rundir() -> Option<PathBuf> {
    if effective_uid() == 0 {
        return Some(PathBuf::from("/run/kres-operator"));
    }
    let xdg = PathBuf::from(std::env::var_os("XDG_RUNTIME_DIR")?);
    xdg.is_absolute().then(|| xdg.join("kres-operator"))
}

fn dir_error(what: &str, path: &Path, message: impl Into<String>) -> PrivilegeError {
    PrivilegeError::Dir {
        what: what.to_string(),
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// Why `meta` (of a directory the operator trusts) is unsafe, if it is: not owned by `owner`
/// (or root, for an ancestor), or writable by group or others without the sticky bit.
fn unsafe_because(meta: &std::fs::Metadata, owners: &[u32]) -> Option<String> {
    let mode = meta.mode() & 0o7777;
    if !owners.contains(&meta.uid()) {
        return Some(format!(
            "owned by uid {}, expected uid {}; refusing a directory another user controls",
            meta.uid(),
            owners
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(" or ")
        ));
    }
    if mode & 0o022 != 0 && mode & 0o1000 == 0 {
        return Some(format!(
            "mode {mode:04o} is group- or world-writable; refusing it (chmod go-w)"
        ));
    }
    None
}

/// Every existing ancestor of `path` is owned by root or `uid` and not writable by others
/// (sticky directories such as `/tmp` excepted).
fn check_ancestors(what: &str, path: &Path, uid: u32) -> Result<(), PrivilegeError> {
    for dir in path.ancestors().skip(1) {
        let Ok(meta) = std::fs::metadata(dir) else {
            continue;
        };
        if let Some(why) = unsafe_because(&meta, &[0, uid]) {
            return Err(dir_error(
                what,
                path,
                format!("parent {}: {why}", dir.display()),
            ));
        }
    }
    Ok(())
}

/// Create `path` (and missing parents) with `mode`, owned by `owner`:`group`.
fn create(what: &str, path: &Path, mode: u32) -> Result<(), PrivilegeError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| dir_error(what, path, format!("create parent: {e}")))?;
    }
    match std::fs::DirBuilder::new().mode(mode).create(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(dir_error(what, path, format!("create: {e}"))),
    }
}

/// Set owner, group and mode of a directory that passed the checks.
fn set_owner_mode(
    what: &str,
    path: &Path,
    owner: Option<u32>,
    group: Option<u32>,
    mode: u32,
) -> Result<(), PrivilegeError> {
    if owner.is_some() || group.is_some() {
        std::os::unix::fs::lchown(path, owner, group)
            .map_err(|e| dir_error(what, path, format!("chown: {e}")))?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| dir_error(what, path, format!("chmod {mode:04o}: {e}")))
}

/// lstat `path`, refusing anything but a real directory.
fn directory_meta(what: &str, path: &Path) -> Result<std::fs::Metadata, PrivilegeError> {
    let meta = std::fs::symlink_metadata(path).map_err(|e| dir_error(what, path, e.to_string()))?;
    if !meta.is_dir() {
        return Err(dir_error(
            what,
            path,
            "not a directory (a symlink is not accepted)",
        ));
    }
    Ok(meta)
}

/// A directory only the operator writes (the rundir, its state directories): created with
/// `mode` when missing, refused when it or an ancestor is owned by another user or writable by
/// group/others; then its group is set to `group` (the workers' group, so they can read it)
/// and its mode to `mode`.
pub fn operator_dir(
    what: &str,
    path: &Path,
    mode: u32,
    group: Option<u32>,
) -> Result<(), PrivilegeError> {
    let me = effective_uid();
    check_ancestors(what, path, me)?;
    create(what, path, mode)?;
    let meta = directory_meta(what, path)?;
    if let Some(why) = unsafe_because(&meta, &[me]) {
        return Err(dir_error(what, path, why));
    }
    set_owner_mode(what, path, None, group, mode)
}

/// A directory the workers write (kresd's control sockets, the cache): created owned by
/// `worker` (mode 0750) when missing; an existing one must already belong to the worker user
/// (or to the operator when the workers run as the operator) and not be writable by others.
/// The operator never chowns an existing directory: the path may come from a config.
pub fn worker_dir(
    what: &str,
    path: &Path,
    worker: Option<&WorkerUser>,
) -> Result<(), PrivilegeError> {
    let owner = worker.map_or_else(effective_uid, |w| w.uid);
    let existed = path.exists();
    create(what, path, 0o750)?;
    let meta = directory_meta(what, path)?;
    if !existed {
        return set_owner_mode(what, path, Some(owner), worker.map(|w| w.gid), 0o750);
    }
    if meta.uid() != owner {
        let fix = worker.map_or_else(String::new, |w| {
            format!(" (chown -R {}: {})", w.name, path.display())
        });
        return Err(dir_error(
            what,
            path,
            format!(
                "owned by uid {}, but the workers run as uid {owner}{fix}",
                meta.uid()
            ),
        ));
    }
    if meta.mode() & 0o002 != 0 {
        return Err(dir_error(
            what,
            path,
            format!("mode {:04o} is world-writable", meta.mode() & 0o7777),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_lookup() {
        let root = lookup_user("root").unwrap();
        assert_eq!((root.uid, root.gid), (0, 0));
        assert!(
            lookup_user("no-such-user-kres")
                .unwrap_err()
                .to_string()
                .contains("no such user")
        );
    }

    #[test]
    fn operator_dir_is_created_private_and_refused_when_writable_by_others() {
        let tmp = tempfile::tempdir().unwrap();
        let run = tmp.path().join("a/run");
        operator_dir("rundir", &run, 0o700, None).unwrap();
        let meta = std::fs::metadata(&run).unwrap();
        assert_eq!(meta.mode() & 0o7777, 0o700);
        assert_eq!(meta.uid(), effective_uid());

        std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = operator_dir("rundir", &run, 0o700, None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("rundir") && err.contains("mode 0777 is group- or world-writable"),
            "{err}"
        );

        // A writable, non-sticky parent is refused too.
        std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o700)).unwrap();
        let parent = tmp.path().join("a");
        std::fs::set_permissions(&parent, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = operator_dir("rundir", &run, 0o700, None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!("parent {}", parent.display())),
            "{err}"
        );

        // A symlink in place of the directory is refused.
        std::fs::set_permissions(&parent, std::fs::Permissions::from_mode(0o755)).unwrap();
        let link = parent.join("link");
        std::os::unix::fs::symlink(&run, &link).unwrap();
        let err = operator_dir("rundir", &link, 0o700, None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a directory"), "{err}");
    }

    #[test]
    fn worker_dir_refuses_a_foreign_owner() {
        if effective_uid() != 0 {
            panic!("this test changes file ownership: run it as root (CI does)");
        }
        let kr = lookup_user(DEFAULT_WORKER_USER).expect("Debian's knot-resolver user");
        let tmp = tempfile::tempdir().unwrap();
        let cache = tmp.path().join("cache");
        worker_dir("cache.storage", &cache, Some(&kr)).unwrap();
        let meta = std::fs::metadata(&cache).unwrap();
        assert_eq!(
            (meta.uid(), meta.gid(), meta.mode() & 0o7777),
            (kr.uid, kr.gid, 0o750)
        );
        // Existing and owned by the worker: accepted as it is.
        worker_dir("cache.storage", &cache, Some(&kr)).unwrap();

        let foreign = tmp.path().join("foreign");
        std::fs::create_dir(&foreign).unwrap();
        let err = worker_dir("cache.storage", &foreign, Some(&kr))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("owned by uid 0, but the workers run as uid")
                && err.contains("chown -R knot-resolver:"),
            "{err}"
        );
    }

    #[test]
    fn root_gets_the_knot_resolver_user_and_never_root() {
        if effective_uid() != 0 {
            assert!(worker_user(None).unwrap().is_none());
            assert!(worker_user(Some("knot-resolver")).is_err());
            return;
        }
        assert_eq!(
            worker_user(None).unwrap().map(|u| u.name),
            Some(DEFAULT_WORKER_USER.to_string())
        );
        let err = worker_user(Some("root")).unwrap_err().to_string();
        assert!(err.contains("must not run as root"), "{err}");
    }
}
