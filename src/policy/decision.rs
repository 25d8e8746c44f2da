//! The decision: the policy's outputs (`allow`, `reasons`, `rate_limit_tier`,
//! `rate_limit_cost`, `headers`) read into a [`PolicyDecision`], and how a policy fails to
//! decide. Outputs of the wrong type are a policy error; an undefined `allow` denies (fail
//! closed).

use regorus::Value as RegoValue;

/// Marks an output the policy left undefined.
pub(super) const UNDEFINED: &str = "apiguard:undefined";
/// Outputs read from the policy package.
pub(super) const OUTPUTS: [&str; 5] = [
    "allow",
    "reasons",
    "rate_limit_tier",
    "rate_limit_cost",
    "headers",
];

/// How a policy failed to decide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyFailure {
    /// An evaluation error, or outputs of the wrong type.
    Error,
    /// Over the time budget (or the instruction limit).
    Timeout,
    /// `allow` is undefined.
    Undefined,
}

impl PolicyFailure {
    pub fn reason(self) -> &'static str {
        match self {
            PolicyFailure::Error => "policy_error",
            PolicyFailure::Timeout => "policy_timeout",
            PolicyFailure::Undefined => "policy_undefined",
        }
    }
}

/// A policy's decision.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyDecision {
    pub allow: bool,
    pub reasons: Vec<String>,
    pub tier: Option<String>,
    pub cost: Option<u64>,
    pub headers: Vec<(String, String)>,
    pub failure: Option<PolicyFailure>,
}

impl PolicyDecision {
    /// The decision as a JSON object, named as the policy's outputs are (`allow`, `reasons`,
    /// `rate_limit_tier`, `rate_limit_cost`, `headers`) and `failure`: what `apiguard policy
    /// eval` prints and what the OPA differential compares.
    pub fn to_json(&self) -> serde_json::Value {
        let headers: serde_json::Map<String, serde_json::Value> = self
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect();
        serde_json::json!({
            "allow": self.allow,
            "reasons": self.reasons,
            "rate_limit_tier": self.tier,
            "rate_limit_cost": self.cost,
            "headers": headers,
            "failure": self.failure.map(|f| f.reason()),
        })
    }

    pub(crate) fn failed(f: PolicyFailure) -> PolicyDecision {
        PolicyDecision {
            allow: false,
            reasons: vec![f.reason().to_owned()],
            failure: Some(f),
            ..PolicyDecision::default()
        }
    }
}

/// An output the entry rule did not define.
pub(super) static NOT_DEFINED: RegoValue = RegoValue::Undefined;

/// Reads the decision object; outputs of the wrong type are a policy error. The object is
/// walked once, matching member names as text (looking each output up would make a policy
/// value per name per request).
pub(super) fn decode(v: &RegoValue) -> PolicyDecision {
    let mut found = [&NOT_DEFINED; OUTPUTS.len()];
    if let RegoValue::Object(members) = v {
        for (name, value) in members.iter() {
            let RegoValue::String(name) = name else {
                continue;
            };
            let Some(slot) = OUTPUTS
                .iter()
                .position(|o| *o == name.as_ref())
                .and_then(|i| found.get_mut(i))
            else {
                continue;
            };
            if !matches!(value, RegoValue::String(s) if s.as_ref() == UNDEFINED) {
                *slot = value;
            }
        }
    }
    decide(found)
}

/// The decision from the outputs' values, in the order of [`OUTPUTS`] (`Undefined` for one the
/// policy left undefined); outputs of the wrong type are a policy error.
pub(super) fn decide(outputs: [&RegoValue; OUTPUTS.len()]) -> PolicyDecision {
    let [allow, reasons, tier, cost, headers] = outputs;
    let allow = match allow {
        RegoValue::Undefined => return PolicyDecision::failed(PolicyFailure::Undefined),
        RegoValue::Bool(b) => *b,
        // Anything but a boolean `true` denies, but it is not an error: OPA's own contract.
        _ => false,
    };
    let mut d = PolicyDecision {
        allow,
        ..PolicyDecision::default()
    };
    match reasons {
        RegoValue::Undefined => {}
        RegoValue::Set(s) => d.reasons = s.iter().filter_map(as_str).collect(),
        RegoValue::Array(a) => d.reasons = a.iter().filter_map(as_str).collect(),
        // `reasons[r] if …` (without `contains`) is a partial object `{r: true}` in Rego v1
        // and in OPA's v0 mode: its keys are the reasons. Any other member value is not that
        // form (the loader refuses such rules, [`forms`]; a complete rule can still make one).
        RegoValue::Object(o) => {
            for (k, v) in o.iter() {
                match (as_str(k), v) {
                    (Some(reason), RegoValue::Bool(true)) => d.reasons.push(reason),
                    _ => return PolicyDecision::failed(PolicyFailure::Error),
                }
            }
        }
        _ => return PolicyDecision::failed(PolicyFailure::Error),
    }
    match tier {
        RegoValue::Undefined => {}
        RegoValue::String(s) => d.tier = Some(s.to_string()),
        _ => return PolicyDecision::failed(PolicyFailure::Error),
    }
    match cost {
        RegoValue::Undefined => {}
        n @ RegoValue::Number(_) => match n.as_u64() {
            // Past the limiter's largest cost every call would fail: with `failure_mode:
            // allow` that is no limit at all, with `deny` a permanent 503. A policy error.
            Ok(c) if (1..=apiguard_limiter_api::MAX_COST).contains(&c) => d.cost = Some(c),
            _ => return PolicyDecision::failed(PolicyFailure::Error),
        },
        _ => return PolicyDecision::failed(PolicyFailure::Error),
    }
    match headers {
        RegoValue::Undefined => {}
        RegoValue::Object(o) => {
            for (k, val) in o.iter() {
                match (as_str(k), as_str(val)) {
                    (Some(name), Some(value)) if header_ok(&name, &value) => {
                        d.headers.push((name, value))
                    }
                    _ => return PolicyDecision::failed(PolicyFailure::Error),
                }
            }
        }
        _ => return PolicyDecision::failed(PolicyFailure::Error),
    }
    if !d.allow && d.reasons.is_empty() {
        d.reasons.push("denied".into());
    }
    d.reasons.sort();
    d
}

fn as_str(v: &RegoValue) -> Option<String> {
    match v {
        RegoValue::String(s) => Some(s.to_string()),
        _ => None,
    }
}

/// A header a policy may add upstream: one the filter may set at all
/// ([`crate::http::is_settable_header`]), with a value without control characters.
fn header_ok(name: &str, value: &str) -> bool {
    crate::http::is_settable_header(name)
        && value.len() <= 4096
        && !value.bytes().any(|b| b < 0x20 || b == 0x7f)
}
