//! Suite `footprint`: module size, Envoy start-up time and RSS (after 200 requests; the median
//! of three starts) at 1, 2 and 4 workers for the shipped build (`opt-level = 3`) and the
//! `opt-level = "z"` build (profile `release-z`), next to Envoy without the filter; then the two
//! builds' Envoy CPU per request with the pack ([`crate::builds::compare_builds`]).

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use apiguard_e2e::load::summary;
use apiguard_e2e::{Echo, Envoy, EnvoySpec};
use serde_json::{json, Value};

use crate::builds::{compare_builds, BuildsPipeline};
use crate::measure::{series, write_json, Label};
use crate::setup::{apiguard_config, builds_doc, editor_setup};
use crate::{BenchResult, Suite};

/// The two builds of the module compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Build {
    Opt3,
    OptZ,
}

impl Build {
    /// Its row in the footprint table.
    fn table_label(self) -> &'static str {
        match self {
            Build::Opt3 => "apiguard opt-level=3",
            Build::OptZ => "apiguard opt-level=\"z\"",
        }
    }
}

/// Its variant in the CPU comparison.
impl Label for Build {
    fn label(&self) -> &str {
        match self {
            Build::Opt3 => "jwt + pack, opt-level=3",
            Build::OptZ => "jwt + pack, opt-level=\"z\"",
        }
    }
}

/// Resident memory of a process, in MiB (`VmRSS`).
fn rss_mib(pid: u32) -> Option<f64> {
    let p = procfs::process::Process::new(i32::try_from(pid).ok()?).ok()?;
    let status = p.status().ok()?;
    Some(status.vmrss? as f64 / 1024.0)
}

/// Start-up times (s) and RSS (MiB) after 200 requests, for one module (or none) at `workers`
/// workers, over three starts.
async fn footprint(
    upstream: SocketAddr,
    module: Option<(&Path, &str)>,
    workers: u32,
    auth: &str,
) -> Result<(Vec<f64>, Vec<f64>), Box<dyn std::error::Error>> {
    let mut starts = Vec::new();
    let mut rss = Vec::new();
    for _ in 0..3 {
        let mut spec = EnvoySpec::new(upstream).concurrency(workers);
        spec.wasm_log_level = "info";
        if let Some((m, cfg)) = module {
            spec = spec.with_filter(cfg).with_module(m.to_path_buf());
        }
        let t = Instant::now();
        let envoy = Envoy::start(&spec).await?;
        starts.push(t.elapsed().as_secs_f64());
        let client = apiguard_e2e::client();
        for _ in 0..200 {
            client
                .get(envoy.url(&builds_doc()))
                .header("authorization", auth)
                .send()
                .await?;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        rss.push(rss_mib(envoy.proc.pid()).ok_or("cannot read Envoy RSS")?);
    }
    Ok((starts, rss))
}

/// One row of the footprint table, for the JSON.
fn row(
    workers: u32,
    build: &str,
    module_kb: Option<u64>,
    starts: &[f64],
    rss: &[f64],
    rss_over_none: Option<f64>,
) -> Value {
    json!({"workers": workers, "build": build, "module_kb": module_kb,
           "startup_s": series(starts), "rss_mib": series(rss),
           "rss_over_no_filter_mib": rss_over_none})
}

/// Module size, Envoy RSS and start-up for the shipped build (`opt-level = 3`) and `"z"`, and
/// their CPU per request with the pack.
pub async fn run() -> BenchResult {
    let opt3 = apiguard_e2e::wasm_path()?;
    let optz = apiguard_e2e::target_dir().join("wasm32-wasip1/release-z/apiguard.wasm");
    if !optz.is_file() {
        return Err(format!(
            "{} is missing: `just bench` builds it (cargo build --profile release-z --target wasm32-wasip1 -p apiguard-wasm)",
            optz.display()
        )
        .into());
    }
    let echo = Echo::start().await?;
    let (auth, jwks) = editor_setup();
    let cfg = apiguard_config(&jwks, true, false);
    let builds = [(Build::Opt3, opt3), (Build::OptZ, optz)];
    let mut rows = Vec::new();
    println!(
        "{:<26} {:>10} {:>8} {:>12} {:>10} {:>14}",
        "build", "module KB", "workers", "start-up s", "RSS MiB", "RSS over none"
    );
    for workers in [1u32, 2, 4] {
        let (starts0, rss0) = footprint(echo.addr, None, workers, &auth).await?;
        let (s0, r0) = (summary(&starts0).0, summary(&rss0).0);
        println!(
            "{:<26} {:>10} {workers:>8} {s0:>12.2} {r0:>10.1} {:>14}",
            "no filter", "-", "-"
        );
        rows.push(row(workers, "no filter", None, &starts0, &rss0, None));
        for (build, path) in &builds {
            let name = build.table_label();
            let kb = std::fs::metadata(path)?.len() / 1024;
            let (starts, rss) = footprint(echo.addr, Some((path, &cfg)), workers, &auth).await?;
            let (s, r) = (summary(&starts).0, summary(&rss).0);
            println!(
                "{name:<26} {kb:>10} {workers:>8} {s:>12.2} {r:>10.1} {:>14.1}",
                r - r0
            );
            rows.push(row(workers, name, Some(kb), &starts, &rss, Some(r - r0)));
        }
    }
    let cpu = compare_builds(echo.addr, &builds, BuildsPipeline::Pack).await?;
    write_json(Suite::Footprint, json!({"footprint": rows, "cpu": cpu}))
}
