//! Limitador behind `POST /v1/check`, for the `peers` suite of `just bench` only.
//!
//! `apiguard-bench-limitador --listen 127.0.0.1:PORT --redis redis://… --limit N --window-s S`
//! registers one limit (namespace `apiguard`, `N` per `S` seconds, counted per `key`, with an id
//! so Limitador uses its compact binary keys) and answers calls with apiguard-limiter's request
//! and response types, each decided by Limitador's `check_rate_limited_and_update` on its
//! `AsyncRedisStorage`. Limitador counts fixed windows; `algorithm` is not read.
//!
//! Only what the suite sends is served, so it cannot measure a limit Limitador did not apply:
//! exactly one check, with the registered limit and window (else 400), and an answer only when
//! Limitador counted that check (else 500).

use std::collections::HashMap;
use std::sync::Arc;

use apiguard_limiter_api::{CheckRequest, CheckResponse, CheckResult};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use limitador::limit::{Context, Expression, Limit, Namespace};
use limitador::storage::redis::AsyncRedisStorage;
use limitador::AsyncRateLimiter;

const NAMESPACE: &str = "apiguard";

struct Harness {
    limiter: AsyncRateLimiter,
    namespace: Namespace,
    limit: u64,
    window_ms: u64,
}

fn app(harness: Arc<Harness>) -> Router {
    Router::new()
        .route("/v1/check", post(check))
        // As apiguard-limiter's: the suite's harness waits for it.
        .route("/healthz", get(|| async { "ok" }))
        .with_state(harness)
}

async fn check(State(h): State<Arc<Harness>>, body: Bytes) -> Response {
    let request = match CheckRequest::from_json(&body) {
        Ok(r) => r,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    let [check] = request.checks.as_slice() else {
        return (StatusCode::BAD_REQUEST, "exactly one check per call").into_response();
    };
    if check.limit != h.limit || check.window_ms != h.window_ms {
        return (StatusCode::BAD_REQUEST, "not the registered limit").into_response();
    }
    let ctx = Context::from(HashMap::from([("key".to_owned(), check.key.clone())]));
    let result = match h
        .limiter
        .check_rate_limited_and_update(&h.namespace, &ctx, check.cost)
        .await
    {
        Ok(r) => r,
        Err(e) => return (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
    };
    let Some(counter) = result.counters.first() else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "no limit applied").into_response();
    };
    let reset_ms = counter.expires_in().map_or(h.window_ms, |d| {
        u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
    });
    let response = CheckResponse {
        allowed: !result.limited,
        results: vec![CheckResult {
            key: check.key.clone(),
            limit: check.limit,
            remaining: counter.remaining().unwrap_or(0),
            reset_ms,
            retry_after_ms: if result.limited { reset_ms } else { 0 },
        }],
    };
    Json(response).into_response()
}

fn arg(args: &[String], name: &str) -> Result<String, String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
        .ok_or_else(|| format!("missing {name} <value>"))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let listen = arg(&args, "--listen")?;
    let redis = arg(&args, "--redis")?;
    let limit: u64 = arg(&args, "--limit")?.parse()?;
    let window_s: u64 = arg(&args, "--window-s")?.parse()?;
    let storage = AsyncRedisStorage::new(&redis).await?;
    let limiter = AsyncRateLimiter::new_with_storage(Box::new(storage));
    limiter.add_limit(Limit::with_id(
        "apiguard-bench",
        NAMESPACE,
        limit,
        window_s,
        [],
        [Expression::parse("key")?],
    ));
    let harness = Arc::new(Harness {
        limiter,
        namespace: Namespace::from(NAMESPACE),
        limit,
        window_ms: window_s * 1000,
    });
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    println!("listening on {}", listener.local_addr()?);
    axum::serve(listener, app(harness)).await?;
    Ok(())
}
