//! The `rate_limit` section: the call to apiguard-limiter, who is counted, the tiers and the
//! per-route limits (docs/configuration.md).

use std::collections::BTreeMap;

use serde::Deserialize;

use super::common::{
    check_header_name, invalid, valid_name, ConfigError, Problem, MAX_CACHE_ENTRIES, MAX_TIMEOUT_MS,
};

/// `rate_limit`: the callout to apiguard-limiter.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Envoy cluster that reaches apiguard-limiter (`call: filter`, where it is required).
    #[serde(default)]
    pub cluster: String,
    /// Who calls apiguard-limiter: the filter itself (`filter`, over `cluster`), or Envoy's
    /// `ext_authz` filter placed after it (`ext_authz`), to which the filter hands the checks.
    #[serde(default)]
    pub call: LimiterCall,
    #[serde(default = "default_limiter_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default)]
    pub failure_mode: FailureMode,
    #[serde(default = "default_identity")]
    pub identity: Vec<IdentitySource>,
    #[serde(default)]
    pub tiers: BTreeMap<String, Vec<Limit>>,
    #[serde(default)]
    pub routes: Vec<RouteLimit>,
    /// Which rate-limit headers responses carry.
    #[serde(default)]
    pub headers: HeaderMode,
    /// Tiers that are called and counted but never block.
    #[serde(default)]
    pub shadow_tiers: Vec<String>,
    /// Keys remembered as over their limit per worker (answered 429 locally until their reset).
    #[serde(default = "default_local_cache_entries")]
    pub local_cache_entries: usize,
    /// `call: filter` only: while one call to the limiter is in flight, each worker queues the
    /// checks of the requests that arrive and sends them as one `POST /v1/check/batch` when the
    /// answer comes (each request still decided alone and exactly). Fewer calls under load, at
    /// the cost of a wait of up to one call for the requests queued.
    #[serde(default)]
    pub batch: bool,
}

/// Who makes the call to apiguard-limiter (docs/ratelimit.md).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum LimiterCall {
    /// The filter, from the Wasm VM (`dispatch_http_call` to `POST /v1/check`).
    #[default]
    Filter,
    /// Envoy's `ext_authz` filter, after this one, from Envoy's own HTTP client: the filter
    /// puts the checks in the `x-apiguard-limit` request header and the limiter answers on
    /// `/v1/ext_authz`.
    ExtAuthz,
}

/// `rate_limit.headers`: defined with the limiter's wire types, since the limiter renders the
/// same headers when `ext_authz` calls it.
pub use apiguard_limiter_api::handoff::HeaderMode;

/// What to do when the limiter cannot give an answer. `deny` unless an operator says otherwise.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum FailureMode {
    #[default]
    Deny,
    Allow,
}

/// Who a request is counted against: `claim:NAME` (verified token only), `header:NAME`, or
/// `source_ip`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(try_from = "String")]
pub enum IdentitySource {
    Claim(String),
    Header(String),
    SourceIp,
}

/// One window: at most `requests` per `window_s` seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct Limit {
    pub requests: u64,
    pub window_s: u64,
}

/// `rate_limit.routes[]`: limits for a path prefix, overriding the policy's tier.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RouteLimit {
    pub name: String,
    pub prefix: String,
    pub limits: Vec<Limit>,
    /// Overrides `rate_limit.failure_mode` for this route.
    #[serde(default)]
    pub failure_mode: Option<FailureMode>,
    /// Call and count, never block.
    #[serde(default)]
    pub shadow: bool,
}

fn default_local_cache_entries() -> usize {
    1024
}
fn default_limiter_timeout_ms() -> u64 {
    50
}
fn default_identity() -> Vec<IdentitySource> {
    vec![
        IdentitySource::Claim("sub".to_owned()),
        IdentitySource::SourceIp,
    ]
}

/// Checks what the types alone cannot say; run first by the stage's `compile`.
pub(crate) fn validate_rate_limit(rl: &RateLimitConfig) -> Result<(), ConfigError> {
    match rl.call {
        LimiterCall::Filter if rl.cluster.is_empty() => {
            return Err(invalid("rate_limit.cluster", Problem::Empty));
        }
        LimiterCall::ExtAuthz if rl.batch => {
            return Err(invalid(
                "rate_limit.batch",
                Problem::NotUsed(
                    "rate_limit.call is ext_authz (ext_authz makes one call per request)",
                ),
            ));
        }
        // The ext_authz filter names the limiter's cluster; one named here would be ignored.
        LimiterCall::ExtAuthz if !rl.cluster.is_empty() => {
            return Err(invalid(
                "rate_limit.cluster",
                Problem::NotUsed(
                    "rate_limit.call is ext_authz (ext_authz's http_service names the cluster)",
                ),
            ));
        }
        _ => {}
    }
    // Envoy reads a zero callout timeout as "no timeout": a hung limiter would hang requests.
    if rl.timeout_ms == 0 {
        return Err(invalid("rate_limit.timeout_ms", Problem::Zero));
    }
    if rl.timeout_ms > MAX_TIMEOUT_MS {
        return Err(invalid(
            "rate_limit.timeout_ms",
            Problem::TooLarge {
                max: MAX_TIMEOUT_MS,
            },
        ));
    }
    if rl.identity.is_empty() {
        return Err(invalid("rate_limit.identity", Problem::Empty));
    }
    for (name, limits) in &rl.tiers {
        if !valid_name(name) {
            return Err(invalid(
                format!("rate_limit.tiers.{name}"),
                Problem::BadName(name.clone()),
            ));
        }
        validate_limits(limits, &format!("rate_limit.tiers.{name}"))?;
    }
    for (i, t) in rl.shadow_tiers.iter().enumerate() {
        if !rl.tiers.contains_key(t) {
            return Err(invalid(
                format!("rate_limit.shadow_tiers[{i}]"),
                Problem::UnknownTier(t.clone()),
            ));
        }
    }
    if rl.local_cache_entries > MAX_CACHE_ENTRIES {
        return Err(invalid(
            "rate_limit.local_cache_entries",
            Problem::TooLarge {
                max: MAX_CACHE_ENTRIES as u64,
            },
        ));
    }
    let mut names: Vec<&str> = Vec::new();
    for (i, r) in rl.routes.iter().enumerate() {
        let at = format!("rate_limit.routes[{i}]");
        if r.name.is_empty() {
            return Err(invalid(format!("{at}.name"), Problem::Empty));
        }
        if !valid_name(&r.name) {
            return Err(invalid(
                format!("{at}.name"),
                Problem::BadName(r.name.clone()),
            ));
        }
        if names.contains(&r.name.as_str()) {
            return Err(invalid(
                format!("{at}.name"),
                Problem::Duplicate(r.name.clone()),
            ));
        }
        names.push(&r.name);
        if !r.prefix.starts_with('/') {
            return Err(invalid(format!("{at}.prefix"), Problem::NotAbsolutePath));
        }
        validate_limits(&r.limits, &format!("{at}.limits"))?;
    }
    Ok(())
}

/// The limiter refuses windows over one day (docs/limiter.md, `POST /v1/check`); refusing them
/// here keeps the error at configure time instead of on every request.
const MAX_WINDOW_S: u64 = 86_400;

fn validate_limits(limits: &[Limit], at: &str) -> Result<(), ConfigError> {
    if limits.len() > apiguard_limiter_api::MAX_CHECKS {
        return Err(invalid(
            at,
            Problem::TooLarge {
                max: apiguard_limiter_api::MAX_CHECKS as u64,
            },
        ));
    }
    for (i, l) in limits.iter().enumerate() {
        // The limiter refuses two checks of one window in one call.
        if limits[..i].iter().any(|o| o.window_s == l.window_s) {
            return Err(invalid(
                format!("{at}[{i}].window_s"),
                Problem::Duplicate(l.window_s.to_string()),
            ));
        }
        if l.requests == 0 {
            return Err(invalid(format!("{at}[{i}].requests"), Problem::Zero));
        }
        if l.window_s == 0 {
            return Err(invalid(format!("{at}[{i}].window_s"), Problem::Zero));
        }
        if l.window_s > MAX_WINDOW_S {
            return Err(invalid(
                format!("{at}[{i}].window_s"),
                Problem::TooLarge { max: MAX_WINDOW_S },
            ));
        }
    }
    Ok(())
}

/// Why an `identity` entry was refused (surfaced through [`ConfigError::Parse`] with its path).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not an identity source: use `claim:NAME`, `header:NAME` or `source_ip`")]
pub struct BadIdentity(String);

impl TryFrom<String> for IdentitySource {
    type Error = BadIdentity;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        if s == "source_ip" {
            return Ok(IdentitySource::SourceIp);
        }
        match s.split_once(':') {
            Some(("claim", name)) if !name.is_empty() => Ok(IdentitySource::Claim(name.to_owned())),
            Some(("header", name)) if !name.is_empty() && check_header_name(name, "").is_ok() => {
                Ok(IdentitySource::Header(name.to_owned()))
            }
            _ => Err(BadIdentity(s)),
        }
    }
}
