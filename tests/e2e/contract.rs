//! The contract stage through Envoy: the API's OpenAPI document as a positive model
//! (docs/contract.md). Undeclared paths and methods, parameters against their schemas, and what
//! the headers say of a body, each answered before anything reaches the upstream; valid
//! requests reach it unchanged.

use apiguard_e2e::{Echo, Envoy, EnvoySpec};
use serde_json::{json, Value};

/// A small API: items listed with a bounded `limit`, one item by integer id, created with a
/// JSON body; and the filter's contract section around it.
fn contract(mode: &str) -> String {
    let openapi = json!({
        "openapi": "3.0.3",
        "info": {"title": "items", "version": "1"},
        "servers": [{"url": "https://api.example.com/api/v1"}],
        "paths": {
            "/items": {
                "get": {"operationId": "listItems", "parameters": [
                    {"name": "limit", "in": "query",
                     "schema": {"type": "integer", "minimum": 1, "maximum": 100}}]},
                "post": {"operationId": "createItem",
                         "requestBody": {"required": true, "content": {"application/json": {}}}}
            },
            "/items/{id}": {
                "parameters": [{"name": "id", "in": "path", "required": true,
                                "schema": {"type": "integer", "format": "int32"}}],
                "get": {"operationId": "getItem"},
                "delete": {"operationId": "deleteItem"}
            },
            "/items/export": {"get": {"operationId": "exportItems"}}
        }
    });
    json!({"contract": {"openapi": openapi, "mode": mode, "max_body_bytes": 1024}}).to_string()
}

/// The status, the `Allow` header and the problem's `detail`.
async fn ask(
    envoy: &Envoy,
    method: reqwest::Method,
    path: &str,
    body: Option<(&str, Vec<u8>)>,
) -> (u16, Option<String>, Option<String>) {
    let mut req = apiguard_e2e::client().request(method, envoy.url(path));
    if let Some((content_type, body)) = body {
        req = req.header("content-type", content_type).body(body);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let allow = res
        .headers()
        .get("allow")
        .map(|v| v.to_str().unwrap().to_owned());
    let text = res.text().await.unwrap();
    let detail = serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|v| v["detail"].as_str().map(str::to_owned));
    (status, allow, detail)
}

/// A chunked JSON POST over HTTP/1.1, written by hand (the client sends bodies with a length);
/// the answer's status.
async fn chunked(envoy: &Envoy, path: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(envoy.addr).await.unwrap();
    let req = format!(
        "POST {path} HTTP/1.1\r\nhost: api\r\ncontent-type: application/json\r\n\
         transfer-encoding: chunked\r\nconnection: close\r\n\r\n2\r\n{{}}\r\n0\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).await.unwrap();
    let text = String::from_utf8_lossy(&answer);
    text.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_contract_is_enforced_before_the_upstream() {
    use reqwest::Method;
    let echo = Echo::start().await.unwrap();
    let envoy = Envoy::start(&EnvoySpec::new(echo.addr).with_filter(contract("enforce")))
        .await
        .unwrap();
    let json_body = || Some(("application/json", br#"{"name":"x"}"#.to_vec()));
    // Declared operations pass, unchanged; literal segments win over templates.
    for (method, path, body) in [
        (Method::GET, "/api/v1/items?limit=10", None),
        (Method::GET, "/api/v1/items/7", None),
        (Method::GET, "/API/V1/Items/export", None),
        (Method::POST, "/api/v1/items", json_body()),
        (
            Method::POST,
            "/api/v1/items",
            Some(("application/json; charset=utf-8", b"{}".to_vec())),
        ),
    ] {
        let (status, _, detail) = ask(&envoy, method.clone(), path, body).await;
        assert_eq!(status, 200, "{method} {path}: {detail:?}");
    }
    assert_eq!(echo.requests().len(), 5);
    let seen = echo.requests();
    assert_eq!(
        seen[3].body_len, 12,
        "the body reaches the upstream as sent"
    );
    // Inventory: undeclared paths 404, undeclared methods 405 with `Allow`.
    for path in [
        "/api/v1/debug/vars",
        "/items",
        "/api/v1/items/7/extra",
        "/api/v2/items",
    ] {
        let (status, _, _) = ask(&envoy, Method::GET, path, None).await;
        assert_eq!(status, 404, "{path}");
    }
    let (status, allow, _) = ask(&envoy, Method::PUT, "/api/v1/items/7", None).await;
    assert_eq!((status, allow.as_deref()), (405, Some("DELETE, GET")));
    // Parameters: the pointer and the keyword, never the value.
    for (path, want) in [
        ("/api/v1/items?limit=1000", "/query/limit: maximum"),
        ("/api/v1/items?limit=ten", "/query/limit: type"),
        ("/api/v1/items?limit=1&limit=2", "/query/limit: repeated"),
        ("/api/v1/items/seven", "/path/id: type"),
        ("/api/v1/items/99999999999", "/path/id: type"),
    ] {
        let (status, _, detail) = ask(&envoy, Method::GET, path, None).await;
        assert_eq!((status, detail.as_deref()), (400, Some(want)), "{path}");
    }
    // What the headers say of a body: media type, size, presence.
    let (status, _, _) = ask(
        &envoy,
        Method::POST,
        "/api/v1/items",
        Some(("text/plain", b"x".to_vec())),
    )
    .await;
    assert_eq!(status, 415);
    let (status, _, _) = ask(
        &envoy,
        Method::POST,
        "/api/v1/items",
        Some(("application/json", vec![b' '; 1025])),
    )
    .await;
    assert_eq!(status, 413);
    let (status, _, _) = ask(
        &envoy,
        Method::POST,
        "/api/v1/items",
        Some(("application/json", vec![b' '; 1024])),
    )
    .await;
    assert_eq!(status, 200, "max_body_bytes is the largest body allowed");
    let (status, _, detail) = ask(&envoy, Method::POST, "/api/v1/items", None).await;
    assert_eq!((status, detail.as_deref()), (400, Some("/body: required")));
    // A body without a length (chunked) cannot be held to `max_body_bytes` on its headers.
    assert_eq!(chunked(&envoy, "/api/v1/items").await, 411);
    // Nothing refused reached the upstream.
    assert_eq!(echo.requests().len(), 6);
    crate::expect_stat(
        &envoy,
        "wasmcustom.apiguard.contract.refused.unknown_operation",
        4,
    )
    .await;
    crate::expect_stat(&envoy, "wasmcustom.apiguard.contract.refused.invalid", 6).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn monitor_mode_never_refuses_and_says_what_it_would_have_refused() {
    let echo = Echo::start().await.unwrap();
    let envoy = Envoy::start(&EnvoySpec::new(echo.addr).with_filter(contract("monitor")))
        .await
        .unwrap();
    for path in ["/api/v1/debug/vars", "/api/v1/items?limit=1000"] {
        let (status, _, _) = ask(&envoy, reqwest::Method::GET, path, None).await;
        assert_eq!(status, 200, "{path}");
    }
    assert_eq!(echo.requests().len(), 2);
    crate::expect_stat(&envoy, "wasmcustom.apiguard.contract.would_refuse", 2).await;
    let log = envoy.proc.log();
    assert!(
        log.contains("apiguard: contract would refuse (unknown_operation) on /api/v1/debug/vars"),
        "{log}"
    );
    assert!(
        !log.contains("limit=1000"),
        "the query never reaches the log"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_document_that_cannot_be_enforced_exactly_is_refused_at_its_node() {
    let echo = Echo::start().await.unwrap();
    let openapi = json!({"openapi": "3.1.0", "info": {}, "paths": {
        "/files/{name}.json": {"get": {}}}});
    let spec = EnvoySpec::new(echo.addr)
        .with_filter(json!({"contract": {"openapi": openapi}}).to_string());
    let (status, log) = Envoy::start_expecting_exit(&spec).unwrap();
    assert!(
        log.contains("contract.openapi#/paths/~1files~1{name}.json: cannot be enforced exactly"),
        "Envoy exited ({status}) without naming the node:\n{log}"
    );
}
