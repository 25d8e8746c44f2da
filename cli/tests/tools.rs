//! `token mint`, `token inspect`, `simulate` and `validate` on Envoy YAML.

// Test code: helpers outside `#[test]` functions may panic too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use assert_cmd::Command;
use predicates::prelude::PredicateBooleanExt;
use predicates::str::contains;

fn repo(p: &str) -> String {
    format!("{}/../{p}", env!("CARGO_MANIFEST_DIR"))
}

fn apiguard() -> Command {
    Command::cargo_bin("apiguard").unwrap()
}

fn mint(claims: &str) -> String {
    let out = apiguard()
        .args([
            "token",
            "mint",
            "--key",
            &repo("tests/fixtures/keys/es256.json"),
            "--alg",
            "ES256",
            "--kid",
            "es",
            "--claims",
            claims,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn tmp(name: &str, body: &str) -> String {
    let dir = std::env::temp_dir().join(format!("apiguard-cli-tools-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, body).unwrap();
    p.display().to_string()
}

#[test]
fn minted_tokens_inspect_and_verify_only_with_a_key() {
    let t = mint(r#"{"sub":"u1","iss":"https://issuer.demo.local/"}"#);
    apiguard()
        .args(["token", "inspect", &t])
        .assert()
        .success()
        .stdout(contains(r#""sub": "u1""#))
        .stdout(contains("signature: NOT checked"));
    let jwks = tmp(
        "jwks.json",
        &std::fs::read_to_string(repo("tests/fixtures/simulate-config.json")).unwrap(),
    );
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(jwks).unwrap()).unwrap();
    let jwks = tmp(
        "keys.json",
        &cfg["jwt"]["providers"]["demo"]["jwks"]["inline"].to_string(),
    );
    apiguard()
        .args(["token", "inspect", &t, "--jwks", &jwks])
        .assert()
        .success()
        .stdout(contains("signature: valid"));
    let mut tampered = t.clone();
    tampered.pop();
    tampered.push(if t.ends_with('A') { 'B' } else { 'A' });
    apiguard()
        .args(["token", "inspect", &tampered, "--jwks", &jwks])
        .assert()
        .code(1)
        .stdout(contains("INVALID"));
    apiguard()
        .args([
            "token",
            "mint",
            "--key",
            &repo("tests/fixtures/keys/es256.json"),
            "--alg",
            "none",
        ])
        .assert()
        .code(2);
}

#[test]
fn simulate_shows_the_filters_decision() {
    let good = mint(
        r#"{"sub":"u1","iss":"https://issuer.demo.local/","aud":"apiguard-demo","tenant_id":"t1","roles":["editor"]}"#,
    );
    let req = |path: &str, token: &str| {
        tmp(
            &format!("req{}.json", path.len() + token.len()),
            &serde_json::json!({"method": "GET", "path": path, "headers": {"authorization": format!("Bearer {token}")}, "source": "10.0.0.5"}).to_string(),
        )
    };
    let cfg = repo("tests/fixtures/simulate-config.json");
    let simulate = |req: &str, output: &str| {
        apiguard()
            .args([
                "simulate",
                "--config",
                &cfg,
                "--request",
                req,
                "--output",
                output,
            ])
            .assert()
    };
    let allowed = req("/api/v1/tenants/t1/documents/7", &good);
    simulate(&allowed, "json")
        .success()
        .stdout(contains(r#""verdict": "rate-limit check""#))
        .stdout(contains(r#""key": "{demo/sub:u1}:tier:standard""#))
        .stdout(contains("set x-user-id: u1"))
        .stdout(contains(r#""apiguard.policy.allowed""#));
    // Text for people: no Rust debug output.
    simulate(&allowed, "text")
        .success()
        .stdout(contains(
            "verdict: passed upstream if apiguard-limiter allows it (cluster limiter), else 429",
        ))
        .stdout(contains("  key: {demo/sub:u1}:tier:standard"))
        .stdout(contains("identity: provider demo, sub u1"))
        .stdout(contains("policy: allow; tier standard"))
        .stdout(contains("counters: apiguard.jwt.accepted"))
        .stdout(predicates::str::contains("{ ").not())
        .stdout(predicates::str::contains("Some(").not());
    // A refusal exits 3, so a script can tell.
    let other_tenant = req("/api/v1/tenants/t2/documents/7", &good);
    simulate(&other_tenant, "json")
        .code(3)
        .stdout(contains(r#""verdict": "refuse""#))
        .stdout(contains(r#""status": 403"#))
        .stdout(contains("tenant_mismatch"));
    simulate(&other_tenant, "text")
        .code(3)
        .stdout(contains("verdict: refused, 403"))
        .stdout(contains("policy: deny (tenant_mismatch)"))
        .stdout(contains("apiguard.policy.denied"));
    simulate(&req("/api/v1/x", "garbage"), "json")
        .code(3)
        .stdout(contains(r#""status": 401"#));
}

#[test]
fn validate_reads_the_configuration_out_of_envoy_yaml() {
    apiguard()
        .args(["validate", &repo("envoy/demo.yaml")])
        .assert()
        .success()
        .stdout(contains("typed_config.config.configuration.value"));
    let bad = tmp(
        "bad.yaml",
        "static_resources:\n  listeners:\n  - filter_chains:\n    - filters:\n      - typed_config:\n          \"@type\": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm\n          config:\n            configuration:\n              value: '{\"jwt\": 1}'\n",
    );
    apiguard()
        .args(["validate", &bad])
        .assert()
        .code(1)
        .stderr(contains("jwt: invalid type"));
    // Legal, but almost certainly not what an operator meant to deploy.
    apiguard()
        .args(["validate", &tmp("pass.json", "{}")])
        .assert()
        .success()
        .stderr(contains("warning: no jwt, policy or rate_limit section"));
}

/// With `rate_limit.call: ext_authz` the chain must carry Envoy's ext_authz filter after the
/// apiguard filter, set up as the shipped `envoy/filters/limiter-ext-authz.yaml` is: without it no limit
/// is enforced, so `validate` refuses the file.
#[test]
fn validate_wants_ext_authz_after_a_filter_that_hands_over() {
    let shipped: serde_json::Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(repo("envoy/filters/limiter-ext-authz.yaml")).unwrap(),
    )
    .unwrap();
    let wasm = serde_json::json!({"name": "envoy.filters.http.wasm", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
        "config": {"configuration": {"value":
            r#"{"rate_limit": {"call": "ext_authz", "tiers": {"standard": [{"requests": 5, "window_s": 60}]}}}"#}}}});
    let router = serde_json::json!({"name": "envoy.filters.http.router"});
    let chain = |filters: Vec<serde_json::Value>| {
        serde_json::json!({"static_resources": {"listeners": [{"filter_chains": [{"filters": [
            {"typed_config": {"http_filters": filters}}]}]}]}})
        .to_string()
    };
    apiguard()
        .args([
            "validate",
            &tmp(
                "handoff-ok.yaml",
                &chain(vec![wasm.clone(), shipped.clone(), router.clone()]),
            ),
        ])
        .assert()
        .success();
    apiguard()
        .args([
            "validate",
            &tmp("handoff-none.yaml", &chain(vec![wasm.clone(), router.clone()])),
        ])
        .assert()
        .code(1)
        .stderr(contains("http_filters[0]: rate_limit.call is ext_authz, but the filter is not followed by Envoy's ext_authz filter"));
    let mut open = shipped.clone();
    open["typed_config"]["failure_mode_allow"] = serde_json::json!(true);
    apiguard()
        .args([
            "validate",
            &tmp(
                "handoff-open.yaml",
                &chain(vec![wasm.clone(), open, router.clone()]),
            ),
        ])
        .assert()
        .code(1)
        .stderr(contains("failure_mode_allow: true"));
    let mut no_header = shipped;
    no_header["typed_config"]["allowed_headers"] =
        serde_json::json!({"patterns": [{"exact": "x-user"}]});
    apiguard()
        .args([
            "validate",
            &tmp("handoff-header.yaml", &chain(vec![wasm, no_header, router])),
        ])
        .assert()
        .code(1)
        .stderr(contains("allowed_headers does not name x-apiguard-limit"));
}
