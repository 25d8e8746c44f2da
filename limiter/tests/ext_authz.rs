//! Envoy's `ext_authz` HTTP service (`/v1/ext_authz`), driven through the router without a
//! socket: the plan in the handoff header, the answers in `ext_authz`'s terms, and a missing or
//! forged plan never allowed. The same behaviour through real Envoy is in the e2e suite
//! (`ratelimit::*::ext_authz`).

// Test code: helpers outside `#[test]` functions may panic too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use apiguard_e2e::Redis;
use apiguard_limiter::{app, AppState, MemoryStore, Metrics, RedisStore, RedisTarget, Store};
use apiguard_limiter_api::handoff::{too_many_requests_body, Handoff, HeaderMode, HANDOFF_HEADER};
use apiguard_limiter_api::{Check, LimitAlgorithm};
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use tower::ServiceExt;

fn router<S: Store>(store: S) -> Router {
    app(Arc::new(AppState {
        store,
        metrics: Metrics::new(),
        store_timeout: Duration::from_millis(200),
        descriptors: Default::default(),
    }))
}

fn plan(key: &str, limit: u64) -> Handoff {
    Handoff {
        scope: "tier:standard".into(),
        checks: vec![Check {
            key: format!("{{p/sub:{key}}}:tier:standard"),
            limit,
            window_ms: 60_000,
            cost: 1,
            algorithm: LimitAlgorithm::Log,
        }],
        headers: HeaderMode::Both,
        deny_on_failure: true,
        shadow: false,
    }
}

/// What `ext_authz` sends: the request's method, its path under the prefix, the handoff header.
async fn ask(
    app: &Router,
    method: &str,
    path: &str,
    handoff: Option<&str>,
) -> (StatusCode, HeaderMap, Vec<u8>) {
    let mut req = Request::builder()
        .method(method)
        .uri(format!("/v1/ext_authz{path}"))
        .header("authorization", "Bearer whatever");
    if let Some(h) = handoff {
        req = req.header(HANDOFF_HEADER, h);
    }
    let res = app
        .clone()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let (parts, body) = res.into_parts();
    let body = body.collect().await.unwrap().to_bytes().to_vec();
    (parts.status, parts.headers, body)
}

fn h<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers.get(name).map(|v| v.to_str().unwrap()).unwrap_or("")
}

async fn metric(app: &Router, answer: &str) -> u64 {
    let res = app
        .clone()
        .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
        .await
        .unwrap();
    let text =
        String::from_utf8(res.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
    let line = format!("apiguard_limiter_ext_authz_checks_total{{answer=\"{answer}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&line))
        .map_or(0, |v| v.parse().unwrap())
}

#[tokio::test]
async fn the_plan_is_decided_and_answered_in_ext_authz_terms() {
    let app = router(MemoryStore::new());
    let p = plan("alice", 2).encode();
    for (i, (method, path)) in [("GET", "/api/x"), ("DELETE", "/a/b?c=d")]
        .iter()
        .enumerate()
    {
        let (status, headers, body) = ask(&app, method, path, Some(&p)).await;
        assert_eq!(status, StatusCode::OK, "{headers:?}");
        assert!(body.is_empty());
        assert_eq!(
            h(&headers, "x-envoy-auth-headers-to-remove"),
            HANDOFF_HEADER
        );
        assert_eq!(h(&headers, "x-ratelimit-limit"), "2");
        assert_eq!(h(&headers, "x-ratelimit-remaining"), (1 - i).to_string());
        assert_eq!(
            h(&headers, "ratelimit-policy"),
            r#""tier-standard-60s";q=2;w=60"#
        );
    }
    let (status, headers, body) = ask(&app, "POST", "/api/x", Some(&p)).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(body, too_many_requests_body());
    assert_eq!(h(&headers, "content-type"), "application/problem+json");
    let retry: u64 = h(&headers, "retry-after").parse().unwrap();
    assert!((1..=60).contains(&retry), "{headers:?}");
    assert_eq!(h(&headers, "x-ratelimit-remaining"), "0");
    assert!(h(&headers, "ratelimit").contains(";r=0;t="), "{headers:?}");
    // Not on a denial: the request never goes upstream.
    assert!(!headers.contains_key("x-envoy-auth-headers-to-remove"));
    assert_eq!(metric(&app, "allowed").await, 2);
    assert_eq!(metric(&app, "limited").await, 1);
}

#[tokio::test]
async fn a_shadow_plan_counts_and_never_blocks_and_none_is_unlimited() {
    let app = router(MemoryStore::new());
    let mut shadow = plan("shadowed", 1);
    shadow.shadow = true;
    let shadow = shadow.encode();
    for _ in 0..3 {
        assert_eq!(ask(&app, "GET", "/", Some(&shadow)).await.0, StatusCode::OK);
    }
    assert_eq!(metric(&app, "shadow_limited").await, 2);
    let (status, headers, _) = ask(&app, "GET", "", Some("none")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(!headers.contains_key("x-ratelimit-limit"));
    assert_eq!(metric(&app, "unlimited").await, 1);
}

/// Anything but a plan the filter made is a 5xx, which `ext_authz` answers as a failure
/// (`status_on_error`): a request is never let through on a header that says nothing.
#[tokio::test]
async fn a_missing_or_forged_plan_is_never_allowed() {
    let app = router(MemoryStore::new());
    let mut zero = plan("z", 1);
    zero.checks[0].limit = 0;
    let zero = zero.encode();
    for bad in [None, Some("x y"), Some("eyJ4IjoxfQ"), Some(zero.as_str())] {
        let (status, headers, _) = ask(&app, "GET", "/api", bad).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{bad:?}");
        assert!(!headers.contains_key("x-envoy-auth-headers-to-remove"));
    }
    assert_eq!(metric(&app, "bad_handoff").await, 4);
}

/// Redis down: a plan that fails closed gets a 5xx; one whose failure mode is `allow` (or a
/// shadow plan) goes on without rate-limit headers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_down_follows_the_plans_failure_mode() {
    let redis = Redis::start().unwrap();
    let url = redis.url();
    drop(redis);
    let app = router(RedisStore::new(
        RedisTarget::Single(url),
        Duration::from_millis(200),
    ));
    let deny = plan("d", 5);
    let (status, headers, _) = ask(&app, "GET", "/", Some(&deny.encode())).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(h(&headers, "retry-after"), "1");
    let mut allow = plan("a", 5);
    allow.deny_on_failure = false;
    let (status, headers, _) = ask(&app, "GET", "/", Some(&allow.encode())).await;
    assert_eq!(status, StatusCode::OK);
    assert!(!headers.contains_key("x-ratelimit-limit"));
    let mut shadow = deny.clone();
    shadow.shadow = true;
    assert_eq!(
        ask(&app, "GET", "/", Some(&shadow.encode())).await.0,
        StatusCode::OK
    );
    assert_eq!(metric(&app, "failure_deny").await, 1);
    assert_eq!(metric(&app, "failure_mode_pass").await, 2);
}
