//! The `policy` section: the embedded Rego policy (the built-in pack or the operator's modules),
//! its data, budget, mode, shadow policy and decision cache (docs/configuration.md).

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use super::common::{check_settable_header, invalid, ConfigError, Problem, MAX_CACHE_ENTRIES};

/// `policy`: embedded Rego.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// File name → Rego source. Without it the built-in pack is used.
    #[serde(default)]
    pub modules: Option<BTreeMap<String, String>>,
    /// How the built-in pack runs (without `modules`): compiled from its settings (`native`,
    /// the default) or its Rego on regorus (`rego`).
    #[serde(default)]
    pub pack_engine: PackEngine,
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
    /// The Rego version `modules` and `shadow_modules` are read as: `v1` (the default, as OPA
    /// 1.x reads them) or `v0` (as OPA before 1.0 did: `allow { … }` without `if`, `p[x] { … }`
    /// a partial set). A module that imports `rego.v1` is Rego v1 either way.
    #[serde(default)]
    pub rego_version: RegoVersion,
}

/// `policy.rego_version`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum RegoVersion {
    /// Rego v0, OPA's language before 1.0: `if` and `contains` only with `future.keywords`
    /// imports, rule bodies without `if`.
    V0,
    /// Rego v1, OPA 1.x's language (and any module that imports `rego.v1`).
    #[default]
    V1,
}

/// `policy.pack_engine`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum PackEngine {
    /// The pack's settings compiled into a native decision; no Rego runs per request.
    #[default]
    Native,
    /// `policies/api_authz.rego` evaluated by regorus, as a custom policy is.
    Rego,
}

/// `policy.decision_cache`: valid only for a policy that is a pure function of its input (no
/// `time.now_ns`, `http.send`, randomness).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct DecisionCacheConfig {
    /// Decisions kept per worker (least recently used leave first).
    pub max_entries: usize,
    /// How long a decision is reused; never past the token's `exp`.
    pub ttl_s: u64,
}

/// Whether policy denials are enforced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum PolicyMode {
    #[default]
    Enforce,
    DryRun,
}

fn default_entrypoint() -> String {
    "data.api.authz".to_owned()
}
fn default_time_budget_ms() -> u64 {
    5
}

/// Checks what the types alone cannot say; run first by the stage's `compile`.
pub(crate) fn validate_policy(p: &PolicyConfig) -> Result<(), ConfigError> {
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
