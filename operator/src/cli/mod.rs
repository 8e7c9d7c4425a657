//! `kresctl`: command-line parsing and dispatch.
//!
//! Offline commands (no running resolver needed) live in [`offline`]; online commands (talking to
//! the operator's API, docs/api.md) in [`online`].

pub mod offline;
pub mod online;

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

/// Exit code for invalid input (a config that does not parse or validate, an unreadable file).
pub const EXIT_INVALID: u8 = 1;

/// Knot Resolver control tool.
#[derive(Debug, Parser)]
#[command(
    name = "kresctl",
    version,
    about = "Control tool for kres-operator and Knot Resolver"
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
    /// How online commands reach the API.
    #[command(flatten)]
    pub conn: online::ConnArgs,
}

/// kresctl subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate config.yaml files (exit 1 and one error per line if any is invalid).
    Validate(offline::ValidateArgs),
    /// Convert a config.yaml into the kresd 5.x Lua configuration it renders to.
    Convert(offline::ConvertArgs),
    /// Print the JSON Schema of config.yaml.
    Schema(offline::SchemaArgs),
    /// Read or change the running configuration (waits until applied or rejected).
    #[command(subcommand)]
    Config(online::ConfigCmd),
    /// Show the operator's status: revisions, rollout phase, workers, last failure.
    Status,
    /// Print the Prometheus metrics (operator and every worker).
    Metrics,
    /// Re-read the configuration file (as SIGHUP).
    Reload,
    /// List the last revisions: when, what became of each, what changed.
    History,
    /// Make a previous good revision's config the desired one again (default: the newest good
    /// revision other than the desired one); waits until applied or rejected.
    Rollback {
        /// The revision (from `kresctl history`).
        revision: Option<String>,
    },
    /// Stop the workers and the operator.
    Stop,
    /// Cache operations.
    #[command(subcommand)]
    Cache(online::CacheCmd),
    /// Print a shell completion script.
    Completion {
        /// Shell.
        shell: clap_complete::Shell,
    },
}

/// Run a parsed command line and return the process exit code.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Validate(a) => offline::validate(&a),
        Command::Convert(a) => offline::convert(&a),
        Command::Schema(a) => offline::schema(&a),
        Command::Config(c) => online::run(online::Online::Config(c), &cli.conn),
        Command::Status => online::run(online::Online::Status, &cli.conn),
        Command::Metrics => online::run(online::Online::Metrics, &cli.conn),
        Command::Reload => online::run(online::Online::Reload, &cli.conn),
        Command::History => online::run(online::Online::History, &cli.conn),
        Command::Rollback { revision } => {
            online::run(online::Online::Rollback(revision), &cli.conn)
        }
        Command::Stop => online::run(online::Online::Stop, &cli.conn),
        Command::Cache(c) => online::run(online::Online::Cache(c), &cli.conn),
        Command::Completion { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "kresctl",
                &mut std::io::stdout(),
            );
            ExitCode::SUCCESS
        }
    }
}

/// Read a config file (or `-` for standard input) for kresctl, bounded: at most one byte more
/// than [`kres_crd::config::MAX_INPUT_BYTES`] is read, so an oversized input costs no more memory
/// than the limit and is then rejected by the datamodel with the limit in the message.
pub(crate) fn read_config_input(path: &std::path::Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let limit = kres_crd::config::MAX_INPUT_BYTES as u64 + 1;
    let mut buf = Vec::new();
    if path == std::path::Path::new("-") {
        std::io::stdin().lock().take(limit).read_to_end(&mut buf)?;
    } else {
        std::fs::File::open(path)?
            .take(limit)
            .read_to_end(&mut buf)?;
    }
    Ok(buf)
}
