//! Envoy CPU time per request, apiguard against a baseline measured in the same run.
//!
//! Method: one Envoy per variant, each with `--concurrency 1`, all started up front and warmed.
//! Rounds interleave the variants (A B A B …) so drift in machine speed hits both alike. A round
//! sends a fixed number of requests over kept-alive connections and divides the Envoy process's
//! CPU time (`/proc/<pid>/stat`, user + system) by the growth of Envoy's completed-request
//! counter. The figure to quote is the per-round ratio to the baseline: its median and range.
//!
//! Environment: `APIGUARD_BENCH_ROUNDS` (default 7), `APIGUARD_BENCH_REQUESTS` per round
//! (default 20000), `APIGUARD_BENCH_CONCURRENCY` connections (default 16).

use apiguard_e2e::load::{drive, process_cpu, summary};
use apiguard_e2e::{Echo, Envoy, EnvoySpec};

const COMPLETED: &str = "http.ingress_http.downstream_rq_completed";

struct Variant {
    name: &'static str,
    envoy: Envoy,
    cpu_us_per_req: Vec<f64>,
}

use crate::{env_u64, BenchResult};

pub async fn run() -> BenchResult {
    let rounds = env_u64("APIGUARD_BENCH_ROUNDS", 7);
    let requests = env_u64("APIGUARD_BENCH_REQUESTS", 20_000);
    let conc = env_u64("APIGUARD_BENCH_CONCURRENCY", 16);
    let echo = Echo::start().await?;

    let mut variants = vec![
        Variant {
            name: "no filter (baseline)",
            envoy: Envoy::start(&EnvoySpec::new(echo.addr)).await?,
            cpu_us_per_req: Vec::new(),
        },
        Variant {
            name: "apiguard pass-through",
            envoy: Envoy::start(&EnvoySpec::new(echo.addr).with_filter("{}")).await?,
            cpu_us_per_req: Vec::new(),
        },
    ];
    println!(
        "Envoy CPU per request: {rounds} interleaved rounds x {requests} requests, {conc} connections, --concurrency 1"
    );
    for v in &variants {
        let warm = drive(&v.envoy.url("/bench"), &[], requests / 4, conc).await;
        if warm.ok == 0 {
            return Err(format!("{}: warm-up got no 2xx ({warm:?})", v.name).into());
        }
    }
    for round in 0..rounds {
        for v in &mut variants {
            let pid = v.envoy.proc.pid();
            let cpu0 = process_cpu(pid).ok_or("cannot read Envoy CPU time")?;
            let n0 = v.envoy.stat(COMPLETED).await.ok_or("no request counter")?;
            let r = drive(&v.envoy.url("/bench"), &[], requests, conc).await;
            let cpu1 = process_cpu(pid).ok_or("cannot read Envoy CPU time")?;
            let n1 = v.envoy.stat(COMPLETED).await.ok_or("no request counter")?;
            if r.ok != requests {
                return Err(format!(
                    "{} round {round}: {} of {requests} succeeded ({} other status, {} errors)",
                    v.name, r.ok, r.other_status, r.errors
                )
                .into());
            }
            let reqs = n1.saturating_sub(n0).max(1) as f64;
            v.cpu_us_per_req
                .push((cpu1 - cpu0).as_secs_f64() * 1e6 / reqs);
        }
    }
    println!(
        "{:<26} {:>12} {:>20}",
        "variant", "CPU µs/req", "range (min–max)"
    );
    for v in &variants {
        let (med, lo, hi) = summary(&v.cpu_us_per_req);
        println!(
            "{:<26} {med:>12.1} {:>20}",
            v.name,
            format!("{lo:.1}–{hi:.1}")
        );
    }
    let base = &variants[0].cpu_us_per_req;
    for v in &variants[1..] {
        let ratios: Vec<f64> = v
            .cpu_us_per_req
            .iter()
            .zip(base)
            .map(|(x, b)| x / b)
            .collect();
        let (med, lo, hi) = summary(&ratios);
        println!(
            "ratio {} / baseline: median {med:.3}x (range {lo:.3}–{hi:.3}x over {} rounds)",
            v.name,
            ratios.len()
        );
    }
    Ok(())
}
