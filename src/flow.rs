//! The per-request state machine: the filter hands in request facts, the pipeline answers with a
//! [`Step`] — continue with header changes, respond locally, or fetch keys and ask again — plus
//! the [`Event`]s to count. Time comes in as an argument; nothing here touches a host.

use std::borrow::Cow;
use std::ops::ControlFlow;
use std::sync::Arc;

use crate::config::LimiterCall;
use crate::config::{Config, ConfigError, ConfigWarning, ContractMode};
use crate::contract::{ContractStage, Operation};
use crate::events::Event;
use crate::http::{self, HeaderOp, Headers};
use crate::identity::Claims;
use crate::jwt::{Fetch, JwtOutcome, JwtStage, JwtWorker, MemoryShared, SharedData};
use crate::path::{self, NormalizedPath};
use crate::policy::stage::{
    OperationFacts, PolicyOutcome, PolicyRequest, PolicyStage, PolicyWorker,
};
use crate::ratelimit::{
    self, LimitCall, LimitVerdict, LocalLimits, Plan, PlanError, RateLimitStage, HANDOFF_HEADER,
    NO_LIMITS,
};
use crate::reply::Reply;

/// What the filter does next.
#[derive(Debug, Clone)]
pub enum Step {
    /// Send the request upstream after applying these changes, in order.
    Continue(Vec<HeaderOp>),
    /// Answer locally; the request never reaches the upstream.
    Respond(Reply),
    /// This worker took the lease to fetch a provider's remote JWKS for this request: make the
    /// call, hand its answer to [`JwtWorker::finish_fetch`] (or a failure to start it to
    /// [`JwtWorker::fetch_failed`]), then run the request again with
    /// [`Pipeline::on_request_after_fetch`], which never asks for another fetch.
    FetchKeys(Fetch),
    /// Ask the limiter, then hand the answer and `resume` to [`Pipeline::on_limiter_answer`].
    CheckLimits { call: LimitCall, resume: Pending },
}

/// What a request waiting for the limiter carries over.
#[derive(Debug, Clone)]
pub struct Pending {
    pub plan: Plan,
    /// The header changes decided so far, applied if the request goes on.
    pub ops: Vec<HeaderOp>,
}

/// What the filter does once the limiter answered: nothing else can follow a limiter call.
#[derive(Debug, Clone)]
pub enum Resumed {
    /// Send the request upstream after applying `request` changes; add `response` headers (the
    /// rate-limit headers) to the upstream's response.
    Continue {
        request: Vec<HeaderOp>,
        response: Vec<(String, String)>,
    },
    /// Answer locally (429, or 503 when the limiter failed and `failure_mode` says deny).
    Respond(Reply),
}

/// The request as the filter sees it.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    /// The raw `:path`.
    pub path: &'a [u8],
    pub headers: Headers<'a>,
    /// The downstream address, without port.
    pub source: Option<&'a str>,
    /// Whether a body follows the headers (the host's headers event did not end the stream):
    /// what the contract judges a body by, whatever `Content-Length` says or omits.
    pub body_follows: bool,
}

/// The verified identity, for later stages and for access logs.
#[derive(Debug, Clone)]
pub struct Authenticated {
    pub provider: Arc<str>,
    pub claims: Arc<Claims>,
}

/// A step and what led to it. `S` is [`Step`] for a request's run, [`Resumed`] after the
/// limiter's answer.
#[derive(Debug, Clone)]
pub struct Outcome<S = Step> {
    pub step: S,
    pub events: Vec<Event>,
    pub identity: Option<Authenticated>,
    pub policy: Option<PolicyOutcome>,
}

impl Outcome {
    /// Continue, nothing changed, nothing counted: what the stages start from.
    fn pass() -> Outcome {
        Outcome {
            step: Step::Continue(Vec::new()),
            events: Vec::new(),
            identity: None,
            policy: None,
        }
    }

    /// Ends the request with `reply`, counting `event`.
    fn end(&mut self, event: Event, reply: Reply) {
        self.events.push(event);
        self.step = Step::Respond(reply);
    }
}

/// Per-worker mutable state: authentication's (keys, their coordination with other workers,
/// the verified-token cache), the policy VMs, the local over-limit cache.
pub struct WorkerState {
    pub jwt: JwtWorker,
    pub policy: Option<PolicyWorker>,
    pub local_limits: LocalLimits,
}

/// The compiled configuration.
#[derive(Debug, Clone)]
pub struct Pipeline {
    pub config: Config,
    pub jwt: Option<JwtStage>,
    pub policy: Option<PolicyStage>,
    pub ratelimit: Option<RateLimitStage>,
    pub contract: Option<Arc<ContractStage>>,
    /// See [`Pipeline::needs_source_address`]; fixed by the configuration.
    needs_source: bool,
    /// Every header apiguard may set upstream (claim headers, claims headers, `policy.headers`):
    /// client copies are removed from every request, under any spelling a backend reads alike.
    protected: Vec<String>,
}

impl Pipeline {
    /// What to log for `outcome` on the request whose raw `:path` is `raw_path`
    /// ([`crate::logs`]: the path as judged, never its query).
    pub fn log_lines<S>(&self, outcome: &Outcome<S>, raw_path: &[u8]) -> Vec<crate::logs::LogLine> {
        crate::logs::log_lines(
            &outcome.events,
            outcome
                .policy
                .as_ref()
                .map(|p| p.decision.reasons.as_slice()),
            raw_path,
            self.config.request.matrix_params,
        )
    }

    /// Parses, validates and compiles a plugin configuration (inline JWKS decoded here).
    pub fn from_json(bytes: &[u8]) -> Result<(Pipeline, Vec<ConfigWarning>), ConfigError> {
        let validated = Config::from_json(bytes)?;
        let mut warnings = validated.warnings;
        let jwt = validated
            .config
            .jwt
            .as_ref()
            .map(|j| JwtStage::compile(j, &mut warnings))
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
            .map(RateLimitStage::compile)
            .transpose()?;
        let contract = validated
            .config
            .contract
            .as_ref()
            .map(|c| ContractStage::compile(c).map(Arc::new))
            .transpose()?;
        // The handoff header is the limiter's only word on what to count, whatever this
        // filter's own `call`: an `ext_authz` filter pointed at the limiter would forward a
        // client's copy (say beside `call: filter`, by mistake), so no client copy passes.
        let mut protected: Vec<String> = vec![HANDOFF_HEADER.to_owned()];
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
                contract,
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

    /// Fresh per-worker state for this pipeline, coordinating remote keys through shared data
    /// of its own (natively: tests, `apiguard simulate`).
    pub fn worker_state(&self) -> WorkerState {
        self.worker_state_with(Box::new(MemoryShared::default()))
    }

    /// Fresh per-worker state whose remote keys are coordinated through `shared` (the host's
    /// shared data, seen by every worker). Creates the fetch leases that do not exist yet.
    pub fn worker_state_with(&self, shared: Box<dyn SharedData>) -> WorkerState {
        WorkerState {
            jwt: JwtWorker::new(self.jwt.as_ref(), shared),
            policy: self.policy.as_ref().map(PolicyStage::worker),
            local_limits: LocalLimits::new(
                self.ratelimit.as_ref().map_or(0, |r| r.local_cache_entries),
            ),
        }
    }

    /// Runs the request through the configured stages at Unix time `now_ms` (milliseconds).
    /// When a remote provider lacks the token's key and this worker wins the fetch lease, the
    /// step is [`Step::FetchKeys`]; when another worker is fetching, or the refetch rules say no,
    /// the token is refused.
    pub fn on_request(
        &self,
        req: &RequestFacts<'_>,
        now_ms: i64,
        state: &mut WorkerState,
    ) -> Outcome {
        self.run(req, now_ms, state, true)
    }

    /// Runs a request again after the fetch it waited for: a request waits for at most one
    /// fetch, so keys still missing now refuse the token.
    pub fn on_request_after_fetch(
        &self,
        req: &RequestFacts<'_>,
        now_ms: i64,
        state: &mut WorkerState,
    ) -> Outcome {
        self.run(req, now_ms, state, false)
    }

    fn run(
        &self,
        req: &RequestFacts<'_>,
        now_ms: i64,
        state: &mut WorkerState,
        may_fetch: bool,
    ) -> Outcome {
        let mut out = Outcome::pass();
        if self.jwt.is_none()
            && self.policy.is_none()
            && self.ratelimit.is_none()
            && self.contract.is_none()
        {
            return out;
        }
        // A phase that ends the request has set `out.step`.
        let _ = self.phases(req, now_ms, state, may_fetch, &mut out);
        out
    }

    /// The request's phases in order. Each may end the request (`Break`, with `out.step` set:
    /// a reply, or a wait for the host); a request that passes them all goes on upstream.
    fn phases(
        &self,
        req: &RequestFacts<'_>,
        now_ms: i64,
        state: &mut WorkerState,
        may_fetch: bool,
        out: &mut Outcome,
    ) -> ControlFlow<()> {
        let path = self.normalise(req, out)?;
        let method = self.method(req, &path, out)?;
        let mut ops = self.strip_client_copies(&req.headers);
        self.authenticate(req, &path, now_ms, state, may_fetch, out, &mut ops)?;
        let operation = self.validate(req, &path, &method, out)?;
        let request = PolicyRequest {
            headers: &req.headers,
            method: &method,
            path: &path,
            source: req.source,
            operation: operation.map(|o| OperationFacts {
                id: o.id.as_deref().unwrap_or(""),
                template: &o.template,
                tags: &o.tags,
                scopes: &o.scopes,
            }),
        };
        self.authorize(&request, now_ms, state, out, &mut ops)?;
        let cost = operation.and_then(|o| o.cost);
        let ops = self.limit(req, &path, now_ms, state, out, ops, cost)?;
        out.step = Step::Continue(ops);
        ControlFlow::Continue(())
    }

    /// The path as the backend reads it, or 400.
    fn normalise(
        &self,
        req: &RequestFacts<'_>,
        out: &mut Outcome,
    ) -> ControlFlow<(), NormalizedPath> {
        match path::normalize_with(req.path, self.config.request.matrix_params) {
            Ok(p) => ControlFlow::Continue(p),
            Err(_) => {
                out.end(Event::BadPath, Reply::bad_path());
                ControlFlow::Break(())
            }
        }
    }

    /// The method the backend acts on (override headers, `_method`), or 400.
    fn method<'a>(
        &self,
        req: &RequestFacts<'a>,
        path: &NormalizedPath,
        out: &mut Outcome,
    ) -> ControlFlow<(), Cow<'a, str>> {
        let overrides = path::params_where(path.query.as_deref(), http::names_method_override);
        let mode = self.config.request.method_override;
        match http::effective_method(&req.headers, &overrides, mode) {
            Ok(m) => ControlFlow::Continue(m),
            Err(_) => {
                out.end(Event::BadMethodOverride, Reply::bad_method_override());
                ControlFlow::Break(())
            }
        }
    }

    /// Authentication: public, verified (its identity headers join `ops`), or refused; or a
    /// wait for keys when this worker may fetch them.
    #[allow(clippy::too_many_arguments)]
    fn authenticate(
        &self,
        req: &RequestFacts<'_>,
        path: &NormalizedPath,
        now_ms: i64,
        state: &mut WorkerState,
        may_fetch: bool,
        out: &mut Outcome,
        ops: &mut Vec<HeaderOp>,
    ) -> ControlFlow<()> {
        let Some(jwt) = &self.jwt else {
            return ControlFlow::Continue(());
        };
        let now = now_ms.div_euclid(1000);
        let (event, reply) = match jwt.run(&mut state.jwt, &req.headers, path, now, may_fetch) {
            JwtOutcome::Public => return ControlFlow::Continue(()),
            JwtOutcome::Verified {
                provider,
                claims,
                cached,
                ops: set,
            } => {
                out.events.push(Event::JwtAccepted { cached });
                out.identity = Some(Authenticated { provider, claims });
                ops.extend(set);
                return ControlFlow::Continue(());
            }
            JwtOutcome::FetchKeys(fetch) => {
                out.step = Step::FetchKeys(fetch);
                return ControlFlow::Break(());
            }
            JwtOutcome::Missing => (Event::JwtMissing, Reply::token_missing()),
            JwtOutcome::Refused(why) => (Event::JwtRejected(why), Reply::token_invalid()),
        };
        out.end(event, reply);
        ControlFlow::Break(())
    }

    /// The API's contract: the request is a declared operation with valid parameters, and
    /// what its headers say of a body is allowed (404, 405, 400, 413, 415 otherwise; counted
    /// and let through in `monitor` mode).
    fn validate(
        &self,
        req: &RequestFacts<'_>,
        path: &NormalizedPath,
        method: &str,
        out: &mut Outcome,
    ) -> ControlFlow<(), Option<&Operation>> {
        let Some(contract) = &self.contract else {
            return ControlFlow::Continue(None);
        };
        let refusal = match contract.check(method, path, &req.headers, req.body_follows) {
            Ok(op) => return ControlFlow::Continue(Some(op)),
            Err(refusal) => refusal,
        };
        if contract.mode == ContractMode::Monitor {
            out.events.push(Event::ContractWouldRefuse(refusal.kind()));
            return ControlFlow::Continue(None);
        }
        out.end(Event::ContractRefused(refusal.kind()), refusal.reply());
        ControlFlow::Break(())
    }

    /// Authorization: the policy's decision (its headers join `ops`), or 403.
    fn authorize(
        &self,
        request: &PolicyRequest<'_>,
        now_ms: i64,
        state: &mut WorkerState,
        out: &mut Outcome,
        ops: &mut Vec<HeaderOp>,
    ) -> ControlFlow<()> {
        let (Some(stage), Some(worker)) = (&self.policy, state.policy.as_mut()) else {
            return ControlFlow::Continue(());
        };
        let identity = out.identity.as_ref().map(|i| (&*i.provider, &*i.claims));
        let result = stage.evaluate(worker, request, identity, now_ms);
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
        let flow = if result.decision.allow {
            out.events.push(Event::PolicyAllowed);
            ops.extend(
                result
                    .decision
                    .headers
                    .iter()
                    .map(|(n, v)| HeaderOp::Set(n.clone(), v.clone())),
            );
            ControlFlow::Continue(())
        } else if result.dry_run_deny {
            out.events.push(Event::PolicyDryRunDeny);
            ControlFlow::Continue(())
        } else {
            out.end(Event::PolicyDenied, stage.reply(&result.decision));
            ControlFlow::Break(())
        };
        out.policy = Some(result);
        flow
    }

    /// Rate limiting: the plan's checks, answered locally (429 from the over-limit cache), handed
    /// to the limiter's `ext_authz` in a header, or a wait for the limiter's answer. The header
    /// changes to go on with when nothing waits.
    #[allow(clippy::too_many_arguments)]
    fn limit(
        &self,
        req: &RequestFacts<'_>,
        path: &NormalizedPath,
        now_ms: i64,
        state: &mut WorkerState,
        out: &mut Outcome,
        mut ops: Vec<HeaderOp>,
        operation_cost: Option<u64>,
    ) -> ControlFlow<(), Vec<HeaderOp>> {
        let Some(rl) = &self.ratelimit else {
            return ControlFlow::Continue(ops);
        };
        // With `call: ext_authz` every request that goes on carries the plan, or says there is
        // none: the limiter refuses a request without the header rather than count nothing.
        let hand_over = rl.call == LimiterCall::ExtAuthz;
        let tier = out.policy.as_ref().and_then(|p| p.decision.tier.as_deref());
        // The policy's cost, else the operation's (`x-apiguard-cost`), else one.
        let cost = out
            .policy
            .as_ref()
            .and_then(|p| p.decision.cost)
            .or(operation_cost)
            .unwrap_or(1);
        let caller = out.identity.as_ref().map(|i| (&*i.provider, &*i.claims));
        let plan = match rl.plan(path, &req.headers, req.source, caller, tier, cost) {
            Ok(plan) => plan,
            Err(PlanError::UnknownTier(_)) => {
                // Nothing to call: `failure_mode` alone says whether the request goes on,
                // with no rate-limit headers (no window was consulted, so the judgement
                // has none to give).
                if let Err(reply) = conclude(&mut out.events, rl.unknown_tier(), None, state) {
                    out.step = Step::Respond(reply);
                    return ControlFlow::Break(());
                }
                None
            }
        };
        match plan {
            None if hand_over => {
                ops.push(HeaderOp::Set(HANDOFF_HEADER.into(), NO_LIMITS.into()));
            }
            None => {}
            Some(plan) if hand_over => {
                // The limiter decides, answers and counts; the local over-limit cache needs
                // answers the filter does not see here.
                out.events.push(Event::RateHandedOver);
                ops.push(HeaderOp::Set(HANDOFF_HEADER.into(), rl.handoff(plan)));
            }
            Some(plan) => {
                if !plan.shadow {
                    if let Some(reply) = state.local_limits.blocked(&plan.key, now_ms) {
                        out.end(Event::RateLimitedLocal, reply);
                        return ControlFlow::Break(());
                    }
                }
                out.step = Step::CheckLimits {
                    call: rl.call(&plan),
                    resume: Pending { plan, ops },
                };
                return ControlFlow::Break(());
            }
        }
        ControlFlow::Continue(ops)
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

    /// Finishes a request that waited for the limiter: `answer` is the status and body, or how
    /// the call failed.
    pub fn on_limiter_answer(
        &self,
        resume: Pending,
        answer: Result<(u16, &[u8]), ratelimit::LimiterFailure>,
        now_ms: i64,
        state: &mut WorkerState,
    ) -> Outcome<Resumed> {
        let mut events = Vec::new();
        let step = match &self.ratelimit {
            Some(rl) => {
                let j = rl.judge(&resume.plan, answer, now_ms);
                match conclude(&mut events, j, Some(&resume.plan.key), state) {
                    Ok(response) => Resumed::Continue {
                        request: resume.ops,
                        response,
                    },
                    Err(reply) => Resumed::Respond(reply),
                }
            }
            // Only a rate-limit stage plans a call; fail closed rather than trust a stray one.
            None => Resumed::Respond(Reply::filter_unavailable()),
        };
        Outcome {
            step,
            events,
            identity: None,
            policy: None,
        }
    }
}

/// Applies a rate-limit judgement: counts it and remembers a blocked key; the request is
/// answered (`Err`), or goes on with these response headers (`Ok`).
fn conclude(
    events: &mut Vec<Event>,
    j: ratelimit::Judgement,
    key: Option<&str>,
    state: &mut WorkerState,
) -> Result<Vec<(String, String)>, Reply> {
    events.push(match j.verdict {
        LimitVerdict::Allowed => Event::RateAllowed,
        LimitVerdict::Limited => Event::RateLimited,
        LimitVerdict::ShadowLimited => Event::RateShadowLimited,
        LimitVerdict::Failed(f) => Event::RateFailed(f),
    });
    if let (Some(key), Some(until), Some(reply)) = (key, j.block_until_ms, &j.reply) {
        state.local_limits.block(key, until, reply);
    }
    match j.reply {
        Some(reply) => Err(reply),
        None => {
            if matches!(j.verdict, LimitVerdict::Failed(_)) {
                events.push(Event::RateFailurePass);
            }
            Ok(j.response_headers)
        }
    }
}
