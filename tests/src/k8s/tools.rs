//! Where `tests/k8s/build-tools.sh` put etcd, kube-apiserver, kube-controller-manager, kubectl
//! and helm: the same cache path and version key as the script, read from the same
//! `tests/k8s/versions.env`.

use std::path::{Path, PathBuf};

use super::Error;

/// The pinned versions file, compiled in so tests and the build script cannot disagree.
const VERSIONS_ENV: &str = include_str!("../../k8s/versions.env");

/// Value of `KEY=value` in versions.env.
pub fn pinned(key: &str) -> Option<&'static str> {
    VERSIONS_ENV.lines().find_map(|l| {
        let (k, v) = l.trim().split_once('=')?;
        (k == key).then_some(v.trim())
    })
}

/// The Kubernetes version the tooling is built at (e.g. `v1.36.3`).
pub fn kubernetes_version() -> &'static str {
    pinned("KUBERNETES_VERSION").unwrap_or("unknown")
}

/// The version key: one cache directory per combination of versions.
fn version_key() -> String {
    format!(
        "k8s-{}_etcd-{}_helm-{}",
        kubernetes_version(),
        pinned("ETCD_VERSION").unwrap_or("unknown"),
        pinned("HELM_VERSION").unwrap_or("unknown")
    )
}

/// `${KRES_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kres-operator/tools}/<key>/bin`.
pub fn bin_dir() -> PathBuf {
    let root = match std::env::var_os("KRES_TOOLS_DIR").filter(|v| !v.is_empty()) {
        Some(d) => PathBuf::from(d),
        None => {
            let cache = std::env::var_os("XDG_CACHE_HOME")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
                        .join(".cache")
                });
            cache.join("kres-operator").join("tools")
        }
    };
    root.join(version_key()).join("bin")
}

/// Path of one tool (`etcd`, `kube-apiserver`, `kube-controller-manager`, `kubectl`, `helm`);
/// an error telling how to build it if it is missing.
pub fn tool(name: &str) -> Result<PathBuf, Error> {
    tool_in(&bin_dir(), name)
}

fn tool_in(bin_dir: &Path, name: &str) -> Result<PathBuf, Error> {
    let path = bin_dir.join(name);
    if is_executable(&path) {
        Ok(path)
    } else {
        Err(Error::ToolMissing {
            name: name.to_string(),
            path,
        })
    }
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_pinned() {
        assert!(
            kubernetes_version().starts_with("v1."),
            "{}",
            kubernetes_version()
        );
        assert!(pinned("ETCD_VERSION").is_some_and(|v| v.starts_with("v3.6.")));
        assert!(pinned("HELM_VERSION").is_some_and(|v| v.starts_with("v3.")));
        assert!(bin_dir().ends_with(format!("{}/bin", version_key())));
    }

    #[test]
    fn a_missing_tool_says_how_to_build_it() {
        let empty = tempfile::tempdir().expect("tempdir");
        let err = tool_in(empty.path(), "kube-apiserver")
            .expect_err("must be missing")
            .to_string();
        assert!(err.contains("kube-apiserver not found at"), "{err}");
        assert!(
            err.contains("make k8s-tools") && err.contains("tests/k8s/build-tools.sh"),
            "{err}"
        );
    }
}
