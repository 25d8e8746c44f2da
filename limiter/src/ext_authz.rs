//! Envoy's `ext_authz` HTTP service: the call the apiguard filter hands to Envoy with
//! `rate_limit.call: ext_authz` (docs/ratelimit.md, "Calling the limiter through ext_authz").
//!
//! `ext_authz` sends the request's method and its path under [`EXT_AUTHZ_PATH`], and the headers
//! its `allowed_headers` lets through: the plan is in [`HANDOFF_HEADER`], nothing else is read.
//! The answer is in `ext_authz`'s terms:
//!
//! - **200**: the request goes on. The rate-limit headers are for the client
//!   (`allowed_client_headers_on_success`); `x-envoy-auth-headers-to-remove` takes the handoff
//!   header off the request before the upstream sees it.
//! - **429**: over the limit, with `Retry-After`, the rate-limit headers and the same problem
//!   body the filter sends (`allowed_client_headers` passes them to the client).
//! - **5xx**: `ext_authz` reads any 5xx as a failure and answers its own `status_on_error`
//!   (configure 503) unless `failure_mode_allow`. A store failure under a plan whose failure mode
//!   is `allow` is a 200 instead, without rate-limit headers, as in the filter.

use std::sync::Arc;
use std::time::Instant;

pub use apiguard_limiter_api::handoff::EXT_AUTHZ_PATH;
use apiguard_limiter_api::handoff::{
    rate_limit_headers, retry_after_ms, retry_after_s, too_many_requests_body, Handed, Handoff,
    HANDOFF_HEADER,
};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use tracing::warn;

use crate::problem::ProblemDetails;
use crate::state::AppState;
use crate::store::Store;

/// Tells `ext_authz` which request headers to remove before the upstream (on a 200 only).
const HEADERS_TO_REMOVE: &str = "x-envoy-auth-headers-to-remove";

/// One `ext_authz` check: any method, any path under [`EXT_AUTHZ_PATH`].
pub async fn check<S: Store>(State(st): State<Arc<AppState<S>>>, headers: HeaderMap) -> Response {
    let started = Instant::now();
    let plan = match Handoff::decode(headers.get(HANDOFF_HEADER).map(HeaderValue::as_bytes)) {
        Ok(Handed::Unlimited) => {
            st.metrics.handoff("unlimited");
            return go_on(Vec::new());
        }
        Ok(Handed::Plan(p)) => p,
        Err(e) => {
            // A 5xx: ext_authz fails closed (status_on_error), never "allowed".
            warn!("ext_authz check refused: {e}");
            st.metrics.bad_request();
            st.metrics.handoff("bad_handoff");
            return ProblemDetails::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
                .into_response();
        }
    };
    let now_ms = crate::store::unix_ms();
    let d = match st.decide(&plan.checks, started).await {
        Ok(d) => d,
        Err(why) if plan.deny_on_failure && !plan.shadow => {
            st.metrics.handoff("failure_deny");
            return why.into_response();
        }
        Err(_) => {
            st.metrics.handoff("failure_mode_pass");
            return go_on(Vec::new());
        }
    };
    let headers = |limited| {
        rate_limit_headers(
            &plan.scope,
            &plan.checks,
            &d.results,
            plan.headers,
            limited,
            now_ms,
        )
    };
    if d.allowed {
        st.metrics.handoff("allowed");
        return go_on(headers(false));
    }
    if plan.shadow {
        st.metrics.handoff("shadow_limited");
        return go_on(Vec::new());
    }
    st.metrics.handoff("limited");
    let retry = retry_after_s(retry_after_ms(&d.results)).to_string();
    let mut res = (StatusCode::TOO_MANY_REQUESTS, too_many_requests_body()).into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    put(h, "retry-after", &retry);
    for (n, v) in headers(true) {
        put(h, &n, &v);
    }
    res
}

/// 200: the request goes on with these headers for the client, without the handoff header.
fn go_on(for_client: Vec<(String, String)>) -> Response {
    let mut res = StatusCode::OK.into_response();
    let h = res.headers_mut();
    h.insert(HEADERS_TO_REMOVE, HeaderValue::from_static(HANDOFF_HEADER));
    for (n, v) in for_client {
        put(h, &n, &v);
    }
    res
}

/// Rate-limit header names and values are ASCII built from numbers and the plan's scope, which
/// the filter's configuration limits to header-safe text; anything else is left out, not sent.
fn put(h: &mut HeaderMap, name: &str, value: &str) {
    if let (Ok(n), Ok(v)) = (
        HeaderName::from_bytes(name.as_bytes()),
        HeaderValue::from_str(value),
    ) {
        h.insert(n, v);
    }
}
