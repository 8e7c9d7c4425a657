//! Start the test Kubernetes environment by hand — the one the tests use: a private network
//! namespace with etcd, kube-apiserver, kube-controller-manager, kube-proxy (nftables) and a
//! node agent running every namespace's pods — and keep it until Ctrl-C. Prints how to enter
//! it. Needs root (network namespaces); see docs/development.md.

use clap::Parser;
use kres_tests::k8s::{ControlPlane, netns, tools};
use kres_tests::node_agent::{NodeAgent, NodeAgentConfig};

/// Run the test control plane, kube-proxy and a node agent in a private network namespace.
#[derive(Parser)]
struct Args {
    /// Name given to the network namespace (`ip netns exec NAME ...`); removed on Ctrl-C.
    #[arg(long, default_value = "kres-dev")]
    netns: String,
    /// Node name of the node agent.
    #[arg(long, default_value = "kres-dev-node")]
    node_name: String,
    /// Do not start a node agent (run `kres-test-node-agent` inside the namespace instead).
    #[arg(long)]
    no_node_agent: bool,
}

fn main() -> anyhow::Result<()> {
    // Before any other thread exists: every thread and child inherits the namespace.
    netns::isolate_process();
    let args = Args::parse();
    // Default: no ERROR lines from the client polling the apiserver while it starts.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("warn,kube_client::client::builder=off")
    });
    tracing_subscriber::fmt().with_env_filter(filter).init();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let cp = ControlPlane::shared().await?;
    netns::attach(&args.netns)?;
    let agent = if args.no_node_agent {
        None
    } else {
        let root = cp.dir().join("node-agent");
        let mut cfg = NodeAgentConfig::new(&args.node_name, root);
        // The image's `kres-operator` is the one built beside this binary, when there is one
        // (`helm install` of charts/kres-operator then runs it).
        let operator = std::env::current_exe()?.with_file_name("kres-operator");
        if operator.exists() {
            cfg.executables = vec![("kres-operator".into(), operator)];
        }
        Some(NodeAgent::start(cp.admin_client().await?, cfg).await?)
    };
    let bin = tools::bin_dir();
    println!(
        "test control plane running (logs, audit.log in {})",
        cp.dir().display()
    );
    println!("  apiserver   {}", cp.url);
    println!("  kubeconfig  {}", cp.kubeconfig.display());
    println!(
        "  pods        {} (node {}), services {}",
        netns::POD_CIDR,
        netns::NODE_IP,
        netns::SERVICE_CIDR
    );
    if agent.is_some() {
        println!("  node agent  {} (every namespace)", args.node_name);
    }
    println!("enter it (another shell, as root):");
    println!(
        "  ip netns exec {} env KUBECONFIG={} PATH={}:$PATH bash",
        args.netns,
        cp.kubeconfig.display(),
        bin.display()
    );
    println!("Ctrl-C stops everything and removes the namespace name.");
    tokio::signal::ctrl_c().await?;
    if let Some(a) = agent {
        a.shutdown().await?;
    }
    netns::detach(&args.netns)?;
    // The atexit hook stops the components and removes the directory.
    Ok(())
}
