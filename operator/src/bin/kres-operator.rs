//! `kres-operator`: the reconciler (host mode with supervisord; Kubernetes mode later).
//!
//! Minimal main with the two hidden helper subcommands of host mode (`socket-holder`, `launch`);
//! the host reconciler adds its own subcommands next to them.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use kres_operator::sockets::{HolderArgs, LaunchArgs, run_launch, run_socket_holder};

#[derive(Debug, Parser)]
#[command(
    name = "kres-operator",
    version,
    about = "Reconciler operator for Knot Resolver (kresd)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Bind the listening sockets once and hand them to launchers (supervisord program `sockets`).
    #[command(hide = true)]
    SocketHolder(HolderArgs),
    /// Fetch the shared sockets and exec kresd with `-S FD[:kind]` (supervisord worker programs).
    #[command(hide = true)]
    Launch(LaunchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let result = match &cli.command {
        Command::SocketHolder(args) => run_socket_holder(args).map(|never| match never {}),
        Command::Launch(args) => run_launch(args).map(|never| match never {}),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kres-operator: {e}");
            ExitCode::FAILURE
        }
    }
}
