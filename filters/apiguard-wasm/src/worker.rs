//! State one worker's VM keeps for the whole plugin: the compiled pipeline, the core's worker
//! state (keys, their coordination through Envoy's shared data, caches), the counters.

use std::rc::Rc;
use std::sync::Arc;

use apiguard_core::config::HostSignatures;
use apiguard_core::events::{Counter, Event};
use apiguard_core::flow::{Pending, Pipeline, WorkerState};
use apiguard_core::jwt::host_signature as jwt_host;
use apiguard_core::jwt::shared::{KeyNote, Severity};
use log::{debug, info, warn};

use crate::host::{self, Counters, EnvoyShared, EnvoySignatures, SignatureStats};
use apiguard_core::ratelimit::batch::Batcher;

pub struct Worker {
    pub pipeline: Arc<Pipeline>,
    pub state: WorkerState,
    counters: Counters,
    /// Histogram of limiter call latency (ms).
    callout_ms: Option<u32>,
    /// Present when signatures go to the host's `verify_signature`.
    signature_stats: Option<Rc<SignatureStats>>,
    /// The root context: it makes the batched limiter calls.
    pub root_id: u32,
    /// `rate_limit.batch`: limiter calls go in batches (`apiguard_core::ratelimit::batch`).
    pub batching: bool,
    pub batcher: Batcher<Pending>,
}

impl Worker {
    pub fn new(pipeline: Arc<Pipeline>, root_id: u32) -> Worker {
        let state = pipeline.worker_state_with(Box::new(EnvoyShared));
        let callout_ms = if pipeline.ratelimit.is_some() {
            host::define_histogram("apiguard.ratelimit.callout_ms")
        } else {
            None
        };
        let batching = pipeline
            .config
            .rate_limit
            .as_ref()
            .is_some_and(|rl| rl.batch);
        Worker {
            pipeline,
            state,
            counters: Counters::define(Counter::ALL.iter().map(|c| c.name())),
            callout_ms,
            signature_stats: None,
            root_id,
            batching,
            batcher: Batcher::default(),
        }
    }

    /// Sends RS*/ES* signatures to Envoy's `verify_signature` when `jwt.host_signatures` is
    /// `auto` and the host passes the self-test; says which way it went in the log.
    pub fn choose_signature_path(&mut self) {
        let Some(jwt) = &self.pipeline.config.jwt else {
            return;
        };
        if jwt.host_signatures == HostSignatures::Off {
            info!("apiguard: signatures are verified in Wasm (jwt.host_signatures: off)");
            return;
        }
        let envoy = EnvoySignatures::default();
        match jwt_host::self_test(&envoy) {
            Ok(()) => {
                info!("apiguard: RS256/RS384/RS512/ES256/ES384 signatures are verified by the host (verify_signature); others in Wasm");
                // The self-test's calls are not traffic: count from zero.
                envoy.stats.calls.set(0);
                envoy.stats.failures.set(0);
                self.signature_stats = Some(envoy.stats.clone());
                self.state.signature_host = Some(Box::new(envoy));
            }
            Err(e) => info!("apiguard: signatures are verified in Wasm: {e}"),
        }
    }

    /// Hands pending counts to Envoy (once a tick).
    pub fn flush_counters(&mut self) {
        if let Some(s) = &self.signature_stats {
            self.counters
                .add(Counter::JwtHostSignatures as usize, s.calls.replace(0));
            self.counters.add(
                Counter::JwtHostSignatureFailures as usize,
                s.failures.replace(0),
            );
        }
        self.counters.flush();
    }

    pub fn count(&mut self, events: &[Event]) {
        for e in events {
            for c in e.counters() {
                self.counters.add(c as usize, 1);
            }
        }
    }

    /// Logs and counts what happened to the keys.
    pub fn note(&mut self, notes: &[KeyNote]) {
        for n in notes {
            match n.severity() {
                Severity::Debug => debug!("apiguard: {n}"),
                Severity::Info => info!("apiguard: {n}"),
                Severity::Warn => warn!("apiguard: {n}"),
            }
            self.count(Event::of_note(n).as_slice());
        }
    }

    /// Records one limiter call's latency.
    pub fn record_callout(&self, ms: i64) {
        if let Some(id) = self.callout_ms {
            host::record(id, u64::try_from(ms).unwrap_or(0));
        }
    }
}
