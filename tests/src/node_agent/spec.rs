//! Turning a Pod's containers into host processes.
//!
//! Convention (documented in docs/development.md):
//! - the image is ignored; a container without `command` runs the host's `kresd` (the agent's
//!   configured executable); `command[0]` = `kresd` (any directory) also means that kresd;
//!   a `command[0]` named like one of the agent's `executables` runs that host path; any other
//!   `command[0]` is a host executable (`kres-cache-gc`, `/bin/sh`...) looked up in PATH;
//!   `command[1..]` + `args` are passed on (`$(VAR)` expanded, `0.0.0.0` → the pod IP), kresd
//!   gets `-n` when missing;
//! - volumes are materialised once per pod and shared by its containers: `configMap`, `secret`
//!   (files under the pod directory), `emptyDir` (a directory; `medium: Memory` under /dev/shm,
//!   a tmpfs), `projected` (ServiceAccount token from the TokenRequest API, configMap,
//!   downwardAPI metadata; mounted at the ServiceAccount path in a private mount namespace,
//!   see [`mount_service_account`]), `hostPath` and `persistentVolumeClaim` (the claim must
//!   be Bound to a PersistentVolume with `hostPath`; that host directory is used, so its data outlives the
//!   pod); every argument and env value that starts with a container's `mountPath` (or is
//!   `--opt=<mountPath>...`) is rewritten to the host path; other volume kinds are ignored;
//! - env: `value` (with `$(VAR)` expansion) and `valueFrom.fieldRef` for `metadata.name`,
//!   `metadata.namespace`, `metadata.uid`, `spec.nodeName`, `spec.serviceAccountName`,
//!   `status.podIP`, `status.podIPs`, `status.hostIP`, `status.hostIPs`, plus
//!   `valueFrom.configMapKeyRef`, after `KUBERNETES_SERVICE_HOST`/`_PORT`; kresd learns its
//!   pod IP from such a variable (e.g. `POD_IP` → `net.listen(os.getenv('POD_IP'), 53)` in the config); exec probes and
//!   hooks run with the same environment;
//! - the working directory is `<pod dir>/work/<container>` (kresd's rundir when no rundir
//!   argument is given);
//! - all containers share the host's process namespace (as with `shareProcessNamespace`).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{
    ConfigMap, Container, PersistentVolume, PersistentVolumeClaim, Pod, Secret,
};
use kube::{Api, Client};

use super::Error;

/// What to exec for one container.
#[derive(Debug, Clone)]
pub struct Launch {
    /// The host executable.
    pub program: PathBuf,
    /// True when the program is kresd (it reports readiness with `READY=1` on NOTIFY_SOCKET).
    pub is_kresd: bool,
    /// Arguments after the executable.
    pub args: Vec<String>,
    /// Environment (on top of a minimal PATH).
    pub env: Vec<(String, String)>,
    /// Working directory.
    pub cwd: PathBuf,
    /// Container mount path → host path, longest first.
    pub mounts: Vec<(String, PathBuf)>,
    /// Image executables run as host programs (see [`NodeAgentConfig::executables`]).
    ///
    /// [`NodeAgentConfig::executables`]: super::NodeAgentConfig::executables
    pub executables: Vec<(String, PathBuf)>,
    /// Host directory of the pod's ServiceAccount volume, mounted at
    /// [`SERVICE_ACCOUNT_DIR`] in the process's private mount namespace.
    pub service_account: Option<PathBuf>,
}

impl Launch {
    /// A command (probe, hook) run "in the container": `cmd[0]` resolved like a container's
    /// command, mount paths rewritten, the container's environment and working directory.
    pub fn exec(&self, cmd: &[String], kresd: &Path) -> Result<std::process::Command, Error> {
        let (first, rest) = cmd
            .split_first()
            .ok_or_else(|| Error::Spec("exec: empty command".into()))?;
        let (program, _) = program_for(first, kresd, &self.executables, &self.mounts);
        let mut c = std::process::Command::new(program);
        c.args(rest.iter().map(|a| rewrite(a, &self.mounts)))
            .current_dir(&self.cwd)
            .env_clear()
            .env("PATH", HOST_PATH)
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        Ok(c)
    }
}

/// PATH of every process the agent starts.
pub const HOST_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Where the kubelet mounts a pod's ServiceAccount token, CA and namespace (and where
/// in-cluster clients such as kube-rs read them).
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// The host executable for a container's `command[0]` and whether it is kresd: kresd, one of
/// the configured image `executables` (by file name), else the path itself (mounts rewritten).
fn program_for(
    first: &str,
    kresd: &Path,
    executables: &[(String, PathBuf)],
    mounts: &[(String, PathBuf)],
) -> (PathBuf, bool) {
    let file = Path::new(first).file_name();
    if file.is_some_and(|n| n == "kresd") {
        return (kresd.to_path_buf(), true);
    }
    if let Some((_, host)) = executables
        .iter()
        .find(|(name, _)| file.is_some_and(|n| n == name.as_str()))
    {
        return (host.clone(), false);
    }
    (PathBuf::from(rewrite(first, mounts)), false)
}

/// Arguments binding the unspecified address mean the pod's own address: every pod shares
/// the host's network namespace here, so two pods binding `0.0.0.0:8080` would collide.
fn pod_local(arg: &str, pod_ip: Ipv4Addr) -> String {
    arg.replace("0.0.0.0", &pod_ip.to_string())
}

/// Host paths of a pod's volumes (by volume name), shared by its containers.
#[derive(Debug, Clone, Default)]
pub struct Volumes {
    paths: BTreeMap<String, PathBuf>,
}

/// The tmpfs holding `medium: Memory` emptyDirs.
const MEMORY_ROOT: &str = "/dev/shm";

/// Where the `medium: Memory` emptyDirs of pod `uid` live: a tmpfs, so what kresd puts there
/// (its cache, ~100 MB each) is RAM until removed. Removed with the pod; the test process's pid
/// in the name lets [`remove_stale_memory_dirs`] find those of a process that was killed.
pub fn memory_dir(uid: &str) -> PathBuf {
    PathBuf::from(MEMORY_ROOT).join(format!("kres-pod-{}-{uid}", std::process::id()))
}

/// Remove the memory emptyDirs left by test processes that no longer run (killed before their
/// pods were removed).
pub fn remove_stale_memory_dirs() {
    let Ok(entries) = std::fs::read_dir(MEMORY_ROOT) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("kres-pod-"))
            .and_then(|rest| rest.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !PathBuf::from(format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
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

/// Materialise the volumes of `pod` (configMap/secret files, emptyDir directories, the host
/// directory of bound PersistentVolumeClaims). [`Error::NotYet`] while a claim is not bound.
pub async fn volumes(client: &Client, pod: &Pod, pod_dir: &Path) -> Result<Volumes, Error> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let spec = pod
        .spec
        .as_ref()
        .ok_or_else(|| Error::Spec("pod has no spec".into()))?;
    let mut out = Volumes::default();
    for (i, vol) in spec.volumes.iter().flatten().enumerate() {
        let mut host = pod_dir.join("volumes").join(&vol.name);
        let files: BTreeMap<String, Vec<u8>> = if let Some(cm) = &vol.config_map {
            config_map_files(client, &ns, &cm.name, cm.items.as_deref(), cm.optional).await?
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
                    select_items(all, s.items.as_deref())
                }
                None if s.optional == Some(true) => BTreeMap::new(),
                None => return Err(Error::Spec(format!("secret \"{name}\" not found"))),
            }
        } else if let Some(ed) = &vol.empty_dir {
            if ed.medium.as_deref() == Some("Memory") {
                host = memory_dir(&uid).join(&vol.name);
            }
            BTreeMap::new()
        } else if let Some(hp) = &vol.host_path {
            host = PathBuf::from(&hp.path);
            BTreeMap::new()
        } else if let Some(claim) = &vol.persistent_volume_claim {
            host = claim_path(client, &ns, &claim.claim_name)
                .await
                .map_err(|e| match e {
                    Error::Spec(m) => Error::Spec(format!("/spec/volumes/{i}: {m}")),
                    other => other,
                })?;
            BTreeMap::new()
        } else if let Some(p) = &vol.projected {
            projected_files(client, pod, p).await?
        } else {
            continue; // other kinds: not materialised
        };
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
        out.paths.insert(vol.name.clone(), host);
    }
    Ok(out)
}

/// The files of ConfigMap `ns/name` (all keys, or the selected `items`).
async fn config_map_files(
    client: &Client,
    ns: &str,
    name: &str,
    items: Option<&[k8s_openapi::api::core::v1::KeyToPath]>,
    optional: Option<bool>,
) -> Result<BTreeMap<String, Vec<u8>>, Error> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    match api
        .get_opt(name)
        .await
        .map_err(|e| Error::Api(format!("get configmap {ns}/{name}"), e))?
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
            Ok(select_items(all, items))
        }
        None if optional == Some(true) => Ok(BTreeMap::new()),
        None => Err(Error::Spec(format!("configmap \"{name}\" not found"))),
    }
}

/// A projected volume as the kubelet writes it: `serviceAccountToken` (a token of the pod's
/// ServiceAccount from the TokenRequest API, bound to the pod; not refreshed, the tests are
/// shorter than its lifetime), `configMap` and `downwardAPI` (metadata fields) sources. This is
/// the `kube-api-access-*` volume the ServiceAccount admission plugin adds to every pod that
/// does not opt out with `automountServiceAccountToken: false`.
async fn projected_files(
    client: &Client,
    pod: &Pod,
    p: &k8s_openapi::api::core::v1::ProjectedVolumeSource,
) -> Result<BTreeMap<String, Vec<u8>>, Error> {
    use k8s_openapi::api::authentication::v1::{
        BoundObjectReference, TokenRequest, TokenRequestSpec,
    };
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let mut out = BTreeMap::new();
    for src in p.sources.iter().flatten() {
        if let Some(t) = &src.service_account_token {
            let sa = pod
                .spec
                .as_ref()
                .and_then(|s| s.service_account_name.clone())
                .unwrap_or_else(|| "default".into());
            let req = TokenRequest {
                spec: Some(TokenRequestSpec {
                    audiences: t.audience.clone().map(|a| vec![a]),
                    expiration_seconds: Some(t.expiration_seconds.unwrap_or(3600)),
                    bound_object_ref: Some(BoundObjectReference {
                        api_version: Some("v1".into()),
                        kind: Some("Pod".into()),
                        name: pod.metadata.name.clone(),
                        uid: pod.metadata.uid.clone(),
                    }),
                }),
                ..Default::default()
            };
            let api: Api<k8s_openapi::api::core::v1::ServiceAccount> =
                Api::namespaced(client.clone(), &ns);
            let tr = api
                .create_token_request(&sa, &Default::default(), &req)
                .await
                .map_err(|e| Error::Api(format!("TokenRequest for {ns}/{sa}"), e))?;
            let token = tr.status.and_then(|s| s.token).unwrap_or_default();
            out.insert(t.path.clone(), token.into_bytes());
        }
        if let Some(cm) = &src.config_map {
            out.extend(
                config_map_files(client, &ns, &cm.name, cm.items.as_deref(), cm.optional).await?,
            );
        }
        if let Some(d) = &src.downward_api {
            for item in d.items.iter().flatten() {
                let Some(f) = &item.field_ref else {
                    return Err(Error::Spec(format!(
                        "projected downwardAPI {:?}: only fieldRef is supported",
                        item.path
                    )));
                };
                if !f.field_path.starts_with("metadata.") {
                    return Err(Error::Spec(format!(
                        "projected downwardAPI {:?}: only metadata fields are supported",
                        item.path
                    )));
                }
                let v = field_ref(pod, &f.field_path, Ipv4Addr::UNSPECIFIED, "")?;
                out.insert(item.path.clone(), v.into_bytes());
            }
        }
    }
    Ok(out)
}

/// The host directory of the PersistentVolume bound to claim `ns/name`.
async fn claim_path(client: &Client, ns: &str, name: &str) -> Result<PathBuf, Error> {
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    let pvc = pvcs
        .get_opt(name)
        .await
        .map_err(|e| Error::Api(format!("get persistentvolumeclaim {ns}/{name}"), e))?
        .ok_or_else(|| Error::NotYet(format!("persistentvolumeclaim \"{name}\" not found")))?;
    let phase = pvc.status.and_then(|s| s.phase).unwrap_or_default();
    let volume = pvc.spec.and_then(|s| s.volume_name).unwrap_or_default();
    if phase != "Bound" || volume.is_empty() {
        return Err(Error::NotYet(format!(
            "persistentvolumeclaim \"{name}\" is not bound (phase {phase:?})"
        )));
    }
    let pv = Api::<PersistentVolume>::all(client.clone())
        .get(&volume)
        .await
        .map_err(|e| Error::Api(format!("get persistentvolume {volume}"), e))?;
    pv.spec
        .and_then(|s| s.host_path)
        .map(|hp| PathBuf::from(hp.path))
        .ok_or_else(|| {
            Error::Spec(format!(
                "persistentvolume {volume:?} (claim {name:?}) has no hostPath; the test node agent only mounts hostPath volumes"
            ))
        })
}

/// Compute the invocation of container `c` of `pod` (volumes from [`volumes`]).
#[allow(clippy::too_many_arguments)]
pub async fn prepare(
    client: &Client,
    pod: &Pod,
    c: &Container,
    volumes: &Volumes,
    pod_dir: &Path,
    pod_ip: Ipv4Addr,
    host_ip: &str,
    kresd: &Path,
    executables: &[(String, PathBuf)],
) -> Result<Launch, Error> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let mut mounts: Vec<(String, PathBuf)> = Vec::new();
    let mut service_account = None;
    for vm in c.volume_mounts.iter().flatten() {
        let Some(host) = volumes.paths.get(&vm.name) else {
            if pod
                .spec
                .as_ref()
                .and_then(|s| s.volumes.as_ref())
                .is_some_and(|v| v.iter().any(|v| v.name == vm.name))
            {
                continue; // a volume kind the agent does not materialise
            }
            return Err(Error::Spec(format!(
                "container {:?}: volumeMount {:?}: no volume of that name",
                c.name, vm.name
            )));
        };
        let target = match vm.sub_path.as_deref() {
            Some(sp) if !sp.is_empty() => host.join(sp),
            _ => host.clone(),
        };
        if vm.mount_path.trim_end_matches('/') == SERVICE_ACCOUNT_DIR {
            service_account = Some(target.clone());
        }
        mounts.push((vm.mount_path.clone(), target));
    }
    mounts.sort_by_key(|(m, _)| std::cmp::Reverse(m.len()));

    let mut env: BTreeMap<String, String> = BTreeMap::new();
    let mut env_list = Vec::new();
    // What the kubelet sets in every container: the address of the `kubernetes` Service.
    for (k, v) in api_service_env(client).await? {
        env.insert(k.clone(), v.clone());
        env_list.push((k, v));
    }
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

    let (program, is_kresd, mut raw) = match c.command.as_deref() {
        None | Some([]) => (kresd.to_path_buf(), true, Vec::new()),
        Some([first, rest @ ..]) => {
            let (program, is_kresd) =
                program_for(&expand(first, &env), kresd, executables, &mounts);
            (program, is_kresd, rest.to_vec())
        }
    };
    raw.extend(c.args.iter().flatten().cloned());
    let mut args: Vec<String> = raw
        .iter()
        .map(|a| pod_local(&rewrite(&expand(a, &env), &mounts), pod_ip))
        .collect();
    if is_kresd && !args.iter().any(|a| a == "-n" || a == "--noninteractive") {
        args.insert(0, "-n".into());
    }
    let cwd = pod_dir.join("work").join(&c.name);
    std::fs::create_dir_all(&cwd).map_err(|e| Error::Io(format!("create {}", cwd.display()), e))?;
    Ok(Launch {
        program,
        is_kresd,
        args,
        env: env_list,
        cwd,
        mounts,
        executables: executables.to_vec(),
        service_account,
    })
}

/// `KUBERNETES_SERVICE_HOST` / `KUBERNETES_SERVICE_PORT`: the ClusterIP and `https` port of
/// Service `default/kubernetes` (none while it does not exist).
async fn api_service_env(client: &Client) -> Result<Vec<(String, String)>, Error> {
    let api: Api<k8s_openapi::api::core::v1::Service> = Api::namespaced(client.clone(), "default");
    let svc = api
        .get_opt("kubernetes")
        .await
        .map_err(|e| Error::Api("get service default/kubernetes".into(), e))?;
    let Some(spec) = svc.and_then(|s| s.spec) else {
        return Ok(Vec::new());
    };
    let (Some(ip), Some(port)) = (
        spec.cluster_ip,
        spec.ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some("https"))
            .map(|p| p.port),
    ) else {
        return Ok(Vec::new());
    };
    Ok(vec![
        ("KUBERNETES_SERVICE_HOST".into(), ip),
        ("KUBERNETES_SERVICE_PORT".into(), port.to_string()),
    ])
}

/// Run `cmd` in a private mount namespace where `host_dir` is mounted read-only at
/// [`SERVICE_ACCOUNT_DIR`], as the kubelet mounts the ServiceAccount volume: in-cluster clients
/// read that fixed path. `/run` (`/var/run`) is a fresh tmpfs in that namespace, so the host's
/// file system is not changed and the process does not see the host's `/run`.
pub fn mount_service_account(
    cmd: &mut std::process::Command,
    host_dir: &Path,
) -> std::io::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::process::CommandExt;
    let src = CString::new(host_dir.as_os_str().as_bytes())?;
    let dirs = [
        c"/run/secrets",
        c"/run/secrets/kubernetes.io",
        c"/run/secrets/kubernetes.io/serviceaccount",
    ];
    let target = dirs[2];
    // SAFETY: only async-signal-safe system calls (unshare, mount, mkdir) between fork and exec,
    // on C strings prepared before the fork.
    unsafe {
        cmd.pre_exec(move || {
            let check = |rc: libc::c_int| {
                if rc == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            };
            check(libc::unshare(libc::CLONE_NEWNS))?;
            check(libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ))?;
            check(libc::mount(
                c"tmpfs".as_ptr(),
                c"/run".as_ptr(),
                c"tmpfs".as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV,
                c"mode=0755".as_ptr().cast(),
            ))?;
            for d in dirs {
                check(libc::mkdir(d.as_ptr(), 0o755))?;
            }
            check(libc::mount(
                src.as_ptr(),
                target.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND,
                std::ptr::null(),
            ))?;
            check(libc::mount(
                std::ptr::null(),
                target.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY,
                std::ptr::null(),
            ))
        });
    }
    Ok(())
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
    fn image_executables_map_to_host_programs_by_file_name() {
        let kresd = Path::new("/usr/sbin/kresd");
        let exe = vec![(
            "kres-operator".to_string(),
            PathBuf::from("/t/kres-operator"),
        )];
        let got = |first: &str| program_for(first, kresd, &exe, &[]);
        assert_eq!(
            got("kres-operator"),
            (PathBuf::from("/t/kres-operator"), false)
        );
        assert_eq!(
            got("/usr/bin/kres-operator"),
            (PathBuf::from("/t/kres-operator"), false)
        );
        assert_eq!(got("/usr/sbin/kresd"), (kresd.to_path_buf(), true));
        assert_eq!(got("sh"), (PathBuf::from("sh"), false));
        assert_eq!(
            got("kres-operator-x"),
            (PathBuf::from("kres-operator-x"), false)
        );
    }

    #[test]
    fn the_unspecified_address_means_the_pod_ip() {
        let ip = Ipv4Addr::new(198, 18, 0, 7);
        assert_eq!(
            pod_local("--listen=0.0.0.0:8080", ip),
            "--listen=198.18.0.7:8080"
        );
        assert_eq!(pod_local("0.0.0.0", ip), "198.18.0.7");
        assert_eq!(
            pod_local("--listen=127.0.0.1:8080", ip),
            "--listen=127.0.0.1:8080"
        );
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
