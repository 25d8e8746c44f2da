//! The filter loads, passes traffic through, refuses bad configurations, and the shipped Envoy
//! YAML files are valid.

use apiguard_e2e::{envoy, repo_root, Echo, Envoy, EnvoySpec, Limiter, Redis};

#[tokio::test(flavor = "multi_thread")]
async fn pass_through_reaches_the_upstream_unchanged() {
    let echo = Echo::start().await.unwrap();
    let envoy = Envoy::start(&EnvoySpec::new(echo.addr).with_filter("{}"))
        .await
        .unwrap();
    let res = apiguard_e2e::client()
        .post(envoy.url("/api/v1/things?x=1"))
        .header("x-test", "hello")
        .body("payload")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let seen = echo.requests();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].method, "POST");
    assert_eq!(seen[0].uri, "/api/v1/things?x=1");
    assert_eq!(seen[0].header("x-test"), Some("hello"));
    assert_eq!(seen[0].body_len, 7);
    // The module really is loaded: Envoy created a Wasm VM and the plugin said so.
    assert!(
        envoy.proc.log().contains("apiguard: configuration loaded"),
        "{}",
        envoy.proc.log()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_field_is_refused_and_named_in_envoys_log() {
    let echo = Echo::start().await.unwrap();
    let spec = EnvoySpec::new(echo.addr).with_filter(
        r#"{"jwt":{"providers":{"primary":{"issuer":"i","jwks":{"inline":{"keys":[]}},"audience":["a"]}}}}"#,
    );
    let (status, log) = Envoy::start_expecting_exit(&spec).unwrap();
    assert!(
        log.contains("apiguard: invalid configuration: jwt.providers.primary.audience: unknown field `audience`"),
        "Envoy exited ({status}) without naming the field:\n{log}"
    );
    assert!(echo.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_value_is_refused_and_named_in_envoys_log() {
    let echo = Echo::start().await.unwrap();
    let spec = EnvoySpec::new(echo.addr)
        .with_filter(r#"{"rate_limit":{"cluster":"limiter","timeout_ms":0}}"#);
    let (status, log) = Envoy::start_expecting_exit(&spec).unwrap();
    assert!(
        log.contains("rate_limit.timeout_ms: must be greater than zero"),
        "Envoy exited ({status}) without naming the field:\n{log}"
    );
}

#[test]
fn every_envoy_yaml_validates() {
    let dir = repo_root().join("envoy");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 3,
        "expected minimal, demo and hardened in {dir:?}: {files:?}"
    );
    for f in files {
        let (ok, out) = envoy::validate(&f).unwrap();
        assert!(ok, "envoy --mode validate {} failed:\n{out}", f.display());
    }
}

/// The harness can bring up the limiter against a real Redis (the stages that use them build on
/// this).
#[tokio::test(flavor = "multi_thread")]
async fn harness_starts_redis_and_the_limiter() {
    let redis = Redis::start().unwrap();
    let limiter = Limiter::start(&[]).await.unwrap();
    let res = apiguard_e2e::client()
        .get(format!("http://{}/healthz", limiter.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(redis.url().starts_with("redis://127.0.0.1:"));
}

/// `envoy/hardened.yaml` serves with its real apiguard configuration (its clusters pointed at
/// stand-ins), Envoy refuses underscore headers, and the access log shows the decision the
/// filter writes (`wasm.apiguard.decision`).
#[tokio::test(flavor = "multi_thread")]
async fn hardened_yaml_serves_and_logs_the_decision() {
    use apiguard_e2e::demo::{Ports, Stack};
    use serde_json::json;
    let stack = Stack::start_with("envoy/hardened.yaml", Ports::FREE)
        .await
        .unwrap();
    let n = apiguard_e2e::keys::now();
    let token = |tenant: &str| {
        stack.front.token_with(
            &json!({"iss": "https://issuer.example.com/", "aud": "https://api.example.com",
                                 "sub": "alice", "tenant_id": tenant, "roles": ["editor"],
                                 "iat": n, "exp": n + 600}),
        )
    };
    let get = |path: &str, token: String, extra: Option<(&'static str, &'static str)>| {
        let mut req = apiguard_e2e::client()
            .get(stack.front.url(path))
            .header("authorization", format!("Bearer {token}"));
        if let Some((k, v)) = extra {
            req = req.header(k, v);
        }
        async move { req.send().await.unwrap().status().as_u16() }
    };
    let own = "/api/v1/tenants/acme/documents/7";
    assert_eq!(get(own, token("acme"), None).await, 200);
    assert_eq!(get(own, token("globex"), None).await, 403);
    assert_eq!(
        get(own, token("acme"), Some(("x_user_id", "admin"))).await,
        400
    );
    assert_eq!(
        get("/api/v1/admin;x/settings", token("acme"), None).await,
        400
    );
    let mut log = String::new();
    for _ in 0..50 {
        log = stack.envoy.proc.log();
        // Envoy writes each request's access-log line after its answer: wait for the last one.
        if log.contains("tenant_mismatch")
            && log.contains(r#"\"decision\":\"allow\""#)
            && log.contains("apiguard_bad_path")
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        log.contains(r#""apiguard":"{\"decision\":\"deny\""#) && log.contains("tenant_mismatch"),
        "the access log does not show the decision:\n{log}"
    );
    assert!(log.contains(r#"\"decision\":\"allow\""#), "{log}");
    // Local replies name themselves in Envoy's response code details.
    for details in ["apiguard_policy_denied", "apiguard_bad_path"] {
        assert!(
            log.contains(&format!(r#""response_code_details":"{details}""#)),
            "{details} missing from the access log:\n{log}"
        );
    }
}
