//! The whole pipeline natively, limiter half included: each request runs as the filter runs it
//! (`on_request`, then the limiter call answered by an in-memory limiter, then
//! `on_limiter_answer`), so local blocking, failure modes, shadow limits and the response
//! headers are tested without Envoy.

#[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
use wasm_bindgen_test::wasm_bindgen_test as test;

use std::collections::HashMap;

use apiguard_limiter_api::handoff::{Handed, Handoff, HANDOFF_HEADER};
use apiguard_limiter_api::{CheckRequest, CheckResponse, CheckResult};
use serde_json::{json, Value};

use crate::events::Event;
use crate::flow::{Pipeline, RequestFacts, Resumed, Step, WorkerState};
use crate::http::{HeaderOp, Headers};
use crate::ratelimit::LimiterFailure;

const NOW_MS: i64 = 1_700_000_000_000;

/// A fixed-window stand-in for apiguard-limiter: enough to answer calls the way it does.
#[derive(Default)]
struct Limiter {
    used: HashMap<String, u64>,
    calls: usize,
}

impl Limiter {
    fn answer(&mut self, body: &[u8]) -> (u16, Vec<u8>) {
        self.calls += 1;
        let req: CheckRequest = serde_json::from_slice(body).unwrap();
        let fits = req
            .checks
            .iter()
            .all(|c| self.used.get(&c.key).copied().unwrap_or(0) + c.cost <= c.limit);
        let results = req
            .checks
            .iter()
            .map(|c| {
                let used = self.used.entry(c.key.clone()).or_default();
                if fits {
                    *used += c.cost;
                }
                CheckResult {
                    key: c.key.clone(),
                    limit: c.limit,
                    remaining: c.limit.saturating_sub(*used),
                    reset_ms: c.window_ms,
                    retry_after_ms: if fits { 0 } else { c.window_ms },
                }
            })
            .collect();
        let resp = CheckResponse {
            allowed: fits,
            results,
        };
        (200, serde_json::to_vec(&resp).unwrap())
    }
}

/// How the limiter call goes.
#[derive(Clone, Copy)]
enum Call {
    Answered,
    Fails(LimiterFailure),
    Garbage,
}

/// What the client and the upstream saw.
#[derive(Debug)]
struct Seen {
    status: u16,
    /// Response headers: the local reply's, or those added to the upstream's answer.
    headers: Vec<(String, String)>,
    /// The changes made to the request before it went upstream.
    upstream: Vec<HeaderOp>,
    events: Vec<Event>,
    called: bool,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn pipeline(rate_limit: Value) -> (Pipeline, WorkerState) {
    let mut rl = json!({
        "cluster": "limiter",
        "identity": ["header:x-api-key"],
        "tiers": {"standard": [{"requests": 3, "window_s": 60}]},
        "routes": [{"name": "auth", "prefix": "/auth", "limits": [{"requests": 1, "window_s": 60}]},
                   {"name": "search", "prefix": "/search", "limits": [{"requests": 1, "window_s": 60}],
                    "shadow": true}]
    });
    if let (Some(o), Some(e)) = (rl.as_object_mut(), rate_limit.as_object()) {
        for (k, v) in e {
            o.insert(k.clone(), v.clone());
        }
    }
    let cfg = json!({"rate_limit": rl});
    let (p, _) = Pipeline::from_json(cfg.to_string().as_bytes()).unwrap();
    let s = p.worker_state();
    (p, s)
}

fn send(p: &Pipeline, s: &mut WorkerState, lim: &mut Limiter, path: &str, call: Call) -> Seen {
    let headers = vec![("x-api-key".to_owned(), b"k1".to_vec())];
    let facts = RequestFacts {
        path: path.as_bytes(),
        headers: Headers::new(&headers),
        source: None,
        body_follows: false,
    };
    let first = p.on_request(&facts, NOW_MS, s);
    let mut events = first.events;
    let seen = |status, headers, upstream, events, called| Seen {
        status,
        headers,
        upstream,
        events,
        called,
    };
    match first.step {
        Step::Continue(ops) => seen(200, Vec::new(), ops, events, false),
        Step::Respond(r) => seen(r.status, r.headers, Vec::new(), events, false),
        Step::FetchKeys(_) => unreachable!("no remote keys here"),
        Step::CheckLimits { call: c, resume } => {
            assert_eq!(c.cluster, "limiter");
            let answer = match call {
                Call::Answered => Ok(lim.answer(&c.body)),
                Call::Fails(f) => Err(f),
                Call::Garbage => Ok((200, b"{\"allowed\": true}".to_vec())),
            };
            let answer = answer
                .as_ref()
                .map(|(st, b)| (*st, b.as_slice()))
                .map_err(|f| *f);
            let next = p.on_limiter_answer(resume, answer, NOW_MS, s);
            events.extend(next.events);
            match next.step {
                Resumed::Continue { request, response } => {
                    seen(200, response, request, events, true)
                }
                Resumed::Respond(r) => seen(r.status, r.headers, Vec::new(), events, true),
            }
        }
    }
}

#[test]
fn allowed_requests_carry_the_rate_limit_headers_upstream_answers() {
    let (p, mut s) = pipeline(json!({}));
    let mut lim = Limiter::default();
    let r = send(&p, &mut s, &mut lim, "/docs", Call::Answered);
    assert_eq!((r.status, r.called), (200, true));
    assert_eq!(r.events, [Event::RateAllowed]);
    assert_eq!(r.header("x-ratelimit-limit"), Some("3"));
    assert_eq!(r.header("x-ratelimit-remaining"), Some("2"));
    assert!(r.header("ratelimit").is_some(), "{:?}", r.headers);
    assert!(
        r.upstream.is_empty(),
        "rate limiting changes no request header"
    );
    let (p, mut s) = pipeline(json!({"headers": "legacy"}));
    let r = send(&p, &mut s, &mut lim, "/docs", Call::Answered);
    assert!(r.header("ratelimit").is_none(), "{:?}", r.headers);
}

#[test]
fn over_the_limit_is_429_then_answered_locally_without_a_call() {
    let (p, mut s) = pipeline(json!({}));
    let mut lim = Limiter::default();
    assert_eq!(
        send(&p, &mut s, &mut lim, "/auth/x", Call::Answered).status,
        200
    );
    let r = send(&p, &mut s, &mut lim, "/auth/x", Call::Answered);
    assert_eq!((r.status, r.called), (429, true));
    assert_eq!(r.events, [Event::RateLimited]);
    assert_eq!(r.header("retry-after"), Some("60"));
    let r = send(&p, &mut s, &mut lim, "/auth/x", Call::Answered);
    assert_eq!((r.status, r.called), (429, false));
    assert_eq!(r.events, [Event::RateLimitedLocal]);
    assert_eq!(r.header("retry-after"), Some("60"));
    assert_eq!(lim.calls, 2);
    // Another key's requests are not blocked by it.
    assert_eq!(
        send(&p, &mut s, &mut lim, "/docs", Call::Answered).status,
        200
    );
}

#[test]
fn shadow_limits_count_but_never_block() {
    let (p, mut s) = pipeline(json!({}));
    let mut lim = Limiter::default();
    for _ in 0..3 {
        let r = send(&p, &mut s, &mut lim, "/search", Call::Answered);
        assert_eq!((r.status, r.called), (200, true), "{r:?}");
    }
    let r = send(&p, &mut s, &mut lim, "/search", Call::Answered);
    assert_eq!(r.events, [Event::RateShadowLimited]);
    assert_eq!(lim.calls, 4, "never answered locally");
}

#[test]
fn failures_deny_unless_the_operator_allows_them() {
    let failures = [
        Call::Fails(LimiterFailure::Dispatch),
        Call::Fails(LimiterFailure::NoResponse),
        Call::Fails(LimiterFailure::TooLarge),
        Call::Garbage,
    ];
    let mut lim = Limiter::default();
    for call in failures {
        let (p, mut s) = pipeline(json!({}));
        let r = send(&p, &mut s, &mut lim, "/docs", call);
        assert_eq!(r.status, 503, "{r:?}");
        assert!(matches!(r.events[..], [Event::RateFailed(_)]), "{r:?}");
        let (p, mut s) = pipeline(json!({"failure_mode": "allow"}));
        let r = send(&p, &mut s, &mut lim, "/docs", call);
        assert_eq!(r.status, 200, "{r:?}");
        assert!(
            matches!(r.events[..], [Event::RateFailed(_), Event::RateFailurePass]),
            "{r:?}"
        );
    }
    let (p, mut s) = pipeline(json!({}));
    let r = send(&p, &mut s, &mut lim, "/docs", Call::Garbage);
    assert_eq!(r.events, [Event::RateFailed(LimiterFailure::Malformed)]);
}

#[test]
fn a_limiter_status_other_than_200_is_a_failure() {
    let (p, mut s) = pipeline(json!({}));
    let headers = vec![("x-api-key".to_owned(), b"k1".to_vec())];
    let facts = RequestFacts {
        path: b"/docs",
        headers: Headers::new(&headers),
        source: None,
        body_follows: false,
    };
    let Step::CheckLimits { resume, .. } = p.on_request(&facts, NOW_MS, &mut s).step else {
        panic!("no call")
    };
    let next = p.on_limiter_answer(resume, Ok((503, b"{}")), NOW_MS, &mut s);
    assert_eq!(next.events, [Event::RateFailed(LimiterFailure::Status)]);
    assert!(matches!(next.step, Resumed::Respond(ref r) if r.status == 503));
}

/// The handoff header's value in a request's changes, if it is set.
fn handed(r: &Seen) -> Option<&str> {
    r.upstream.iter().find_map(|op| match op {
        HeaderOp::Set(n, v) if n == HANDOFF_HEADER => Some(v.as_str()),
        _ => None,
    })
}

/// The header changes of a request to `/docs` with these headers, which must go on.
fn going_on(p: &Pipeline, s: &mut WorkerState, headers: &[(String, Vec<u8>)]) -> Vec<HeaderOp> {
    let facts = RequestFacts {
        path: b"/docs",
        headers: Headers::new(headers),
        source: None,
        body_follows: false,
    };
    match p.on_request(&facts, NOW_MS, s).step {
        Step::Continue(ops) => ops,
        other => panic!("not going on: {other:?}"),
    }
}

/// `call: ext_authz`: no call from the filter; every request that goes on carries the plan the
/// filter would have sent (or `none`), and a client's copy of the header, under any spelling,
/// is removed first.
#[test]
fn with_ext_authz_the_plan_goes_on_in_the_handoff_header() {
    let (p, mut s) = pipeline(json!({"call": "ext_authz", "cluster": ""}));
    let mut lim = Limiter::default();
    let r = send(&p, &mut s, &mut lim, "/auth/login", Call::Answered);
    assert_eq!((r.status, r.called), (200, false), "{r:?}");
    assert_eq!(r.events, [Event::RateHandedOver]);
    let Ok(Handed::Plan(plan)) = Handoff::decode(handed(&r).map(str::as_bytes)) else {
        panic!("{r:?}")
    };
    assert_eq!(plan.scope, "route:auth");
    assert_eq!(plan.checks.len(), 1);
    assert_eq!(
        (plan.checks[0].limit, plan.checks[0].window_ms),
        (1, 60_000)
    );
    assert!(plan.checks[0].key.ends_with("}:route:auth"));
    assert!(plan.deny_on_failure && !plan.shadow);
    let r = send(&p, &mut s, &mut lim, "/search", Call::Answered);
    let Ok(Handed::Plan(plan)) = Handoff::decode(handed(&r).map(str::as_bytes)) else {
        panic!("{r:?}")
    };
    assert!(plan.shadow);

    // No limits: `none`, so the limiter can tell "nothing to count" from "the filter did not run".
    let (p, mut s) = pipeline(json!({"call": "ext_authz", "cluster": "",
                                     "tiers": {"standard": []}}));
    let headers = vec![
        ("x-apiguard-limit".to_owned(), b"forged".to_vec()),
        ("X_Apiguard_Limit".to_owned(), b"forged".to_vec()),
    ];
    let ops = going_on(&p, &mut s, &headers);
    assert_eq!(
        ops,
        [
            HeaderOp::Remove("x-apiguard-limit".into()),
            HeaderOp::Remove("X_Apiguard_Limit".into()),
            HeaderOp::Set(HANDOFF_HEADER.into(), "none".into()),
        ]
    );
}

/// An unknown tier under `call: ext_authz` follows the failure mode in the filter, as with the
/// filter's own call: 503 by default, `none` (go on) with `failure_mode: allow`.
#[test]
fn with_ext_authz_an_unknown_tier_follows_the_failure_mode() {
    let cfg = |mode: &str| {
        json!({"policy": {"modules": {"t.rego": "package t\nallow := true\nrate_limit_tier := \"gold\"\n"},
                          "entrypoint": "data.t"},
               "rate_limit": {"call": "ext_authz", "failure_mode": mode,
                              "tiers": {"standard": [{"requests": 1, "window_s": 1}]}}})
        .to_string()
    };
    let facts = RequestFacts {
        path: b"/docs",
        headers: Headers::new(&[]),
        source: None,
        body_follows: false,
    };
    let (p, _) = Pipeline::from_json(cfg("deny").as_bytes()).unwrap();
    let out = p.on_request(&facts, NOW_MS, &mut p.worker_state());
    assert!(
        matches!(out.step, Step::Respond(ref r) if r.status == 503),
        "{out:?}"
    );
    let (p, _) = Pipeline::from_json(cfg("allow").as_bytes()).unwrap();
    let out = p.on_request(&facts, NOW_MS, &mut p.worker_state());
    let Step::Continue(ops) = out.step else {
        panic!("{out:?}")
    };
    assert_eq!(ops, [HeaderOp::Set(HANDOFF_HEADER.into(), "none".into())]);
}

/// Whatever the filter's own `call`, a client's handoff header never goes on: a limiter asked by
/// some `ext_authz` filter would count what it says.
#[test]
fn a_clients_handoff_header_never_goes_on_whatever_the_call() {
    let (p, mut s) = pipeline(json!({"tiers": {"standard": []}}));
    let headers = vec![("X_Apiguard_Limit".to_owned(), b"none".to_vec())];
    let ops = going_on(&p, &mut s, &headers);
    assert_eq!(ops, [HeaderOp::Remove("X_Apiguard_Limit".into())]);
}
