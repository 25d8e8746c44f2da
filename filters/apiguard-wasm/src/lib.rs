//! apiguard as a Proxy-Wasm HTTP filter.
//!
//! This crate is a thin translation layer: host events become calls into the host-independent
//! core (`apiguard-core`), and the core's steps become host calls. It must never panic: a panic
//! kills the Wasm VM for every later request on this worker. So it does not use the proxy-wasm
//! SDK, whose host calls and dispatcher panic on host answers they do not expect; it speaks the
//! ABI through `apiguard-proxy-abi` (`filters/proxy-abi`), which holds all the `unsafe` code:
//! - `exports` (Wasm only): the host's events, each handed to `dispatch`;
//! - `dispatch`: host events to this crate's contexts;
//! - `calls`: which context runs, which waits for which call, answers kept for delivery;
//! - `host`: the filter's host calls, each failure logged and failed closed;
//! - `worker`: what one worker keeps (the pipeline, the core's worker state, counters);
//! - this file: the root and request contexts, carrying out the core's steps (the batches of
//!   `rate_limit.batch` are the core's `ratelimit::batch`; this file sends them).

#![deny(unsafe_code)]

/// Public: its functions are the host's entry points, called by `exports` on Wasm; natively only
/// tests call them, and being public keeps them (and the filter behind them) checked code
/// rather than dead code.
mod calls;
pub mod dispatch;
#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code)]
mod exports;
mod host;
mod worker;

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use apiguard_core::flow::{Outcome, Pending, Pipeline, RequestFacts, Resumed, Step};
use apiguard_core::http::{HeaderOp, Headers};
use apiguard_core::jwt::keys::MAX_JWKS_BYTES;
use apiguard_core::jwt::shared::Fetch;
use apiguard_core::ratelimit::batch::{
    self, as_call_answer, Answer, Delivery, Waiter, MAX_BATCH_ANSWER_BYTES,
};
use apiguard_core::ratelimit::{LimitCall, LimiterFailure, RateLimitStage, MAX_ANSWER_BYTES};
use apiguard_core::reply::Reply;
use apiguard_limiter_api::batch::BATCH_PATH;
use log::{debug, error, info, warn};

use apiguard_proxy_abi::hostcall::Action;
use worker::Worker;

// Talc instead of Rust's default Wasm allocator (dlmalloc): the policy engine allocates and
// frees many small values per request, and talc does that markedly faster (docs/benchmarks.md).
#[cfg(all(target_family = "wasm", not(target_feature = "atomics")))]
#[global_allocator]
static ALLOCATOR: talc::wasm::WasmDynamicTalc = talc::wasm::new_wasm_dynamic_allocator();

/// How often each worker flushes its counters to Envoy and looks for keys other workers
/// fetched and for due refreshes.
const TICK: Duration = Duration::from_secs(1);

/// One per plugin configuration per worker.
struct Root {
    /// Its context id.
    id: u32,
    worker: Option<Rc<RefCell<Worker>>>,
    /// JWKS fetches this root context started: call token → provider.
    pending: HashMap<u32, usize>,
}

impl Root {
    fn new(id: u32) -> Root {
        Root {
            id,
            worker: None,
            pending: HashMap::new(),
        }
    }

    /// Parses, validates and compiles the configuration once. Returning `false` makes Envoy
    /// refuse the plugin, so a bad configuration never serves traffic; the log names the field.
    fn on_configure(&mut self) -> bool {
        let bytes = match host::plugin_configuration() {
            Ok(bytes) => bytes,
            Err(e) => {
                error!("apiguard: cannot read the plugin configuration: {e}");
                return false;
            }
        };
        let (pipeline, warnings) = match Pipeline::from_json(&bytes) {
            Ok(p) => p,
            Err(e) => {
                error!("apiguard: invalid configuration: {e}");
                return false;
            }
        };
        for w in &warnings {
            warn!("apiguard: configuration warning: {w}");
        }
        info!(
            "apiguard: configuration loaded (jwt: {}, policy: {}, rate_limit: {})",
            on_off(pipeline.config.jwt.is_some()),
            on_off(pipeline.config.policy.is_some()),
            on_off(pipeline.config.rate_limit.is_some()),
        );
        let mut worker = Worker::new(Arc::new(pipeline), self.id);
        worker.choose_signature_path();
        // The tick flushes counters and, with remote JWKS, syncs and refreshes keys.
        if let Err(e) = host::set_tick_period(TICK) {
            error!("apiguard: cannot start the timer: {e}");
            return false;
        }
        self.worker = Some(Rc::new(RefCell::new(worker)));
        true
    }

    /// Picks up keys other workers fetched and starts refreshes that are due.
    fn on_tick(&mut self) {
        let Some(Ok(mut w)) = self.worker.as_ref().map(|w| w.try_borrow_mut()) else {
            return;
        };
        w.flush_counters();
        if !w.state.has_remote_keys() {
            return;
        }
        let now = host::now();
        let (fetches, notes) = w.state.tick(now);
        w.note(&notes);
        for fetch in fetches {
            if let Some(token) = start_fetch(&mut w, &fetch, now) {
                self.pending.insert(token, fetch.provider);
            }
        }
    }

    /// A JWKS fetch's answer, or a batch's: then the answers for its requests, which
    /// `dispatch` delivers each in its own context.
    fn on_http_call_response(&mut self, token: u32, body_size: usize) -> Option<Delivery<Pending>> {
        let wrc = self.worker.clone()?;
        let mut w = wrc.try_borrow_mut().ok()?;
        if let Some(provider) = self.pending.remove(&token) {
            finish_fetch(&mut w, provider, body_size);
            return None;
        }
        let waiters = w.batcher.answered(token)?;
        Some(batch_answers(waiters, body_size))
    }

    /// Sends the requests that queued while a batch was in flight; those of a call the host
    /// refused come back failed.
    fn send_next_batch(&self) -> Option<Delivery<Pending>> {
        let wrc = self.worker.clone()?;
        let mut w = wrc.try_borrow_mut().ok()?;
        send_batch(&mut w, host::now_ms())
    }

    fn new_request(&self, id: u32) -> Request {
        Request::new(self.worker.clone(), id)
    }
}

fn on_off(on: bool) -> &'static str {
    if on {
        "on"
    } else {
        "off"
    }
}

/// Starts a JWKS fetch this worker holds the lease for; on failure to start, the lease backs
/// off and `None` comes back.
fn start_fetch(w: &mut Worker, fetch: &Fetch, now: i64) -> Option<u32> {
    let timeout = Duration::from_millis(fetch.timeout_ms);
    match calls::started(host::http_get(
        &fetch.cluster,
        &fetch.path,
        &fetch.authority,
        timeout,
    )) {
        Ok(token) => Some(token),
        Err(status) => {
            warn!(
                "apiguard: cannot fetch JWKS from cluster `{}`: {status}",
                fetch.cluster
            );
            let notes = w.state.fetch_failed(fetch.provider, now);
            w.note(&notes);
            None
        }
    }
}

/// Hands a finished JWKS fetch to the core.
fn finish_fetch(w: &mut Worker, provider: usize, body_size: usize) {
    let (status, body) = host::call_response(body_size, MAX_JWKS_BYTES);
    let notes = w
        .state
        .finish_fetch(provider, host::now(), (status, body_size, body));
    w.note(&notes);
}

/// The next batch of queued checks, sent by the root context (a batch must outlive the request
/// that started it: Envoy cancels a context's calls when it goes). `Some`: requests that fail
/// now, to be delivered before calling again: those that waited past their `timeout_ms`
/// (`apiguard_core::ratelimit::batch::Batcher::expire`), and the batch's if the host refused the call.
fn send_batch(w: &mut Worker, now_ms: i64) -> Option<Delivery<Pending>> {
    let mut failed = Delivery::failed(w.batcher.expire(now_ms), LimiterFailure::Queue);
    if let Some(out) = w.batcher.next_batch() {
        let timeout = Duration::from_millis(out.timeout_ms);
        let sent = calls::as_context(w.root_id, || {
            calls::started(host::http_post(
                &out.cluster,
                BATCH_PATH,
                &out.body,
                timeout,
            ))
        });
        match sent {
            Ok(token) => w.batcher.sent(token, out.waiters),
            Err(status) => {
                warn!(
                    "apiguard: cannot call the limiter on cluster `{}`: {status}",
                    out.cluster
                );
                failed.extend(Delivery::failed(out.waiters, LimiterFailure::Dispatch));
            }
        }
    }
    (!failed.is_empty()).then_some(failed)
}

/// The answer to a batch, read by the core (`batch::read_answer`) for its requests in order.
fn batch_answers(waiters: Vec<Waiter<Pending>>, body_size: usize) -> Delivery<Pending> {
    let (status, body) = host::call_response(body_size, MAX_BATCH_ANSWER_BYTES);
    let (delivery, problem) = batch::read_answer(waiters, status, body_size, &body);
    if let Some(problem) = problem {
        warn!("apiguard: {problem}");
    }
    delivery
}

/// One per HTTP request.
struct Request {
    /// Its context id.
    id: u32,
    worker: Option<Rc<RefCell<Worker>>>,
    /// The call this request waits for, if any.
    waiting: Option<(u32, Waiting)>,
    /// Rate-limit headers for the response.
    response_headers: Vec<(String, String)>,
    /// Its checks wait in (or for) a batch.
    batched: bool,
}

/// What a paused request resumes with.
enum Waiting {
    /// A JWKS fetch for this provider; then the request runs again, once.
    Keys(usize),
    /// The limiter's answer; sent at this time (ms).
    Limiter(Pending, i64),
}

impl Request {
    /// Request `id` under a root whose worker is `worker` (`None`: it will be refused).
    fn new(worker: Option<Rc<RefCell<Worker>>>, id: u32) -> Request {
        Request {
            id,
            worker,
            waiting: None,
            response_headers: Vec::new(),
            batched: false,
        }
    }

    /// It goes (`dispatch`): its checks leave the batch queue if they wait there; the calls
    /// it waits for, which the context table forgets with it.
    fn on_delete(&mut self) -> Vec<u32> {
        if self.batched {
            if let Some(Ok(mut w)) = self.worker.as_ref().map(|w| w.try_borrow_mut()) {
                w.batcher.forget(self.id);
            }
        }
        self.waiting_on()
    }

    /// The calls this request waits for (forgotten by `dispatch` if it is deleted first).
    fn waiting_on(&self) -> Vec<u32> {
        self.waiting.iter().map(|(token, _)| *token).collect()
    }

    /// Runs `f` with the worker. Fails closed: without one (which Envoy never allows, since a
    /// failed configuration refuses the plugin) nothing passes.
    fn with_worker(&mut self, f: impl FnOnce(&mut Self, &mut Worker) -> Action) -> Action {
        let Some(wrc) = self.worker.clone() else {
            host::respond(&Reply::filter_unavailable());
            return Action::Pause;
        };
        let Ok(mut w) = wrc.try_borrow_mut() else {
            host::respond(&Reply::filter_unavailable());
            return Action::Pause;
        };
        f(self, &mut w)
    }

    /// Runs the pipeline (`retry`: again, after the fetch it waited for) and carries out its
    /// step.
    fn process(&mut self, retry: bool) -> Action {
        self.with_worker(|this, w| this.run(w, retry))
    }

    fn run(&mut self, w: &mut Worker, retry: bool) -> Action {
        let now_ms = host::now_ms();
        let headers = match host::request_headers() {
            Ok(headers) => headers,
            Err(e) => {
                warn!("apiguard: cannot read the request headers ({e}): refusing the request");
                host::respond(&Reply::filter_unavailable());
                return Action::Pause;
            }
        };
        let path = headers
            .iter()
            .find(|(n, _)| n == ":path")
            .map(|(_, v)| v.as_slice())
            .unwrap_or_default();
        let pipeline = w.pipeline.clone();
        let source = if pipeline.needs_source_address() {
            host::source_address()
        } else {
            None
        };
        let facts = RequestFacts {
            path,
            headers: Headers::new(&headers),
            source: source.as_deref(),
        };
        let outcome = if retry {
            pipeline.on_request_after_fetch(&facts, now_ms, &mut w.state)
        } else {
            pipeline.on_request(&facts, now_ms, &mut w.state)
        };
        w.count(&outcome.events);
        log_outcome(&outcome, &pipeline, path);
        publish(&outcome, &pipeline);
        match outcome.step {
            Step::Continue(ops) => self.forward(&ops, Vec::new()),
            Step::Respond(reply) => answer(&reply),
            Step::FetchKeys(fetch) => {
                let now = now_ms.div_euclid(1000);
                match start_fetch(w, &fetch, now) {
                    Some(token) => self.waiting = Some((token, Waiting::Keys(fetch.provider))),
                    // The fetch cannot start: run again without one (the token is refused).
                    None => return self.run(w, true),
                }
                Action::Pause
            }
            Step::CheckLimits { call, resume } if w.batching => {
                self.queue_checks(w, call, resume, now_ms)
            }
            Step::CheckLimits { call, resume } => {
                let timeout = Duration::from_millis(call.timeout_ms);
                match calls::started(host::http_post(
                    &call.cluster,
                    call.path,
                    &call.body,
                    timeout,
                )) {
                    Ok(token) => {
                        self.waiting = Some((token, Waiting::Limiter(resume, now_ms)));
                        Action::Pause
                    }
                    Err(status) => {
                        warn!(
                            "apiguard: cannot call the limiter on cluster `{}`: {status}",
                            call.cluster
                        );
                        let pipeline = w.pipeline.clone();
                        let next = pipeline.on_limiter_answer(
                            resume,
                            Err(LimiterFailure::Dispatch),
                            now_ms,
                            &mut w.state,
                        );
                        self.resume(w, next)
                    }
                }
            }
        }
    }

    /// Lets the request go upstream with these changes; `response` headers are added to the
    /// upstream's answer.
    fn forward(&mut self, ops: &[HeaderOp], response: Vec<(String, String)>) -> Action {
        host::apply(ops);
        self.response_headers = response;
        Action::Continue
    }

    /// Carries out what follows the limiter's answer.
    fn resume(&mut self, w: &mut Worker, outcome: Outcome<Resumed>) -> Action {
        w.count(&outcome.events);
        // No line of a resumed request names its path.
        log_outcome(&outcome, &w.pipeline, b"");
        match outcome.step {
            Resumed::Continue { request, response } => self.forward(&request, response),
            Resumed::Respond(reply) => answer(&reply),
        }
    }

    /// The limiter answered (or the call failed).
    fn limiter_answered(&mut self, resume: Pending, sent_ms: i64, body_size: usize) -> Action {
        self.with_worker(|this, w| {
            let (status, body) = host::call_response(body_size, MAX_ANSWER_BYTES);
            let answer = RateLimitStage::call_answer(status, body_size, &body);
            this.answer_with(w, resume, sent_ms, answer)
        })
    }

    /// Hands the limiter's answer (or the call's failure) to the core and carries out what
    /// follows; `sent_ms`: when the request started waiting.
    fn answer_with(
        &mut self,
        w: &mut Worker,
        resume: Pending,
        sent_ms: i64,
        answer: Result<(u16, &[u8]), LimiterFailure>,
    ) -> Action {
        let now_ms = host::now_ms();
        w.record_callout(now_ms.saturating_sub(sent_ms));
        let pipeline = w.pipeline.clone();
        let next = pipeline.on_limiter_answer(resume, answer, now_ms, &mut w.state);
        self.resume(w, next)
    }

    /// Queues the request's checks for a batch, and sends one if none is in flight.
    fn queue_checks(
        &mut self,
        w: &mut Worker,
        call: LimitCall,
        resume: Pending,
        now_ms: i64,
    ) -> Action {
        let waiter = Waiter {
            context: self.id,
            resume,
            queued_ms: now_ms,
        };
        if let Err(waiter) = w
            .batcher
            .enqueue(waiter, call.body, &call.cluster, call.timeout_ms)
        {
            // The worker's queue is full: fail now, by the failure mode.
            return self.answer_with(
                w,
                waiter.resume,
                waiter.queued_ms,
                Err(LimiterFailure::Queue),
            );
        }
        self.batched = true;
        // Requests that fail now (expired, or a call the host refused). This request's answer
        // is given here (it cannot be resumed from inside its own callback); any other's goes
        // to its own context afterwards.
        let mut mine = None;
        let mut others = Delivery::default();
        while let Some(failed) = send_batch(w, now_ms) {
            for (waiter, answer) in failed.into_pairs() {
                if waiter.context == self.id {
                    mine = Some((waiter, answer));
                } else {
                    others.push(waiter, answer);
                }
            }
        }
        if !others.is_empty() {
            calls::defer(others);
        }
        match mine {
            Some((waiter, answer)) => {
                self.batched = false;
                self.answer_with(w, waiter.resume, waiter.queued_ms, as_call_answer(&answer))
            }
            // Queued, or in the batch just sent: its answer comes to its own context.
            None => Action::Pause,
        }
    }

    /// Its checks' answer came in a batch (or the batch failed).
    fn batch_answered(&mut self, resume: Pending, queued_ms: i64, answer: Answer) -> Action {
        self.batched = false;
        self.with_worker(|this, w| this.answer_with(w, resume, queued_ms, as_call_answer(&answer)))
    }
}

/// Answers locally; the request stays paused (Envoy sends the reply).
fn answer(reply: &Reply) -> Action {
    host::respond(reply);
    Action::Pause
}

/// Writes the core's log lines for this outcome ([`apiguard_core::logs`]) at their levels.
fn log_outcome<S>(outcome: &Outcome<S>, pipeline: &Pipeline, path: &[u8]) {
    use apiguard_core::logs::Level;
    for line in pipeline.log_lines(outcome, path) {
        match line.level {
            Level::Debug => debug!("{}", line.text),
            Level::Info => info!("{}", line.text),
            Level::Warn => warn!("{}", line.text),
        }
    }
}

/// Publishes the identity and the policy decision in filter state, for access logs.
fn publish(outcome: &Outcome, pipeline: &Pipeline) {
    for (name, value) in pipeline.filter_state(outcome) {
        host::set_filter_state(name, &value);
    }
}

/// The host's events for this request (from `dispatch`).
impl Request {
    fn on_http_call_response(&mut self, token: u32, body_size: usize) {
        let Some((waiting, what)) = self.waiting.take() else {
            return;
        };
        if waiting != token {
            self.waiting = Some((waiting, what));
            return;
        }
        let action = match what {
            Waiting::Limiter(resume, sent) => self.limiter_answered(resume, sent, body_size),
            Waiting::Keys(provider) => {
                if let Some(Ok(mut w)) = self.worker.as_ref().map(|w| w.try_borrow_mut()) {
                    finish_fetch(&mut w, provider, body_size);
                }
                self.process(true)
            }
        };
        if let Action::Continue = action {
            host::resume();
        }
    }

    fn on_request_headers(&mut self) -> Action {
        self.process(false)
    }

    fn on_response_headers(&mut self) -> Action {
        for (name, value) in &self.response_headers {
            host::set_response_header(name, value);
        }
        Action::Continue
    }
}
