//! `apiguard`: offline tooling for the apiguard Envoy filter.
//!
//! Exit codes: 0 success; 1 the input was read but is not valid (an invalid configuration, a
//! failing policy case); 2 usage error or unreadable input (clap's convention for usage errors);
//! 3 `simulate`: the filter would refuse the request.

mod contract;
mod files;
mod opa;
mod policy;
mod simulate;
mod token;
mod yaml;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use apiguard_core::ratelimit::{EXT_AUTHZ_PATH, HANDOFF_HEADER};
use apiguard_core::Pipeline;
use clap::{Parser, Subcommand};

use files::read;

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
    /// The API's OpenAPI document as the `contract` section.
    #[command(subcommand)]
    Contract(contract::ContractCommand),
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
        Command::Contract(cmd) => contract::run(cmd),
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

const WASM_FILTER: &str = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm";

fn validate(path: &Path) -> ExitCode {
    let yaml = path.extension().is_some_and(|x| x == "yaml" || x == "yml");
    if !yaml {
        return match read(path) {
            Ok(bytes) => validate_one(&path.display().to_string(), &bytes),
            Err(code) => code,
        };
    }
    // Bounded before serde_yaml_ng parses it (see yaml.rs: libyaml is quadratic in depth).
    let bytes = match yaml::read_capped(path) {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => {
            eprintln!("error: {}: {e}", path.display());
            return ExitCode::from(1);
        }
        Err(e) => {
            eprintln!("apiguard: cannot read {}: {e}", path.display());
            return ExitCode::from(2);
        }
    };
    if let Err(e) = yaml::check_depth(&bytes) {
        eprintln!("error: {}: {e}", path.display());
        return ExitCode::from(1);
    }
    let mut found = Vec::new();
    let mut problems = Vec::new();
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
            // One walk: every Wasm filter's configuration, and every filter list's handoff.
            visit(&doc, "", &mut |v, here| {
                if let Some(config) = wasm_configuration(v) {
                    found.push((
                        format!("{at}{here}.config.configuration.value"),
                        config.to_owned(),
                    ));
                }
                if let serde_json::Value::Array(filters) = v {
                    for (i, problem) in handoff_problems(filters) {
                        problems.push(format!("{at}{here}[{i}]: {problem}"));
                    }
                }
            });
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
    for problem in problems {
        eprintln!("error: {}: {problem}", path.display());
        code = ExitCode::from(1);
    }
    for (at, config) in found {
        if validate_one(&format!("{}: {at}", path.display()), config.as_bytes())
            != ExitCode::SUCCESS
        {
            code = ExitCode::from(1);
        }
    }
    code
}

const EXT_AUTHZ_FILTER: &str =
    "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz";

/// With `rate_limit.call: ext_authz` the filter only hands the checks over: Envoy's `ext_authz`
/// must follow it in the same filter chain, asking the limiter's `/v1/ext_authz` with the
/// handoff header and failing closed (docs/ratelimit.md). Without it no limit is enforced, so a
/// chain that lacks it is an error, named by the Wasm filter's index in `filters`.
fn handoff_problems(filters: &[serde_json::Value]) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (i, f) in filters.iter().enumerate() {
        let hands_over = wasm_configuration(&f["typed_config"])
            .and_then(|c| serde_json::from_str::<serde_json::Value>(c).ok())
            .is_some_and(|c| c["rate_limit"]["call"] == "ext_authz");
        if !hands_over {
            continue;
        }
        let problem = match filters[i + 1..]
            .iter()
            .find(|f| f["typed_config"]["@type"].as_str() == Some(EXT_AUTHZ_FILTER))
        {
            None => "is not followed by Envoy's ext_authz filter".to_owned(),
            Some(f) => ext_authz_problem(&f["typed_config"]),
        };
        if !problem.is_empty() {
            out.push((
                i,
                format!("rate_limit.call is ext_authz, but the filter {problem} (envoy/filters/limiter-ext-authz.yaml is the entry to use)"),
            ));
        }
    }
    out
}

/// What is wrong with the ext_authz filter that follows (empty: nothing).
fn ext_authz_problem(tc: &serde_json::Value) -> String {
    let svc = &tc["http_service"];
    let forwards = tc["allowed_headers"]["patterns"]
        .as_array()
        .is_some_and(|p| p.iter().any(|m| m["exact"] == HANDOFF_HEADER));
    if svc.is_null() {
        "is followed by an ext_authz filter without http_service".into()
    } else if svc["path_prefix"] != EXT_AUTHZ_PATH {
        format!("is followed by an ext_authz filter whose http_service.path_prefix is not {EXT_AUTHZ_PATH}")
    } else if !forwards {
        format!("is followed by an ext_authz filter whose allowed_headers does not name {HANDOFF_HEADER}")
    } else if tc["failure_mode_allow"] == true {
        "is followed by an ext_authz filter with failure_mode_allow: true (a limiter down would let every request through)".into()
    } else {
        String::new()
    }
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

/// A Wasm filter's plugin configuration, when `v` is the filter's `typed_config`.
fn wasm_configuration(v: &serde_json::Value) -> Option<&str> {
    if v["@type"].as_str() != Some(WASM_FILTER) {
        return None;
    }
    v["config"]["configuration"]["value"].as_str()
}

/// Calls `f` on `v` and every value inside it, with its path (`a.b[2].c`; `""` for `v`).
fn visit(v: &serde_json::Value, at: &str, f: &mut impl FnMut(&serde_json::Value, &str)) {
    f(v, at);
    match v {
        serde_json::Value::Object(o) => {
            for (k, child) in o {
                let next = if at.is_empty() {
                    k.clone()
                } else {
                    format!("{at}.{k}")
                };
                visit(child, &next, f);
            }
        }
        serde_json::Value::Array(a) => {
            for (i, child) in a.iter().enumerate() {
                visit(child, &format!("{at}[{i}]"), f);
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
