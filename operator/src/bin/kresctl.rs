//! `kresctl`: the command-line client (offline: validate, convert, schema).
use std::process::ExitCode;

use clap::Parser;
use kres_operator::cli::{Cli, run};

fn main() -> ExitCode {
    run(Cli::parse())
}
