//! Standalone test node agent (kubelet stand-in running kresd), for manual experiments against
//! a test control plane started with `kres-test-control-plane --no-node-agent`. Pod IPs are in
//! 198.18.0.0/15, so run it inside that namespace:
//! `ip netns exec kres-dev kres-test-node-agent --kubeconfig admin.kubeconfig --node-name n1`.

use std::path::PathBuf;

use clap::Parser;
use kres_tests::node_agent::{NodeAgent, NodeAgentConfig};
use kube::config::{KubeConfigOptions, Kubeconfig};

/// Register a Node and run the Pods bound to it as host processes on 198.18.x.y pod IPs.
#[derive(Parser)]
struct Args {
    /// Kubeconfig of a user allowed to manage nodes and pods.
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: PathBuf,
    /// Node name to register.
    #[arg(long, default_value = "kres-test-node")]
    node_name: String,
    /// Only handle pods in this namespace.
    #[arg(long)]
    namespace: Option<String>,
    /// Directory for per-pod files.
    #[arg(long, default_value = "/tmp/kres-test-node-agent")]
    root_dir: PathBuf,
    /// kresd executable.
    #[arg(long, default_value = "kresd")]
    kresd: PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let args = Args::parse();
    let kc = Kubeconfig::read_from(&args.kubeconfig)?;
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
    let client = kube::Client::try_from(config)?;
    let mut cfg = NodeAgentConfig::new(args.node_name, args.root_dir);
    cfg.namespace = args.namespace;
    cfg.kresd = args.kresd;
    let agent = NodeAgent::start(client, cfg).await?;
    tracing::info!("node agent {} running; Ctrl-C stops it", agent.node_name());
    tokio::signal::ctrl_c().await?;
    agent.shutdown().await?;
    Ok(())
}
