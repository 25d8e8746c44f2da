//! A root context: one plugin configuration on one worker. It holds the core's [`Driver`] (the
//! compiled pipeline, the worker's state, every request's waits) and the host's metrics, and
//! turns each host event for it or its requests into one call of the driver, whose effects
//! `effects::execute` carries out.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use apiguard_core::driver::{CallId, Driver, Effect};
use apiguard_core::events::Counter;
use apiguard_core::flow::Pipeline;
use apiguard_core::jwt::host_signature::self_test;
use apiguard_core::reply::Reply;
use log::{error, info, warn};

use crate::effects::{execute, Executor};
use crate::host::{self, Counters, EnvoyShared, EnvoySignatures, SignatureStats};
use apiguard_proxy_abi::hostcall::Action;

/// How often each worker flushes its counters to Envoy and looks for keys other workers
/// fetched and for due refreshes.
const TICK: Duration = Duration::from_secs(1);

pub struct Root {
    /// Its context id.
    pub id: u32,
    /// Set by a configuration that compiled; without it every request is refused.
    driver: RefCell<Option<Driver>>,
    metrics: RefCell<Metrics>,
}

/// What this root reports to Envoy's stats.
#[derive(Default)]
struct Metrics {
    counters: Counters,
    /// Histogram of limiter call latency (ms).
    callout_ms: Option<u32>,
    /// Present when signatures go to the host's `verify_signature`.
    signatures: Option<Rc<SignatureStats>>,
}

impl Root {
    pub fn new(id: u32) -> Root {
        Root {
            id,
            driver: RefCell::new(None),
            metrics: RefCell::new(Metrics::default()),
        }
    }

    /// Runs `f` with the driver; `None` when there is none (no configuration) or it is in use
    /// (a re-entrant event), never a panic.
    pub fn with_driver<R>(&self, f: impl FnOnce(&mut Driver) -> R) -> Option<R> {
        let mut driver = self.driver.try_borrow_mut().ok()?;
        driver.as_mut().map(f)
    }

    /// Parses, validates and compiles the configuration once. Returning `false` makes Envoy
    /// refuse the plugin, so a bad configuration never serves traffic; the log names the field.
    pub fn on_configure(&self) -> bool {
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
        let on_off = |on: bool| if on { "on" } else { "off" };
        info!(
            "apiguard: configuration loaded (jwt: {}, policy: {}, rate_limit: {})",
            on_off(pipeline.config.jwt.is_some()),
            on_off(pipeline.config.policy.is_some()),
            on_off(pipeline.config.rate_limit.is_some()),
        );
        let state = pipeline.worker_state_with(Box::new(EnvoyShared));
        let mut driver = Driver::new(Arc::new(pipeline), state, self.id);
        let Ok(mut metrics) = self.metrics.try_borrow_mut() else {
            return false;
        };
        metrics.counters = Counters::define(Counter::ALL.iter().map(|c| c.name()));
        if driver.pipeline().ratelimit.is_some() {
            metrics.callout_ms = host::define_histogram("apiguard.ratelimit.callout_ms");
        }
        metrics.signatures = choose_signature_path(&mut driver);
        // The tick flushes counters and, with remote JWKS, syncs and refreshes keys.
        if let Err(e) = host::set_tick_period(TICK) {
            error!("apiguard: cannot start the timer: {e}");
            return false;
        }
        let Ok(mut slot) = self.driver.try_borrow_mut() else {
            return false;
        };
        *slot = Some(driver);
        true
    }

    /// Hands the counts to Envoy, then picks up keys other workers fetched and starts refreshes
    /// that are due.
    pub fn on_tick(&self) {
        let Some(counts) = self.with_driver(Driver::take_counts) else {
            return;
        };
        if let Ok(mut m) = self.metrics.try_borrow_mut() {
            for (counter, n) in counts {
                m.counters.add(counter as usize, n);
            }
            if let Some(s) = m.signatures.clone() {
                m.counters
                    .add(Counter::JwtHostSignatures as usize, s.calls.replace(0));
                let failures = s.failures.replace(0);
                m.counters
                    .add(Counter::JwtHostSignatureFailures as usize, failures);
            }
            m.counters.flush();
        }
        if let Some(effects) = self.with_driver(|d| d.on_tick(host::now_ms())) {
            execute(self, self.id, None, effects);
        }
    }

    /// A request's headers: what it answers the host. Fails closed: without a driver (which
    /// Envoy never allows, since a failed configuration refuses the plugin) nothing passes.
    pub fn on_request_headers(&self, id: u32, end_of_stream: bool) -> Action {
        let effects = self.with_driver(|d| {
            let head = host::request_head(d.needs_source_address(), !end_of_stream);
            d.on_request_headers(id, head, host::now_ms())
        });
        match effects {
            Some(effects) => execute(self, id, Some(id), effects),
            None => {
                host::respond(&Reply::filter_unavailable());
                Action::Pause
            }
        }
    }

    /// Adds the request's rate-limit headers to the upstream's response.
    pub fn on_response_headers(&self, id: u32) -> Action {
        for (name, value) in self
            .with_driver(|d| d.response_headers(id))
            .unwrap_or_default()
        {
            host::set_response_header(name.as_str(), value.as_str());
        }
        Action::Continue
    }

    /// The answer to call `token`, if one of this root's contexts waits for it: read in that
    /// context, as the core says, and handed over. `false`: not this root's call.
    pub fn on_http_call_response(&self, token: u32, body_size: usize) -> bool {
        let Some(Some(expecting)) = self.with_driver(|d| d.expecting(token)) else {
            return false;
        };
        // Envoy already runs the answer in the caller's context; other hosts may not.
        if let Err(e) = host::HOST.set_effective_context(expecting.context) {
            warn!(
                "apiguard: cannot switch to context {} for call {token}: {e}",
                expecting.context
            );
        }
        let (status, body) = host::call_response(body_size, expecting.max_body);
        let now_ms = host::now_ms();
        if let Some(effects) =
            self.with_driver(|d| d.on_call_answer(token, status, body_size, &body, now_ms))
        {
            execute(self, expecting.context, None, effects);
        }
        true
    }

    /// Request `id` went.
    pub fn on_delete(&self, id: u32) {
        self.with_driver(|d| d.on_delete(id));
    }
}

impl Executor for Root {
    fn call_started(&self, id: CallId, token: Result<u32, ()>, now_ms: i64) -> Vec<Effect> {
        self.with_driver(|d| d.call_started(id, token, now_ms))
            .unwrap_or_default()
    }

    fn record_latency(&self, ms: u64) {
        if let Ok(m) = self.metrics.try_borrow() {
            if let Some(id) = m.callout_ms {
                host::record(id, ms);
            }
        }
    }
}

/// Sends RS*/ES* signatures to Envoy's `verify_signature` when `jwt.host_signatures` is
/// `auto` and the host passes the self-test; says which way it went in the log. The stats of
/// the host's verifier when it is used.
fn choose_signature_path(driver: &mut Driver) -> Option<Rc<SignatureStats>> {
    driver.pipeline().config.jwt.as_ref()?;
    if !driver.wants_host_signatures() {
        info!("apiguard: signatures are verified in Wasm (jwt.host_signatures: off)");
        return None;
    }
    let envoy = EnvoySignatures::default();
    if let Err(e) = self_test(&envoy) {
        info!("apiguard: signatures are verified in Wasm: {e}");
        return None;
    }
    info!("apiguard: RS256/RS384/RS512/ES256/ES384 signatures are verified by the host (verify_signature); others in Wasm");
    // The self-test's calls are not traffic: count from zero.
    envoy.stats.calls.set(0);
    envoy.stats.failures.set(0);
    let stats = envoy.stats.clone();
    driver.state_mut().jwt.signature_host = Some(Box::new(envoy));
    Some(stats)
}
