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
    eval_denies(config, &repo("tests/fixtures/policy-input.json"))
}

/// The same, with the input at `input`.
fn eval_denies(config: &str, input: &str) -> assert_cmd::assert::Assert {
    Command::cargo_bin("apiguard")
        .unwrap()
        .args(["policy", "eval", "--config", config, "--input", input])
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

/// `--input` is JSON or YAML with `--config` too, as with `-d`.
#[test]
fn policy_eval_reads_a_yaml_input() {
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo("tests/fixtures/policy-input.json")).unwrap(),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let yaml = dir.path().join("input.yaml");
    std::fs::write(&yaml, serde_yaml_ng::to_string(&json).unwrap()).unwrap();
    eval_denies(
        &repo("tests/fixtures/pack-config.json"),
        &yaml.display().to_string(),
    );
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

/// `opa eval`'s habits: modules and data with `-d` (files or folders), the input with `-i`, any
/// query; OPA's result document; `--fail` on an undefined result.
#[test]
fn policy_eval_takes_opa_style_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("conf");
    std::fs::create_dir_all(conf.join("tenants")).unwrap();
    std::fs::write(conf.join("tenants").join("data.yaml"), "blocked: [t9]\n").unwrap();
    let extra = dir.path().join("extra.rego");
    std::fs::write(
        &extra,
        "package extra\nimport rego.v1\nblocked if input.resource.tenant_id in data.tenants.blocked\n",
    )
    .unwrap();
    let eval = |args: &[&str]| {
        let mut all = vec!["policy", "eval"];
        all.extend(args);
        Command::cargo_bin("apiguard").unwrap().args(all).assert()
    };
    let pack = repo("policies/api_authz.rego");
    let input = repo("tests/fixtures/policy-input.json");
    // The pack as Rego on the fixture input (another tenant's document): denied, with reasons.
    let data = repo("policies/api_authz.data.json");
    let pack_eval = |query: &str| eval(&["-d", &pack, "-d", &data, "-i", &input, query]);
    pack_eval("data.api.authz.allow")
        .success()
        .stdout(contains(r#""value": false"#))
        .stdout(contains(r#""text": "data.api.authz.allow""#));
    pack_eval("data.api.authz.reasons")
        .success()
        .stdout(contains("tenant_mismatch"));
    // A folder of data files goes under its sub-folders' names, as OPA loads it.
    let conf_s = conf.to_str().unwrap();
    let extra_s = extra.to_str().unwrap();
    let blocked = dir.path().join("blocked.json");
    std::fs::write(&blocked, r#"{"resource": {"tenant_id": "t9"}}"#).unwrap();
    eval(&[
        "-d",
        conf_s,
        "-d",
        extra_s,
        "-i",
        blocked.to_str().unwrap(),
        "data.extra.blocked",
    ])
    .success()
    .stdout(contains(r#""value": true"#));
    // Undefined: `{}`, and exit 1 with --fail.
    let undefined = [
        "-d",
        conf_s,
        "-d",
        extra_s,
        "-i",
        &input,
        "data.extra.blocked",
    ];
    eval(&undefined).success().stdout("{}\n");
    eval(&[&["--fail"][..], &undefined[..]].concat()).code(1);
    // A query that does not parse, or a file of another kind, says so.
    eval(&["-d", extra_s, "data.extra.("]).code(1);
    eval(&["-d", &repo("README.md"), "data"]).code(2);
    eval(&["data.x"]).code(2);
}

/// `--format json` and `--format junit` for CI systems.
#[test]
fn policy_test_reports_as_json_and_junit() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["editor_reads_own_tenant", "tenant_mismatch"] {
        std::fs::copy(
            repo(&format!("policies/tests/{name}.json")),
            dir.path().join(format!("{name}.json")),
        )
        .unwrap();
    }
    std::fs::write(
        dir.path().join("wrong.json"),
        r#"{"description": "expects <the> wrong & thing\u0007", "input": {"request": {"method": "GET", "path": "/healthz"}}, "expected": {"allow": false}}"#,
    )
    .unwrap();
    let run = |format: &str| {
        Command::cargo_bin("apiguard")
            .unwrap()
            .args([
                "policy",
                "test",
                dir.path().to_str().unwrap(),
                "--format",
                format,
            ])
            .assert()
            .code(1)
    };
    let out = run("json").get_output().stdout.clone();
    let doc: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(doc["passed"], 2, "{doc}");
    assert_eq!(doc["failed"], 1);
    let wrong = doc["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "wrong")
        .unwrap();
    assert_eq!(wrong["passed"], false);
    assert!(wrong["failure"]
        .as_str()
        .unwrap()
        .contains("allow is true, expected false"));
    assert_eq!(doc["coverage"][0]["module"], "api_authz.rego");
    let xml = String::from_utf8(run("junit").get_output().stdout.clone()).unwrap();
    assert!(xml.starts_with("<?xml"), "{xml}");
    assert!(xml.contains(r#"tests="3" failures="1""#), "{xml}");
    assert!(xml.contains(r#"name="tenant_mismatch"/>"#), "{xml}");
    assert!(
        xml.contains("expects &lt;the&gt; wrong &amp; thing\u{fffd}"),
        "{xml}"
    );
    assert!(!xml.contains('\u{7}'), "a control character in XML: {xml}");
    assert!(
        xml.contains(r#"<failure message="allow is true, expected false">"#),
        "{xml}"
    );
}

/// A configuration of a Rego v0 policy (`policy.rego_version: v0`), written to a temporary file.
fn v0_config(dir: &tempfile::TempDir, version: &str) -> String {
    let module =
        std::fs::read_to_string(repo("policies/tests/rego_versions/authz_v0.rego")).unwrap();
    let config = serde_json::json!({"policy": {
        "modules": {"authz_v0.rego": module},
        "rego_version": version,
        "headers": ["x-tenant", "x-roles"],
    }});
    let path = dir.path().join("config.json");
    std::fs::write(&path, config.to_string()).unwrap();
    path.to_str().unwrap().to_owned()
}

/// `policy test --config` and `policy eval --config` read the modules as the configuration's
/// `policy.rego_version` says; as v1, the v0 module is refused with a hint at the setting.
#[test]
fn policy_test_and_eval_follow_the_configured_rego_version() {
    let dir = tempfile::tempdir().unwrap();
    let v0 = v0_config(&dir, "v0");
    Command::cargo_bin("apiguard")
        .unwrap()
        .args([
            "policy",
            "test",
            &repo("policies/tests/rego_versions/cases_authz"),
            "--config",
            &v0,
        ])
        .assert()
        .success()
        .stdout(contains("10 cases passed, 0 failed"));
    Command::cargo_bin("apiguard")
        .unwrap()
        .args(["policy", "eval", "--config", &v0, "--input"])
        .arg(repo("tests/fixtures/policy-input.json"))
        .assert()
        .success()
        .stdout(contains(r#""allow": false"#))
        .stdout(contains(
            "tenant_mismatch: token tenant t1, resource tenant t2",
        ));
    let other = tempfile::tempdir().unwrap();
    let v1 = v0_config(&other, "v1");
    Command::cargo_bin("apiguard")
        .unwrap()
        .args(["validate", &v1])
        .assert()
        .code(1)
        .stderr(contains("`if` keyword is required"))
        .stderr(contains("policy.rego_version: v0"));
    Command::cargo_bin("apiguard")
        .unwrap()
        .args(["validate", &v0])
        .assert()
        .success();
}

/// `policy eval -d … --v0-compatible` reads the modules as Rego v0, as `opa eval` does.
#[test]
fn policy_eval_reads_rego_v0_when_asked() {
    let module = repo("policies/tests/rego_versions/authz_v0.rego");
    let input = repo("tests/fixtures/policy-input.json");
    Command::cargo_bin("apiguard")
        .unwrap()
        .args([
            "policy",
            "eval",
            "-d",
            &module,
            "-i",
            &input,
            "data.api.authz.rate_limit_tier",
        ])
        .assert()
        .code(1)
        .stderr(contains("`if` keyword is required"));
    Command::cargo_bin("apiguard")
        .unwrap()
        .args([
            "policy",
            "eval",
            "--v0-compatible",
            "-d",
            &module,
            "-i",
            &input,
            "data.api.authz.rate_limit_tier",
        ])
        .assert()
        .success()
        .stdout(contains(r#""value": "standard""#));
}

/// A policy whose rules name an output in a form the filter cannot read is refused, the rule
/// named; a module written for OPA 0.x with `p[x] if` gets a warning naming each such rule.
#[test]
fn validate_names_unreadable_output_rules_and_warns_about_v0_era_partial_objects() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, module: &str| {
        let path = dir.path().join(name);
        let config = serde_json::json!({"policy": {"modules": {"p.rego": module}}});
        std::fs::write(&path, config.to_string()).unwrap();
        path.to_str().unwrap().to_owned()
    };
    let bad = write(
        "bad.json",
        "package api.authz\nallow := true\nheaders[k] if { k := \"x-a\" }\n",
    );
    Command::cargo_bin("apiguard")
        .unwrap()
        .args(["validate", &bad])
        .assert()
        .code(1)
        .stderr(contains("p.rego:3: rule `headers[k]` defines `headers`"));
    let keywords =
        std::fs::read_to_string(repo("policies/tests/rego_versions/authz_v0_keywords.rego"))
            .unwrap();
    let old = write("old.json", &keywords);
    Command::cargo_bin("apiguard")
        .unwrap()
        .args(["validate", &old])
        .assert()
        .success()
        .stderr(contains("warning: policy: p.rego:25: `admin_path[p]`"))
        .stderr(contains("`reasons[reason]` defines `reasons` as an object"));
}
