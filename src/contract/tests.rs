//! The contract stage inside the core: the request as the flow hands it (normalised path,
//! effective method, headers), what the headers say of a body, and the stage's place among the
//! phases (after authentication, before the policy).

#[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
use wasm_bindgen_test::wasm_bindgen_test as test;

use serde_json::{json, Value};

use super::{ContractStage, Refusal};
use crate::config::ContractConfig;
use crate::events::Event;
use crate::flow::{Pipeline, RequestFacts, Step};
use crate::http::Headers;
use crate::path::normalize;

fn stage(openapi: Value) -> ContractStage {
    let cfg: ContractConfig =
        serde_json::from_value(json!({"openapi": openapi, "max_body_bytes": 100})).unwrap();
    ContractStage::compile(&cfg).unwrap()
}

fn api() -> ContractStage {
    stage(
        json!({"openapi": "3.0.3", "servers": [{"url": "/v1/"}], "paths": {
            "/files/{name}": {"parameters": [{"name": "name", "in": "path", "required": true,
                                              "schema": {"type": "string", "maxLength": 8}}],
                              "put": {"requestBody": {"content": {"image/*": {}, "application/json": {}}}}},
            "/search": {"get": {"parameters": [
                {"name": "X-Request-Id", "in": "header", "required": true, "schema": {"type": "string", "format": "uuid"}},
                {"name": "Authorization", "in": "header", "required": true, "schema": {"type": "integer"}}]}}
        }}),
    )
}

/// A request; a body follows when the headers say it has one (`content-length` over 0, or
/// `transfer-encoding`).
fn check(
    s: &ContractStage,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<(), Refusal> {
    let body = headers
        .iter()
        .any(|(n, v)| (*n == "content-length" && *v != "0") || *n == "transfer-encoding");
    check_with(s, method, path, headers, body)
}

fn check_with(
    s: &ContractStage,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body_follows: bool,
) -> Result<(), Refusal> {
    let path = normalize(path.as_bytes()).unwrap();
    let list: Vec<(String, Vec<u8>)> = headers
        .iter()
        .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
        .collect();
    s.check(method, &path, &Headers::new(&list), body_follows)
        .map(|_| ())
}

fn invalid(pointer: &str, keyword: &str) -> Result<(), Refusal> {
    Err(Refusal::Invalid(super::Violation::new(
        pointer.into(),
        keyword,
    )))
}

#[test]
fn paths_are_under_the_servers_path_and_decoded_as_the_backend_reads_them() {
    let s = api();
    let json = [
        ("content-type", "application/json"),
        ("content-length", "2"),
    ];
    assert_eq!(check(&s, "PUT", "/v1/files/a%20b", &json), Ok(()));
    assert_eq!(
        check(&s, "PUT", "/files/a", &json),
        Err(Refusal::UnknownOperation)
    );
    // `%7E` is `~`, decoded by the normalisation itself; a long name is too long once decoded.
    assert_eq!(check(&s, "PUT", "/v1/files/%7Ea", &json), Ok(()));
    assert_eq!(
        check(
            &s,
            "PUT",
            "/v1/files/%C3%A9%C3%A9%C3%A9%C3%A9%C3%A9%C3%A9%C3%A9%C3%A9%C3%A9",
            &json
        ),
        invalid("/path/name", "maxLength")
    );
    assert_eq!(
        check(&s, "GET", "/v1/files/a", &[]),
        Err(Refusal::MethodNotAllowed("PUT".into()))
    );
}

#[test]
fn the_headers_say_enough_of_a_body() {
    let s = api();
    let put = |headers: &[(&str, &str)]| check(&s, "PUT", "/v1/files/a", headers);
    assert_eq!(
        put(&[("content-type", "image/png"), ("content-length", "100")]),
        Ok(())
    );
    assert_eq!(
        put(&[("content-type", "IMAGE/PNG"), ("content-length", "3")]),
        Ok(())
    );
    // A body without a length (chunked, or HTTP/2 without `content-length`): its size cannot be
    // held to the limit on the headers.
    assert_eq!(
        put(&[
            ("content-type", "image/png"),
            ("transfer-encoding", "chunked")
        ]),
        Err(Refusal::LengthRequired)
    );
    assert_eq!(
        check_with(
            &s,
            "PUT",
            "/v1/files/a",
            &[("content-type", "text/plain")],
            true
        ),
        Err(Refusal::LengthRequired)
    );
    // The stream, not the headers, says whether there is a body: `content-length: 0` is none.
    assert_eq!(
        check_with(&s, "PUT", "/v1/files/a", &[("content-length", "0")], true),
        Ok(())
    );
    assert_eq!(
        put(&[
            ("content-type", "application/json; charset=utf-8"),
            ("content-length", "1")
        ]),
        Ok(())
    );
    assert_eq!(
        put(&[("content-type", "image/png"), ("content-length", "101")]),
        Err(Refusal::TooLarge)
    );
    assert_eq!(
        put(&[("content-type", "text/plain"), ("content-length", "1")]),
        Err(Refusal::UnsupportedMediaType)
    );
    assert_eq!(
        put(&[("content-length", "1")]),
        Err(Refusal::UnsupportedMediaType)
    );
    assert_eq!(
        put(&[
            ("content-type", "image/png"),
            ("content-encoding", "gzip"),
            ("content-length", "1")
        ]),
        Err(Refusal::UnsupportedMediaType)
    );
    assert_eq!(
        put(&[
            ("content-type", "image/png"),
            ("content-length", "1"),
            ("content-length", "2")
        ]),
        invalid("/body", "content-length")
    );
    // No body, none required: passes whatever its headers say of a type.
    assert_eq!(put(&[]), Ok(()));
}

#[test]
fn header_parameters_are_case_insensitive_and_authorization_is_the_tokens() {
    let s = api();
    let id = "7c9e6679-7425-40de-944b-e07fc1f90ae7";
    // `Authorization` is ignored as OpenAPI says (apiguard's jwt stage reads it).
    assert_eq!(
        check(&s, "GET", "/v1/search", &[("x-request-id", id)]),
        Ok(())
    );
    assert_eq!(
        check(&s, "GET", "/v1/search", &[]),
        invalid("/header/x-request-id", "required")
    );
    assert_eq!(
        check(&s, "GET", "/v1/search", &[("X-REQUEST-ID", "7")]),
        invalid("/header/x-request-id", "format")
    );
}

/// The contract is judged after authentication (an anonymous caller learns nothing of the
/// inventory) and before the policy; `monitor` counts and lets the request go on.
#[test]
fn the_contract_comes_after_authentication_and_monitor_only_counts() {
    let openapi = json!({"openapi": "3.1.0", "paths": {"/ok": {"get": {}}}});
    let config = |mode: &str| {
        json!({"jwt": {"providers": {"p": {"issuer": "i", "audiences": ["a"],
                "jwks": {"remote": {"cluster": "idp", "path": "/jwks"}}}},
                "rules": [{"prefix": "/public", "requires": []}]},
               "contract": {"openapi": openapi, "mode": mode}})
        .to_string()
    };
    let run = |p: &Pipeline, path: &str| {
        let headers: Vec<(String, Vec<u8>)> = vec![(":method".into(), b"GET".to_vec())];
        let facts = RequestFacts {
            path: path.as_bytes(),
            headers: Headers::new(&headers),
            source: None,
            body_follows: false,
        };
        p.on_request(&facts, 1_800_000_000_000, &mut p.worker_state())
    };
    let (enforce, _) = Pipeline::from_json(config("enforce").as_bytes()).unwrap();
    let status = |o: &crate::flow::Outcome| match &o.step {
        Step::Respond(r) => r.status,
        Step::Continue(_) => 200,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        status(&run(&enforce, "/debug")),
        401,
        "no token: no inventory"
    );
    let o = run(&enforce, "/public/debug");
    assert_eq!(status(&o), 404);
    assert!(o.events.contains(&Event::ContractRefused(
        super::RefusalKind::UnknownOperation
    )));
    let (monitor, _) = Pipeline::from_json(config("monitor").as_bytes()).unwrap();
    let o = run(&monitor, "/public/debug");
    assert_eq!(status(&o), 200);
    assert!(o.events.contains(&Event::ContractWouldRefuse(
        super::RefusalKind::UnknownOperation
    )));
}

/// The policy sees the operation the request is: its id, template, tags and the scopes its
/// security requirements name.
#[test]
fn the_policy_sees_the_operation() {
    let openapi = json!({"openapi": "3.0.3", "servers": [{"url": "/v1"}],
        "security": [{"oauth": ["items:read"]}],
        "paths": {"/items/{id}": {
            "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "integer"}}],
            "get": {"operationId": "getItem", "tags": ["items"]},
            "delete": {"operationId": "deleteItem", "security": [{"oauth": ["items:write"]}, {"key": []}]}}}});
    let rego = r#"package api.authz
default allow := false
allow if {
    input.operation.id == "getItem"
    input.operation.template == "/v1/items/{id}"
    "items" in input.operation.tags
    input.operation.scopes == ["items:read"]
}
allow if input.operation.scopes == ["items:write"]
"#;
    let config = json!({"contract": {"openapi": openapi}, "policy": {"modules": {"p.rego": rego}}});
    let (p, _) = Pipeline::from_json(config.to_string().as_bytes()).unwrap();
    let run = |method: &str, path: &str| {
        let headers: Vec<(String, Vec<u8>)> = vec![(":method".into(), method.as_bytes().to_vec())];
        let facts = RequestFacts {
            path: path.as_bytes(),
            headers: Headers::new(&headers),
            source: None,
            body_follows: false,
        };
        match p
            .on_request(&facts, 1_800_000_000_000, &mut p.worker_state())
            .step
        {
            Step::Respond(r) => r.status,
            Step::Continue(_) => 200,
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(run("GET", "/v1/items/7"), 200);
    assert_eq!(
        run("DELETE", "/v1/items/7"),
        200,
        "its own requirements, not the document's"
    );
    assert_eq!(
        run("GET", "/v1/items/x"),
        400,
        "judged by the contract before the policy"
    );
}

/// An operation's `x-apiguard-cost` is what one request of it counts against rate limits,
/// unless the policy says otherwise.
#[test]
fn an_operation_sets_its_rate_limit_cost() {
    let openapi = json!({"openapi": "3.1.0", "paths": {
        "/report": {"get": {"x-apiguard-cost": 5}}, "/ping": {"get": {}}}});
    let config = json!({"contract": {"openapi": openapi},
        "rate_limit": {"cluster": "limiter", "identity": ["source_ip"],
                       "tiers": {"standard": [{"requests": 100, "window_s": 60}]}}});
    let (p, _) = Pipeline::from_json(config.to_string().as_bytes()).unwrap();
    let cost = |path: &str| {
        let headers: Vec<(String, Vec<u8>)> = vec![(":method".into(), b"GET".to_vec())];
        let facts = RequestFacts {
            path: path.as_bytes(),
            headers: Headers::new(&headers),
            source: Some("10.0.0.1"),
            body_follows: false,
        };
        match p
            .on_request(&facts, 1_800_000_000_000, &mut p.worker_state())
            .step
        {
            Step::CheckLimits { call, .. } => {
                let body: Value = serde_json::from_slice(&call.body).unwrap();
                body["checks"][0]["cost"].as_u64().unwrap()
            }
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(cost("/report"), 5);
    assert_eq!(cost("/ping"), 1);
}

/// What a review found a backend would read differently, each refused.
#[test]
fn what_a_backend_would_read_differently_is_refused() {
    let s = stage(json!({"openapi": "3.1.0", "paths": {
        "/jobs": {"get": {"parameters": [
            {"name": "limit", "in": "query", "schema": {"type": "integer", "maximum": 10}},
            {"name": "X-Tenant", "in": "header", "schema": {"type": "string", "enum": ["t1"]}}]}},
        "/users/me": {"get": {}},
        "/users/{id}": {"get": {"parameters": [
            {"name": "id", "in": "path", "required": true, "schema": {"type": "integer"}}]}}}}));
    // Query names the operation does not declare: `limit[]`, `max.rows`, `name[$ne]`.
    for q in ["limit[]=100000", "limit=1&other=2", "limit%5B%5D=9", "x"] {
        assert_eq!(
            check(&s, "GET", &format!("/jobs?{q}"), &[]),
            invalid("/query", "undeclared"),
            "{q}"
        );
    }
    assert_eq!(
        check(&s, "GET", "/jobs?limit=1;limit=100000", &[]),
        invalid("/query", "separator")
    );
    assert_eq!(
        check(&s, "GET", "/jobs?limit=%ff", &[]),
        invalid("/query", "encoding")
    );
    assert_eq!(check(&s, "GET", "/jobs?limit=5", &[]), Ok(()));
    // A header parameter under any spelling a backend reads alike.
    assert_eq!(
        check(&s, "GET", "/jobs", &[("x_tenant", "other")]),
        invalid("/header/x-tenant", "enum")
    );
    // A body where the operation declares none.
    assert_eq!(
        check(
            &s,
            "GET",
            "/jobs",
            &[
                ("content-type", "application/x-www-form-urlencoded"),
                ("content-length", "12")
            ]
        ),
        Err(Refusal::UnsupportedMediaType)
    );
    // A length every reader agrees on.
    assert_eq!(
        check(&s, "GET", "/jobs", &[("content-length", "+0")]),
        invalid("/body", "content-length")
    );
    // A literal matched only in another case, where a template would take the segment too.
    assert_eq!(check(&s, "GET", "/users/me", &[]), Ok(()));
    assert_eq!(check(&s, "GET", "/users/ME", &[]), invalid("/path", "case"));
}
