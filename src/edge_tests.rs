//! What apiguard judges is what the backend routes: every spelling of a request that a backend
//! reads like a denied one is refused (400) or gets the same decision, never admitted
//! (docs/security.md). Spellings: a `;x` parameter on each segment, raw and as `%3B`, a `..;`
//! climb, upper and mixed case on each literal segment, and a method-override header, under
//! both `request` modes. The same for JWT rules and rate-limit routes. `tests/e2e/edges.rs`
//! sends the same spellings through Envoy.

// Native only: it reads the policy case files from disk.
#![cfg(not(target_arch = "wasm32"))]

use serde_json::{json, Value};

use crate::flow::{Outcome, Pipeline, RequestFacts, Step, WorkerState};
use crate::http::Headers;
use crate::jose::Algorithm;
use apiguard_testkit::mint::{mint, SigningKey};
use apiguard_testkit::spellings::{literal_segments, spellings};

const NOW: i64 = 1_800_000_000;
const TEMPLATE: &str = "/api/v1/tenants/{tenant_id}/documents/{doc_id}";

fn key() -> SigningKey {
    let jwk: Value =
        serde_json::from_str(include_str!("../tests/fixtures/keys/es256.json")).unwrap();
    SigningKey::from_jwk(&jwk).unwrap()
}

/// A pipeline with JWT (public `/healthz` and `/api/open`, protected `/api/open/admin`), the
/// built-in pack with `data`, and rate-limit routes, under the given `request` modes.
fn pipeline(key: &SigningKey, data: &Value, request: Value) -> Pipeline {
    let config = json!({
        "request": request,
        "jwt": {
            "providers": {"primary": {
                "issuer": "https://idp.example/",
                "audiences": ["api"],
                "jwks": {"inline": {"keys": [key.public_jwk(Some("es"))]}},
                "claims_to_headers": [{"claim": "sub", "header": "x-user-id"}]
            }},
            "rules": [
                {"prefix": "/healthz", "requires": []},
                {"prefix": "/api/open", "requires": []},
                {"prefix": "/api/open/admin", "requires": ["primary"]},
                {"prefix": "/", "requires": ["primary"]}
            ]
        },
        // A generous budget: the test judges decisions, not speed (unoptimised build, busy host).
        "policy": {"data": data, "resources": [TEMPLATE], "expose_reasons": true, "time_budget_ms": 1000},
        "rate_limit": {
            "cluster": "limiter",
            "tiers": {"standard": [{"requests": 100, "window_s": 60}], "high": [], "unlimited": []},
            "routes": [{"name": "auth", "prefix": "/api/v1/auth", "limits": [{"requests": 3, "window_s": 60}]}]
        }
    });
    Pipeline::from_json(config.to_string().as_bytes())
        .unwrap()
        .0
}

fn run(
    p: &Pipeline,
    s: &mut WorkerState,
    method: &str,
    path: &str,
    token: Option<&str>,
    extra: &[(&str, &str)],
) -> Outcome {
    let mut list: Vec<(String, Vec<u8>)> = vec![(":method".into(), method.as_bytes().to_vec())];
    if let Some(t) = token {
        list.push(("authorization".into(), format!("Bearer {t}").into_bytes()));
    }
    for (n, v) in extra {
        list.push(((*n).to_owned(), v.as_bytes().to_vec()));
    }
    p.on_request(
        &RequestFacts {
            path: path.as_bytes(),
            headers: Headers::new(&list),
            source: Some("10.0.0.5"),
            body_follows: false,
        },
        NOW * 1000,
        s,
    )
}

/// What a request came to: its status and body when answered locally, `200` for one that
/// goes upstream (or to the limiter, with its rate-limit scope).
fn verdict(o: &Outcome) -> (u16, String) {
    match &o.step {
        Step::Continue(_) => (200, String::new()),
        Step::CheckLimits { resume, .. } => (200, resume.plan.scope.clone()),
        Step::Respond(r) => (r.status, String::from_utf8_lossy(&r.body).into_owned()),
        Step::FetchKeys(_) => (0, "fetch".into()),
    }
}

/// A spelling is fine when it is refused as a bad request or gets the canonical verdict.
fn check(what: &str, canonical: &(u16, String), got: (u16, String), failures: &mut Vec<String>) {
    if got.0 != 400 && &got != canonical {
        failures.push(format!("{what}: {got:?}, canonical {canonical:?}"));
    }
}

/// Every case file of the pack whose canonical request the pipeline denies, in every spelling.
#[test]
fn no_spelling_of_a_denied_case_is_admitted() {
    let key = key();
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/policies/tests");
    let (mut denied, mut failures, mut tried) = (0, Vec::new(), 0);
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    for file in files {
        let case: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let input = &case["input"];
        let method = input["request"]["method"].as_str().unwrap();
        let path = input["request"]["path"].as_str().unwrap();
        let token = input.get("token").map(|claims| {
            let mut c = claims.clone();
            c["exp"] = json!(NOW + 600);
            mint(Algorithm::ES256, &key, Some("es"), &c).unwrap()
        });
        let data = case
            .get("data")
            .and_then(|d| d.get("api_authz"))
            .map_or_else(|| json!({}), |d| json!({"api_authz": d}));
        for request in [
            json!({}),
            json!({"matrix_params": "strip", "method_override": "honor"}),
        ] {
            let p = pipeline(&key, &data, request.clone());
            let mut s = p.worker_state();
            let canonical = verdict(&run(&p, &mut s, method, path, token.as_deref(), &[]));
            if canonical.0 == 200 {
                continue;
            }
            denied += 1;
            for spelled in spellings(path, &literal_segments(TEMPLATE, path)) {
                tried += 1;
                let got = verdict(&run(&p, &mut s, method, &spelled, token.as_deref(), &[]));
                check(
                    &format!("{name} {request} {method} {spelled}"),
                    &canonical,
                    got,
                    &mut failures,
                );
            }
            // The method the policy judged, hidden behind an override of an innocent one.
            for header in [
                "x-http-method-override",
                "X_HTTP_Method",
                "x-method-override",
            ] {
                for cover in ["GET", "POST"] {
                    tried += 1;
                    let got = verdict(&run(
                        &p,
                        &mut s,
                        cover,
                        path,
                        token.as_deref(),
                        &[(header, &method.to_ascii_lowercase())],
                    ));
                    check(
                        &format!("{name} {request} {cover} {path} {header}: {method}"),
                        &canonical,
                        got,
                        &mut failures,
                    );
                }
            }
        }
    }
    assert!(denied >= 30, "only {denied} denied canonical requests");
    assert!(tried >= 1000, "only {tried} spellings");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The reproductions of the security review, one by one, with the default `request` settings
/// (refused) and in strip/honour mode (the canonical decision).
#[test]
fn the_reviewed_bypasses_are_closed() {
    let key = key();
    let editor = mint(
        Algorithm::ES256,
        &key,
        Some("es"),
        &json!({"iss": "https://idp.example/", "aud": "api", "sub": "alice", "exp": NOW + 600,
                "roles": ["editor"], "tenant_id": "acme"}),
    )
    .unwrap();
    let strict = pipeline(&key, &json!({}), json!({}));
    let lenient = pipeline(
        &key,
        &json!({}),
        json!({"matrix_params": "strip", "method_override": "honor"}),
    );
    let (mut s1, mut s2) = (strict.worker_state(), lenient.worker_state());
    for (method, path, token, extra, strict_status, lenient_status) in [
        (
            "GET",
            "/api/v1/tenants/acme/..;/globex/documents/7",
            true,
            None,
            400,
            403,
        ),
        (
            "GET",
            "/api/v1/tenants;x/globex/documents/7",
            true,
            None,
            400,
            403,
        ),
        ("GET", "/api/v1/ADMIN/settings", true, None, 403, 403),
        ("GET", "/api/v1/admin;x/settings", true, None, 400, 403),
        ("GET", "/API/V1/USERS/1", true, None, 403, 403),
        (
            "GET",
            "/healthz/..;/api/v1/admin/settings",
            false,
            None,
            400,
            401,
        ),
        ("GET", "/api/open/ADMIN/x", false, None, 401, 401),
        (
            "POST",
            "/api/v1/tenants/acme/documents/7",
            true,
            Some(("x-http-method-override", "DELETE")),
            400,
            403,
        ),
        // Issue 27 (1): an override on anything but POST is refused in both modes; before,
        // honour mode judged this DELETE as the GET it claimed to be and let it through.
        (
            "DELETE",
            "/api/v1/tenants/acme/documents/7",
            true,
            Some(("x-http-method-override", "GET")),
            400,
            400,
        ),
        (
            "PUT",
            "/api/v1/tenants/acme/documents/7",
            true,
            Some(("X-HTTP-Method", "HEAD")),
            400,
            400,
        ),
        (
            "TRACE",
            "/api/v1/tenants/acme/documents/7",
            true,
            Some(("x-http-method-override", "GET")),
            400,
            400,
        ),
        // Issue 27 (5): `_method` in the query is an override too (Symfony, Laravel, Spring).
        (
            "POST",
            "/api/v1/tenants/acme/documents/7?_method=DELETE",
            true,
            None,
            400,
            403,
        ),
        (
            "POST",
            "/api/v1/tenants/acme/documents/7?a=1&_METHOD=delete",
            true,
            None,
            400,
            403,
        ),
        (
            "POST",
            "/api/v1/tenants/acme/documents/7?%5Fmethod=DELETE",
            true,
            None,
            400,
            403,
        ),
        (
            "GET",
            "/api/v1/tenants/acme/documents/7?_method=DELETE",
            true,
            None,
            400,
            400,
        ),
    ] {
        let extra: Vec<(&str, &str)> = extra.into_iter().collect();
        let t = token.then_some(editor.as_str());
        let a = verdict(&run(&strict, &mut s1, method, path, t, &extra));
        let b = verdict(&run(&lenient, &mut s2, method, path, t, &extra));
        assert_eq!(
            (a.0, b.0),
            (strict_status, lenient_status),
            "{method} {path} {a:?} {b:?}"
        );
    }
    // JWT rules: every spelling of a protected path under a public prefix needs a token. (The
    // pack would deny it too, with 403: a 401 shows the JWT rule itself held.)
    for p in [&strict, &lenient] {
        let mut s = p.worker_state();
        let path = "/api/open/admin/x";
        for spelled in spellings(path, &|_| true) {
            let got = verdict(&run(p, &mut s, "GET", &spelled, None, &[]));
            assert!(got.0 == 401 || got.0 == 400, "{spelled}: {got:?}");
        }
    }
    // Route limits: every spelling of the auth route counts under the auth route.
    let mut routes = vec![
        "/api/v1/AUTH/token".to_owned(),
        "/api/v1/auth;x/token".to_owned(),
    ];
    routes.extend(spellings("/api/v1/auth/token", &|_| true));
    for path in &routes {
        let got = verdict(&run(&lenient, &mut s2, "POST", path, Some(&editor), &[]));
        assert_eq!(got, (200, "route:auth".into()), "{path}");
        let got = verdict(&run(&strict, &mut s1, "POST", path, Some(&editor), &[]));
        assert!(
            got == (200, "route:auth".into()) || got.0 == 400,
            "{path}: {got:?}"
        );
    }
}

/// The request headers after `ops`, as Envoy applies them (names compared in lowercase).
fn apply(list: &[(&str, &str)], o: &Outcome) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = list
        .iter()
        .map(|(n, v)| (n.to_ascii_lowercase(), (*v).to_owned()))
        .collect();
    let Step::Continue(ops) = &o.step else {
        panic!("not forwarded: {:?}", o.step)
    };
    for op in ops {
        match op {
            crate::http::HeaderOp::Remove(n) => out.retain(|(m, _)| !m.eq_ignore_ascii_case(n)),
            crate::http::HeaderOp::Set(n, v) => {
                out.retain(|(m, _)| !m.eq_ignore_ascii_case(n));
                out.push((n.clone(), v.clone()));
            }
        }
    }
    out
}

/// Client copies of every header apiguard sets are removed under any case and `_`/`-`
/// spelling, on every path, with or without a token; a policy header is removed whether or not
/// the policy sets it for this caller.
#[test]
fn headers_the_upstream_trusts_come_only_from_apiguard() {
    let key = key();
    let policy = r#"package api.authz
import rego.v1
default allow := true
headers := {"x-plan": "gold"} if input.token.plan == "gold"
"#;
    let config = json!({
        "jwt": {
            "providers": {"primary": {
                "issuer": "https://idp.example/",
                "audiences": ["api"],
                "jwks": {"inline": {"keys": [key.public_jwk(Some("es"))]}},
                "claims_to_headers": [{"claim": "sub", "header": "x-user-id"},
                                      {"claim": "roles", "header": "x-user-roles"}],
                "claims_header": "x-claims"
            }},
            "rules": [{"prefix": "/public", "requires": []}, {"prefix": "/", "requires": ["primary"]}]
        },
        "policy": {"modules": {"p.rego": policy}, "headers": ["x-plan"]}
    });
    let p = Pipeline::from_json(config.to_string().as_bytes())
        .unwrap()
        .0;
    let mut s = p.worker_state();
    let token = |plan: &str| {
        mint(
            Algorithm::ES256,
            &key,
            Some("es"),
            &json!({"iss": "https://idp.example/", "aud": "api", "sub": "alice",
                    "exp": NOW + 600, "roles": ["viewer"], "plan": plan}),
        )
        .unwrap()
    };
    let spoofed = [
        ("x_user_id", "admin"),
        ("X-User-Id", "admin"),
        ("x_user_roles", "super_admin"),
        ("X_CLAIMS", "e30"),
        ("x-plan", "gold"),
        ("X_Plan", "gold"),
        ("x-other", "kept"),
    ];
    let trusted = ["x-user-id", "x-user-roles", "x-claims", "x-plan"];
    for (path, token, plan) in [
        ("/api/x", Some(token("free")), None),
        ("/api/x", Some(token("gold")), Some("gold")),
        ("/public/x", None, None),
    ] {
        let mut list: Vec<(&str, &str)> = vec![(":method", "GET")];
        let bearer = token.as_ref().map(|t| format!("Bearer {t}"));
        if let Some(b) = &bearer {
            list.push(("authorization", b));
        }
        list.extend(spoofed);
        let o = run(&p, &mut s, "GET", path, token.as_deref(), &spoofed);
        let after = apply(&list, &o);
        for (name, value) in &after {
            let folded = name.replace('_', "-");
            if trusted.contains(&folded.as_str()) {
                assert!(
                    name.as_str() == folded
                        && value != "admin"
                        && value != "super_admin"
                        && value != "e30",
                    "{path}: {name}: {value}"
                );
            }
        }
        assert_eq!(
            after
                .iter()
                .find(|(n, _)| n == "x-plan")
                .map(|(_, v)| v.as_str()),
            plan,
            "{path}"
        );
        assert!(after.contains(&("x-other".into(), "kept".into())));
        if token.is_some() {
            assert!(
                after.contains(&("x-user-id".into(), "alice".into())),
                "{after:?}"
            );
        }
    }
}

/// A policy output naming a header the configuration did not declare is a policy error, and a
/// claim array a backend could split differently refuses the token.
#[test]
fn undeclared_policy_headers_and_ambiguous_claims_fail_closed() {
    let key = key();
    let config = |headers: Value| {
        json!({
            "jwt": {"providers": {"primary": {
                "issuer": "https://idp.example/", "audiences": ["api"],
                "jwks": {"inline": {"keys": [key.public_jwk(Some("es"))]}},
                "claims_to_headers": [{"claim": "roles", "header": "x-user-roles"}]
            }}},
            "policy": {"modules": {"p.rego": "package api.authz\nimport rego.v1\ndefault allow := true\nheaders := {\"x-plan\": \"gold\"}\n"},
                       "headers": headers}
        })
    };
    let t = |roles: Value| {
        mint(
            Algorithm::ES256,
            &key,
            Some("es"),
            &json!({"iss": "https://idp.example/", "aud": "api", "sub": "alice",
                    "exp": NOW + 600, "roles": roles}),
        )
        .unwrap()
    };
    let undeclared = Pipeline::from_json(config(json!([])).to_string().as_bytes())
        .unwrap()
        .0;
    let mut s = undeclared.worker_state();
    let o = run(
        &undeclared,
        &mut s,
        "GET",
        "/x",
        Some(&t(json!(["viewer"]))),
        &[],
    );
    assert_eq!(verdict(&o).0, 403);
    let declared = Pipeline::from_json(config(json!(["x-plan"])).to_string().as_bytes())
        .unwrap()
        .0;
    let mut s = declared.worker_state();
    let o = run(
        &declared,
        &mut s,
        "GET",
        "/x",
        Some(&t(json!(["viewer", "editor"]))),
        &[],
    );
    let after = apply(&[], &o);
    assert!(after.contains(&("x-user-roles".into(), "viewer,editor".into())));
    assert!(after.contains(&("x-plan".into(), "gold".into())));
    let o = run(
        &declared,
        &mut s,
        "GET",
        "/x",
        Some(&t(json!(["viewer", "x,admin"]))),
        &[],
    );
    assert_eq!(verdict(&o).0, 401);
}
