//! The `jwt` section: token providers, where tokens come from, what is checked, which claims go
//! upstream, which paths need which providers (docs/configuration.md).

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use super::common::{
    check_header_name, check_settable_header, invalid, ConfigError, ConfigWarning, Problem,
};
use super::common::{valid_name, DEFAULT_CLOCK_SKEW_S, MAX_CACHE_ENTRIES, MAX_TIMEOUT_MS};
use crate::jose::Algorithm;

/// `jwt`: token providers and which paths need which of them.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    pub providers: BTreeMap<String, ProviderConfig>,
    /// Without rules every request needs a valid token from any provider.
    #[serde(default)]
    pub rules: Option<Vec<JwtRule>>,
    /// Tokens longer than this are refused unread.
    #[serde(default = "default_max_token_bytes")]
    pub max_token_bytes: usize,
    /// Verified tokens remembered per worker (0 turns the cache off).
    #[serde(default = "default_cache_entries")]
    pub cache_entries: usize,
    /// Whether RS*/ES* signatures are verified by the host's `verify_signature` foreign
    /// function when the host offers it (`auto`), or always in Wasm (`off`).
    #[serde(default)]
    pub host_signatures: HostSignatures,
    /// Publish the verified claims and the provider in filter state (`wasm.apiguard.claims`,
    /// `wasm.apiguard.provider`) for access logs. Off by default, like `jwt_authn`'s
    /// `payload_in_metadata`: it costs host calls on every request, and claims are often
    /// personal data.
    #[serde(default)]
    pub publish_claims: bool,
}

/// `jwt.host_signatures`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum HostSignatures {
    #[default]
    Auto,
    Off,
}

/// `jwt.providers.<name>`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// Compared with the token's `iss` exactly.
    pub issuer: String,
    /// Without it `aud` is not checked, and validation warns.
    #[serde(default)]
    pub audiences: Option<Vec<String>>,
    /// Allow-list; without it the algorithm comes from the key.
    #[serde(default)]
    pub algorithms: Option<Vec<Algorithm>>,
    pub jwks: JwksConfig,
    /// Where the token is looked for, in order; defaults to `Authorization: Bearer <token>`.
    #[serde(default)]
    pub sources: Option<Vec<TokenSource>>,
    #[serde(default = "default_clock_skew_s")]
    pub clock_skew_s: u64,
    #[serde(default)]
    pub claims_to_headers: Vec<ClaimToHeader>,
    #[serde(default = "default_true")]
    pub forward_token: bool,
    /// Refuse tokens whose lifetime (`exp` − `iat`) is longer than this.
    #[serde(default)]
    pub max_lifetime_s: Option<u64>,
    /// Claims that must be present (and not null).
    #[serde(default)]
    pub required_claims: Vec<String>,
    /// Required header `typ`, e.g. `at+jwt` for RFC 9068 access tokens.
    #[serde(default)]
    pub typ: Option<String>,
    /// Also forward all verified claims as base64url JSON in this header.
    #[serde(default)]
    pub claims_header: Option<String>,
    /// Refuse tokens without `sub` (RFC 9068 §2.2 requires it of access tokens). `false` for
    /// issuers whose tokens name no subject (client-credentials tokens of some issuers).
    #[serde(default = "default_true")]
    pub require_sub: bool,
}

/// `jwt.providers.<name>.jwks`: exactly one of `inline` or `remote`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum JwksConfig {
    Inline(InlineJwks),
    Remote(RemoteJwks),
}

/// A JWK Set (RFC 7517 §5). Members other than `keys` are allowed by the RFC and ignored.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct InlineJwks {
    pub keys: Vec<Value>,
}

/// `jwks.remote`: keys fetched over an Envoy cluster and cached.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RemoteJwks {
    pub cluster: String,
    pub path: String,
    #[serde(default)]
    pub authority: Option<String>,
    #[serde(default = "default_jwks_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default = "default_refresh_s")]
    pub refresh_s: u64,
    #[serde(default = "default_min_refetch_s")]
    pub min_refetch_s: u64,
    #[serde(default = "default_max_stale_s")]
    pub max_stale_s: u64,
}

/// One place a token may come from. Exactly one of `header`, `query`, `cookie`; `prefix` only
/// with `header`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct TokenSource {
    #[serde(default)]
    pub header: Option<String>,
    #[serde(default)]
    pub prefix: Option<String>,
    #[serde(default)]
    pub query: Option<String>,
    #[serde(default)]
    pub cookie: Option<String>,
}

/// `claims_to_headers[]`: a verified claim (dotted path for nested claims) copied to an
/// upstream request header.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct ClaimToHeader {
    pub claim: String,
    pub header: String,
}

/// `jwt.rules[]`: the providers a path prefix requires (any one of them); empty means public.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct JwtRule {
    pub prefix: String,
    pub requires: Vec<String>,
}

fn default_clock_skew_s() -> u64 {
    DEFAULT_CLOCK_SKEW_S
}
fn default_max_token_bytes() -> usize {
    8 * 1024
}
fn default_cache_entries() -> usize {
    1024
}
fn default_true() -> bool {
    true
}
fn default_jwks_timeout_ms() -> u64 {
    1000
}
fn default_refresh_s() -> u64 {
    600
}
fn default_min_refetch_s() -> u64 {
    30
}
fn default_max_stale_s() -> u64 {
    86_400
}

/// Longest `jwks.remote.refresh_s` and `min_refetch_s`: one week.
pub const MAX_REFRESH_S: u64 = 7 * 86_400;
/// Longest `jwks.remote.max_stale_s`: thirty days.
pub const MAX_STALE_S: u64 = 30 * 86_400;
/// Largest `clock_skew_s`: an hour of leeway is already more than any clock drifts.
pub const MAX_CLOCK_SKEW_S: u64 = 3_600;

/// Bounds of `jwt.max_token_bytes`.
pub const MAX_TOKEN_BYTES_RANGE: (usize, usize) = (256, 64 * 1024);

/// Checks what the types alone cannot say; run first by the stage's `compile`.
pub(crate) fn validate_jwt(
    jwt: &JwtConfig,
    warnings: &mut Vec<ConfigWarning>,
) -> Result<(), ConfigError> {
    if jwt.providers.is_empty() {
        return Err(invalid("jwt.providers", Problem::Empty));
    }
    let (lo, hi) = MAX_TOKEN_BYTES_RANGE;
    if !(lo..=hi).contains(&jwt.max_token_bytes) {
        return Err(invalid(
            "jwt.max_token_bytes",
            Problem::OutOfRange {
                min: lo as u64,
                max: hi as u64,
            },
        ));
    }
    if jwt.cache_entries > MAX_CACHE_ENTRIES {
        return Err(invalid(
            "jwt.cache_entries",
            Problem::TooLarge {
                max: MAX_CACHE_ENTRIES as u64,
            },
        ));
    }
    for (name, p) in &jwt.providers {
        let at = format!("jwt.providers.{name}");
        if !valid_name(name) {
            return Err(invalid(at, Problem::BadName(name.clone())));
        }
        if p.issuer.is_empty() {
            return Err(invalid(format!("{at}.issuer"), Problem::Empty));
        }
        match &p.audiences {
            None => warnings.push(ConfigWarning::NoAudiences {
                provider: name.clone(),
            }),
            Some(a) if a.is_empty() || a.iter().any(String::is_empty) => {
                return Err(invalid(format!("{at}.audiences"), Problem::Empty));
            }
            Some(_) => {}
        }
        if p.algorithms.as_ref().is_some_and(Vec::is_empty) {
            return Err(invalid(format!("{at}.algorithms"), Problem::Empty));
        }
        if let JwksConfig::Remote(r) = &p.jwks {
            let rat = format!("{at}.jwks.remote");
            if r.cluster.is_empty() {
                return Err(invalid(format!("{rat}.cluster"), Problem::Empty));
            }
            if !r.path.starts_with('/') {
                return Err(invalid(format!("{rat}.path"), Problem::NotAbsolutePath));
            }
            for (field, v, max) in [
                ("timeout_ms", r.timeout_ms, MAX_TIMEOUT_MS),
                ("refresh_s", r.refresh_s, MAX_REFRESH_S),
                ("max_stale_s", r.max_stale_s, MAX_STALE_S),
            ] {
                if !(1..=max).contains(&v) {
                    return Err(invalid(
                        format!("{rat}.{field}"),
                        Problem::OutOfRange { min: 1, max },
                    ));
                }
            }
            if r.min_refetch_s > MAX_REFRESH_S {
                return Err(invalid(
                    format!("{rat}.min_refetch_s"),
                    Problem::TooLarge { max: MAX_REFRESH_S },
                ));
            }
        }
        if let Some(sources) = &p.sources {
            if sources.is_empty() {
                return Err(invalid(format!("{at}.sources"), Problem::Empty));
            }
            for (i, s) in sources.iter().enumerate() {
                validate_source(s, &format!("{at}.sources[{i}]"))?;
            }
        }
        // The claim rules (`clock_skew_s`, `max_lifetime_s`, `required_claims`, `typ`, …) are
        // checked where they compile: `jwt::token::TokenRules::compile`.
        let mut seen = Vec::new();
        if let Some(h) = &p.claims_header {
            check_settable_header(h, &format!("{at}.claims_header"))?;
            seen.push(h.as_str());
        }
        for (i, m) in p.claims_to_headers.iter().enumerate() {
            let mat = format!("{at}.claims_to_headers[{i}]");
            if m.claim.is_empty() {
                return Err(invalid(format!("{mat}.claim"), Problem::Empty));
            }
            check_settable_header(&m.header, &format!("{mat}.header"))?;
            if seen.contains(&m.header.as_str()) {
                return Err(invalid(
                    format!("{mat}.header"),
                    Problem::DuplicateHeader(m.header.clone()),
                ));
            }
            seen.push(m.header.as_str());
        }
    }
    if let Some(rules) = &jwt.rules {
        for (i, r) in rules.iter().enumerate() {
            if !r.prefix.starts_with('/') {
                return Err(invalid(
                    format!("jwt.rules[{i}].prefix"),
                    Problem::NotAbsolutePath,
                ));
            }
            for (j, name) in r.requires.iter().enumerate() {
                if !jwt.providers.contains_key(name) {
                    return Err(invalid(
                        format!("jwt.rules[{i}].requires[{j}]"),
                        Problem::UnknownProvider(name.clone()),
                    ));
                }
            }
        }
    }
    Ok(())
}

fn validate_source(s: &TokenSource, at: &str) -> Result<(), ConfigError> {
    let kinds = [&s.header, &s.query, &s.cookie]
        .iter()
        .filter(|k| k.is_some())
        .count();
    if kinds != 1 {
        return Err(invalid(at, Problem::SourceKind));
    }
    if s.prefix.is_some() && s.header.is_none() {
        return Err(invalid(
            format!("{at}.prefix"),
            Problem::PrefixWithoutHeader,
        ));
    }
    if let Some(h) = &s.header {
        check_header_name(h, &format!("{at}.header"))?;
    }
    for (field, v) in [("query", &s.query), ("cookie", &s.cookie)] {
        if v.as_ref().is_some_and(String::is_empty) {
            return Err(invalid(format!("{at}.{field}"), Problem::Empty));
        }
    }
    Ok(())
}
