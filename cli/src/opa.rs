//! `apiguard policy eval -d POLICY -d DATA -i INPUT QUERY`: a Rego query over modules and data
//! files, as `opa eval` takes them, evaluated by regorus (the engine the filter runs). The answer
//! is OPA's result document (`{"result": [{"expressions": [{"value": …, "text": …}]}]}`, `{}`
//! when undefined), so scripts written for `opa eval` read it unchanged.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use apiguard_core::config::RegoVersion;
use apiguard_core::policy::testcases::with_derived_fields;
use serde_json::Value;

use crate::files::read;

/// One file to load, and the data path its contents go under.
struct Load {
    file: PathBuf,
    /// For a data file found in a folder: its folder relative to the one named (as OPA does:
    /// `-d conf` loads `conf/tenants/data.json` under `data.tenants`). Empty for a named file.
    under: Vec<String>,
}

/// Every `.rego`, `.json`, `.yaml` and `.yml` file under `path`, in name order.
fn files(path: &Path) -> Result<Vec<Load>, String> {
    if !path.is_dir() {
        return Ok(vec![Load {
            file: path.to_owned(),
            under: Vec::new(),
        }]);
    }
    let mut out = Vec::new();
    let mut stack = vec![(path.to_owned(), Vec::<String>::new())];
    while let Some((dir, under)) = stack.pop() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map_err(|e| format!("cannot read {}: {e}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        entries.sort();
        for p in entries {
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
            if p.is_dir() {
                let mut next = under.clone();
                next.extend(name);
                stack.push((p, next));
            } else if kind(&p).is_some() {
                out.push(Load {
                    file: p,
                    under: under.clone(),
                });
            }
        }
    }
    Ok(out)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Rego,
    Json,
    Yaml,
}

fn kind(p: &Path) -> Option<Kind> {
    match p.extension()?.to_str()? {
        "rego" => Some(Kind::Rego),
        "json" => Some(Kind::Json),
        "yaml" | "yml" => Some(Kind::Yaml),
        _ => None,
    }
}

/// A JSON or YAML document.
fn document(path: &Path, k: Kind) -> Result<Value, ExitCode> {
    let bytes = read(path)?;
    let parsed = match k {
        Kind::Yaml => serde_yaml_ng::from_slice(&bytes).map_err(|e| e.to_string()),
        _ => serde_json::from_slice(&bytes).map_err(|e| e.to_string()),
    };
    parsed.map_err(|e| {
        eprintln!("error: {}: {e}", path.display());
        ExitCode::from(1)
    })
}

/// An input document for `policy eval`, either form: YAML for `.yaml`/`.yml`, else JSON.
pub fn input_document(path: &Path) -> Result<Value, ExitCode> {
    document(path, kind(path).unwrap_or(Kind::Json))
}

/// `version`: the Rego version modules are read as (`--v0-compatible` for v0).
pub fn eval(
    data: &[PathBuf],
    input: Option<&Path>,
    query: &str,
    fail: bool,
    version: RegoVersion,
) -> ExitCode {
    let mut engine = regorus::Engine::new();
    engine.set_rego_v0(version == RegoVersion::V0);
    for named in data {
        let loads = match files(named) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("apiguard: {e}");
                return ExitCode::from(2);
            }
        };
        for load in loads {
            let Some(k) = kind(&load.file) else {
                eprintln!(
                    "apiguard: {}: not a Rego module (.rego) or a data file (.json, .yaml)",
                    load.file.display()
                );
                return ExitCode::from(2);
            };
            if k == Kind::Rego {
                let text = match read(&load.file) {
                    Ok(b) => String::from_utf8_lossy(&b).into_owned(),
                    Err(code) => return code,
                };
                if let Err(e) = engine.add_policy(load.file.display().to_string(), text) {
                    eprintln!("error: {e:#}");
                    return ExitCode::from(1);
                }
                continue;
            }
            let mut doc = match document(&load.file, k) {
                Ok(d) => d,
                Err(code) => return code,
            };
            for key in load.under.iter().rev() {
                doc = Value::Object(serde_json::Map::from_iter([(key.clone(), doc)]));
            }
            if let Err(e) = engine.add_data(regorus::Value::from(doc)) {
                eprintln!("error: {}: {e:#}", load.file.display());
                return ExitCode::from(1);
            }
        }
    }
    if let Some(path) = input {
        match input_document(path) {
            Ok(doc) => engine.set_input(regorus::Value::from(with_derived_fields(&doc))),
            Err(code) => return code,
        }
    }
    let results = match engine.eval_query(query.to_owned(), false) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(1);
        }
    };
    println!(
        "{}",
        serde_json::to_string_pretty(&results).unwrap_or_default()
    );
    if fail && results.result.is_empty() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
