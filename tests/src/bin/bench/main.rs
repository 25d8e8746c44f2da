//! `just bench`: apiguard's benchmarks. Every figure is reported as a median and range over
//! interleaved rounds, next to a baseline measured in the same run, and written as JSON to
//! `<target>/bench/<suite>.json` (see [`measure::write_json`]).
//!
//! One module per suite (`envoy`, `jwt`, `policy`, `ratelimit`, `limiter`, `compare`,
//! `footprint`, `builds`, `floor`, `peers`), each naming its variants with an enum; the Envoy CPU
//! measurement they share is in `measure`, the configurations several use in `setup`.

mod builds;
mod compare;
mod envoy;
mod floor;
mod footprint;
mod jwt;
mod limiter;
mod measure;
mod peers;
mod pin;
mod policy;
mod ratelimit;
mod setup;

use std::process::ExitCode;

use clap::{Parser, ValueEnum};

use crate::builds::BuildsPipeline;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Suite {
    /// Envoy CPU per request: no filter vs apiguard pass-through.
    Envoy,
    /// The JWT stage vs Envoy's native jwt_authn (with and without its cache).
    Jwt,
    /// The policy pack on top of the JWT stage.
    Policy,
    /// The full pipeline with the limiter callout, and the local over-limit path.
    Ratelimit,
    /// apiguard-limiter vs Redis executing the same script (redis-benchmark).
    Limiter,
    /// Side by side with Envoy's native jwt_authn, RBAC and ext_authz; best-case and realistic.
    Compare,
    /// Module size, Envoy RSS and start-up; opt-level 3 against "z".
    Footprint,
    /// CPU per request of the builds given with `--module`, on the `--pipeline` configuration.
    Builds,
    /// Instructions per request of the policy stage's steps, counted by callgrind.
    Floor,
    /// Beside the peers doing the same jobs: the limiter vs Limitador, the pack vs OPA.
    Peers,
}

/// apiguard benchmarks (see docs/testing.md).
#[derive(Debug, Parser)]
struct Args {
    /// Which suites to run; all but `builds` when none is named.
    suites: Vec<Suite>,
    /// Module files for the `builds` suite (two or more, compared in one run).
    #[arg(long = "module")]
    modules: Vec<std::path::PathBuf>,
    /// The configuration the `builds` suite runs the modules with.
    #[arg(long, value_enum, default_value = "pack")]
    pipeline: BuildsPipeline,
}

pub type BenchResult = Result<(), Box<dyn std::error::Error>>;

pub fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() -> ExitCode {
    // The `floor` suite runs this binary under callgrind for each step it counts.
    if let Ok(spec) = std::env::var("APIGUARD_FLOOR_WORKER") {
        return match floor::worker(&spec) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("floor worker: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let args = Args::parse();
    let suites = if args.suites.is_empty() {
        vec![
            Suite::Envoy,
            Suite::Jwt,
            Suite::Policy,
            Suite::Ratelimit,
            Suite::Limiter,
            Suite::Compare,
            Suite::Footprint,
            Suite::Peers,
        ]
    } else {
        args.suites
    };
    for s in suites {
        let r = match s {
            Suite::Envoy => envoy::run().await,
            Suite::Jwt => jwt::run().await,
            Suite::Policy => policy::run().await,
            Suite::Ratelimit => ratelimit::run().await,
            Suite::Limiter => limiter::run().await,
            Suite::Compare => compare::run().await,
            Suite::Footprint => footprint::run().await,
            Suite::Builds => builds::run(&args.modules, args.pipeline).await,
            Suite::Floor => floor::run().await,
            Suite::Peers => peers::run().await,
        };
        if let Err(e) = r {
            eprintln!("bench {s:?} failed: {e}");
            return ExitCode::FAILURE;
        }
        println!();
    }
    ExitCode::SUCCESS
}
