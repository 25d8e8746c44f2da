//! The authentication stage, compiled from `jwt` configuration: which paths need which
//! providers, where each provider's token comes from, and what a verified token turns into
//! upstream.

use std::sync::Arc;

use base64ct::{Base64UrlUnpadded, Encoding};
use serde_json::{Map, Value};

use super::cache::{CachedToken, TokenCache};
use super::host_signature::SignatureHost;
use super::keys::{JwksError, KeySet};
use super::token::{self, Reject, RejectClass, TokenRules, DEFAULT_MAX_CLAIMS_DEPTH};
use crate::config::{
    validate_jwt, ConfigError, ConfigWarning, JwksConfig, JwtConfig, Problem, RemoteJwks,
};
use crate::http::{same_header, HeaderOp, Headers};
use crate::identity::Claims;
use crate::path::{prefix_matches, query_param, NormalizedPath};

/// Longest claim value copied into a header; longer ones are left out.
const MAX_CLAIM_HEADER_BYTES: usize = 4096;

#[derive(Debug, Clone)]
enum Source {
    Header {
        name: String,
        prefix: Option<String>,
    },
    Query(String),
    Cookie(String),
}

/// Where a provider's keys come from.
#[derive(Debug, Clone)]
pub enum Jwks {
    Inline(Arc<KeySet>),
    Remote(RemoteJwks),
}

#[derive(Debug, Clone)]
pub struct Provider {
    pub name: Arc<str>,
    pub rules: TokenRules,
    pub jwks: Jwks,
    sources: Vec<Source>,
    claims_to_headers: Vec<(Vec<String>, String)>,
    claims_header: Option<String>,
    forward_token: bool,
}

#[derive(Debug, Clone)]
struct Rule {
    prefix: String,
    requires: Vec<usize>,
}

/// The compiled `jwt` section.
#[derive(Debug, Clone)]
pub struct JwtStage {
    pub providers: Vec<Provider>,
    /// Longest prefix first; `None` means every path needs any provider.
    rules: Option<Vec<Rule>>,
    /// The headers this stage sets (claim headers, claims headers); the pipeline removes client
    /// copies of them from every request.
    headers_set: Vec<String>,
    /// Every provider's index: what a path no rule covers accepts.
    all_providers: Vec<usize>,
    max_token_bytes: usize,
    pub cache_entries: usize,
}

/// The keys each provider has now. Inline keys are there from the start; remote ones arrive
/// when fetched. Every change bumps `generation`, which empties token caches.
#[derive(Debug, Clone, Default)]
pub struct KeyRing {
    sets: Vec<Option<Arc<KeySet>>>,
    generation: u64,
}

impl KeyRing {
    pub fn new(stage: &JwtStage) -> Self {
        KeyRing {
            sets: stage
                .providers
                .iter()
                .map(|p| match &p.jwks {
                    Jwks::Inline(k) => Some(k.clone()),
                    Jwks::Remote(_) => None,
                })
                .collect(),
            generation: 1,
        }
    }

    pub fn get(&self, provider: usize) -> Option<&Arc<KeySet>> {
        self.sets.get(provider).and_then(Option::as_ref)
    }

    /// Replaces (or, with `None`, drops) a provider's keys.
    pub fn set(&mut self, provider: usize, keys: Option<Arc<KeySet>>) {
        if let Some(slot) = self.sets.get_mut(provider) {
            *slot = keys;
            self.generation += 1;
        }
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }
}

/// The verified caller.
#[derive(Debug, Clone)]
pub struct Identity {
    pub provider: usize,
    pub claims: Arc<Claims>,
    pub exp: i64,
    /// The header the token came in, if it came in one.
    header: Option<String>,
}

/// Why a request without a usable token is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalid {
    Token(Reject),
    /// The token appears twice (two headers, two query parameters, two cookies).
    Repeated,
    /// Header bytes that are not UTF-8.
    NotUtf8,
    /// The token's issuer is none of the providers the path accepts.
    UnknownIssuer,
    /// The provider has no keys (not fetched yet, or stale past `max_stale_s`).
    NoKeys,
    /// A claim mapped to a header cannot be carried there unambiguously (an array element with
    /// a comma).
    Unforwardable,
}

impl Invalid {
    /// Counter class (see [`Reject::class`]).
    pub fn class(self) -> RejectClass {
        match self {
            Invalid::Token(r) => r.class(),
            Invalid::Repeated | Invalid::NotUtf8 => RejectClass::Malformed,
            Invalid::UnknownIssuer | Invalid::Unforwardable => RejectClass::Claims,
            Invalid::NoKeys => RejectClass::KeysUnavailable,
        }
    }
}

#[derive(Debug, Clone)]
pub enum AuthOutcome {
    /// The path requires no token.
    Public,
    Verified {
        identity: Identity,
        cached: bool,
    },
    Missing,
    Invalid(Invalid),
    /// A remote provider has no key for this token yet: fetching its JWKS may help.
    /// `unknown_kid` distinguishes "no keys at all" from "keys, but not this kid".
    NeedKeys {
        provider: usize,
        unknown_kid: bool,
    },
}

impl JwtStage {
    /// Checks and compiles the `jwt` section in one pass (`warnings`: what is worth logging).
    pub fn compile(
        cfg: &JwtConfig,
        warnings: &mut Vec<ConfigWarning>,
    ) -> Result<JwtStage, ConfigError> {
        validate_jwt(cfg, warnings)?;
        let names: Vec<&String> = cfg.providers.keys().collect();
        let mut providers = Vec::new();
        let mut headers_set: Vec<String> = Vec::new();
        for (name, p) in &cfg.providers {
            let at = format!("jwt.providers.{name}");
            let jwks = match &p.jwks {
                JwksConfig::Inline(set) => Jwks::Inline(Arc::new(
                    KeySet::from_inline(&set.keys).map_err(|e| jwks_error(&at, e))?,
                )),
                JwksConfig::Remote(r) => Jwks::Remote(r.clone()),
            };
            let rules = TokenRules::compile(&at, p)?;
            let algorithms = rules.algorithms;
            if let Jwks::Inline(keys) = &jwks {
                if keys
                    .keys
                    .iter()
                    .all(|k| k.algs.intersect(algorithms).is_empty())
                {
                    return Err(ConfigError::Invalid {
                        path: format!("{at}.algorithms"),
                        problem: Problem::NoUsableKey,
                    });
                }
            }
            let sources = match &p.sources {
                None => vec![Source::Header {
                    name: "authorization".into(),
                    prefix: Some("Bearer ".into()),
                }],
                Some(list) => list
                    .iter()
                    .filter_map(|s| match (&s.header, &s.query, &s.cookie) {
                        (Some(h), _, _) => Some(Source::Header {
                            name: h.clone(),
                            prefix: s.prefix.clone(),
                        }),
                        (_, Some(q), _) => Some(Source::Query(q.clone())),
                        (_, _, Some(c)) => Some(Source::Cookie(c.clone())),
                        _ => None,
                    })
                    .collect(),
            };
            let claims_to_headers: Vec<(Vec<String>, String)> = p
                .claims_to_headers
                .iter()
                .map(|m| {
                    (
                        m.claim.split('.').map(str::to_owned).collect(),
                        m.header.clone(),
                    )
                })
                .collect();
            for (_, h) in &claims_to_headers {
                if !headers_set.contains(h) {
                    headers_set.push(h.clone());
                }
            }
            if let Some(h) = &p.claims_header {
                if !headers_set.contains(h) {
                    headers_set.push(h.clone());
                }
            }
            providers.push(Provider {
                name: Arc::from(name.as_str()),
                rules,
                jwks,
                sources,
                claims_to_headers,
                claims_header: p.claims_header.clone(),
                forward_token: p.forward_token,
            });
        }
        let rules = cfg.rules.as_ref().map(|rules| {
            let mut compiled: Vec<Rule> = rules
                .iter()
                .map(|r| Rule {
                    prefix: r.prefix.clone(),
                    requires: r
                        .requires
                        .iter()
                        .filter_map(|n| names.iter().position(|x| *x == n))
                        .collect(),
                })
                .collect();
            // Longest prefix wins; among equal prefixes the first written wins (stable sort).
            compiled.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
            compiled
        });
        Ok(JwtStage {
            all_providers: (0..providers.len()).collect(),
            providers,
            rules,
            headers_set,
            max_token_bytes: cfg.max_token_bytes,
            cache_entries: cfg.cache_entries,
        })
    }

    /// The providers a path accepts (any one of them); empty means the path is public. A path
    /// no rule covers needs a token from any provider: unmatched means protected.
    fn required(&self, path: &str) -> &[usize] {
        self.rules
            .iter()
            .flatten()
            .find(|r| prefix_matches(&r.prefix, path))
            .map_or(&self.all_providers, |r| &r.requires)
    }

    /// Authenticates a request at Unix time `now`.
    pub fn authenticate(
        &self,
        headers: &Headers<'_>,
        path: &NormalizedPath,
        now: i64,
        ring: &KeyRing,
        cache: &mut TokenCache,
        host: Option<&dyn SignatureHost>,
    ) -> AuthOutcome {
        let required = self.required(&path.path);
        if required.is_empty() {
            return AuthOutcome::Public;
        }
        // The first token found, in each required provider's source order.
        let mut found: Option<(String, Option<String>)> = None;
        for &pi in required {
            for src in &self.providers[pi].sources {
                match extract(src, headers, path) {
                    Ok(Some(t)) => {
                        found = Some(t);
                        break;
                    }
                    Ok(None) => {}
                    Err(e) => return AuthOutcome::Invalid(e),
                }
            }
            if found.is_some() {
                break;
            }
        }
        let Some((token, header)) = found else {
            return AuthOutcome::Missing;
        };

        cache.sync_generation(ring.generation());
        let skew = |p: usize| self.providers.get(p).map_or(0, |p| p.rules.clock_skew_s);
        if let Some(hit) = cache.get(&token, now, skew) {
            if required.contains(&hit.provider) {
                return AuthOutcome::Verified {
                    identity: Identity {
                        provider: hit.provider,
                        claims: hit.claims,
                        exp: hit.exp,
                        header,
                    },
                    cached: true,
                };
            }
        }

        let parsed = match token::parse(token.as_bytes(), self.max_token_bytes) {
            Ok(p) => p,
            Err(r) => return AuthOutcome::Invalid(Invalid::Token(r)),
        };
        let claims = match parsed.claims(DEFAULT_MAX_CLAIMS_DEPTH) {
            Ok(c) => c,
            Err(r) => return AuthOutcome::Invalid(Invalid::Token(r)),
        };
        // The unverified issuer only chooses which provider's keys and rules apply.
        let iss = claims.get("iss").and_then(Value::as_str);
        let Some(&pi) = required
            .iter()
            .find(|&&pi| Some(self.providers[pi].rules.issuer.as_str()) == iss)
        else {
            return AuthOutcome::Invalid(Invalid::UnknownIssuer);
        };
        let provider = &self.providers[pi];
        let Some(keys) = ring.get(pi) else {
            return match provider.jwks {
                Jwks::Remote(_) => AuthOutcome::NeedKeys {
                    provider: pi,
                    unknown_kid: false,
                },
                Jwks::Inline(_) => AuthOutcome::Invalid(Invalid::NoKeys),
            };
        };
        match token::verify(&parsed, &claims, &provider.rules, keys, host, now) {
            Ok(v) => {
                let claims = Arc::new(Claims::new(v.claims));
                cache.put(
                    &token,
                    CachedToken {
                        provider: pi,
                        claims: claims.clone(),
                        exp: v.exp,
                        header: header.clone(),
                    },
                );
                AuthOutcome::Verified {
                    identity: Identity {
                        provider: pi,
                        claims,
                        exp: v.exp,
                        header,
                    },
                    cached: false,
                }
            }
            Err(Reject::UnknownKid) if matches!(provider.jwks, Jwks::Remote(_)) => {
                AuthOutcome::NeedKeys {
                    provider: pi,
                    unknown_kid: true,
                }
            }
            Err(r) => AuthOutcome::Invalid(Invalid::Token(r)),
        }
    }

    /// What to change in the upstream request: every identity header a client sent is removed
    /// or replaced (so a client can never supply one), and set from a verified token.
    /// The header changes a verified token asks for: the claim headers set, and the token's
    /// header removed when `forward_token` is off. Client copies of the claim headers are
    /// removed by the pipeline on every request (the flow's `Pipeline`), whatever the outcome.
    /// A claim that a backend could misread in a header refuses the token.
    pub fn mutations(&self, outcome: &AuthOutcome) -> Result<Vec<HeaderOp>, Invalid> {
        let mut ops: Vec<HeaderOp> = Vec::new();
        if let AuthOutcome::Verified { identity, .. } = outcome {
            if let Some(p) = self.providers.get(identity.provider) {
                if !p.forward_token {
                    if let Some(h) = &identity.header {
                        ops.push(HeaderOp::Remove(h.clone()));
                    }
                }
                for (path, header) in &p.claims_to_headers {
                    if let Some(v) = claim_header_value(&identity.claims.map, path)? {
                        ops.push(HeaderOp::Set(header.clone(), v));
                    }
                }
                if let Some(h) = &p.claims_header {
                    ops.push(HeaderOp::Set(
                        h.clone(),
                        Base64UrlUnpadded::encode_string(identity.claims.json().as_bytes()),
                    ));
                }
            }
        }
        Ok(ops)
    }

    /// Every header this stage may set upstream (claim headers and claims headers of every
    /// provider): the pipeline removes client copies of them from every request.
    pub fn headers_set(&self) -> &[String] {
        &self.headers_set
    }

    pub fn provider_name(&self, i: usize) -> Arc<str> {
        self.providers
            .get(i)
            .map_or_else(|| Arc::from(""), |p| p.name.clone())
    }
}

fn jwks_error(at: &str, e: JwksError) -> ConfigError {
    let path = match &e {
        JwksError::Key { index, .. } | JwksError::DuplicateKid { index, .. } => {
            format!("{at}.jwks.inline.keys[{index}]")
        }
        _ => format!("{at}.jwks.inline"),
    };
    ConfigError::Invalid {
        path,
        problem: Problem::Jwks(e.to_string()),
    }
}

/// A token from one source, and the header it came in (as the client spelled it, so that
/// `forward_token: false` removes that very header): `Ok(None)` when the source is absent.
/// A header source matches every spelling a backend reads alike ([`same_header`]: `x_token`
/// is `x-token` to CGI, WSGI, Rack and PHP), and two values under any spellings are refused:
/// otherwise apiguard could verify one copy while the backend reads the other.
fn extract(
    src: &Source,
    headers: &Headers<'_>,
    path: &NormalizedPath,
) -> Result<Option<(String, Option<String>)>, Invalid> {
    match src {
        Source::Header { name, prefix } => {
            let mut values = headers.iter().filter(|(n, _)| same_header(n, name));
            let Some((seen, first)) = values.next() else {
                return Ok(None);
            };
            if values.next().is_some() {
                return Err(Invalid::Repeated);
            }
            let text = std::str::from_utf8(first).map_err(|_| Invalid::NotUtf8)?;
            let token = match prefix {
                None => text.trim(),
                // The scheme is case-insensitive (RFC 9110 §11.1); another scheme means no
                // token of ours.
                Some(p) => match text.get(..p.len()) {
                    Some(head) if head.eq_ignore_ascii_case(p) => {
                        let t = text[p.len()..].trim();
                        if t.is_empty() {
                            return Err(Invalid::Token(Reject::Malformed));
                        }
                        t
                    }
                    _ => return Ok(None),
                },
            };
            Ok(Some((token.to_owned(), Some(seen.to_owned()))))
        }
        Source::Query(name) => match &path.query {
            None => Ok(None),
            Some(q) => query_param(q, name)
                .map(|t| t.map(|t| (t, None)))
                .map_err(|_| Invalid::Repeated),
        },
        Source::Cookie(name) => {
            let mut found = None;
            for value in headers.all("cookie") {
                let text = std::str::from_utf8(value).map_err(|_| Invalid::NotUtf8)?;
                for pair in text.split(';') {
                    let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                    if k.trim() == name {
                        if found.is_some() {
                            return Err(Invalid::Repeated);
                        }
                        found = Some(v.trim().trim_matches('"').to_owned());
                    }
                }
            }
            Ok(found.map(|t| (t, None)))
        }
    }
}

/// A claim (by dotted path) as a header value: strings as they are, numbers and booleans
/// printed, arrays of those joined by commas. Objects, nulls, control characters and values
/// over the size cap are left out (`Ok(None)`): a header must never carry what it cannot carry
/// safely. An array with an element that holds a comma is refused (`Err`): joined, it would
/// read as other elements (`["viewer", "x,admin"]` as `viewer`, `x`, `admin`), and leaving it out
/// could hide a value a backend denies on.
fn claim_header_value(
    claims: &Map<String, Value>,
    path: &[String],
) -> Result<Option<String>, Invalid> {
    let Some(mut v) = path.first().and_then(|k| claims.get(k)) else {
        return Ok(None);
    };
    for seg in path.iter().skip(1) {
        match v.get(seg) {
            Some(inner) => v = inner,
            None => return Ok(None),
        }
    }
    let scalar = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    };
    let text = match v {
        Value::Array(items) => {
            let Some(parts) = items.iter().map(scalar).collect::<Option<Vec<_>>>() else {
                return Ok(None);
            };
            if parts.iter().any(|p| p.contains(',')) {
                return Err(Invalid::Unforwardable);
            }
            parts.join(",")
        }
        other => match scalar(other) {
            Some(t) => t,
            None => return Ok(None),
        },
    };
    let safe = text.len() <= MAX_CLAIM_HEADER_BYTES && !text.bytes().any(|b| b < 0x20 || b == 0x7f);
    Ok(safe.then_some(text))
}
