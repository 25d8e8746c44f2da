//! Host events to the filter's contexts, in place of the proxy-wasm SDK's dispatcher.
//!
//! Why not the SDK's: it panics on host input it does not expect (`invalid context_id`,
//! `invalid token_id`, `duplicate token_id`, an `unwrap` on `set_effective_context`), and the
//! filter cannot keep the SDK's hostcalls while routing around its dispatcher: the SDK only
//! registers a call token inside `hostcalls::dispatch_http_call`, and its exported
//! `proxy_on_http_call_response` panics on any token it did not register (and keeps, forever,
//! every token of a call Envoy cancelled: after Envoy's call counter wraps, a reused token
//! kills the VM). So the filter owns the exports (`exports.rs`) and this small table of
//! contexts; which call each context waits for is the core's (`apiguard_core::driver`).
//!
//! Never panics: the table is reached with `try_with`/`try_borrow_mut`, and an event for a
//! context that does not exist, or that arrives while the table or the context is in use (a
//! re-entrant call), is answered with the fail-closed default: a request is refused, anything
//! else is ignored.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use apiguard_core::reply::Reply;
use log::debug;

use crate::host;
use crate::root::Root;
use apiguard_proxy_abi::hostcall::Action;

/// The contexts of this VM (a Wasm VM is single-threaded: one table).
#[derive(Default)]
struct Vm {
    roots: HashMap<u32, Rc<Root>>,
    /// Each request's root context.
    requests: HashMap<u32, u32>,
}

thread_local! {
    static VM: RefCell<Vm> = RefCell::new(Vm::default());
}

/// Runs `f` on the table; `None` if it is in use (a re-entrant call), never a panic. Roots are
/// cloned out (`Rc`) and run after the table is released, so an event that re-enters (a local
/// reply runs the response path at once) finds the table free.
fn with_vm<R>(f: impl FnOnce(&mut Vm) -> R) -> Option<R> {
    VM.try_with(|vm| vm.try_borrow_mut().ok().map(|mut vm| f(&mut vm)))
        .ok()
        .flatten()
}

/// The root of context `id`: itself, or the root a request was created under.
fn root_of(id: u32) -> Option<Rc<Root>> {
    with_vm(|vm| {
        let root = vm.requests.get(&id).copied().unwrap_or(id);
        vm.roots.get(&root).cloned()
    })
    .flatten()
}

/// Once, when the VM starts.
pub fn init() {
    host::install_logger();
}

/// A root context (`root_id` 0: one per plugin configuration) or a request under a root. A
/// request under a root this table does not know finds no driver, so it is refused.
pub fn on_context_create(id: u32, root_id: u32) {
    with_vm(|vm| {
        if root_id == 0 {
            vm.roots.insert(id, Rc::new(Root::new(id)));
        } else {
            vm.requests.insert(id, root_id);
        }
    });
}

/// `false` (Envoy refuses the plugin) for a root this table does not know.
pub fn on_configure(id: u32) -> bool {
    root_of(id).is_some_and(|root| root.id == id && root.on_configure())
}

pub fn on_tick(id: u32) {
    if let Some(root) = root_of(id) {
        root.on_tick();
    }
}

/// `end_of_stream`: the headers end the request (no body follows).
pub fn on_request_headers(id: u32, end_of_stream: bool) -> Action {
    match root_of(id) {
        Some(root) if root.id != id => root.on_request_headers(id, end_of_stream),
        // No context for this request (the host broke the ABI's order of events): nothing can
        // check the request, so it does not pass.
        _ => {
            host::respond(&Reply::filter_unavailable());
            Action::Pause
        }
    }
}

pub fn on_response_headers(id: u32) -> Action {
    match root_of(id) {
        Some(root) if root.id != id => root.on_response_headers(id),
        _ => Action::Continue,
    }
}

/// Hands a call's answer to the root whose driver waits for it; an answer nothing waits for
/// (its context went, or the host answered twice) is dropped.
pub fn on_http_call_response(token: u32, body_size: usize) {
    let roots: Vec<Rc<Root>> =
        with_vm(|vm| vm.roots.values().cloned().collect()).unwrap_or_default();
    if !roots
        .iter()
        .any(|root| root.on_http_call_response(token, body_size))
    {
        debug!("apiguard: answer to call {token}, which no context waits for: dropped");
    }
}

pub fn on_delete(id: u32) {
    let root = with_vm(|vm| match vm.requests.remove(&id) {
        Some(root) => vm.roots.get(&root).cloned(),
        None => {
            vm.roots.remove(&id);
            None
        }
    })
    .flatten();
    if let Some(root) = root {
        root.on_delete(id);
    }
}

#[cfg(test)]
mod tests {
    /// The filter end to end against the scripted native host (`fake`).
    #[cfg(not(target_arch = "wasm32"))]
    mod scripted {
        use super::super::*;
        use apiguard_proxy_abi::fake::{script, Script};
        use apiguard_proxy_abi::hostcall::encode_map;

        const RATE_LIMITED: &str = r#"{"rate_limit": {"cluster": "limiter",
            "identity": ["header:x-api-key"],
            "tiers": {"standard": [{"requests": 5, "window_s": 60}]}}}"#;

        fn start(s: Script) {
            with_vm(|vm| *vm = Vm::default()).unwrap();
            script(|old| *old = s).unwrap();
        }

        /// How many calls the drivers wait for (nothing may stay behind).
        fn in_flight() -> usize {
            let roots: Vec<_> = with_vm(|vm| vm.roots.values().cloned().collect()).unwrap();
            roots
                .iter()
                .filter_map(|r| r.with_driver(|d| d.calls_in_flight()))
                .sum()
        }

        fn journal() -> Vec<String> {
            script(|s| std::mem::take(&mut s.journal)).unwrap()
        }

        fn headers(pairs: &[(&str, &str)]) -> Vec<u8> {
            encode_map(pairs).unwrap()
        }

        /// Every status but Ok, and numbers outside the ABI.
        const FAILURES: &[u32] = &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 99, u32::MAX];

        #[test]
        fn a_host_failing_every_call_never_kills_the_vm() {
            for &status in FAILURES {
                start(Script {
                    fail_with: Some(status),
                    ..Script::default()
                });
                init();
                on_context_create(1, 0);
                assert!(!on_configure(1), "status {status}");
                on_context_create(2, 1);
                // No worker: refused (the refusal itself fails, and is only logged).
                assert_eq!(on_request_headers(2, true), Action::Pause);
                assert_eq!(journal(), ["respond 503"]);
                assert_eq!(on_response_headers(2), Action::Continue);
                on_http_call_response(4, 10);
                on_tick(1);
                on_delete(2);
                on_delete(1);
            }
        }

        #[test]
        fn events_for_unknown_contexts_fail_closed() {
            start(Script::default());
            assert_eq!(on_request_headers(7, true), Action::Pause);
            assert_eq!(journal(), ["respond 503"]);
            assert_eq!(on_response_headers(7), Action::Continue);
            assert!(!on_configure(7));
            on_tick(7);
            on_http_call_response(7, 0);
            on_delete(7);
            // A request under a root that does not exist has no worker: refused.
            on_context_create(8, 6);
            assert_eq!(on_request_headers(8, true), Action::Pause);
            assert_eq!(journal(), ["respond 503"]);
        }

        #[test]
        fn request_headers_the_host_cannot_give_refuse_the_request() {
            start(Script {
                config: b"{}".to_vec(),
                request_headers: headers(&[(":path", "/"), (":method", "GET")]),
                ..Script::default()
            });
            on_context_create(1, 0);
            assert!(on_configure(1));
            on_context_create(2, 1);
            assert_eq!(on_request_headers(2, true), Action::Continue);
            assert_eq!(journal(), Vec::<String>::new());
            // Garbage, a truncated map: refused, and the next request is served.
            for garbage in [vec![9, 9, 9], headers(&[(":path", "/")])[..14].to_vec()] {
                script(|s| s.request_headers = garbage).unwrap();
                assert_eq!(on_request_headers(2, true), Action::Pause);
                assert_eq!(journal(), ["respond 503"]);
            }
            // A name that is not UTF-8 is kept (lossily) and does not stop the request.
            let mut odd = headers(&[(":path", "/"), ("xy", "v")]);
            let at = odd.windows(3).position(|w| w == b"xy\0").unwrap();
            odd[at] = 0xff;
            script(|s| s.request_headers = odd).unwrap();
            assert_eq!(on_request_headers(2, true), Action::Continue);
            // Every failing status on the way: refused.
            for &status in FAILURES {
                script(|s| s.fail_with = Some(status)).unwrap();
                assert_eq!(
                    on_request_headers(2, true),
                    Action::Pause,
                    "status {status}"
                );
                assert_eq!(journal(), ["respond 503"]);
            }
        }

        /// Envoy's call counter wraps, and the contexts that held a token may be gone without an
        /// answer (a cancelled call) or, if the host misbehaves, still there: either way the
        /// answer reaches the context that holds the token now, and nothing panics.
        #[test]
        fn a_reused_call_token_reaches_the_context_that_holds_it_now() {
            start(Script {
                config: RATE_LIMITED.as_bytes().to_vec(),
                request_headers: headers(&[(":path", "/x"), ("x-api-key", "k")]),
                call_status: Some(b"500".to_vec()),
                token: 4,
                ..Script::default()
            });
            on_context_create(1, 0);
            assert!(on_configure(1));
            on_context_create(2, 1);
            assert_eq!(on_request_headers(2, true), Action::Pause);
            assert_eq!(journal(), ["call 4"]);
            // The client goes away: Envoy cancels the call and never answers it.
            on_delete(2);
            assert_eq!(in_flight(), 0);
            on_context_create(3, 1);
            assert_eq!(on_request_headers(3, true), Action::Pause);
            // The host hands out token 4 again, while context 3's first call is still open.
            on_context_create(5, 1);
            assert_eq!(on_request_headers(5, true), Action::Pause);
            assert_eq!(journal(), ["call 4", "call 4"]);
            // The limiter answers 500: the failure mode (deny) refuses context 5's request.
            on_http_call_response(4, 0);
            let answered = journal();
            assert_eq!(answered.first().map(String::as_str), Some("context 5"));
            assert!(
                answered.iter().any(|e| e.starts_with("respond ")),
                "{answered:?}"
            );
            // The token is spent: a second answer for it is dropped.
            on_http_call_response(4, 0);
            assert_eq!(journal(), Vec::<String>::new());
            on_delete(3);
            on_delete(5);
            assert_eq!(in_flight(), 0);
        }

        #[test]
        fn an_answer_lets_the_waiting_request_go_on() {
            start(Script {
                config: RATE_LIMITED.as_bytes().to_vec(),
                request_headers: headers(&[(":path", "/x"), ("x-api-key", "k")]),
                call_status: Some(b"200".to_vec()),
                call_body: br#"{"results": []}"#.to_vec(),
                token: 8,
                ..Script::default()
            });
            on_context_create(1, 0);
            assert!(on_configure(1));
            on_context_create(2, 1);
            assert_eq!(on_request_headers(2, true), Action::Pause);
            on_http_call_response(8, 15);
            let answered = journal();
            assert_eq!(answered.first().map(String::as_str), Some("call 8"));
            assert_eq!(answered.get(1).map(String::as_str), Some("context 2"));
            // Whatever the core makes of this answer, the request is resumed or refused.
            assert!(
                answered
                    .iter()
                    .any(|e| e == "resume" || e.starts_with("respond ")),
                "{answered:?}"
            );
        }

        const BATCHED: &str = r#"{"rate_limit": {"cluster": "limiter", "batch": true,
            "identity": ["source_ip"],
            "tiers": {"standard": [{"requests": 5, "window_s": 60}]}}}"#;

        /// One batch item's answer for the only key these requests have.
        fn item(allowed: bool) -> String {
            let remaining = if allowed { 4 } else { 0 };
            format!(
                r#"{{"status":200,"body":{{"allowed":{allowed},"results":[{{"key":"{{anonymous}}:tier:standard","limit":5,"remaining":{remaining},"reset_ms":1000,"retry_after_ms":{}}}]}}}}"#,
                if allowed { 0 } else { 1000 }
            )
        }

        fn batch_answer(items: &[String]) -> Vec<u8> {
            format!(r#"{{"answers":[{}]}}"#, items.join(",")).into_bytes()
        }

        /// Root context 1 with [`BATCHED`]; every call is token 8, answered 200 with `body`.
        fn batched_root(body: Vec<u8>) {
            start(Script {
                config: BATCHED.as_bytes().to_vec(),
                request_headers: headers(&[(":path", "/x")]),
                call_status: Some(b"200".to_vec()),
                call_body: body,
                token: 8,
                ..Script::default()
            });
            on_context_create(1, 0);
            assert!(on_configure(1));
        }

        #[test]
        fn batched_requests_wait_for_the_call_in_flight_then_go_as_one_call() {
            batched_root(Vec::new());
            on_context_create(2, 1);
            // Nothing in flight: the root context calls at once, and the request waits.
            assert_eq!(on_request_headers(2, true), Action::Pause);
            assert_eq!(journal(), ["context 1", "call 8", "context 2"]);
            // A call in flight: the next requests queue, no call.
            on_context_create(3, 1);
            on_context_create(4, 1);
            on_context_create(5, 1);
            assert_eq!(on_request_headers(3, true), Action::Pause);
            assert_eq!(on_request_headers(4, true), Action::Pause);
            assert_eq!(on_request_headers(5, true), Action::Pause);
            assert_eq!(journal(), Vec::<String>::new());
            // Request 5 goes away while queued: it is not sent.
            on_delete(5);
            // The first answer resumes request 2; the queued two go as one batch.
            let first = batch_answer(&[item(true)]);
            script(|s| s.call_body = first.clone()).unwrap();
            on_http_call_response(8, first.len());
            assert_eq!(
                journal(),
                [
                    "context 1",
                    "context 2",
                    "resume",
                    "context 1",
                    "call 8",
                    "context 2"
                ]
            );
            // Its answer: each request gets its own item, in order.
            let second = batch_answer(&[item(true), item(false)]);
            script(|s| s.call_body = second.clone()).unwrap();
            on_http_call_response(8, second.len());
            assert_eq!(
                journal(),
                [
                    "context 1",
                    "context 3",
                    "resume",
                    "context 4",
                    "respond 429"
                ]
            );
            for id in [2, 3, 4] {
                on_delete(id);
            }
            assert_eq!(in_flight(), 0);
        }

        #[test]
        fn a_batch_that_fails_fails_each_of_its_requests_closed() {
            for (status, body) in [
                (None, Vec::new()),
                (Some(b"503".to_vec()), Vec::new()),
                (Some(b"200".to_vec()), b"garbage".to_vec()),
                // One answer for two requests: neither is trusted.
                (Some(b"200".to_vec()), batch_answer(&[item(true)])),
            ] {
                batched_root(batch_answer(&[item(true)]));
                for id in [2, 3, 4] {
                    on_context_create(id, 1);
                    assert_eq!(on_request_headers(id, true), Action::Pause);
                }
                on_http_call_response(8, 0);
                journal();
                // Requests 3 and 4 are in the batch in flight now; it fails.
                script(|s| {
                    s.call_status = status.clone();
                    s.call_body = body.clone();
                })
                .unwrap();
                on_http_call_response(8, body.len());
                assert_eq!(
                    journal(),
                    [
                        "context 1",
                        "context 3",
                        "respond 503",
                        "context 4",
                        "respond 503"
                    ],
                    "{status:?} {}",
                    String::from_utf8_lossy(&body)
                );
            }
        }
    }
}
