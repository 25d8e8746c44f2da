//! The per-request state machine: the filter hands in request facts, the pipeline answers with a
//! [`Step`] — continue with header changes, respond locally, or fetch keys and ask again — plus
//! the [`Event`]s to count. Time comes in as an argument; nothing here touches a host.

use std::sync::Arc;

use crate::config::{Config, ConfigError, ConfigWarning};
use crate::jwt::cache::TokenCache;
use crate::jwt::stage::{AuthOutcome, Claims, Invalid, JwtStage, KeyRing};
use crate::path::{self, NormalizedPath};
use crate::policy::stage::{PolicyOutcome, PolicyStage, PolicyWorker};
use crate::policy::Failure;
use crate::reply::Reply;

/// Request headers as the host gave them: lowercase names, values as raw bytes (a value that
/// is not UTF-8 must not be able to crash anything).
#[derive(Debug, Clone, Copy)]
pub struct Headers<'a> {
    list: &'a [(String, Vec<u8>)],
}

impl<'a> Headers<'a> {
    pub fn new(list: &'a [(String, Vec<u8>)]) -> Self {
        Headers { list }
    }

    /// Every value of a header, in order.
    pub fn all(&self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.list
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    /// The first value of a header.
    pub fn get(&self, name: &'a str) -> Option<&'a [u8]> {
        self.all(name).next()
    }

    /// Every header, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&'a str, &'a [u8])> + 'a {
        self.list.iter().map(|(n, v)| (n.as_str(), v.as_slice()))
    }
}

/// A change to the request before it goes upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderOp {
    /// Remove every value of the header.
    Remove(String),
    /// Replace every value of the header with this one.
    Set(String, String),
}

/// What the filter does next.
#[derive(Debug, Clone)]
pub enum Step {
    /// Send the request upstream after applying these changes, in order.
    Continue(Vec<HeaderOp>),
    /// Answer locally; the request never reaches the upstream.
    Respond(Reply),
    /// Provider `provider` (remote JWKS) has no key for this request's token. The filter may
    /// fetch the JWKS (if its refetch rules allow), then run the request again; otherwise it
    /// answers [`Reply::token_invalid`].
    FetchKeys { provider: usize, unknown_kid: bool },
}

/// Things worth counting, reported with each step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    JwtAccepted {
        cached: bool,
    },
    JwtMissing,
    JwtRejected(Invalid),
    BadPath,
    PolicyAllowed,
    PolicyDenied,
    /// The policy failed to decide (and so denied, unless in dry run).
    PolicyFailed(Failure),
    /// Dry run: the policy denied, the request went on.
    PolicyDryRunDeny,
    /// The shadow policy decided otherwise.
    PolicyShadowDisagree,
}

/// The request as the filter sees it.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    /// The raw `:path`.
    pub path: &'a [u8],
    pub headers: Headers<'a>,
    /// The downstream address, without port.
    pub source: Option<&'a str>,
}

/// The verified identity, for later stages and for access logs.
#[derive(Debug, Clone)]
pub struct Authenticated {
    pub provider: Arc<str>,
    pub claims: Arc<Claims>,
}

/// A step and what led to it.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub step: Step,
    pub events: Vec<Event>,
    pub identity: Option<Authenticated>,
    pub policy: Option<PolicyOutcome>,
}

/// Per-worker mutable state: the keys known now, the verified-token cache, the policy VMs.
pub struct WorkerState {
    pub keys: KeyRing,
    pub cache: TokenCache,
    pub policy: Option<PolicyWorker>,
}

/// The compiled configuration.
#[derive(Debug, Clone)]
pub struct Pipeline {
    pub config: Config,
    pub jwt: Option<JwtStage>,
    pub policy: Option<PolicyStage>,
}

impl Pipeline {
    /// Parses, validates and compiles a plugin configuration (inline JWKS decoded here).
    pub fn from_json(bytes: &[u8]) -> Result<(Pipeline, Vec<ConfigWarning>), ConfigError> {
        let validated = Config::from_json(bytes)?;
        let mut warnings = validated.warnings;
        let jwt = validated
            .config
            .jwt
            .as_ref()
            .map(JwtStage::compile)
            .transpose()?;
        let policy = validated
            .config
            .policy
            .as_ref()
            .map(|p| PolicyStage::compile(p, &mut warnings))
            .transpose()?;
        Ok((
            Pipeline {
                config: validated.config,
                jwt,
                policy,
            },
            warnings,
        ))
    }

    /// Fresh per-worker state for this pipeline.
    pub fn worker_state(&self) -> WorkerState {
        let (keys, cache) = match &self.jwt {
            Some(j) => (KeyRing::new(j), TokenCache::new(j.cache_entries)),
            None => (KeyRing::default(), TokenCache::new(0)),
        };
        WorkerState {
            keys,
            cache,
            policy: self.policy.as_ref().map(PolicyStage::worker),
        }
    }

    /// Runs the request through the configured stages at Unix time `now`.
    pub fn on_request(&self, req: &RequestFacts<'_>, now: i64, state: &mut WorkerState) -> Outcome {
        let mut out = Outcome {
            step: Step::Continue(Vec::new()),
            events: Vec::new(),
            identity: None,
            policy: None,
        };
        if self.jwt.is_none() && self.policy.is_none() {
            return out;
        }
        let path: NormalizedPath = match path::normalize(req.path) {
            Ok(p) => p,
            Err(_) => {
                out.events.push(Event::BadPath);
                out.step = Step::Respond(Reply::bad_path());
                return out;
            }
        };
        let mut ops = Vec::new();
        if let Some(jwt) = &self.jwt {
            let auth = jwt.authenticate(&req.headers, &path, now, &state.keys, &mut state.cache);
            match &auth {
                AuthOutcome::Public => {}
                AuthOutcome::Verified { identity, cached } => {
                    out.events.push(Event::JwtAccepted { cached: *cached });
                    out.identity = Some(Authenticated {
                        provider: jwt.provider_name(identity.provider),
                        claims: identity.claims.clone(),
                    });
                }
                AuthOutcome::Missing => {
                    out.events.push(Event::JwtMissing);
                    out.step = Step::Respond(Reply::token_missing());
                    return out;
                }
                AuthOutcome::Invalid(why) => {
                    out.events.push(Event::JwtRejected(*why));
                    out.step = Step::Respond(Reply::token_invalid());
                    return out;
                }
                AuthOutcome::NeedKeys {
                    provider,
                    unknown_kid,
                } => {
                    out.step = Step::FetchKeys {
                        provider: *provider,
                        unknown_kid: *unknown_kid,
                    };
                    return out;
                }
            }
            ops.extend(jwt.mutations(&auth));
        }
        if let (Some(stage), Some(worker)) = (&self.policy, state.policy.as_mut()) {
            let identity = out.identity.as_ref().map(|i| (&*i.provider, &*i.claims));
            let result = stage.evaluate(worker, &req.headers, &path, req.source, identity);
            if let Some(f) = result.decision.failure {
                out.events.push(Event::PolicyFailed(f));
            }
            if result
                .shadow_allow
                .is_some_and(|s| s != result.decision.allow)
            {
                out.events.push(Event::PolicyShadowDisagree);
            }
            if result.decision.allow {
                out.events.push(Event::PolicyAllowed);
                ops.extend(
                    result
                        .decision
                        .headers
                        .iter()
                        .map(|(n, v)| HeaderOp::Set(n.clone(), v.clone())),
                );
            } else if result.dry_run_deny {
                out.events.push(Event::PolicyDryRunDeny);
            } else {
                out.events.push(Event::PolicyDenied);
                out.step = Step::Respond(stage.reply(&result.decision));
                out.policy = Some(result);
                return out;
            }
            out.policy = Some(result);
        }
        out.step = Step::Continue(ops);
        out
    }
}
