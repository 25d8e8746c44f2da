//! Envoy CPU time per request, the machinery the Envoy suites share; and the JSON every suite
//! writes its figures to.
//!
//! Method: one Envoy per variant, each with `--concurrency 1`, all started up front and warmed.
//! Rounds interleave the variants (A B C … A B C …) so drift in machine speed hits all alike. A
//! round sends a fixed number of requests over kept-alive connections and divides the Envoy
//! process's CPU time (`/proc/<pid>/stat`, user + system) by the growth of Envoy's
//! completed-request counter. The figures to quote are per-round ratios to a baseline: their
//! median and range.
//!
//! A suite names its variants with an enum implementing [`Label`]; [`Run::ratio`] and
//! [`Run::difference`] take those values, so a comparison of a variant that does not exist does
//! not compile. [`Run::json`] holds every figure measured and compared, and [`write_json`] writes
//! a suite's document to `<target>/bench/<suite>.json`.
//!
//! Environment: `APIGUARD_BENCH_ROUNDS` (default 7), `APIGUARD_BENCH_REQUESTS` per round
//! (default 20000; variants that verify a signature on every request send a tenth),
//! `APIGUARD_BENCH_CONCURRENCY` connections (default 16).

use std::sync::Arc;

use apiguard_e2e::load::{drive_mix, process_cpu, summary, LoadReport, MixRequest};
use apiguard_e2e::{Envoy, EnvoySpec};
use clap::ValueEnum;
use serde_json::{json, Value};

use crate::setup::one_request;
use crate::{env_u64, BenchResult, Suite};

const COMPLETED: &str = "http.ingress_http.downstream_rq_completed";

/// A suite's variant: what the tables print and the JSON names it.
pub trait Label: Copy + Eq {
    fn label(&self) -> &str;
}

pub struct Variant<V> {
    pub id: V,
    pub envoy: Envoy,
    /// Divides the round's request count (slow variants send fewer).
    pub divisor: u64,
    /// The status every request must get (200, or 429 for the local over-limit path).
    pub expect: u16,
    /// The requests sent, in order, round and round (one request for the best case).
    pub workload: Arc<Vec<MixRequest>>,
    /// Sent before every round: each request must get its status (the variant still does its
    /// job: a valid token passes, a tampered one does not, …).
    pub checks: Vec<(MixRequest, u16)>,
    /// Rounds that got a stray unexpected answer (reported, not fatal).
    stray: Vec<String>,
    /// Per-round client latency p50 and p99 (ms).
    p50_ms: Vec<f64>,
    p99_ms: Vec<f64>,
    cpu_us_per_req: Vec<f64>,
}

impl<V: Label> Variant<V> {
    pub async fn new(
        id: V,
        spec: EnvoySpec,
        workload: Arc<Vec<MixRequest>>,
        divisor: u64,
    ) -> Result<Variant<V>, Box<dyn std::error::Error>> {
        let mut spec = spec;
        spec.wasm_log_level = "info";
        Ok(Variant {
            id,
            envoy: Envoy::start(&spec).await?,
            divisor,
            expect: 200,
            workload,
            checks: Vec::new(),
            stray: Vec::new(),
            p50_ms: Vec::new(),
            p99_ms: Vec::new(),
            cpu_us_per_req: Vec::new(),
        })
    }

    fn name(&self) -> &str {
        self.id.label()
    }

    /// `n` requests of the variant's workload.
    async fn load(&self, n: u64, conc: u64) -> LoadReport {
        drive_mix(&self.envoy.url(""), self.workload.clone(), n, conc).await
    }

    /// The variant's correctness checks, one request each.
    async fn check(&self) -> BenchResult {
        let client = apiguard_e2e::client();
        for (req, want) in &self.checks {
            let mut b = client.request(req.method.clone(), self.envoy.url(&req.path));
            if let Some(a) = &req.auth {
                b = b.header("authorization", a);
            }
            let got = b.send().await?.status().as_u16();
            if got != *want {
                return Err(format!(
                    "{}: {} {} got {got}, expected {want}",
                    self.name(),
                    req.method,
                    req.path
                )
                .into());
            }
        }
        Ok(())
    }
}

/// The knobs a run was measured with.
#[derive(Clone, Copy)]
struct Settings {
    rounds: u64,
    requests: u64,
    concurrency: u64,
}

/// What a comparison of two series computes, round by round.
#[derive(Clone, Copy)]
pub enum Kind {
    /// `a / b`, goal "at most so many times".
    Ratio,
    /// `a − b` in µs, goal "at most so many µs".
    Difference,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Ratio => "ratio",
            Kind::Difference => "difference",
        }
    }

    fn unit(self) -> &'static str {
        match self {
            Kind::Ratio => "x",
            Kind::Difference => "us",
        }
    }

    fn apply(self, a: f64, b: f64) -> f64 {
        match self {
            Kind::Ratio => a / b,
            Kind::Difference => a - b,
        }
    }
}

struct Comparison<V> {
    kind: Kind,
    a: V,
    b: V,
    per_round: Vec<f64>,
    goal: Option<f64>,
}

/// A suite's variants, their figures once measured, and the comparisons printed.
pub struct Run<V> {
    variants: Vec<Variant<V>>,
    settings: Option<Settings>,
    comparisons: Vec<Comparison<V>>,
}

impl<V: Label> Run<V> {
    pub fn new(variants: Vec<Variant<V>>) -> Run<V> {
        Run {
            variants,
            settings: None,
            comparisons: Vec::new(),
        }
    }

    /// One Envoy per `(variant, spec)`, every request with the same `auth` header to the same
    /// `path`.
    pub async fn start(
        plans: Vec<(V, EnvoySpec)>,
        auth: Option<&str>,
        path: &str,
    ) -> Result<Run<V>, Box<dyn std::error::Error>> {
        let mut variants = Vec::new();
        for (id, spec) in plans {
            variants.push(Variant::new(id, spec, one_request(path, auth), 1).await?);
        }
        Ok(Run::new(variants))
    }

    /// The variant `id`, when it runs.
    pub fn variant_mut(&mut self, id: V) -> Option<&mut Variant<V>> {
        self.variants.iter_mut().find(|v| v.id == id)
    }

    /// Runs interleaved rounds over the variants and fills their figures.
    pub async fn measure(&mut self) -> BenchResult {
        let rounds = env_u64("APIGUARD_BENCH_ROUNDS", 7);
        let requests = env_u64("APIGUARD_BENCH_REQUESTS", 20_000);
        let conc = env_u64("APIGUARD_BENCH_CONCURRENCY", 16);
        self.settings = Some(Settings {
            rounds,
            requests,
            concurrency: conc,
        });
        println!("Envoy CPU per request: {rounds} interleaved rounds x {requests} requests, {conc} connections, --concurrency 1");
        for v in self.variants.iter() {
            let warm = v.load(requests / v.divisor / 4, conc).await;
            let as_expected = if v.expect == 200 {
                warm.ok > 0 && warm.other_status() == 0
            } else {
                warm.other_status() > 0
            };
            if !as_expected {
                return Err(format!(
                    "{}: warm-up got {} 2xx and {} other answers",
                    v.name(),
                    warm.ok,
                    warm.other_status()
                )
                .into());
            }
        }
        for round in 0..rounds {
            for v in self.variants.iter_mut() {
                v.check().await?;
                let n = requests / v.divisor;
                let pid = v.envoy.proc.pid();
                let cpu0 = process_cpu(pid).ok_or("cannot read Envoy CPU time")?;
                let n0 = v.envoy.stat(COMPLETED).await.ok_or("no request counter")?;
                let r = v.load(n, conc).await;
                let cpu1 = process_cpu(pid).ok_or("cannot read Envoy CPU time")?;
                let n1 = v.envoy.stat(COMPLETED).await.ok_or("no request counter")?;
                let good = if v.expect == 200 {
                    r.ok
                } else {
                    r.other_status()
                };
                if good != n {
                    // A stray answer in 10,000 is reported with the figures (a wall-clock policy
                    // budget can be overrun by a descheduled worker on a saturated machine); more
                    // than that fails the run.
                    let missing = n - good.min(n);
                    let what = format!(
                        "{} round {round}: {} of {n} as expected ({:?} other statuses, {} errors)",
                        v.name(),
                        good,
                        r.statuses,
                        r.errors
                    );
                    if missing > (n / 10_000).max(1) || r.errors > 0 {
                        tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
                        let stats = v.envoy.stats_text("apiguard").await;
                        return Err(format!("{what}; Envoy's counters:\n{stats}").into());
                    }
                    v.stray.push(what);
                }
                let reqs = n1.saturating_sub(n0).max(1) as f64;
                v.cpu_us_per_req
                    .push((cpu1 - cpu0).as_secs_f64() * 1e6 / reqs);
                v.p50_ms.push(r.quantile(0.5).as_secs_f64() * 1e3);
                v.p99_ms.push(r.quantile(0.99).as_secs_f64() * 1e3);
            }
        }
        println!(
            "{:<44} {:>12} {:>20}",
            "variant", "CPU µs/req", "range (min–max)"
        );
        for v in self.variants.iter() {
            let (med, lo, hi) = summary(&v.cpu_us_per_req);
            println!(
                "{:<44} {med:>12.1} {:>20}",
                v.name(),
                format!("{lo:.1}–{hi:.1}")
            );
        }
        for v in self.variants.iter() {
            for s in &v.stray {
                println!("stray answer: {s}");
            }
            if !v.stray.is_empty() {
                tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
                let timeouts = v.envoy.stat("wasmcustom.apiguard.policy.timeout").await;
                println!("  {}: policy.timeout = {timeouts:?}", v.name());
            }
        }
        Ok(())
    }

    /// `kind` of two variants' CPU per request, round by round; `None` when either did not run.
    fn per_round(&self, kind: Kind, a: V, b: V) -> Option<Vec<f64>> {
        let find = |id: V| self.variants.iter().find(|v| v.id == id);
        let (va, vb) = (find(a)?, find(b)?);
        Some(
            va.cpu_us_per_req
                .iter()
                .zip(&vb.cpu_us_per_req)
                .map(|(x, y)| kind.apply(*x, *y))
                .collect(),
        )
    }

    /// Prints the per-round ratio `a / b`: median and range; and keeps it for the JSON.
    pub fn ratio(&mut self, a: V, b: V, goal: Option<f64>) {
        let Some(ratios) = self.per_round(Kind::Ratio, a, b) else {
            return;
        };
        let (med, lo, hi) = summary(&ratios);
        let goal_text = goal.map(|g| format!(" (goal ≤ {g}x)")).unwrap_or_default();
        println!(
            "ratio {} / {}: median {med:.3}x (range {lo:.3}–{hi:.3}x over {} rounds){goal_text}",
            a.label(),
            b.label(),
            ratios.len()
        );
        self.comparisons.push(Comparison {
            kind: Kind::Ratio,
            a,
            b,
            per_round: ratios,
            goal,
        });
    }

    /// Prints the per-round difference `a − b` in µs: median and range; and keeps it for the
    /// JSON.
    pub fn difference(&mut self, a: V, b: V, goal_us: f64) {
        let Some(d) = self.per_round(Kind::Difference, a, b) else {
            return;
        };
        let (m, lo, hi) = summary(&d);
        println!(
            "{} − {}: median {m:.1} µs (range {lo:.1}–{hi:.1}) (goal ≤ {goal_us} µs)",
            a.label(),
            b.label()
        );
        self.comparisons.push(Comparison {
            kind: Kind::Difference,
            a,
            b,
            per_round: d,
            goal: Some(goal_us),
        });
    }

    /// Prints each variant's client latency, p50 and p99 (medians over rounds).
    pub fn print_latency(&self) {
        for v in &self.variants {
            let (p50, _, _) = summary(&v.p50_ms);
            let (p99, _, _) = summary(&v.p99_ms);
            println!("latency {:<56} p50 {p50:.2} ms, p99 {p99:.2} ms", v.name());
        }
    }

    /// The run's figures: its settings, each variant's series and the comparisons made.
    pub fn json(&self) -> Value {
        let settings = self.settings.map(|s| {
            json!({"rounds": s.rounds, "requests_per_round": s.requests,
                   "concurrency": s.concurrency, "envoy_concurrency": 1})
        });
        let variants: Vec<Value> = self
            .variants
            .iter()
            .map(|v| {
                json!({
                    "variant": v.name(),
                    "requests_per_round": self.settings.map(|s| s.requests / v.divisor),
                    "expect_status": v.expect,
                    "cpu_us_per_req": series(&v.cpu_us_per_req),
                    "p50_ms": series(&v.p50_ms),
                    "p99_ms": series(&v.p99_ms),
                    "stray": v.stray,
                })
            })
            .collect();
        let comparisons: Vec<Value> = self
            .comparisons
            .iter()
            .map(|c| comparison(c.kind, c.a.label(), c.b.label(), &c.per_round, c.goal))
            .collect();
        json!({"settings": settings, "variants": variants, "comparisons": comparisons})
    }
}

/// A per-round series: the values in round order, their median, minimum and maximum.
pub fn series(values: &[f64]) -> Value {
    let (median, min, max) = summary(values);
    json!({"rounds": values, "median": median, "min": min, "max": max})
}

/// A comparison `a` against `b`, round by round, and its goal (at most; `null` when none).
pub fn comparison(kind: Kind, a: &str, b: &str, per_round: &[f64], goal: Option<f64>) -> Value {
    let (median, min, max) = summary(per_round);
    json!({
        "kind": kind.name(),
        "a": a,
        "b": b,
        "unit": kind.unit(),
        "rounds": per_round,
        "median": median,
        "min": min,
        "max": max,
        "goal_at_most": goal,
        "within_goal": goal.map(|g| median <= g),
    })
}

/// Writes a suite's figures to `<target>/bench/<suite>.json` (`target/bench/` unless
/// `CARGO_TARGET_DIR` says otherwise) and prints the path.
pub fn write_json(suite: Suite, mut doc: Value) -> BenchResult {
    let name = suite
        .to_possible_value()
        .map(|p| p.get_name().to_owned())
        .unwrap_or_else(|| format!("{suite:?}").to_lowercase());
    if let Value::Object(map) = &mut doc {
        map.insert("suite".to_owned(), json!(name));
    }
    let dir = apiguard_e2e::target_dir().join("bench");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("{name}.json"));
    let mut text = serde_json::to_string_pretty(&doc)?;
    text.push('\n');
    std::fs::write(&path, text)?;
    println!("figures written to {}", path.display());
    Ok(())
}
