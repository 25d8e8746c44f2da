//! The per-request state machine: the filter hands in request facts, the pipeline answers with a
//! [`Step`] — continue with header changes, respond locally, or fetch keys and ask again — plus
//! the [`Event`]s to count. Time comes in as an argument; nothing here touches a host.

use std::borrow::Cow;
use std::sync::Arc;

use crate::config::{Config, ConfigError, ConfigWarning};
use crate::http::{self, HeaderOp, Headers};
use crate::jwt::cache::TokenCache;
use crate::jwt::host::SignatureHost;
use crate::jwt::stage::{AuthOutcome, Claims, Invalid, JwtStage, KeyRing};
use crate::jwt::token::Reject;
use crate::path::{self, NormalizedPath};
use crate::policy::stage::{PolicyOutcome, PolicyRequest, PolicyStage, PolicyWorker};
use crate::policy::PolicyFailure;
use crate::ratelimit::{
    self, LimitCall, LimitVerdict, LocalLimits, Plan, PlanError, RateLimitStage,
};
use crate::reply::Reply;

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
    /// Ask the limiter, then hand the answer and [`Outcome::pending`] to
    /// [`Pipeline::on_limiter_answer`].
    CheckLimits(LimitCall),
}

/// What a request waiting for the limiter carries over.
#[derive(Debug, Clone)]
pub struct Pending {
    pub plan: Plan,
    /// The header changes decided so far, applied if the request goes on.
    pub ops: Vec<HeaderOp>,
}

/// Things worth counting, reported with each step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    JwtAccepted {
        cached: bool,
    },
    JwtMissing,
    JwtRejected(Invalid),
    /// The path could not be read unambiguously (or carried a refused `;` parameter).
    BadPath,
    /// A method-override header under `request.method_override: reject`, or overrides that
    /// cannot be read as one method.
    BadMethodOverride,
    PolicyAllowed,
    PolicyDenied,
    /// The policy failed to decide (and so denied, unless in dry run).
    PolicyFailed(PolicyFailure),
    /// Dry run: the policy denied, the request went on.
    PolicyDryRunDeny,
    /// The shadow policy decided otherwise.
    PolicyShadowDisagree,
    /// The decision came from `policy.decision_cache`.
    PolicyCacheHit,
    RateAllowed,
    RateLimited,
    /// Answered 429 from the local over-limit cache, without a call.
    RateLimitedLocal,
    /// Over a shadow limit: counted, not enforced.
    RateShadowLimited,
    RateFailed(ratelimit::LimiterFailure),
    /// A limiter failure let through by `failure_mode: allow`.
    RateFailurePass,
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
    /// With [`Step::CheckLimits`]: what to hand back with the limiter's answer.
    pub pending: Option<Pending>,
    /// Headers to add to the upstream's response (rate-limit headers).
    pub response_headers: Vec<(String, String)>,
}

impl Outcome {
    /// Continue, nothing changed, nothing counted: what the stages start from.
    fn pass() -> Outcome {
        Outcome {
            step: Step::Continue(Vec::new()),
            events: Vec::new(),
            identity: None,
            policy: None,
            pending: None,
            response_headers: Vec::new(),
        }
    }
}

/// Per-worker mutable state: the keys known now, the verified-token cache, the policy VMs.
pub struct WorkerState {
    pub keys: KeyRing,
    pub cache: TokenCache,
    pub policy: Option<PolicyWorker>,
    pub local_limits: LocalLimits,
    /// The host's signature verifier, when it offers one and `jwt.host_signatures` allows it
    /// (the filter installs it after [`crate::jwt::host::self_test`]).
    pub signature_host: Option<Box<dyn SignatureHost>>,
}

/// The compiled configuration.
#[derive(Debug, Clone)]
pub struct Pipeline {
    pub config: Config,
    pub jwt: Option<JwtStage>,
    pub policy: Option<PolicyStage>,
    pub ratelimit: Option<RateLimitStage>,
    /// See [`Pipeline::needs_source_address`]; fixed by the configuration.
    needs_source: bool,
    /// Every header apiguard may set upstream (claim headers, claims headers, `policy.headers`):
    /// client copies are removed from every request, under any spelling a backend reads alike.
    protected: Vec<String>,
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
        let ratelimit = validated
            .config
            .rate_limit
            .as_ref()
            .map(RateLimitStage::compile);
        let mut protected: Vec<String> = Vec::new();
        for h in jwt
            .iter()
            .flat_map(|j| j.headers_set())
            .chain(policy.iter().flat_map(|p| &p.headers))
        {
            if !protected.contains(h) {
                protected.push(h.clone());
            }
        }
        let needs_source = policy.as_ref().is_some_and(PolicyStage::reads_source)
            || ratelimit
                .as_ref()
                .is_some_and(RateLimitStage::uses_source_ip);
        Ok((
            Pipeline {
                config: validated.config,
                jwt,
                policy,
                ratelimit,
                needs_source,
                protected,
            },
            warnings,
        ))
    }

    /// Whether [`RequestFacts::source`] is used: the host call that learns it can be skipped
    /// otherwise.
    pub fn needs_source_address(&self) -> bool {
        self.needs_source
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
            local_limits: LocalLimits::new(
                self.ratelimit.as_ref().map_or(0, |r| r.local_cache_entries),
            ),
            signature_host: None,
        }
    }

    /// Runs the request through the configured stages at Unix time `now_ms` (milliseconds).
    pub fn on_request(
        &self,
        req: &RequestFacts<'_>,
        now_ms: i64,
        state: &mut WorkerState,
    ) -> Outcome {
        let now = now_ms.div_euclid(1000);
        let mut out = Outcome::pass();
        if self.jwt.is_none() && self.policy.is_none() && self.ratelimit.is_none() {
            return out;
        }
        let path: NormalizedPath =
            match path::normalize_with(req.path, self.config.request.matrix_params) {
                Ok(p) => p,
                Err(_) => {
                    out.events.push(Event::BadPath);
                    out.step = Step::Respond(Reply::bad_path());
                    return out;
                }
            };
        let method = match http::effective_method(&req.headers, self.config.request.method_override)
        {
            Ok(m) => m,
            Err(_) => {
                out.events.push(Event::BadMethodOverride);
                out.step = Step::Respond(Reply::bad_method_override());
                return out;
            }
        };
        let mut ops = self.strip_client_copies(&req.headers);
        if let Some(jwt) = &self.jwt {
            let auth = jwt.authenticate(
                &req.headers,
                &path,
                now,
                &state.keys,
                &mut state.cache,
                state.signature_host.as_deref(),
            );
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
            match jwt.mutations(&auth) {
                Ok(set) => ops.extend(set),
                Err(why) => {
                    out.identity = None;
                    out.events.push(Event::JwtRejected(why));
                    out.step = Step::Respond(Reply::token_invalid());
                    return out;
                }
            }
        }
        if let (Some(stage), Some(worker)) = (&self.policy, state.policy.as_mut()) {
            let identity = out.identity.as_ref().map(|i| (&*i.provider, &*i.claims));
            let request = PolicyRequest {
                headers: &req.headers,
                method: &method,
                path: &path,
                source: req.source,
            };
            let result = stage.evaluate(worker, &request, identity, now_ms);
            if result.cached {
                out.events.push(Event::PolicyCacheHit);
            }
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
        if let Some(rl) = &self.ratelimit {
            let tier = out.policy.as_ref().and_then(|p| p.decision.tier.as_deref());
            let cost = out
                .policy
                .as_ref()
                .and_then(|p| p.decision.cost)
                .unwrap_or(1);
            let caller = out.identity.as_ref().map(|i| (&*i.provider, &*i.claims));
            match rl.plan(&path, &req.headers, req.source, caller, tier, cost) {
                Ok(None) => {}
                Err(PlanError::UnknownTier(_)) => {
                    conclude(&mut out, rl.unknown_tier(), ops, None, state);
                    return out;
                }
                Ok(Some(plan)) => {
                    if !plan.shadow {
                        if let Some(reply) = state.local_limits.blocked(&plan.key, now_ms) {
                            out.events.push(Event::RateLimitedLocal);
                            out.step = Step::Respond(reply);
                            return out;
                        }
                    }
                    out.step = Step::CheckLimits(rl.call(&plan));
                    out.pending = Some(Pending { plan, ops });
                    return out;
                }
            }
        }
        out.step = Step::Continue(ops);
        out
    }

    /// Removals of every request header that is, to a backend, one apiguard sets: its name folds
    /// to a protected one ([`http::same_header`]: `X_User_Id` is `x-user-id` to CGI, WSGI, Rack
    /// and PHP). Done on every request that goes upstream, whatever the stages decide, so a value
    /// apiguard sets only for some callers can never come from the client for the others.
    fn strip_client_copies(&self, headers: &Headers<'_>) -> Vec<HeaderOp> {
        let mut ops: Vec<HeaderOp> = Vec::new();
        if self.protected.is_empty() {
            return ops;
        }
        for (name, _) in headers.iter() {
            if self.protected.iter().any(|p| http::same_header(p, name))
                && !ops
                    .iter()
                    .any(|op| matches!(op, HeaderOp::Remove(n) if n == name))
            {
                ops.push(HeaderOp::Remove(name.to_owned()));
            }
        }
        ops
    }

    /// What to publish in filter state for access logs (Envoy shows each name as
    /// `wasm.<name>`): the policy decision whenever the policy ran, and the provider and the
    /// verified claims with `jwt.publish_claims`.
    pub fn filter_state<'a>(&self, outcome: &'a Outcome) -> Vec<(&'static str, Cow<'a, [u8]>)> {
        let mut out = Vec::new();
        let publish_claims = self.config.jwt.as_ref().is_some_and(|j| j.publish_claims);
        if let Some(who) = outcome.identity.as_ref().filter(|_| publish_claims) {
            out.push(("apiguard.provider", Cow::Borrowed(who.provider.as_bytes())));
            out.push((
                "apiguard.claims",
                Cow::Borrowed(who.claims.json().as_bytes()),
            ));
        }
        if let (Some(p), Some(stage)) = (&outcome.policy, &self.policy) {
            out.push(("apiguard.decision", Cow::Owned(stage.decision_record(p))));
        }
        out
    }

    /// The answer when [`Step::FetchKeys`] cannot be followed (another worker is fetching, the
    /// refetch rules say no, or the request already waited once): the token is refused.
    pub fn keys_unavailable(&self, unknown_kid: bool) -> Outcome {
        let why = if unknown_kid {
            Invalid::Token(Reject::UnknownKid)
        } else {
            Invalid::NoKeys
        };
        let mut out = Outcome::pass();
        out.events.push(Event::JwtRejected(why));
        out.step = Step::Respond(Reply::token_invalid());
        out
    }

    /// Finishes a request that waited for the limiter: `answer` is the status and body, or how
    /// the call failed.
    pub fn on_limiter_answer(
        &self,
        pending: Pending,
        answer: Result<(u16, &[u8]), ratelimit::LimiterFailure>,
        now_ms: i64,
        state: &mut WorkerState,
    ) -> Outcome {
        let mut out = Outcome::pass();
        let Some(rl) = &self.ratelimit else {
            out.step = Step::Continue(pending.ops);
            return out;
        };
        let j = rl.judge(&pending.plan, answer, now_ms);
        conclude(&mut out, j, pending.ops, Some(&pending.plan.key), state);
        out
    }
}

/// Applies a rate-limit judgement: the event to count, the key to remember as blocked, and the
/// reply, or the request going on with `ops` and the rate-limit response headers.
fn conclude(
    out: &mut Outcome,
    j: ratelimit::Judgement,
    ops: Vec<HeaderOp>,
    key: Option<&str>,
    state: &mut WorkerState,
) {
    out.events.push(match j.verdict {
        LimitVerdict::Allowed => Event::RateAllowed,
        LimitVerdict::Limited => Event::RateLimited,
        LimitVerdict::ShadowLimited => Event::RateShadowLimited,
        LimitVerdict::Failed(f) => Event::RateFailed(f),
    });
    if let (Some(key), Some(until), Some(reply)) = (key, j.block_until_ms, &j.reply) {
        state.local_limits.block(key, until, reply);
    }
    match j.reply {
        Some(reply) => out.step = Step::Respond(reply),
        None => {
            if matches!(j.verdict, LimitVerdict::Failed(_)) {
                out.events.push(Event::RateFailurePass);
            }
            out.response_headers = j.response_headers;
            out.step = Step::Continue(ops);
        }
    }
}
