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
