//! `apiguard`: offline tooling for the apiguard Envoy filter.
//!
//! Exit codes: 0 success; 1 the input was read but is not valid (an invalid configuration, a
//! failing policy case); 2 usage error or unreadable input (clap's convention for usage errors);
//! 3 `simulate`: the filter would refuse the request.

mod opa;
mod policy;
mod simulate;
mod token;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use apiguard_core::Pipeline;
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "apiguard",
    version = apiguard_buildinfo::LONG_VERSION,
    about = "Offline tooling for the apiguard Envoy filter"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check a plugin configuration: a JSON file, an Envoy YAML whose Wasm filters carry one, or
    /// Istio `WasmPlugin` manifests (their `spec.pluginConfig`).
    ///
    /// Runs the same parse, validation and compilation as the filter (JWKS decoded, Rego
    /// compiled). Prints `ok` and any warnings, or the error with the JSON path of the field.
    Validate {
        /// A plugin configuration (`.json`), or YAML (`.yaml`, `.yml`; several documents allowed):
        /// an Envoy configuration or Istio `WasmPlugin` manifests.
        config: PathBuf,
    },
    /// Print the JSON Schema of the plugin configuration (docs/apiguard-config.schema.json), for
    /// editors (YAML language servers) and CI.
    Schema,
    /// Test and evaluate policies.
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// Mint and inspect tokens.
    #[command(subcommand)]
    Token(token::TokenCommand),
    /// The filter's decision for one request, offline (401/403/400, the rate-limit check it
    /// would make, or pass, with the header changes). Exits 3 when the filter would refuse it.
    Simulate {
        /// Plugin configuration JSON.
        #[arg(long)]
        config: PathBuf,
        /// The request: {"method", "path", "headers": {…}, "source", "host"}.
        #[arg(long)]
        request: PathBuf,
        /// Keys for providers whose JWKS is remote.
        #[arg(long)]
        jwks: Option<PathBuf>,
        /// `text` (for people) or `json` (one document for scripts).
        #[arg(long, value_enum, default_value_t = simulate::Output::Text)]
        output: simulate::Output,
    },
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Validate { config } => validate(&config),
        Command::Schema => {
            println!("{}", schema());
            ExitCode::SUCCESS
        }
        Command::Policy(cmd) => policy::run(cmd),
        Command::Token(cmd) => token::run(cmd),
        Command::Simulate {
            config,
            request,
            jwks,
            output,
        } => simulate::run(&config, &request, jwks.as_deref(), output),
    }
}

/// The configuration's JSON Schema, generated from the types the filter parses into (so it
/// cannot drift from them; `docs/apiguard-config.schema.json` is this text, and a test holds
/// the two equal).
fn schema() -> String {
    let mut schema = schemars::schema_for!(apiguard_core::config::Config).to_value();
    if let Some(doc) = schema.as_object_mut() {
        doc.insert(
            "$id".into(),
            "https://github.com/apiguard/apiguard/blob/main/docs/apiguard-config.schema.json"
                .into(),
        );
        doc.insert("title".into(), "apiguard plugin configuration".into());
        doc.insert(
            "description".into(),
            "The JSON in the apiguard Wasm filter's `configuration` (docs/configuration.md). \
             Ranges and references between sections are checked by `apiguard validate`, not here."
                .into(),
        );
    }
    serde_json::to_string_pretty(&schema).unwrap_or_default()
}

/// Reads a file, or explains why not (exit code 2).
pub fn read(path: &Path) -> Result<Vec<u8>, ExitCode> {
    std::fs::read(path).map_err(|e| {
        eprintln!("apiguard: cannot read {}: {e}", path.display());
        ExitCode::from(2)
    })
}

const WASM_FILTER: &str = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm";

fn validate(path: &Path) -> ExitCode {
    let bytes = match read(path) {
        Ok(b) => b,
        Err(code) => return code,
    };
    let yaml = path.extension().is_some_and(|x| x == "yaml" || x == "yml");
    if !yaml {
        return validate_one(&path.display().to_string(), &bytes);
    }
    let mut found = Vec::new();
    let docs = serde_yaml_ng::Deserializer::from_slice(&bytes);
    for (i, doc) in docs.enumerate() {
        let doc = match serde::Deserialize::deserialize(doc) {
            Ok(serde_json::Value::Null) => continue,
            Ok(v) => v,
            Err(e) => {
                eprintln!("error: {}: not YAML: {e}", path.display());
                return ExitCode::from(1);
            }
        };
        let at = if i == 0 {
            String::new()
        } else {
            format!("document {i}: ")
        };
        if let Some(config) = wasm_plugin(&doc) {
            let name = doc["metadata"]["name"].as_str().unwrap_or("?");
            found.push((format!("{at}WasmPlugin {name}: spec.pluginConfig"), config));
        } else {
            let before = found.len();
            find_wasm(&doc, String::new(), &mut found);
            for f in &mut found[before..] {
                f.0.insert_str(0, &at);
            }
        }
    }
    if found.is_empty() {
        eprintln!(
            "error: {}: no Wasm HTTP filter with a configuration and no WasmPlugin with a pluginConfig",
            path.display()
        );
        return ExitCode::from(1);
    }
    let mut code = ExitCode::SUCCESS;
    for (at, config) in found {
        if validate_one(&format!("{}: {at}", path.display()), config.as_bytes())
            != ExitCode::SUCCESS
        {
            code = ExitCode::from(1);
        }
    }
    code
}

/// An Istio `WasmPlugin`'s `spec.pluginConfig`, as the JSON Istio hands the filter.
fn wasm_plugin(doc: &serde_json::Value) -> Option<String> {
    let istio = doc["apiVersion"]
        .as_str()
        .is_some_and(|v| v.starts_with("extensions.istio.io/"));
    if !istio || doc["kind"] != "WasmPlugin" {
        return None;
    }
    match &doc["spec"]["pluginConfig"] {
        serde_json::Value::Null => Some("{}".into()),
        config => Some(config.to_string()),
    }
}

/// Every Wasm filter's `configuration` value, with where it is.
fn find_wasm(v: &serde_json::Value, at: String, out: &mut Vec<(String, String)>) {
    match v {
        serde_json::Value::Object(o) => {
            if o.get("@type").and_then(|t| t.as_str()) == Some(WASM_FILTER) {
                if let Some(cfg) = v["config"]["configuration"]["value"].as_str() {
                    out.push((format!("{at}.config.configuration.value"), cfg.to_owned()));
                }
            }
            for (k, child) in o {
                let next = if at.is_empty() {
                    k.clone()
                } else {
                    format!("{at}.{k}")
                };
                find_wasm(child, next, out);
            }
        }
        serde_json::Value::Array(a) => {
            for (i, child) in a.iter().enumerate() {
                find_wasm(child, format!("{at}[{i}]"), out);
            }
        }
        _ => {}
    }
}

fn validate_one(what: &str, bytes: &[u8]) -> ExitCode {
    // The same parse, validation and compilation the filter does in Envoy.
    match Pipeline::from_json(bytes) {
        Ok((_, warnings)) => {
            for w in &warnings {
                eprintln!("warning: {w}");
            }
            println!("ok: {what}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {what}: {e}");
            ExitCode::from(1)
        }
    }
}
