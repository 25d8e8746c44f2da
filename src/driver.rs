//! The request's life in one worker: the host's events in, [`Effect`]s out.
//!
//! The filter's glue (`filters/apiguard-wasm`) reads what the host has (a request's headers, a
//! call's status and body), hands it to a [`Driver`], and carries out the effects that come back,
//! in order. It decides nothing: every wait is kept here. A request waits for at most one thing
//! at a time ([`Wait`]):
//! - **keys**: the worker holding a provider's fetch lease calls its JWKS cluster; the answer
//!   goes to [`crate::jwt::JwtWorker::finish_fetch`], then the request runs again, once
//!   ([`Pipeline::on_request_after_fetch`]), with the head kept while it waited;
//! - **the limiter**: one call (`POST /v1/check`), its answer read by
//!   [`RateLimitStage::call_answer`] and judged by [`Pipeline::on_limiter_answer`];
//! - **a batch** (`rate_limit.batch`): the checks queue in the worker's [`Batcher`], the root
//!   context sends them, and each request resumes with its own item of the answer.
//!
//! Host calls are asked for as [`Effect::Call`], named by a [`CallId`]: the glue makes the call
//! and reports the host's token, or its refusal, with [`Driver::call_started`]. An answer is
//! read as [`Driver::expecting`] says (in which context, how many bytes at most) and handed to
//! [`Driver::on_call_answer`]. A context that goes ([`Driver::on_delete`]) takes its waits with
//! it: Envoy cancels its calls without answering them.
//!
//! Call tokens: Envoy's 32-bit call counter wraps, so a token can come back. A token the host
//! hands out again replaces its entry (the host reuses a token only once the call it named is
//! over, so the old entry was stale), an answer for a token not here is dropped, and a deleted
//! context's calls are forgotten with it, so nothing accumulates.
//!
//! Counters are kept here and taken by the glue once a tick ([`Driver::take_counts`]): a host
//! call per counter per request would cost more than the counting is worth.

use std::collections::HashMap;
use std::sync::Arc;

use apiguard_limiter_api::batch::BATCH_PATH;

use crate::config::HostSignatures;
use crate::events::{Counter, Event};
use crate::flow::{Outcome, Pending, Pipeline, RequestFacts, Resumed, Step, WorkerState};
use crate::http::{HeaderOp, Headers};
use crate::jwt::keys::MAX_JWKS_BYTES;
use crate::jwt::shared::{Fetch, KeyNote};
use crate::logs::{Level, LogLine};
use crate::ratelimit::batch::{self, as_call_answer, Batcher, Delivery, Waiter};
use crate::ratelimit::{LimitCall, LimiterFailure, RateLimitStage, MAX_ANSWER_BYTES};
use crate::reply::Reply;

/// A request's head as the host gives it: every header (pseudo-headers included), values as
/// bytes, the downstream address without port when the configuration reads it
/// ([`Driver::needs_source_address`]), and whether a body follows.
#[derive(Debug, Clone, Default)]
pub struct RequestHead {
    pub headers: Vec<(String, Vec<u8>)>,
    pub source: Option<String>,
    /// A body (or trailers) follows: the headers event did not end the stream.
    pub body_follows: bool,
}

impl RequestHead {
    /// The raw `:path` (empty when absent, which the path stage refuses).
    fn path(&self) -> &[u8] {
        self.headers
            .iter()
            .find(|(n, _)| n == ":path")
            .map(|(_, v)| v.as_slice())
            .unwrap_or_default()
    }
}

/// An HTTP call to an Envoy cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostCall {
    pub cluster: String,
    /// Pseudo-headers first.
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
    pub timeout_ms: u64,
}

impl HostCall {
    /// A JWKS fetch.
    fn jwks(fetch: &Fetch) -> HostCall {
        HostCall {
            cluster: fetch.cluster.clone(),
            headers: vec![
                (":method", "GET".to_owned()),
                (":path", fetch.path.clone()),
                (":authority", fetch.authority.clone()),
                ("accept", "application/json".to_owned()),
            ],
            body: Vec::new(),
            timeout_ms: fetch.timeout_ms,
        }
    }

    /// A JSON POST to the limiter.
    fn limiter(cluster: &str, path: &str, body: Vec<u8>, timeout_ms: u64) -> HostCall {
        HostCall {
            cluster: cluster.to_owned(),
            headers: vec![
                (":method", "POST".to_owned()),
                (":path", path.to_owned()),
                (":authority", "apiguard-limiter".to_owned()),
                ("content-type", "application/json".to_owned()),
            ],
            body,
            timeout_ms,
        }
    }
}

/// Names a call the driver asked for until the host gives it a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CallId(u64);

/// Something the host must do, in the order given.
#[derive(Debug)]
pub enum Effect {
    /// Start `call` as `context` (switching to it if another context runs: Envoy cancels a
    /// context's calls when it goes, so a batch is the root context's), then report the
    /// host's token or its refusal with [`Driver::call_started`].
    Call {
        id: CallId,
        context: u32,
        call: HostCall,
    },
    /// Apply `ops` to the request's headers and let it go upstream: in the request's own
    /// headers event, by answering "continue"; otherwise by resuming it.
    Continue { context: u32, ops: Vec<HeaderOp> },
    /// Answer the request locally; it stays paused (the host sends the reply).
    Respond { context: u32, reply: Reply },
    /// Publish in the request's filter state as `wasm.<name>` (for access logs).
    FilterState {
        context: u32,
        name: &'static str,
        value: Vec<u8>,
    },
    /// Write a line to the host's log at its level.
    Log(LogLine),
    /// Record a limiter answer's latency (ms) in `apiguard.ratelimit.callout_ms`.
    LimiterLatency(u64),
}

/// How to read the answer to a call: in which context, and how many body bytes are worth
/// reading (a larger answer is judged by its size alone, never read).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expecting {
    pub context: u32,
    pub max_body: usize,
}

/// What a call's answer is for.
#[derive(Debug)]
enum Wait {
    /// A JWKS fetch for `provider`, started by `context`; `rerun`: the request to run again once
    /// it ends (none for the root's refreshes).
    Keys {
        provider: usize,
        context: u32,
        rerun: Option<RequestHead>,
    },
    /// A request's own limiter call, sent at `sent_ms`.
    Limiter {
        context: u32,
        resume: Pending,
        sent_ms: i64,
    },
    /// A batch of checks, the root's call, with its requests until the host takes the call
    /// (then they are the batcher's, and this is empty).
    Batch(Vec<Waiter<Pending>>),
}

/// What the driver keeps of a request between its events.
#[derive(Debug, Default)]
struct RequestState {
    /// The call it waits for.
    waiting: Option<u32>,
    /// Its checks wait in (or for) a batch.
    batched: bool,
    /// Headers for the upstream's response (the rate-limit headers).
    response: Vec<(String, String)>,
}

/// One worker's requests under one plugin configuration.
pub struct Driver {
    pipeline: Arc<Pipeline>,
    state: WorkerState,
    /// The root context: it makes the batches' calls and the key refreshes.
    root: u32,
    /// `rate_limit.batch`.
    batching: bool,
    batcher: Batcher<Pending>,
    next_call: u64,
    /// Calls asked for whose token the host has not given yet.
    starting: HashMap<CallId, Wait>,
    /// Calls in flight, by token.
    waits: HashMap<u32, Wait>,
    /// Requests that wait, or that have response headers to add.
    requests: HashMap<u32, RequestState>,
    /// Increments not yet taken, by `Counter` discriminant.
    counts: Vec<u64>,
}

impl Driver {
    /// The driver of root context `root`, over `state` (the pipeline's worker state, coordinating
    /// keys through the host's shared data).
    pub fn new(pipeline: Arc<Pipeline>, state: WorkerState, root: u32) -> Driver {
        let batching = pipeline
            .config
            .rate_limit
            .as_ref()
            .is_some_and(|rl| rl.batch);
        Driver {
            pipeline,
            state,
            root,
            batching,
            batcher: Batcher::default(),
            next_call: 0,
            starting: HashMap::new(),
            waits: HashMap::new(),
            requests: HashMap::new(),
            counts: vec![0; Counter::ALL.len()],
        }
    }

    pub fn pipeline(&self) -> &Pipeline {
        &self.pipeline
    }

    /// The worker state, for the glue to install the host's signature verifier.
    pub fn state_mut(&mut self) -> &mut WorkerState {
        &mut self.state
    }

    /// Whether to offer the host's signature verifier (`jwt.host_signatures: auto`, the
    /// default): the glue then runs `jwt::host_signature::self_test` and installs it in
    /// `state_mut().jwt` if it passes.
    pub fn wants_host_signatures(&self) -> bool {
        self.pipeline
            .config
            .jwt
            .as_ref()
            .is_some_and(|j| j.host_signatures != HostSignatures::Off)
    }

    /// Whether [`RequestHead::source`] is read: the host call that learns it can be skipped
    /// otherwise.
    pub fn needs_source_address(&self) -> bool {
        self.pipeline.needs_source_address()
    }

    /// A request's headers arrived (`Err`: the host could not give them, and says why).
    pub fn on_request_headers(
        &mut self,
        context: u32,
        head: Result<RequestHead, String>,
        now_ms: i64,
    ) -> Vec<Effect> {
        let mut out = Vec::new();
        match head {
            Ok(head) => self.run(context, head, now_ms, false, &mut out),
            Err(e) => {
                out.push(log(
                    Level::Warn,
                    format!(
                        "apiguard: cannot read the request headers ({e}): refusing the request"
                    ),
                ));
                out.push(Effect::Respond {
                    context,
                    reply: Reply::filter_unavailable(),
                });
            }
        }
        out
    }

    /// The host took call `id` as `token`, or refused it (`Err`; the glue logged why).
    pub fn call_started(&mut self, id: CallId, token: Result<u32, ()>, now_ms: i64) -> Vec<Effect> {
        let mut out = Vec::new();
        let Some(wait) = self.starting.remove(&id) else {
            return out;
        };
        let Ok(token) = token else {
            self.not_started(wait, now_ms, &mut out);
            return out;
        };
        let context = self.context_of(&wait);
        if context != self.root {
            self.requests.entry(context).or_default().waiting = Some(token);
        }
        let wait = match wait {
            Wait::Batch(waiters) => {
                self.batcher.sent(token, waiters);
                Wait::Batch(Vec::new())
            }
            other => other,
        };
        if let Some(stale) = self.waits.insert(token, wait) {
            let stale = self.context_of(&stale);
            out.push(log(
                Level::Debug,
                format!(
                    "apiguard: the host reused call token {token} (last held by context {stale})"
                ),
            ));
        }
        out
    }

    /// How to read the answer to call `token`; `None` when nothing waits for it (drop it).
    pub fn expecting(&self, token: u32) -> Option<Expecting> {
        let wait = self.waits.get(&token)?;
        let max_body = match wait {
            Wait::Keys { .. } => MAX_JWKS_BYTES,
            Wait::Limiter { .. } => MAX_ANSWER_BYTES,
            Wait::Batch(_) => batch::MAX_BATCH_ANSWER_BYTES,
        };
        Some(Expecting {
            context: self.context_of(wait),
            max_body,
        })
    }

    /// Call `token` ended: `status` (`None` when no response came: reset, timeout, no cluster),
    /// the body's full size, and the body as read (empty when over [`Expecting::max_body`]).
    pub fn on_call_answer(
        &mut self,
        token: u32,
        status: Option<u16>,
        body_size: usize,
        body: &[u8],
        now_ms: i64,
    ) -> Vec<Effect> {
        let mut out = Vec::new();
        let Some(wait) = self.waits.remove(&token) else {
            return out;
        };
        match wait {
            Wait::Keys {
                provider,
                context,
                rerun,
            } => {
                let answer = (status, body_size, body.to_vec());
                let notes = self
                    .state
                    .jwt
                    .finish_fetch(provider, now_ms.div_euclid(1000), answer);
                self.note(&notes, &mut out);
                if let Some(head) = rerun {
                    self.stop_waiting(context);
                    self.run(context, head, now_ms, true, &mut out);
                }
            }
            Wait::Limiter {
                context,
                resume,
                sent_ms,
            } => {
                self.stop_waiting(context);
                let answer = RateLimitStage::call_answer(status, body_size, body);
                self.resume(context, resume, sent_ms, answer, now_ms, &mut out);
            }
            Wait::Batch(_) => {
                let waiters = self.batcher.answered(token).unwrap_or_default();
                let (delivery, problem) = batch::read_answer(waiters, status, body_size, body);
                if let Some(problem) = problem {
                    out.push(log(Level::Warn, format!("apiguard: {problem}")));
                }
                self.deliver(delivery, now_ms, &mut out);
                // The requests that queued meanwhile go now, as the next batch.
                self.send_batch(now_ms, &mut out);
            }
        }
        out
    }

    /// The timer (once a second): loads keys other workers fetched and starts the refreshes
    /// this worker took the lease of.
    pub fn on_tick(&mut self, now_ms: i64) -> Vec<Effect> {
        let mut out = Vec::new();
        if !self.state.jwt.has_remote_keys() {
            return out;
        }
        let (fetches, notes) = self.state.jwt.tick(now_ms.div_euclid(1000));
        self.note(&notes, &mut out);
        for fetch in fetches {
            let wait = Wait::Keys {
                provider: fetch.provider,
                context: self.root,
                rerun: None,
            };
            self.start(self.root, HostCall::jwks(&fetch), wait, &mut out);
        }
        out
    }

    /// The headers to add to the upstream's response to this request.
    pub fn response_headers(&mut self, context: u32) -> Vec<(String, String)> {
        self.requests
            .get_mut(&context)
            .map(|r| std::mem::take(&mut r.response))
            .unwrap_or_default()
    }

    /// Request `context` went: its queued checks leave the batch queue, and the call it waited
    /// for is forgotten (the host cancels it without an answer). Its checks already in a batch
    /// in flight are skipped when the answer comes.
    pub fn on_delete(&mut self, context: u32) {
        let Some(request) = self.requests.remove(&context) else {
            return;
        };
        if request.batched {
            self.batcher.forget(context);
        }
        if let Some(token) = request.waiting {
            if self.waits.get(&token).map(|w| self.context_of(w)) == Some(context) {
                self.waits.remove(&token);
            }
        }
    }

    /// The counts since the last call, each counter with its increment.
    pub fn take_counts(&mut self) -> Vec<(Counter, u64)> {
        Counter::ALL
            .iter()
            .zip(self.counts.iter_mut())
            .filter(|(_, n)| **n > 0)
            .map(|(c, n)| (*c, std::mem::take(n)))
            .collect()
    }

    /// How many calls are in flight (tests: nothing may stay behind).
    pub fn calls_in_flight(&self) -> usize {
        self.waits.len() + self.starting.len()
    }

    /// Runs the request (again, `after_fetch`, once the keys it waited for came) and turns its
    /// outcome into effects.
    fn run(
        &mut self,
        context: u32,
        head: RequestHead,
        now_ms: i64,
        after_fetch: bool,
        out: &mut Vec<Effect>,
    ) {
        let pipeline = self.pipeline.clone();
        let facts = RequestFacts {
            path: head.path(),
            headers: Headers::new(&head.headers),
            source: head.source.as_deref(),
            body_follows: head.body_follows,
        };
        let outcome = if after_fetch {
            pipeline.on_request_after_fetch(&facts, now_ms, &mut self.state)
        } else {
            pipeline.on_request(&facts, now_ms, &mut self.state)
        };
        self.count(&outcome.events);
        out.extend(
            pipeline
                .log_lines(&outcome, head.path())
                .into_iter()
                .map(Effect::Log),
        );
        publish(&pipeline, &outcome, context, out);
        match outcome.step {
            Step::Continue(ops) => out.push(Effect::Continue { context, ops }),
            Step::Respond(reply) => out.push(Effect::Respond { context, reply }),
            // A request waits for one fetch at most (the flow never asks twice); fail closed
            // rather than wait again.
            Step::FetchKeys(_) if after_fetch => out.push(Effect::Respond {
                context,
                reply: Reply::filter_unavailable(),
            }),
            Step::FetchKeys(fetch) => {
                let wait = Wait::Keys {
                    provider: fetch.provider,
                    context,
                    rerun: Some(head),
                };
                self.start(context, HostCall::jwks(&fetch), wait, out);
            }
            Step::CheckLimits { call, resume } if self.batching => {
                self.queue_checks(context, call, resume, now_ms, out);
            }
            Step::CheckLimits { call, resume } => {
                let call = HostCall::limiter(&call.cluster, call.path, call.body, call.timeout_ms);
                let wait = Wait::Limiter {
                    context,
                    resume,
                    sent_ms: now_ms,
                };
                self.start(context, call, wait, out);
            }
        }
    }

    /// Asks for a call as `context`, for `wait`.
    fn start(&mut self, context: u32, call: HostCall, wait: Wait, out: &mut Vec<Effect>) {
        let id = CallId(self.next_call);
        self.next_call = self.next_call.wrapping_add(1);
        self.starting.insert(id, wait);
        out.push(Effect::Call { id, context, call });
    }

    /// The host refused a call: what waited for it goes on without it.
    fn not_started(&mut self, wait: Wait, now_ms: i64, out: &mut Vec<Effect>) {
        match wait {
            Wait::Keys {
                provider,
                context,
                rerun,
            } => {
                let notes = self
                    .state
                    .jwt
                    .fetch_failed(provider, now_ms.div_euclid(1000));
                self.note(&notes, out);
                // Run again without the fetch: the token is refused.
                if let Some(head) = rerun {
                    self.run(context, head, now_ms, true, out);
                }
            }
            Wait::Limiter {
                context,
                resume,
                sent_ms,
            } => {
                let failed = Err(LimiterFailure::Dispatch);
                self.resume(context, resume, sent_ms, failed, now_ms, out);
            }
            Wait::Batch(waiters) => {
                self.batcher.refused();
                let failed = Delivery::failed(waiters, LimiterFailure::Dispatch);
                self.deliver(failed, now_ms, out);
                self.send_batch(now_ms, out);
            }
        }
    }

    /// Queues the request's checks for a batch, and sends one if none is in flight.
    fn queue_checks(
        &mut self,
        context: u32,
        call: LimitCall,
        resume: Pending,
        now_ms: i64,
        out: &mut Vec<Effect>,
    ) {
        let waiter = Waiter {
            context,
            resume,
            queued_ms: now_ms,
        };
        let queued = self
            .batcher
            .enqueue(waiter, call.body, &call.cluster, call.timeout_ms);
        match queued {
            Ok(()) => {
                self.requests.entry(context).or_default().batched = true;
                self.send_batch(now_ms, out);
            }
            // The worker's queue is full: fail now, by the failure mode.
            Err(waiter) => {
                let failed = Err(LimiterFailure::Queue);
                self.resume(
                    context,
                    waiter.resume,
                    waiter.queued_ms,
                    failed,
                    now_ms,
                    out,
                );
            }
        }
    }

    /// Fails the queued requests that waited too long ([`Batcher::expire`]), then asks for the
    /// next batch's call if none is in flight.
    fn send_batch(&mut self, now_ms: i64, out: &mut Vec<Effect>) {
        let expired = Delivery::failed(self.batcher.expire(now_ms), LimiterFailure::Queue);
        self.deliver(expired, now_ms, out);
        if let Some(next) = self.batcher.next_batch() {
            let call = HostCall::limiter(&next.cluster, BATCH_PATH, next.body, next.timeout_ms);
            self.start(self.root, call, Wait::Batch(next.waiters), out);
        }
    }

    /// Resumes each request of a batch with its answer, in item order; requests gone meanwhile
    /// are skipped (nothing waits for them).
    fn deliver(&mut self, delivery: Delivery<Pending>, now_ms: i64, out: &mut Vec<Effect>) {
        for (waiter, answer) in delivery.into_pairs() {
            match self.requests.get_mut(&waiter.context) {
                Some(r) if r.batched => r.batched = false,
                _ => {
                    out.push(log(
                        Level::Debug,
                        format!(
                            "apiguard: batch answer for context {}, which is gone: dropped",
                            waiter.context
                        ),
                    ));
                    continue;
                }
            }
            let answer = as_call_answer(&answer);
            self.resume(
                waiter.context,
                waiter.resume,
                waiter.queued_ms,
                answer,
                now_ms,
                out,
            );
        }
    }

    /// Hands the limiter's answer (or the call's failure) to the pipeline and turns what follows
    /// into effects; `since_ms`: when the request started waiting.
    fn resume(
        &mut self,
        context: u32,
        resume: Pending,
        since_ms: i64,
        answer: Result<(u16, &[u8]), LimiterFailure>,
        now_ms: i64,
        out: &mut Vec<Effect>,
    ) {
        let waited = u64::try_from(now_ms.saturating_sub(since_ms)).unwrap_or(0);
        out.push(Effect::LimiterLatency(waited));
        let pipeline = self.pipeline.clone();
        let outcome = pipeline.on_limiter_answer(resume, answer, now_ms, &mut self.state);
        self.count(&outcome.events);
        // No line of a resumed request names its path.
        out.extend(
            pipeline
                .log_lines(&outcome, b"")
                .into_iter()
                .map(Effect::Log),
        );
        match outcome.step {
            Resumed::Continue { request, response } => {
                if !response.is_empty() {
                    self.requests.entry(context).or_default().response = response;
                }
                out.push(Effect::Continue {
                    context,
                    ops: request,
                });
            }
            Resumed::Respond(reply) => out.push(Effect::Respond { context, reply }),
        }
    }

    fn stop_waiting(&mut self, context: u32) {
        if let Some(r) = self.requests.get_mut(&context) {
            r.waiting = None;
        }
    }

    fn context_of(&self, wait: &Wait) -> u32 {
        match wait {
            Wait::Keys { context, .. } | Wait::Limiter { context, .. } => *context,
            Wait::Batch(_) => self.root,
        }
    }

    fn count(&mut self, events: &[Event]) {
        for e in events {
            for c in e.counters() {
                if let Some(n) = self.counts.get_mut(c as usize) {
                    *n += 1;
                }
            }
        }
    }

    /// Logs and counts what happened to the keys.
    fn note(&mut self, notes: &[KeyNote], out: &mut Vec<Effect>) {
        for n in notes {
            out.push(log(n.level(), format!("apiguard: {n}")));
            self.count(Event::of_note(n).as_slice());
        }
    }
}

fn log(level: Level, text: String) -> Effect {
    Effect::Log(LogLine { level, text })
}

/// The identity and the policy decision, in filter state for access logs.
fn publish(pipeline: &Pipeline, outcome: &Outcome, context: u32, out: &mut Vec<Effect>) {
    for (name, value) in pipeline.filter_state(outcome) {
        out.push(Effect::FilterState {
            context,
            name,
            value: value.into_owned(),
        });
    }
}
