//! `kresctl`: command-line parsing and dispatch.
//!
//! Offline commands (no running resolver needed) live in [`offline`]; online commands (talking to
//! the operator's API, docs/api.md) in [`online`]; `kresctl kube` (a KnotResolver through the
//! Kubernetes API) in [`cluster`].
//!
//! Everything kresctl prints to standard output goes through [`write_stdout`] (`out!`,
//! `outln!`): a reader that closed the pipe (`kresctl status | head -1`) ends kresctl quietly
//! with [`EXIT_CLOSED_PIPE`], as SIGPIPE ends `cat` or `ls`; `print!` (which panics there) is
//! denied in this module. SIGPIPE itself stays ignored (Rust's default), so a closed *socket* is
//! an error kresctl reports, not a silent death.
#![deny(clippy::print_stdout)]

/// `print!` to standard output, ending the process quietly on a closed pipe.
macro_rules! out {
    ($($arg:tt)*) => { $crate::cli::write_stdout(format_args!($($arg)*)) };
}

/// `println!` to standard output, ending the process quietly on a closed pipe.
macro_rules! outln {
    () => { $crate::cli::write_stdout(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::cli::write_stdout(format_args!("{}\n", format_args!($($arg)*))) };
}

pub mod cluster;
pub mod offline;
pub mod online;

use std::io::Write;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

/// Exit code for invalid input (a config that does not parse or validate, an unreadable file).
pub const EXIT_INVALID: u8 = 1;

/// Exit code when standard output is a pipe its reader closed: 141, what a shell shows for a
/// tool ended by SIGPIPE (128 + 13), so `set -o pipefail` scripts see kresctl as they see `cat`.
pub const EXIT_CLOSED_PIPE: u8 = 141;

/// Write to standard output (flushed). A closed pipe ends the process with [`EXIT_CLOSED_PIPE`]
/// and no message; another write error ends it with a one-line message and [`EXIT_INVALID`].
pub fn write_stdout(args: std::fmt::Arguments<'_>) {
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout.write_fmt(args).and_then(|()| stdout.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(i32::from(EXIT_CLOSED_PIPE));
        }
        let _ = writeln!(
            std::io::stderr(),
            "error: cannot write to standard output: {e}"
        );
        std::process::exit(i32::from(EXIT_INVALID));
    }
}

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
    /// A KnotResolver in a Kubernetes cluster (kubeconfig): status, history, rollback.
    Kube(cluster::KubeArgs),
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
        Command::Kube(a) => cluster::run(
            a,
            cli.conn.json,
            std::time::Duration::from_secs(cli.conn.timeout),
        ),
        Command::Completion { shell } => {
            // clap_complete panics on a write error: generate into memory, print like the rest.
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "kresctl", &mut script);
            out!("{}", String::from_utf8_lossy(&script));
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
