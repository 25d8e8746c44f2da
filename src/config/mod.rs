//! Plugin configuration: the JSON carried in the Wasm filter's `configuration` field.
//!
//! Parsing is strict: an unknown field anywhere is an error, because a misspelt security setting
//! that is silently ignored is a hole (`audience` for `audiences` would turn the `aud` check off).
//! Every error names the JSON path of the offending field, e.g. `jwt.providers.primary.issuer`.
//!
//! [`Config::from_json`] is the one entry point: it parses, then validates what the types alone
//! cannot say (references between sections, ranges, header names). It runs once per
//! configuration, in the filter's `on_configure` and in `apiguard validate`.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde_json::Value;

use crate::http;
use crate::jose::Algorithm;
use apiguard_limiter_api::json_shape::{array_for_object, Shape};

/// Largest configuration accepted. Inline JWKS and Rego modules make configurations large,
/// but anything past this is a mistake and parsing it would only waste worker memory.
pub const MAX_CONFIG_BYTES: usize = 1024 * 1024;

/// Default leeway for `exp`, `nbf` and `iat` checks (`clock_skew_s` in docs/configuration.md).
pub const DEFAULT_CLOCK_SKEW_S: u64 = 30;

/// The whole plugin configuration. Every section is optional; a missing section turns its
/// stage off.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub jwt: Option<JwtConfig>,
    #[serde(default)]
    pub policy: Option<PolicyConfig>,
    #[serde(default)]
    pub rate_limit: Option<RateLimitConfig>,
    /// How request spellings that backends read differently are treated.
    #[serde(default)]
    pub request: RequestConfig,
}

/// `request`: spellings of a request that backends disagree on. Both refuse by default; an
/// operator whose API really uses them opts in (docs/security.md).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestConfig {
    /// `;` parameters in path segments: `reject` (400) or `strip` (decide on the path without
    /// them, forward as sent).
    #[serde(default)]
    pub matrix_params: crate::path::MatrixParams,
    /// `X-HTTP-Method-Override` and its kin: `reject` (400) or `honor` (the policy sees the
    /// overridden method).
    #[serde(default)]
    pub method_override: crate::http::MethodOverride,
}

/// `jwt`: token providers and which paths need which of them.
#[derive(Debug, Clone, PartialEq, Deserialize)]
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
#[serde(rename_all = "snake_case")]
pub enum HostSignatures {
    #[default]
    Auto,
    Off,
}

/// `jwt.providers.<name>`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
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
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum JwksConfig {
    Inline(InlineJwks),
    Remote(RemoteJwks),
}

/// A JWK Set (RFC 7517 §5). Members other than `keys` are allowed by the RFC and ignored.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct InlineJwks {
    pub keys: Vec<Value>,
}

/// `jwks.remote`: keys fetched over an Envoy cluster and cached.
#[derive(Debug, Clone, PartialEq, Deserialize)]
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
#[serde(deny_unknown_fields)]
pub struct ClaimToHeader {
    pub claim: String,
    pub header: String,
}

/// `jwt.rules[]`: the providers a path prefix requires (any one of them); empty means public.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtRule {
    pub prefix: String,
    pub requires: Vec<String>,
}

/// `policy`: embedded Rego.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// File name → Rego source. Without it the built-in pack is used.
    #[serde(default)]
    pub modules: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub data: Option<Value>,
    #[serde(default = "default_entrypoint")]
    pub entrypoint: String,
    /// Path templates such as `/api/v1/tenants/{tenant_id}/documents/{doc_id}`.
    #[serde(default)]
    pub resources: Vec<String>,
    #[serde(default)]
    pub expose_reasons: bool,
    /// `enforce` (default) or `dry_run` (never denies; would-denies are counted and logged).
    #[serde(default)]
    pub mode: PolicyMode,
    /// A candidate policy evaluated beside the enforced one; disagreements are counted and
    /// logged, never enforced.
    #[serde(default)]
    pub shadow_modules: Option<BTreeMap<String, String>>,
    /// Evaluation time budget; past it the request is denied (`policy_timeout`).
    #[serde(default = "default_time_budget_ms")]
    pub time_budget_ms: u64,
    /// Off unless set: remembers decisions per worker, keyed by a digest of the input.
    #[serde(default)]
    pub decision_cache: Option<DecisionCacheConfig>,
    /// The headers the policy's `headers` output may set upstream. Client copies of them are
    /// removed from every request whether or not the policy sets them; an output naming any
    /// other header is a policy error.
    #[serde(default)]
    pub headers: Vec<String>,
}

/// `policy.decision_cache`: valid only for a policy that is a pure function of its input (no
/// `time.now_ns`, `http.send`, randomness).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionCacheConfig {
    /// Decisions kept per worker (least recently used leave first).
    pub max_entries: usize,
    /// How long a decision is reused; never past the token's `exp`.
    pub ttl_s: u64,
}

/// Whether policy denials are enforced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyMode {
    #[default]
    Enforce,
    DryRun,
}

/// `rate_limit`: the callout to apiguard-limiter.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Envoy cluster that reaches apiguard-limiter.
    pub cluster: String,
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
}

/// `X-RateLimit-*` (`legacy`), the IETF draft `RateLimit-Policy`/`RateLimit` (`ietf`), or both.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HeaderMode {
    Legacy,
    Ietf,
    #[default]
    Both,
}

/// What to do when the limiter cannot give an answer. `deny` unless an operator says otherwise.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureMode {
    #[default]
    Deny,
    Allow,
}

/// Who a request is counted against: `claim:NAME` (verified token only), `header:NAME`, or
/// `source_ip`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum IdentitySource {
    Claim(String),
    Header(String),
    SourceIp,
}

/// One window: at most `requests` per `window_s` seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limit {
    pub requests: u64,
    pub window_s: u64,
}

/// `rate_limit.routes[]`: limits for a path prefix, overriding the policy's tier.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
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
fn default_entrypoint() -> String {
    "data.api.authz".to_owned()
}
fn default_local_cache_entries() -> usize {
    1024
}
fn default_time_budget_ms() -> u64 {
    5
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

/// Why a configuration was refused. Every variant names the JSON path of the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration is empty: expected a JSON object (use {{}} for pass-through)")]
    Empty,
    #[error("configuration is {size} bytes, over the {max}-byte limit")]
    TooLarge { size: usize, max: usize },
    /// Malformed JSON, a wrong type, a missing or an unknown field.
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    /// Well-formed but not acceptable.
    #[error("{path}: {problem}")]
    Invalid { path: String, problem: Problem },
}

/// What is wrong with a well-formed field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("must not be empty")]
    Empty,
    #[error("must be greater than zero")]
    Zero,
    #[error("must be at most {max}")]
    TooLarge { max: u64 },
    #[error("must be between {min} and {max}")]
    OutOfRange { min: u64, max: u64 },
    #[error("must start with '/'")]
    NotAbsolutePath,
    #[error("names provider `{0}`, which is not configured under jwt.providers")]
    UnknownProvider(String),
    #[error("`{0}` is not a valid header name: use lowercase letters, digits and '-'")]
    BadHeaderName(String),
    #[error("`{0}` may not be set by the filter (pseudo-header, hop-by-hop or credential header)")]
    ReservedHeader(String),
    #[error("header `{0}` is set by more than one claim mapping")]
    DuplicateHeader(String),
    #[error("needs exactly one of `header`, `query` or `cookie`")]
    SourceKind,
    #[error("`prefix` is only allowed with `header`")]
    PrefixWithoutHeader,
    #[error("must be a JSON object")]
    NotAnObject,
    #[error("must be a JSON object, not an array")]
    ArrayForObject,
    #[error("duplicate entry `{0}`")]
    Duplicate(String),
    #[error("`{0}` is not a valid path template: {1}")]
    BadTemplate(String, &'static str),
    #[error("must look like `data.<package>`")]
    BadEntrypoint,
    #[error("`{0}` is not a valid provider name: use 1 to 64 letters, digits, '-', '_' or '.'")]
    BadProviderName(String),
    #[error("names tier `{0}`, which is not configured under rate_limit.tiers")]
    UnknownTier(String),
    #[error("no key can verify any of these algorithms")]
    NoUsableKey,
    #[error("{0}")]
    Jwks(String),
    #[error("does not compile:{0}")]
    Rego(String),
}

/// Something legal but probably unintended; the filter logs each one at configure time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigWarning {
    /// A provider without `audiences` accepts tokens minted for any audience of its issuer.
    NoAudiences { provider: String },
    /// The policy uses a construct regorus's compiled-program VM does not support; it runs on
    /// the (slower) interpreter.
    PolicyInterpreted { why: String },
    /// No stage is configured: the filter passes every request through unchecked.
    PassThrough,
}

impl fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigWarning::NoAudiences { provider } => write!(
                f,
                "jwt.providers.{provider}.audiences is not set: tokens for any audience of this issuer are accepted"
            ),
            ConfigWarning::PolicyInterpreted { why } => write!(
                f,
                "policy: evaluated by the regorus interpreter, not its compiled-program VM ({why})"
            ),
            ConfigWarning::PassThrough => write!(
                f,
                "no jwt, policy or rate_limit section: every request passes through unchecked"
            ),
        }
    }
}

/// A configuration that parsed and validated, with the warnings worth logging.
#[derive(Debug, Clone, PartialEq)]
pub struct Validated {
    pub config: Config,
    pub warnings: Vec<ConfigWarning>,
}

impl Config {
    /// Parses and validates a plugin configuration. An empty or whitespace-only configuration is
    /// refused: pass-through must be asked for explicitly with `{}`.
    pub fn from_json(bytes: &[u8]) -> Result<Validated, ConfigError> {
        if bytes.len() > MAX_CONFIG_BYTES {
            return Err(ConfigError::TooLarge {
                size: bytes.len(),
                max: MAX_CONFIG_BYTES,
            });
        }
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(ConfigError::Empty);
        }
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let config: Config = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let path = e.path().to_string();
            ConfigError::Parse {
                path: if path == "." {
                    "(root)".to_owned()
                } else {
                    path
                },
                message: e.into_inner().to_string(),
            }
        })?;
        // Trailing bytes after the object (`{} {}`) are a broken file, not a configuration.
        de.end().map_err(|e| ConfigError::Parse {
            path: "(root)".to_owned(),
            message: e.to_string(),
        })?;
        // The typed parse succeeded, so this cannot fail on syntax; it only feeds the shape check.
        if let Ok(tree) = serde_json::from_slice::<Value>(bytes) {
            if let Some(path) = array_for_object(&tree, &SHAPE) {
                let problem = if path == "(root)" {
                    Problem::NotAnObject
                } else {
                    Problem::ArrayForObject
                };
                return Err(invalid(path, problem));
            }
        }
        let mut warnings = Vec::new();
        config.validate(&mut warnings)?;
        Ok(Validated { config, warnings })
    }

    fn validate(&self, warnings: &mut Vec<ConfigWarning>) -> Result<(), ConfigError> {
        if self.jwt.is_none() && self.policy.is_none() && self.rate_limit.is_none() {
            warnings.push(ConfigWarning::PassThrough);
        }
        if let Some(jwt) = &self.jwt {
            validate_jwt(jwt, warnings)?;
        }
        if let Some(policy) = &self.policy {
            validate_policy(policy)?;
        }
        if let Some(rl) = &self.rate_limit {
            validate_rate_limit(rl)?;
        }
        Ok(())
    }
}

/// Where the configuration schema has arrays ([`apiguard_limiter_api::json_shape`]). `policy.data` is free-form
/// Rego data and JWK members (`keys`) are checked by the JWKS loader.
const SHAPE: Shape<'static> = Shape {
    arrays: &[
        "audiences",
        "algorithms",
        "sources",
        "claims_to_headers",
        "rules",
        "requires",
        "resources",
        "identity",
        "routes",
        "limits",
        "required_claims",
        "shadow_tiers",
        "headers",
    ],
    maps_of_arrays: &["tiers"],
    opaque: &["data", "keys", "modules", "shadow_modules"],
};

fn invalid(path: impl Into<String>, problem: Problem) -> ConfigError {
    ConfigError::Invalid {
        path: path.into(),
        problem,
    }
}

/// Longest callout timeout (`rate_limit.timeout_ms`, `jwks.remote.timeout_ms`). The SDK hands
/// Envoy the timeout as 32-bit milliseconds, and a value that wrapped to 0 would mean "no
/// timeout"; a minute is already far past any useful callout.
pub const MAX_TIMEOUT_MS: u64 = 60_000;
/// Longest `jwks.remote.refresh_s` and `min_refetch_s`: one week.
pub const MAX_REFRESH_S: u64 = 7 * 86_400;
/// Longest `jwks.remote.max_stale_s`: thirty days.
pub const MAX_STALE_S: u64 = 30 * 86_400;
/// Largest `clock_skew_s`: an hour of leeway is already more than any clock drifts.
pub const MAX_CLOCK_SKEW_S: u64 = 3_600;

/// Bounds of `jwt.max_token_bytes` and `jwt.cache_entries`.
pub const MAX_TOKEN_BYTES_RANGE: (usize, usize) = (256, 64 * 1024);
pub const MAX_CACHE_ENTRIES: usize = 100_000;

fn validate_jwt(jwt: &JwtConfig, warnings: &mut Vec<ConfigWarning>) -> Result<(), ConfigError> {
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
        // Names go into rate-limit keys (`{name/sub:…}`) and logs: no separators, no spaces.
        let name_ok = (1..=64).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !name_ok {
            return Err(invalid(at, Problem::BadProviderName(name.clone())));
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
        if p.max_lifetime_s == Some(0) {
            return Err(invalid(format!("{at}.max_lifetime_s"), Problem::Zero));
        }
        if p.clock_skew_s > MAX_CLOCK_SKEW_S {
            return Err(invalid(
                format!("{at}.clock_skew_s"),
                Problem::TooLarge {
                    max: MAX_CLOCK_SKEW_S,
                },
            ));
        }
        for (i, c) in p.required_claims.iter().enumerate() {
            if c.is_empty() {
                return Err(invalid(
                    format!("{at}.required_claims[{i}]"),
                    Problem::Empty,
                ));
            }
        }
        if p.typ.as_ref().is_some_and(String::is_empty) {
            return Err(invalid(format!("{at}.typ"), Problem::Empty));
        }
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

/// Header names are compared in lowercase by Envoy (HTTP/2 requires it), so the configuration
/// must spell them that way for the strip-then-set protection to match what arrives.
fn check_header_name(name: &str, at: &str) -> Result<(), ConfigError> {
    if http::is_header_name(name) {
        Ok(())
    } else {
        Err(invalid(at, Problem::BadHeaderName(name.to_owned())))
    }
}

fn check_settable_header(name: &str, at: &str) -> Result<(), ConfigError> {
    check_header_name(name, at)?;
    if !http::is_settable_header(name) {
        return Err(invalid(at, Problem::ReservedHeader(name.to_owned())));
    }
    Ok(())
}

fn validate_policy(p: &PolicyConfig) -> Result<(), ConfigError> {
    if let Some(modules) = &p.modules {
        if modules.is_empty() {
            return Err(invalid("policy.modules", Problem::Empty));
        }
    }
    if let Some(modules) = &p.shadow_modules {
        if modules.is_empty() {
            return Err(invalid("policy.shadow_modules", Problem::Empty));
        }
    }
    if !(1..=1000).contains(&p.time_budget_ms) {
        return Err(invalid(
            "policy.time_budget_ms",
            Problem::OutOfRange { min: 1, max: 1000 },
        ));
    }
    if let Some(c) = &p.decision_cache {
        if !(1..=MAX_CACHE_ENTRIES).contains(&c.max_entries) {
            return Err(invalid(
                "policy.decision_cache.max_entries",
                Problem::OutOfRange {
                    min: 1,
                    max: MAX_CACHE_ENTRIES as u64,
                },
            ));
        }
        if !(1..=3600).contains(&c.ttl_s) {
            return Err(invalid(
                "policy.decision_cache.ttl_s",
                Problem::OutOfRange { min: 1, max: 3600 },
            ));
        }
    }
    for (i, h) in p.headers.iter().enumerate() {
        let at = format!("policy.headers[{i}]");
        check_settable_header(h, &at)?;
        if p.headers[..i].contains(h) {
            return Err(invalid(at, Problem::Duplicate(h.clone())));
        }
    }
    if p.data.as_ref().is_some_and(|d| !d.is_object()) {
        return Err(invalid("policy.data", Problem::NotAnObject));
    }
    let valid_entry = p
        .entrypoint
        .strip_prefix("data.")
        .is_some_and(|rest| !rest.is_empty() && rest.split('.').all(is_rego_ident));
    if !valid_entry {
        return Err(invalid("policy.entrypoint", Problem::BadEntrypoint));
    }
    for (i, t) in p.resources.iter().enumerate() {
        if let Err(why) = check_template(t) {
            return Err(invalid(
                format!("policy.resources[{i}]"),
                Problem::BadTemplate(t.clone(), why),
            ));
        }
    }
    Ok(())
}

fn is_rego_ident(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A resource template is an absolute path whose segments are literals or `{name}` captures
/// that fill a whole segment.
fn check_template(t: &str) -> Result<(), &'static str> {
    let rest = t.strip_prefix('/').ok_or("must start with '/'")?;
    let mut names: Vec<&str> = Vec::new();
    for seg in rest.split('/') {
        if seg.is_empty() {
            return Err("empty segment");
        }
        if let Some(name) = seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            if !is_rego_ident(name) {
                return Err("a capture must be {name} with a letter, digit or '_' name");
            }
            if names.contains(&name) {
                return Err("a capture name is used twice");
            }
            names.push(name);
        } else if seg.contains(['{', '}']) {
            return Err("a capture must fill a whole segment");
        }
    }
    Ok(())
}

fn validate_rate_limit(rl: &RateLimitConfig) -> Result<(), ConfigError> {
    if rl.cluster.is_empty() {
        return Err(invalid("rate_limit.cluster", Problem::Empty));
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

#[cfg(test)]
mod tests;
