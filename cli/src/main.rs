//! `apiguard`: offline tooling for the apiguard Envoy filter.
//!
//! Exit codes: 0 success; 1 the input was read but is not valid (an invalid configuration, a
//! failing policy case); 2 usage error or unreadable input (clap's convention for usage errors).

mod policy;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use apiguard::Pipeline;
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "apiguard",
    version,
    about = "Offline tooling for the apiguard Envoy filter"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check a plugin configuration (the JSON in the Wasm filter's `configuration` value).
    ///
    /// Runs the same parse, validation and compilation as the filter (JWKS decoded, Rego
    /// compiled). Prints `ok` and any warnings, or the error with the JSON path of the field.
    Validate {
        /// Path to the configuration JSON file.
        config: PathBuf,
    },
    /// Test and evaluate policies.
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Validate { config } => validate(&config),
        Command::Policy(cmd) => policy::run(cmd),
    }
}

/// Reads a file, or explains why not (exit code 2).
pub fn read(path: &Path) -> Result<Vec<u8>, ExitCode> {
    std::fs::read(path).map_err(|e| {
        eprintln!("apiguard: cannot read {}: {e}", path.display());
        ExitCode::from(2)
    })
}

fn validate(path: &Path) -> ExitCode {
    let bytes = match read(path) {
        Ok(b) => b,
        Err(code) => return code,
    };
    // The same parse, validation and compilation the filter does in Envoy.
    match Pipeline::from_json(&bytes) {
        Ok((_, warnings)) => {
            for w in &warnings {
                eprintln!("warning: {w}");
            }
            println!("ok: {}", path.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {}: {e}", path.display());
            ExitCode::from(1)
        }
    }
}
