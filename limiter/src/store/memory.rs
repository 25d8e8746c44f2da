//! In-process store: the development default when no Redis is given. Windows live in one
//! mutex-guarded map, so one process is exact; replicas do not share it.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use apiguard_limiter_api::{Check, CheckResult, LimitAlgorithm};

use super::{unix_ms, CounterWindow, Decision, Store, StoreError};

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
                        // The call whose departure makes room for `cost` more.
                        let must_leave = count + c.cost - c.limit;
                        let mut left = 0;
                        hits.iter()
                            .find(|(_, cost)| {
                                left += cost;
                                left >= must_leave
                            })
                            .map_or(c.window_ms, |(t, _)| t + c.window_ms - now)
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
