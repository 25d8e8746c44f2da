//! Plugin configuration: the JSON carried in the Wasm filter's `configuration` field.
//!
//! Parsing is strict: an unknown field anywhere is an error, because a misspelt security setting
//! that is silently ignored is a hole (`audience` for `audiences` would turn the `aud` check off).
//! Every error names the JSON path of the offending field, e.g. `jwt.providers.primary.issuer`.
//!
//! A configuration is accepted in one pass, run once per configuration (in the filter's
//! `on_configure` and in `apiguard validate`):
//! 1. [`Config::from_json`] parses it: strict types, defaults, the shape of arrays.
//! 2. Each section compiles into its stage in one function that also checks what the types
//!    alone cannot say (references, ranges, header names) before it compiles
//!    (`JwtStage::compile`, whose claim rules are `TokenRules::compile`; `PolicyStage::compile`;
//!    `RateLimitStage::compile`). Each section's schema, defaults, bounds and checks live in a
//!    file of its own (`jwt.rs`, `policy.rs`, `rate_limit.rs`), re-exported here; this file holds
//!    the whole, and `common.rs` the errors and the rules the sections share.
//!
//! The one public entry is `flow::Pipeline::from_json`, which runs both, so nothing outside the
//! core can hold a configuration that was parsed and not compiled.

use serde::Deserialize;
use serde_json::Value;

use apiguard_limiter_api::json_shape::{array_for_object, Shape};

mod common;
mod contract;
mod jwt;
mod policy;
mod rate_limit;

pub(crate) use common::invalid;
pub use common::{
    ConfigError, ConfigWarning, Problem, DEFAULT_CLOCK_SKEW_S, MAX_CACHE_ENTRIES, MAX_TIMEOUT_MS,
};
pub use contract::*;
pub use jwt::*;
pub use policy::*;
pub use rate_limit::*;

/// Largest configuration accepted. Inline JWKS and Rego modules make configurations large,
/// but anything past this is a mistake and parsing it would only waste worker memory.
pub const MAX_CONFIG_BYTES: usize = 1024 * 1024;

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
    /// The API's OpenAPI document, enforced as a positive model (docs/contract.md).
    #[serde(default)]
    pub contract: Option<ContractConfig>,
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

/// A configuration that parsed (step 1), with the warnings worth logging.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Parsed {
    pub config: Config,
    pub warnings: Vec<ConfigWarning>,
}

impl Config {
    /// Parses a plugin configuration. An empty or whitespace-only configuration is refused:
    /// pass-through must be asked for explicitly with `{}`.
    pub(crate) fn from_json(bytes: &[u8]) -> Result<Parsed, ConfigError> {
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
        if config.jwt.is_none()
            && config.policy.is_none()
            && config.rate_limit.is_none()
            && config.contract.is_none()
        {
            warnings.push(ConfigWarning::PassThrough);
        }
        Ok(Parsed { config, warnings })
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
    opaque: &["data", "keys", "modules", "shadow_modules", "openapi"],
};

#[cfg(test)]
mod tests;
