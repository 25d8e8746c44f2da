#[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
use wasm_bindgen_test::wasm_bindgen_test as test;

use serde_json::json;

use super::*;
use crate::config::Config;

fn stage(extra: serde_json::Value) -> RateLimitStage {
    let mut rl = json!({
        "cluster": "limiter",
        "identity": ["claim:sub", "header:x-api-key", "source_ip"],
        "tiers": {"standard": [{"requests": 100, "window_s": 60}, {"requests": 10, "window_s": 1}], "unlimited": [], "gold": [{"requests": 1000, "window_s": 60}]},
        "routes": [{"name": "auth", "prefix": "/api/v1/auth", "limits": [{"requests": 5, "window_s": 60}]},
                   {"name": "auth_login", "prefix": "/api/v1/auth/login", "limits": [{"requests": 2, "window_s": 60}], "shadow": true}]
    });
    if let (Some(o), Some(e)) = (rl.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            o.insert(k.clone(), v.clone());
        }
    }
    let cfg = Config::from_json(json!({"rate_limit": rl}).to_string().as_bytes()).unwrap();
    RateLimitStage::compile(cfg.config.rate_limit.as_ref().unwrap()).unwrap()
}

fn path(p: &str) -> NormalizedPath {
    crate::path::normalize(p.as_bytes()).unwrap()
}

fn claims(sub: &str) -> Claims {
    let serde_json::Value::Object(m) = json!({"sub": sub}) else {
        unreachable!()
    };
    Claims::new(m)
}

#[test]
fn plans_pick_route_then_tier() {
    let s = stage(json!({}));
    let none: Vec<(String, Vec<u8>)> = vec![];
    let h = Headers::new(&none);
    let c = claims("u1");
    let p = s
        .plan(
            &path("/api/v1/auth/token"),
            &h,
            Some("10.0.0.1"),
            Some(("idp", &c)),
            Some("gold"),
            1,
        )
        .unwrap()
        .unwrap();
    assert_eq!(
        (p.scope.as_str(), p.key.as_str()),
        ("route:auth", "{idp/sub:u1}:route:auth")
    );
    assert_eq!(p.checks.len(), 1);
    assert!(!p.shadow);
    let p = s
        .plan(
            &path("/api/v1/auth/login"),
            &h,
            None,
            Some(("idp", &c)),
            None,
            1,
        )
        .unwrap()
        .unwrap();
    assert!(p.shadow);
    let p = s
        .plan(
            &path("/api/v1/docs"),
            &h,
            None,
            Some(("idp", &c)),
            Some("gold"),
            3,
        )
        .unwrap()
        .unwrap();
    assert_eq!(p.scope, "tier:gold");
    assert_eq!(
        (p.checks[0].limit, p.checks[0].window_ms, p.checks[0].cost),
        (1000, 60_000, 3)
    );
    let p = s
        .plan(&path("/api/v1/docs"), &h, None, Some(("idp", &c)), None, 1)
        .unwrap()
        .unwrap();
    assert_eq!(p.scope, "tier:standard");
    assert_eq!(p.checks.len(), 2);
    assert!(s
        .plan(
            &path("/x"),
            &h,
            None,
            Some(("idp", &c)),
            Some("unlimited"),
            1
        )
        .unwrap()
        .is_none());
    assert_eq!(
        s.plan(
            &path("/x"),
            &h,
            None,
            Some(("idp", &c)),
            Some("platinum"),
            1
        )
        .unwrap_err(),
        PlanError::UnknownTier("platinum".into())
    );
}

#[test]
fn identities_never_carry_credentials() {
    let s = stage(json!({}));
    let list = vec![("x-api-key".to_owned(), b"secret-key-123".to_vec())];
    let h = Headers::new(&list);
    let with_key = s
        .plan(&path("/a"), &h, Some("10.0.0.1"), None, None, 1)
        .unwrap()
        .unwrap();
    assert!(with_key.key.starts_with("{x-api-key#"), "{}", with_key.key);
    assert!(!with_key.key.contains("secret"), "{}", with_key.key);
    let none: Vec<(String, Vec<u8>)> = vec![];
    let by_ip = s
        .plan(
            &path("/a"),
            &Headers::new(&none),
            Some("10.0.0.1"),
            None,
            None,
            1,
        )
        .unwrap()
        .unwrap();
    assert_eq!(by_ip.key, "{ip:10.0.0.1}:tier:standard");
    let anon = s
        .plan(&path("/a"), &Headers::new(&none), None, None, None, 1)
        .unwrap()
        .unwrap();
    assert_eq!(anon.key, "{anonymous}:tier:standard");
    // A claim that could break the hash tag is hashed.
    let odd = claims("a}b{c");
    let p = s
        .plan(
            &path("/a"),
            &Headers::new(&none),
            None,
            Some(("idp", &odd)),
            None,
            1,
        )
        .unwrap()
        .unwrap();
    assert!(
        p.key.starts_with("{idp/sub#") && p.key.matches('{').count() == 1,
        "{}",
        p.key
    );
}

fn answer(plan: &Plan, allowed: bool, remaining: &[u64], retry: u64) -> Vec<u8> {
    let results: Vec<_> = plan
        .checks
        .iter()
        .zip(remaining)
        .map(|(c, r)| json!({"key": c.key, "limit": c.limit, "remaining": r, "reset_ms": 30_500, "retry_after_ms": if allowed { 0 } else { retry }}))
        .collect();
    json!({"allowed": allowed, "results": results})
        .to_string()
        .into_bytes()
}

fn standard_plan(s: &RateLimitStage) -> Plan {
    let c = claims("u1");
    let none: Vec<(String, Vec<u8>)> = vec![];
    s.plan(
        &path("/a"),
        &Headers::new(&none),
        None,
        Some(("idp", &c)),
        None,
        1,
    )
    .unwrap()
    .unwrap()
}

#[test]
fn allowed_answers_carry_the_most_restrictive_window() {
    let s = stage(json!({}));
    let p = standard_plan(&s);
    let j = s.judge(&p, Ok((200, &answer(&p, true, &[90, 3], 0))), 1_000_000);
    assert_eq!(j.verdict, LimitVerdict::Allowed);
    assert!(j.reply.is_none());
    let h: std::collections::BTreeMap<_, _> = j.response_headers.into_iter().collect();
    assert_eq!(h["x-ratelimit-limit"], "10");
    assert_eq!(h["x-ratelimit-remaining"], "3");
    assert_eq!(h["x-ratelimit-reset"], "1031");
    assert_eq!(
        h["ratelimit-policy"],
        r#""tier-standard-60s";q=100;w=60, "tier-standard-1s";q=10;w=1"#
    );
    assert_eq!(h["ratelimit"], r#""tier-standard-1s";r=3;t=31"#);
    for (mode, legacy, ietf) in [("legacy", true, false), ("ietf", false, true)] {
        let s = stage(json!({"headers": mode}));
        let j = s.judge(&p, Ok((200, &answer(&p, true, &[90, 3], 0))), 1_000_000);
        let names: Vec<_> = j.response_headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names.contains(&"x-ratelimit-limit"), legacy, "{mode}");
        assert_eq!(names.contains(&"ratelimit"), ietf, "{mode}");
    }
}

#[test]
fn limited_answers_are_429_and_remembered() {
    let s = stage(json!({}));
    let p = standard_plan(&s);
    let j = s.judge(&p, Ok((200, &answer(&p, false, &[0, 0], 2_300))), 1_000_000);
    assert_eq!(j.verdict, LimitVerdict::Limited);
    let r = j.reply.unwrap();
    assert_eq!(r.status, 429);
    let h: std::collections::BTreeMap<_, _> = r.headers.iter().cloned().collect();
    assert_eq!(h["retry-after"], "3");
    assert_eq!(h["x-ratelimit-remaining"], "0");
    assert!(h.contains_key("ratelimit") && h.contains_key("ratelimit-policy"));
    assert_eq!(j.block_until_ms, Some(1_002_300));
    let mut local = LocalLimits::new(8);
    local.block(&p.key, 1_002_300, &r);
    let again = local.blocked(&p.key, 1_001_500).unwrap();
    assert!(again.headers.contains(&("retry-after".into(), "1".into())));
    assert!(local.blocked(&p.key, 1_002_300).is_none());
}

#[test]
fn failures_follow_the_failure_mode() {
    let deny = stage(json!({}));
    let p = standard_plan(&deny);
    let big = vec![b' '; MAX_ANSWER_BYTES + 1];
    type Answer<'a> = Result<(u16, &'a [u8]), LimiterFailure>;
    let cases: Vec<(Answer, LimiterFailure)> = vec![
        (Err(LimiterFailure::Dispatch), LimiterFailure::Dispatch),
        (Err(LimiterFailure::NoResponse), LimiterFailure::NoResponse),
        (Ok((503, b"")), LimiterFailure::Status),
        (Ok((500, b"oops")), LimiterFailure::Status),
        (Ok((200, &big)), LimiterFailure::TooLarge),
        (Ok((200, b"garbage")), LimiterFailure::Malformed),
        (
            Ok((200, br#"{"allowed":true,"results":[]}"#)),
            LimiterFailure::Malformed,
        ),
    ];
    for (a, want) in cases.clone() {
        let j = deny.judge(&p, a, 0);
        assert_eq!(j.verdict, LimitVerdict::Failed(want));
        let r = j.reply.unwrap();
        assert_eq!(r.status, 503);
        assert!(r.headers.contains(&("retry-after".into(), "1".into())));
    }
    let allow = stage(json!({"failure_mode": "allow"}));
    let p = standard_plan(&allow);
    for (a, want) in cases {
        let j = allow.judge(&p, a, 0);
        assert_eq!(j.verdict, LimitVerdict::Failed(want));
        assert!(j.reply.is_none());
    }
}

#[test]
fn shadow_limits_never_block() {
    let s = stage(json!({}));
    let c = claims("u1");
    let none: Vec<(String, Vec<u8>)> = vec![];
    let p = s
        .plan(
            &path("/api/v1/auth/login"),
            &Headers::new(&none),
            None,
            Some(("idp", &c)),
            None,
            1,
        )
        .unwrap()
        .unwrap();
    let j = s.judge(&p, Ok((200, &answer(&p, false, &[0], 1000))), 0);
    assert_eq!(j.verdict, LimitVerdict::ShadowLimited);
    assert!(j.reply.is_none() && j.block_until_ms.is_none());
    let j = s.judge(&p, Err(LimiterFailure::NoResponse), 0);
    assert!(
        j.reply.is_none(),
        "a shadow route never blocks, even on failure"
    );
}

/// Two issuers' equal `sub` are two callers, each with its own bucket.
#[test]
fn claim_identities_are_scoped_by_provider() {
    let s = stage(json!({}));
    let none: Vec<(String, Vec<u8>)> = vec![];
    let c = claims("alice");
    let key = |provider| {
        s.plan(
            &path("/a"),
            &Headers::new(&none),
            None,
            Some((provider, &c)),
            None,
            1,
        )
        .unwrap()
        .unwrap()
        .key
    };
    assert_eq!(key("idp"), "{idp/sub:alice}:tier:standard");
    assert_ne!(key("idp"), key("partner"));
}

/// Route prefixes match in any letter case and on the path without `;` parameters, so a
/// spelling the backend routes alike cannot move a request to a cheaper tier.
#[test]
fn routes_match_every_spelling() {
    let s = stage(json!({}));
    let none: Vec<(String, Vec<u8>)> = vec![];
    let c = claims("u1");
    for raw in [
        "/api/v1/auth/token",
        "/API/V1/AUTH/token",
        "/api/v1/Auth/token",
        "/api/v1/auth;x/token",
        "/api/v1/x/..;/auth/token",
    ] {
        let p =
            crate::path::normalize_with(raw.as_bytes(), crate::path::MatrixParams::Strip).unwrap();
        let plan = s
            .plan(&p, &Headers::new(&none), None, Some(("idp", &c)), None, 1)
            .unwrap()
            .unwrap();
        assert_eq!(plan.scope, "route:auth", "{raw}");
    }
}

#[test]
fn a_calls_answer_is_read_as_the_host_gives_it() {
    assert_eq!(
        RateLimitStage::call_answer(None, 0, b""),
        Err(LimiterFailure::NoResponse)
    );
    assert_eq!(
        RateLimitStage::call_answer(Some(200), MAX_ANSWER_BYTES + 1, b""),
        Err(LimiterFailure::TooLarge)
    );
    assert_eq!(
        RateLimitStage::call_answer(Some(503), 2, b"{}"),
        Ok((503, &b"{}"[..]))
    );
}
