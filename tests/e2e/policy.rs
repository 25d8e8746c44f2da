//! The policy stage through real Envoy with real tokens: tenant isolation through path tricks,
//! RBAC, admin paths, reasons on and off, runaway and broken policies.

use crate::expect_stat;
use apiguard_core::jose::Algorithm;
use apiguard_e2e::keys::{self, claims, token};
use apiguard_e2e::raw;
use apiguard_e2e::{Echo, Envoy, EnvoySpec};
use serde_json::{json, Value};

/// JWT (inline keys) plus the built-in pack, with `policy_extra` merged into `policy`.
fn config(policy_extra: Value) -> String {
    let mut policy = json!({
        "resources": ["/api/v1/tenants/{tenant_id}/documents/{doc_id}", "/api/v1/tenants/{tenant_id}"],
        "expose_reasons": true,
        "time_budget_ms": 20
    });
    if let (Some(o), Some(e)) = (policy.as_object_mut(), policy_extra.as_object()) {
        for (k, v) in e {
            o.insert(k.clone(), v.clone());
        }
    }
    json!({
        "jwt": {"providers": {"primary": {
            "issuer": "https://idp.test/", "audiences": ["api"],
            "jwks": {"inline": keys::jwks(&keys::all())},
            "claims_to_headers": [{"claim": "sub", "header": "x-user-id"}, {"claim": "tenant_id", "header": "x-tenant-id"}]
        }}, "rules": [{"prefix": "/healthz", "requires": []}, {"prefix": "/", "requires": ["primary"]}]},
        "policy": policy
    })
    .to_string()
}

/// An `Authorization` value for an ES256 token with these roles and tenant.
pub(crate) fn bearer(roles: Value, tenant: &str) -> Vec<u8> {
    let all = keys::all();
    let (_, kid, key) = &all[1];
    let t = token(
        Algorithm::ES256,
        kid,
        key,
        &claims(json!({"roles": roles, "tenant_id": tenant})),
    );
    format!("Bearer {t}").into_bytes()
}

async fn start(policy_extra: Value) -> (Echo, Envoy) {
    let echo = Echo::start().await.unwrap();
    let envoy = Envoy::start(&EnvoySpec::new(echo.addr).with_filter(config(policy_extra)))
        .await
        .unwrap();
    (echo, envoy)
}

async fn send(envoy: &Envoy, method: &str, path: &str, auth: &[u8]) -> raw::RawResponse {
    raw::request(
        envoy.addr,
        method,
        path.as_bytes(),
        &[("authorization", auth), ("x-user-id", b"spoofed")],
    )
    .await
    .unwrap()
}

fn reasons(r: &raw::RawResponse) -> Vec<String> {
    let v: Value = serde_json::from_str(&r.body).unwrap_or(Value::Null);
    v["reasons"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn tenant_isolation_holds_through_path_tricks() {
    let (echo, envoy) = start(json!({})).await;
    let tenant_a = bearer(json!(["editor"]), "t1");
    let own = send(&envoy, "GET", "/api/v1/tenants/t1/documents/7", &tenant_a).await;
    assert_eq!(own.status, 200, "{own:?}");
    let seen = echo.requests();
    assert_eq!(seen[0].header_all("x-user-id"), vec![b"user-1".as_slice()]);
    echo.clear();
    for path in [
        "/api/v1/tenants/t2/documents/7",
        "//api/v1/tenants/t2/documents/7",
        "/api/v1//tenants/t2/documents/7",
        "/api/v1/./tenants/t2/documents/7",
        "/api/v1/tenants/t1/../t2/documents/7",
        "/api/v1/tenants/t1/%2e%2e/t2/documents/7",
        "/api/v1/tenants/t1/%2E%2E/t2/documents/7",
        "/API/V1/Tenants/t2/Documents/7",
        "/api/v1/tenants/%74%32/documents/7",
        "/api/v1/tenants/t2/documents/7/versions",
        "/api/v1/tenants/t2",
    ] {
        let r = send(&envoy, "GET", path, &tenant_a).await;
        assert_eq!(r.status, 403, "{path}: {r:?}");
        assert!(
            reasons(&r).contains(&"tenant_mismatch".to_owned()),
            "{path}: {r:?}"
        );
    }
    for path in [
        "/api/v1/tenants/t2%2Fdocuments/7",
        "/api/v1/tenants/t2%2fdocuments/7",
        "/api/v1/tenants/t2%5Cdocuments/7",
    ] {
        let r = send(&envoy, "GET", path, &tenant_a).await;
        assert_eq!(r.status, 400, "{path}: {r:?}");
    }
    assert!(
        echo.requests().is_empty(),
        "a cross-tenant request reached the upstream: {:?}",
        echo.requests()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn rbac_and_admin_paths() {
    let (echo, envoy) = start(json!({})).await;
    let viewer = bearer(json!(["viewer"]), "t1");
    let editor = bearer(json!(["editor"]), "t1");
    let admin = bearer(json!(["admin"]), "t1");
    let doc = "/api/v1/tenants/t1/documents/7";
    assert_eq!(send(&envoy, "GET", doc, &viewer).await.status, 200);
    let r = send(&envoy, "DELETE", doc, &viewer).await;
    assert_eq!(
        (r.status, reasons(&r)),
        (403, vec!["method_not_allowed".to_owned()])
    );
    assert_eq!(send(&envoy, "DELETE", doc, &editor).await.status, 403);
    assert_eq!(send(&envoy, "DELETE", doc, &admin).await.status, 200);
    let r = send(&envoy, "GET", "/api/v1/admin/settings", &editor).await;
    assert_eq!(
        (r.status, reasons(&r)),
        (403, vec!["admin_only".to_owned()])
    );
    assert_eq!(
        send(&envoy, "GET", "/api/v1/admin/settings", &admin)
            .await
            .status,
        200
    );
    // Only allowed requests reached the upstream, and none with the client's x-user-id.
    let seen = echo.requests();
    assert_eq!(seen.len(), 3);
    assert!(seen
        .iter()
        .all(|r| r.header_all("x-user-id") == vec![b"user-1".as_slice()]));
    // The decision is published for access logs.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        envoy.access_log().contains("apiguard_policy_denied")
            || envoy.access_log().contains(" 403 "),
        "{}",
        envoy.access_log()
    );
    expect_stat(&envoy, "wasmcustom.apiguard.policy.denied", 3).await;
    expect_stat(&envoy, "wasmcustom.apiguard.policy.allowed", 3).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn reasons_only_when_exposed() {
    let (_echo, envoy) = start(json!({"expose_reasons": false})).await;
    let r = send(
        &envoy,
        "DELETE",
        "/api/v1/tenants/t2/documents/7",
        &bearer(json!(["viewer"]), "t1"),
    )
    .await;
    assert_eq!(r.status, 403);
    let body: Value = serde_json::from_str(&r.body).unwrap();
    assert!(body.get("reasons").is_none(), "{body}");
    assert_eq!(body["title"], "Forbidden");
    assert!(
        r.head
            .to_ascii_lowercase()
            .contains("content-type: application/problem+json"),
        "{}",
        r.head
    );
}

const CUSTOM: &str = r#"package api.authz
import rego.v1
default allow := false
allow if input.request.path == "/ok"
allow if {
    input.request.path == "/loop"
    count([x | some i in numbers.range(1, 3000); some j in numbers.range(1, 3000); x := i * j]) < 0
}
allow if {
    input.request.path == "/error"
    to_number("not a number") > 1
}
rate_limit_tier := "gold"
headers := {"x-policy": "checked"}
"#;

#[tokio::test(flavor = "multi_thread")]
async fn runaway_and_broken_policies_fail_closed_and_the_filter_recovers() {
    let (echo, envoy) =
        start(json!({"modules": {"custom.rego": CUSTOM}, "headers": ["x-policy"]})).await;
    let auth = bearer(json!(["editor"]), "t1");
    let started = std::time::Instant::now();
    let r = send(&envoy, "GET", "/loop", &auth).await;
    assert_eq!(
        (r.status, reasons(&r)),
        (403, vec!["policy_timeout".to_owned()]),
        "{r:?}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let r = send(&envoy, "GET", "/error", &auth).await;
    assert_eq!(r.status, 403, "{r:?}");
    // The next request is served normally, with the policy's header.
    let r = send(&envoy, "GET", "/ok", &auth).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(echo.requests()[0].header("x-policy"), Some("checked"));
    expect_stat(&envoy, "wasmcustom.apiguard.policy.timeout", 1).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn dry_run_and_shadow_never_deny() {
    let shadow = "package api.authz\nimport rego.v1\ndefault allow := false\n";
    let (echo, envoy) =
        start(json!({"mode": "dry_run", "shadow_modules": {"candidate.rego": shadow}})).await;
    let r = send(
        &envoy,
        "DELETE",
        "/api/v1/tenants/t2/documents/7",
        &bearer(json!(["viewer"]), "t1"),
    )
    .await;
    assert_eq!(r.status, 200, "dry run must not deny: {r:?}");
    let r = send(
        &envoy,
        "GET",
        "/api/v1/tenants/t1/documents/7",
        &bearer(json!(["viewer"]), "t1"),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(echo.count(), 2);
    expect_stat(&envoy, "wasmcustom.apiguard.policy.dry_run_deny", 1).await;
    expect_stat(&envoy, "wasmcustom.apiguard.policy.shadow_disagree", 1).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_policy_that_does_not_compile_is_refused_with_module_and_line() {
    let echo = Echo::start().await.unwrap();
    let bad = "package api.authz\nimport rego.v1\n\nallow if {\n  input.x ==\n}\n";
    let spec =
        EnvoySpec::new(echo.addr).with_filter(config(json!({"modules": {"broken.rego": bad}})));
    let (status, log) = Envoy::start_expecting_exit(&spec).unwrap();
    assert!(
        log.contains("apiguard: invalid configuration: policy.modules: does not compile"),
        "{status}: {log}"
    );
    assert!(log.contains("broken.rego:"), "{log}");
}

/// `policy.decision_cache` through Envoy: a repeated request is answered from the cache, and a
/// cached allow never leaks to another caller (the token's claims are part of the input).
#[tokio::test(flavor = "multi_thread")]
async fn the_decision_cache_reuses_decisions_per_input_only() {
    // The compiled pack decides without the cache: this caches the pack's Rego decisions.
    let (echo, envoy) =
        start(json!({"decision_cache": {"max_entries": 100, "ttl_s": 60}, "pack_engine": "rego"}))
            .await;
    let t1 = bearer(json!(["editor"]), "t1");
    let t2 = bearer(json!(["editor"]), "t2");
    let doc = "/api/v1/tenants/t1/documents/7";
    for _ in 0..3 {
        assert_eq!(send(&envoy, "GET", doc, &t1).await.status, 200);
    }
    // Tenant t2's token on the same path: a new input, a fresh (deny) decision, twice.
    for _ in 0..2 {
        let r = send(&envoy, "GET", doc, &t2).await;
        assert_eq!(
            (r.status, reasons(&r)),
            (403, vec!["tenant_mismatch".to_owned()])
        );
    }
    assert_eq!(echo.requests().len(), 3);
    // 2 hits for t1, 1 for t2.
    let hits = envoy
        .wait_stat("wasmcustom.apiguard.policy.cache_hit", 3)
        .await;
    assert_eq!(hits, 3, "{}", envoy.stats_text("policy").await);
}

/// Only the parts of the input a policy reads are built, and a policy that reads headers, the
/// query or the source address still sees them.
#[tokio::test(flavor = "multi_thread")]
async fn a_policy_sees_the_headers_query_and_source_it_reads() {
    let rego = r#"package api.authz
import rego.v1
default allow := false
allow if {
	input.request.headers["x-api-key"] == "k1"
	input.request.query.page == "2"
	input.source.address == "127.0.0.1"
}
"#;
    let (_echo, envoy) = start(json!({"modules": {"reads.rego": rego}})).await;
    let auth = bearer(json!(["viewer"]), "t1");
    let with_key = |key: &'static [u8]| {
        let auth = auth.clone();
        let envoy = &envoy;
        async move {
            raw::request(
                envoy.addr,
                "GET",
                b"/x?page=2",
                &[("authorization", &auth), ("x-api-key", key)],
            )
            .await
            .unwrap()
            .status
        }
    };
    assert_eq!(with_key(b"k1").await, 200);
    assert_eq!(with_key(b"other").await, 403);
    let r = send(&envoy, "GET", "/x?page=2", &auth).await;
    assert_eq!(r.status, 403, "{r:?}");
}
