//! `apiguard policy test` and `apiguard policy eval` as a user runs them.
// Test code: a failed unwrap is a failed test (the workspace denies these outside tests).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use assert_cmd::Command;
use predicates::str::contains;

fn repo(p: &str) -> String {
    format!("{}/../{p}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn policy_test_runs_the_pack_cases_with_coverage() {
    Command::cargo_bin("apiguard")
        .unwrap()
        .args(["policy", "test", &repo("policies/tests")])
        .assert()
        .success()
        .stdout(contains(
            "ok   tenant_mismatch: Tenant A's token on tenant B's document (BOLA)",
        ))
        .stdout(contains("cases passed, 0 failed"))
        .stdout(contains("coverage api_authz.rego:"));
}

#[test]
fn policy_test_reports_a_failing_case_and_exits_1() {
    let dir = std::env::temp_dir().join(format!("apiguard-policy-cases-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("wrong.json"),
        r#"{"description": "expects the wrong thing", "input": {"request": {"method": "GET", "path": "/healthz"}}, "expected": {"allow": false}}"#,
    )
    .unwrap();
    Command::cargo_bin("apiguard")
        .unwrap()
        .args(["policy", "test", dir.to_str().unwrap()])
        .assert()
        .code(1)
        .stdout(contains("FAIL wrong: expects the wrong thing"))
        .stdout(contains("allow is true, expected false"));
}

/// `apiguard policy eval --config CONFIG` on the fixture input: tenant A's token on tenant B's
/// document, denied whichever engine runs the pack.
fn eval_denies_the_fixture(config: &str) -> assert_cmd::assert::Assert {
    Command::cargo_bin("apiguard")
        .unwrap()
        .args([
            "policy",
            "eval",
            "--config",
            config,
            "--input",
            &repo("tests/fixtures/policy-input.json"),
        ])
        .assert()
        .success()
        .stdout(contains(r#""allow": false"#))
        .stdout(contains(r#""tenant_mismatch""#))
}

#[test]
fn policy_eval_prints_the_decision() {
    eval_denies_the_fixture(&repo("tests/fixtures/pack-config.json"))
        .stdout(contains(r#""evaluator": "Native""#));
}

/// With `pack_engine: rego` the same decision comes from the pack's Rego on regorus's VM.
#[test]
fn policy_eval_runs_the_pack_as_rego_when_configured() {
    let dir = std::env::temp_dir().join(format!("apiguard-cli-rego-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut cfg: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo("tests/fixtures/pack-config.json")).unwrap(),
    )
    .unwrap();
    cfg["policy"]["pack_engine"] = serde_json::json!("rego");
    let path = dir.join("rego-config.json");
    std::fs::write(&path, cfg.to_string()).unwrap();
    eval_denies_the_fixture(path.to_str().unwrap()).stdout(contains(r#""evaluator": "Rvm""#));
    let _ = std::fs::remove_dir_all(&dir);
}
