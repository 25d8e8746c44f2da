//! The built-in pack compiled from its settings: the decision `policies/api_authz.rego` makes,
//! computed natively, with no Rego evaluation per request.
//!
//! The pack is a parameterised policy: its behaviour is fixed by its settings
//! (`data.api_authz`, the pack's defaults with the operator's `policy.data` merged over them).
//! At configure time [`Pack::compile`] reads those settings into typed lists; each request is
//! then a handful of string comparisons. `policies/api_authz.rego` stays the normative
//! specification: every rule below names the Rego rule it mirrors, and a differential test
//! (`src/policy/pack_tests.rs`, and `just pack-diff` for a long run) requires both to give the
//! same allow, reasons, tier and cost on every case file and on generated requests.
//!
//! Only settings of the shapes the pack's defaults have are compiled (lists of strings, maps of
//! strings); anything else is left to regorus, which defines what Rego makes of it, and the
//! configuration loader says so ([`crate::config::ConfigWarning::PolicyInterpreted`]).

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::decision::PolicyDecision;
use super::input::key;

/// The built-in policy pack (`policies/api_authz.rego`), compiled into the module.
pub const BUILTIN_PACK: &str = include_str!("../../policies/api_authz.rego");
pub const BUILTIN_NAME: &str = "api_authz.rego";
/// The pack's default settings (`data.api_authz`).
pub const BUILTIN_DATA: &str = include_str!("../../policies/api_authz.data.json");

/// The data a policy is compiled with: for the built-in pack, the operator's data merged over
/// the pack's defaults (objects merge member by member, anything else replaces), once, here.
pub fn effective_data(
    modules: &BTreeMap<String, String>,
    data: &serde_json::Value,
) -> serde_json::Value {
    if modules.get(BUILTIN_NAME).map(String::as_str) != Some(BUILTIN_PACK) {
        return data.clone();
    }
    let mut base: serde_json::Value = serde_json::from_str(BUILTIN_DATA).unwrap_or_default();
    merge(&mut base, data);
    // The pack matches prefixes with `strings.any_prefix_match` on the lower-cased path plus
    // `/`, so each prefix is lower-cased and ends with exactly one `/` (written `/api/v1/admin`,
    // `/API/v1/admin/` alike).
    if let Some(settings) = base.get_mut("api_authz").and_then(|v| v.as_object_mut()) {
        for key in ["public_prefixes", "admin_prefixes", "tenant_prefixes"] {
            if let Some(list) = settings.get_mut(key).and_then(|v| v.as_array_mut()) {
                for p in list.iter_mut() {
                    if let Some(text) = p.as_str() {
                        *p = format!("{}/", text.trim_end_matches('/').to_ascii_lowercase()).into();
                    }
                }
            }
        }
    }
    base
}

fn merge(base: &mut serde_json::Value, over: &serde_json::Value) {
    match (base, over) {
        (serde_json::Value::Object(b), serde_json::Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (slot, v) => *slot = v.clone(),
    }
}

/// The pack's settings, compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pack {
    /// Lower-cased, each ending with exactly one `/` (as [`super::effective_data`] writes them).
    public_prefixes: Vec<String>,
    admin_prefixes: Vec<String>,
    tenant_prefixes: Vec<String>,
    roles_claim: String,
    tenant_claim: String,
    role_hierarchy: Vec<String>,
    role_methods: BTreeMap<String, Vec<String>>,
    admin_roles: Vec<String>,
    blocked_methods: Vec<String>,
    tiers: BTreeMap<String, String>,
    default_tier: String,
}

/// Why settings were not compiled: the setting and the shape it should have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`api_authz.{key}` is not {shape}")]
pub struct NotCompiled {
    pub key: &'static str,
    pub shape: &'static str,
}

/// `input.token` as the pack reads it.
#[derive(Debug, Clone, Copy)]
pub enum Token<'a> {
    /// Undefined or `false`: `not input.token` holds.
    Absent,
    /// Present; its members when it is an object (claims), none otherwise.
    Present(Option<&'a Map<String, Value>>),
}

/// `input.resource.tenant_id` as the pack reads it.
#[derive(Debug, Clone, Copy)]
pub enum Tenant<'a> {
    /// Undefined or `false`.
    Absent,
    /// Present; the text when it is a string (only a string can match the token's claim).
    Present(Option<&'a str>),
}

/// What the pack reads of a request.
#[derive(Debug, Clone)]
pub struct PackRequest<'a> {
    /// `input.request.method`; `None` when it is not a string (it then equals no method).
    pub method: Option<&'a str>,
    /// `input.request.lower_path`; `None` when it is not a string (no prefix then matches).
    pub lower_path: Option<Cow<'a, str>>,
    pub token: Token<'a>,
    pub tenant: Tenant<'a>,
}

impl<'a> PackRequest<'a> {
    /// From an input document as JSON (`apiguard policy test/eval`, the differential test).
    pub fn from_json(input: &'a Value) -> PackRequest<'a> {
        let truthy = |v: Option<&'a Value>| v.filter(|v| **v != Value::Bool(false));
        let request = input.get(key::REQUEST);
        PackRequest {
            method: request
                .and_then(|r| r.get(key::METHOD))
                .and_then(Value::as_str),
            lower_path: request
                .and_then(|r| r.get(key::LOWER_PATH))
                .and_then(Value::as_str)
                .map(Cow::Borrowed),
            token: match truthy(input.get(key::TOKEN)) {
                None => Token::Absent,
                Some(t) => Token::Present(t.as_object()),
            },
            tenant: match truthy(input.get(key::RESOURCE).and_then(|r| r.get("tenant_id"))) {
                None => Tenant::Absent,
                Some(t) => Tenant::Present(t.as_str()),
            },
        }
    }
}

fn strings(settings: &Map<String, Value>, key: &'static str) -> Result<Vec<String>, NotCompiled> {
    let bad = NotCompiled {
        key,
        shape: "a list of strings",
    };
    settings
        .get(key)
        .and_then(Value::as_array)
        .ok_or(bad.clone())?
        .iter()
        .map(|v| v.as_str().map(str::to_owned).ok_or(bad.clone()))
        .collect()
}

fn string(settings: &Map<String, Value>, key: &'static str) -> Result<String, NotCompiled> {
    settings
        .get(key)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or(NotCompiled {
            key,
            shape: "a string",
        })
}

impl Pack {
    /// Compiles the pack's effective data (`{"api_authz": {…}}`, as [`super::effective_data`]
    /// makes it).
    pub fn compile(data: &Value) -> Result<Pack, NotCompiled> {
        let settings = data
            .get("api_authz")
            .and_then(Value::as_object)
            .ok_or(NotCompiled {
                key: "(root)",
                shape: "an object",
            })?;
        let role_methods = settings
            .get("role_methods")
            .and_then(Value::as_object)
            .and_then(|m| {
                m.iter()
                    .map(|(role, methods)| {
                        let list = methods.as_array()?;
                        let list: Option<Vec<String>> =
                            list.iter().map(|v| v.as_str().map(str::to_owned)).collect();
                        Some((role.clone(), list?))
                    })
                    .collect::<Option<BTreeMap<_, _>>>()
            })
            .ok_or(NotCompiled {
                key: "role_methods",
                shape: "an object of lists of strings",
            })?;
        let tiers = settings
            .get("tiers")
            .and_then(Value::as_object)
            .and_then(|m| {
                m.iter()
                    .map(|(role, tier)| Some((role.clone(), tier.as_str()?.to_owned())))
                    .collect::<Option<BTreeMap<_, _>>>()
            })
            .ok_or(NotCompiled {
                key: "tiers",
                shape: "an object of strings",
            })?;
        Ok(Pack {
            public_prefixes: strings(settings, "public_prefixes")?,
            admin_prefixes: strings(settings, "admin_prefixes")?,
            tenant_prefixes: strings(settings, "tenant_prefixes")?,
            roles_claim: string(settings, "roles_claim")?,
            tenant_claim: string(settings, "tenant_claim")?,
            role_hierarchy: strings(settings, "role_hierarchy")?,
            role_methods,
            admin_roles: strings(settings, "admin_roles")?,
            blocked_methods: strings(settings, "blocked_methods")?,
            tiers,
            default_tier: string(settings, "default_tier")?,
        })
    }

    /// The pack's decision: `allow`, and `reasons` only for a request it does not allow (as the
    /// filter reads the Rego pack), `rate_limit_tier`; the pack sets no cost and no headers.
    pub fn decide(&self, r: &PackRequest<'_>) -> PolicyDecision {
        let is = |list: &[String], s: Option<&str>| s.is_some_and(|s| list.iter().any(|x| x == s));
        // path_slash := concat("", [trim_right(input.request.lower_path, "/"), "/"]), read
        // without building it: `trimmed + "/"` starts with `x` exactly when `trimmed` does, or
        // `x` is `trimmed` and a `/`.
        let trimmed = r.lower_path.as_deref().map(|p| p.trim_end_matches('/'));
        let slash_starts_with =
            |t: &str, x: &str| t.starts_with(x) || x.strip_suffix('/').is_some_and(|x| x == t);
        // strings.any_prefix_match(path_slash, config.*_prefixes)
        let under = |prefixes: &[String]| {
            trimmed.is_some_and(|t| prefixes.iter().any(|x| slash_starts_with(t, x)))
        };
        let public_path = under(&self.public_prefixes);
        let admin_path = under(&self.admin_prefixes);
        let tenant_path = under(&self.tenant_prefixes);
        let claims = match r.token {
            Token::Present(c) => c,
            Token::Absent => None,
        };
        let has_token = matches!(r.token, Token::Present(_));
        // claimed_roles: the claim as a list, or a single string as a list of one.
        let claimed: &[Value] = match claims.and_then(|c| c.get(&self.roles_claim)) {
            Some(Value::Array(a)) => a,
            Some(v @ Value::String(_)) => std::slice::from_ref(v),
            _ => &[],
        };
        // role := config.role_hierarchy[max([i | some i, r in config.role_hierarchy; r in claimed_roles])]
        let role = self
            .role_hierarchy
            .iter()
            .rposition(|h| claimed.iter().any(|c| c.as_str() == Some(h.as_str())))
            .and_then(|i| self.role_hierarchy.get(i));
        // method_allowed if input.request.method in config.role_methods[role]
        let method_allowed = role
            .and_then(|role| self.role_methods.get(role))
            .is_some_and(|m| is(m, r.method));
        // is_admin if role in config.admin_roles
        let is_admin = is(&self.admin_roles, role.map(String::as_str));
        // tenant_matches: the resource's tenant is a string equal to the token's tenant claim.
        let tenant_matches = match (r.tenant, claims.and_then(|c| c.get(&self.tenant_claim))) {
            (Tenant::Present(Some(t)), Some(Value::String(claim))) => t == claim,
            _ => false,
        };
        let has_tenant = matches!(r.tenant, Tenant::Present(_));
        let blocked = is(&self.blocked_methods, r.method);
        // passes_common_checks: not blocked, admin_ok, tenant_ok.
        let admin_ok = !admin_path || is_admin;
        let tenant_ok = tenant_matches || (!has_tenant && !tenant_path);
        let common = !blocked && admin_ok && tenant_ok;
        // allow: a token whose highest role may use this method, or no token on a public path.
        let allow = common && ((has_token && method_allowed) || (!has_token && public_path));
        let mut reasons = Vec::new();
        if !allow {
            let checks = [
                (blocked, "method_blocked"),
                (!has_token && !public_path, "token_required"),
                (has_token && role.is_none(), "no_role"),
                (
                    has_token && role.is_some() && !method_allowed,
                    "method_not_allowed",
                ),
                (admin_path && !is_admin, "admin_only"),
                (tenant_path && !has_tenant, "tenant_unresolved"),
                (has_tenant && !tenant_matches, "tenant_mismatch"),
            ];
            reasons = checks
                .iter()
                .filter(|(fails, _)| *fails)
                .map(|(_, why)| (*why).to_owned())
                .collect();
            if reasons.is_empty() {
                reasons.push("denied".to_owned());
            }
            reasons.sort();
        }
        // rate_limit_tier: the role's tier, else the default.
        let tier = match role {
            Some(role) => self.tiers.get(role).unwrap_or(&self.default_tier),
            None => &self.default_tier,
        };
        PolicyDecision {
            allow,
            reasons,
            tier: Some(tier.clone()),
            ..PolicyDecision::default()
        }
    }
}
