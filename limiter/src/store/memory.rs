//! In-process store: the development default when no Redis is given. Windows live in one
//! mutex-guarded map, so one process is exact; replicas do not share it.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use apiguard_limiter_api::{Check, CheckResult, LimitAlgorithm};

use super::common::{unix_ms, CounterWindow, Decision, Store, StoreError};

/// Sweep expired windows after this many calls, so idle keys do not accumulate.
const SWEEP_EVERY: u64 = 4096;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct WindowKey {
    algorithm: LimitAlgorithm,
    window_ms: u64,
    key: String,
}

#[derive(Debug)]
enum Window {
    /// Admitted calls (admission time in ms, cost), oldest first, and the sum of their costs:
    /// one entry per call, whatever its cost, so memory is bounded by calls, not units.
    Log {
        hits: VecDeque<(u64, u64)>,
        total: u64,
    },
    /// Fixed-window index and the counts of that window and the one before.
    Counter { index: u64, curr: u64, prev: u64 },
}

#[derive(Debug, Default)]
struct State {
    windows: HashMap<WindowKey, (Window, u64)>,
    calls: u64,
}

#[derive(Debug, Default)]
pub struct MemoryStore {
    state: Mutex<State>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Decides at time `now` (ms since the Unix epoch). Public within the crate so tests can
    /// drive the clock.
    pub(crate) fn check_at(&self, checks: &[Check], now: u64) -> Decision {
        let mut guard = match self.state.lock() {
            Ok(g) => g,
            // A panic while holding the lock cannot leave a window half-updated in a way that
            // over-admits (updates happen only after every check was decided), so keep serving.
            Err(poisoned) => poisoned.into_inner(),
        };
        let state = &mut *guard;
        state.calls += 1;
        if state.calls % SWEEP_EVERY == 0 {
            state.windows.retain(|_, (_, expires)| *expires > now);
        }

        // Decide every check before touching any window: all or nothing.
        let mut fits = true;
        for c in checks {
            let (window, _) = state
                .windows
                .entry(key_of(c))
                .or_insert_with(|| (fresh(c.algorithm), 0));
            roll(window, c, now);
            fits &= match window {
                Window::Log { total, .. } => total.saturating_add(c.cost) <= c.limit,
                Window::Counter { curr, prev, .. } => counter(c, *prev, *curr, now).fits(),
            };
        }
        let mut results = Vec::with_capacity(checks.len());
        for c in checks {
            let Some((window, expires)) = state.windows.get_mut(&key_of(c)) else {
                continue;
            };
            let result = match window {
                Window::Log { hits, total } => {
                    if fits {
                        hits.push_back((now, c.cost));
                        *total += c.cost;
                        *expires = now + c.window_ms;
                    }
                    let count = *total;
                    let retry_after_ms = if fits || count + c.cost <= c.limit {
                        // The call fits, or this check would and another one did not.
                        0
                    } else if c.cost > c.limit {
                        c.window_ms
                    } else {
                        log_retry_after(hits, count + c.cost - c.limit, c.cost)
                            .map_or(c.window_ms, |t| t + c.window_ms - now)
                    };
                    CheckResult {
                        key: c.key.clone(),
                        limit: c.limit,
                        remaining: c.limit.saturating_sub(count),
                        reset_ms: hits.back().map_or(0, |(t, _)| t + c.window_ms - now),
                        retry_after_ms,
                    }
                }
                Window::Counter { curr, prev, .. } => {
                    if fits {
                        *curr += c.cost;
                        *expires = now + 2 * c.window_ms;
                    }
                    let cw = counter(c, *prev, *curr, now);
                    CheckResult {
                        key: c.key.clone(),
                        limit: c.limit,
                        remaining: cw.remaining(),
                        reset_ms: cw.reset(),
                        retry_after_ms: if fits { 0 } else { cw.retry_after() },
                    }
                }
            };
            results.push(result);
        }
        Decision {
            allowed: fits,
            results,
        }
    }
}

/// The admission time of the call whose departure frees `must_leave` units of the log `hits`,
/// reading at most `cost` entries whatever the window holds: the same answer as `check.lua`'s
/// `retry_after`, which says why. Every entry stands for at least 1 unit, so the call sought
/// is among the oldest `must_leave`. When `must_leave` exceeds `cost` (the log holds more than
/// the limit) and the `cost` oldest do not free enough, the entry as many places further as
/// units are still missing frees at least that much: late perhaps, never early.
fn log_retry_after(hits: &VecDeque<(u64, u64)>, must_leave: u64, cost: u64) -> Option<u64> {
    let reading = usize::try_from(must_leave.min(cost)).unwrap_or(usize::MAX);
    let mut left = 0;
    for (t, c) in hits.iter().take(reading) {
        left += c;
        if left >= must_leave {
            return Some(*t);
        }
    }
    let read = reading.min(hits.len());
    let further = usize::try_from(must_leave - left).unwrap_or(usize::MAX);
    hits.get(read.saturating_add(further).saturating_sub(1))
        .or(hits.back())
        .map(|(t, _)| *t)
}

fn key_of(c: &Check) -> WindowKey {
    WindowKey {
        algorithm: c.algorithm,
        window_ms: c.window_ms,
        key: c.key.clone(),
    }
}

fn fresh(algorithm: LimitAlgorithm) -> Window {
    match algorithm {
        LimitAlgorithm::Log => Window::Log {
            hits: VecDeque::new(),
            total: 0,
        },
        LimitAlgorithm::Counter => Window::Counter {
            index: 0,
            curr: 0,
            prev: 0,
        },
    }
}

/// Drops what has left the window by `now`: log entries at or before `now - window`, and
/// fixed-window counts older than the previous window.
fn roll(window: &mut Window, c: &Check, now: u64) {
    match window {
        Window::Log { hits, total } => {
            let cutoff = now.saturating_sub(c.window_ms);
            while let Some((_, cost)) = hits.front().filter(|(t, _)| *t <= cutoff).copied() {
                hits.pop_front();
                *total = total.saturating_sub(cost);
            }
        }
        Window::Counter { index, curr, prev } => {
            let current = now / c.window_ms;
            if *index + 1 == current {
                *prev = *curr;
                *curr = 0;
            } else if *index != current {
                *prev = 0;
                *curr = 0;
            }
            *index = current;
        }
    }
}

fn counter(c: &Check, prev: u64, curr: u64, now: u64) -> CounterWindow {
    CounterWindow {
        limit: c.limit,
        window: c.window_ms,
        cost: c.cost,
        prev,
        curr,
        elapsed: now % c.window_ms,
    }
}

impl Store for MemoryStore {
    async fn check(&self, checks: &[Check]) -> Result<Decision, StoreError> {
        Ok(self.check_at(checks, u64::try_from(unix_ms()).unwrap_or(0)))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn describe(&self) -> String {
        "in-memory (this process only)".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A clock far from 0 (a window reaching before the epoch would drop calls at 0).
    const T: u64 = 1_000_000;

    fn log(limit: u64, cost: u64) -> Check {
        Check {
            key: "{k}".into(),
            limit,
            window_ms: 1000,
            cost,
            algorithm: LimitAlgorithm::Log,
        }
    }

    /// Past a lowered limit, a refusal reads `cost` entries and counts the rest as 1 unit each:
    /// with costlier calls that is late, never early. (`check.lua` answers the same; the stores
    /// tests check the unit-cost case, where it is exact, against every store.)
    #[test]
    fn retry_after_past_a_lowered_limit_is_late_never_early() {
        let store = MemoryStore::new();
        for (at, cost) in [(0, 3), (100, 3), (200, 1), (300, 1), (400, 1)] {
            assert!(store.check_at(&[log(10, cost)], T + at).allowed);
        }
        // 9 units held, a limit of 4: one more fits once 6 have left, i.e. when the call of
        // T+100 leaves at T+1100. Read: the oldest (3 units); 3 more count as the next 3 calls,
        // the one of T+300, leaving at T+1300.
        let d = store.check_at(&[log(4, 1)], T + 500);
        assert!(!d.allowed);
        assert_eq!(d.results[0].retry_after_ms, 800);
        assert!(!store.check_at(&[log(4, 1)], T + 1099).allowed);
        assert!(store.check_at(&[log(4, 1)], T + 1100).allowed, "exact time");
    }

    /// Within the limit, the answer is exact whatever the costs.
    #[test]
    fn retry_after_within_the_limit_is_exact() {
        let store = MemoryStore::new();
        for (at, cost) in [(0, 1), (100, 3), (200, 4)] {
            assert!(store.check_at(&[log(8, cost)], T + at).allowed);
        }
        let d = store.check_at(&[log(8, 3)], T + 300);
        assert_eq!(d.results[0].retry_after_ms, 800);
        assert!(!store.check_at(&[log(8, 3)], T + 1099).allowed);
        assert!(store.check_at(&[log(8, 3)], T + 1100).allowed);
    }
}
