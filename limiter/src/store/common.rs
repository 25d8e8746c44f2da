//! What every store shares: the [`Store`] contract, its answer and errors, the clock and the
//! sliding-window arithmetic. It imports neither store, which both read (and `mod.rs`
//! re-exports it), so the stores and the module's face do not depend on each other.

use std::future::Future;

use apiguard_limiter_api::{Check, CheckResult};

/// This host's clock, Unix milliseconds (0 before 1970, saturating far after it).
pub(crate) fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// What a store decided for one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub results: Vec<CheckResult>,
}

/// Why a store could not decide. The service answers 503 and never "allowed".
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("redis: {0}")]
    Redis(#[from] ::redis::RedisError),
    #[error("redis: unexpected reply from the check script: {0}")]
    BadReply(String),
    /// The call reached Redis after its deadline (Redis was paused or busy) and was not
    /// counted; the caller had already been answered 503.
    #[error("redis ran the check past its deadline; it was not counted")]
    TooLate,
}

impl StoreError {
    /// A short label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            StoreError::Redis(e) if e.is_timeout() => "timeout",
            StoreError::Redis(e) if e.is_connection_refusal() || e.is_io_error() => "connection",
            StoreError::Redis(_) => "redis",
            StoreError::BadReply(_) => "bad_reply",
            StoreError::TooLate => "too_late",
        }
    }
}

/// A rate-limit store. `check` decides every check of one call atomically: either all fit and
/// all are consumed, or none is. Checks arrive validated ([`apiguard_limiter_api::CheckRequest::validate`]).
pub trait Store: Send + Sync + 'static {
    fn check(&self, checks: &[Check]) -> impl Future<Output = Result<Decision, StoreError>> + Send;

    /// Whether the store answers (for `/readyz`).
    fn ping(&self) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// A name for logs and `/readyz`.
    fn describe(&self) -> String;
}

/// The sliding-window counter's arithmetic, shared by the in-memory store; `check.lua` does the
/// same in Redis. `prev` and `curr` are the counts of the previous and current fixed windows,
/// `elapsed` how far (ms) into the current window `now` is.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CounterWindow {
    pub limit: u64,
    pub window: u64,
    pub cost: u64,
    pub prev: u64,
    pub curr: u64,
    pub elapsed: u64,
}

impl CounterWindow {
    /// The estimated count in the sliding window ending now.
    pub fn estimate(&self) -> f64 {
        let w = self.window as f64;
        self.prev as f64 * (w - self.elapsed as f64) / w + self.curr as f64
    }

    pub fn fits(&self) -> bool {
        self.estimate() + self.cost as f64 <= self.limit as f64
    }

    /// Milliseconds until `cost` would fit, rounded up (so never early).
    pub fn retry_after(&self) -> u64 {
        if self.fits() {
            return 0;
        }
        let (l, k, w) = (self.limit as f64, self.cost as f64, self.window as f64);
        if self.cost > self.limit {
            return self.window;
        }
        let room_now = l - self.curr as f64 - k;
        if room_now >= 0.0 && self.prev > 0 {
            // Still in this window: wait for the previous window's weight to fall far enough.
            let at = w * (1.0 - room_now / self.prev as f64);
            return (at - self.elapsed as f64).ceil().max(1.0) as u64;
        }
        // Only in the next window, where this window's count becomes the weighted one.
        let to_next = self.window - self.elapsed;
        let at = if self.curr > 0 {
            (w * (1.0 - (l - k) / self.curr as f64)).max(0.0)
        } else {
            0.0
        };
        to_next + at.ceil() as u64
    }

    pub fn remaining(&self) -> u64 {
        (self.limit as f64 - self.estimate()).floor().max(0.0) as u64
    }

    /// Until nothing counted is left: the end of the next window when this one has hits, the
    /// end of this one when only the previous has.
    pub fn reset(&self) -> u64 {
        let to_next = self.window - self.elapsed;
        if self.curr > 0 {
            to_next + self.window
        } else if self.prev > 0 {
            to_next
        } else {
            0
        }
    }
}
