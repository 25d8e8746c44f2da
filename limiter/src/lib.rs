//! apiguard-limiter: the companion service the apiguard filter calls for rate-limit decisions.
//!
//! The router is built by [`app`] so tests drive it without a socket; `main.rs` only parses
//! flags, picks the store, binds and serves with graceful shutdown.
//!
//! Routes: `POST /v1/check` (the wire types are in [`apiguard_limiter_api`]), Envoy's
//! `ext_authz` HTTP service under `/v1/ext_authz` ([`ext_authz`]), Envoy's
//! rate-limit service over gRPC (`/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit`,
//! [`rls`]), `GET /healthz` (alive), `GET /readyz` (store reachable), `GET /metrics`
//! (Prometheus text).
#![forbid(unsafe_code)]

pub mod ext_authz;
pub mod metrics;
pub mod probe;
pub mod rls;
pub mod serve;
pub mod store;
pub mod tls;

use std::sync::Arc;
use std::time::{Duration, Instant};

use apiguard_limiter_api::{CheckRequest, CheckResponse, CHECK_PATH, MAX_BODY_BYTES};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use serde_json::json;
use tracing::warn;

pub use metrics::Metrics;
pub use store::{MemoryStore, RedisStore, RedisTarget, RedisTls, Store};

/// Shared by every request.
pub struct AppState<S> {
    pub store: S,
    pub metrics: Metrics,
    /// Deadline for one store call; past it the answer is 503, never "allowed".
    pub store_timeout: Duration,
    /// The descriptor limits of Envoy's rate-limit service protocol (empty: every domain is
    /// unknown).
    pub descriptors: rls::Descriptors,
}

impl<S: Store> AppState<S> {
    /// One store call within the store deadline, counted in the metrics (from `started`, when
    /// the request arrived) and logged on failure. Both protocols decide through it. `Err` is
    /// what to tell the caller: never "allowed".
    pub async fn decide(
        &self,
        checks: &[apiguard_limiter_api::Check],
        started: Instant,
    ) -> Result<store::Decision, &'static str> {
        let decided = tokio::time::timeout(self.store_timeout, self.store.check(checks)).await;
        self.metrics.observe(started.elapsed());
        match decided {
            Ok(Ok(d)) => {
                self.metrics.decided(d.allowed);
                Ok(d)
            }
            Ok(Err(e)) => {
                warn!(kind = e.kind(), "store error: {e}");
                self.metrics.store_error(e.kind());
                Err("rate-limit store error")
            }
            Err(_) => {
                warn!(
                    timeout_ms = self.store_timeout.as_millis() as u64,
                    "store timed out"
                );
                self.metrics.store_error("timeout");
                Err("rate-limit store did not answer in time")
            }
        }
    }
}

/// The service's routes over a store.
pub fn app<S: Store>(state: Arc<AppState<S>>) -> Router {
    // Only the rate-limit service's own paths: tonic's router would also answer every unknown
    // path with a gRPC "unimplemented" 200.
    let grpc =
        Router::new().route_service(rls::service::ROUTE, rls::service::server(state.clone()));
    Router::new()
        .route(CHECK_PATH, post(check::<S>))
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

async fn check<S: Store>(
    State(st): State<Arc<AppState<S>>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    let body = match body {
        Ok(b) => b,
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            st.metrics.bad_request();
            return problem(
                StatusCode::BAD_REQUEST,
                &format!("request body is over {MAX_BODY_BYTES} bytes"),
            );
        }
        Err(e) => {
            st.metrics.bad_request();
            return problem(StatusCode::BAD_REQUEST, &e.body_text());
        }
    };
    let req = match CheckRequest::from_json(&body) {
        Ok(r) => r,
        Err(e) => {
            st.metrics.bad_request();
            return problem(StatusCode::BAD_REQUEST, &e.to_string());
        }
    };
    match st.decide(&req.checks, started).await {
        Ok(d) => Json(CheckResponse {
            allowed: d.allowed,
            results: d.results,
        })
        .into_response(),
        Err(why) => unavailable(why),
    }
}

/// Liveness: the process serves HTTP. Says nothing about the store.
async fn healthz() -> &'static str {
    "ok\n"
}

/// Readiness: the store answers a ping within the store deadline.
async fn readyz<S: Store>(State(st): State<Arc<AppState<S>>>) -> Response {
    match tokio::time::timeout(st.store_timeout, st.store.ping()).await {
        Ok(Ok(())) => (StatusCode::OK, "ready\n").into_response(),
        Ok(Err(e)) => unavailable(&format!("store {} unreachable: {e}", st.store.describe())),
        Err(_) => unavailable(&format!(
            "store {} did not answer in time",
            st.store.describe()
        )),
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

/// An RFC 9457 problem document.
pub fn problem(status: StatusCode, detail: &str) -> Response {
    let body = json!({
        "type": "about:blank",
        "title": status.canonical_reason().unwrap_or("Error"),
        "status": status.as_u16(),
        "detail": detail,
    });
    let mut res = (status, Json(body)).into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    res
}

/// 503 with `Retry-After: 1`: the caller applies its failure mode.
fn unavailable(detail: &str) -> Response {
    let mut res = problem(StatusCode::SERVICE_UNAVAILABLE, detail);
    res.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    res
}
