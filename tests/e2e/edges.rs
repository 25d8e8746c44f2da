//! The security review's reproductions through real Envoy (docs/security.md): spellings of a
//! path or method the backend routes alike, headers the upstream trusts, values the policy must
//! see, and bounds. The same cases run natively in the core (`src/edge_tests.rs`).

use std::collections::BTreeMap;

use apiguard_core::jose::Algorithm;
use apiguard_e2e::keys::{self, claims, token};
use apiguard_e2e::raw::{self, RawResponse};
use apiguard_e2e::{repo_root, Echo, Envoy, EnvoySpec, Limiter, Redis};
use apiguard_testkit::spellings::{literal_segments, spellings};
use serde_json::{json, Value};

const TEMPLATE: &str = "/api/v1/tenants/{tenant_id}/documents/{doc_id}";

fn es256(claims_json: &Value) -> String {
    let all = keys::all();
    let (_, kid, key) = &all[1];
    token(Algorithm::ES256, kid, key, claims_json)
}

fn provider() -> Value {
    json!({"issuer": "https://idp.test/", "audiences": ["api"],
           "jwks": {"inline": keys::jwks(&keys::all())},
           "claims_to_headers": [{"claim": "sub", "header": "x-user-id"},
                                 {"claim": "roles", "header": "x-user-roles"}]})
}

/// JWT plus the built-in pack with `data`, under the `request` settings.
fn pack_config(request: &Value, data: &Value) -> String {
    json!({
        "request": request,
        "jwt": {"providers": {"primary": provider()},
                "rules": [{"prefix": "/healthz", "requires": []}, {"prefix": "/", "requires": ["primary"]}]},
        "policy": {"data": data, "resources": [TEMPLATE], "expose_reasons": true, "time_budget_ms": 50}
    })
    .to_string()
}

async fn send(
    envoy: &Envoy,
    method: &str,
    path: &str,
    auth: Option<&str>,
    extra: &[(&str, &[u8])],
) -> RawResponse {
    let bearer = auth.map(|t| format!("Bearer {t}"));
    let mut headers: Vec<(&str, &[u8])> = extra.to_vec();
    if let Some(b) = &bearer {
        headers.push(("authorization", b.as_bytes()));
    }
    raw::request(envoy.addr, method, path.as_bytes(), &headers)
        .await
        .unwrap()
}

/// Refused as a bad request, or the very answer the canonical request got.
fn same_or_refused(canonical: &RawResponse, got: &RawResponse) -> bool {
    got.status == 400 || (got.status == canonical.status && got.body == canonical.body)
}

/// Every case file of the pack whose canonical request Envoy denies, in every spelling and
/// behind every method-override header, under both `request` modes.
#[tokio::test(flavor = "multi_thread")]
async fn no_spelling_of_a_denied_case_is_admitted_through_envoy() {
    let echo = Echo::start().await.unwrap();
    let mut by_data: BTreeMap<String, Vec<(String, Value)>> = BTreeMap::new();
    for entry in std::fs::read_dir(repo_root().join("policies/tests")).unwrap() {
        let path = entry.unwrap().path();
        // The pack's case files; folders beside them hold other policies' cases.
        if path.extension().is_none_or(|x| x != "json") {
            continue;
        }
        let case: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let data = case
            .get("data")
            .map_or_else(|| json!({}), Clone::clone)
            .to_string();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        by_data.entry(data).or_default().push((name, case));
    }
    let (mut denied, mut tried, mut failures) = (0, 0, Vec::new());
    for (data, cases) in &by_data {
        let data: Value = serde_json::from_str(data).unwrap();
        for request in [
            json!({}),
            json!({"matrix_params": "strip", "method_override": "honor"}),
        ] {
            let spec = EnvoySpec::new(echo.addr).with_filter(pack_config(&request, &data));
            let envoy = Envoy::start(&spec).await.unwrap();
            for (name, case) in cases {
                let input = &case["input"];
                let method = input["request"]["method"].as_str().unwrap();
                let path = input["request"]["path"].as_str().unwrap();
                let token = input.get("token").map(|t| {
                    let mut c = t.clone();
                    for (k, v) in claims(json!({})).as_object().unwrap() {
                        if ["iss", "aud", "exp", "iat"].contains(&k.as_str()) {
                            c[k] = v.clone();
                        }
                    }
                    es256(&c)
                });
                let canonical = send(&envoy, method, path, token.as_deref(), &[]).await;
                if canonical.status == 200 {
                    continue;
                }
                denied += 1;
                // Every spelling at once: the answers are independent, and one at a time the
                // test would spend most of its time waiting on loopback round trips.
                let mut sent = tokio::task::JoinSet::new();
                let bearer = token.as_ref().map(|t| format!("Bearer {t}"));
                let mut send_one =
                    |what: String,
                     method: String,
                     path: String,
                     extra: Option<(&'static str, String)>| {
                        let (addr, bearer) = (envoy.addr, bearer.clone());
                        sent.spawn(async move {
                            let mut headers: Vec<(&str, &[u8])> = Vec::new();
                            if let Some(b) = &bearer {
                                headers.push(("authorization", b.as_bytes()));
                            }
                            if let Some((n, v)) = &extra {
                                headers.push((n, v.as_bytes()));
                            }
                            let got = raw::request(addr, &method, path.as_bytes(), &headers).await;
                            (what, got)
                        });
                    };
                for spelled in spellings(path, &literal_segments(TEMPLATE, path)) {
                    let what = format!("{name} {request} {method} {spelled}");
                    send_one(what, method.to_owned(), spelled, None);
                }
                for header in [
                    "x-http-method-override",
                    "x-http-method",
                    "x_method_override",
                ] {
                    let what = format!("{name} {request} GET {path} {header}: {method}");
                    let over = method.to_ascii_lowercase();
                    send_one(what, "GET".into(), path.to_owned(), Some((header, over)));
                }
                while let Some(done) = sent.join_next().await {
                    let (what, got) = done.unwrap();
                    let got = got.unwrap();
                    tried += 1;
                    if !same_or_refused(&canonical, &got) {
                        failures.push(format!("{what}: {got:?}"));
                    }
                }
            }
            if !failures.is_empty() {
                eprintln!("envoy log:\n{}", envoy.access_log());
            }
        }
    }
    assert!(denied >= 30, "only {denied} denied canonical requests");
    assert!(tried >= 800, "only {tried} spellings");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The review's reproductions, one by one: refused by default, judged canonically when the
/// operator opts in.
#[tokio::test(flavor = "multi_thread")]
async fn the_reviewed_bypasses_are_closed_through_envoy() {
    let echo = Echo::start().await.unwrap();
    let strict =
        Envoy::start(&EnvoySpec::new(echo.addr).with_filter(pack_config(&json!({}), &json!({}))))
            .await
            .unwrap();
    let lenient = Envoy::start(&EnvoySpec::new(echo.addr).with_filter(pack_config(
        &json!({"matrix_params": "strip", "method_override": "honor"}),
        &json!({}),
    )))
    .await
    .unwrap();
    let editor = es256(&claims(
        json!({"sub": "alice", "tenant_id": "acme", "roles": ["editor"]}),
    ));
    let override_delete: &[(&str, &[u8])] = &[("x-http-method-override", b"DELETE")];
    let override_get: &[(&str, &[u8])] = &[("x-http-method-override", b"GET")];
    let method_head: &[(&str, &[u8])] = &[("X-HTTP-Method", b"HEAD")];
    for (method, path, token, extra, want_strict, want_lenient) in [
        (
            "GET",
            "/api/v1/tenants/acme/..;/globex/documents/7",
            true,
            &[][..],
            400,
            403,
        ),
        (
            "GET",
            "/api/v1/tenants;x/globex/documents/7",
            true,
            &[],
            400,
            403,
        ),
        ("GET", "/api/v1/ADMIN/settings", true, &[], 403, 403),
        ("GET", "/api/v1/admin;x/settings", true, &[], 400, 403),
        ("GET", "/API/V1/USERS/1", true, &[], 403, 403),
        (
            "GET",
            "/healthz/..;/api/v1/admin/settings",
            false,
            &[],
            400,
            401,
        ),
        (
            "POST",
            "/api/v1/tenants/acme/documents/7",
            true,
            override_delete,
            400,
            403,
        ),
        // Issue 27 (1): an override on anything but POST is refused in both modes; before,
        // honour mode judged these as the method they claimed and let them through.
        (
            "DELETE",
            "/api/v1/tenants/acme/documents/7",
            true,
            override_get,
            400,
            400,
        ),
        (
            "PUT",
            "/api/v1/tenants/acme/documents/7",
            true,
            method_head,
            400,
            400,
        ),
        (
            "TRACE",
            "/api/v1/tenants/acme/documents/7",
            true,
            override_get,
            400,
            400,
        ),
        // Issue 27 (5): `_method` in the query is an override too (Symfony, Laravel, Spring);
        // before, the default mode judged this as the editor's POST and let it through.
        (
            "POST",
            "/api/v1/tenants/acme/documents/7?_method=DELETE",
            true,
            &[],
            400,
            403,
        ),
        (
            "POST",
            "/api/v1/tenants/acme/documents/7?a=1&_Method=delete",
            true,
            &[],
            400,
            403,
        ),
    ] {
        let t = token.then_some(editor.as_str());
        let a = send(&strict, method, path, t, extra).await;
        let b = send(&lenient, method, path, t, extra).await;
        assert_eq!(
            (a.status, b.status),
            (want_strict, want_lenient),
            "{method} {path}: {a:?} {b:?}"
        );
    }
    assert_eq!(echo.count(), 0, "a refused request reached the upstream");
    crate::expect_stat(&strict, "wasmcustom.apiguard.request.bad_path", 4).await;
    crate::expect_stat(&strict, "wasmcustom.apiguard.request.method_override", 6).await;
}

/// Client copies of every header apiguard sets never reach the upstream, under any spelling, on
/// any path, with or without a token; a policy header comes only from the policy; values the
/// policy must see are never silently dropped; out-of-bounds outputs and claims fail closed.
#[tokio::test(flavor = "multi_thread")]
async fn the_upstream_sees_only_what_apiguard_vouches_for() {
    let policy = r#"package api.authz
import rego.v1
default allow := false
allow if {
    not input.request.headers["x-debug"]
    not input.request.query.debug
    input.request.path != "/costly"
}
allow if input.request.path == "/costly"
rate_limit_cost := 5000 if input.request.path == "/costly"
headers := {"x-plan": "gold"} if input.token.plan == "gold"
"#;
    let mut p = provider();
    p["claims_header"] = json!("x-claims");
    let config = json!({
        "jwt": {"providers": {"primary": p},
                "rules": [{"prefix": "/public", "requires": []}, {"prefix": "/", "requires": ["primary"]}]},
        "policy": {"modules": {"p.rego": policy}, "headers": ["x-plan"], "time_budget_ms": 50}
    });
    let echo = Echo::start().await.unwrap();
    let envoy = Envoy::start(&EnvoySpec::new(echo.addr).with_filter(config.to_string()))
        .await
        .unwrap();
    let spoofed: &[(&str, &[u8])] = &[
        ("x_user_id", b"admin"),
        ("X-User-Id", b"admin"),
        ("x_user_roles", b"super_admin"),
        ("X_CLAIMS", b"e30"),
        ("x-plan", b"gold"),
        ("x_plan", b"gold"),
        ("x-other", b"kept"),
    ];
    let free = es256(&claims(json!({"plan": "free"})));
    let gold = es256(&claims(json!({"plan": "gold"})));
    for (path, token, plan) in [
        ("/api/x", Some(free.as_str()), None),
        ("/api/x", Some(gold.as_str()), Some(b"gold".as_slice())),
        ("/public/x", None, None),
    ] {
        echo.clear();
        let r = send(&envoy, "GET", path, token, spoofed).await;
        assert_eq!(r.status, 200, "{path}: {r:?}");
        let seen = &echo.requests()[0];
        for name in ["x_user_id", "x_user_roles", "x_claims", "x_plan"] {
            assert!(
                seen.header_all(name).is_empty(),
                "{path}: {name} reached the upstream"
            );
        }
        assert_eq!(seen.header_all("x-plan").first().copied(), plan, "{path}");
        assert_eq!(seen.header("x-other"), Some("kept"));
        if token.is_some() {
            assert_eq!(seen.header_all("x-user-id"), vec![b"user-1".as_slice()]);
            assert_eq!(seen.header_all("x-user-roles"), vec![b"editor".as_slice()]);
            assert_eq!(seen.header_all("x-claims").len(), 1);
        } else {
            for name in ["x-user-id", "x-user-roles", "x-claims"] {
                assert!(seen.header_all(name).is_empty(), "{name} on a public path");
            }
        }
    }
    echo.clear();
    // Values the policy cannot hold exactly are shown, not dropped: each of these is denied.
    for (path, extra) in [
        ("/api/x", &[("x-debug", b"1\xff".as_slice())][..]),
        ("/api/x?debug=1%zz", &[]),
        ("/api/x?debug=%ff", &[]),
        ("/api/x?debug=1", &[]),
    ] {
        let r = send(&envoy, "GET", path, Some(&free), extra).await;
        assert_eq!(r.status, 403, "{path}: {r:?}");
    }
    // A cost past the limiter's maximum is a policy error, not "no limit".
    assert_eq!(
        send(&envoy, "GET", "/costly", Some(&free), &[])
            .await
            .status,
        403
    );
    crate::expect_stat(&envoy, "wasmcustom.apiguard.policy.error", 1).await;
    // Claims a backend could misread refuse the token.
    for bad in [
        json!({"roles": ["viewer", "x,admin"]}),
        json!({"sub": {"id": "admin"}}),
        json!({"exp": 1e20}),
        json!({"exp": u64::MAX}),
    ] {
        let t = es256(&claims(bad.clone()));
        assert_eq!(
            send(&envoy, "GET", "/api/x", Some(&t), &[]).await.status,
            401,
            "{bad}"
        );
    }
    assert_eq!(echo.count(), 0, "a refused request reached the upstream");
}

/// Every spelling of the auth route counts against the auth route, and two issuers' equal
/// `sub` are two callers; the real limiter and Redis keep the counts.
#[tokio::test(flavor = "multi_thread")]
async fn limits_hold_for_every_spelling_and_every_issuer() {
    let redis = Redis::start().unwrap();
    let limiter = Limiter::start(&["--redis".into(), redis.url()])
        .await
        .unwrap();
    let mut other = provider();
    other["issuer"] = json!("https://other.test/");
    let config = json!({
        "request": {"matrix_params": "strip"},
        "jwt": {"providers": {"primary": provider(), "partner": other}},
        "rate_limit": {
            "cluster": "limiter", "timeout_ms": 500,
            "tiers": {"standard": [{"requests": 1, "window_s": 60}]},
            "routes": [{"name": "auth", "prefix": "/api/v1/auth", "limits": [{"requests": 3, "window_s": 60}]}]
        }
    });
    let echo = Echo::start().await.unwrap();
    let spec = EnvoySpec::new(echo.addr)
        .with_cluster("limiter", limiter.addr)
        .with_filter(config.to_string());
    let envoy = Envoy::start(&spec).await.unwrap();
    let alice = es256(&claims(json!({"sub": "alice"})));
    for path in [
        "/api/v1/auth;x/token",
        "/api/v1/AUTH/token",
        "/api/v1/x/..;/Auth/token",
    ] {
        let r = send(&envoy, "POST", path, Some(&alice), &[]).await;
        assert_eq!(r.status, 200, "{path}: {r:?}");
        assert!(
            r.head.contains("x-ratelimit-limit: 3"),
            "{path}: {}",
            r.head
        );
    }
    let r = send(&envoy, "POST", "/api/v1/auth/token", Some(&alice), &[]).await;
    assert_eq!(r.status, 429, "{r:?}");
    // Judged without the parameters, forwarded as sent.
    let seen: Vec<String> = echo.requests().iter().map(|r| r.uri.clone()).collect();
    assert_eq!(
        seen,
        [
            "/api/v1/auth;x/token",
            "/api/v1/AUTH/token",
            "/api/v1/x/..;/Auth/token"
        ]
    );
    // The standard tier allows one call per caller: alice of the partner issuer is another.
    assert_eq!(
        send(&envoy, "GET", "/api/x", Some(&alice), &[])
            .await
            .status,
        200
    );
    assert_eq!(
        send(&envoy, "GET", "/api/x", Some(&alice), &[])
            .await
            .status,
        429
    );
    let mut partner = claims(json!({"sub": "alice"}));
    partner["iss"] = json!("https://other.test/");
    let partner = es256(&partner);
    assert_eq!(
        send(&envoy, "GET", "/api/x", Some(&partner), &[])
            .await
            .status,
        200
    );
}
