//! The HTTP contract, driven through the router without a socket (in-memory store): input
//! validation, the problem+json errors, the operational routes, and agreement with
//! `docs/limiter-openapi.yaml`.

// Test code: helpers outside `#[test]` functions may panic too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use apiguard_limiter::{app, AppState, MemoryStore, Metrics};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

fn router() -> Router {
    app(Arc::new(AppState {
        store: MemoryStore::new(),
        metrics: Metrics::new(),
        store_timeout: Duration::from_millis(50),
        descriptors: Default::default(),
    }))
}

async fn send(
    app: &Router,
    method: &str,
    path: &str,
    body: Vec<u8>,
) -> (StatusCode, String, Vec<u8>) {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .body(Body::from(body))
        .unwrap();
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let ctype = res
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let bytes = res.into_body().collect().await.unwrap().to_bytes().to_vec();
    (status, ctype, bytes)
}

async fn post_check(app: &Router, body: &str) -> (StatusCode, String, Value) {
    let (s, c, b) = send(app, "POST", "/v1/check", body.as_bytes().to_vec()).await;
    (s, c, serde_json::from_slice(&b).unwrap_or(Value::Null))
}

fn one_check(fields: &str) -> String {
    format!(r#"{{"checks":[{{{fields}}}]}}"#)
}

#[tokio::test]
async fn every_bad_input_is_a_400_problem() {
    let app = router();
    let key_513 = "k".repeat(513);
    let seventeen: Vec<Value> = (0..17)
        .map(|i| json!({"key": format!("{{t}}{i}"), "limit": 1, "window_ms": 1000}))
        .collect();
    let cases: Vec<(&str, String, &str)> = vec![
        ("malformed JSON", "{\"checks\":".into(), "EOF"),
        ("not an object", r#"[[{"key":"k","limit":1,"window_ms":1}]]"#.into(), "(root): must be a JSON object"),
        ("check as an array", r#"{"checks":[["k",1,1]]}"#.into(), "checks[0]: must be a JSON object"),
        ("unknown field", r#"{"checks":[],"x":1}"#.into(), "unknown field `x`"),
        ("trailing bytes", r#"{"checks":[]} {}"#.into(), "trailing"),
        ("no checks", r#"{"checks":[]}"#.into(), "checks: must not be empty"),
        ("17 checks", json!({"checks": seventeen}).to_string(), "at most 16"),
        ("empty key", one_check(r#""key":"","limit":1,"window_ms":1000"#), "checks[0].key: must not be empty"),
        ("513-byte key", one_check(&format!(r#""key":"{key_513}","limit":1,"window_ms":1000"#)), "at most 512 bytes"),
        ("limit 0", one_check(r#""key":"k","limit":0,"window_ms":1000"#), "checks[0].limit"),
        ("cost 0", one_check(r#""key":"k","limit":1,"window_ms":1000,"cost":0"#), "checks[0].cost"),
        ("negative cost", one_check(r#""key":"k","limit":1,"window_ms":1000,"cost":-1"#), "checks[0].cost"),
        ("window 0", one_check(r#""key":"k","limit":1,"window_ms":0"#), "checks[0].window_ms"),
        ("window over a day", one_check(r#""key":"k","limit":1,"window_ms":86400001"#), "checks[0].window_ms"),
        ("unknown algorithm", one_check(r#""key":"k","limit":1,"window_ms":1,"algorithm":"fixed""#), "checks[0].algorithm"),
        ("missing limit", one_check(r#""key":"k","window_ms":1"#), "missing field `limit`"),
        (
            "keys in different slots",
            r#"{"checks":[{"key":"{a}x","limit":1,"window_ms":1},{"key":"{b}x","limit":1,"window_ms":1}]}"#.into(),
            "hash tag",
        ),
    ];
    for (name, body, needle) in cases {
        let (status, ctype, problem) = post_check(&app, &body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{name}: {problem}");
        assert_eq!(ctype, "application/problem+json", "{name}");
        assert_eq!(problem["status"], 400, "{name}");
        assert_eq!(problem["title"], "Bad Request", "{name}");
        let detail = problem["detail"].as_str().unwrap_or_default();
        assert!(
            detail.contains(needle),
            "{name}: detail {detail:?} lacks {needle:?}"
        );
    }
    // Over 64 KiB: refused before it is parsed.
    let big = format!(
        r#"{{"checks":[{{"key":"{}","limit":1,"window_ms":1}}]}}"#,
        "k".repeat(70_000)
    );
    let (status, ctype, problem) = post_check(&app, &big).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(ctype, "application/problem+json");
    assert!(
        problem["detail"].as_str().unwrap().contains("65536 bytes"),
        "{problem}"
    );
}

#[tokio::test]
async fn check_decides_and_metrics_count_it() {
    let app = router();
    let body = one_check(r#""key":"k","limit":1,"window_ms":60000"#);
    let (s, _, v) = post_check(&app, &body).await;
    assert_eq!((s, v["allowed"].clone()), (StatusCode::OK, json!(true)));
    let (s, _, v) = post_check(&app, &body).await;
    assert_eq!((s, v["allowed"].clone()), (StatusCode::OK, json!(false)));
    post_check(&app, "{").await;
    let (s, ctype, text) = send(&app, "GET", "/metrics", vec![]).await;
    assert_eq!(s, StatusCode::OK);
    assert!(ctype.starts_with("application/openmetrics-text"));
    let text = String::from_utf8(text).unwrap();
    for line in [
        r#"apiguard_limiter_checks_total{result="allowed"} 1"#,
        r#"apiguard_limiter_checks_total{result="limited"} 1"#,
        r#"apiguard_limiter_checks_total{result="bad_request"} 1"#,
        "apiguard_limiter_check_duration_seconds_count 2",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
}

#[tokio::test]
async fn health_and_readiness() {
    let app = router();
    assert_eq!(
        send(&app, "GET", "/healthz", vec![]).await.0,
        StatusCode::OK
    );
    assert_eq!(send(&app, "GET", "/readyz", vec![]).await.0, StatusCode::OK);
    assert_eq!(
        send(&app, "GET", "/nope", vec![]).await.0,
        StatusCode::NOT_FOUND
    );
}

fn openapi() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/limiter-openapi.yaml");
    serde_yaml_ng::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Same shape, and the same values except where the value depends on the clock.
fn assert_matches(doc: &Value, got: &Value, at: &str) {
    match (doc, got) {
        (Value::Object(d), Value::Object(g)) => {
            let dk: Vec<_> = d.keys().collect();
            let gk: Vec<_> = g.keys().collect();
            assert_eq!(dk, gk, "{at}: fields differ");
            for (k, v) in d {
                if k != "reset_ms" {
                    assert_matches(v, &g[k], &format!("{at}.{k}"));
                }
            }
        }
        (Value::Array(d), Value::Array(g)) => {
            assert_eq!(d.len(), g.len(), "{at}: lengths differ");
            for (i, (dv, gv)) in d.iter().zip(g).enumerate() {
                assert_matches(dv, gv, &format!("{at}[{i}]"));
            }
        }
        _ => assert_eq!(doc, got, "{at}"),
    }
}

#[tokio::test]
async fn openapi_routes_and_examples_match_the_service() {
    let doc = openapi();
    let paths = doc["paths"].as_object().unwrap();
    let mut documented: Vec<String> = Vec::new();
    for (path, ops) in paths {
        for (method, _) in ops.as_object().unwrap() {
            documented.push(format!("{} {path}", method.to_uppercase()));
        }
    }
    documented.sort();
    assert_eq!(
        documented,
        [
            "GET /healthz",
            "GET /metrics",
            "GET /readyz",
            "POST /v1/check",
            "POST /v1/check/batch"
        ],
        "the document and the router disagree on routes"
    );
    // Every documented GET route answers one of its documented statuses.
    let app = router();
    for (path, ops) in paths {
        if let Some(get) = ops.get("get") {
            let (status, _, _) = send(&app, "GET", path, vec![]).await;
            assert!(
                get["responses"].get(status.as_str()).is_some(),
                "GET {path} answered {status}, not documented"
            );
        }
    }
    // Every request example, sent to a fresh service, gets the documented response example of
    // the same name, under the documented status.
    let check = &paths["/v1/check"]["post"];
    let examples = check["requestBody"]["content"]["application/json"]["examples"]
        .as_object()
        .unwrap();
    assert!(examples.len() >= 4);
    for (name, ex) in examples {
        let app = router();
        let (status, _, got) = post_check(&app, &ex["value"].to_string()).await;
        let response = &check["responses"][status.as_str()];
        let content = response["content"]
            .as_object()
            .and_then(|c| c.values().next())
            .unwrap_or_else(|| panic!("{name}: status {status} not documented"));
        let want = &content["examples"][name]["value"];
        assert!(
            !want.is_null(),
            "{name}: no response example under {status}"
        );
        assert_matches(want, &got, name);
    }
}

#[tokio::test]
async fn a_batch_decides_each_item_as_check_would_in_order() {
    let app = router();
    let k = one_check(r#""key":"k","limit":1,"window_ms":60000"#);
    let other = one_check(r#""key":"o","limit":1,"window_ms":60000"#);
    let bad = one_check(r#""key":"","limit":1,"window_ms":60000"#);
    let body = format!(r#"{{"requests":[{k},{k},{bad},{other}]}}"#);
    let (s, _, b) = send(&app, "POST", "/v1/check/batch", body.into_bytes()).await;
    assert_eq!(s, StatusCode::OK);
    let v: Value = serde_json::from_slice(&b).unwrap();
    let answers = v["answers"].as_array().unwrap();
    let got: Vec<(u64, Value)> = answers
        .iter()
        .map(|a| (a["status"].as_u64().unwrap(), a["body"]["allowed"].clone()))
        .collect();
    // The same key twice: the first item takes the only unit, the second is refused; the
    // invalid item is refused alone; the other key is untouched by its neighbours.
    assert_eq!(
        got,
        [
            (200, json!(true)),
            (200, json!(false)),
            (400, Value::Null),
            (200, json!(true))
        ]
    );
    assert_eq!(answers[2]["body"]["status"], json!(400));
    // Each item is what /v1/check answers: k is spent there too.
    let (s, _, v) = post_check(&app, &k).await;
    assert_eq!((s, v["allowed"].clone()), (StatusCode::OK, json!(false)));
    let (_, _, text) = send(&app, "GET", "/metrics", vec![]).await;
    let text = String::from_utf8(text).unwrap();
    for line in [
        "apiguard_limiter_batches_total 1",
        "apiguard_limiter_batch_requests_total 4",
        r#"apiguard_limiter_checks_total{result="bad_request"} 1"#,
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
}

#[tokio::test]
async fn a_batch_that_is_not_one_is_a_400_problem() {
    let app = router();
    let many = vec![one_check(r#""key":"k","limit":1,"window_ms":60000"#); 33].join(",");
    for body in [
        "{".to_owned(),
        r#"{"requests":[]}"#.to_owned(),
        r#"{"requests":[],"more":1}"#.to_owned(),
        r#"{"checks":[]}"#.to_owned(),
        format!(r#"{{"requests":[{many}]}}"#),
    ] {
        let (s, ctype, b) = send(&app, "POST", "/v1/check/batch", body.clone().into_bytes()).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(ctype, "application/problem+json", "{body}");
        let v: Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["status"], json!(400));
    }
    // Nothing was counted as a decision.
    let (_, _, text) = send(&app, "GET", "/metrics", vec![]).await;
    let text = String::from_utf8(text).unwrap();
    assert!(!text.contains(r#"result="allowed""#), "{text}");
}
