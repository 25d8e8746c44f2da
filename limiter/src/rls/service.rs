//! `ShouldRateLimit` over gRPC (tonic; the message types are Envoy's published protos, from the
//! `envoy-types` crate). Served on the limiter's own listener and transport (plain HTTP/2 or
//! mutual TLS with ALPN `h2`), with the same store, deadline and metrics as `POST /v1/check`.
//!
//! Contract (docs/ratelimit.md): one call is one atomic store call; OVER_LIMIT consumes
//! nothing; a store error or deadline is the gRPC status UNAVAILABLE, never OK, so Envoy's
//! `failure_mode_deny` decides; an unknown domain is FAILED_PRECONDITION and negative hits
//! INVALID_ARGUMENT. What a request can choose (its hits, how many limited descriptors it
//! makes) is never an error, which Envoy's default would let through: a call the limiter cannot
//! count for that reason is OVER_LIMIT, charging nothing.

use std::sync::Arc;
use std::time::Instant;

use envoy_types::pb::envoy::config::core::v3::HeaderValue;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::{
    Code, DescriptorStatus, RateLimit,
};
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_server::{
    RateLimitService, RateLimitServiceServer,
};
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use envoy_types::pb::google::protobuf::Duration as ProtoDuration;
use tonic::{Request, Response, Status};
use tracing::warn;

use super::{Descriptor, Plan};
use crate::state::AppState;
use crate::store::Store;

/// The service's routes: `/envoy.service.ratelimit.v3.RateLimitService/<method>`.
pub const ROUTE: &str = "/envoy.service.ratelimit.v3.RateLimitService/{*method}";

/// The gRPC service over the shared state.
pub struct Rls<S> {
    state: Arc<AppState<S>>,
}

/// The tonic server for [`Rls`], ready to be routed (see [`crate::app`]).
pub fn server<S: Store>(state: Arc<AppState<S>>) -> RateLimitServiceServer<Rls<S>> {
    RateLimitServiceServer::new(Rls { state })
        .max_decoding_message_size(apiguard_limiter_api::MAX_BODY_BYTES)
}

#[tonic::async_trait]
impl<S: Store> RateLimitService for Rls<S> {
    async fn should_rate_limit(
        &self,
        request: Request<RateLimitRequest>,
    ) -> Result<Response<RateLimitResponse>, Status> {
        let st = &self.state;
        let started = Instant::now();
        let req = request.into_inner();
        let descriptors = match descriptors(&req) {
            Ok(d) => d,
            Err(e) => {
                st.metrics.bad_request();
                return Err(e);
            }
        };
        let plan = match st
            .descriptors
            .plan(&req.domain, &descriptors, u64::from(req.hits_addend))
        {
            Ok(p) => p,
            Err(e @ super::DescriptorError::UnknownDomain(_)) => {
                st.metrics.bad_request();
                return Err(Status::failed_precondition(e.to_string()));
            }
            Err(super::DescriptorError::TooManyHits(i, hits, rule)) => {
                // More than one call may count can never be admitted: over the limit, nothing
                // charged (an error would let the request through under Envoy's default).
                warn!(
                    descriptor = i,
                    hits, "hits over the largest cost: over the limit"
                );
                st.metrics.decided(false);
                return Ok(Response::new(never_fits(req.descriptors.len(), i, &rule)));
            }
            Err(super::DescriptorError::TooManyLimits(i, rule)) => {
                // Descriptors can come from the request (a header each): more of them than one
                // call checks must not escape the limits, so over the limit, nothing charged.
                warn!(
                    descriptor = i,
                    "more limited descriptors than one call checks: over the limit"
                );
                st.metrics.decided(false);
                return Ok(Response::new(never_fits(req.descriptors.len(), i, &rule)));
            }
            Err(e) => {
                st.metrics.bad_request();
                return Err(Status::invalid_argument(e.to_string()));
            }
        };
        if plan.checks.is_empty() {
            // No descriptor has a limit: nothing to count.
            return Ok(Response::new(answer(&plan, None)));
        }
        match st.decide(&plan.checks, started).await {
            Ok(d) => Ok(Response::new(answer(&plan, Some(&d)))),
            Err(why) => Err(Status::unavailable(why.detail)),
        }
    }
}

/// The request's descriptors; refuses what the limiter cannot count.
fn descriptors(req: &RateLimitRequest) -> Result<Vec<Descriptor>, Status> {
    req.descriptors
        .iter()
        .enumerate()
        .map(|(i, d)| {
            if d.is_negative_hits {
                return Err(Status::invalid_argument(
                    super::DescriptorError::NegativeHits(i).to_string(),
                ));
            }
            Ok(Descriptor {
                entries: d
                    .entries
                    .iter()
                    .map(|e| (e.key.clone(), e.value.clone()))
                    .collect(),
                hits: d.hits_addend.as_ref().map(|h| h.value),
            })
        })
        .collect()
}

/// The response: the overall code, one status per descriptor in request order (with its limit,
/// what remains and when the window is whole again), and `Retry-After` when over the limit.
fn answer(plan: &Plan, decision: Option<&crate::store::Decision>) -> RateLimitResponse {
    let allowed = decision.is_none_or(|d| d.allowed);
    let statuses = plan
        .per_descriptor
        .iter()
        .map(|p| {
            let Some((i, rule)) = p else {
                return DescriptorStatus {
                    code: Code::Ok as i32,
                    ..DescriptorStatus::default()
                };
            };
            let result = decision.and_then(|d| d.results.get(*i));
            let over = result.is_some_and(|r| r.retry_after_ms > 0) && !allowed;
            DescriptorStatus {
                code: if over { Code::OverLimit } else { Code::Ok } as i32,
                current_limit: Some(current_limit(rule)),
                limit_remaining: result
                    .map_or(0, |r| u32::try_from(r.remaining).unwrap_or(u32::MAX)),
                duration_until_reset: result.map(|r| proto_duration(r.reset_ms)),
                ..DescriptorStatus::default()
            }
        })
        .collect();
    let mut response_headers_to_add = Vec::new();
    if !allowed {
        let retry_ms = decision
            .map(|d| {
                d.results
                    .iter()
                    .map(|r| r.retry_after_ms)
                    .max()
                    .unwrap_or(0)
            })
            .unwrap_or(0);
        response_headers_to_add.push(retry_after(retry_ms));
    }
    RateLimitResponse {
        overall_code: if allowed { Code::Ok } else { Code::OverLimit } as i32,
        statuses,
        response_headers_to_add,
        ..RateLimitResponse::default()
    }
}

/// OVER_LIMIT for a call the limiter cannot count (descriptor `over` costs more than one call
/// counts, or is one limited descriptor too many): that descriptor over its limit, the others
/// untouched, `Retry-After` one window of its rule.
fn never_fits(descriptors: usize, over: usize, rule: &super::Rule) -> RateLimitResponse {
    let statuses = (0..descriptors)
        .map(|i| DescriptorStatus {
            code: if i == over { Code::OverLimit } else { Code::Ok } as i32,
            current_limit: (i == over).then(|| current_limit(rule)),
            ..DescriptorStatus::default()
        })
        .collect();
    RateLimitResponse {
        overall_code: Code::OverLimit as i32,
        statuses,
        response_headers_to_add: vec![retry_after(rule.unit.window_ms())],
        ..RateLimitResponse::default()
    }
}

/// The limit a status reports.
fn current_limit(rule: &super::Rule) -> RateLimit {
    RateLimit {
        name: rule.name.clone(),
        requests_per_unit: rule.requests_per_unit,
        unit: rule.unit.proto(),
    }
}

/// `Retry-After` in seconds, rounded up so a client never retries early, at least 1.
fn retry_after(ms: u64) -> HeaderValue {
    HeaderValue {
        key: "retry-after".into(),
        value: ms.div_ceil(1000).max(1).to_string(),
        ..HeaderValue::default()
    }
}

fn proto_duration(ms: u64) -> ProtoDuration {
    ProtoDuration {
        seconds: i64::try_from(ms / 1000).unwrap_or(i64::MAX),
        nanos: i32::try_from((ms % 1000) * 1_000_000).unwrap_or(0),
    }
}
