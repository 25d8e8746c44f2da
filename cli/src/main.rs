//! `apiguard`: offline tooling for the apiguard Envoy filter.
//!
//! Exit codes: 0 success; 1 the input was read but is not valid; 2 usage error or unreadable
//! input (clap's own convention for usage errors).

use std::path::PathBuf;
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
    /// Prints `ok` and any warnings, or the error with the JSON path of the field at fault.
    Validate {
        /// Path to the configuration JSON file.
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Validate { config } => validate(&config),
    }
}

fn validate(path: &std::path::Path) -> ExitCode {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("apiguard: cannot read {}: {e}", path.display());
            return ExitCode::from(2);
        }
    };
    // The same parse, validation and compilation (JWKS decoding) the filter does in Envoy.
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
