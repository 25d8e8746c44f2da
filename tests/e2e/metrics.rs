//! The filter's counters on Envoy's `/stats/prometheus` as labelled series, with the
//! `stats_tags` that `envoy/demo.yaml` ships (docs/operations.md, "Metrics").

use std::time::Duration;

use apiguard_core::jose::Algorithm;
use apiguard_e2e::fake_limiter::{FakeLimiter, Mode};
use apiguard_e2e::keys::{self, claims, token};
use apiguard_e2e::{repo_root, Echo, Envoy, EnvoySpec};
use serde_json::{json, Value};

/// `stats_config` of the demo's Envoy configuration, as operators copy it (the compose demo's
/// Envoy carries the same).
fn shipped_stats_config() -> Value {
    let read = |f: &str| -> Value {
        let text = std::fs::read_to_string(repo_root().join(f)).unwrap();
        serde_yaml_ng::from_str::<Value>(&text).unwrap()["stats_config"].clone()
    };
    let shipped = read("envoy/demo.yaml");
    assert_eq!(shipped, read("demo/envoy.yaml"));
    assert!(shipped["stats_tags"].is_array(), "{shipped}");
    shipped
}

#[tokio::test(flavor = "multi_thread")]
async fn counters_reach_prometheus_as_labelled_series() {
    let echo = Echo::start().await.unwrap();
    let limiter = FakeLimiter::start(Mode::ServerError).await.unwrap();
    let all = keys::all();
    let config = json!({
        "jwt": {"providers": {"p": {"issuer": "https://idp.test/", "audiences": ["api"],
                                    "jwks": {"inline": keys::jwks(&all)}}}},
        "policy": {"modules": {"p.rego": "package api.authz\nimport rego.v1\ndefault allow := false\nallow if input.request.method == \"GET\"\n"}},
        "rate_limit": {"cluster": "limiter", "timeout_ms": 500, "failure_mode": "allow",
                       "tiers": {"standard": [{"requests": 5, "window_s": 60}]}}
    });
    let spec = EnvoySpec::new(echo.addr)
        .with_cluster("limiter", limiter.addr)
        .with_filter(config.to_string())
        .with_stats_config(shipped_stats_config());
    let envoy = Envoy::start(&spec).await.unwrap();
    let (alg, kid, key) = &all[1];
    assert_eq!(*alg, Algorithm::ES256);
    let good = format!(
        "Bearer {}",
        token(*alg, kid, key, &claims(json!({"sub": "u1"})))
    );
    // Another first character of the signature: still base64url, no longer the signature.
    let dot = good.rfind('.').unwrap() + 1;
    let first = if &good[dot..dot + 1] == "A" { "B" } else { "A" };
    let forged = format!("{}{first}{}", &good[..dot], &good[dot + 1..]);
    let http = apiguard_e2e::client();
    let send = |method: reqwest::Method, auth: &str| {
        http.request(method, envoy.url("/things"))
            .header("authorization", auth)
            .send()
    };
    // Accepted, then allowed (a limiter failure let through); forged; denied by the policy.
    assert_eq!(
        send(reqwest::Method::GET, &good).await.unwrap().status(),
        200
    );
    assert_eq!(
        send(reqwest::Method::GET, &forged).await.unwrap().status(),
        401
    );
    assert_eq!(
        send(reqwest::Method::POST, &good).await.unwrap().status(),
        403
    );

    let url = format!("http://{}/stats/prometheus", envoy.admin);
    let want = [
        r#"apiguard_jwt{apiguard_outcome="accepted"} 2"#,
        r#"apiguard_jwt_rejected{apiguard_reason="signature"} 1"#,
        r#"apiguard_policy{apiguard_outcome="allowed"} 1"#,
        r#"apiguard_policy{apiguard_outcome="denied"} 1"#,
        r#"apiguard_ratelimit_failure{apiguard_reason="status"} 1"#,
        r#"apiguard_ratelimit{apiguard_outcome="failure_mode_pass"} 1"#,
    ];
    // Counters are handed to Envoy once a second.
    let mut text = String::new();
    for _ in 0..50 {
        text = http.get(&url).send().await.unwrap().text().await.unwrap();
        if want.iter().all(|w| text.lines().any(|l| l == *w)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Envoy exports the filter's stats (its `wasmcustom` namespace) without the `envoy_` prefix.
    let ours: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("apiguard_") || l.starts_with("# TYPE apiguard_"))
        .collect();
    for w in want {
        // Whole lines: `… 1` must not pass on `… 12`.
        assert!(
            text.lines().any(|l| l == w),
            "missing {w} in:\n{}",
            ours.join("\n")
        );
    }
    // Every apiguard counter is labelled: no name still carries an outcome; the latency
    // histogram keeps its own name.
    for line in &ours {
        if line.starts_with('#') || line.contains("callout_ms") {
            continue;
        }
        assert!(
            line.contains("{apiguard_outcome=") || line.contains("{apiguard_reason="),
            "unlabelled: {line}\nall:\n{}",
            ours.join("\n")
        );
    }
    // Each stat gets each tag once: Envoy warns when two patterns give one stat the same tag.
    assert!(
        !envoy.proc.log().contains("Skipping duplicate tag"),
        "{}",
        envoy.proc.log()
    );
    assert!(
        ours.iter()
            .any(|l| l.starts_with("apiguard_ratelimit_callout_ms_bucket")),
        "{}",
        ours.join("\n")
    );
}
