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
