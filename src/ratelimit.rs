//! The rate-limit stage: which limits apply to a request, who it counts against, the one call
//! to apiguard-limiter that decides them all, and what the answer (or its absence) means.
//!
//! Sans-IO: [`RateLimitStage::plan`] says what to ask, the filter makes the call, and
//! [`RateLimitStage::judge`] turns the limiter's answer into a step and response headers.

use std::num::NonZeroUsize;
use std::sync::Arc;

use lru::LruCache;
use sha2::{Digest, Sha256};

use crate::config::{
    validate_rate_limit, ConfigError, FailureMode, HeaderMode, IdentitySource, Limit, LimiterCall,
    RateLimitConfig,
};
use crate::http::Headers;
use crate::identity::Claims;
use crate::path::{prefix_matches, NormalizedPath};
use crate::reply::Reply;
use apiguard_limiter_api::handoff::{self, Handoff};
pub use apiguard_limiter_api::handoff::{EXT_AUTHZ_PATH, HANDOFF_HEADER, NO_LIMITS};
use apiguard_limiter_api::{Check, CheckRequest, CheckResponse, LimitAlgorithm, CHECK_PATH};

/// The largest limiter answer read; anything bigger is a failure (a 16-check answer is ~2 KiB).
pub const MAX_ANSWER_BYTES: usize = 16 * 1024;

#[derive(Debug, Clone)]
struct Route {
    name: String,
    prefix: String,
    limits: Vec<Limit>,
    failure_mode: FailureMode,
    shadow: bool,
}

/// The compiled `rate_limit` section.
#[derive(Debug, Clone)]
pub struct RateLimitStage {
    /// Who calls the limiter: with `ExtAuthz` the plan goes on in [`HANDOFF_HEADER`] instead of a
    /// call ([`RateLimitStage::handoff`]).
    pub call: LimiterCall,
    pub cluster: String,
    pub timeout_ms: u64,
    failure_mode: FailureMode,
    identity: Vec<IdentitySource>,
    tiers: std::collections::BTreeMap<String, Vec<Limit>>,
    shadow_tiers: Vec<String>,
    /// Longest prefix first.
    routes: Vec<Route>,
    header_mode: HeaderMode,
    pub local_cache_entries: usize,
}

/// The limits that apply to one request and the call that checks them.
#[derive(Debug, Clone)]
pub struct Plan {
    /// `route:<name>` or `tier:<name>`: names the limits in headers and logs.
    pub scope: String,
    /// The limiter key (`{<identity>}:<scope>`), also the local cache's key.
    pub key: String,
    pub checks: Vec<Check>,
    pub failure_mode: FailureMode,
    pub shadow: bool,
}

/// Why no plan could be made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlanError {
    /// The policy named a tier the configuration does not have.
    UnknownTier(String),
}

/// How a call to the limiter failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimiterFailure {
    /// Envoy refused to start the call (unknown cluster, bad arguments).
    Dispatch,
    /// No response: connection refused or reset, or the timeout passed.
    NoResponse,
    /// A status other than 200 (including Envoy's own 503/504 and the limiter's 503).
    Status,
    /// The answer is over [`MAX_ANSWER_BYTES`].
    TooLarge,
    /// Not a check response, or not one for this call.
    Malformed,
    /// The policy named an unknown tier.
    UnknownTier,
    /// With `rate_limit.batch`: the request waited for a batch longer than `timeout_ms`, or
    /// found the worker's queue full ([`batch`]).
    Queue,
}

impl LimiterFailure {
    pub fn name(self) -> &'static str {
        match self {
            LimiterFailure::Dispatch => "dispatch",
            LimiterFailure::NoResponse => "no_response",
            LimiterFailure::Status => "status",
            LimiterFailure::TooLarge => "too_large",
            LimiterFailure::Malformed => "malformed",
            LimiterFailure::UnknownTier => "unknown_tier",
            LimiterFailure::Queue => "queue",
        }
    }
}

/// What the limiter said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitVerdict {
    Allowed,
    Limited,
    /// Limited by a shadow limit: counted, not enforced.
    ShadowLimited,
    Failed(LimiterFailure),
}

/// The outcome of a call, ready to apply.
#[derive(Debug, Clone)]
pub struct Judgement {
    pub verdict: LimitVerdict,
    /// `Some` when the request is answered locally (429 or 503).
    pub reply: Option<Reply>,
    /// Headers for the upstream's response when the request goes on.
    pub response_headers: Vec<(String, String)>,
    /// Remember the key as blocked until this time (ms) with this reply.
    pub block_until_ms: Option<i64>,
}

impl RateLimitStage {
    /// Checks and compiles the `rate_limit` section in one pass.
    pub fn compile(cfg: &RateLimitConfig) -> Result<RateLimitStage, ConfigError> {
        validate_rate_limit(cfg)?;
        let mut routes: Vec<Route> = cfg
            .routes
            .iter()
            .map(|r| Route {
                name: r.name.clone(),
                prefix: r.prefix.clone(),
                limits: r.limits.clone(),
                failure_mode: r.failure_mode.unwrap_or(cfg.failure_mode),
                shadow: r.shadow,
            })
            .collect();
        routes.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
        Ok(RateLimitStage {
            call: cfg.call,
            cluster: cfg.cluster.clone(),
            timeout_ms: cfg.timeout_ms,
            failure_mode: cfg.failure_mode,
            identity: cfg.identity.clone(),
            tiers: cfg.tiers.clone(),
            shadow_tiers: cfg.shadow_tiers.clone(),
            routes,
            header_mode: cfg.headers,
            // With `call: ext_authz` the filter never sees an answer to remember.
            local_cache_entries: match cfg.call {
                LimiterCall::Filter => cfg.local_cache_entries,
                LimiterCall::ExtAuthz => 0,
            },
        })
    }

    /// Whether a request's identity can come from its source address.
    pub fn uses_source_ip(&self) -> bool {
        self.identity.contains(&IdentitySource::SourceIp)
    }

    /// The limits for a request: the longest matching route, else the policy's tier (default
    /// `standard`). `Ok(None)` when they are unlimited (no call is made).
    pub fn plan(
        &self,
        path: &NormalizedPath,
        headers: &Headers<'_>,
        source: Option<&str>,
        caller: Option<(&str, &Claims)>,
        tier: Option<&str>,
        cost: u64,
    ) -> Result<Option<Plan>, PlanError> {
        let (scope, limits, failure_mode, shadow) = match self
            .routes
            .iter()
            .find(|r| prefix_matches(&r.prefix, &path.path))
        {
            Some(r) => (
                format!("route:{}", r.name),
                &r.limits,
                r.failure_mode,
                r.shadow,
            ),
            None => {
                let tier = tier.unwrap_or("standard");
                let limits = self
                    .tiers
                    .get(tier)
                    .ok_or_else(|| PlanError::UnknownTier(tier.to_owned()))?;
                let shadow = self.shadow_tiers.iter().any(|t| t == tier);
                (format!("tier:{tier}"), limits, self.failure_mode, shadow)
            }
        };
        if limits.is_empty() {
            return Ok(None);
        }
        let key = format!("{{{}}}:{scope}", self.identity(headers, source, caller));
        let checks = limits
            .iter()
            .map(|l| Check {
                key: key.clone(),
                limit: l.requests,
                window_ms: l.window_s.saturating_mul(1000),
                cost,
                algorithm: LimitAlgorithm::Log,
            })
            .collect();
        Ok(Some(Plan {
            scope,
            key,
            checks,
            failure_mode,
            shadow,
        }))
    }

    /// Who the request counts against: the first identity source present. Claims come only
    /// from a verified token (`claims` is `None` otherwise). Header values are hashed, so no
    /// credential such as an API key ever reaches the limiter or Redis; identities that could
    /// break the key's hash tag are hashed too.
    fn identity(
        &self,
        headers: &Headers<'_>,
        source: Option<&str>,
        caller: Option<(&str, &Claims)>,
    ) -> String {
        for src in &self.identity {
            match src {
                // Scoped by provider (`primary/sub:alice`): two issuers' equal `sub` are two
                // callers. Provider names cannot hold `/` (configuration checks).
                IdentitySource::Claim(name) => {
                    let Some((provider, claims)) = caller else {
                        continue;
                    };
                    let value = match claims.map.get(name) {
                        Some(serde_json::Value::String(s)) if !s.is_empty() => Some(s.clone()),
                        Some(serde_json::Value::Number(n)) => Some(n.to_string()),
                        _ => None,
                    };
                    if let Some(v) = value {
                        return if v.len() <= 128 && !v.contains(['{', '}']) {
                            format!("{provider}/{name}:{v}")
                        } else {
                            format!("{provider}/{name}#{}", digest(v.as_bytes()))
                        };
                    }
                }
                IdentitySource::Header(name) => {
                    if let Some(v) = headers.get(name).filter(|v| !v.is_empty()) {
                        return format!("{name}#{}", digest(v));
                    }
                }
                IdentitySource::SourceIp => {
                    if let Some(ip) = source.filter(|s| !s.is_empty()) {
                        return format!("ip:{ip}");
                    }
                }
            }
        }
        "anonymous".into()
    }

    /// The call for a plan.
    pub fn call(&self, plan: &Plan) -> LimitCall {
        let body = serde_json::to_vec(&CheckRequest {
            checks: plan.checks.clone(),
        })
        .unwrap_or_default();
        LimitCall {
            cluster: self.cluster.clone(),
            path: CHECK_PATH,
            timeout_ms: self.timeout_ms,
            body,
        }
    }

    /// A limiter call's answer as the host gives it, for [`RateLimitStage::judge`]: its
    /// `status` (`None`: no response, the call was refused, reset or timed out) and its body's
    /// size, the body read only when that is at most [`MAX_ANSWER_BYTES`].
    pub fn call_answer(
        status: Option<u16>,
        body_size: usize,
        body: &[u8],
    ) -> Result<(u16, &[u8]), LimiterFailure> {
        match status {
            None => Err(LimiterFailure::NoResponse),
            Some(_) if body_size > MAX_ANSWER_BYTES => Err(LimiterFailure::TooLarge),
            Some(s) => Ok((s, body)),
        }
    }

    /// Turns the limiter's answer (`status`, `body`; `None` for no response) into a judgement at
    /// Unix time `now_ms`.
    pub fn judge(
        &self,
        plan: &Plan,
        answer: Result<(u16, &[u8]), LimiterFailure>,
        now_ms: i64,
    ) -> Judgement {
        let parsed = answer.and_then(|(status, body)| {
            if status != 200 {
                return Err(LimiterFailure::Status);
            }
            if body.len() > MAX_ANSWER_BYTES {
                return Err(LimiterFailure::TooLarge);
            }
            let r: CheckResponse =
                serde_json::from_slice(body).map_err(|_| LimiterFailure::Malformed)?;
            let consistent = r.results.len() == plan.checks.len()
                && r.results
                    .iter()
                    .zip(&plan.checks)
                    .all(|(res, c)| res.key == c.key && res.limit == c.limit);
            if consistent {
                Ok(r)
            } else {
                Err(LimiterFailure::Malformed)
            }
        });
        let r = match parsed {
            Ok(r) => r,
            Err(f) => return self.failed(plan, f),
        };
        let headers = |limited| {
            handoff::rate_limit_headers(
                &plan.scope,
                &plan.checks,
                &r.results,
                self.header_mode,
                limited,
                now_ms,
            )
        };
        if r.allowed {
            return Judgement {
                verdict: LimitVerdict::Allowed,
                reply: None,
                response_headers: headers(false),
                block_until_ms: None,
            };
        }
        if plan.shadow {
            return Judgement {
                verdict: LimitVerdict::ShadowLimited,
                reply: None,
                response_headers: Vec::new(),
                block_until_ms: None,
            };
        }
        let retry_ms = handoff::retry_after_ms(&r.results);
        Judgement {
            verdict: LimitVerdict::Limited,
            reply: Some(too_many(headers(true), retry_ms)),
            response_headers: Vec::new(),
            block_until_ms: Some(
                now_ms.saturating_add(i64::try_from(retry_ms).unwrap_or(i64::MAX)),
            ),
        }
    }

    /// A failure follows the plan's failure mode: deny → 503, allow → pass (counted).
    pub fn failed(&self, plan: &Plan, f: LimiterFailure) -> Judgement {
        failure(f, plan.failure_mode == FailureMode::Deny && !plan.shadow)
    }

    /// The failure for a plan that could not be made (unknown tier): the section's failure mode.
    pub fn unknown_tier(&self) -> Judgement {
        failure(
            LimiterFailure::UnknownTier,
            self.failure_mode == FailureMode::Deny,
        )
    }

    /// The plan in the request header Envoy's `ext_authz` filter forwards to the limiter
    /// (`rate_limit.call: ext_authz`).
    pub fn handoff(&self, plan: Plan) -> String {
        Handoff {
            scope: plan.scope,
            checks: plan.checks,
            headers: self.header_mode,
            deny_on_failure: plan.failure_mode == FailureMode::Deny,
            shadow: plan.shadow,
        }
        .encode()
    }
}

fn failure(f: LimiterFailure, deny: bool) -> Judgement {
    Judgement {
        verdict: LimitVerdict::Failed(f),
        reply: deny.then(Reply::limiter_unavailable),
        response_headers: Vec::new(),
        block_until_ms: None,
    }
}

/// 429 with `Retry-After` (whole seconds, at least 1) and the rate-limit headers.
fn too_many(headers: Vec<(String, String)>, retry_ms: u64) -> Reply {
    let mut reply = Reply::too_many_requests(handoff::retry_after_s(retry_ms));
    reply.headers.extend(headers);
    reply
}

fn digest(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// An HTTP call to make to the limiter.
#[derive(Debug, Clone)]
pub struct LimitCall {
    pub cluster: String,
    pub path: &'static str,
    pub timeout_ms: u64,
    pub body: Vec<u8>,
}

/// Keys known to be over their limit, per worker: a request for one is answered 429 locally
/// until its reset, without a call.
pub struct LocalLimits {
    lru: Option<LruCache<String, (i64, Arc<Reply>)>>,
}

impl LocalLimits {
    pub fn new(capacity: usize) -> LocalLimits {
        LocalLimits {
            lru: NonZeroUsize::new(capacity).map(LruCache::new),
        }
    }

    /// The reply for a key still blocked at `now_ms`, with `Retry-After` counted down.
    pub fn blocked(&mut self, key: &str, now_ms: i64) -> Option<Reply> {
        let lru = self.lru.as_mut()?;
        let (until, reply) = lru.get(key)?.clone();
        if now_ms >= until {
            lru.pop(key);
            return None;
        }
        let left_s = u64::try_from((until - now_ms + 999) / 1000)
            .unwrap_or(1)
            .max(1);
        let mut r = (*reply).clone();
        for (n, v) in &mut r.headers {
            if n == "retry-after" {
                *v = left_s.to_string();
            }
        }
        Some(r)
    }

    pub fn block(&mut self, key: &str, until_ms: i64, reply: &Reply) {
        if let Some(lru) = &mut self.lru {
            lru.put(key.to_owned(), (until_ms, Arc::new(reply.clone())));
        }
    }
}

pub mod batch;

#[cfg(test)]
mod tests;
