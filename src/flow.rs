//! The per-request state machine: the filter hands in request facts, the pipeline answers with a
//! [`Step`] — continue with header changes, respond locally, or fetch keys and ask again — plus
//! the [`Event`]s to count. Time comes in as an argument; nothing here touches a host.

use std::sync::Arc;

use crate::config::{Config, ConfigError, ConfigWarning};
use crate::jwt::cache::TokenCache;
use crate::jwt::stage::{AuthOutcome, Claims, Invalid, JwtStage, KeyRing};
use crate::path::{self, NormalizedPath};
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
    JwtAccepted { cached: bool },
    JwtMissing,
    JwtRejected(Invalid),
    BadPath,
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
}

/// Per-worker mutable state: the keys known now and the verified-token cache.
pub struct WorkerState {
    pub keys: KeyRing,
    pub cache: TokenCache,
}

/// The compiled configuration.
#[derive(Debug, Clone)]
pub struct Pipeline {
    pub config: Config,
    pub jwt: Option<JwtStage>,
}

impl Pipeline {
    /// Parses, validates and compiles a plugin configuration (inline JWKS decoded here).
    pub fn from_json(bytes: &[u8]) -> Result<(Pipeline, Vec<ConfigWarning>), ConfigError> {
        let validated = Config::from_json(bytes)?;
        let jwt = validated
            .config
            .jwt
            .as_ref()
            .map(JwtStage::compile)
            .transpose()?;
        Ok((
            Pipeline {
                config: validated.config,
                jwt,
            },
            validated.warnings,
        ))
    }

    /// Fresh per-worker state for this pipeline.
    pub fn worker_state(&self) -> WorkerState {
        match &self.jwt {
            Some(j) => WorkerState {
                keys: KeyRing::new(j),
                cache: TokenCache::new(j.cache_entries),
            },
            None => WorkerState {
                keys: KeyRing::default(),
                cache: TokenCache::new(0),
            },
        }
    }

    /// Runs the request through the configured stages at Unix time `now`.
    pub fn on_request(
        &self,
        raw_path: &[u8],
        headers: &Headers<'_>,
        now: i64,
        state: &mut WorkerState,
    ) -> Outcome {
        let mut events = Vec::new();
        let Some(jwt) = &self.jwt else {
            return Outcome {
                step: Step::Continue(Vec::new()),
                events,
                identity: None,
            };
        };
        let path: NormalizedPath = match path::normalize(raw_path) {
            Ok(p) => p,
            Err(_) => {
                events.push(Event::BadPath);
                return Outcome {
                    step: Step::Respond(Reply::bad_path()),
                    events,
                    identity: None,
                };
            }
        };
        let auth = jwt.authenticate(headers, &path, now, &state.keys, &mut state.cache);
        let (step, identity) = match &auth {
            AuthOutcome::Public => (Step::Continue(jwt.mutations(&auth)), None),
            AuthOutcome::Verified { identity, cached } => {
                events.push(Event::JwtAccepted { cached: *cached });
                let who = Authenticated {
                    provider: jwt.provider_name(identity.provider),
                    claims: identity.claims.clone(),
                };
                (Step::Continue(jwt.mutations(&auth)), Some(who))
            }
            AuthOutcome::Missing => {
                events.push(Event::JwtMissing);
                (Step::Respond(Reply::token_missing()), None)
            }
            AuthOutcome::Invalid(why) => {
                events.push(Event::JwtRejected(*why));
                (Step::Respond(Reply::token_invalid()), None)
            }
            AuthOutcome::NeedKeys {
                provider,
                unknown_kid,
            } => (
                Step::FetchKeys {
                    provider: *provider,
                    unknown_kid: *unknown_kid,
                },
                None,
            ),
        };
        Outcome {
            step,
            events,
            identity,
        }
    }
}
