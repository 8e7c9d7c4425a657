//! Turning a Pod's first container into a kresd invocation on this host.
//!
//! Convention (documented in docs/development.md):
//! - the executable is the host's `kresd`; `command`, if set, must be `["kresd", ...]` (the image
//!   is ignored); `command[1..]` + `args` are passed to kresd, `-n` is added when missing;
//! - `configMap`, `secret` and `emptyDir` volumes mounted by the container are materialised under
//!   the pod directory; every argument and env value that starts with a `mountPath` (or is
//!   `--opt=<mountPath>...`) is rewritten to the materialised path; other volumes are ignored;
//! - env: `value` (with `$(VAR)` expansion) and `valueFrom.fieldRef` for `metadata.name`,
//!   `metadata.namespace`, `metadata.uid`, `spec.nodeName`, `spec.serviceAccountName`,
//!   `status.podIP`, `status.podIPs`, `status.hostIP`, `status.hostIPs`, plus
//!   `valueFrom.configMapKeyRef`; kresd learns its pod IP from such a variable
//!   (e.g. `POD_IP` → `net.listen(os.getenv('POD_IP'), 53)` in the config);
//! - the working directory is `<pod dir>/work` (kresd's rundir when no rundir argument is given).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret};
use kube::{Api, Client};

use super::Error;

/// What to exec for a pod.
#[derive(Debug, Clone)]
pub struct Launch {
    /// Arguments after the kresd executable.
    pub args: Vec<String>,
    /// Environment (on top of a minimal PATH).
    pub env: Vec<(String, String)>,
    /// Working directory.
    pub cwd: PathBuf,
}

/// `$(VAR)` expansion as the kubelet does it (`$$` escapes, unknown references stay as is).
pub fn expand(s: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(inner) = after.strip_prefix('(')
            && let Some(end) = inner.find(')')
            && let Some(v) = env.get(&inner[..end])
        {
            out.push_str(v);
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// Rewrite a path under one of `mounts` (container path → host path, longest first).
pub fn rewrite(arg: &str, mounts: &[(String, PathBuf)]) -> String {
    let rewrite_path = |p: &str| -> Option<String> {
        mounts.iter().find_map(|(m, host)| {
            let m = m.trim_end_matches('/');
            if p == m {
                Some(host.display().to_string())
            } else {
                p.strip_prefix(m)
                    .filter(|r| r.starts_with('/'))
                    .map(|r| format!("{}{r}", host.display()))
            }
        })
    };
    if let Some(r) = rewrite_path(arg) {
        return r;
    }
    if arg.starts_with('-')
        && let Some((opt, val)) = arg.split_once('=')
        && let Some(r) = rewrite_path(val)
    {
        return format!("{opt}={r}");
    }
    arg.to_string()
}

fn field_ref(pod: &Pod, path: &str, pod_ip: Ipv4Addr, host_ip: &str) -> Result<String, Error> {
    let m = &pod.metadata;
    let spec = pod.spec.as_ref();
    Ok(match path {
        "metadata.name" => m.name.clone().unwrap_or_default(),
        "metadata.namespace" => m.namespace.clone().unwrap_or_default(),
        "metadata.uid" => m.uid.clone().unwrap_or_default(),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "status.podIP" | "status.podIPs" => pod_ip.to_string(),
        "status.hostIP" | "status.hostIPs" => host_ip.to_string(),
        other => {
            return Err(Error::Spec(format!(
                "env fieldRef.fieldPath {other:?} is not supported by the test node agent"
            )));
        }
    })
}

/// Materialise the container's volumes under `pod_dir` and compute the kresd invocation.
pub async fn prepare(
    client: &Client,
    pod: &Pod,
    pod_dir: &Path,
    pod_ip: Ipv4Addr,
    host_ip: &str,
) -> Result<Launch, Error> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let spec = pod
        .spec
        .as_ref()
        .ok_or_else(|| Error::Spec("pod has no spec".into()))?;
    let c: &Container = spec
        .containers
        .first()
        .ok_or_else(|| Error::Spec("/spec/containers: empty".into()))?;

    let mut mounts: Vec<(String, PathBuf)> = Vec::new();
    for vm in c.volume_mounts.iter().flatten() {
        let Some(vol) = spec.volumes.iter().flatten().find(|v| v.name == vm.name) else {
            return Err(Error::Spec(format!(
                "volumeMount {:?}: no volume of that name",
                vm.name
            )));
        };
        let host = pod_dir.join("volumes").join(&vol.name);
        let files: Option<BTreeMap<String, Vec<u8>>> = if let Some(cm) = &vol.config_map {
            let api: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
            match api
                .get_opt(&cm.name)
                .await
                .map_err(|e| Error::Api(format!("get configmap {ns}/{}", cm.name), e))?
            {
                Some(obj) => {
                    let mut all: BTreeMap<String, Vec<u8>> = obj
                        .data
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| (k, v.into_bytes()))
                        .collect();
                    all.extend(
                        obj.binary_data
                            .unwrap_or_default()
                            .into_iter()
                            .map(|(k, v)| (k, v.0)),
                    );
                    Some(select_items(all, cm.items.as_deref()))
                }
                None if cm.optional == Some(true) => Some(BTreeMap::new()),
                None => return Err(Error::Spec(format!("configmap \"{}\" not found", cm.name))),
            }
        } else if let Some(s) = &vol.secret {
            let name = s.secret_name.clone().unwrap_or_default();
            let api: Api<Secret> = Api::namespaced(client.clone(), &ns);
            match api
                .get_opt(&name)
                .await
                .map_err(|e| Error::Api(format!("get secret {ns}/{name}"), e))?
            {
                Some(obj) => {
                    let all = obj
                        .data
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| (k, v.0))
                        .collect();
                    Some(select_items(all, s.items.as_deref()))
                }
                None if s.optional == Some(true) => Some(BTreeMap::new()),
                None => return Err(Error::Spec(format!("secret \"{name}\" not found"))),
            }
        } else if vol.empty_dir.is_some() {
            Some(BTreeMap::new())
        } else {
            None // projected ServiceAccount token and other kinds: not materialised
        };
        let Some(files) = files else { continue };
        std::fs::create_dir_all(&host)
            .map_err(|e| Error::Io(format!("create {}", host.display()), e))?;
        for (rel, data) in files {
            let p = host.join(&rel);
            if let Some(parent) = p.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| Error::Io(format!("create {}", parent.display()), e))?;
            }
            std::fs::write(&p, data).map_err(|e| Error::Io(format!("write {}", p.display()), e))?;
        }
        let target = match vm.sub_path.as_deref() {
            Some(sp) if !sp.is_empty() => host.join(sp),
            _ => host,
        };
        mounts.push((vm.mount_path.clone(), target));
    }
    mounts.sort_by_key(|(m, _)| std::cmp::Reverse(m.len()));

    let mut env: BTreeMap<String, String> = BTreeMap::new();
    let mut env_list = Vec::new();
    for e in c.env.iter().flatten() {
        let value = if let Some(v) = &e.value {
            expand(v, &env)
        } else if let Some(from) = &e.value_from {
            if let Some(f) = &from.field_ref {
                field_ref(pod, &f.field_path, pod_ip, host_ip)?
            } else if let Some(k) = &from.config_map_key_ref {
                let api: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
                let cm = api
                    .get_opt(&k.name)
                    .await
                    .map_err(|e| Error::Api(format!("get configmap {ns}/{}", k.name), e))?;
                match cm
                    .and_then(|cm| cm.data)
                    .and_then(|d| d.get(&k.key).cloned())
                {
                    Some(v) => v,
                    None if k.optional == Some(true) => String::new(),
                    None => {
                        return Err(Error::Spec(format!(
                            "env {:?}: configmap key {}/{} not found",
                            e.name, k.name, k.key
                        )));
                    }
                }
            } else {
                return Err(Error::Spec(format!(
                    "env {:?}: only value, fieldRef and configMapKeyRef are supported",
                    e.name
                )));
            }
        } else {
            String::new()
        };
        let value = rewrite(&value, &mounts);
        env.insert(e.name.clone(), value.clone());
        env_list.push((e.name.clone(), value));
    }

    let mut raw: Vec<String> = Vec::new();
    if let Some(cmd) = &c.command {
        match cmd.first() {
            Some(exe) if Path::new(exe).file_name().is_some_and(|n| n == "kresd") => {
                raw.extend(cmd[1..].iter().cloned())
            }
            _ => {
                return Err(Error::Spec(format!(
                    "/spec/containers/0/command: {cmd:?}: the test node agent only runs kresd (command must be empty or start with kresd)"
                )));
            }
        }
    }
    raw.extend(c.args.iter().flatten().cloned());
    let mut args: Vec<String> = raw
        .iter()
        .map(|a| rewrite(&expand(a, &env), &mounts))
        .collect();
    if !args.iter().any(|a| a == "-n" || a == "--noninteractive") {
        args.insert(0, "-n".into());
    }
    let cwd = pod_dir.join("work");
    std::fs::create_dir_all(&cwd).map_err(|e| Error::Io(format!("create {}", cwd.display()), e))?;
    Ok(Launch {
        args,
        env: env_list,
        cwd,
    })
}

fn select_items(
    all: BTreeMap<String, Vec<u8>>,
    items: Option<&[k8s_openapi::api::core::v1::KeyToPath]>,
) -> BTreeMap<String, Vec<u8>> {
    match items {
        Some(items) if !items.is_empty() => items
            .iter()
            .filter_map(|it| all.get(&it.key).map(|d| (it.path.clone(), d.clone())))
            .collect(),
        _ => all,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_references_like_the_kubelet() {
        let env = BTreeMap::from([("POD_IP".to_string(), "127.0.3.4".to_string())]);
        assert_eq!(expand("$(POD_IP)@53", &env), "127.0.3.4@53");
        assert_eq!(expand("$$(POD_IP) $(NOPE)", &env), "$(POD_IP) $(NOPE)");
    }

    #[test]
    fn rewrites_mounted_paths_only() {
        let mounts = vec![(
            "/etc/knot-resolver".to_string(),
            PathBuf::from("/tmp/p/volumes/config"),
        )];
        assert_eq!(
            rewrite("/etc/knot-resolver/kresd.conf", &mounts),
            "/tmp/p/volumes/config/kresd.conf"
        );
        assert_eq!(
            rewrite("--config=/etc/knot-resolver/kresd.conf", &mounts),
            "--config=/tmp/p/volumes/config/kresd.conf"
        );
        assert_eq!(
            rewrite("/etc/knot-resolverX/a", &mounts),
            "/etc/knot-resolverX/a"
        );
        assert_eq!(rewrite("-c", &mounts), "-c");
    }
}
