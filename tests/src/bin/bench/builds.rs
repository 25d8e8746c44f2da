//! Suite `builds`: Envoy CPU per request of module files given with `--module` (two or more),
//! all on the same `--pipeline` configuration, one token and one path, in one run (see
//! [`crate::measure`]); ratios to the first. [`compare_builds`] is shared with the `footprint`
//! suite, which compares the shipped build with the `opt-level = "z"` one.

use std::net::SocketAddr;
use std::path::PathBuf;

use apiguard_e2e::{Echo, EnvoySpec};
use clap::ValueEnum;
use serde_json::{json, Value};

use crate::measure::{write_json, Label, Run};
use crate::setup::{apiguard_config, builds_doc, editor_setup, limiter_over_redis};
use crate::{BenchResult, Suite};

/// What the `builds` suite configures (one token, one path every time).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BuildsPipeline {
    /// An empty configuration (`{}`): the filter's own floor.
    PassThrough,
    /// The JWT stage and the built-in policy pack (compiled, the default).
    Pack,
    /// The JWT stage and the built-in pack as Rego on regorus (`pack_engine: rego`).
    PackRego,
    /// The JWT stage and `allow := true` in Rego: the floor of any Rego policy.
    AllowTrue,
    /// JWT + pack + the limiter callout (starts a Redis and an apiguard-limiter).
    Limiter,
}

/// One `--module` file: its place on the command line, and its path as printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Module<'a> {
    index: usize,
    path: &'a str,
}

impl Label for Module<'_> {
    fn label(&self) -> &str {
        self.path
    }
}

/// Each module file on the same configuration, one token and path: to compare builds of the
/// filter in one run (`just bench builds --module a.wasm --module b.wasm`), e.g. a change
/// against the build before it.
pub async fn run(modules: &[PathBuf], pipeline: BuildsPipeline) -> BenchResult {
    if modules.len() < 2 {
        return Err("the builds suite compares two or more `--module` files".into());
    }
    let echo = Echo::start().await?;
    let paths: Vec<String> = modules.iter().map(|m| m.display().to_string()).collect();
    let builds: Vec<(Module, PathBuf)> = paths
        .iter()
        .zip(modules)
        .enumerate()
        .map(|(index, (path, m))| (Module { index, path }, m.clone()))
        .collect();
    let cpu = compare_builds(echo.addr, &builds, pipeline).await?;
    let pipeline_name = pipeline
        .to_possible_value()
        .map(|p| p.get_name().to_owned());
    let mut doc = json!({"pipeline": pipeline_name});
    if let (Value::Object(doc), Value::Object(cpu)) = (&mut doc, cpu) {
        doc.extend(cpu);
    }
    write_json(Suite::Builds, doc)
}

/// CPU per request of `pipeline` (one token, one path) for each module file, in one run;
/// ratios to the first. Returns the run's figures ([`Run::json`]).
pub async fn compare_builds<V: Label>(
    upstream: SocketAddr,
    builds: &[(V, PathBuf)],
    pipeline: BuildsPipeline,
) -> Result<Value, Box<dyn std::error::Error>> {
    let (auth, jwks) = editor_setup();
    // Kept alive until the rounds are over.
    let limiter = match pipeline {
        BuildsPipeline::Limiter => Some(limiter_over_redis().await?),
        _ => None,
    };
    let cfg = match pipeline {
        BuildsPipeline::PassThrough => "{}".to_owned(),
        BuildsPipeline::Pack => apiguard_config(&jwks, true, false),
        BuildsPipeline::PackRego | BuildsPipeline::AllowTrue => {
            let mut c: Value = serde_json::from_str(&apiguard_config(&jwks, true, false))?;
            if pipeline == BuildsPipeline::PackRego {
                c["policy"]["pack_engine"] = json!("rego");
            } else {
                c["policy"]["modules"] =
                    json!({"trivial.rego": "package api.authz\nallow := true\n"});
            }
            c.to_string()
        }
        BuildsPipeline::Limiter => apiguard_config(&jwks, true, true),
    };
    let plans = builds
        .iter()
        .map(|(id, module)| {
            let mut spec = EnvoySpec::new(upstream)
                .with_filter(cfg.clone())
                .with_module(module.clone());
            if let Some((_, l)) = &limiter {
                spec = spec.with_cluster("limiter", l.addr);
            }
            (*id, spec)
        })
        .collect();
    let mut run = Run::start(plans, Some(&auth), &builds_doc()).await?;
    run.measure().await?;
    if let Some((first, _)) = builds.first() {
        for (id, _) in &builds[1..] {
            run.ratio(*id, *first, None);
        }
    }
    Ok(run.json())
}
