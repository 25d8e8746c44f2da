use assert_cmd::Command;

fn fixture(name: &str) -> String {
    format!("{}/../tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn validate_accepts_the_full_example() {
    Command::cargo_bin("apiguard")
        .unwrap()
        .args(["validate", &fixture("full-config.json")])
        .assert()
        .success()
        .stdout(predicates::str::contains("ok:"));
}

#[test]
fn validate_names_the_bad_field_and_exits_1() {
    let dir = std::env::temp_dir().join(format!("apiguard-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.json");
    std::fs::write(&bad, r#"{"rate_limit":{"cluster":"l","timeout_ms":0}}"#).unwrap();
    Command::cargo_bin("apiguard")
        .unwrap()
        .args(["validate", bad.to_str().unwrap()])
        .assert()
        .code(1)
        .stderr(predicates::str::contains(
            "rate_limit.timeout_ms: must be greater than zero",
        ));
}

#[test]
fn validate_missing_file_exits_2() {
    Command::cargo_bin("apiguard")
        .unwrap()
        .args(["validate", "/nonexistent/apiguard.json"])
        .assert()
        .code(2);
}

#[test]
fn version_prints_the_crate_version() {
    Command::cargo_bin("apiguard")
        .unwrap()
        .arg("--version")
        .assert()
        .success()
        .stdout(format!("apiguard {}\n", env!("CARGO_PKG_VERSION")));
}
