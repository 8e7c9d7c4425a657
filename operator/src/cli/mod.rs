//! `kresctl`: command-line parsing and dispatch.
//!
//! Offline commands (no running resolver needed) live in [`offline`]; online commands (talking to
//! the operator's API) can be added as further [`Command`] variants in their own module.

pub mod offline;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
}

/// Run a parsed command line and return the process exit code.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Validate(a) => offline::validate(&a),
        Command::Convert(a) => offline::convert(&a),
        Command::Schema(a) => offline::schema(&a),
    }
}
