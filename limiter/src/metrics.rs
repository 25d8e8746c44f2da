//! Prometheus metrics, encoded by the `prometheus-client` crate.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AnswerLabel {
    answer: &'static str,
}

pub struct Metrics {
    registry: Registry,
    checks: Family<ResultLabel, Counter>,
    handoffs: Family<AnswerLabel, Counter>,
    store_errors: Family<KindLabel, Counter>,
    batches: Counter,
    batch_requests: Counter,
    latency: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("apiguard_limiter");
        let checks = Family::<ResultLabel, Counter>::default();
        registry.register(
            "checks",
            "Check calls by result: allowed, limited, store_error, bad_request",
            checks.clone(),
        );
        // `apiguard_limiter_build_info{version="…",revision="…"} 1`: which build answers.
        registry.register(
            "build",
            "The version and git revision of this limiter",
            Info::new(vec![
                ("version", apiguard_buildinfo::VERSION),
                ("revision", apiguard_buildinfo::REVISION),
            ]),
        );
        let handoffs = Family::<AnswerLabel, Counter>::default();
        registry.register(
            "ext_authz_checks",
            "ext_authz checks by answer: allowed, limited, shadow_limited, unlimited, failure_deny, failure_mode_pass, bad_handoff",
            handoffs.clone(),
        );
        let store_errors = Family::<KindLabel, Counter>::default();
        registry.register(
            "store_errors",
            "Store failures by kind: timeout, connection, redis, bad_reply",
            store_errors.clone(),
        );
        let batches = Counter::default();
        registry.register(
            "batches",
            "POST /v1/check/batch calls read (each item is also counted in checks)",
            batches.clone(),
        );
        let batch_requests = Counter::default();
        registry.register(
            "batch_requests",
            "Requests those batches carried",
            batch_requests.clone(),
        );
        // 50 µs to ~100 ms: a healthy Redis round trip is well under a millisecond.
        let latency = Histogram::new([
            0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
        ]);
        registry.register(
            "check_duration_seconds",
            "Time to decide one check call, store round trip included",
            latency.clone(),
        );
        Metrics {
            registry,
            checks,
            handoffs,
            store_errors,
            batches,
            batch_requests,
            latency,
        }
    }

    pub fn decided(&self, allowed: bool) {
        let result = if allowed { "allowed" } else { "limited" };
        self.checks.get_or_create(&ResultLabel { result }).inc();
    }

    /// An `ext_authz` check's answer (docs/limiter.md, "Envoy's ext_authz").
    pub fn handoff(&self, answer: &'static str) {
        self.handoffs.get_or_create(&AnswerLabel { answer }).inc();
    }

    /// A batch of `items` requests was read.
    pub fn batch(&self, items: usize) {
        self.batches.inc();
        self.batch_requests.inc_by(items as u64);
    }

    pub fn bad_request(&self) {
        self.checks
            .get_or_create(&ResultLabel {
                result: "bad_request",
            })
            .inc();
    }

    pub fn store_error(&self, kind: &'static str) {
        self.checks
            .get_or_create(&ResultLabel {
                result: "store_error",
            })
            .inc();
        self.store_errors.get_or_create(&KindLabel { kind }).inc();
    }

    pub fn observe(&self, took: Duration) {
        self.latency.observe(took.as_secs_f64());
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}
