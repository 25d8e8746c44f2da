//! The call side of the context table: which context the host is running, which context
//! started each host call ([`Callouts`]), and batch answers waiting for delivery. It sits
//! between `host` (below) and the contexts (`lib.rs`) and `dispatch` (above): nothing here
//! calls a context, so the contexts can start calls and defer answers without reaching back up
//! into `dispatch`.
//!
//! Never panics: the state is reached with `try_with`/`try_borrow_mut`; a re-entrant use is
//! skipped (nothing recorded), never a panic.

use std::cell::RefCell;
use std::collections::HashMap;

use apiguard_core::flow::Pending;
use apiguard_core::ratelimit::batch::Delivery;
use apiguard_proxy_abi::hostcall::HostError;
use log::{debug, warn};

use crate::host;

/// HTTP calls in flight: the host's token → the context that started it.
///
/// The call-token wrap: the SDK keeps a map like this that only an answer empties, and panics
/// ("duplicate token_id") when the host hands out a token that is still in it. Envoy cancels a
/// context's calls without answering when the context goes (a client that disconnects while
/// the limiter is asked), so such tokens stay in the SDK's map forever, and Envoy's 32-bit call
/// counter (`next_http_call_id_ += 4`) wraps after about a billion calls: a long-lived worker
/// eventually gets a stale token back and its VM dies. Here:
/// - a deleted context's calls are forgotten with it ([`Callouts::forget`]), so nothing stays;
/// - a token handed out again replaces its entry: the host reuses a token only once the call
///   it named is over, so the old entry was stale;
/// - an answer whose token is not here is dropped.
///
/// Each context also checks an answer's token against the calls it waits for.
#[derive(Debug, Default)]
pub struct Callouts {
    owner: HashMap<u32, u32>,
}

impl Callouts {
    /// Records that `context` started call `token`; the previous owner of a reused token.
    pub fn started(&mut self, token: u32, context: u32) -> Option<u32> {
        self.owner.insert(token, context)
    }

    /// The context an answer for `token` goes to, if any; the call is over either way.
    pub fn finished(&mut self, token: u32) -> Option<u32> {
        self.owner.remove(&token)
    }

    /// Forgets the calls of a deleted context: the tokens it says it waits for, or, when it
    /// cannot say, every entry naming it.
    pub fn forget(&mut self, context: u32, waiting: Option<&[u32]>) {
        match waiting {
            Some(tokens) => {
                for token in tokens {
                    if self.owner.get(token) == Some(&context) {
                        self.owner.remove(token);
                    }
                }
            }
            None => self.owner.retain(|_, owner| *owner != context),
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.owner.len()
    }
}

/// What this VM's calls are (a Wasm VM is single-threaded: one).
#[derive(Default)]
struct Calls {
    callouts: Callouts,
    /// The context the host is running now: calls started now are its calls.
    active: u32,
    /// Batch answers that could not be delivered where they were made (a request's own
    /// callback): delivered before the event that made them returns to the host.
    deferred: Vec<Delivery<Pending>>,
}

thread_local! {
    static CALLS: RefCell<Calls> = RefCell::new(Calls::default());
}

fn with_calls<R>(f: impl FnOnce(&mut Calls) -> R) -> Option<R> {
    CALLS
        .try_with(|c| c.try_borrow_mut().ok().map(|mut c| f(&mut c)))
        .ok()
        .flatten()
}

/// The host now runs context `id` (an event for it, or an answer to its call).
pub fn enter(id: u32) {
    with_calls(|c| c.active = id);
}

/// Records a call the host accepted as the running context's; the call's result unchanged.
pub fn started(call: Result<u32, HostError>) -> Result<u32, HostError> {
    if let Ok(token) = call {
        with_calls(|c| {
            if let Some(stale) = c.callouts.started(token, c.active) {
                debug!(
                    "apiguard: the host reused call token {token} (last held by context {stale})"
                );
            }
        });
    }
    call
}

/// The context an answer for `token` goes to, if any; the call is over either way.
pub fn finished(token: u32) -> Option<u32> {
    with_calls(|c| c.callouts.finished(token)).flatten()
}

/// Forgets the calls of a deleted context (see [`Callouts::forget`]).
pub fn forget(context: u32, waiting: Option<&[u32]>) {
    with_calls(|c| c.callouts.forget(context, waiting));
}

/// Runs `f` as context `id` (the host's effective context and the running context here), then
/// switches back: the root context makes the batched calls from inside a request's event.
pub fn as_context<R>(id: u32, f: impl FnOnce() -> R) -> R {
    let previous = with_calls(|c| std::mem::replace(&mut c.active, id));
    if let Err(e) = host::HOST.set_effective_context(id) {
        warn!("apiguard: cannot switch to context {id}: {e}");
    }
    let out = f();
    if let Some(previous) = previous {
        enter(previous);
        if let Err(e) = host::HOST.set_effective_context(previous) {
            warn!("apiguard: cannot switch back to context {previous}: {e}");
        }
    }
    out
}

/// Keeps answers for delivery once the running event's contexts are released.
pub fn defer(delivery: Delivery<Pending>) {
    with_calls(|c| c.deferred.push(delivery));
}

/// The next answers kept by [`defer`], if any.
pub fn take_deferred() -> Option<Delivery<Pending>> {
    with_calls(|c| c.deferred.pop()).flatten()
}

/// How many calls are recorded (tests: nothing may stay behind).
#[cfg(all(test, not(target_arch = "wasm32")))]
pub fn in_flight() -> usize {
    with_calls(|c| c.callouts.len()).unwrap_or(0)
}

/// Forgets everything (tests: a fresh VM).
#[cfg(all(test, not(target_arch = "wasm32")))]
pub fn reset() {
    with_calls(|c| *c = Calls::default());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reused_token_replaces_its_stale_entry() {
        let mut c = Callouts::default();
        assert_eq!(c.started(4, 2), None);
        // The host wrapped around and gave token 4 to context 3: no panic, 3 owns it now.
        assert_eq!(c.started(4, 3), Some(2));
        assert_eq!(c.finished(4), Some(3));
        assert_eq!(c.finished(4), None);
        assert_eq!(c.len(), 0);
    }

    #[test]
    fn a_deleted_context_leaves_nothing_behind() {
        let mut c = Callouts::default();
        c.started(4, 2);
        c.started(8, 3);
        c.started(12, 1);
        c.started(16, 1);
        // Context 2 is deleted while waiting (Envoy cancels the call, no answer comes).
        c.forget(2, Some(&[4]));
        assert_eq!(c.finished(4), None);
        // A context that cannot say what it waits for: every entry naming it goes.
        c.forget(1, None);
        assert_eq!(c.len(), 1);
        // Tokens a context names but no longer owns are left to their owner.
        c.forget(2, Some(&[8]));
        assert_eq!(c.finished(8), Some(3));
    }

    #[test]
    fn a_billion_cancelled_calls_do_not_accumulate() {
        // Envoy's counter steps by 4 and wraps: simulate the wrap with tokens modulo a small
        // ring, every other call cancelled by its context's deletion.
        let mut c = Callouts::default();
        for call in 0u32..100_000 {
            let token = (call % 64) * 4;
            let context = call + 10;
            c.started(token, context);
            if call % 2 == 0 {
                c.forget(context, Some(&[token]));
            } else {
                assert_eq!(c.finished(token), Some(context));
            }
        }
        assert_eq!(c.len(), 0);
    }
}
