//! Plugin configuration: the JSON carried in the Wasm filter's `configuration` field.
//!
//! Parsing is strict: an unknown field anywhere is an error, because a misspelt security setting
//! that is silently ignored is a hole (`audience` for `audiences` would turn the `aud` check off).
//! Every error names the JSON path of the offending field, e.g. `jwt.providers.primary.issuer`.
//!
//! A configuration is accepted in two steps, both run once per configuration (in the filter's
//! `on_configure` and in `apiguard validate`), and only together:
//! 1. [`Config::from_json`] parses, then validates what the types alone cannot say (references
//!    between sections, ranges, header names). Each section's schema, defaults, bounds and
//!    checks live in a file of its own (`jwt.rs`, `policy.rs`, `rate_limit.rs`), re-exported
//!    here; this file holds the whole, the errors and the rules sections share.
//! 2. Each section compiles into its stage (`JwtStage::compile` decodes inline JWKS,
//!    `PolicyStage::compile` compiles Rego): refusals only compiling can find, and its
//!    `Result` says so.
//!
//! The one public entry is `flow::Pipeline::from_json`, which runs both, so nothing outside the
//! core can hold a configuration that passed the first step alone.

use std::fmt;

use serde::Deserialize;
use serde_json::Value;

use crate::http;
use apiguard_limiter_api::json_shape::{array_for_object, Shape};

mod jwt;
mod policy;
mod rate_limit;

pub use jwt::*;
pub use policy::*;
pub use rate_limit::*;

/// Largest configuration accepted. Inline JWKS and Rego modules make configurations large,
/// but anything past this is a mistake and parsing it would only waste worker memory.
pub const MAX_CONFIG_BYTES: usize = 1024 * 1024;

/// Default leeway for `exp`, `nbf` and `iat` checks (`clock_skew_s` in docs/configuration.md).
pub const DEFAULT_CLOCK_SKEW_S: u64 = 30;

/// The whole plugin configuration. Every section is optional; a missing section turns its
/// stage off.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
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
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
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
    #[error("`{0}` is not a valid name: use 1 to 64 letters, digits, '-', '_' or '.'")]
    BadName(String),
    #[error("names tier `{0}`, which is not configured under rate_limit.tiers")]
    UnknownTier(String),
    #[error("no key can verify any of these algorithms")]
    NoUsableKey,
    #[error("{0}")]
    Jwks(String),
    #[error("does not compile:{0}")]
    Rego(String),
    #[error("is not used when {0}")]
    NotUsed(&'static str),
}

/// Something legal but probably unintended; the filter logs each one at configure time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigWarning {
    /// A provider without `audiences` accepts tokens minted for any audience of its issuer.
    NoAudiences { provider: String },
    /// The policy uses a construct regorus's compiled-program VM does not support; it runs on
    /// the (slower) interpreter.
    PolicyInterpreted { why: String },
    /// `pack_engine: native`, but the pack's settings are not of the shapes it compiles: its
    /// Rego runs instead.
    PackNotCompiled { why: String },
    /// `decision_cache` with the compiled pack, which decides faster than a cache lookup: the
    /// cache is not used.
    DecisionCacheUnused,
    /// No stage is configured: the filter passes every request through unchecked.
    PassThrough,
    /// A policy rule whose form readers of older policies take for another
    /// (docs/policies.md, "Rule forms"): named with its module and line.
    PolicyRuleForm { why: String },
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
            ConfigWarning::PackNotCompiled { why } => write!(
                f,
                "policy: the built-in pack runs as Rego, not compiled ({why})"
            ),
            ConfigWarning::DecisionCacheUnused => write!(
                f,
                "policy.decision_cache has no effect with the compiled built-in pack (pack_engine: native)"
            ),
            ConfigWarning::PassThrough => write!(
                f,
                "no jwt, policy or rate_limit section: every request passes through unchecked"
            ),
            ConfigWarning::PolicyRuleForm { why } => write!(f, "policy: {why}"),
        }
    }
}

/// A configuration that parsed and validated (step 1), with the warnings worth logging.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Validated {
    pub config: Config,
    pub warnings: Vec<ConfigWarning>,
}

impl Config {
    /// Parses and validates a plugin configuration. An empty or whitespace-only configuration is
    /// refused: pass-through must be asked for explicitly with `{}`.
    pub(crate) fn from_json(bytes: &[u8]) -> Result<Validated, ConfigError> {
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

/// Whether `name` may name a provider, a tier or a route: 1 to 64 letters, digits, `-`, `_` or
/// `.`. Names go into rate-limit keys (`{name/sub:…}`), logs and the quoted item names of the
/// `RateLimit-Policy` response header: no separators, quotes, spaces or control characters.
pub(crate) fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

pub(crate) fn invalid(path: impl Into<String>, problem: Problem) -> ConfigError {
    ConfigError::Invalid {
        path: path.into(),
        problem,
    }
}

/// Longest callout timeout (`rate_limit.timeout_ms`, `jwks.remote.timeout_ms`). The SDK hands
/// Envoy the timeout as 32-bit milliseconds, and a value that wrapped to 0 would mean "no
/// timeout"; a minute is already far past any useful callout.
pub const MAX_TIMEOUT_MS: u64 = 60_000;
/// Most entries of any cache (`jwt.cache_entries`, `policy.decision_cache.max_entries`,
/// `rate_limit.local_cache_entries`).
pub const MAX_CACHE_ENTRIES: usize = 100_000;
/// Header names are compared in lowercase by Envoy (HTTP/2 requires it), so the configuration
/// must spell them that way for the strip-then-set protection to match what arrives.
pub(crate) fn check_header_name(name: &str, at: &str) -> Result<(), ConfigError> {
    if http::is_header_name(name) {
        Ok(())
    } else {
        Err(invalid(at, Problem::BadHeaderName(name.to_owned())))
    }
}

pub(crate) fn check_settable_header(name: &str, at: &str) -> Result<(), ConfigError> {
    check_header_name(name, at)?;
    if !http::is_settable_header(name) {
        return Err(invalid(at, Problem::ReservedHeader(name.to_owned())));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
