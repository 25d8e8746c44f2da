//! The request's life through the [`Driver`], natively, as the glue drives it: every wait
//! (keys, the limiter, a batch), host calls refused or answered, requests that go while they
//! wait, and call tokens the host hands out again.

#[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
use wasm_bindgen_test::wasm_bindgen_test as test;

use std::sync::Arc;

use serde_json::{json, Value};

use crate::driver::{CallId, Driver, Effect, Expecting, HostCall, RequestHead};
use crate::events::Counter;
use crate::flow::Pipeline;
use crate::jose::Algorithm;
use crate::jwt::keys::MAX_JWKS_BYTES;
use crate::ratelimit::batch::MAX_BATCH_ANSWER_BYTES;
use crate::ratelimit::MAX_ANSWER_BYTES;
use apiguard_testkit::mint::{mint, SigningKey};

const NOW_MS: i64 = 1_800_000_000_000;
const ROOT: u32 = 1;

fn driver(config: Value) -> Driver {
    let (p, _) = Pipeline::from_json(config.to_string().as_bytes()).unwrap();
    let state = p.worker_state();
    Driver::new(Arc::new(p), state, ROOT)
}

fn rate_limited(extra: Value) -> Driver {
    let mut rl = json!({"cluster": "limiter", "identity": ["header:x-api-key"],
                        "tiers": {"standard": [{"requests": 5, "window_s": 60}]}});
    if let (Some(o), Some(e)) = (rl.as_object_mut(), extra.as_object()) {
        o.extend(e.clone());
    }
    driver(json!({ "rate_limit": rl }))
}

fn head(path: &str, headers: &[(&str, &[u8])]) -> RequestHead {
    let mut all = vec![(":path".to_owned(), path.as_bytes().to_vec())];
    all.extend(headers.iter().map(|(n, v)| (n.to_string(), v.to_vec())));
    RequestHead {
        headers: all,
        source: None,
        body_follows: false,
    }
}

fn keyed() -> RequestHead {
    head("/x", &[("x-api-key", b"k")])
}

/// The one call among `effects`: its id, context and what it is.
fn call(effects: &[Effect]) -> (CallId, u32, HostCall) {
    let calls: Vec<_> = effects
        .iter()
        .filter_map(|e| match e {
            Effect::Call { id, context, call } => Some((*id, *context, call.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(calls.len(), 1, "{effects:?}");
    calls.into_iter().next().unwrap()
}

fn header<'a>(call: &'a HostCall, name: &str) -> &'a str {
    call.headers
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or_default()
}

/// What each request was told, in order: `(context, status)`, 200 for going on.
fn told(effects: &[Effect]) -> Vec<(u32, u16)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Continue { context, .. } => Some((*context, 200)),
            Effect::Respond { context, reply } => Some((*context, reply.status)),
            _ => None,
        })
        .collect()
}

/// The key `x-api-key: k` is counted under.
const KEY: &str = "{x-api-key#8254c329a92850f6d539dd376f4816ee}:tier:standard";

/// The limiter's answer for [`KEY`]: allowed or not.
fn check_answer(allowed: bool) -> String {
    let remaining = if allowed { 4 } else { 0 };
    let retry = if allowed { 0 } else { 1000 };
    format!(
        r#"{{"allowed":{allowed},"results":[{{"key":"{KEY}","limit":5,"remaining":{remaining},"reset_ms":1000,"retry_after_ms":{retry}}}]}}"#
    )
}

fn answer(d: &mut Driver, token: u32, status: u16, body: &str) -> Vec<Effect> {
    d.on_call_answer(token, Some(status), body.len(), body.as_bytes(), NOW_MS + 5)
}

#[test]
fn a_request_waits_for_its_limiter_call_then_goes_on_with_its_headers() {
    let mut d = rate_limited(json!({}));
    let effects = d.on_request_headers(2, Ok(keyed()), NOW_MS);
    let (id, context, c) = call(&effects);
    assert_eq!(context, 2, "a request's own call is made in its name");
    assert_eq!(c.cluster, "limiter");
    assert_eq!(
        (header(&c, ":method"), header(&c, ":path")),
        ("POST", "/v1/check")
    );
    assert_eq!(told(&effects), []);
    assert!(d.call_started(id, Ok(8), NOW_MS).is_empty());
    assert_eq!(
        d.expecting(8),
        Some(Expecting {
            context: 2,
            max_body: MAX_ANSWER_BYTES
        })
    );
    assert_eq!(d.expecting(12), None);
    let effects = answer(&mut d, 8, 200, &check_answer(true));
    assert_eq!(told(&effects), [(2, 200)]);
    assert!(effects
        .iter()
        .any(|e| matches!(e, Effect::LimiterLatency(5))));
    let response = d.response_headers(2);
    assert!(
        response.iter().any(|(n, _)| n == "x-ratelimit-remaining"),
        "{response:?}"
    );
    // A second answer for the same token is nobody's.
    assert_eq!(d.expecting(8), None);
    assert!(answer(&mut d, 8, 200, &check_answer(true)).is_empty());
    d.on_delete(2);
    assert_eq!(d.calls_in_flight(), 0);
    let counts = d.take_counts();
    assert!(
        counts.contains(&(Counter::RatelimitAllowed, 1)),
        "{counts:?}"
    );
    assert!(d.take_counts().is_empty(), "taken once");
}

#[test]
fn a_limiter_call_the_host_refuses_fails_by_the_failure_mode() {
    for (mode, status) in [("deny", 503), ("allow", 200)] {
        let mut d = rate_limited(json!({ "failure_mode": mode }));
        let (id, _, _) = call(&d.on_request_headers(2, Ok(keyed()), NOW_MS));
        let effects = d.call_started(id, Err(()), NOW_MS);
        assert_eq!(told(&effects), [(2, status)], "{mode}");
        assert_eq!(d.calls_in_flight(), 0);
    }
}

#[test]
fn headers_the_host_cannot_give_refuse_the_request() {
    let mut d = rate_limited(json!({}));
    let effects = d.on_request_headers(2, Err("bad map".into()), NOW_MS);
    assert_eq!(told(&effects), [(2, 503)]);
    assert!(matches!(&effects[0], Effect::Log(l) if l.text.contains("bad map")));
}

fn es_key() -> SigningKey {
    let jwk: Value =
        serde_json::from_str(include_str!("../tests/fixtures/keys/es256.json")).unwrap();
    SigningKey::from_jwk(&jwk).unwrap()
}

fn remote_jwt() -> Driver {
    driver(
        json!({"jwt": {"providers": {"p": {"issuer": "https://idp.example/", "audiences": ["api"],
        "jwks": {"remote": {"cluster": "idp", "path": "/jwks", "min_refetch_s": 30}}}}}}),
    )
}

fn bearer_head() -> RequestHead {
    let now = NOW_MS / 1000;
    let claims = json!({"iss": "https://idp.example/", "aud": "api", "sub": "u1",
                        "exp": now + 600, "iat": now - 10});
    let token = mint(Algorithm::ES256, &es_key(), Some("es"), &claims).unwrap();
    head(
        "/a",
        &[("authorization", format!("Bearer {token}").as_bytes())],
    )
}

/// A request whose keys are not here waits for the fetch, then runs again with the head it
/// came with: once, so keys still missing refuse it.
#[test]
fn a_request_waiting_for_keys_runs_again_once_they_come() {
    let key = es_key();
    for (keys, want) in [(vec![key.public_jwk(Some("es"))], 200), (vec![], 401)] {
        let mut d = remote_jwt();
        let effects = d.on_request_headers(2, Ok(bearer_head()), NOW_MS);
        let (id, context, c) = call(&effects);
        assert_eq!((context, c.cluster.as_str()), (2, "idp"));
        assert_eq!(
            (header(&c, ":method"), header(&c, ":path")),
            ("GET", "/jwks")
        );
        assert!(d.call_started(id, Ok(4), NOW_MS).is_empty());
        assert_eq!(d.expecting(4).map(|e| e.max_body), Some(MAX_JWKS_BYTES));
        let body = json!({ "keys": keys }).to_string();
        let effects = answer(&mut d, 4, 200, &body);
        assert_eq!(told(&effects), [(2, want)], "{effects:?}");
        assert!(
            effects.iter().all(|e| !matches!(e, Effect::Call { .. })),
            "no second fetch"
        );
        assert_eq!(d.calls_in_flight(), 0);
    }
}

#[test]
fn a_fetch_the_host_refuses_refuses_the_token_at_once() {
    let mut d = remote_jwt();
    let (id, _, _) = call(&d.on_request_headers(2, Ok(bearer_head()), NOW_MS));
    let effects = d.call_started(id, Err(()), NOW_MS);
    assert_eq!(told(&effects), [(2, 401)]);
    let counts = d.take_counts();
    assert!(
        counts.contains(&(Counter::JwksFetchFailure, 1)),
        "{counts:?}"
    );
}

/// A request that goes while it waits for keys takes its wait with it; the lease's fetch is
/// the host's to cancel.
#[test]
fn a_request_gone_while_its_keys_come_is_not_run_again() {
    let mut d = remote_jwt();
    let (id, _, _) = call(&d.on_request_headers(2, Ok(bearer_head()), NOW_MS));
    d.call_started(id, Ok(4), NOW_MS);
    d.on_delete(2);
    assert_eq!(d.expecting(4), None);
    assert_eq!(d.calls_in_flight(), 0);
}

#[test]
fn the_tick_refreshes_keys_as_the_root() {
    let mut d = remote_jwt();
    // Nothing is known yet: the first tick takes the lease and fetches.
    let effects = d.on_tick(NOW_MS);
    let (id, context, c) = call(&effects);
    assert_eq!((context, header(&c, ":path")), (ROOT, "/jwks"));
    d.call_started(id, Ok(4), NOW_MS);
    assert_eq!(d.expecting(4).map(|e| e.context), Some(ROOT));
    let body = json!({ "keys": [es_key().public_jwk(Some("es"))] }).to_string();
    let effects = answer(&mut d, 4, 200, &body);
    assert!(told(&effects).is_empty());
    assert!(effects.iter().any(|e| matches!(e, Effect::Log(_))));
    assert!(d.take_counts().contains(&(Counter::JwksFetchSuccess, 1)));
    // Keys known: the next request needs no fetch.
    assert_eq!(
        told(&d.on_request_headers(2, Ok(bearer_head()), NOW_MS)),
        [(2, 200)]
    );
}

fn batched() -> Driver {
    rate_limited(json!({"batch": true}))
}

fn batch_answer(items: &[bool]) -> String {
    let items: Vec<String> = items
        .iter()
        .map(|a| format!(r#"{{"status":200,"body":{}}}"#, check_answer(*a)))
        .collect();
    format!(r#"{{"answers":[{}]}}"#, items.join(","))
}

/// One batch at a time, as the root; the requests that queue meanwhile go together, each
/// resumed with its own item; a request gone while queued is not sent.
#[test]
fn batched_requests_wait_for_the_call_in_flight_then_go_as_one_call() {
    let mut d = batched();
    let effects = d.on_request_headers(2, Ok(keyed()), NOW_MS);
    let (id, context, c) = call(&effects);
    assert_eq!(context, ROOT, "a batch is the root's call");
    assert_eq!(header(&c, ":path"), "/v1/check/batch");
    d.call_started(id, Ok(8), NOW_MS);
    for id in [3, 4, 5] {
        assert!(d.on_request_headers(id, Ok(keyed()), NOW_MS).is_empty());
    }
    d.on_delete(5);
    assert_eq!(
        d.expecting(8),
        Some(Expecting {
            context: ROOT,
            max_body: MAX_BATCH_ANSWER_BYTES
        })
    );
    let effects = answer(&mut d, 8, 200, &batch_answer(&[true]));
    assert_eq!(told(&effects), [(2, 200)]);
    let (id, context, c) = call(&effects);
    assert_eq!(context, ROOT);
    let items = apiguard_limiter_api::batch::BatchRequest::from_json(&c.body).unwrap();
    assert_eq!(items.requests.len(), 2, "request 5 went");
    d.call_started(id, Ok(12), NOW_MS);
    // Request 3 goes while its check is in flight: its item is skipped.
    d.on_delete(3);
    let effects = answer(&mut d, 12, 200, &batch_answer(&[true, false]));
    assert_eq!(told(&effects), [(4, 429)]);
    for id in [2, 4] {
        d.on_delete(id);
    }
    assert_eq!(d.calls_in_flight(), 0);
}

#[test]
fn a_batch_that_fails_fails_each_of_its_requests_closed() {
    let unusable: [(Option<u16>, &str); 4] = [
        (None, ""),
        (Some(503), ""),
        (Some(200), "garbage"),
        // One answer for two requests: neither is trusted.
        (Some(200), &batch_answer(&[true])),
    ];
    for (status, body) in unusable {
        let mut d = batched();
        let (id, _, _) = call(&d.on_request_headers(2, Ok(keyed()), NOW_MS));
        d.call_started(id, Ok(8), NOW_MS);
        d.on_request_headers(3, Ok(keyed()), NOW_MS);
        d.on_request_headers(4, Ok(keyed()), NOW_MS);
        let effects = answer(&mut d, 8, 200, &batch_answer(&[true]));
        let (id, _, _) = call(&effects);
        d.call_started(id, Ok(12), NOW_MS);
        let effects = d.on_call_answer(12, status, body.len(), body.as_bytes(), NOW_MS);
        assert_eq!(told(&effects), [(3, 503), (4, 503)], "{status:?} {body}");
    }
    // The host refuses the batch's call: its requests fail, and the next batch may go.
    let mut d = batched();
    let (id, _, _) = call(&d.on_request_headers(2, Ok(keyed()), NOW_MS));
    assert_eq!(told(&d.call_started(id, Err(()), NOW_MS)), [(2, 503)]);
    let (id, _, _) = call(&d.on_request_headers(3, Ok(keyed()), NOW_MS));
    d.call_started(id, Ok(8), NOW_MS);
    assert_eq!(d.calls_in_flight(), 1);
}

/// Envoy's call counter wraps, and a context that held a token may be gone without an answer
/// (a cancelled call): the answer reaches the context that holds the token now, and nothing
/// stays behind, however many calls are cancelled.
#[test]
fn reused_tokens_reach_their_holder_and_cancelled_calls_leave_nothing() {
    let mut d = rate_limited(json!({}));
    let (id, _, _) = call(&d.on_request_headers(3, Ok(keyed()), NOW_MS));
    d.call_started(id, Ok(4), NOW_MS);
    // The host hands out token 4 again while context 3's call is still open.
    let (id, _, _) = call(&d.on_request_headers(5, Ok(keyed()), NOW_MS));
    let effects = d.call_started(id, Ok(4), NOW_MS);
    assert!(matches!(&effects[..], [Effect::Log(l)] if l.text.contains("reused call token 4")));
    assert_eq!(d.expecting(4).map(|e| e.context), Some(5));
    // Context 3 goes: token 4 is context 5's and stays.
    d.on_delete(3);
    assert_eq!(d.expecting(4).map(|e| e.context), Some(5));
    assert_eq!(told(&answer(&mut d, 4, 500, "")), [(5, 503)]);
    d.on_delete(5);
    // The wrap, simulated with tokens modulo a small ring, every other call cancelled.
    for n in 0u32..20_000 {
        let token = (n % 64) * 4;
        let context = n + 10;
        let (id, _, _) = call(&d.on_request_headers(context, Ok(keyed()), NOW_MS));
        d.call_started(id, Ok(token), NOW_MS);
        if n % 2 == 1 {
            answer(&mut d, token, 200, &check_answer(true));
        }
        d.on_delete(context);
    }
    assert_eq!(d.calls_in_flight(), 0);
}
