//! Suite `peers`: apiguard beside the peers that do the same jobs, measured in one run.
//!
//! - **Limitador** against apiguard-limiter: `bench/peers/limitador/` puts Limitador 0.14 (its
//!   `AsyncRedisStorage`: counters in Redis, fixed windows) behind the limiter's own
//!   `POST /v1/check`, so one client drives both with the same requests, over the same Redis,
//!   with the same limit and window (60 s, so large that every check is admitted and both do
//!   their full write path). Per round and service: the service's and Redis's CPU per check,
//!   p50/p99 client latency, checks per second per core of the service. Rounds interleave the
//!   services, each round starting with another one, each on a key of its own. Then exactness:
//!   on a fresh key with a limit of 20, 100 calls one by one (each service must admit exactly
//!   20, or the suite fails), then 100 calls at once, five times; how many were admitted.
//! - **OPA** against the pack: OPA's Go engine in-process (`bench/peers/opa/`) decides the
//!   built-in pack's Rego with its default data on every case input of `policies/tests/` (those
//!   without data of their own), with the entry rule apiguard generates; apiguard decides the
//!   same inputs with the pack as Rego (regorus) and compiled. Per round: CPU per decision of
//!   each, and of `allow := true` on the same inputs (each engine's floor). The decisions must
//!   agree (allow, reasons, tier) or the suite fails.
//!
//! Environment: `APIGUARD_BENCH_ROUNDS` (5), `APIGUARD_BENCH_CHECKS` per round (20000),
//! `APIGUARD_BENCH_CONCURRENCY` (16), `APIGUARD_BENCH_DECISIONS` per round (20000).
//! Figures go to `<target>/bench/peers.json`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use apiguard_core::config::PackEngine;
use apiguard_core::policy::testcases::{with_derived_fields, Case};
use apiguard_core::policy::{effective_data, PolicyProgram, BUILTIN_NAME, BUILTIN_PACK};

use apiguard_e2e::{repo_root, Limiter};
use serde_json::{json, Value};

use crate::limiter::{check_round, per_core};
use crate::measure::{comparison, series, show, write_json, Kind};
use crate::setup::limiter_over_redis;
use crate::{env_u64, BenchResult, Suite};

/// Every check is admitted: both services do their full write path on every call.
const LIMIT: u64 = 1_000_000_000_000;
const WINDOW_S: u64 = 60;
/// The exactness probe: this many calls at once against a limit of `PROBE_LIMIT`.
const PROBE_CALLS: usize = 100;
const PROBE_LIMIT: u64 = 20;
const PROBE_TRIES: usize = 5;
const FLOOR_MODULE: &str = "package api.authz\nallow := true\n";

type Error = Box<dyn std::error::Error>;

/// Runs one of `bench/peers/*/…sh` and returns the path it prints last.
fn peer_script(script: &str) -> Result<PathBuf, Error> {
    let path = repo_root().join("bench/peers").join(script);
    println!("preparing the peer: {}", path.display());
    let out = Command::new("bash")
        .arg(&path)
        .stderr(Stdio::inherit())
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    match text.lines().last() {
        Some(p) if out.status.success() => Ok(PathBuf::from(p.trim())),
        _ => Err(format!("{} failed ({})", path.display(), out.status).into()),
    }
}

pub async fn run() -> BenchResult {
    let rounds = env_u64("APIGUARD_BENCH_ROUNDS", 5);
    let limiters = limitador(rounds).await?;
    let policy = opa(rounds)?;
    write_json(
        Suite::Peers,
        json!({"settings": {"rounds": rounds}, "limiter": limiters, "policy": policy}),
    )
}

// --- apiguard-limiter and Limitador ----------------------------------------------------------

/// One service under load, with its figures round by round.
struct Service {
    name: &'static str,
    pid: u32,
    url: String,
    algorithm: Option<&'static str>,
    service_us: Vec<f64>,
    redis_us: Vec<f64>,
    rps: Vec<f64>,
    p50_ms: Vec<f64>,
    p99_ms: Vec<f64>,
}

impl Service {
    fn new(name: &'static str, pid: u32, addr: &str, algorithm: Option<&'static str>) -> Service {
        Service {
            name,
            pid,
            url: format!("http://{addr}/v1/check"),
            algorithm,
            service_us: Vec::new(),
            redis_us: Vec::new(),
            rps: Vec::new(),
            p50_ms: Vec::new(),
            p99_ms: Vec::new(),
        }
    }

    /// `checks` calls on a key of the round's own, so a `log` window does not carry one
    /// round's entries into the next.
    async fn round(&mut self, redis_pid: u32, checks: u64, conc: u64, round: u64) -> BenchResult {
        let body = check_body(
            &format!("{{peer-{}-{round}}}", self.name),
            LIMIT,
            self.algorithm,
        );
        let (rep, service_cpu, redis_cpu) = check_round(
            self.name,
            &self.url,
            &body,
            (self.pid, redis_pid),
            (checks, conc),
        )
        .await?;
        // Round 0 warms up.
        if round > 0 {
            let n = checks as f64;
            self.service_us.push(service_cpu.as_secs_f64() * 1e6 / n);
            self.redis_us.push(redis_cpu.as_secs_f64() * 1e6 / n);
            self.rps.push(n / rep.elapsed.as_secs_f64());
            self.p50_ms.push(rep.quantile(0.5).as_secs_f64() * 1e3);
            self.p99_ms.push(rep.quantile(0.99).as_secs_f64() * 1e3);
        }
        Ok(())
    }

    fn report(&self) {
        println!(
            "  {:<28} {} checks/s, p50 {} ms, p99 {} ms",
            self.name,
            show(&self.rps, 0),
            show(&self.p50_ms, 2),
            show(&self.p99_ms, 2)
        );
        println!(
            "  {:<28} service CPU {} µs/check = {} checks/s per core; Redis CPU {} µs/check",
            "",
            show(&self.service_us, 1),
            show(&per_core(&self.service_us), 0),
            show(&self.redis_us, 1)
        );
    }

    fn json(&self) -> Value {
        json!({
            "service": self.name,
            "checks_per_s": series(&self.rps),
            "p50_ms": series(&self.p50_ms),
            "p99_ms": series(&self.p99_ms),
            "service_cpu_us_per_check": series(&self.service_us),
            "service_checks_per_s_per_core": series(&per_core(&self.service_us)),
            "redis_cpu_us_per_check": series(&self.redis_us),
        })
    }
}

fn ratios(a: &[f64], b: &[f64]) -> Vec<f64> {
    a.iter().zip(b).map(|(x, y)| x / y).collect()
}

/// Starts the Limitador harness with `limit` per window and waits for its `/healthz`, as the
/// harness waits for apiguard-limiter's.
async fn start_limitador(bin: &Path, redis_url: &str, limit: u64) -> Result<Limiter, Error> {
    let args = [
        "--redis".to_owned(),
        redis_url.to_owned(),
        "--limit".to_owned(),
        limit.to_string(),
        "--window-s".to_owned(),
        WINDOW_S.to_string(),
    ];
    Ok(Limiter::start_bin(bin, &args).await?)
}

async fn limitador(rounds: u64) -> Result<Value, Error> {
    let checks = env_u64("APIGUARD_BENCH_CHECKS", 20_000);
    let conc = env_u64("APIGUARD_BENCH_CONCURRENCY", 16);
    let bin = peer_script("limitador/build.sh")?;
    let (redis, limiter) = limiter_over_redis().await?;
    let peer = start_limitador(&bin, &redis.url(), LIMIT).await?;
    let addr = limiter.addr.to_string();
    let mut services = [
        Service::new(
            "apiguard-limiter (counter)",
            limiter.proc.pid(),
            &addr,
            Some("counter"),
        ),
        Service::new(
            "apiguard-limiter (log)",
            limiter.proc.pid(),
            &addr,
            Some("log"),
        ),
        Service::new(
            "Limitador 0.14 (Redis)",
            peer.proc.pid(),
            &peer.addr.to_string(),
            None,
        ),
    ];
    println!(
        "apiguard-limiter vs Limitador, same Redis and limit: {rounds} interleaved rounds x {checks} checks, {conc} connections"
    );
    for round in 0..=rounds {
        // Each round starts with another service, so no service always follows the same one.
        for i in 0..services.len() {
            let k = (i + round as usize) % services.len();
            services[k]
                .round(redis.proc.pid(), checks, conc, round)
                .await?;
        }
    }
    println!("median (min–max) over rounds");
    for s in &services {
        s.report();
    }
    let [counter, log, peer_figures] = &services;
    let mut comparisons = Vec::new();
    for ours in [counter, log] {
        for (what, a, b) in [
            (
                "service CPU per check",
                &ours.service_us,
                &peer_figures.service_us,
            ),
            (
                "Redis CPU per check",
                &ours.redis_us,
                &peer_figures.redis_us,
            ),
            ("p50 latency", &ours.p50_ms, &peer_figures.p50_ms),
        ] {
            let r = ratios(a, b);
            println!(
                "  ratio {what}: {} / {} = {}x",
                ours.name,
                peer_figures.name,
                show(&r, 2)
            );
            comparisons.push(comparison(
                Kind::Ratio,
                &format!("{} {what}", ours.name),
                &format!("{} {what}", peer_figures.name),
                &r,
                None,
            ));
        }
    }
    // Exactness: a limit of PROBE_LIMIT, PROBE_CALLS calls at once on a fresh key.
    let probe = start_limitador(&bin, &redis.url(), PROBE_LIMIT).await?;
    println!(
        "exactness: limit {PROBE_LIMIT} per {WINDOW_S} s on a fresh key; admitted of {PROBE_CALLS} calls one by one, then at once ({PROBE_TRIES} tries)"
    );
    let mut exactness = Vec::new();
    for s in &services {
        let (name, algorithm) = (s.name, s.algorithm);
        // Limitador applies one registered limit: the probe's is its own process.
        let url = match algorithm {
            Some(_) => s.url.clone(),
            None => format!("http://{}/v1/check", probe.addr),
        };
        // One by one first: each service must hold the limit when nothing races.
        let client = reqwest::Client::new();
        let body = check_body(&format!("{{probe-serial-{name}}}"), PROBE_LIMIT, algorithm);
        let mut serial = 0;
        for _ in 0..PROBE_CALLS {
            serial += usize::from(allowed(&client, &url, &body).await?);
        }
        if serial != PROBE_LIMIT as usize {
            return Err(format!(
                "{name}: {serial} of {PROBE_CALLS} calls one by one admitted, limit {PROBE_LIMIT}"
            )
            .into());
        }
        let mut counts = Vec::new();
        for t in 0..PROBE_TRIES {
            let body = check_body(&format!("{{probe-{t}-{name}}}"), PROBE_LIMIT, algorithm);
            counts.push(admitted(&url, body).await?);
        }
        println!("  {name:<28} one by one {serial}; at once {counts:?}");
        exactness.push(
            json!({"service": name, "admitted_one_by_one": serial, "admitted_at_once": counts}),
        );
    }
    Ok(json!({
        "settings": {"checks_per_round": checks, "concurrency": conc, "limit": LIMIT,
                     "window_s": WINDOW_S},
        "services": services.iter().map(Service::json).collect::<Vec<_>>(),
        "comparisons": comparisons,
        "exactness": {"calls": PROBE_CALLS, "limit": PROBE_LIMIT, "services": exactness},
    }))
}

/// A `POST /v1/check` body with one check on `key`.
fn check_body(key: &str, limit: u64, algorithm: Option<&str>) -> Value {
    let mut check = json!({"key": key, "limit": limit, "window_ms": WINDOW_S * 1000});
    if let Some(a) = algorithm {
        check["algorithm"] = json!(a);
    }
    json!({"checks": [check]})
}

/// One call: whether it was admitted. Anything but a 200 with a JSON answer is an error, so a
/// service failing is never counted as a refusal.
async fn allowed(client: &reqwest::Client, url: &str, body: &Value) -> Result<bool, Error> {
    let response = client.post(url).json(body).send().await?;
    let status = response.status();
    if status != reqwest::StatusCode::OK {
        let text = response.text().await.unwrap_or_default();
        return Err(format!("{url} answered {status}: {text}").into());
    }
    let answer: Value = response.json().await?;
    Ok(answer["allowed"] == json!(true))
}

/// How many of `PROBE_CALLS` calls of `body`, sent at once, were admitted.
async fn admitted(url: &str, body: Value) -> Result<usize, Error> {
    let client = reqwest::Client::new();
    let gate = Arc::new(tokio::sync::Barrier::new(PROBE_CALLS));
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..PROBE_CALLS {
        let (client, gate, url, body) =
            (client.clone(), gate.clone(), url.to_owned(), body.clone());
        calls.spawn(async move {
            gate.wait().await;
            allowed(&client, &url, &body)
                .await
                .map_err(|e| e.to_string())
        });
    }
    let mut n = 0;
    while let Some(r) = calls.join_next().await {
        n += usize::from(r??);
    }
    Ok(n)
}

// --- the pack and OPA ------------------------------------------------------------------------

/// The case inputs of `policies/tests/` that use the pack's default data, as apiguard gives them.
fn case_inputs() -> Result<Vec<Value>, Error> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo_root().join("policies/tests"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    let mut inputs = Vec::new();
    for f in files {
        let case: Case = serde_json::from_str(&std::fs::read_to_string(&f)?)
            .map_err(|e| format!("{}: {e}", f.display()))?;
        if case.data.is_none() {
            inputs.push(with_derived_fields(&case.input));
        }
    }
    Ok(inputs)
}

/// apiguard's decisions on `inputs` and its CPU per decision over `n` of them, cycling.
fn apiguard_engine(
    modules: &BTreeMap<String, String>,
    engine: PackEngine,
    inputs: &[Value],
    n: u64,
) -> Result<(f64, Vec<Value>), Error> {
    let (program, _) = PolicyProgram::compile_pack(
        modules,
        &json!({}),
        "data.api.authz",
        Duration::from_secs(1),
        engine,
    )?;
    let mut vm = program.vm();
    let decisions = inputs
        .iter()
        .map(|i| {
            let d = vm.evaluate(i.clone());
            json!({"allow": d.allow, "reasons": d.reasons, "rate_limit_tier": d.tier})
        })
        .collect();
    let t0 = thread_cpu()?;
    for k in 0..n {
        let d = vm.evaluate(inputs[(k as usize) % inputs.len()].clone());
        std::hint::black_box(&d);
    }
    let t1 = thread_cpu()?;
    Ok(((t1 - t0).as_secs_f64() * 1e6 / n as f64, decisions))
}

/// This thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`, nanosecond resolution).
fn thread_cpu() -> Result<Duration, Error> {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    let secs = u64::try_from(t.tv_sec)?;
    let nanos = u32::try_from(t.tv_nsec)?;
    Ok(Duration::new(secs, nanos))
}

/// One round of OPA's engine (a fresh process each round).
fn opa_round(python: &Path, job: &Value) -> Result<Value, Error> {
    let script = repo_root().join("bench/peers/opa/opa_peer.py");
    let mut child = Command::new(python)
        .arg(&script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    child
        .stdin
        .take()
        .ok_or("no stdin")?
        .write_all(job.to_string().as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        return Err(format!("{} failed ({})", script.display(), out.status).into());
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

#[derive(Default)]
struct PolicyFigures {
    opa_pack: Vec<f64>,
    opa_floor: Vec<f64>,
    rego_pack: Vec<f64>,
    compiled_pack: Vec<f64>,
    rego_floor: Vec<f64>,
}

fn opa(rounds: u64) -> Result<Value, Error> {
    let n = env_u64("APIGUARD_BENCH_DECISIONS", 20_000);
    let python = peer_script("opa/setup.sh")?;
    let inputs = case_inputs()?;
    let pack = BTreeMap::from([(BUILTIN_NAME.to_owned(), BUILTIN_PACK.to_owned())]);
    let floor = BTreeMap::from([("floor.rego".to_owned(), FLOOR_MODULE.to_owned())]);
    let job = json!({"modules": pack, "data": effective_data(&pack, &json!({})),
                     "inputs": inputs, "decisions": n, "floor_module": FLOOR_MODULE});
    println!(
        "the pack: OPA's engine vs apiguard, {} case inputs: {rounds} interleaved rounds x {n} decisions",
        inputs.len()
    );
    let mut f = PolicyFigures::default();
    for round in 0..=rounds {
        let opa = opa_round(&python, &job)?;
        let (rego_us, rego_decisions) = apiguard_engine(&pack, PackEngine::Rego, &inputs, n)?;
        let (native_us, native_decisions) = apiguard_engine(&pack, PackEngine::Native, &inputs, n)?;
        let (floor_us, _) = apiguard_engine(&floor, PackEngine::Rego, &inputs, n)?;
        if round == 0 {
            // The same Rego, the same inputs: the same decisions, or nothing is compared.
            let theirs = &opa["pack"]["decisions"];
            for (i, ours) in rego_decisions.iter().enumerate() {
                if &theirs[i] != ours || &native_decisions[i] != ours {
                    return Err(format!(
                        "input {i}: OPA decided {}, apiguard (Rego) {ours}, apiguard (compiled) {}",
                        theirs[i], native_decisions[i]
                    )
                    .into());
                }
            }
            println!("  OPA and apiguard agree on all {} inputs", inputs.len());
            continue;
        }
        let us = |v: &Value| v.as_f64().ok_or("OPA's figure is not a number");
        f.opa_pack.push(us(&opa["pack"]["cpu_us"])?);
        f.opa_floor.push(us(&opa["floor"]["cpu_us"])?);
        f.rego_pack.push(rego_us);
        f.compiled_pack.push(native_us);
        f.rego_floor.push(floor_us);
    }
    let minus =
        |a: &[f64], b: &[f64]| -> Vec<f64> { a.iter().zip(b).map(|(x, y)| x - y).collect() };
    let opa_own = minus(&f.opa_pack, &f.opa_floor);
    let rego_own = minus(&f.rego_pack, &f.rego_floor);
    println!("CPU per decision, µs, median (min–max) over rounds");
    for (name, v) in [
        ("OPA, the pack", &f.opa_pack),
        ("OPA, allow := true", &f.opa_floor),
        ("OPA, the pack over its floor", &opa_own),
        ("apiguard, the pack as Rego", &f.rego_pack),
        ("apiguard, allow := true", &f.rego_floor),
        ("apiguard, the Rego pack over its floor", &rego_own),
        ("apiguard, the pack compiled", &f.compiled_pack),
    ] {
        println!("  {name:<38} {}", show(v, 2));
    }
    let mut comparisons = Vec::new();
    for (a, b, x, y) in [
        (
            "OPA, the pack",
            "apiguard, the pack as Rego",
            &f.opa_pack,
            &f.rego_pack,
        ),
        (
            "OPA, the pack",
            "apiguard, the pack compiled",
            &f.opa_pack,
            &f.compiled_pack,
        ),
        (
            "OPA, the pack over its floor",
            "apiguard, the Rego pack over its floor",
            &opa_own,
            &rego_own,
        ),
        (
            "OPA, allow := true",
            "apiguard, allow := true",
            &f.opa_floor,
            &f.rego_floor,
        ),
    ] {
        let r = ratios(x, y);
        println!("  ratio {a} / {b}: {}x", show(&r, 1));
        comparisons.push(comparison(Kind::Ratio, a, b, &r, None));
    }
    Ok(json!({
        "settings": {"decisions_per_round": n, "inputs": inputs.len()},
        "cpu_us_per_decision": {
            "opa_pack": series(&f.opa_pack),
            "opa_allow_true": series(&f.opa_floor),
            "apiguard_pack_rego": series(&f.rego_pack),
            "apiguard_pack_compiled": series(&f.compiled_pack),
            "apiguard_allow_true": series(&f.rego_floor),
        },
        "comparisons": comparisons,
    }))
}
