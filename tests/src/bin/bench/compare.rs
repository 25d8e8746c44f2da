//! Side by side with Envoy's native filters, best-case and realistic workloads (docs/benchmarks.md),
//! and the footprint of the module: size, Envoy RSS, start-up, build profiles.
//!
//! Realistic workload: 200 RS256 tokens over 20 tenants and three roles, requests spread over
//! 1,000 documents (20 tenants × 50), GET and POST mixed by role; every request is one the policy
//! allows. The native chain expresses what it can of the pack in RBAC (method by role, admin-only
//! prefixes) from `jwt_authn`'s payload metadata; tenant isolation needs ext_authz there.

use std::sync::Arc;
use std::time::{Duration, Instant};

use apiguard::config::Algorithm;
use apiguard_e2e::keys::{self, claims, token};
use apiguard_e2e::load::{summary, MixRequest};
use apiguard_e2e::serve::Server;
use apiguard_e2e::{Echo, Envoy, EnvoySpec};
use reqwest::Method;
use serde_json::{json, Value};

use crate::envoy::{
    difference, get, jwt_authn, jwt_section, limiter_over_redis, measure, print_latency, ratio,
    start_all, unlimited, Variant,
};
use crate::{BenchResult, BuildsPipeline};

const TENANTS: usize = 20;
const DOCS_PER_TENANT: usize = 50;
const TOKENS: usize = 200;
const ROLES: [&str; 3] = ["viewer", "editor", "admin"];
const ADMIN_PREFIXES: [&str; 3] = ["/api/v1/admin", "/api/v1/users", "/api/v1/audit-logs"];

/// A variant to run: name, Envoy, workload, and the checks made before each round.
type Plan = (
    &'static str,
    EnvoySpec,
    Arc<Vec<MixRequest>>,
    Vec<(MixRequest, u16)>,
);

struct Caller {
    auth: String,
    tenant: usize,
    role: &'static str,
}

fn callers(rs: &apiguard::jwt::mint::SigningKey) -> Vec<Caller> {
    (0..TOKENS)
        .map(|i| {
            let (tenant, role) = (i % TENANTS, ROLES[i % ROLES.len()]);
            let c = claims(
                json!({"sub": format!("user-{i}"), "tenant_id": format!("t{tenant:02}"),
                                  "roles": [role], "exp": keys::now() + 86_400}),
            );
            Caller {
                auth: format!("Bearer {}", token(Algorithm::RS256, "rs", rs, &c)),
                tenant,
                role,
            }
        })
        .collect()
}

fn doc(tenant: usize, d: usize) -> String {
    format!("/api/v1/tenants/t{tenant:02}/documents/{d}")
}

/// 4,000 requests, deterministic: each picks a caller and one of its tenant's documents; viewers
/// GET, the others GET or POST (about 30 % POST).
fn realistic_mix(callers: &[Caller]) -> Vec<MixRequest> {
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = move || {
        // xorshift64: a fixed, reproducible sequence.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    (0..4000)
        .map(|_| {
            let c = &callers[(next() % TOKENS as u64) as usize];
            let d = (next() % DOCS_PER_TENANT as u64) as usize;
            let post = c.role != "viewer" && next() % 10 < 3;
            MixRequest {
                method: if post { Method::POST } else { Method::GET },
                path: doc(c.tenant, d),
                auth: Some(c.auth.clone()),
            }
        })
        .collect()
}

/// The token with one signature character changed. Not the last one: its low bits are padding,
/// which lenient base64url decoders (Envoy's `jwt_authn` among them) ignore, so changing only
/// those would leave the signature valid for them.
fn tampered(auth: &str) -> String {
    let mut chars: Vec<char> = auth.chars().collect();
    let i = chars.len().saturating_sub(10);
    if let Some(c) = chars.get_mut(i) {
        *c = if *c == 'A' { 'B' } else { 'A' };
    }
    chars.into_iter().collect()
}

/// apiguard with the JWT stage, and the pack and the limiter call when asked.
fn apiguard_config(jwks: &Value, policy: bool, limiter: bool) -> String {
    let mut c = json!({ "jwt": jwt_section(jwks) });
    if policy {
        c["policy"] = json!({"resources": ["/api/v1/tenants/{tenant_id}/documents/{doc_id}"]});
    }
    if limiter {
        c["rate_limit"] = json!({"cluster": "limiter", "timeout_ms": 200,
            "tiers": {"standard": unlimited(), "high": unlimited(), "unlimited": unlimited()}});
    }
    c.to_string()
}

/// The pack's role rules in RBAC: reads for every role, writes for editors and up, deletes and
/// the admin-only prefixes for admins.
fn rbac() -> Value {
    let role = |r: &str| {
        json!({"metadata": {"filter": "envoy.filters.http.jwt_authn",
                            "path": [{"key": "jwt_payload"}, {"key": "roles"}],
                            "value": {"list_match": {"one_of": {"string_match": {"exact": r}}}}}})
    };
    let roles =
        |rs: &[&str]| json!({"or_ids": {"ids": rs.iter().map(|r| role(r)).collect::<Vec<_>>()}});
    let methods = |ms: &[&str]| json!({"or_rules": {"rules": ms.iter().map(|m| json!({"header": {"name": ":method", "string_match": {"exact": m}}})).collect::<Vec<_>>()}});
    let admin_paths = json!({"or_rules": {"rules": ADMIN_PREFIXES.iter().map(|p| json!({"url_path": {"path": {"prefix": p}}})).collect::<Vec<_>>()}});
    let not_admin = json!({"not_rule": admin_paths});
    let policy = |ms: &[&str], rs: &[&str]| {
        json!({"permissions": [{"and_rules": {"rules": [methods(ms), not_admin.clone()]}}],
               "principals": [roles(rs)]})
    };
    json!({"name": "envoy.filters.http.rbac", "typed_config": {
    "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
    "rules": {"action": "ALLOW", "policies": {
        "read": policy(&["GET", "HEAD"], &["viewer", "editor", "admin", "super_admin"]),
        "write": policy(&["POST", "PUT", "PATCH"], &["editor", "admin", "super_admin"]),
        "delete": policy(&["DELETE"], &["admin", "super_admin"]),
        "admin": {"permissions": [admin_paths], "principals": [roles(&["admin", "super_admin"])]}
    }}}})
}

fn ext_authz() -> Value {
    json!({"name": "envoy.filters.http.ext_authz", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz",
        "transport_api_version": "V3",
        "http_service": {"server_uri": {"uri": "http://authz", "cluster": "authz", "timeout": "0.5s"}}}})
}

/// The side-by-side run.
pub async fn run() -> BenchResult {
    let echo = Echo::start().await?;
    // ext_authz's HTTP service: allows everything (the cost measured is the call itself).
    let authz = Server::start(
        "authz responder",
        "127.0.0.1:0",
        axum::Router::new().fallback(|| async { "" }),
    )
    .await?;
    let (_redis, limiter) = limiter_over_redis().await?;
    let all = keys::all();
    let jwks = keys::jwks(&all);
    let (_, _, rs) = &all[0];
    let callers = callers(rs);
    let mix = Arc::new(realistic_mix(&callers));
    // Unique tokens: 2,000 distinct ones, more than either cache holds, sent round-robin.
    let unique: Arc<Vec<MixRequest>> = Arc::new(
        (0..2000)
            .map(|i| {
                let c = claims(json!({"sub": format!("u{i}"), "exp": keys::now() + 86_400}));
                get(
                    &doc(1, 1),
                    Some(&format!("Bearer {}", token(Algorithm::RS256, "rs", rs, &c))),
                )
            })
            .collect(),
    );
    let one = &callers[1]; // an editor of t01
    let one_auth = one.auth.as_str();
    let best = get(&doc(one.tenant, 7), Some(one_auth));
    let viewer = &callers[0];
    let viewer_post = MixRequest {
        method: Method::POST,
        path: doc(viewer.tenant, 1),
        auth: Some(viewer.auth.clone()),
    };
    let foreign = get(&doc((one.tenant + 1) % TENANTS, 1), Some(one_auth));
    let bad = get(&doc(one.tenant, 7), Some(&tampered(one_auth)));

    let apiguard = |policy: bool, limiter: bool| apiguard_config(&jwks, policy, limiter);
    let spec = || {
        EnvoySpec::new(echo.addr)
            .with_cluster("limiter", limiter.addr)
            .with_cluster("authz", authz.addr)
    };
    let with_jwt = |spec: EnvoySpec, cache: bool| {
        spec.with_native_filter(jwt_authn(&jwks, cache.then_some(1000), true))
    };
    // (name, spec, workload, checks: (request, status))
    let ok = (best.clone(), 200);
    let refused = (bad.clone(), 401);
    let role_denied = (viewer_post.clone(), 403);
    let tenant_denied = (foreign.clone(), 403);
    // What the native chain checks, and what apiguard with the pack checks besides.
    let native_checks = vec![ok.clone(), refused.clone(), role_denied.clone()];
    let pack_checks = vec![ok.clone(), refused.clone(), role_denied, tenant_denied];
    let plans: Vec<Plan> = vec![
        (
            "no filter",
            spec(),
            Arc::new(vec![best.clone()]),
            vec![ok.clone()],
        ),
        (
            "apiguard pass-through",
            spec().with_filter("{}"),
            Arc::new(vec![best.clone()]),
            vec![ok.clone()],
        ),
        (
            "native jwt_authn, unique tokens",
            with_jwt(spec(), false),
            unique.clone(),
            vec![ok.clone(), refused.clone()],
        ),
        (
            "apiguard jwt, unique tokens",
            spec().with_filter(apiguard(false, false)),
            unique.clone(),
            vec![ok.clone(), refused.clone()],
        ),
        (
            "native jwt_authn + cache, one token",
            with_jwt(spec(), true),
            Arc::new(vec![best.clone()]),
            vec![ok.clone(), refused.clone()],
        ),
        (
            "apiguard jwt cached, one token",
            spec().with_filter(apiguard(false, false)),
            Arc::new(vec![best.clone()]),
            vec![ok.clone(), refused.clone()],
        ),
        (
            "native jwt_authn + cache + RBAC, realistic",
            with_jwt(spec(), true).with_native_filter(rbac()),
            mix.clone(),
            native_checks.clone(),
        ),
        (
            "apiguard jwt + pack, realistic",
            spec().with_filter(apiguard(true, false)),
            mix.clone(),
            pack_checks.clone(),
        ),
        (
            "native jwt_authn + cache + RBAC + ext_authz, realistic",
            with_jwt(spec(), true)
                .with_native_filter(rbac())
                .with_native_filter(ext_authz()),
            mix.clone(),
            native_checks.clone(),
        ),
        (
            "apiguard jwt + pack + limiter, realistic",
            spec().with_filter(apiguard(true, true)),
            mix.clone(),
            pack_checks.clone(),
        ),
    ];
    // `APIGUARD_BENCH_ONLY=a,b`: only the variants whose names contain one of these.
    let only: Vec<String> = std::env::var("APIGUARD_BENCH_ONLY")
        .map(|v| v.split(',').map(str::to_owned).collect())
        .unwrap_or_default();
    let mut variants = Vec::new();
    for (name, spec, workload, checks) in plans {
        if !only.is_empty() && !only.iter().any(|o| name.contains(o.as_str())) {
            continue;
        }
        let mut v = Variant::new(name, spec, workload, 1).await?;
        v.checks = checks;
        variants.push(v);
    }
    measure(&mut variants).await?;
    ratio(
        &variants,
        "apiguard jwt, unique tokens",
        "native jwt_authn, unique tokens",
        Some(1.1),
    );
    difference(
        &variants,
        "apiguard jwt cached, one token",
        "apiguard pass-through",
        5.0,
    );
    ratio(
        &variants,
        "apiguard jwt cached, one token",
        "native jwt_authn + cache, one token",
        None,
    );
    ratio(
        &variants,
        "apiguard jwt + pack, realistic",
        "native jwt_authn + cache + RBAC, realistic",
        Some(1.5),
    );
    ratio(
        &variants,
        "apiguard jwt + pack + limiter, realistic",
        "native jwt_authn + cache + RBAC + ext_authz, realistic",
        Some(1.1),
    );
    print_latency(&variants);
    Ok(())
}

/// The document the build comparisons request: one of tenant t01's, whose editor is
/// [`editor_setup`]'s caller.
fn builds_doc() -> String {
    doc(1, 7)
}

/// An editor's RS256 token (the realistic workload's caller 1, of tenant t01) and the keys
/// that verify it, for the build comparisons.
fn editor_setup() -> (String, Value) {
    let all = keys::all();
    let (_, _, rs) = &all[0];
    let auth = callers(rs)[1].auth.clone();
    (auth, keys::jwks(&all))
}

/// Resident memory of a process, in MiB (`VmRSS`).
fn rss_mib(pid: u32) -> Option<f64> {
    let p = procfs::process::Process::new(i32::try_from(pid).ok()?).ok()?;
    let status = p.status().ok()?;
    Some(status.vmrss? as f64 / 1024.0)
}

/// Start-up time and RSS after 200 requests, for one module (or none) at `workers` workers;
/// the median of three starts.
async fn footprint(
    upstream: std::net::SocketAddr,
    module: Option<(&std::path::Path, &str)>,
    workers: u32,
    auth: &str,
) -> Result<(f64, f64), Box<dyn std::error::Error>> {
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
    Ok((summary(&starts).0, summary(&rss).0))
}

/// Module size, Envoy RSS and start-up for the shipped build (`opt-level = 3`) and `"z"`, and
/// their CPU per request with the pack.
pub async fn run_footprint() -> BenchResult {
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
    println!(
        "{:<26} {:>10} {:>8} {:>12} {:>10} {:>14}",
        "build", "module KB", "workers", "start-up s", "RSS MiB", "RSS over none"
    );
    for workers in [1u32, 2, 4] {
        let (s0, r0) = footprint(echo.addr, None, workers, &auth).await?;
        println!(
            "{:<26} {:>10} {workers:>8} {s0:>12.2} {r0:>10.1} {:>14}",
            "no filter", "-", "-"
        );
        for (name, path) in [
            ("apiguard opt-level=3", &opt3),
            ("apiguard opt-level=\"z\"", &optz),
        ] {
            let kb = std::fs::metadata(path)?.len() / 1024;
            let (s, r) = footprint(echo.addr, Some((path, &cfg)), workers, &auth).await?;
            println!(
                "{name:<26} {kb:>10} {workers:>8} {s:>12.2} {r:>10.1} {:>14.1}",
                r - r0
            );
        }
    }
    let builds = [
        ("jwt + pack, opt-level=3".to_owned(), opt3),
        ("jwt + pack, opt-level=\"z\"".to_owned(), optz),
    ];
    compare_builds(echo.addr, &builds, BuildsPipeline::Pack).await?;
    Ok(())
}

/// Each module file on the same configuration, one token and path: to compare builds of the
/// filter in one run (`just bench builds --module a.wasm --module b.wasm`), e.g. a change
/// against the build before it.
pub async fn run_builds(modules: &[std::path::PathBuf], pipeline: BuildsPipeline) -> BenchResult {
    if modules.len() < 2 {
        return Err("the builds suite compares two or more `--module` files".into());
    }
    let echo = Echo::start().await?;
    let builds: Vec<(String, std::path::PathBuf)> = modules
        .iter()
        .map(|m| (m.display().to_string(), m.clone()))
        .collect();
    compare_builds(echo.addr, &builds, pipeline).await
}

/// CPU per request of `pipeline` (one token, one path) for each named module file, in one
/// run; ratios to the first.
async fn compare_builds(
    upstream: std::net::SocketAddr,
    builds: &[(String, std::path::PathBuf)],
    pipeline: BuildsPipeline,
) -> BenchResult {
    let (auth, jwks) = editor_setup();
    // Kept alive until the rounds are over.
    let limiter = match pipeline {
        BuildsPipeline::Limiter => Some(limiter_over_redis().await?),
        _ => None,
    };
    let cfg = match pipeline {
        BuildsPipeline::PassThrough => "{}".to_owned(),
        BuildsPipeline::Pack => apiguard_config(&jwks, true, false),
        BuildsPipeline::Limiter => apiguard_config(&jwks, true, true),
    };
    let plans = builds
        .iter()
        .map(|(name, module)| {
            let mut spec = EnvoySpec::new(upstream)
                .with_filter(cfg.clone())
                .with_module(module.clone());
            if let Some((_, l)) = &limiter {
                spec = spec.with_cluster("limiter", l.addr);
            }
            (name.as_str(), spec)
        })
        .collect();
    let mut variants = start_all(plans, Some(&auth), &builds_doc()).await?;
    measure(&mut variants).await?;
    if let Some((first, _)) = builds.first() {
        for (name, _) in &builds[1..] {
            ratio(&variants, name, first, None);
        }
    }
    Ok(())
}
