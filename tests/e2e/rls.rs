//! Envoy's own `ratelimit` filter against apiguard-limiter's rate-limit service (gRPC
//! `ShouldRateLimit`) and a real Redis: descriptors from the route's actions, exact admission
//! under concurrency, the 429 and the headers Envoy adds, and Redis down (docs/ratelimit.md).

use std::net::SocketAddr;

use apiguard_e2e::load::drive_with;
use apiguard_e2e::{Echo, Envoy, EnvoySpec, Limiter, Redis};
use serde_json::json;

use crate::expect_stat;

const DESCRIPTORS: &str = r#"
domain: edge
descriptors:
  - key: generic_key
    value: api
    descriptors:
      - key: user
        rate_limit: {unit: minute, requests_per_unit: 20, name: per-user}
"#;

/// Envoy with the native `ratelimit` filter (failure mode deny, draft-03 `X-RateLimit-*`
/// headers) asking the limiter for every request; the route makes the descriptor
/// `(generic_key=api, user=<x-user>)`.
async fn envoy(limiter: SocketAddr) -> (Echo, Envoy) {
    let echo = Echo::start().await.unwrap();
    let spec = EnvoySpec::new(echo.addr)
        .with_grpc_cluster("ratelimit", limiter)
        .with_native_filter(json!({
            "name": "envoy.filters.http.ratelimit",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimit",
                "domain": "edge",
                "failure_mode_deny": true,
                "timeout": "1s",
                "enable_x_ratelimit_headers": "DRAFT_VERSION_03",
                "rate_limit_service": {
                    "grpc_service": {"envoy_grpc": {"cluster_name": "ratelimit"}},
                    "transport_api_version": "V3"
                }
            }
        }))
        .with_route_rate_limit(json!({"actions": [
            {"generic_key": {"descriptor_value": "api"}},
            {"request_headers": {"header_name": "x-user", "descriptor_key": "user"}}
        ]}));
    (echo, Envoy::start(&spec).await.unwrap())
}

async fn limiter(redis: &Redis, dir: &std::path::Path) -> Limiter {
    let file = dir.join("descriptors.yaml");
    std::fs::write(&file, DESCRIPTORS).unwrap();
    Limiter::start(&[
        "--redis".into(),
        redis.url(),
        "--rls-config".into(),
        file.display().to_string(),
    ])
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn envoys_ratelimit_filter_gets_exact_windows_from_the_limiter() {
    let dir = tempfile::tempdir().unwrap();
    let redis = Redis::start().unwrap();
    let limiter = limiter(&redis, dir.path()).await;
    let (echo, envoy) = envoy(limiter.addr).await;

    // 60 requests of one user over 12 connections at once: exactly 20 reach the upstream.
    let url = envoy.url("/orders");
    let report = drive_with(60, 12, move |c| c.get(&url).header("x-user", "alice")).await;
    assert_eq!(report.ok, 20, "{:?}", report.statuses);
    assert_eq!(
        report.statuses.get(&429),
        Some(&40),
        "{:?}",
        report.statuses
    );
    assert_eq!(report.errors, 0);
    assert_eq!(echo.count(), 20);

    // The 429 carries what Envoy adds (x-envoy-ratelimited, draft-03 X-RateLimit-*) and the
    // limiter's Retry-After.
    let http = apiguard_e2e::client();
    // GET /orders as `user` (no `x-user` header when `None`).
    let orders = |user: Option<&str>| {
        let mut req = http.get(envoy.url("/orders"));
        if let Some(u) = user {
            req = req.header("x-user", u);
        }
        req.send()
    };
    let res = orders(Some("alice")).await.unwrap();
    assert_eq!(res.status().as_u16(), 429);
    let h = res.headers();
    let get = |n: &str| h.get(n).and_then(|v| v.to_str().ok()).map(str::to_owned);
    assert_eq!(get("x-envoy-ratelimited").as_deref(), Some("true"), "{h:?}");
    assert_eq!(
        get("x-ratelimit-limit").as_deref(),
        Some("20, 20;w=60;name=\"per-user\""),
        "{h:?}"
    );
    assert_eq!(get("x-ratelimit-remaining").as_deref(), Some("0"), "{h:?}");
    let retry: u64 = get("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{h:?}");

    // Another user has a window of their own; the headers come with the allowed answer too.
    let res = orders(Some("bob")).await.unwrap();
    assert_eq!(res.status().as_u16(), 200);
    assert_eq!(
        res.headers()
            .get("x-ratelimit-remaining")
            .and_then(|v| v.to_str().ok()),
        Some("19")
    );
    // No `x-user`: the route makes no descriptor, nothing is counted.
    let res = orders(None).await.unwrap();
    assert_eq!(res.status().as_u16(), 200);
    assert!(res.headers().get("x-ratelimit-limit").is_none());
    // Exactly the 40 refused at once and the one above: nothing else was over the limit.
    assert_eq!(
        envoy
            .wait_stat("cluster.upstream.ratelimit.over_limit", 41)
            .await,
        41,
        "{}",
        envoy.stats_text("ratelimit").await
    );

    // Redis down: the limiter answers UNAVAILABLE, never OK, and Envoy (failure_mode_deny)
    // refuses the request instead of passing it on.
    let before = echo.count();
    drop(redis);
    let res = orders(Some("carol")).await.unwrap();
    assert_eq!(res.status().as_u16(), 500);
    assert_eq!(echo.count(), before);
    expect_stat(&envoy, "cluster.upstream.ratelimit.error", 1).await;
    let log = limiter.proc.log();
    assert!(
        log.contains("store error") || log.contains("store timed out"),
        "{log}"
    );
}

/// Issue 27, low 6: descriptors made from request headers, one limited node each. A request
/// that reached more than 16 limited nodes was INVALID_ARGUMENT, which Envoy's ratelimit filter
/// lets through under its default (`failure_mode_deny: false`, kept here): adding headers
/// escaped every limit. It is OVER_LIMIT now, and the request gets 429.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn adding_descriptors_escapes_no_limit() {
    let dir = tempfile::tempdir().unwrap();
    let redis = Redis::start().unwrap();
    let file = dir.path().join("descriptors.yaml");
    std::fs::write(
        &file,
        "domain: edge\ndescriptors:\n  - key: user\n    rate_limit: {unit: minute, requests_per_unit: 1}\n",
    )
    .unwrap();
    let limiter = Limiter::start(&[
        "--redis".into(),
        redis.url(),
        "--rls-config".into(),
        file.display().to_string(),
    ])
    .await
    .unwrap();
    let echo = Echo::start().await.unwrap();
    let mut spec = EnvoySpec::new(echo.addr)
        .with_grpc_cluster("ratelimit", limiter.addr)
        .with_native_filter(json!({
            "name": "envoy.filters.http.ratelimit",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimit",
                "domain": "edge",
                "timeout": "1s",
                "rate_limit_service": {
                    "grpc_service": {"envoy_grpc": {"cluster_name": "ratelimit"}},
                    "transport_api_version": "V3"
                }
            }
        }));
    // One descriptor (user=<value>) per `x-user-<i>` header present.
    for i in 0..17 {
        spec = spec.with_route_rate_limit(json!({"actions": [
            {"request_headers": {"header_name": format!("x-user-{i}"), "descriptor_key": "user"}}
        ]}));
    }
    let envoy = Envoy::start(&spec).await.unwrap();
    let http = apiguard_e2e::client();
    let get = |extra: usize| {
        let mut req = http.get(envoy.url("/orders")).header("x-user-0", "mallory");
        for i in 1..=extra {
            req = req.header(format!("x-user-{i}"), format!("extra-{i}"));
        }
        req.send()
    };
    assert_eq!(get(0).await.unwrap().status().as_u16(), 200);
    assert_eq!(get(0).await.unwrap().status().as_u16(), 429);
    // 16 limited descriptors are one call, over the limit as before.
    assert_eq!(get(15).await.unwrap().status().as_u16(), 429);
    // A 17th is one too many for a call: over the limit, never an error passed through.
    let res = get(16).await.unwrap();
    assert_eq!(
        res.status().as_u16(),
        429,
        "17 descriptors escaped the limit; limiter log:\n{}",
        limiter.proc.log()
    );
    assert_eq!(echo.count(), 1);
    assert_eq!(
        envoy
            .wait_stat("cluster.upstream.ratelimit.over_limit", 3)
            .await,
        3,
        "{}",
        envoy.stats_text("ratelimit").await
    );
}
