//! `policy.decision_cache` through the whole pipeline: off by default, hits for equal inputs,
//! bounded by its TTL and the token's `exp`, never keeps failures, and never hits for a policy
//! that reads request headers (Envoy's `x-request-id` differs on every request).

#[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
use wasm_bindgen_test::wasm_bindgen_test as test;

use serde_json::{json, Value};

use crate::events::Event;
use crate::flow::{Outcome, Pipeline, RequestFacts, Step, WorkerState};
use crate::http::Headers;
use crate::jose::Algorithm;
use apiguard_testkit::mint::{mint, SigningKey};

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
const NOW: i64 = 1_800_000_000;

fn pipeline(policy: Value) -> (Pipeline, WorkerState) {
    pipeline_publishing(policy, false)
}

fn pipeline_publishing(policy: Value, publish_claims: bool) -> (Pipeline, WorkerState) {
    use base64ct::{Base64UrlUnpadded, Encoding};
    let k = Base64UrlUnpadded::encode_string(SECRET);
    let cfg = json!({
        "jwt": {"providers": {"p": {"issuer": "iss", "algorithms": ["HS256"],
                "jwks": {"inline": {"keys": [{"kty": "oct", "k": k}]}}}},
                "publish_claims": publish_claims},
        "policy": policy,
    });
    let (p, _) = Pipeline::from_json(cfg.to_string().as_bytes()).unwrap();
    let state = p.worker_state();
    (p, state)
}

fn token(exp: i64) -> String {
    let claims =
        json!({"iss": "iss", "sub": "u1", "exp": exp, "roles": ["editor"], "tenant_id": "t1"});
    mint(
        Algorithm::HS256,
        &SigningKey::Hmac(SECRET.to_vec()),
        None,
        &claims,
    )
    .unwrap()
}

/// One request through the pipeline.
fn request(
    p: &Pipeline,
    s: &mut WorkerState,
    path: &str,
    tok: &str,
    now: i64,
    rid: &str,
) -> Outcome {
    let list: Vec<(String, Vec<u8>)> = vec![
        (":method".into(), b"GET".to_vec()),
        (":path".into(), path.as_bytes().to_vec()),
        ("authorization".into(), format!("Bearer {tok}").into_bytes()),
        ("x-request-id".into(), rid.as_bytes().to_vec()),
    ];
    let facts = RequestFacts {
        path: path.as_bytes(),
        headers: Headers::new(&list),
        source: Some("10.0.0.1"),
        body_follows: false,
    };
    p.on_request(&facts, now * 1000, s)
}

/// One request; returns whether it was allowed and whether the decision was cached.
fn send(
    p: &Pipeline,
    s: &mut WorkerState,
    path: &str,
    tok: &str,
    now: i64,
    rid: &str,
) -> (bool, bool) {
    let out = request(p, s, path, tok, now, rid);
    let allowed = matches!(out.step, Step::Continue(_));
    (allowed, out.events.contains(&Event::PolicyCacheHit))
}

/// A document of tenant t1, whose token [`token`] mints.
const DOC: &str = "/api/v1/tenants/t1/documents/1";

/// The built-in pack over tenant documents.
fn pack() -> Value {
    json!({"resources": ["/api/v1/tenants/{tenant_id}/documents/{doc_id}"]})
}

/// The pack with `policy.decision_cache` set to `cache`.
fn pack_with(cache: Value) -> Value {
    let mut p = pack();
    p["decision_cache"] = cache;
    // The compiled pack does not use the cache: these tests cache Rego decisions.
    p["pack_engine"] = json!("rego");
    p
}

#[test]
fn off_by_default() {
    let (p, mut s) = pipeline(pack());
    let t = token(NOW + 3600);
    for i in 0..3 {
        assert_eq!(
            send(&p, &mut s, DOC, &t, NOW, &i.to_string()),
            (true, false)
        );
    }
}

#[test]
fn equal_inputs_hit_until_the_ttl_and_other_inputs_miss() {
    let (p, mut s) = pipeline(pack_with(json!({"max_entries": 100, "ttl_s": 10})));
    let t = token(NOW + 3600);
    assert_eq!(send(&p, &mut s, DOC, &t, NOW, "a"), (true, false));
    // The pack reads no headers, so a new x-request-id is the same input.
    assert_eq!(send(&p, &mut s, DOC, &t, NOW + 1, "b"), (true, true));
    // Denials are cached too, with their reasons.
    let other = "/api/v1/tenants/t2/documents/1";
    assert_eq!(send(&p, &mut s, other, &t, NOW, "c"), (false, false));
    assert_eq!(send(&p, &mut s, other, &t, NOW + 1, "d"), (false, true));
    // Past the TTL the decision is made again.
    assert_eq!(send(&p, &mut s, DOC, &t, NOW + 10, "e"), (true, false));
    assert_eq!(send(&p, &mut s, DOC, &t, NOW + 11, "f"), (true, true));
}

#[test]
fn never_past_the_token_exp() {
    let (p, mut s) = pipeline(pack_with(json!({"max_entries": 100, "ttl_s": 3600})));
    let t = token(NOW + 5);
    assert_eq!(send(&p, &mut s, DOC, &t, NOW, "a"), (true, false));
    assert_eq!(send(&p, &mut s, DOC, &t, NOW + 4, "b"), (true, true));
    // At exp (plus the default 60 s leeway the JWT stage still accepts), no cached decision.
    assert_eq!(send(&p, &mut s, DOC, &t, NOW + 5, "c"), (true, false));
}

#[test]
fn bounded_by_max_entries() {
    let (p, mut s) = pipeline(pack_with(json!({"max_entries": 2, "ttl_s": 60})));
    let t = token(NOW + 3600);
    for d in ["1", "2", "3"] {
        let path = format!("/api/v1/tenants/t1/documents/{d}");
        assert_eq!(send(&p, &mut s, &path, &t, NOW, d), (true, false));
    }
    // The oldest left; the two newest are still there.
    assert_eq!(send(&p, &mut s, DOC, &t, NOW, "x"), (true, false));
    assert_eq!(
        send(&p, &mut s, "/api/v1/tenants/t1/documents/3", &t, NOW, "y"),
        (true, true)
    );
}

#[test]
fn failures_are_never_cached() {
    let policy = json!({
        "modules": {"p.rego": "package api.authz\nimport rego.v1\nallow if 1 / 0"},
        "decision_cache": {"max_entries": 10, "ttl_s": 60},
    });
    let (p, mut s) = pipeline(policy);
    let t = token(NOW + 3600);
    for rid in ["a", "b", "c"] {
        assert_eq!(send(&p, &mut s, "/x", &t, NOW, rid), (false, false));
    }
}

#[test]
fn a_policy_that_reads_headers_sees_a_new_input_each_request() {
    let policy = json!({
        "modules": {"p.rego": "package api.authz\nimport rego.v1\nallow if input.request.headers[\"x-request-id\"]"},
        "decision_cache": {"max_entries": 10, "ttl_s": 60},
    });
    let (p, mut s) = pipeline(policy);
    let t = token(NOW + 3600);
    assert_eq!(send(&p, &mut s, "/x", &t, NOW, "a"), (true, false));
    assert_eq!(send(&p, &mut s, "/x", &t, NOW, "b"), (true, false));
    // The very same input (same request id) would hit.
    assert_eq!(send(&p, &mut s, "/x", &t, NOW, "b"), (true, true));
}

#[test]
fn bad_settings_are_refused_by_name() {
    for (cache, field) in [
        (
            json!({"max_entries": 0, "ttl_s": 10}),
            "policy.decision_cache.max_entries",
        ),
        (
            json!({"max_entries": 10, "ttl_s": 0}),
            "policy.decision_cache.ttl_s",
        ),
        (
            json!({"max_entries": 10, "ttl_s": 10, "size": 1}),
            "policy.decision_cache",
        ),
        (json!({"max_entries": 10}), "policy.decision_cache"),
    ] {
        let cfg = json!({"policy": {"decision_cache": cache}});
        let err = Pipeline::from_json(cfg.to_string().as_bytes())
            .unwrap_err()
            .to_string();
        assert!(err.contains(field), "{err}");
    }
}

/// Filter state for access logs: the decision whenever the policy ran (members in the documented
/// order), the provider and claims only with `jwt.publish_claims`.
#[test]
fn filter_state_has_the_decision_and_claims_only_when_asked() {
    for publish in [false, true] {
        let (p, mut s) = pipeline_publishing(pack(), publish);
        let out = request(
            &p,
            &mut s,
            "/api/v1/tenants/t2/documents/1",
            &token(NOW + 3600),
            NOW,
            "a",
        );
        let state = p.filter_state(&out);
        let names: Vec<&str> = state.iter().map(|(n, _)| *n).collect();
        let want: &[&str] = if publish {
            &["apiguard.provider", "apiguard.claims", "apiguard.decision"]
        } else {
            &["apiguard.decision"]
        };
        assert_eq!(names, want);
        let decision = std::str::from_utf8(&state[state.len() - 1].1).unwrap();
        let digest = &p.policy.as_ref().unwrap().program.digest[..16];
        assert_eq!(
            decision,
            format!(
                r#"{{"decision":"deny","policy":"{digest}","reasons":["tenant_mismatch"],"tier":"standard"}}"#
            )
        );
        if publish {
            assert_eq!(&*state[0].1, b"p");
            let claims: Value = serde_json::from_slice(&state[1].1).unwrap();
            assert_eq!(claims["tenant_id"], "t1");
        }
    }
}
