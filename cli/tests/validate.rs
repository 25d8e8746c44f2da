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

/// `apiguard validate` on a YAML file holding `text`.
fn validate_yaml(text: &[u8]) -> (tempfile::TempDir, assert_cmd::assert::Assert) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("deep.yaml");
    std::fs::write(&file, text).unwrap();
    let assert = Command::cargo_bin("apiguard")
        .unwrap()
        .args(["validate", file.to_str().unwrap()])
        .timeout(std::time::Duration::from_secs(30))
        .assert();
    (dir, assert)
}

/// Issue 27, low 8: 40,000 nested flow sequences (80 KB) took 13.6 s before serde_yaml_ng's
/// recursion limit applied, 100,000 over a minute (libyaml is quadratic in depth). The nesting
/// is now measured first and refused at the first collection past 128 levels, by line and
/// column; the 30-second cap on the command is a bound far above the milliseconds it takes.
#[test]
fn validate_refuses_deep_yaml_before_parsing_it() {
    let n = 100_000;
    let deep = format!("a: {}{}\n", "[".repeat(n), "]".repeat(n));
    let (_dir, assert) = validate_yaml(deep.as_bytes());
    assert.code(1).stderr(predicates::str::contains(
        "collections nested deeper than 128 levels at line 1 column 131, the limit for YAML input",
    ));
    // Flow mappings and block nesting alike.
    let maps = format!("{}1{}\n", "{a: ".repeat(n), "}".repeat(n));
    validate_yaml(maps.as_bytes())
        .1
        .code(1)
        .stderr(predicates::str::contains("deeper than 128 levels"));
    let block: String = (0..=128)
        .map(|i| format!("{}k:\n", " ".repeat(i)))
        .collect();
    validate_yaml(block.as_bytes())
        .1
        .code(1)
        .stderr(predicates::str::contains(
            "deeper than 128 levels at line 129",
        ));
    let dashes = format!("{}x\n", "- ".repeat(n));
    validate_yaml(dashes.as_bytes())
        .1
        .code(1)
        .stderr(predicates::str::contains("deeper than 128 levels"));
}

/// Brackets that are text (quoted, plain and block scalars, comments), balanced or not, are no
/// nesting: a manifest carrying them validates.
#[test]
fn validate_counts_only_real_yaml_nesting() {
    let deep = "[".repeat(1000);
    let text = format!(
        "# {deep}\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: brackets\ndata:\n  a: '{deep}'\n  b: \"{deep}\"\n  c: x{deep}\n  d: |\n    {deep}\n  e: [\"]]]\", '{deep}']\n---\n{}",
        istio_example()
    );
    validate_yaml(text.as_bytes())
        .1
        .success()
        .stdout(predicates::str::contains(
            "document 1: WasmPlugin apiguard: spec.pluginConfig",
        ));
}

/// YAML input is capped at 4 MiB and a million events, before serde_yaml_ng parses it.
#[test]
fn validate_refuses_yaml_over_the_size_limit() {
    let mut big = b"a: ".to_vec();
    big.resize(4 * 1024 * 1024 + 1, b'x');
    validate_yaml(&big)
        .1
        .code(1)
        .stderr(predicates::str::contains(
            "larger than 4194304 bytes, the limit for YAML input",
        ));
    // A million events, well within 4 MiB: refused before serde_yaml_ng holds them all.
    let many = format!("a: [{}1]\n", "1,".repeat(1_000_000));
    validate_yaml(many.as_bytes())
        .1
        .code(1)
        .stderr(predicates::str::contains(
            "more than 1000000 YAML events (scalars, collections and their ends), the limit for YAML input",
        ));
    // At the limit, it is read and judged as YAML.
    big.truncate(4 * 1024 * 1024);
    validate_yaml(&big)
        .1
        .code(1)
        .stderr(predicates::str::contains("no Wasm HTTP filter"));
}
