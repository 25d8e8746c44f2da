//! Carries out the core's effects (`apiguard_core::driver::Effect`), in order, as host calls.
//! Nothing here decides: an effect names its context, and this file only switches the host to
//! that context first.

use std::collections::VecDeque;

use apiguard_core::driver::{CallId, Effect};
use log::warn;

use crate::host;
use apiguard_proxy_abi::hostcall::Action;

/// What the effects are carried out for: a root context (`root.rs`), which reaches its driver
/// and its metrics.
pub trait Executor {
    /// Hands the host's token for call `id` (or its refusal) to the driver; what follows.
    fn call_started(&self, id: CallId, token: Result<u32, ()>, now_ms: i64) -> Vec<Effect>;
    /// Records one limiter answer's latency.
    fn record_latency(&self, ms: u64);
}

/// Carries out `effects` for `root`. `current`: the context the host runs now;
/// `headers_of`: the request whose headers event this is, if it is one (its `Continue` is the
/// event's answer, and the host is switched back to it at the end). Returns that answer:
/// `Pause` unless the request goes on.
pub fn execute(
    root: &impl Executor,
    current: u32,
    headers_of: Option<u32>,
    effects: Vec<Effect>,
) -> Action {
    let mut action = Action::Pause;
    let mut current = current;
    let mut queue = VecDeque::from(effects);
    while let Some(effect) = queue.pop_front() {
        match effect {
            Effect::Call { id, context, call } => {
                let home = current;
                let token = if switch(&mut current, context) {
                    host::http_call(&call)
                } else {
                    Err(())
                };
                switch(&mut current, home);
                let now_ms = host::now_ms();
                let next = root.call_started(id, token, now_ms);
                // What follows from this call comes before the effects after it.
                for e in next.into_iter().rev() {
                    queue.push_front(e);
                }
            }
            Effect::Continue { context, ops } => {
                if switch(&mut current, context) {
                    host::apply(&ops);
                    if headers_of == Some(context) {
                        action = Action::Continue;
                    } else {
                        host::resume();
                    }
                }
            }
            Effect::Respond { context, reply } => {
                if switch(&mut current, context) {
                    host::respond(&reply);
                }
            }
            Effect::FilterState {
                context,
                name,
                value,
            } => {
                if switch(&mut current, context) {
                    host::set_filter_state(name, &value);
                }
            }
            Effect::Log(line) => host::log_line(&line),
            Effect::LimiterLatency(ms) => root.record_latency(ms),
        }
    }
    if let Some(id) = headers_of {
        switch(&mut current, id);
    }
    action
}

/// Makes `to` the host's effective context; `false` when the host refuses (the effect is
/// skipped: done in another request's name it would act on the wrong request).
fn switch(current: &mut u32, to: u32) -> bool {
    if *current == to {
        return true;
    }
    match host::HOST.set_effective_context(to) {
        Ok(()) => {
            *current = to;
            true
        }
        Err(e) => {
            warn!("apiguard: cannot switch to context {to}: {e}");
            false
        }
    }
}
