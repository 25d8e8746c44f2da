//! What every request shares: the store, the metrics, the deadline and the descriptor limits,
//! and the one store call both protocols decide through.

use std::time::{Duration, Instant};

use tracing::warn;

use crate::metrics::Metrics;
use crate::problem::ProblemDetails;
use crate::rls;
use crate::store::{self, Store};

/// Shared by every request.
pub struct AppState<S> {
    pub store: S,
    pub metrics: Metrics,
    /// Deadline for one store call; past it the answer is 503, never "allowed".
    pub store_timeout: Duration,
    /// The descriptor limits of Envoy's rate-limit service protocol (empty: every domain is
    /// unknown).
    pub descriptors: rls::Descriptors,
}

impl<S: Store> AppState<S> {
    /// One store call within the store deadline, counted in the metrics (from `started`, when
    /// the request arrived) and logged on failure. Every protocol decides through it. `Err` is
    /// what to tell the caller (a 503): never "allowed".
    pub async fn decide(
        &self,
        checks: &[apiguard_limiter_api::Check],
        started: Instant,
    ) -> Result<store::Decision, ProblemDetails> {
        let decided = tokio::time::timeout(self.store_timeout, self.store.check(checks)).await;
        self.metrics.observe(started.elapsed());
        match decided {
            Ok(Ok(d)) => {
                self.metrics.decided(d.allowed);
                Ok(d)
            }
            Ok(Err(e)) => {
                warn!(kind = e.kind(), "store error: {e}");
                self.metrics.store_error(e.kind());
                Err(ProblemDetails::unavailable("rate-limit store error"))
            }
            Err(_) => {
                warn!(
                    timeout_ms = self.store_timeout.as_millis() as u64,
                    "store timed out"
                );
                self.metrics.store_error("timeout");
                Err(ProblemDetails::unavailable(
                    "rate-limit store did not answer in time",
                ))
            }
        }
    }
}
