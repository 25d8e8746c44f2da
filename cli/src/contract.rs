//! `apiguard contract`: an API's OpenAPI document as the filter's `contract` section.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use apiguard_core::Pipeline;
use serde_json::{json, Value};

use crate::files::read;
use crate::yaml;

#[derive(Debug, clap::Subcommand)]
pub enum ContractCommand {
    /// Print an OpenAPI 3.0 or 3.1 document (YAML or JSON) as the `contract` section of a
    /// plugin configuration, once the filter's own compile step has accepted it: a document it
    /// cannot enforce exactly is refused naming the node (exit 1). Local `$ref`s are kept (the
    /// filter follows them); remote ones are refused.
    Import {
        /// The OpenAPI document (`.yaml`, `.yml` or `.json`).
        spec: PathBuf,
        /// `enforce` or `monitor`.
        #[arg(long, default_value = "enforce")]
        mode: String,
    },
}

pub fn run(cmd: ContractCommand) -> ExitCode {
    match cmd {
        ContractCommand::Import { spec, mode } => import(&spec, &mode),
    }
}

fn import(path: &Path, mode: &str) -> ExitCode {
    let doc = match load(path) {
        Ok(doc) => doc,
        Err(code) => return code,
    };
    let section = json!({"contract": {"openapi": doc, "mode": mode}});
    if let Err(e) = Pipeline::from_json(section.to_string().as_bytes()) {
        eprintln!("error: {}: {e}", path.display());
        return ExitCode::from(1);
    }
    match serde_json::to_string_pretty(&section) {
        Ok(text) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: cannot print the section: {e}");
            ExitCode::from(1)
        }
    }
}

/// The document as JSON: YAML bounded before it is parsed (`yaml.rs`), JSON as it is.
fn load(path: &Path) -> Result<Value, ExitCode> {
    let is_yaml = path.extension().is_some_and(|x| x == "yaml" || x == "yml");
    if !is_yaml {
        let bytes = read(path)?;
        return serde_json::from_slice(&bytes).map_err(|e| {
            eprintln!("error: {}: not JSON: {e}", path.display());
            ExitCode::from(1)
        });
    }
    let bytes = match yaml::read_capped(path) {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => {
            eprintln!("error: {}: {e}", path.display());
            return Err(ExitCode::from(1));
        }
        Err(e) => {
            eprintln!("apiguard: cannot read {}: {e}", path.display());
            return Err(ExitCode::from(2));
        }
    };
    if let Err(e) = yaml::check_depth(&bytes) {
        eprintln!("error: {}: {e}", path.display());
        return Err(ExitCode::from(1));
    }
    serde_yaml_ng::from_slice(&bytes).map_err(|e| {
        eprintln!("error: {}: not YAML: {e}", path.display());
        ExitCode::from(1)
    })
}
