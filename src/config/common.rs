//! What the configuration's sections share: the errors and warnings, the bounds, and the rules
//! for names and header names. It imports nothing of the sections, which all read it (and
//! `mod.rs` re-exports it), so no section and the whole depend on each other.

use std::fmt;

use crate::http;

/// Default leeway for `exp`, `nbf` and `iat` checks (`clock_skew_s` in docs/configuration.md).
pub const DEFAULT_CLOCK_SKEW_S: u64 = 30;

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
    #[error("cannot be enforced exactly: {0}")]
    Unenforceable(String),
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
