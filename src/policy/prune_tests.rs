//! The "only what the policy reads" pruning ([`super::reads`]) never changes a decision: for
//! every policy here (the pack, the end-to-end tests' kinds of policy, and policies written to
//! slip past a textual reading) and every request (the case files' requests crossed with
//! headers, queries and sources that such policies test), the decision on the pruned input
//! equals the decision on the full input.

// Native only: it reads the policy case files from disk.
#![cfg(not(target_arch = "wasm32"))]

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};

use super::input::{InputBuilder, PolicyRequest, Template};
use super::reads::InputReads;
use super::{PolicyProgram, BUILTIN_NAME, BUILTIN_PACK};
use crate::http::Headers;
use crate::identity::Claims;

const CUSTOM: &[&str] = &[
    "allow if { not input.request.headers[\"x-debug\"]; not input.request.query.debug }",
    "allow if not input.request[\"he\\u0061ders\"][\"x-block\"]",
    "allow if not input[\"request\"][`query`][\"debug\"]",
    "allow if net.cidr_contains(\"10.0.0.0/8\", input.source.address)",
    "allow if { r := input.request; not r.headers[\"x-block\"] }",
    "allow if { some k; input.request[k][\"x-api-key\"] == \"k\" }",
    "allow if object.get(input.request, \"query\", {}).page == \"2\"",
    "allow if input.request.method == \"GET\"",
    "allow if count(input.request.headers) < 2",
    "allow if count(input.request.query) == 0",
    "allow if not input.request.truncated",
    "allow if { x := input; not x.request.headers[\"x-block\"] }",
    "allow if { not input.source.address == \"192.168.1.1\" }",
    "allow if { some p, v; walk(input, [p, v]); v == \"k\" }",
];

fn modules(body: &str) -> BTreeMap<String, String> {
    BTreeMap::from([(
        "p.rego".to_owned(),
        format!("package api.authz\nimport rego.v1\ndefault allow := false\n{body}\n"),
    )])
}

/// Request headers, a query (with its `?`) and a source address.
type Request = (Vec<(String, Vec<u8>)>, String, Option<&'static str>);

fn requests() -> Vec<Request> {
    let headers: Vec<Vec<(&str, &[u8])>> = vec![
        vec![],
        vec![("x-debug", b"1")],
        vec![("x-debug", b"1\xff")],
        vec![("x-block", b"y")],
        vec![("x-api-key", b"k"), ("x-block", b"")],
    ];
    let mut out = Vec::new();
    for h in &headers {
        for q in ["", "?debug=1", "?debug=1%zz", "?debug=%ff", "?page=2"] {
            for source in [Some("10.0.0.5"), Some("192.168.1.1"), None] {
                let mut list: Vec<(String, Vec<u8>)> = vec![(":method".into(), b"GET".to_vec())];
                list.extend(h.iter().map(|(n, v)| ((*n).to_owned(), v.to_vec())));
                out.push((list, q.to_owned(), source));
            }
        }
    }
    out
}

#[test]
fn pruning_never_changes_a_decision() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/policies/tests");
    let mut cases: Vec<Value> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap())
        .collect();
    cases.sort_by_key(|c| c["description"].to_string());
    let mut policies = vec![BTreeMap::from([(
        BUILTIN_NAME.to_owned(),
        BUILTIN_PACK.to_owned(),
    )])];
    policies.extend(CUSTOM.iter().map(|b| modules(b)));
    let templates = vec![Template::parse(
        "/api/v1/tenants/{tenant_id}/documents/{doc_id}",
    )];
    let requests = requests();
    let mut compared = 0;
    for policy in &policies {
        let program =
            PolicyProgram::compile(policy, &json!({}), "data.api.authz", Duration::from_secs(1))
                .unwrap();
        let pruned = InputBuilder::new(templates.clone(), program.reads);
        let full = InputBuilder::new(templates.clone(), InputReads::ALL);
        let mut vm = program.vm();
        for case in &cases {
            let path = case["input"]["request"]["path"].as_str().unwrap();
            let method = case["input"]["request"]["method"].as_str().unwrap();
            let claims = case["input"]
                .get("token")
                .and_then(Value::as_object)
                .map(|m| Claims::new(m.clone()));
            let identity = claims.as_ref().map(|c| ("primary", c));
            for (headers, query, source) in &requests {
                let raw = format!("{path}{query}");
                let p = crate::path::normalize(raw.as_bytes()).unwrap();
                let h = Headers::new(headers);
                let request = PolicyRequest {
                    headers: &h,
                    method,
                    path: &p,
                    source: *source,
                    operation: None,
                };
                let a = vm.evaluate_value(pruned.build(&request, identity));
                let b = vm.evaluate_value(full.build(&request, identity));
                assert_eq!(a, b, "{policy:?} on {method} {raw} {headers:?} {source:?}");
                compared += 1;
            }
        }
    }
    assert!(compared > 10_000, "{compared}");
}
