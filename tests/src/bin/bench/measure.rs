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
    /// `(a − a₀) / (b − b₀)`: what one step adds against what another adds, goal "at most so
    /// many times".
    IncrementRatio,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Ratio => "ratio",
            Kind::Difference => "difference",
            Kind::IncrementRatio => "increment_ratio",
        }
    }

    fn unit(self) -> &'static str {
        match self {
            Kind::Ratio | Kind::IncrementRatio => "x",
            Kind::Difference => "us",
        }
    }
}

struct Comparison {
    kind: Kind,
    a: String,
    b: String,
    per_round: Vec<f64>,
    goal: Option<f64>,
}

/// A suite's variants, their figures once measured, and the comparisons printed.
pub struct Run<V> {
    variants: Vec<Variant<V>>,
    settings: Option<Settings>,
    comparisons: Vec<Comparison>,
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
        let envoys: Vec<u32> = self.variants.iter().map(|v| v.envoy.proc.pid()).collect();
        let _pinned = crate::pin::for_run(&envoys)?;
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

    /// The variant's CPU per request, round by round; `None` when it did not run.
    fn rounds(&self, id: V) -> Option<&[f64]> {
        let v = self.variants.iter().find(|v| v.id == id)?;
        Some(&v.cpu_us_per_req)
    }

    /// Prints the per-round ratio `a / b`: median and range; and keeps it for the JSON.
    pub fn ratio(&mut self, a: V, b: V, goal: Option<f64>) {
        let (Some(x), Some(y)) = (self.rounds(a), self.rounds(b)) else {
            return;
        };
        let per_round = x.iter().zip(y).map(|(x, y)| x / y).collect();
        self.keep(
            Kind::Ratio,
            a.label().into(),
            b.label().into(),
            per_round,
            goal,
        );
    }

    /// Prints the per-round ratio of two increments, `(a − a0) / (b − b0)` (what one step costs
    /// against what another does, each measured against its own base in the same round).
    pub fn increment_ratio(&mut self, (a, a0): (V, V), (b, b0): (V, V), goal: Option<f64>) {
        let (Some(x), Some(x0), Some(y), Some(y0)) = (
            self.rounds(a),
            self.rounds(a0),
            self.rounds(b),
            self.rounds(b0),
        ) else {
            return;
        };
        let per_round = (0..x.len().min(x0.len()).min(y.len()).min(y0.len()))
            .map(|i| (x[i] - x0[i]) / (y[i] - y0[i]))
            .collect();
        let name = |p: V, q: V| format!("({} − {})", p.label(), q.label());
        self.keep(
            Kind::IncrementRatio,
            name(a, a0),
            name(b, b0),
            per_round,
            goal,
        );
    }

    /// Prints the per-round difference `a − b` in µs: median and range; and keeps it for the
    /// JSON.
    pub fn difference(&mut self, a: V, b: V, goal_us: f64) {
        let (Some(x), Some(y)) = (self.rounds(a), self.rounds(b)) else {
            return;
        };
        let per_round = x.iter().zip(y).map(|(x, y)| x - y).collect();
        let (a, b) = (a.label().into(), b.label().into());
        self.keep(Kind::Difference, a, b, per_round, Some(goal_us));
    }

    fn keep(&mut self, kind: Kind, a: String, b: String, per_round: Vec<f64>, goal: Option<f64>) {
        let (med, lo, hi) = summary(&per_round);
        let n = per_round.len();
        match kind {
            Kind::Difference => println!(
                "{a} − {b}: median {med:.1} µs (range {lo:.1}–{hi:.1}){}",
                goal.map(|g| format!(" (goal ≤ {g} µs)"))
                    .unwrap_or_default()
            ),
            Kind::Ratio | Kind::IncrementRatio => println!(
                "ratio {a} / {b}: median {med:.3}x (range {lo:.3}–{hi:.3}x over {n} rounds){}",
                goal.map(|g| format!(" (goal ≤ {g}x)")).unwrap_or_default()
            ),
        }
        self.comparisons.push(Comparison {
            kind,
            a,
            b,
            per_round,
            goal,
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

    /// Prints the connections each variant's Envoy opened per cluster over the whole run: a
    /// call whose connections are not kept alive pays a handshake per request.
    pub async fn print_connections(&self) {
        for v in &self.variants {
            let stats = v.envoy.stats_text("upstream_cx_total").await;
            let opened: Vec<&str> = stats
                .lines()
                .filter(|l| l.starts_with("cluster.") && !l.ends_with(": 0"))
                .collect();
            println!("connections {:<52} {}", v.name(), opened.join(", "));
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
            .map(|c| comparison(c.kind, &c.a, &c.b, &c.per_round, c.goal))
            .collect();
        json!({"settings": settings, "variants": variants, "comparisons": comparisons})
    }
}

/// A series as printed: `median (min–max)` with `digits` decimals.
pub fn show(values: &[f64], digits: usize) -> String {
    let (m, lo, hi) = summary(values);
    format!("{m:.digits$} ({lo:.digits$}–{hi:.digits$})")
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
