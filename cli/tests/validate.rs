// Test code: helpers outside `#[test]` functions may panic too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

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

/// `apiguard --version` names the version and the git revision it was built from (the
/// limiter prints the same: `limiter service::the_version_and_revision_are_the_clis`).
#[test]
fn version_prints_the_version_and_the_git_revision() {
    let head = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map_or_else(
            || "unknown".to_owned(),
            |o| String::from_utf8_lossy(&o.stdout).trim().to_owned(),
        );
    assert_eq!(apiguard_buildinfo::REVISION, head);
    Command::cargo_bin("apiguard")
        .unwrap()
        .arg("--version")
        .assert()
        .success()
        .stdout(format!(
            "apiguard {} (revision {head})\n",
            env!("CARGO_PKG_VERSION")
        ));
}

/// The Istio `WasmPlugin` of docs/operations.md, as a user would save it.
fn istio_example() -> String {
    let doc = std::fs::read_to_string(format!(
        "{}/../docs/operations.md",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let start = doc
        .find("```yaml\napiVersion: extensions.istio.io/")
        .unwrap()
        + "```yaml\n".len();
    let end = start + doc[start..].find("```").unwrap();
    doc[start..end].to_owned()
}

#[test]
fn validate_reads_istio_wasmplugin_manifests() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("wasmplugin.yaml");
    // With another resource before it, as in a real manifest bundle.
    let manifest = format!(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: apiguard-demo\n---\n{}",
        istio_example()
    );
    std::fs::write(&file, &manifest).unwrap();
    let validate = || {
        Command::cargo_bin("apiguard")
            .unwrap()
            .args(["validate", file.to_str().unwrap()])
            .assert()
    };
    validate().success().stdout(predicates::str::contains(
        "document 1: WasmPlugin apiguard: spec.pluginConfig",
    ));
    // A mistake in pluginConfig is named like any other.
    let bad = manifest.replace("timeout_ms: 100\n", "timeout_ms: 0\n");
    std::fs::write(&file, bad).unwrap();
    validate().code(1).stderr(predicates::str::contains(
        "WasmPlugin apiguard: spec.pluginConfig: rate_limit.timeout_ms: must be greater than zero",
    ));
    // A file with neither says so.
    std::fs::write(&file, "apiVersion: v1\nkind: Namespace\n").unwrap();
    validate().code(1).stderr(predicates::str::contains(
        "no WasmPlugin with a pluginConfig",
    ));
}
