//! The configuration's JSON Schema: generated from the types (`apiguard schema`), kept in
//! docs/apiguard-config.schema.json, and true to the project's own configurations.
// Test code: a failed unwrap is a failed test (the workspace denies these outside tests).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use assert_cmd::Command;
use serde_json::Value;

fn repo(p: &str) -> String {
    format!("{}/../{p}", env!("CARGO_MANIFEST_DIR"))
}

fn generated() -> String {
    let out = Command::cargo_bin("apiguard")
        .unwrap()
        .arg("schema")
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    String::from_utf8(out).unwrap()
}

/// The file in the repository is what the types say: change a configuration type, run
/// `apiguard schema > docs/apiguard-config.schema.json`.
#[test]
fn the_checked_in_schema_is_the_generated_one() {
    let kept = std::fs::read_to_string(repo("docs/apiguard-config.schema.json")).unwrap();
    assert!(
        kept == generated(),
        "docs/apiguard-config.schema.json is stale: run `cargo run -p apiguard-cli -- schema > docs/apiguard-config.schema.json`"
    );
}

/// Every configuration Wasm filter in a YAML file (Envoy's `configuration.value`, an Istio
/// `WasmPlugin`'s `spec.pluginConfig`).
fn configurations_in(yaml: &str, out: &mut Vec<Value>) {
    for doc in serde_yaml_ng::Deserializer::from_str(yaml) {
        let doc: Value = serde::Deserialize::deserialize(doc).unwrap();
        if doc["kind"] == "WasmPlugin" {
            out.push(doc["spec"]["pluginConfig"].clone());
        }
        walk(&doc, out);
    }
}

fn walk(v: &Value, out: &mut Vec<Value>) {
    match v {
        Value::Object(o) => {
            if let Some(text) = v["config"]["configuration"]["value"].as_str() {
                out.push(serde_json::from_str(text).unwrap());
            }
            o.values().for_each(|c| walk(c, out));
        }
        Value::Array(a) => a.iter().for_each(|c| walk(c, out)),
        _ => {}
    }
}

/// The project's configurations (fixtures, the shipped Envoy files, the Istio example) pass the
/// schema; a misspelt field does not.
#[test]
fn the_projects_configurations_pass_the_schema_and_typos_do_not() {
    let schema: Value = serde_json::from_str(&generated()).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let mut configs = Vec::new();
    for f in [
        "full-config.json",
        "pack-config.json",
        "simulate-config.json",
    ] {
        let text = std::fs::read_to_string(repo(&format!("tests/fixtures/{f}"))).unwrap();
        configs.push(serde_json::from_str::<Value>(&text).unwrap());
    }
    for f in [
        "envoy/demo.yaml",
        "envoy/hardened.yaml",
        "envoy/minimal.yaml",
        "demo/envoy.yaml",
    ] {
        configurations_in(&std::fs::read_to_string(repo(f)).unwrap(), &mut configs);
    }
    let ops = std::fs::read_to_string(repo("docs/operations.md")).unwrap();
    let start = ops
        .find("```yaml\napiVersion: extensions.istio.io/")
        .unwrap()
        + 8;
    let end = start + ops[start..].find("```").unwrap();
    configurations_in(&ops[start..end], &mut configs);
    assert!(configs.len() >= 8, "{}", configs.len());
    for c in &configs {
        let errors: Vec<String> = validator.iter_errors(c).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{errors:?}\n{c}");
    }
    // What the filter refuses for its shape, the schema refuses too.
    for bad in [
        r#"{"jwt": {"providers": {"p": {"issuer": "i", "audience": ["a"], "jwks": {"inline": {"keys": []}}}}}}"#,
        r#"{"policy": {"pack_engine": "fast"}}"#,
        r#"{"rate_limit": {"cluster": "l", "timeout_ms": "100"}}"#,
        r#"{"request": {"matrix_params": "allow"}}"#,
        r#"{"ratelimit": {}}"#,
    ] {
        let v: Value = serde_json::from_str(bad).unwrap();
        assert!(!validator.is_valid(&v), "the schema accepts {bad}");
    }
}
