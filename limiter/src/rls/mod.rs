//! Envoy's rate-limit service protocol (`envoy.service.ratelimit.v3.RateLimitService`), served
//! beside `POST /v1/check` so that Envoy's native `ratelimit` filter (and Istio or other
//! deployments built on it) get the same exact sliding windows (docs/ratelimit.md, "Envoy's
//! rate-limit service protocol").
//!
//! Limits come from a descriptor file in the spirit of envoyproxy/ratelimit's: one YAML document
//! per domain, a tree of `key` / optional `value` nodes, each node with an optional `rate_limit`.
//! This module is the sans-IO part: the file's types, their validation, and the translation of
//! one `ShouldRateLimit` call into one atomic store call ([`Descriptors::plan`]); [`service`]
//! speaks gRPC.

pub mod service;

use std::collections::HashMap;
use std::path::Path;

use apiguard_limiter_api::{Check, LimitAlgorithm, MAX_CHECKS, MAX_COST, MAX_KEY_BYTES};
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// Longest domain name: a key carries it (percent-encoded) besides a 64-character digest, within
/// the store's 512 bytes.
pub const MAX_DOMAIN_BYTES: usize = 96;

/// One domain's limits: one YAML document of the descriptor file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DomainFile {
    pub domain: String,
    #[serde(default)]
    pub descriptors: Vec<DescriptorNode>,
}

/// A node of the descriptor tree: an entry `key` (and, when given, its exact `value`; without
/// one, every value of the key is counted apart).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DescriptorNode {
    pub key: String,
    #[serde(default)]
    pub value: Option<String>,
    #[serde(default)]
    pub rate_limit: Option<RateLimit>,
    #[serde(default)]
    pub descriptors: Vec<DescriptorNode>,
}

/// The limit of a node.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// The window: `second`, `minute`, `hour` or `day`.
    #[serde(default)]
    pub unit: Option<Unit>,
    /// Requests (hits) admitted per window.
    #[serde(default)]
    pub requests_per_unit: u32,
    /// A name reported back to Envoy with the limit.
    #[serde(default)]
    pub name: Option<String>,
    /// No limit for this node (and it stops the search: a more general node does not apply).
    #[serde(default)]
    pub unlimited: bool,
    /// `log` (exact, the default) or `counter` (O(1) memory per key), as in `POST /v1/check`.
    #[serde(default)]
    pub algorithm: LimitAlgorithm,
}

/// A window length, as Envoy's protocol names it. Longer units (week, month, year) are past the
/// limiter's longest window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Unit {
    #[serde(alias = "SECOND")]
    Second,
    #[serde(alias = "MINUTE")]
    Minute,
    #[serde(alias = "HOUR")]
    Hour,
    #[serde(alias = "DAY")]
    Day,
}

impl Unit {
    pub fn window_ms(self) -> u64 {
        match self {
            Unit::Second => 1_000,
            Unit::Minute => 60_000,
            Unit::Hour => 3_600_000,
            Unit::Day => 86_400_000,
        }
    }

    /// The protocol's `RateLimit.Unit` number.
    pub fn proto(self) -> i32 {
        match self {
            Unit::Second => 1,
            Unit::Minute => 2,
            Unit::Hour => 3,
            Unit::Day => 4,
        }
    }
}

/// Why the descriptor file was refused. Each error names the domain and the node's path.
#[derive(Debug, thiserror::Error)]
pub enum DescriptorsError {
    #[error("{path}: {message}")]
    Read { path: String, message: String },
    #[error("document {0}: {1}")]
    Parse(usize, String),
    #[error("document {0}: domain must not be empty")]
    EmptyDomain(usize),
    #[error("document {0}: domain is {1} bytes; at most {MAX_DOMAIN_BYTES}")]
    LongDomain(usize, usize),
    #[error("domain `{0}` is defined twice")]
    DuplicateDomain(String),
    #[error("domain `{domain}`, {node}: {message}")]
    Node {
        domain: String,
        node: String,
        message: String,
    },
}

/// A compiled node: children by exact key and value, and by key alone.
#[derive(Debug, Default)]
struct Node {
    exact: HashMap<(String, String), Node>,
    any_value: HashMap<String, Node>,
    limit: Option<Rule>,
}

/// The limit a node applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub unit: Unit,
    pub requests_per_unit: u32,
    pub name: String,
    pub algorithm: LimitAlgorithm,
}

/// Every domain's limits, compiled once at start-up.
#[derive(Debug, Default)]
pub struct Descriptors {
    domains: HashMap<String, Node>,
}

/// One descriptor of a request, as the plan needs it: entries in order, an optional hits
/// override (`hits_addend` of the descriptor).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    pub entries: Vec<(String, String)>,
    pub hits: Option<u64>,
}

/// Why a `ShouldRateLimit` call cannot be decided. Never answered "OK".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DescriptorError {
    #[error("no limits are configured for domain `{0}`")]
    UnknownDomain(String),
    /// Answered OVER_LIMIT, not as an error: Envoy lets a request through on an error unless
    /// `failure_mode_deny` is set, and the hits can come from the request itself.
    #[error("descriptors[{0}]: hits {1} is over the largest cost, {MAX_COST}")]
    TooManyHits(usize, u64, Rule),
    #[error("descriptors[{0}]: negative hits (refilling a window) are not supported")]
    NegativeHits(usize),
    /// Answered OVER_LIMIT too, for the same reason: the descriptors come from the request
    /// (a header each, say), and were this an error, adding descriptors would escape every
    /// limit under Envoy's default.
    #[error("descriptors[{0}]: more than {MAX_CHECKS} descriptors have limits; at most {MAX_CHECKS} can be checked in one call")]
    TooManyLimits(usize, Rule),
}

/// One call's store checks, and which check answers for each descriptor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub checks: Vec<Check>,
    /// Per descriptor, in request order: the check and the rule, or `None` (no limit applies).
    pub per_descriptor: Vec<Option<(usize, Rule)>>,
}

impl Descriptors {
    /// Reads the descriptor file: one YAML document per domain.
    pub fn load(path: &Path) -> Result<Descriptors, DescriptorsError> {
        let text = std::fs::read_to_string(path).map_err(|e| DescriptorsError::Read {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        Descriptors::parse(&text)
    }

    /// Parses and validates descriptor documents.
    pub fn parse(text: &str) -> Result<Descriptors, DescriptorsError> {
        let mut domains = HashMap::new();
        for (i, doc) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
            let file = DomainFile::deserialize(doc)
                .map_err(|e| DescriptorsError::Parse(i, e.to_string()))?;
            if file.domain.is_empty() {
                return Err(DescriptorsError::EmptyDomain(i));
            }
            if file.domain.len() > MAX_DOMAIN_BYTES {
                return Err(DescriptorsError::LongDomain(i, file.domain.len()));
            }
            if domains.contains_key(&file.domain) {
                return Err(DescriptorsError::DuplicateDomain(file.domain));
            }
            let root = compile(&file.domain, "descriptors", &file.descriptors)?;
            domains.insert(file.domain, root);
        }
        Ok(Descriptors { domains })
    }

    /// How many domains are configured.
    pub fn domains(&self) -> usize {
        self.domains.len()
    }

    /// Turns one call into store checks. A descriptor that reaches no node with a limit is not
    /// limited (as in envoyproxy/ratelimit); every other one becomes a check, all decided in one
    /// atomic store call. Keys share the domain's hash tag (one Redis Cluster slot per domain),
    /// since a call is all-or-nothing.
    pub fn plan(
        &self,
        domain: &str,
        descriptors: &[Descriptor],
        hits_addend: u64,
    ) -> Result<Plan, DescriptorError> {
        let root = self
            .domains
            .get(domain)
            .ok_or_else(|| DescriptorError::UnknownDomain(domain.to_owned()))?;
        let mut checks: Vec<Check> = Vec::new();
        let mut per_descriptor = Vec::with_capacity(descriptors.len());
        for (i, d) in descriptors.iter().enumerate() {
            let Some(rule) = find(root, &d.entries) else {
                per_descriptor.push(None);
                continue;
            };
            // Envoy sends 0 for "not set": one hit.
            let hits = d.hits.unwrap_or(hits_addend).max(1);
            if hits > MAX_COST {
                return Err(DescriptorError::TooManyHits(i, hits, rule));
            }
            let key = counter_key(domain, &d.entries, &rule);
            let window_ms = rule.unit.window_ms();
            // Two descriptors counting the same window are one check consuming both.
            let same = checks.iter().position(|c| c.key == key);
            let index = match same {
                Some(j) => {
                    let cost = checks[j].cost + hits;
                    if cost > MAX_COST {
                        return Err(DescriptorError::TooManyHits(i, cost, rule));
                    }
                    checks[j].cost = cost;
                    j
                }
                None if checks.len() == MAX_CHECKS => {
                    return Err(DescriptorError::TooManyLimits(i, rule));
                }
                None => {
                    checks.push(Check {
                        key,
                        limit: u64::from(rule.requests_per_unit),
                        window_ms,
                        cost: hits,
                        algorithm: rule.algorithm,
                    });
                    checks.len() - 1
                }
            };
            per_descriptor.push(Some((index, rule)));
        }
        Ok(Plan {
            checks,
            per_descriptor,
        })
    }
}

/// The node a descriptor's entries lead to, an exact `value` before any value; past the tree,
/// or at a node without a limit, nothing applies.
fn find(root: &Node, entries: &[(String, String)]) -> Option<Rule> {
    if entries.is_empty() {
        return None;
    }
    let mut node = root;
    for (key, value) in entries {
        node = node
            .exact
            .get(&(key.clone(), value.clone()))
            .or_else(|| node.any_value.get(key))?;
    }
    node.limit.clone()
}

/// The store key of a descriptor's window: the domain's hash tag, then the entries as a JSON
/// array (readable in Redis), then the algorithm and window, so a changed limit never reads
/// another's entries. Entries come from requests (a header's value, say): when the key would be
/// longer than the store takes, the entries are replaced by their SHA-256, so no request can
/// make its key unusable.
fn counter_key(domain: &str, entries: &[(String, String)], rule: &Rule) -> String {
    let tag: String = domain
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"._-".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    let flat: Vec<&str> = entries
        .iter()
        .flat_map(|(k, v)| [k.as_str(), v.as_str()])
        .collect();
    let json = serde_json::to_string(&flat).unwrap_or_default();
    let suffix = format!(":{}:{}", rule.algorithm.as_str(), rule.unit.window_ms());
    let key = format!("{{rls:{tag}}}{json}{suffix}");
    if key.len() <= MAX_KEY_BYTES {
        return key;
    }
    let digest: String = Sha256::digest(json.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("{{rls:{tag}}}#{digest}{suffix}")
}

fn compile(domain: &str, at: &str, nodes: &[DescriptorNode]) -> Result<Node, DescriptorsError> {
    let mut out = Node::default();
    for (i, n) in nodes.iter().enumerate() {
        let here = format!("{at}[{i}] (key `{}`)", n.key);
        let fail = |message: String| DescriptorsError::Node {
            domain: domain.to_owned(),
            node: here.clone(),
            message,
        };
        if n.key.is_empty() {
            return Err(fail("key must not be empty".into()));
        }
        let mut child = compile(domain, &format!("{here}.descriptors"), &n.descriptors)?;
        // An unlimited node is a node without a limit: the search never falls back to a more
        // general node, so nothing applies either way.
        if let Some(r) = n.rate_limit.as_ref().filter(|r| r.unlimited) {
            if r.unit.is_some() || r.requests_per_unit != 0 {
                return Err(fail(
                    "rate_limit: `unlimited: true` takes no unit or requests_per_unit".into(),
                ));
            }
        } else if let Some(r) = &n.rate_limit {
            let Some(unit) = r.unit else {
                return Err(fail(
                    "rate_limit.unit: required (second, minute, hour or day)".into(),
                ));
            };
            if r.requests_per_unit == 0 {
                return Err(fail(
                    "rate_limit.requests_per_unit: must be greater than zero (or say `unlimited: true`)"
                        .into(),
                ));
            }
            child.limit = Some(Rule {
                unit,
                requests_per_unit: r.requests_per_unit,
                name: r.name.clone().unwrap_or_default(),
                algorithm: r.algorithm,
            });
        }
        let clash = match &n.value {
            Some(v) => out
                .exact
                .insert((n.key.clone(), v.clone()), child)
                .is_some(),
            None => out.any_value.insert(n.key.clone(), child).is_some(),
        };
        if clash {
            return Err(fail(format!(
                "the same key{} appears twice at this level",
                n.value
                    .as_ref()
                    .map(|v| format!(" and value `{v}`"))
                    .unwrap_or_default()
            )));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
