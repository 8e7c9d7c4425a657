//! `kres-operator`: the reconciler. `kres-operator host --config FILE` runs a kresd fleet on this
//! host under supervisord.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use kres_operator::backend::supervisord::DEFAULT_DRAIN_TIMEOUT;
use kres_operator::host::run::{HostOptions, run_host};
use kres_operator::kresd::probe::{ProbeQuestion, probe};
use kres_operator::sockets::{HolderArgs, LaunchArgs, run_launch, run_socket_holder};
use tracing_subscriber::EnvFilter;

#[derive(Parser, Debug)]
#[command(
    name = "kres-operator",
    version,
    about = "Reconciler operator for Knot Resolver (kresd)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the resolver on this host: kresd workers under supervisord, converged to --config.
    Host(HostArgs),
    /// Bind the listening sockets once and hand them to launchers (supervisord program `sockets`).
    #[command(hide = true)]
    SocketHolder(HolderArgs),
    /// Fetch the shared sockets and exec kresd with `-S FD[:kind]` (supervisord worker programs).
    #[command(hide = true)]
    Launch(LaunchArgs),
    /// Run the Kubernetes controller: KnotResolver resources to pods, canary-first rollouts.
    Kube(KubeArgs),
    /// One DNS query (`localhost. A` over UDP) to the pod's kresd: exit 0 on any reply. The
    /// readiness probe of the pods `kres-operator kube` creates.
    Probe(ProbeArgs),
}

#[derive(Args, Debug)]
struct KubeArgs {
    /// Watch KnotResolvers in this namespace (repeatable; none: every namespace).
    #[arg(long = "namespace", value_name = "NS")]
    namespaces: Vec<String>,
    /// Reconcile only while holding the Lease; exit when it is lost.
    #[arg(long)]
    leader_elect: bool,
    /// Name of the Lease.
    #[arg(long, default_value = "kres-operator", value_name = "NAME")]
    lease_name: String,
    /// Namespace of the Lease (default: $POD_NAMESPACE).
    #[arg(long, env = "POD_NAMESPACE", value_name = "NS")]
    lease_namespace: Option<String>,
    /// Address of /healthz, /readyz, /metrics and /status.
    #[arg(long, default_value = "0.0.0.0:8080", value_name = "ADDR")]
    listen: std::net::SocketAddr,
    /// Pod image when a KnotResolver sets no spec.image.
    #[arg(long, env = "KRES_OPERATOR_IMAGE", value_name = "IMAGE")]
    image: String,
    /// The operator binary inside the pod image, run as the pods' readiness probe
    /// (`<PATH> probe`).
    #[arg(long, default_value = "kres-operator", value_name = "PATH")]
    probe_binary: String,
}

#[derive(Args, Debug)]
struct ProbeArgs {
    /// The kresd address (default: $POD_IP, as the pods set it from status.podIP).
    #[arg(long, env = "POD_IP", value_name = "IP")]
    address: IpAddr,
    /// The kresd port.
    #[arg(long, default_value_t = 53, value_name = "PORT")]
    port: u16,
    /// How long to wait for the reply.
    #[arg(long, default_value_t = 1000, value_name = "MS")]
    timeout_ms: u64,
}

#[derive(Args, Debug)]
struct HostArgs {
    /// The resolver configuration (Knot Resolver 6 config.yaml syntax).
    #[arg(long, short = 'c', value_name = "FILE")]
    config: PathBuf,
    /// Follow changes of the file (also Kubernetes ConfigMap symlink swaps). SIGHUP always re-reads.
    #[arg(long)]
    watch: bool,
    /// On SIGTERM/SIGINT leave supervisord and the workers serving (default: stop them).
    #[arg(long)]
    keep_workers_on_exit: bool,
    /// Run directory (default: the config's `rundir`, else /run/kres-operator as root,
    /// $XDG_RUNTIME_DIR/kres-operator otherwise). Must be owned by the operator's user and not
    /// group- or world-writable, nor may any parent be (sticky ones like /tmp excepted).
    #[arg(long, value_name = "DIR")]
    rundir: Option<PathBuf>,
    /// When started as root: the user kresd and kres-cache-gc run as (default knot-resolver;
    /// never root). Started as another user, the workers run as that user.
    #[arg(long, value_name = "USER")]
    worker_user: Option<String>,
    /// Where the rollout state is kept (last good and failed revisions, history; default:
    /// `<rundir>/state`, created mode 0700).
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Loopback address for the workers' private probe endpoints.
    #[arg(long, default_value = "127.0.0.1", value_name = "IP")]
    probe_address: IpAddr,
    /// How long a new worker may take to send READY=1 and answer its probe.
    #[arg(long, default_value = "5000", value_name = "MS")]
    start_timeout_ms: u64,
    /// Before a worker is stopped (rollout, scale-down), its TCP/DoT/DoH listeners are closed
    /// and its open connections may finish for at most this long; then it is stopped and
    /// what is still open is cut. 0 (default): stop at once (see docs/BENCHMARKS.md).
    #[arg(long, default_value_t = DEFAULT_DRAIN_TIMEOUT.as_millis() as u64, value_name = "MS")]
    drain_timeout_ms: u64,
    /// supervisord binary.
    #[arg(long, default_value = "supervisord", value_name = "PATH")]
    supervisord: String,
    /// kresd binary.
    #[arg(long, default_value = "kresd", value_name = "PATH")]
    kresd: String,
}

/// One malloc arena for the whole process. glibc gives each thread that allocates its own arena
/// and keeps what a thread freed for that arena, so request work spread over the blocking pool's
/// threads (each bounded to one 4 MiB document) would add up to a peak per thread; with one arena
/// the memory one request freed is what the next one reuses.
fn limit_malloc_arenas() {
    // SAFETY: mallopt only changes allocator tuning; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let host = match cli.command {
        Command::Host(a) => a,
        Command::SocketHolder(args) => return report(run_socket_holder(&args).map(|n| match n {})),
        Command::Launch(args) => return report(run_launch(&args).map(|n| match n {})),
        Command::Probe(args) => return report(run_probe(&args)),
        Command::Kube(args) => return report(run_kube(args)),
    };
    // One runtime thread on purpose: the reconcile loop, DNS gates, signals and the API's I/O
    // share it and interleave only at awaits, which keeps the loop's ordering easy to reason
    // about. Nothing CPU-heavy may run on it: request work that scales with a config (decoding,
    // JSON Patch, validation, rendering, diffs) goes to the blocking pool, at most
    // `http::heavy::HEAVY_CONCURRENCY` at a time (operator/src/http/heavy.rs).
    limit_malloc_arenas();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return report(Err(format!("tokio runtime: {e}"))),
    };
    let a = host;
    report(runtime.block_on(run_host(HostOptions {
        config: a.config,
        watch: a.watch,
        keep_workers_on_exit: a.keep_workers_on_exit,
        rundir: a.rundir,
        state_dir: a.state_dir,
        probe_address: a.probe_address,
        start_timeout: Duration::from_millis(a.start_timeout_ms),
        drain_timeout: Duration::from_millis(a.drain_timeout_ms),
        supervisord: a.supervisord,
        kresd: a.kresd,
        worker_user: a.worker_user,
    })))
}

/// `kres-operator kube`: the controller on a multi-threaded runtime.
fn run_kube(a: KubeArgs) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    runtime.block_on(kres_operator::kube::run(kres_operator::kube::KubeOptions {
        namespaces: a.namespaces,
        leader_elect: a.leader_elect,
        lease_name: a.lease_name,
        lease_namespace: a.lease_namespace,
        listen: a.listen,
        pods: kres_operator::backend::pods::render::PodSettings {
            default_image: a.image,
            probe_command: vec![a.probe_binary, "probe".into()],
        },
    }))
}

/// `kres-operator probe`: a current-thread runtime, one query.
fn run_probe(a: &ProbeArgs) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    let question = ProbeQuestion {
        timeout: Duration::from_millis(a.timeout_ms),
        ..ProbeQuestion::default()
    };
    runtime
        .block_on(probe((a.address, a.port).into(), &question))
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// The exit code of `result`, with its error on stderr. A closed stderr is ignored (`eprintln!`
/// would panic): the exit code still tells. kres-operator prints nothing else itself; clap's
/// `--help`/`--version` output already ignores a closed stdout.
fn report<E: std::fmt::Display>(result: Result<(), E>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "kres-operator: {e}");
            ExitCode::FAILURE
        }
    }
}
