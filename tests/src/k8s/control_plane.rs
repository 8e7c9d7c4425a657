//! Starting and stopping etcd + kube-apiserver + kube-controller-manager + kube-proxy, inside the
//! test binary's private network namespace (see [`super::netns`]).

use std::fs::File;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};

use super::audit::{self, AuditLog};
use super::netns::{self, NODE_IP, POD_CIDR, SERVICE_CIDR};
use super::pki::{self, Ca};
use super::{Error, tools};
use crate::net::{free_port, unique_loopback};
use crate::node_agent::{NodeAgent, NodeAgentConfig};
use crate::process::{self, ChildGuard};

/// How long etcd + kube-apiserver may take to report /readyz (2 busy cores: be generous).
const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// Controllers run by kube-controller-manager: owner-reference GC, namespace deletion, PDB
/// status, ServiceAccounts and their tokens, the kube-root-ca.crt ConfigMap, EndpointSlices,
/// binding PersistentVolumeClaims to PersistentVolumes, Deployments and their ReplicaSets (the
/// chart's operator pods).
const CONTROLLERS: &str = "garbagecollector,namespace,disruption,serviceaccount,serviceaccount-token,root-ca-cert-publisher,endpointslice,persistentvolume-binder,deployment,replicaset";

/// The Node kube-proxy runs as (`--hostname-override`); node agents register nodes of their own.
pub const PROXY_NODE: &str = "kres-test-host";

/// Component names in start order (index = position in `PROCESSES`).
const COMPONENTS: [&str; 4] = [
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-proxy",
];

/// Processes of the shared control plane, killed by the `atexit` hook (statics are never dropped).
static PROCESSES: Mutex<Vec<ChildGuard>> = Mutex::new(Vec::new());
static DIR_TO_REMOVE: Mutex<Option<PathBuf>> = Mutex::new(None);

extern "C" fn teardown_at_exit() {
    if let Ok(mut procs) = PROCESSES.lock() {
        // Reverse order: controller-manager, apiserver, etcd. Drop SIGKILLs each group.
        while let Some(p) = procs.pop() {
            drop(p);
        }
    }
    if let Ok(dir) = DIR_TO_REMOVE.lock()
        && let Some(d) = dir.as_ref()
    {
        let _ = std::fs::remove_dir_all(d);
    }
}

/// A running control plane (one per test binary, see [`ControlPlane::shared`]).
#[derive(Debug)]
pub struct ControlPlane {
    dir: PathBuf,
    /// `https://IP:PORT` of kube-apiserver.
    pub url: String,
    /// The loopback address every component listens on.
    pub ip: Ipv4Addr,
    /// CA certificate (serving and client certificates).
    pub ca_cert: PathBuf,
    /// Admin kubeconfig (user `kres-test-admin` in group `system:masters`).
    pub kubeconfig: PathBuf,
    /// kube-proxy's metrics endpoint (`http://127.0.0.1:PORT/metrics`).
    pub kube_proxy_metrics: String,
    ca: CaHandle,
    audit: AuditLog,
}

/// The CA is kept to issue user certificates later.
struct CaHandle(Mutex<Ca>);

impl std::fmt::Debug for CaHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Ca")
    }
}

impl ControlPlane {
    /// The control plane shared by every test of this binary, started on first use. A start
    /// failure (tooling missing, component not ready) is returned to every caller.
    pub fn global() -> Result<&'static ControlPlane, Error> {
        static CP: OnceLock<Result<ControlPlane, String>> = OnceLock::new();
        CP.get_or_init(|| ControlPlane::start().map_err(|e| e.to_string()))
            .as_ref()
            .map_err(|e| Error::Start {
                what: "the test control plane".into(),
                detail: e.clone(),
            })
    }

    /// Async form of [`ControlPlane::global`] (starts it off the async runtime's thread).
    pub async fn shared() -> Result<&'static ControlPlane, Error> {
        tokio::task::spawn_blocking(ControlPlane::global)
            .await
            .map_err(|e| Error::Start {
                what: "the test control plane".into(),
                detail: e.to_string(),
            })?
    }

    fn start() -> Result<ControlPlane, Error> {
        let etcd = tools::tool("etcd")?;
        let apiserver = tools::tool("kube-apiserver")?;
        let kcm = tools::tool("kube-controller-manager")?;
        let proxy = tools::tool("kube-proxy")?;
        netns::configure()?;
        let started = Instant::now();

        let dir = tempfile::Builder::new()
            .prefix("kres-k8s-")
            .tempdir()
            .map_err(|e| Error::Io("create control plane dir".into(), e))?
            .keep();
        if let Ok(mut d) = DIR_TO_REMOVE.lock() {
            *d = Some(dir.clone());
        }
        // SAFETY: registering a plain extern "C" function without captured state.
        unsafe {
            libc::atexit(teardown_at_exit);
        }

        let ip = unique_loopback();
        let (etcd_port, peer_port, api_port) = (free_port(ip), free_port(ip), free_port(ip));
        let url = format!("https://{ip}:{api_port}");

        let ca = Ca::generate(&dir)?;
        let serving = ca.serving(
            &dir,
            "apiserver",
            &[
                IpAddr::V4(ip),
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V4(NODE_IP),
                "10.0.0.1".parse().map_err(|_| Error::Pki("ip".into()))?,
            ],
            &[
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
            ],
        )?;
        let admin = ca.client(&dir, "admin", "kres-test-admin", Some("system:masters"))?;
        // The bootstrap ClusterRoleBinding system:node-proxier grants user system:kube-proxy
        // exactly what kube-proxy needs.
        let proxy_user = ca.client(&dir, "kube-proxy", "system:kube-proxy", None)?;
        let (sa_key, sa_pub) = pki::service_account_keys(&dir)?;
        let kubeconfig = dir.join("admin.kubeconfig");
        std::fs::write(
            &kubeconfig,
            kubeconfig_json(
                &url,
                &ca.cert,
                "kres-test-admin",
                &UserAuth::Cert(&admin.cert, &admin.key),
            ),
        )
        .map_err(|e| Error::Io("write admin kubeconfig".into(), e))?;
        let proxy_kubeconfig = dir.join("kube-proxy.kubeconfig");
        std::fs::write(
            &proxy_kubeconfig,
            kubeconfig_json(
                &url,
                &ca.cert,
                "system:kube-proxy",
                &UserAuth::Cert(&proxy_user.cert, &proxy_user.key),
            ),
        )
        .map_err(|e| Error::Io("write kube-proxy kubeconfig".into(), e))?;
        let audit_policy = dir.join("audit-policy.yaml");
        std::fs::write(&audit_policy, audit::POLICY)
            .map_err(|e| Error::Io("write audit policy".into(), e))?;
        let audit_log = dir.join("audit.log");

        let etcd_url = format!("http://{ip}:{etcd_port}");
        let peer_url = format!("http://{ip}:{peer_port}");
        let mut etcd_cmd = Command::new(&etcd);
        etcd_cmd.args([
            "--name=kres-test".to_string(),
            format!("--data-dir={}", dir.join("etcd").display()),
            format!("--listen-client-urls={etcd_url}"),
            format!("--advertise-client-urls={etcd_url}"),
            format!("--listen-peer-urls={peer_url}"),
            format!("--initial-advertise-peer-urls={peer_url}"),
            format!("--initial-cluster=kres-test={peer_url}"),
            "--unsafe-no-fsync=true".into(),
            "--log-level=warn".into(),
        ]);
        start_logged(etcd_cmd, &dir, "etcd")?;

        let mut api_cmd = Command::new(&apiserver);
        api_cmd.args([
            format!("--etcd-servers={etcd_url}"),
            // Every address of the private network namespace: tests use {ip}, in-cluster clients
            // the `kubernetes` Service, whose endpoint is the advertised node address.
            "--bind-address=0.0.0.0".into(),
            format!("--advertise-address={NODE_IP}"),
            format!("--secure-port={api_port}"),
            format!("--cert-dir={}", dir.join("apiserver-certs").display()),
            format!("--tls-cert-file={}", serving.cert.display()),
            format!("--tls-private-key-file={}", serving.key.display()),
            format!("--client-ca-file={}", ca.cert.display()),
            format!("--service-account-issuer={url}/"),
            format!("--service-account-key-file={}", sa_pub.display()),
            format!("--service-account-signing-key-file={}", sa_key.display()),
            format!("--service-cluster-ip-range={SERVICE_CIDR}"),
            format!("--audit-policy-file={}", audit_policy.display()),
            format!("--audit-log-path={}", audit_log.display()),
            "--audit-log-maxsize=0".into(),
            "--allow-privileged=true".into(),
            "--authorization-mode=RBAC".into(),
            // The `kubernetes` Service's endpoint: NODE_IP:{api_port} (kube-proxy forwards its
            // ClusterIP there, as for pods' in-cluster clients in a real cluster).
            "--endpoint-reconciler-type=lease".into(),
            "--profiling=false".into(),
        ]);
        start_logged(api_cmd, &dir, "kube-apiserver")?;
        wait_ready(&kubeconfig, &dir)?;

        let mut kcm_cmd = Command::new(&kcm);
        kcm_cmd.args([
            format!("--kubeconfig={}", kubeconfig.display()),
            "--leader-elect=false".into(),
            format!("--controllers={CONTROLLERS}"),
            format!("--root-ca-file={}", ca.cert.display()),
            format!("--service-account-private-key-file={}", sa_key.display()),
            "--use-service-account-credentials=false".into(),
            "--secure-port=0".into(),
            "--concurrent-gc-syncs=5".into(),
            "--profiling=false".into(),
        ]);
        start_logged(kcm_cmd, &dir, "kube-controller-manager")?;

        // kube-proxy needs its Node (addresses) before it programs rules.
        let mut host = NodeAgentConfig::new(PROXY_NODE, dir.join("host-node"));
        host.host_ip = NODE_IP.to_string();
        let kc = kubeconfig.clone();
        on_own_runtime(async move {
            let client = client_from(
                Kubeconfig::read_from(&kc).map_err(|e| Error::Kubeconfig(e.to_string()))?,
            )
            .await?;
            crate::node_agent::register_node(&client, &host)
                .await
                .map_err(Error::NodeAgent)
        })?;
        let localhost = Ipv4Addr::LOCALHOST;
        let (healthz_port, metrics_port) = (free_port(localhost), free_port(localhost));
        // Checked again right before kube-proxy starts: it must never touch the host's rules.
        netns::require_private()?;
        let mut proxy_cmd = Command::new(&proxy);
        proxy_cmd.args([
            format!("--kubeconfig={}", proxy_kubeconfig.display()),
            "--proxy-mode=nftables".into(),
            format!("--hostname-override={PROXY_NODE}"),
            format!("--bind-address={NODE_IP}"),
            format!("--cluster-cidr={POD_CIDR}"),
            "--nodeport-addresses=primary".into(),
            // Leave the (partly global) conntrack sysctls alone.
            "--conntrack-max-per-core=0".into(),
            "--conntrack-tcp-timeout-established=0".into(),
            "--conntrack-tcp-timeout-close-wait=0".into(),
            format!("--healthz-bind-address=127.0.0.1:{healthz_port}"),
            format!("--metrics-bind-address=127.0.0.1:{metrics_port}"),
            "--profiling=false".into(),
        ]);
        start_logged(proxy_cmd, &dir, "kube-proxy")?;
        wait_kube_proxy(healthz_port, &dir)?;

        tracing::info!(
            "test control plane at {url} ({}) ready in {:?}",
            dir.display(),
            started.elapsed()
        );
        Ok(ControlPlane {
            ca_cert: ca.cert.clone(),
            dir,
            url,
            ip,
            kubeconfig,
            kube_proxy_metrics: format!("http://127.0.0.1:{metrics_port}/metrics"),
            ca: CaHandle(Mutex::new(ca)),
            audit: AuditLog::new(audit_log),
        })
    }

    /// The directory holding certificates, kubeconfigs and component logs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The apiserver's audit log.
    pub fn audit(&self) -> &AuditLog {
        &self.audit
    }

    /// A client with cluster-admin rights, bound to the current tokio runtime.
    pub async fn admin_client(&self) -> Result<Client, Error> {
        let kc = Kubeconfig::read_from(&self.kubeconfig)
            .map_err(|e| Error::Kubeconfig(e.to_string()))?;
        client_from(kc).await
    }

    /// A client authenticating as `user` (client certificate CN) in `group` (O), e.g. to test
    /// RBAC for a human user.
    pub async fn client_for_user(&self, user: &str, group: Option<&str>) -> Result<Client, Error> {
        static N: AtomicU32 = AtomicU32::new(0);
        let file = format!("user-{}", N.fetch_add(1, Ordering::Relaxed));
        let certs = {
            let ca = self
                .ca
                .0
                .lock()
                .map_err(|_| Error::Pki("CA lock poisoned".into()))?;
            ca.client(&self.dir, &file, user, group)?
        };
        let text = kubeconfig_json(
            &self.url,
            &self.ca_cert,
            user,
            &UserAuth::Cert(&certs.cert, &certs.key),
        );
        client_from(Kubeconfig::from_yaml(&text).map_err(|e| Error::Kubeconfig(e.to_string()))?)
            .await
    }

    /// A client authenticating as ServiceAccount `namespace/name` with a fresh token from the
    /// TokenRequest API (valid 1 h).
    pub async fn client_for_service_account(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Client, Error> {
        let text = self.service_account_kubeconfig(namespace, name).await?;
        client_from(Kubeconfig::from_yaml(&text).map_err(|e| Error::Kubeconfig(e.to_string()))?)
            .await
    }

    /// A kubeconfig (JSON) for ServiceAccount `namespace/name` with a fresh token (1 h).
    async fn service_account_kubeconfig(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<String, Error> {
        let admin = self.admin_client().await?;
        let sas: Api<ServiceAccount> = Api::namespaced(admin, namespace);
        let req = TokenRequest {
            spec: Some(TokenRequestSpec {
                audiences: None,
                expiration_seconds: Some(3600),
                ..Default::default()
            }),
            ..Default::default()
        };
        let tr = sas
            .create_token_request(name, &PostParams::default(), &req)
            .await
            .map_err(|e| Error::Api {
                what: format!("TokenRequest for {namespace}/{name}"),
                source: e,
            })?;
        let token = tr.status.and_then(|s| s.token).unwrap_or_default();
        let user = format!("system:serviceaccount:{namespace}:{name}");
        Ok(kubeconfig_json(
            &self.url,
            &self.ca_cert,
            &user,
            &UserAuth::Token(&token),
        ))
    }

    /// A kubeconfig file (in the control plane's directory) authenticating as ServiceAccount
    /// `namespace/name` with a fresh token (valid 1 h), for a process under test.
    pub async fn kubeconfig_for_service_account(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<PathBuf, Error> {
        let text = self.service_account_kubeconfig(namespace, name).await?;
        let path = self.dir.join(format!("kubeconfig-{namespace}-{name}.json"));
        std::fs::write(&path, text)
            .map_err(|e| Error::Io(format!("write {}", path.display()), e))?;
        Ok(path)
    }

    /// Create a fresh namespace `<prefix>-<n>` and wait until its `default` ServiceAccount
    /// exists (so Pods are admitted).
    pub async fn namespace(&self, prefix: &str) -> Result<String, Error> {
        static N: AtomicU32 = AtomicU32::new(0);
        let clean: String = prefix
            .to_ascii_lowercase()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .take(40)
            .collect();
        let name = format!(
            "{}-{}",
            clean.trim_matches('-'),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let admin = self.admin_client().await?;
        let nss: Api<Namespace> = Api::all(admin.clone());
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                ..Default::default()
            },
            ..Default::default()
        };
        nss.create(&PostParams::default(), &ns)
            .await
            .map_err(|e| Error::Api {
                what: format!("create namespace {name}"),
                source: e,
            })?;
        let sas: Api<ServiceAccount> = Api::namespaced(admin, &name);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match sas.get_opt("default").await {
                Ok(Some(_)) => return Ok(name),
                Ok(None) | Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                _ => {
                    return Err(Error::Timeout {
                        what: format!(
                            "ServiceAccount {name}/default (kube-controller-manager log: {})",
                            self.dir.join("kube-controller-manager.log").display()
                        ),
                        secs: 30,
                    });
                }
            }
        }
    }

    /// Start a node agent handling the pods of `namespace` (node `node-<namespace>`), with short
    /// restart back-off (0.5 s doubling up to 5 s) and its per-pod files in a temp dir.
    pub async fn node_agent(&self, namespace: &str) -> Result<TestNode, Error> {
        self.node_agent_with(namespace, Vec::new()).await
    }

    /// [`ControlPlane::node_agent`] that runs the image executables `executables` (file name →
    /// host path, see [`NodeAgentConfig::executables`]) as those host programs.
    pub async fn node_agent_with(
        &self,
        namespace: &str,
        executables: Vec<(String, PathBuf)>,
    ) -> Result<TestNode, Error> {
        let dir = tempfile::Builder::new()
            .prefix("kres-node-")
            .tempdir()
            .map_err(|e| Error::Io("create node agent dir".into(), e))?;
        let mut cfg = NodeAgentConfig::new(format!("node-{namespace}"), dir.path());
        cfg.namespace = Some(namespace.to_string());
        cfg.backoff_initial = Duration::from_millis(500);
        cfg.backoff_max = Duration::from_secs(5);
        cfg.host_ip = NODE_IP.to_string();
        cfg.executables = executables;
        let agent = NodeAgent::start(self.admin_client().await?, cfg)
            .await
            .map_err(Error::NodeAgent)?;
        Ok(TestNode { agent, _dir: dir })
    }

    /// A `kubectl` command (the one built with the tooling) using the admin kubeconfig.
    pub fn kubectl(&self) -> Result<Command, Error> {
        let mut cmd = Command::new(tools::tool("kubectl")?);
        cmd.env("KUBECONFIG", &self.kubeconfig);
        Ok(cmd)
    }

    /// Runs `kubectl args` with `stdin` as its input; its whole output (check `status`).
    pub fn kubectl_output(&self, args: &[&str], stdin: &str) -> Result<Output, Error> {
        let what = || format!("kubectl {args:?}");
        let mut child = self
            .kubectl()?
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| Error::Io(what(), e))?;
        if let Some(mut input) = child.stdin.take() {
            input
                .write_all(stdin.as_bytes())
                .map_err(|e| Error::Io(what(), e))?;
        }
        child.wait_with_output().map_err(|e| Error::Io(what(), e))
    }

    /// Runs `kubectl args` with `stdin`; its standard output, or [`Error::Command`] with its
    /// standard error when it fails.
    pub fn kubectl_stdout(&self, args: &[&str], stdin: &str) -> Result<String, Error> {
        let out = self.kubectl_output(args, stdin)?;
        if !out.status.success() {
            return Err(Error::Command {
                what: format!("kubectl {args:?}"),
                status: out.status,
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Applies the CustomResourceDefinition `yaml` server-side (taking over fields another
    /// manager set, so a chart's and the repository's copy can both be applied) and waits until
    /// the apiserver reports it Established.
    pub async fn install_crd(&self, yaml: &str) -> anyhow::Result<CustomResourceDefinition> {
        let name = serde_norway::from_str::<CustomResourceDefinition>(yaml)?
            .metadata
            .name
            .ok_or_else(|| anyhow::anyhow!("the CRD has no metadata.name"))?;
        self.kubectl_stdout(
            &["apply", "--server-side", "--force-conflicts", "-f", "-"],
            yaml,
        )?;
        let crds: Api<CustomResourceDefinition> = Api::all(self.admin_client().await?);
        let (crds, name) = (&crds, name.as_str());
        super::wait::eventually(30, &format!("CRD {name} Established"), || async move {
            let crd = crds.get(name).await?;
            let established = crd
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c.type_ == "Established" && c.status == "True")
                });
            Ok(established.then_some(crd))
        })
        .await
    }
}

/// A node agent started by [`ControlPlane::node_agent`]; dropping it kills its pods' kresd.
pub struct TestNode {
    /// The agent.
    pub agent: NodeAgent,
    _dir: tempfile::TempDir,
}

impl TestNode {
    /// The agent's per-pod directories (`<ns>_<pod>_<uid>/logs/<container>.log`...).
    pub fn dir(&self) -> &Path {
        self._dir.path()
    }
}

enum UserAuth<'a> {
    Cert(&'a Path, &'a Path),
    Token(&'a str),
}

/// A kubeconfig (JSON is valid YAML) with one cluster, one user and one context.
fn kubeconfig_json(url: &str, ca: &Path, user: &str, auth: &UserAuth<'_>) -> String {
    let user_obj = match auth {
        UserAuth::Cert(cert, key) => serde_json::json!({
            "client-certificate": cert.display().to_string(),
            "client-key": key.display().to_string(),
        }),
        UserAuth::Token(token) => serde_json::json!({ "token": token }),
    };
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{ "name": "kres-test", "cluster": { "server": url, "certificate-authority": ca.display().to_string() } }],
        "users": [{ "name": user, "user": user_obj }],
        "contexts": [{ "name": "kres-test", "context": { "cluster": "kres-test", "user": user } }],
        "current-context": "kres-test",
    })
    .to_string()
}

async fn client_from(kc: Kubeconfig) -> Result<Client, Error> {
    let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .map_err(|e| Error::Kubeconfig(e.to_string()))?;
    Client::try_from(config).map_err(|e| Error::Kubeconfig(e.to_string()))
}

/// Start a component with stdout+stderr in `dir/<name>.log`, registered for teardown.
fn start_logged(mut cmd: Command, dir: &Path, name: &str) -> Result<(), Error> {
    let log = dir.join(format!("{name}.log"));
    let out = File::create(&log).map_err(|e| Error::Io(format!("create {}", log.display()), e))?;
    let err = out
        .try_clone()
        .map_err(|e| Error::Io(format!("dup {}", log.display()), e))?;
    cmd.stdin(Stdio::null()).stdout(out).stderr(err);
    let child = process::spawn(cmd).map_err(|e| Error::Io(format!("spawn {name}"), e))?;
    PROCESSES
        .lock()
        .map_err(|_| Error::Io("process list".into(), std::io::Error::other("poisoned")))?
        .push(child);
    Ok(())
}

/// The last `n` lines of a log file (for error messages).
pub(crate) fn log_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Exited component, if any: its name and status.
fn exited_component() -> Option<String> {
    let mut procs = PROCESSES.lock().ok()?;
    for (i, p) in procs.iter_mut().enumerate() {
        if let Ok(Some(st)) = p.try_wait() {
            return Some(format!(
                "{} exited ({st})",
                COMPONENTS.get(i).unwrap_or(&"component")
            ));
        }
    }
    None
}

/// Poll GET /readyz with the admin client until it answers `ok`.
fn wait_ready(kubeconfig: &Path, dir: &Path) -> Result<(), Error> {
    let kubeconfig = kubeconfig.to_path_buf();
    let dir = dir.to_path_buf();
    on_own_runtime(async move {
        let kc =
            Kubeconfig::read_from(&kubeconfig).map_err(|e| Error::Kubeconfig(e.to_string()))?;
        let client = client_from(kc).await?;
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut last: String;
        loop {
            if let Some(exited) = exited_component() {
                return Err(Error::Start {
                    what: "kube-apiserver".into(),
                    detail: format!(
                        "{exited}\n--- etcd.log (tail) ---\n{}\n--- kube-apiserver.log (tail) ---\n{}",
                        log_tail(&dir.join("etcd.log"), 15),
                        log_tail(&dir.join("kube-apiserver.log"), 25)
                    ),
                });
            }
            let req = http::Request::get("/readyz")
                .body(Vec::new())
                .map_err(|e| Error::Kubeconfig(e.to_string()))?;
            match client.request_text(req).await {
                Ok(body) if body.trim() == "ok" => return Ok(()),
                Ok(body) => last = body,
                Err(e) => last = e.to_string(),
            }
            if Instant::now() > deadline {
                return Err(Error::Start {
                    what: "kube-apiserver".into(),
                    detail: format!(
                        "/readyz not ok after {} s (last: {last})\n--- kube-apiserver.log (tail) ---\n{}",
                        READY_TIMEOUT.as_secs(),
                        log_tail(&dir.join("kube-apiserver.log"), 25)
                    ),
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
}

/// Run `fut` to completion on a runtime of its own, on a thread of its own (callers may be
/// inside another runtime; the thread inherits the network namespace).
fn on_own_runtime<T: Send + 'static>(
    fut: impl std::future::Future<Output = Result<T, Error>> + Send + 'static,
) -> Result<T, Error> {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::Io("tokio runtime".into(), e))?
            .block_on(fut)
    })
    .join()
    .map_err(|_| Error::Start {
        what: "the test control plane".into(),
        detail: "start-up thread panicked".into(),
    })?
}

/// Poll kube-proxy's /healthz (200 once it has synced its rules) for up to [`READY_TIMEOUT`].
fn wait_kube_proxy(port: u16, dir: &Path) -> Result<(), Error> {
    use std::io::{Read, Write};
    let deadline = Instant::now() + READY_TIMEOUT;
    let mut last;
    loop {
        if let Some(exited) = exited_component() {
            last = exited;
            break;
        }
        let probe = || -> std::io::Result<String> {
            let mut s = std::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port))?;
            s.set_read_timeout(Some(Duration::from_secs(2)))?;
            s.write_all(b"GET /healthz HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
            let mut out = String::new();
            s.read_to_string(&mut out)?;
            Ok(out)
        };
        match probe() {
            Ok(r) if r.starts_with("HTTP/1.0 200") || r.starts_with("HTTP/1.1 200") => {
                return Ok(());
            }
            Ok(r) => last = r.lines().next().unwrap_or_default().to_string(),
            Err(e) => last = e.to_string(),
        }
        if Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Err(Error::Start {
        what: "kube-proxy".into(),
        detail: format!(
            "/healthz not ok (last: {last})\n--- kube-proxy.log (tail) ---\n{}",
            log_tail(&dir.join("kube-proxy.log"), 25)
        ),
    })
}
