//! The rate-limit handoff: the filter plans the checks of a request and hands them to Envoy's
//! `ext_authz` filter, which makes the call to apiguard-limiter from Envoy's own HTTP client
//! instead of from the Wasm VM (docs/ratelimit.md, "Calling the limiter through ext_authz").
//!
//! The plan travels in one request header, [`HANDOFF_HEADER`], that the filter sets on every
//! request it lets through and removes from what the client sent. The limiter answers it on
//! [`EXT_AUTHZ_PATH`] in the terms `ext_authz` understands: 200 goes on (with the rate-limit
//! headers for the client), 429 is answered with the limiter's headers and body, any 5xx is a
//! failure that `ext_authz`'s own `status_on_error` answers.
//!
//! The rate-limit headers are rendered here, once, for both ways of calling
//! ([`rate_limit_headers`]), so a client sees the same answer whichever way the call is made.

use base64ct::{Base64UrlUnpadded, Encoding};
use serde::{Deserialize, Serialize};

use crate::{parse_strict, Check, CheckRequest, CheckResult, RequestError};

/// The request header that carries the plan from the filter to the limiter.
pub const HANDOFF_HEADER: &str = "x-apiguard-limit";
/// The header's value when no limit applies to the request: the limiter answers 200 at once.
pub const NO_LIMITS: &str = "none";
/// The limiter's path for `ext_authz`'s HTTP service (its `path_prefix`): `ext_authz` appends
/// the request's own path.
pub const EXT_AUTHZ_PATH: &str = "/v1/ext_authz";
/// Longest header value the limiter reads (a 16-check plan with 512-byte keys fits).
pub const MAX_HANDOFF_BYTES: usize = 16 * 1024;

/// Which rate-limit headers a response carries (`rate_limit.headers` in the plugin
/// configuration): `X-RateLimit-*` (`legacy`), the IETF draft `RateLimit-Policy`/`RateLimit`
/// (`ietf`), or both.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum HeaderMode {
    /// `X-RateLimit-Limit`, `-Remaining`, `-Reset`.
    Legacy,
    /// The IETF draft's `RateLimit-Policy` and `RateLimit`.
    Ietf,
    #[default]
    Both,
}

/// One request's plan, as the filter made it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Handoff {
    /// `route:<name>` or `tier:<name>`: names the windows in `RateLimit-Policy`.
    pub scope: String,
    /// The windows, decided atomically as by `POST /v1/check`.
    pub checks: Vec<Check>,
    pub headers: HeaderMode,
    /// A store failure answers 503 (`true`) or lets the request go on (`false`).
    pub deny_on_failure: bool,
    /// Counted, never blocking: an over-limit answer lets the request go on.
    pub shadow: bool,
}

/// What the header said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handed {
    /// [`NO_LIMITS`]: the filter found no limit for the request.
    Unlimited,
    Plan(Handoff),
}

/// Why a handoff header was refused (the limiter answers 500: `ext_authz` reads it as a failure).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandoffError {
    #[error("no {HANDOFF_HEADER} header: the apiguard filter must run before ext_authz, with rate_limit.call: ext_authz")]
    Missing,
    #[error("{HANDOFF_HEADER}: over {MAX_HANDOFF_BYTES} bytes")]
    TooLarge,
    #[error("{HANDOFF_HEADER}: not base64url")]
    NotBase64,
    #[error("{HANDOFF_HEADER}: {0}")]
    Plan(#[from] RequestError),
}

impl Handoff {
    /// The header value: the plan's JSON, base64url without padding (claims may hold bytes a
    /// header value cannot).
    pub fn encode(&self) -> String {
        Base64UrlUnpadded::encode_string(&serde_json::to_vec(self).unwrap_or_default())
    }

    /// Reads a header value (`None`: the header is absent), validating the checks as
    /// `POST /v1/check` does.
    pub fn decode(value: Option<&[u8]>) -> Result<Handed, HandoffError> {
        let value = value.ok_or(HandoffError::Missing)?;
        if value == NO_LIMITS.as_bytes() {
            return Ok(Handed::Unlimited);
        }
        if value.len() > MAX_HANDOFF_BYTES {
            return Err(HandoffError::TooLarge);
        }
        let json = Base64UrlUnpadded::decode_vec(
            std::str::from_utf8(value).map_err(|_| HandoffError::NotBase64)?,
        )
        .map_err(|_| HandoffError::NotBase64)?;
        let plan: Handoff = parse_strict(&json)?;
        CheckRequest {
            checks: plan.checks.clone(),
        }
        .validate()
        .map_err(RequestError::from)?;
        Ok(Handed::Plan(plan))
    }
}

/// The rate-limit headers of an answer: those of the most restrictive window (fewest remaining;
/// on a tie, the latest reset), at Unix time `now_ms`. `limited`: the request is refused, so the
/// window is spent whatever it says (`x-ratelimit-remaining: 0`).
pub fn rate_limit_headers(
    scope: &str,
    checks: &[Check],
    results: &[CheckResult],
    mode: HeaderMode,
    limited: bool,
    now_ms: i64,
) -> Vec<(String, String)> {
    let Some((i, worst)) = results
        .iter()
        .enumerate()
        .min_by_key(|(_, r)| (r.remaining, std::cmp::Reverse(r.reset_ms)))
    else {
        return Vec::new();
    };
    let reset_s = worst.reset_ms.div_ceil(1000);
    let name = |c: &Check| format!("\"{}-{}s\"", scope.replace(':', "-"), c.window_ms / 1000);
    let mut out = Vec::new();
    if matches!(mode, HeaderMode::Legacy | HeaderMode::Both) {
        let reset_at = now_ms
            .div_euclid(1000)
            .saturating_add(i64::try_from(reset_s).unwrap_or(i64::MAX));
        let remaining = if limited { 0 } else { worst.remaining };
        out.push(("x-ratelimit-limit".into(), worst.limit.to_string()));
        out.push(("x-ratelimit-remaining".into(), remaining.to_string()));
        out.push(("x-ratelimit-reset".into(), reset_at.to_string()));
    }
    if matches!(mode, HeaderMode::Ietf | HeaderMode::Both) {
        let policy: Vec<String> = checks
            .iter()
            .map(|c| format!("{};q={};w={}", name(c), c.limit, c.window_ms / 1000))
            .collect();
        out.push(("ratelimit-policy".into(), policy.join(", ")));
        if let Some(c) = checks.get(i) {
            out.push((
                "ratelimit".into(),
                format!("{};r={};t={reset_s}", name(c), worst.remaining),
            ));
        }
    }
    out
}

/// Milliseconds until every refused window admits the request again (at least 1).
pub fn retry_after_ms(results: &[CheckResult]) -> u64 {
    results
        .iter()
        .map(|x| x.retry_after_ms)
        .max()
        .unwrap_or(1000)
        .max(1)
}

/// `Retry-After` in whole seconds, at least 1, rounded up.
pub fn retry_after_s(retry_ms: u64) -> u64 {
    retry_ms.div_ceil(1000).max(1)
}

/// The 429 body, an RFC 9457 problem document (`application/problem+json`).
pub fn too_many_requests_body() -> Vec<u8> {
    serde_json::json!({
        "type": "about:blank",
        "title": "Too Many Requests",
        "status": 429,
        "detail": "The rate limit for this request is exhausted.",
    })
    .to_string()
    .into_bytes()
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;
    use crate::LimitAlgorithm;

    fn plan() -> Handoff {
        Handoff {
            scope: "tier:standard".into(),
            checks: vec![Check {
                key: "{p/sub:al\u{e9}\nx}:tier:standard".into(),
                limit: 5,
                window_ms: 60_000,
                cost: 2,
                algorithm: LimitAlgorithm::Log,
            }],
            headers: HeaderMode::Ietf,
            deny_on_failure: true,
            shadow: false,
        }
    }

    #[test]
    fn a_plan_survives_the_header_whatever_its_key_holds() {
        let v = plan().encode();
        assert!(v
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_eq!(
            Handoff::decode(Some(v.as_bytes())),
            Ok(Handed::Plan(plan()))
        );
        assert_eq!(Handoff::decode(Some(b"none")), Ok(Handed::Unlimited));
    }

    #[test]
    fn a_missing_or_bad_header_is_an_error_never_unlimited() {
        assert_eq!(Handoff::decode(None), Err(HandoffError::Missing));
        assert_eq!(
            Handoff::decode(Some(b"not base64!")),
            Err(HandoffError::NotBase64)
        );
        assert_eq!(
            Handoff::decode(Some(&vec![b'A'; MAX_HANDOFF_BYTES + 1])),
            Err(HandoffError::TooLarge)
        );
        let junk = Base64UrlUnpadded::encode_string(br#"{"scope":"x"}"#);
        assert!(matches!(
            Handoff::decode(Some(junk.as_bytes())),
            Err(HandoffError::Plan(RequestError::Parse { .. }))
        ));
        let mut zero = plan();
        zero.checks[0].limit = 0;
        assert!(matches!(
            Handoff::decode(Some(zero.encode().as_bytes())),
            Err(HandoffError::Plan(RequestError::Invalid(_)))
        ));
        let trailing = Base64UrlUnpadded::encode_string(
            &[serde_json::to_vec(&plan()).unwrap(), b" {}".to_vec()].concat(),
        );
        assert!(Handoff::decode(Some(trailing.as_bytes())).is_err());
    }

    #[test]
    fn headers_name_the_most_restrictive_window() {
        let checks = vec![
            Check {
                key: "k".into(),
                limit: 100,
                window_ms: 60_000,
                cost: 1,
                algorithm: LimitAlgorithm::Log,
            },
            Check {
                key: "k".into(),
                limit: 10,
                window_ms: 1_000,
                cost: 1,
                algorithm: LimitAlgorithm::Log,
            },
        ];
        let results = vec![
            CheckResult {
                key: "k".into(),
                limit: 100,
                remaining: 97,
                reset_ms: 58_000,
                retry_after_ms: 0,
            },
            CheckResult {
                key: "k".into(),
                limit: 10,
                remaining: 3,
                reset_ms: 400,
                retry_after_ms: 0,
            },
        ];
        let h = rate_limit_headers(
            "tier:standard",
            &checks,
            &results,
            HeaderMode::Both,
            false,
            1_000_500,
        );
        let get = |n: &str| h.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
        assert_eq!(get("x-ratelimit-limit"), Some("10"));
        assert_eq!(get("x-ratelimit-remaining"), Some("3"));
        assert_eq!(get("x-ratelimit-reset"), Some("1001"));
        assert_eq!(
            get("ratelimit-policy"),
            Some(r#""tier-standard-60s";q=100;w=60, "tier-standard-1s";q=10;w=1"#)
        );
        assert_eq!(get("ratelimit"), Some(r#""tier-standard-1s";r=3;t=1"#));
        let limited = rate_limit_headers(
            "tier:standard",
            &checks,
            &results,
            HeaderMode::Legacy,
            true,
            0,
        );
        assert_eq!(limited[1], ("x-ratelimit-remaining".into(), "0".into()));
        assert_eq!(limited.len(), 3);
        assert_eq!(retry_after_s(retry_after_ms(&results)), 1);
        assert_eq!(retry_after_s(1001), 2);
    }
}
