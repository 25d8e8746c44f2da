//! Envoy CPU time per request: apiguard against baselines measured in the same run.
//!
//! Method: one Envoy per variant, each with `--concurrency 1`, all started up front and warmed.
//! Rounds interleave the variants (A B C … A B C …) so drift in machine speed hits all alike. A
//! round sends a fixed number of requests over kept-alive connections and divides the Envoy
//! process's CPU time (`/proc/<pid>/stat`, user + system) by the growth of Envoy's
//! completed-request counter. The figures to quote are per-round ratios to a baseline: their
//! median and range.
//!
//! Environment: `APIGUARD_BENCH_ROUNDS` (default 7), `APIGUARD_BENCH_REQUESTS` per round
//! (default 20000; variants that verify a signature on every request send a tenth),
//! `APIGUARD_BENCH_CONCURRENCY` connections (default 16).

use apiguard::config::Algorithm;
use apiguard_e2e::keys::{self, claims, token};
use std::sync::Arc;

use apiguard_e2e::load::{drive_mix, process_cpu, summary, LoadReport, MixRequest};
use apiguard_e2e::{Echo, Envoy, EnvoySpec};
use serde_json::{json, Value};

use crate::{env_u64, BenchResult};

const COMPLETED: &str = "http.ingress_http.downstream_rq_completed";

/// The `policy.resources` of the suites that use one token and document.
const RESOURCES: [&str; 2] = [
    "/api/v1/tenants/{tenant_id}/documents/{doc_id}",
    "/api/v1/tenants/{tenant_id}",
];

pub struct Variant {
    pub name: String,
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
    pub stray: Vec<String>,
    /// Per-round client latency p50 and p99 (ms).
    pub p50_ms: Vec<f64>,
    pub p99_ms: Vec<f64>,
    pub cpu_us_per_req: Vec<f64>,
}

impl Variant {
    pub async fn new(
        name: &str,
        spec: EnvoySpec,
        workload: Arc<Vec<MixRequest>>,
        divisor: u64,
    ) -> Result<Variant, Box<dyn std::error::Error>> {
        let mut spec = spec;
        spec.wasm_log_level = "info";
        Ok(Variant {
            name: name.to_owned(),
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
}

/// A GET of `path`, with `auth` as its `Authorization` value.
pub fn get(path: &str, auth: Option<&str>) -> MixRequest {
    MixRequest {
        method: reqwest::Method::GET,
        path: path.to_owned(),
        auth: auth.map(str::to_owned),
    }
}

/// The same GET on every request.
pub fn one_request(path: &str, auth: Option<&str>) -> Arc<Vec<MixRequest>> {
    Arc::new(vec![get(path, auth)])
}

/// apiguard's `jwt` section for the benchmarks' issuer, with these keys inline.
pub fn jwt_section(jwks: &Value) -> Value {
    json!({"providers": {"p": {"issuer": "https://idp.test/", "audiences": ["api"],
                               "jwks": {"inline": jwks}}}})
}

/// Envoy's native `jwt_authn` for the same issuer and keys: with a token cache of `cache`
/// entries when given, and the payload in metadata (for RBAC) when asked.
pub fn jwt_authn(jwks: &Value, cache: Option<u32>, payload_in_metadata: bool) -> Value {
    let mut provider = json!({"issuer": "https://idp.test/", "audiences": ["api"], "forward": true,
                              "local_jwks": {"inline_string": jwks.to_string()}});
    if let Some(size) = cache {
        provider["jwt_cache_config"] = json!({"jwt_cache_size": size});
    }
    if payload_in_metadata {
        provider["payload_in_metadata"] = json!("jwt_payload");
    }
    json!({"name": "envoy.filters.http.jwt_authn", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
        "providers": {"p": provider},
        "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "p"}}]}})
}

/// A rate-limit window no benchmark fills.
pub fn unlimited() -> Value {
    json!([{"requests": 1_000_000_000u64, "window_s": 60}])
}

/// One Envoy per `(name, spec)`, every request with the same `auth` header to the same `path`.
pub async fn start_all(
    plans: Vec<(&str, EnvoySpec)>,
    auth: Option<&str>,
    path: &str,
) -> Result<Vec<Variant>, Box<dyn std::error::Error>> {
    let mut variants = Vec::new();
    for (name, spec) in plans {
        variants.push(Variant::new(name, spec, one_request(path, auth), 1).await?);
    }
    Ok(variants)
}

/// Runs interleaved rounds over `variants` and fills their figures.
pub async fn measure(variants: &mut [Variant]) -> BenchResult {
    let rounds = env_u64("APIGUARD_BENCH_ROUNDS", 7);
    let requests = env_u64("APIGUARD_BENCH_REQUESTS", 20_000);
    let conc = env_u64("APIGUARD_BENCH_CONCURRENCY", 16);
    println!("Envoy CPU per request: {rounds} interleaved rounds x {requests} requests, {conc} connections, --concurrency 1");
    for v in variants.iter() {
        let warm = load(v, requests / v.divisor / 4, conc).await;
        let as_expected = if v.expect == 200 {
            warm.ok > 0 && warm.other_status() == 0
        } else {
            warm.other_status() > 0
        };
        if !as_expected {
            return Err(format!(
                "{}: warm-up got {} 2xx and {} other answers",
                v.name,
                warm.ok,
                warm.other_status()
            )
            .into());
        }
    }
    for round in 0..rounds {
        for v in variants.iter_mut() {
            check(v).await?;
            let n = requests / v.divisor;
            let pid = v.envoy.proc.pid();
            let cpu0 = process_cpu(pid).ok_or("cannot read Envoy CPU time")?;
            let n0 = v.envoy.stat(COMPLETED).await.ok_or("no request counter")?;
            let r = load(v, n, conc).await;
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
                    v.name, good, r.statuses, r.errors
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
    for v in variants.iter() {
        let (med, lo, hi) = summary(&v.cpu_us_per_req);
        println!(
            "{:<44} {med:>12.1} {:>20}",
            v.name,
            format!("{lo:.1}–{hi:.1}")
        );
    }
    for v in variants.iter() {
        for s in &v.stray {
            println!("stray answer: {s}");
        }
        if !v.stray.is_empty() {
            tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
            let timeouts = v.envoy.stat("wasmcustom.apiguard.policy.timeout").await;
            println!("  {}: policy.timeout = {timeouts:?}", v.name);
        }
    }
    Ok(())
}

/// `n` requests of the variant's workload.
async fn load(v: &Variant, n: u64, conc: u64) -> LoadReport {
    drive_mix(&v.envoy.url(""), v.workload.clone(), n, conc).await
}

/// The variant's correctness checks, one request each.
async fn check(v: &Variant) -> BenchResult {
    let client = apiguard_e2e::client();
    for (req, want) in &v.checks {
        let mut b = client.request(req.method.clone(), v.envoy.url(&req.path));
        if let Some(a) = &req.auth {
            b = b.header("authorization", a);
        }
        let got = b.send().await?.status().as_u16();
        if got != *want {
            return Err(format!(
                "{}: {} {} got {got}, expected {want}",
                v.name, req.method, req.path
            )
            .into());
        }
    }
    Ok(())
}

/// `f(a, b)` of two variants' CPU per request, round by round; `None` when either did not run.
fn per_round(variants: &[Variant], a: &str, b: &str, f: fn(f64, f64) -> f64) -> Option<Vec<f64>> {
    let find = |n: &str| variants.iter().find(|v| v.name == n);
    let (va, vb) = (find(a)?, find(b)?);
    Some(
        va.cpu_us_per_req
            .iter()
            .zip(&vb.cpu_us_per_req)
            .map(|(x, y)| f(*x, *y))
            .collect(),
    )
}

/// Prints the per-round ratio `a / b`: median and range.
pub fn ratio(variants: &[Variant], a: &str, b: &str, goal: Option<f64>) {
    let Some(ratios) = per_round(variants, a, b, |x, y| x / y) else {
        return;
    };
    let (med, lo, hi) = summary(&ratios);
    let goal = goal.map(|g| format!(" (goal ≤ {g}x)")).unwrap_or_default();
    println!(
        "ratio {a} / {b}: median {med:.3}x (range {lo:.3}–{hi:.3}x over {} rounds){goal}",
        ratios.len()
    );
}

/// Prints the per-round difference `a − b` in µs: median and range.
pub fn difference(variants: &[Variant], a: &str, b: &str, goal_us: f64) {
    let Some(d) = per_round(variants, a, b, |x, y| x - y) else {
        return;
    };
    let (m, lo, hi) = summary(&d);
    println!("{a} − {b}: median {m:.1} µs (range {lo:.1}–{hi:.1}) (goal ≤ {goal_us} µs)");
}

/// Prints each variant's client latency, p50 and p99 (medians over rounds).
pub fn print_latency(variants: &[Variant]) {
    for v in variants {
        let (p50, _, _) = summary(&v.p50_ms);
        let (p99, _, _) = summary(&v.p99_ms);
        println!("latency {:<56} p50 {p50:.2} ms, p99 {p99:.2} ms", v.name);
    }
}

/// Pass-through against no filter.
pub async fn run() -> BenchResult {
    let echo = Echo::start().await?;
    let mut variants = start_all(
        vec![
            ("no filter", EnvoySpec::new(echo.addr)),
            (
                "apiguard pass-through",
                EnvoySpec::new(echo.addr).with_filter("{}"),
            ),
        ],
        None,
        "/bench",
    )
    .await?;
    measure(&mut variants).await?;
    ratio(&variants, "apiguard pass-through", "no filter", None);
    Ok(())
}

/// The JWT stage against Envoy's native `jwt_authn`, same key and token.
pub async fn run_jwt() -> BenchResult {
    let echo = Echo::start().await?;
    let all = keys::all();
    let jwks = keys::jwks(&all);
    let tok = |alg: Algorithm| {
        let (a, kid, k) = all.iter().find(|(a, _, _)| *a == alg).ok_or("no key")?;
        Ok::<String, String>(format!(
            "Bearer {}",
            token(*a, kid, k, &claims(json!({"exp": keys::now() + 86_400})))
        ))
    };
    let rs = tok(Algorithm::RS256)?;
    let apiguard = |cache: usize| {
        let mut jwt = jwt_section(&jwks);
        jwt["cache_entries"] = json!(cache);
        json!({ "jwt": jwt }).to_string()
    };
    let native = |cache: bool| jwt_authn(&jwks, cache.then_some(100), false);
    let spec = || EnvoySpec::new(echo.addr);
    let mut variants = vec![
        Variant::new("no filter", spec(), one_request("/bench", Some(&rs)), 1).await?,
        Variant::new(
            "native jwt_authn + cache, RS256",
            spec().with_native_filter(native(true)),
            one_request("/bench", Some(&rs)),
            1,
        )
        .await?,
        Variant::new(
            "native jwt_authn, RS256",
            spec().with_native_filter(native(false)),
            one_request("/bench", Some(&rs)),
            1,
        )
        .await?,
        Variant::new(
            "apiguard jwt cached, RS256",
            spec().with_filter(apiguard(1024)),
            one_request("/bench", Some(&rs)),
            1,
        )
        .await?,
        Variant::new(
            "apiguard jwt uncached, RS256",
            spec().with_filter(apiguard(0)),
            one_request("/bench", Some(&rs)),
            10,
        )
        .await?,
        Variant::new(
            "apiguard jwt uncached, ES256",
            spec().with_filter(apiguard(0)),
            one_request("/bench", Some(&tok(Algorithm::ES256)?)),
            10,
        )
        .await?,
        Variant::new(
            "apiguard jwt uncached, EdDSA",
            spec().with_filter(apiguard(0)),
            one_request("/bench", Some(&tok(Algorithm::EdDSA)?)),
            10,
        )
        .await?,
    ];
    measure(&mut variants).await?;
    ratio(
        &variants,
        "apiguard jwt cached, RS256",
        "native jwt_authn + cache, RS256",
        Some(1.3),
    );
    ratio(
        &variants,
        "apiguard jwt uncached, RS256",
        "native jwt_authn, RS256",
        None,
    );
    Ok(())
}

/// A day-long ES256 token (`Authorization` value) and the `jwt` section that accepts it.
fn es256_caller() -> (String, Value) {
    let all = keys::all();
    let (alg, kid, key) = &all[1];
    let claims = claims(json!({"exp": keys::now() + 86_400}));
    let auth = format!("Bearer {}", token(*alg, kid, key, &claims));
    (auth, jwt_section(&keys::jwks(&all)))
}

/// The policy pack on top of the JWT stage (cache hit), same token and path.
pub async fn run_policy() -> BenchResult {
    let echo = Echo::start().await?;
    let (auth, jwt) = es256_caller();
    let jwt_only = json!({"jwt": jwt}).to_string();
    let pack = json!({"resources": RESOURCES});
    let with_pack = json!({"jwt": jwt, "policy": pack}).to_string();
    let mut cached_pack = pack;
    cached_pack["decision_cache"] = json!({"max_entries": 10_000, "ttl_s": 60});
    let with_cache = json!({"jwt": jwt, "policy": cached_pack}).to_string();
    // The floor: the cost of running any policy at all (input, evaluation, decision).
    let trivial = json!({"jwt": jwt, "policy": {"modules": {"trivial.rego": "package api.authz\nallow := true\n"}}})
        .to_string();
    let spec = || EnvoySpec::new(echo.addr);
    let doc = "/api/v1/tenants/t1/documents/7";
    let mut variants = start_all(
        vec![
            ("no filter", spec()),
            ("apiguard jwt (cached)", spec().with_filter(jwt_only)),
            (
                "apiguard jwt (cached) + policy pack",
                spec().with_filter(with_pack),
            ),
            (
                "apiguard jwt (cached) + `allow := true`",
                spec().with_filter(trivial),
            ),
            (
                "apiguard jwt (cached) + pack + decision cache",
                spec().with_filter(with_cache),
            ),
        ],
        Some(&auth),
        doc,
    )
    .await?;
    measure(&mut variants).await?;
    // What the pack adds.
    difference(
        &variants,
        "apiguard jwt (cached) + policy pack",
        "apiguard jwt (cached)",
        15.0,
    );
    ratio(
        &variants,
        "apiguard jwt (cached) + policy pack",
        "apiguard jwt (cached)",
        None,
    );
    Ok(())
}

/// A Redis and an apiguard-limiter over it (release build), for the variants that call it.
pub async fn limiter_over_redis(
) -> Result<(apiguard_e2e::Redis, apiguard_e2e::Limiter), Box<dyn std::error::Error>> {
    let redis = apiguard_e2e::Redis::start()?;
    let limiter = apiguard_e2e::Limiter::start(&[
        "--redis".into(),
        redis.url(),
        "--redis-timeout-ms".into(),
        "1000".into(),
    ])
    .await?;
    Ok((redis, limiter))
}

/// The full pipeline (cached JWT + policy pack + limiter callout) against pass-through, the
/// same without the callout, and the local over-limit path.
pub async fn run_ratelimit() -> BenchResult {
    let echo = Echo::start().await?;
    let (_redis, limiter) = limiter_over_redis().await?;
    let (auth, jwt) = es256_caller();
    let policy = json!({ "resources": RESOURCES });
    let cfg = |tiers: Value| {
        json!({"jwt": jwt, "policy": policy, "rate_limit": {"cluster": "limiter", "timeout_ms": 200, "tiers": tiers}}).to_string()
    };
    let big = json!({"standard": unlimited()});
    let tiny = json!({"standard": [{"requests": 1, "window_s": 86_400}]});
    let spec = || EnvoySpec::new(echo.addr).with_cluster("limiter", limiter.addr);
    let doc = "/api/v1/tenants/t1/documents/7";
    let mut variants = start_all(
        vec![
            ("apiguard pass-through", spec().with_filter("{}")),
            (
                "apiguard jwt + pack",
                spec().with_filter(json!({"jwt": jwt, "policy": policy}).to_string()),
            ),
            (
                "apiguard jwt + pack + limiter call",
                spec().with_filter(cfg(big)),
            ),
            (
                "apiguard local over-limit (429)",
                spec().with_filter(cfg(tiny)),
            ),
        ],
        Some(&auth),
        doc,
    )
    .await?;
    variants[3].expect = 429;
    measure(&mut variants).await?;
    print_latency(&variants);
    ratio(
        &variants,
        "apiguard jwt + pack + limiter call",
        "apiguard pass-through",
        None,
    );
    ratio(
        &variants,
        "apiguard jwt + pack + limiter call",
        "apiguard jwt + pack",
        None,
    );
    ratio(
        &variants,
        "apiguard local over-limit (429)",
        "apiguard pass-through",
        None,
    );
    Ok(())
}
