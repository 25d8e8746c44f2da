// Test code: helpers outside `#[test]` functions may panic too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use assert_cmd::Command;

fn write(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("apiguard-contract-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn import_prints_a_yaml_document_as_the_contract_section() {
    let spec = write(
        "items.yaml",
        "openapi: 3.0.3\ninfo: {title: items, version: '1'}\npaths:\n  /items/{id}:\n    get:\n      operationId: getItem\n      parameters:\n        - $ref: '#/components/parameters/id'\ncomponents:\n  parameters:\n    id: {name: id, in: path, required: true, schema: {type: integer}}\n",
    );
    let out = Command::cargo_bin("apiguard")
        .unwrap()
        .args([
            "contract",
            "import",
            spec.to_str().unwrap(),
            "--mode",
            "monitor",
        ])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let section: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(section["contract"]["mode"], "monitor");
    assert_eq!(
        section["contract"]["openapi"]["paths"]["/items/{id}"]["get"]["operationId"],
        "getItem"
    );
}

#[test]
fn import_refuses_what_the_filter_cannot_enforce_naming_the_node() {
    let spec = write(
        "files.json",
        r#"{"openapi": "3.1.0", "info": {}, "paths": {"/files/{name}.json": {"get": {}}}}"#,
    );
    Command::cargo_bin("apiguard")
        .unwrap()
        .args(["contract", "import", spec.to_str().unwrap()])
        .assert()
        .code(1)
        .stderr(predicates::str::contains(
            "contract.openapi#/paths/~1files~1{name}.json: cannot be enforced exactly",
        ));
}
