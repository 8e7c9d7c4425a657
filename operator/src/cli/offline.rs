//! Offline `kresctl` commands: validate, convert, schema.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use kres_crd::config::{ResolverConfig, json_schema};
use kres_crd::lua::{RenderOptions, SocketMode, render};

use super::EXIT_INVALID;

/// Arguments of `kresctl validate`.
#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// config.yaml files to validate.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
}

/// How `kresctl convert` renders listening sockets.
#[derive(Debug, Clone, Copy, ValueEnum, Default)]
pub enum Sockets {
    /// kresd binds every `network.listen` entry itself (`net.listen`).
    #[default]
    Listen,
    /// Sockets are passed to kresd with `-S FD` (host mode); no `net.listen` for them.
    Inherited,
}

/// Arguments of `kresctl convert`.
#[derive(Debug, Args)]
pub struct ConvertArgs {
    /// The config.yaml to convert.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Write the Lua here instead of standard output.
    #[arg(short, long, value_name = "OUT")]
    pub output: Option<PathBuf>,
    /// How listening sockets reach kresd.
    #[arg(long, value_enum, default_value_t = Sockets::Listen)]
    pub sockets: Sockets,
    /// FILE is a KnotResolver manifest: print its pods' kresd config (the `kresd.conf` of its
    /// revision ConfigMap), validated and rendered as `kres-operator kube` does.
    #[arg(long, conflicts_with = "sockets")]
    pub knotresolver: bool,
}

/// Arguments of `kresctl schema`.
#[derive(Debug, Args)]
pub struct SchemaArgs {
    /// Write the schema here instead of standard output.
    #[arg(short, long, value_name = "OUT")]
    pub output: Option<PathBuf>,
}

/// Read and validate one file; on failure return the error lines (`FILE: [line:col: ]pointer: message`).
fn load(path: &Path) -> Result<ResolverConfig, Vec<String>> {
    let shown = path.display();
    let bytes =
        super::read_config_input(path).map_err(|e| vec![format!("{shown}: cannot read: {e}")])?;
    if bytes.len() > kres_crd::config::MAX_INPUT_BYTES {
        return Err(vec![format!(
            "{shown}: /: input is larger than {} bytes (4 MiB), the limit for a config",
            kres_crd::config::MAX_INPUT_BYTES
        )]);
    }
    ResolverConfig::from_yaml_bytes(&bytes).map_err(|errs| {
        errs.to_string()
            .lines()
            .map(|l| format!("{shown}: {l}"))
            .collect()
    })
}

fn report(lines: &[String]) {
    let mut err = std::io::stderr().lock();
    for l in lines {
        let _ = writeln!(err, "{l}");
    }
}

fn write_out(output: Option<&Path>, text: &str) -> ExitCode {
    let res = match output {
        Some(p) => fs::write(p, text).map_err(|e| format!("{}: cannot write: {e}", p.display())),
        None => {
            out!("{text}");
            Ok(())
        }
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            report(&[e]);
            ExitCode::from(EXIT_INVALID)
        }
    }
}

/// `kresctl validate FILE...`: exit 0 when every file is valid, else 1 with every error listed.
/// Runs the same pipeline as `kres-operator host` (file, SIGHUP, `--watch`, API): the datamodel's
/// rules and host mode's (listen entries it can bind).
pub fn validate(args: &ValidateArgs) -> ExitCode {
    let mut ok = true;
    for f in &args.files {
        let checked = load(f).and_then(|cfg| {
            crate::host::desired::validate(&cfg).map_err(|errs| {
                errs.to_string()
                    .lines()
                    .map(|l| format!("{}: {l}", f.display()))
                    .collect()
            })
        });
        if let Err(lines) = checked {
            report(&lines);
            ok = false;
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_INVALID)
    }
}

/// `kresctl convert FILE [-o OUT]`: print the rendered kresd Lua.
pub fn convert(args: &ConvertArgs) -> ExitCode {
    if args.knotresolver {
        return convert_knotresolver(args);
    }
    let config = match load(&args.file) {
        Ok(c) => c,
        Err(lines) => {
            report(&lines);
            return ExitCode::from(EXIT_INVALID);
        }
    };
    let sockets = match args.sockets {
        Sockets::Listen => SocketMode::Listen,
        Sockets::Inherited => SocketMode::Inherited,
    };
    match render(
        &config,
        &RenderOptions {
            sockets,
            ..RenderOptions::default()
        },
    ) {
        Ok(lua) => write_out(args.output.as_deref(), &lua),
        Err(e) => {
            report(&[format!("{}: {e}", args.file.display())]);
            ExitCode::from(EXIT_INVALID)
        }
    }
}

/// `kresctl convert --knotresolver FILE`: the pods' kresd config of a KnotResolver manifest.
fn convert_knotresolver(args: &ConvertArgs) -> ExitCode {
    let shown = args.file.display();
    let text = match fs::read_to_string(&args.file) {
        Ok(t) => t,
        Err(e) => {
            report(&[format!("{shown}: cannot read: {e}")]);
            return ExitCode::from(EXIT_INVALID);
        }
    };
    let resolver: kres_crd::k8s::KnotResolver = match serde_norway::from_str(&text) {
        Ok(r) => r,
        Err(e) => {
            report(&[format!("{shown}: not a KnotResolver: {e}")]);
            return ExitCode::from(EXIT_INVALID);
        }
    };
    let settings = crate::backend::pods::render::PodSettings {
        default_image: String::new(),
        probe_command: vec![],
    };
    match crate::backend::pods::render::desired_for_pods(&resolver.spec, &settings) {
        Ok(d) => write_out(args.output.as_deref(), &d.desired.config),
        Err(errs) => {
            let lines: Vec<String> = errs
                .to_string()
                .lines()
                .map(|l| format!("{shown}: {l}"))
                .collect();
            report(&lines);
            ExitCode::from(EXIT_INVALID)
        }
    }
}

/// `kresctl schema`: print the JSON Schema of config.yaml.
pub fn schema(args: &SchemaArgs) -> ExitCode {
    match serde_json::to_string_pretty(&json_schema()) {
        Ok(mut s) => {
            s.push('\n');
            write_out(args.output.as_deref(), &s)
        }
        Err(e) => {
            report(&[format!("schema: {e}")]);
            ExitCode::from(EXIT_INVALID)
        }
    }
}
