//! Suite `limiter`: apiguard-limiter against Redis executing the same script directly.
//!
//! Per algorithm and round: (a) `checks` calls of `POST /v1/check` through the limiter (release
//! build, single Redis), measuring the limiter's and Redis's CPU time per check and the client
//! latency; (b) `redis-benchmark` running `EVALSHA` of the same `check.lua` with the same
//! arguments against the same Redis, measuring Redis's CPU per script call. The ratio
//! limiter CPU / Redis CPU per check is the service's own overhead (goal: at most 2x).
//!
//! Environment: `APIGUARD_BENCH_ROUNDS` (5), `APIGUARD_BENCH_CHECKS` per round (20000),
//! `APIGUARD_BENCH_CONCURRENCY` (16).
//!
//! Every series (median and range over rounds) and the ratio with its goal are written, per
//! algorithm, to `<target>/bench/limiter.json`.

use std::process::Command;
use std::time::Duration;

use apiguard_e2e::load::{drive_with, process_cpu, LoadReport};
use apiguard_e2e::repo_root;
use serde_json::{json, Value};

use crate::measure::{comparison, series, show, write_json, Kind, Label};
use crate::setup::limiter_over_redis;
use crate::{env_u64, BenchResult, Suite};

/// Huge, so every check is admitted and both sides do the full write path.
const LIMIT: u64 = 1_000_000_000_000;
const WINDOW_MS: u64 = 60_000;

/// A process's CPU time so far (user + system).
fn cpu(pid: u32) -> Result<Duration, String> {
    process_cpu(pid).ok_or_else(|| format!("cannot read CPU time of pid {pid}"))
}

/// `checks` calls of `body` to `url` over `conc` connections: the client's report and the CPU
/// time the service (`service_pid`) and Redis (`redis_pid`) spent on them. Every call must be
/// answered 200.
pub async fn check_round(
    name: &str,
    url: &str,
    body: &Value,
    (service_pid, redis_pid): (u32, u32),
    (checks, conc): (u64, u64),
) -> Result<(LoadReport, Duration, Duration), Box<dyn std::error::Error>> {
    let (s0, r0) = (cpu(service_pid)?, cpu(redis_pid)?);
    let (u, b) = (url.to_owned(), body.clone());
    let rep = drive_with(checks, conc, move |c| c.post(&u).json(&b)).await;
    let (s1, r1) = (cpu(service_pid)?, cpu(redis_pid)?);
    if rep.ok != checks {
        return Err(format!(
            "{name}: {} of {checks} checks answered 200 ({} other, {} errors)",
            rep.ok,
            rep.other_status(),
            rep.errors
        )
        .into());
    }
    Ok((rep, s1 - s0, r1 - r0))
}

/// The limiter's algorithms, each measured on its own key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LimiterAlgorithm {
    Log,
    Counter,
}

/// The algorithm's name, as `POST /v1/check` and `check.lua` take it.
impl Label for LimiterAlgorithm {
    fn label(&self) -> &str {
        match self {
            LimiterAlgorithm::Log => "log",
            LimiterAlgorithm::Counter => "counter",
        }
    }
}

#[derive(Default)]
struct Figures {
    limiter_us: Vec<f64>,
    redis_via_service_us: Vec<f64>,
    redis_direct_us: Vec<f64>,
    service_rps: Vec<f64>,
    direct_rps: Vec<f64>,
    p50_ms: Vec<f64>,
    p99_ms: Vec<f64>,
    direct_p50_ms: Vec<f64>,
    direct_p99_ms: Vec<f64>,
}

pub async fn run() -> BenchResult {
    let rounds = env_u64("APIGUARD_BENCH_ROUNDS", 5);
    let checks = env_u64("APIGUARD_BENCH_CHECKS", 20_000);
    let conc = env_u64("APIGUARD_BENCH_CONCURRENCY", 16);
    let (redis, limiter) = limiter_over_redis().await?;
    let script = std::fs::read_to_string(repo_root().join("limiter/src/store/check.lua"))?;
    let sha = redis.cli(&["script", "load", &script])?.trim().to_owned();
    if sha.len() != 40 {
        return Err(format!("SCRIPT LOAD answered {sha:?}").into());
    }
    let bench_bin = which("redis-benchmark")?;
    println!(
        "apiguard-limiter vs redis-benchmark EVALSHA of the same script: {rounds} interleaved rounds x {checks} checks, {conc} connections, one Redis"
    );
    let mut algorithms = Vec::new();
    for algorithm in [LimiterAlgorithm::Log, LimiterAlgorithm::Counter] {
        let algo = algorithm.label();
        let key = format!("{{bench-{algo}}}");
        let redis_key = format!("apiguard:{{bench-{algo}}}:{algo}:{WINDOW_MS}:{key}");
        let body = json!({"checks": [{"key": key, "limit": LIMIT, "window_ms": WINDOW_MS, "algorithm": algo}]});
        let url = format!("http://{}/v1/check", limiter.addr);
        let mut f = Figures::default();
        for round in 0..=rounds {
            // (a) through the service
            let pids = (limiter.proc.pid(), redis.proc.pid());
            let (rep, limiter_cpu, redis_cpu) =
                check_round(algo, &url, &body, pids, (checks, conc)).await?;
            // (b) the same script straight into Redis
            let d0 = cpu(redis.proc.pid())?;
            let out = Command::new(&bench_bin)
                .args(["-h", "127.0.0.1", "-p", &redis.port().to_string()])
                .args(["-n", &checks.to_string(), "-c", &conc.to_string()])
                .args([
                    "-r",
                    "1000000000",
                    "--csv",
                    "EVALSHA",
                    &sha,
                    "1",
                    &redis_key,
                ])
                .args([
                    "__rand_int__",
                    algo,
                    &LIMIT.to_string(),
                    &WINDOW_MS.to_string(),
                    "1",
                ])
                .output()?;
            let d1 = cpu(redis.proc.pid())?;
            let csv = String::from_utf8_lossy(&out.stdout).into_owned();
            let row = parse_csv(&csv).ok_or_else(|| format!("redis-benchmark said: {csv}"))?;
            if round == 0 {
                continue; // warm-up
            }
            let n = checks as f64;
            f.limiter_us.push(limiter_cpu.as_secs_f64() * 1e6 / n);
            f.redis_via_service_us
                .push(redis_cpu.as_secs_f64() * 1e6 / n);
            f.redis_direct_us.push((d1 - d0).as_secs_f64() * 1e6 / n);
            f.service_rps.push(n / rep.elapsed.as_secs_f64());
            f.p50_ms.push(rep.quantile(0.5).as_secs_f64() * 1e3);
            f.p99_ms.push(rep.quantile(0.99).as_secs_f64() * 1e3);
            f.direct_rps.push(row.0);
            f.direct_p50_ms.push(row.1);
            f.direct_p99_ms.push(row.2);
        }
        report(algo, &f);
        algorithms.push(f.json(algo));
    }
    let settings = json!({"rounds": rounds, "checks_per_round": checks, "concurrency": conc});
    write_json(
        Suite::Limiter,
        json!({"settings": settings, "algorithms": algorithms}),
    )
}

fn report(algo: &str, f: &Figures) {
    println!("algorithm `{algo}` (median (min–max) over rounds)");
    println!(
        "  through apiguard-limiter: {} checks/s, p50 {} ms, p99 {} ms",
        show(&f.service_rps, 0),
        show(&f.p50_ms, 2),
        show(&f.p99_ms, 2)
    );
    println!(
        "      limiter CPU {} µs/check = {} checks/s per core; Redis CPU {} µs/check",
        show(&f.limiter_us, 1),
        show(&per_core(&f.limiter_us), 0),
        show(&f.redis_via_service_us, 1)
    );
    println!(
        "  redis-benchmark EVALSHA:  {} calls/s, p50 {} ms, p99 {} ms; Redis CPU {} µs/call",
        show(&f.direct_rps, 0),
        show(&f.direct_p50_ms, 2),
        show(&f.direct_p99_ms, 2),
        show(&f.redis_direct_us, 1)
    );
    println!(
        "  ratio limiter CPU / Redis CPU per script call: {}x (goal ≤ {RATIO_GOAL}x)",
        show(&f.ratios(), 2)
    );
}

/// The goal for limiter CPU per check / Redis CPU per script call: at most this.
const RATIO_GOAL: f64 = 2.0;

impl Figures {
    /// Limiter CPU per check / Redis CPU per script call, round by round.
    fn ratios(&self) -> Vec<f64> {
        self.limiter_us
            .iter()
            .zip(&self.redis_direct_us)
            .map(|(l, r)| l / r)
            .collect()
    }

    /// The algorithm's figures: every series, and the ratio with its goal.
    fn json(&self, algo: &str) -> Value {
        json!({
            "algorithm": algo,
            "through_limiter": {
                "checks_per_s": series(&self.service_rps),
                "p50_ms": series(&self.p50_ms),
                "p99_ms": series(&self.p99_ms),
                "limiter_cpu_us_per_check": series(&self.limiter_us),
                "limiter_checks_per_s_per_core": series(&per_core(&self.limiter_us)),
                "redis_cpu_us_per_check": series(&self.redis_via_service_us),
            },
            "redis_benchmark_evalsha": {
                "calls_per_s": series(&self.direct_rps),
                "p50_ms": series(&self.direct_p50_ms),
                "p99_ms": series(&self.direct_p99_ms),
                "redis_cpu_us_per_call": series(&self.redis_direct_us),
            },
            "comparisons": [comparison(
                Kind::Ratio,
                "limiter CPU per check",
                "Redis CPU per script call",
                &self.ratios(),
                Some(RATIO_GOAL),
            )],
        })
    }
}

/// Checks per second per core, from µs of CPU per check.
pub fn per_core(us: &[f64]) -> Vec<f64> {
    us.iter().map(|u| 1e6 / u).collect()
}

/// `redis-benchmark --csv` prints a header and one row:
/// "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
fn parse_csv(csv: &str) -> Option<(f64, f64, f64)> {
    let row = csv
        .lines()
        .find(|l| !l.starts_with("\"test\"") && l.contains(','))?;
    let cols: Vec<f64> = row
        .split(',')
        .skip(1)
        .map(|c| c.trim_matches('"').parse().unwrap_or(f64::NAN))
        .collect();
    Some((*cols.first()?, *cols.get(3)?, *cols.get(5)?))
}

fn which(name: &str) -> Result<std::path::PathBuf, String> {
    std::env::var_os("PATH")
        .and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(name))
                .find(|p| p.is_file())
        })
        .ok_or_else(|| format!("{name} not found on PATH: run `just setup` (apt-get install redis-server brings redis-tools)"))
}
