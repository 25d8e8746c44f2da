//! What several suites configure alike: requests, tokens and callers, apiguard's and Envoy's
//! filter configurations, and the limiter over Redis for the variants that call it.

use std::sync::Arc;

use apiguard_core::jose::Algorithm;
use apiguard_e2e::keys::{self, claims, token};
use apiguard_e2e::load::MixRequest;
use serde_json::{json, Value};

/// The `policy.resources` of the suites that use one token and document.
pub const RESOURCES: [&str; 2] = [
    "/api/v1/tenants/{tenant_id}/documents/{doc_id}",
    "/api/v1/tenants/{tenant_id}",
];

/// The realistic workload's callers: tokens, spread over tenants and roles.
pub const TENANTS: usize = 20;
pub const TOKENS: usize = 200;
const ROLES: [&str; 3] = ["viewer", "editor", "admin"];

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

/// A day-long ES256 token (`Authorization` value) and the `jwt` section that accepts it.
pub fn es256_caller() -> (String, Value) {
    let all = keys::all();
    let (alg, kid, key) = &all[1];
    let claims = claims(json!({"exp": keys::now() + 86_400}));
    let auth = format!("Bearer {}", token(*alg, kid, key, &claims));
    (auth, jwt_section(&keys::jwks(&all)))
}

/// The limiter's descriptors for Envoy's native `ratelimit` filter in the benchmarks: per user,
/// the same window and algorithm as [`unlimited`] (a real store call every request).
pub const RLS_DESCRIPTORS: &str = "domain: bench
descriptors:
  - key: user
    rate_limit: {unit: minute, requests_per_unit: 1000000000}
";

/// A Redis and an apiguard-limiter over it (release build), for the variants that call it
/// (`POST /v1/check`, and Envoy's rate-limit service with [`RLS_DESCRIPTORS`]).
pub async fn limiter_over_redis(
) -> Result<(apiguard_e2e::Redis, apiguard_e2e::Limiter), Box<dyn std::error::Error>> {
    let redis = apiguard_e2e::Redis::start()?;
    let dir = apiguard_e2e::target_dir().join("bench");
    std::fs::create_dir_all(&dir)?;
    let descriptors = dir.join("rls-descriptors.yaml");
    std::fs::write(&descriptors, RLS_DESCRIPTORS)?;
    let limiter = apiguard_e2e::Limiter::start(&[
        "--redis".into(),
        redis.url(),
        "--redis-timeout-ms".into(),
        "1000".into(),
        "--rls-config".into(),
        descriptors.display().to_string(),
    ])
    .await?;
    Ok((redis, limiter))
}

/// One of the realistic workload's callers.
pub struct Caller {
    pub auth: String,
    pub tenant: usize,
    pub role: &'static str,
}

/// The realistic workload's callers: RS256 tokens over the tenants and roles, in a fixed order.
pub fn callers(rs: &apiguard_testkit::mint::SigningKey) -> Vec<Caller> {
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

/// Document `d` of `tenant`.
pub fn doc(tenant: usize, d: usize) -> String {
    format!("/api/v1/tenants/t{tenant:02}/documents/{d}")
}

/// apiguard with the JWT stage, and the pack and the limiter call when asked.
pub fn apiguard_config(jwks: &Value, policy: bool, limiter: bool) -> String {
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

/// The document the build comparisons request: one of tenant t01's, whose editor is
/// [`editor_setup`]'s caller.
pub fn builds_doc() -> String {
    doc(1, 7)
}

/// An editor's RS256 token (the realistic workload's caller 1, of tenant t01) and the keys
/// that verify it, for the build comparisons.
pub fn editor_setup() -> (String, Value) {
    let all = keys::all();
    let (_, _, rs) = &all[0];
    let auth = callers(rs)[1].auth.clone();
    (auth, keys::jwks(&all))
}
