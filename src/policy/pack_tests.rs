//! The compiled pack agrees with `policies/api_authz.rego`: both run on every case file and on
//! generated requests, and must give the same allow, reasons, tier and cost.
//!
//! Generated requests go through the policy stage itself (request facts, verified claims, the
//! resource templates), once with `pack_engine: native` and once with `pack_engine: rego`, under
//! several settings. The run is seeded and prints its seed; `APIGUARD_PACK_DIFF_SEED` replays
//! one and `APIGUARD_PACK_DIFF_N` sets its length (`just pack-diff` runs a million).

#[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
use wasm_bindgen_test::wasm_bindgen_test as test;

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Map, Value};

use super::stage::{PolicyRequest, PolicyStage, PolicyWorker};
use super::{testcases, Evaluator, PolicyDecision, PolicyProgram, BUILTIN_NAME, BUILTIN_PACK};
use crate::config::{ConfigWarning, PackEngine, PolicyConfig, RegoVersion};
use crate::http::Headers;
use crate::identity::Claims;
use crate::path::{normalize_with, MatrixParams};
use apiguard_testkit::gen::Gen;

/// What the two must agree on.
fn verdict(d: &PolicyDecision) -> (bool, Vec<String>, Option<String>, Option<u64>) {
    (d.allow, d.reasons.clone(), d.tier.clone(), d.cost)
}

fn builtin() -> BTreeMap<String, String> {
    BTreeMap::from([(BUILTIN_NAME.to_owned(), BUILTIN_PACK.to_owned())])
}

/// The case files, run through `apiguard policy test`'s runner with either engine.
fn case_files() -> Vec<(String, String)> {
    #[cfg(not(target_arch = "wasm32"))]
    {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/policies/tests");
        let mut out: Vec<(String, String)> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .map(|p| {
                (
                    p.display().to_string(),
                    std::fs::read_to_string(&p).unwrap(),
                )
            })
            .collect();
        out.sort();
        out
    }
    #[cfg(target_arch = "wasm32")]
    {
        vec![
            (
                "tenant_mismatch.json".into(),
                include_str!("../../policies/tests/tenant_mismatch.json").into(),
            ),
            (
                "override_tiers.json".into(),
                include_str!("../../policies/tests/override_tiers.json").into(),
            ),
        ]
    }
}

#[test]
fn the_compiled_pack_agrees_with_the_rego_pack_on_every_case_file() {
    let files = case_files();
    assert!(!files.is_empty());
    for (name, text) in files {
        let case: testcases::Case = serde_json::from_str(&text).unwrap();
        let data = json!({});
        let run = |engine| {
            testcases::run(
                &builtin(),
                &data,
                "data.api.authz",
                (engine, RegoVersion::V1),
                &case,
            )
            .unwrap()
            .1
        };
        let (native, rego) = (run(PackEngine::Native), run(PackEngine::Rego));
        assert_eq!(verdict(&native), verdict(&rego), "{name}");
        assert_eq!(
            testcases::judge(&case, &native),
            testcases::CaseVerdict::Pass,
            "{name}"
        );
    }
}

#[test]
fn the_pack_compiles_by_default_and_runs_as_rego_when_asked() {
    let compile = |engine| {
        PolicyProgram::compile_pack(
            &builtin(),
            &json!({}),
            "data.api.authz",
            Duration::from_millis(5),
            engine,
        )
        .unwrap()
    };
    let (native, why) = compile(PackEngine::Native);
    assert_eq!((native.evaluator, why), (Evaluator::Native, None));
    let (rego, _) = compile(PackEngine::Rego);
    assert_ne!(rego.evaluator, Evaluator::Native);
    // Custom modules are never compiled, even when they are the pack under another name.
    let custom = BTreeMap::from([("mine.rego".to_owned(), BUILTIN_PACK.to_owned())]);
    let (p, _) = PolicyProgram::compile_pack(
        &custom,
        &json!({}),
        "data.api.authz",
        Duration::from_millis(5),
        PackEngine::Native,
    )
    .unwrap();
    assert_ne!(p.evaluator, Evaluator::Native);
}

#[test]
fn settings_of_another_shape_run_as_rego_with_a_warning() {
    let cfg: PolicyConfig = serde_json::from_value(json!({
        "data": {"api_authz": {"admin_roles": "admin"}}
    }))
    .unwrap();
    let mut warnings = Vec::new();
    let stage = PolicyStage::compile(&cfg, &mut warnings).unwrap();
    assert_ne!(stage.program.evaluator, Evaluator::Native);
    assert!(
        warnings.iter().any(
            |w| matches!(w, ConfigWarning::PackNotCompiled { why } if why.contains("admin_roles"))
        ),
        "{warnings:?}"
    );
}

const TEMPLATES: [&str; 3] = [
    "/api/v1/tenants/{tenant_id}/documents/{doc_id}",
    "/api/v1/tenants/{tenant_id}",
    "/api/v1/orgs/{org}/tenants/{tenant_id}",
];

/// Settings the stage is compiled with: the defaults and operators' overrides.
fn settings() -> Vec<Value> {
    vec![
        json!({}),
        json!({"api_authz": {"admin_prefixes": ["/API/V1/Admin", "/ops/"], "public_prefixes": ["/healthz", "/api/v1/public/"]}}),
        json!({"api_authz": {"role_methods": {"viewer": ["GET"], "auditor": ["GET", "HEAD"]},
                             "role_hierarchy": ["viewer", "auditor", "editor", "admin"],
                             "roles_claim": "groups", "tenant_claim": "org_tenant"}}),
        json!({"api_authz": {"tiers": {"viewer": "free", "editor": "paid"}, "default_tier": "anon",
                             "blocked_methods": ["DELETE"], "admin_roles": ["super_admin"],
                             "tenant_prefixes": ["/api/v1/tenants/", "/api/v1/orgs/"]}}),
    ]
}

fn stage(data: &Value, engine: PackEngine) -> PolicyStage {
    let cfg: PolicyConfig = serde_json::from_value(json!({
        "data": data, "resources": TEMPLATES, "pack_engine": engine_name(engine),
        // Wall time is not what is compared: a loaded test machine must not time the Rego out.
        "time_budget_ms": 1000
    }))
    .unwrap();
    let stage = PolicyStage::compile(&cfg, &mut Vec::new()).unwrap();
    assert_eq!(
        stage.program.evaluator == Evaluator::Native,
        engine == PackEngine::Native,
        "{data}"
    );
    stage
}

fn engine_name(e: PackEngine) -> &'static str {
    match e {
        PackEngine::Native => "native",
        PackEngine::Rego => "rego",
    }
}

/// One generated request: a raw path, a method, and claims (or no token).
fn request(g: &mut Gen) -> (String, String, Option<Value>) {
    let tenants = ["t1", "t2", "T1", "7"];
    let tenant = *g.pick(&tenants);
    let paths = [
        format!("/api/v1/tenants/{tenant}/documents/{}", g.next_u64() % 9),
        format!("/api/v1/tenants/{tenant}"),
        format!("/api/v1/tenants/{tenant}/"),
        "/api/v1/tenants".to_owned(),
        "/api/v1/tenants/".to_owned(),
        format!("/api/v1/orgs/o1/tenants/{tenant}/x"),
        "/api/v1/admin".to_owned(),
        "/api/v1/admin/users".to_owned(),
        "/api/v1/administrators".to_owned(),
        "/api/v1/users/42".to_owned(),
        "/api/v1/audit-logs".to_owned(),
        "/ops/x".to_owned(),
        "/healthz".to_owned(),
        "/healthz/live".to_owned(),
        "/healthzz".to_owned(),
        "/api/v1/public/docs".to_owned(),
        "/".to_owned(),
        format!("/api/v1/docs/{}", g.next_u64() % 5),
    ];
    let mut path = g.pick(&paths).clone();
    // Spellings backends route alike: letter case, trailing and doubled slashes, a query.
    if g.chance(20) {
        path = path.to_ascii_uppercase();
    } else if g.chance(15) {
        path = path
            .split('/')
            .map(|s| {
                let mut c = s.chars();
                c.next()
                    .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("/");
    }
    if g.chance(10) {
        path.push('/');
    }
    if g.chance(5) {
        path = path.replacen('/', "//", 1);
    }
    if g.chance(10) {
        path.push_str("?page=2");
    }
    let methods = [
        "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "TRACE", "CONNECT", "OPTIONS", "get",
        "PURGE",
    ];
    let method = (*g.pick(&methods)).to_owned();
    if g.chance(15) {
        return (path, method, None);
    }
    let role_names = [
        "viewer",
        "editor",
        "admin",
        "super_admin",
        "auditor",
        "Admin",
        "root",
        "",
    ];
    let mut roles: Vec<Value> = (0..g.next_u64() % 4)
        .map(|_| Value::from(*g.pick(&role_names)))
        .collect();
    if g.chance(10) {
        roles.push(json!(1));
    }
    let roles_value = match g.next_u64() % 8 {
        0 => Value::from(*g.pick(&role_names)),
        1 => json!({"admin": true}),
        2 => json!(null),
        3 => json!(3),
        _ => Value::Array(roles),
    };
    let tenant_value = match g.next_u64() % 6 {
        0 => json!(7),
        1 => json!(["t1"]),
        2 => json!(null),
        _ => Value::from(*g.pick(&tenants)),
    };
    let mut claims = Map::new();
    claims.insert("sub".into(), json!("u1"));
    for (claim, value) in [
        ("roles", &roles_value),
        ("groups", &roles_value),
        ("tenant_id", &tenant_value),
        ("org_tenant", &tenant_value),
    ] {
        if !g.chance(15) {
            claims.insert(claim.into(), value.clone());
        }
    }
    (path, method, Some(Value::Object(claims)))
}

fn decide(
    stage: &PolicyStage,
    worker: &mut PolicyWorker,
    path: &str,
    method: &str,
    claims: Option<&Claims>,
) -> Option<PolicyDecision> {
    let path = normalize_with(path.as_bytes(), MatrixParams::Reject).ok()?;
    let headers: Vec<(String, Vec<u8>)> = Vec::new();
    let headers = Headers::new(&headers);
    let request = PolicyRequest {
        headers: &headers,
        method,
        path: &path,
        source: None,
        operation: None,
    };
    let identity = claims.map(|c| ("primary", c));
    Some(stage.evaluate(worker, &request, identity, 0).decision)
}

/// Runs `n` generated requests under every settings variant from `seed`.
fn differential(seed: u64, n: u64) {
    println!("pack differential: seed {seed}, {n} requests per settings variant (replay: APIGUARD_PACK_DIFF_SEED={seed})");
    for data in settings() {
        let (native, rego) = (
            stage(&data, PackEngine::Native),
            stage(&data, PackEngine::Rego),
        );
        let (mut wn, mut wr) = (native.worker(), rego.worker());
        let mut g = Gen(seed);
        for i in 0..n {
            let (path, method, claims) = request(&mut g);
            let claims = claims.map(|c| match c {
                Value::Object(m) => Claims::new(m),
                _ => unreachable!(),
            });
            let a = decide(&native, &mut wn, &path, &method, claims.as_ref());
            let b = decide(&rego, &mut wr, &path, &method, claims.as_ref());
            assert_eq!(
                a.as_ref().map(verdict),
                b.as_ref().map(verdict),
                "request {i} of seed {seed} under {data}: {method} {path} claims {:?}",
                claims.as_ref().map(|c| &c.map)
            );
        }
    }
}

#[test]
fn the_compiled_pack_agrees_with_the_rego_pack_on_generated_requests() {
    let env = |name: &str| {
        #[cfg(not(target_arch = "wasm32"))]
        {
            std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok())
        }
        #[cfg(target_arch = "wasm32")]
        {
            let _ = name;
            None
        }
    };
    let seed = env("APIGUARD_PACK_DIFF_SEED").unwrap_or_else(fresh_seed);
    let n = env("APIGUARD_PACK_DIFF_N").unwrap_or(if cfg!(target_arch = "wasm32") {
        200
    } else {
        5_000
    });
    differential(seed, n);
}

/// A new seed per run natively; a fixed one inside the Wasm VM (no clock there).
fn fresh_seed() -> u64 {
    #[cfg(not(target_arch = "wasm32"))]
    {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    }
    #[cfg(target_arch = "wasm32")]
    {
        1
    }
}
