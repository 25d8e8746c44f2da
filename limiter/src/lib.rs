//! apiguard-limiter: the companion service the apiguard filter calls for rate-limit decisions.
//!
//! The router is built by [`app`] so tests drive it without a socket; `main.rs` only parses
//! flags, picks the store, binds and serves with graceful shutdown.
//!
//! Routes: `POST /v1/check` (the wire types are in [`apiguard_limiter_api`]), `POST
//! /v1/check/batch` (several requests' checks, each decided as by `/v1/check`), Envoy's
//! `ext_authz` HTTP service under `/v1/ext_authz` ([`ext_authz`]), Envoy's
//! rate-limit service over gRPC (`/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit`,
//! [`rls`]), `GET /healthz` (alive), `GET /readyz` (store reachable), `GET /metrics`
//! (Prometheus text).
#![forbid(unsafe_code)]

pub mod ext_authz;
pub mod metrics;
pub mod probe;
mod problem;
pub mod rls;
pub mod serve;
mod state;
pub mod store;
pub mod tls;

use std::sync::Arc;
use std::time::Instant;

use apiguard_limiter_api::batch::{
    Answer, BatchRequest, BatchResponse, BATCH_PATH, MAX_BATCH_BODY_BYTES,
};
use apiguard_limiter_api::{CheckRequest, CheckResponse, CHECK_PATH, MAX_BODY_BYTES};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use serde_json::value::RawValue;

pub use metrics::Metrics;
pub use problem::ProblemDetails;
pub use state::AppState;
pub use store::{MemoryStore, RedisStore, RedisTarget, RedisTls, Store};

/// The service's routes over a store.
pub fn app<S: Store>(state: Arc<AppState<S>>) -> Router {
    // Only the rate-limit service's own paths: tonic's router would also answer every unknown
    // path with a gRPC "unimplemented" 200.
    let grpc =
        Router::new().route_service(rls::service::ROUTE, rls::service::server(state.clone()));
    Router::new()
        .route(CHECK_PATH, post(check::<S>))
        // Its own body limit: up to MAX_BATCH items of the single route's limit.
        .route(
            BATCH_PATH,
            post(check_batch::<S>).layer(DefaultBodyLimit::max(MAX_BATCH_BODY_BYTES)),
        )
        .route(ext_authz::EXT_AUTHZ_PATH, any(ext_authz::check::<S>))
        // `ext_authz` appends the request's path: `/` gives the prefix and a slash, which the
        // wildcard below does not match (it needs a segment).
        .route(
            &format!("{}/", ext_authz::EXT_AUTHZ_PATH),
            any(ext_authz::check::<S>),
        )
        .route(
            &format!("{}/{{*path}}", ext_authz::EXT_AUTHZ_PATH),
            any(ext_authz::check::<S>),
        )
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz::<S>))
        .route("/metrics", get(metrics::<S>))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
        .merge(grpc)
}

/// `POST /v1/check`: a batch of one, answered as itself.
async fn check<S: Store>(
    State(st): State<Arc<AppState<S>>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    let decided = match read_body(&st.metrics, body, MAX_BODY_BYTES) {
        Ok(body) => decide_one(&st, &body, started).await,
        Err(p) => Err(p),
    };
    match decided {
        Ok(answer) => Json(answer).into_response(),
        Err(p) => p.into_response(),
    }
}

/// The request body; for a body over `max` bytes (the route's limit) or one that cannot be
/// read, a 400, counted as a bad request.
fn read_body(
    metrics: &Metrics,
    body: Result<Bytes, BytesRejection>,
    max: usize,
) -> Result<Bytes, ProblemDetails> {
    body.map_err(|e| {
        metrics.bad_request();
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ProblemDetails::bad_request(format!("request body is over {max} bytes"))
        } else {
            ProblemDetails::bad_request(e.body_text())
        }
    })
}

/// `POST /v1/check/batch`: each item decided as by `POST /v1/check`, side by side, and answered
/// with that route's status and body, in order (the contract: `apiguard_limiter_api::batch`).
async fn check_batch<S: Store>(
    State(st): State<Arc<AppState<S>>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    let body = match read_body(&st.metrics, body, MAX_BATCH_BODY_BYTES) {
        Ok(b) => b,
        Err(p) => return p.into_response(),
    };
    let batch = match BatchRequest::from_json(&body) {
        Ok(b) => b,
        Err(e) => {
            st.metrics.bad_request();
            return ProblemDetails::bad_request(e.to_string()).into_response();
        }
    };
    st.metrics.batch(batch.requests.len());
    let decided = futures::future::join_all(
        batch
            .requests
            .iter()
            .map(|item| decide_one(&st, item.get().as_bytes(), started)),
    )
    .await;
    // Each item as `POST /v1/check` answers it: its status and JSON body.
    let answers: Result<Vec<(u16, Box<RawValue>)>, serde_json::Error> = decided
        .into_iter()
        .map(|d| {
            let (status, json) = match d {
                Ok(answer) => (200, serde_json::to_string(&answer)?),
                Err(p) => (p.status.as_u16(), p.body()),
            };
            Ok((status, RawValue::from_string(json)?))
        })
        .collect();
    let Ok(answers) = answers else {
        // Never: every body is serialized JSON.
        return ProblemDetails::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "cannot encode the answers",
        )
        .into_response();
    };
    Json(BatchResponse {
        answers: answers
            .iter()
            .map(|(status, body)| Answer {
                status: *status,
                body,
            })
            .collect(),
    })
    .into_response()
}

/// One check request's body, decided: what `POST /v1/check` answers, a batch item included.
async fn decide_one<S: Store>(
    st: &AppState<S>,
    body: &[u8],
    started: Instant,
) -> Result<CheckResponse, ProblemDetails> {
    let req = CheckRequest::from_json(body).map_err(|e| {
        st.metrics.bad_request();
        ProblemDetails::bad_request(e.to_string())
    })?;
    let d = st.decide(&req.checks, started).await?;
    Ok(CheckResponse {
        allowed: d.allowed,
        results: d.results,
    })
}

/// Liveness: the process serves HTTP. Says nothing about the store.
async fn healthz() -> &'static str {
    "ok\n"
}

/// Readiness: the store answers a ping within the store deadline.
async fn readyz<S: Store>(State(st): State<Arc<AppState<S>>>) -> Response {
    match tokio::time::timeout(st.store_timeout, st.store.ping()).await {
        Ok(Ok(())) => (StatusCode::OK, "ready\n").into_response(),
        Ok(Err(e)) => {
            ProblemDetails::unavailable(format!("store {} unreachable: {e}", st.store.describe()))
                .into_response()
        }
        Err(_) => ProblemDetails::unavailable(format!(
            "store {} did not answer in time",
            st.store.describe()
        ))
        .into_response(),
    }
}

async fn metrics<S: Store>(State(st): State<Arc<AppState<S>>>) -> Response {
    match st.metrics.encode() {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}
