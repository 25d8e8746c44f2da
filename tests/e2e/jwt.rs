//! The JWT stage through real Envoy: every supported algorithm, forwarded claims that clients
//! cannot spoof, hostile requests refused without reaching the upstream (and without hurting
//! the VM), and remote JWKS through an Envoy cluster.

use crate::expect_stat;
use std::time::Duration;

use apiguard_core::jose::Algorithm;
use apiguard_e2e::keys::{self, claims, token};
use apiguard_e2e::{Echo, Envoy, EnvoySpec, JwksServer};
use apiguard_testkit::mint::{sign_raw, SigningKey};
use reqwest::header::{HeaderMap, HeaderValue};
use serde_json::{json, Value};

fn inline_config() -> Value {
    let provider = json!({
        "issuer": "https://idp.test/",
        "audiences": ["api"],
        "algorithms": ["RS256", "ES256", "ES384", "EdDSA"],
        "jwks": {"inline": keys::jwks(&keys::all())},
        "claims_to_headers": [{"claim": "sub", "header": "x-user-id"}, {"claim": "tenant_id", "header": "x-tenant-id"}]
    });
    json!({"jwt": {"providers": {"primary": provider},
                   "rules": [{"prefix": "/healthz", "requires": []}, {"prefix": "/", "requires": ["primary"]}]}})
}

async fn get(envoy: &Envoy, path: &str, headers: HeaderMap) -> (u16, HeaderMap, String) {
    let res = apiguard_e2e::client()
        .get(envoy.url(path))
        .headers(headers)
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    let h = res.headers().clone();
    (status, h, res.text().await.unwrap_or_default())
}

fn auth(value: &[u8]) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("authorization", HeaderValue::from_bytes(value).unwrap());
    h
}

fn bearer(t: &str) -> HeaderMap {
    auth(format!("Bearer {t}").as_bytes())
}

#[tokio::test(flavor = "multi_thread")]
async fn every_algorithm_passes_and_identity_headers_cannot_be_spoofed() {
    let echo = Echo::start().await.unwrap();
    let mut cfg = inline_config();
    cfg["jwt"]["publish_claims"] = json!(true);
    let envoy = Envoy::start(&EnvoySpec::new(echo.addr).with_filter(cfg.to_string()))
        .await
        .unwrap();
    for (alg, kid, key) in keys::all() {
        echo.clear();
        let t = token(
            alg,
            kid,
            &key,
            &claims(json!({"sub": format!("user-{kid}")})),
        );
        let mut h = bearer(&t);
        h.insert("x-user-id", HeaderValue::from_static("admin"));
        h.append("x-tenant-id", HeaderValue::from_static("other-tenant"));
        let (status, _, body) = get(&envoy, "/api/v1/docs", h).await;
        assert_eq!(status, 200, "{alg:?}: {body}");
        let seen = echo.requests();
        assert_eq!(seen.len(), 1);
        assert_eq!(
            seen[0].header_all("x-user-id"),
            vec![format!("user-{kid}").as_bytes()],
            "{alg:?}"
        );
        assert_eq!(
            seen[0].header_all("x-tenant-id"),
            vec![b"t1".as_slice()],
            "{alg:?}"
        );
        assert_eq!(
            seen[0].header("authorization"),
            Some(format!("Bearer {t}").as_str()),
            "token forwarded"
        );
    }
    // A public path: no token needed, and still no client-supplied identity upstream.
    echo.clear();
    let mut h = HeaderMap::new();
    h.insert("x-user-id", HeaderValue::from_static("admin"));
    assert_eq!(get(&envoy, "/healthz", h).await.0, 200);
    assert!(echo.requests()[0].header_all("x-user-id").is_empty());
    // With `publish_claims`, the verified claims are published for access logs.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let log = envoy.access_log();
    assert!(log.contains("provider=primary claims={"), "{log}");
    assert!(log.contains(r#""sub":"user-ed""#), "{log}");
    expect_stat(&envoy, "wasmcustom.apiguard.jwt.accepted", 4).await;
    // RS256, ES256 and ES384 went to Envoy's verify_signature (EdDSA stays in Wasm), and the
    // choice was logged at configure time.
    assert!(
        envoy
            .proc
            .log()
            .contains("signatures are verified by the host (verify_signature)"),
        "{}",
        envoy.proc.log()
    );
    expect_stat(&envoy, "wasmcustom.apiguard.jwt.host_signatures", 3).await;
    assert_eq!(
        envoy
            .stat("wasmcustom.apiguard.jwt.host_signature_failures")
            .await,
        Some(0)
    );
}

/// The same hostile requests with signatures verified by Envoy (`auto`) and in Wasm (`off`).
#[tokio::test(flavor = "multi_thread")]
async fn hostile_requests_get_401_never_reach_the_upstream_and_the_vm_survives() {
    hostile_requests("auto").await;
    hostile_requests("off").await;
}

async fn hostile_requests(host_signatures: &str) {
    let echo = Echo::start().await.unwrap();
    let mut cfg = inline_config();
    cfg["jwt"]["host_signatures"] = json!(host_signatures);
    let envoy = Envoy::start(&EnvoySpec::new(echo.addr).with_filter(cfg.to_string()))
        .await
        .unwrap();
    let all = keys::all();
    let (_, _, es) = &all[1];
    let (_, _, rs) = &all[0];
    let good = token(Algorithm::ES256, "es", es, &claims(json!({})));
    let c = claims(json!({})).to_string();
    let rsa_public = rs.public_jwk(Some("rs")).to_string();
    let parts: Vec<&str> = good.split('.').collect();
    let b64 = |s: &str| {
        use base64ct::{Base64UrlUnpadded, Encoding};
        Base64UrlUnpadded::encode_string(s.as_bytes())
    };
    let mut cases: Vec<(&str, HeaderMap)> = vec![
        ("missing", HeaderMap::new()),
        (
            "expired",
            bearer(&token(
                Algorithm::ES256,
                "es",
                es,
                &claims(json!({"exp": keys::now() - 120})),
            )),
        ),
        (
            "wrong iss",
            bearer(&token(
                Algorithm::ES256,
                "es",
                es,
                &claims(json!({"iss": "https://evil/"})),
            )),
        ),
        (
            "wrong aud",
            bearer(&token(
                Algorithm::ES256,
                "es",
                es,
                &claims(json!({"aud": "other"})),
            )),
        ),
        (
            "alg none",
            bearer(&format!("{}.{}.", b64(r#"{"alg":"none"}"#), b64(&c))),
        ),
        (
            "tampered",
            bearer(&format!(
                "{}.{}.{}",
                parts[0],
                b64(&claims(json!({"sub": "admin"})).to_string()),
                parts[2]
            )),
        ),
        (
            "key confusion",
            bearer(
                &sign_raw(
                    Algorithm::HS256,
                    &SigningKey::Hmac(rsa_public.into_bytes()),
                    br#"{"alg":"HS256","kid":"rs"}"#,
                    c.as_bytes(),
                )
                .unwrap(),
            ),
        ),
        ("non-UTF-8", auth(b"Bearer \xff\xfe\xfd")),
        ("JWE", bearer("eyJhbGciOiJSU0EtT0FFUCJ9.a.b.c.d")),
        ("garbage", bearer("not-a-token")),
    ];
    let mut two = bearer(&good);
    two.append(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {good}")).unwrap(),
    );
    cases.push(("two Authorization headers", two));
    let flat: Value = serde_json::from_str(
        &std::fs::read_to_string(
            apiguard_e2e::repo_root().join("tests/vectors/wycheproof/flat_jws_jwk_cases.json"),
        )
        .expect("tests/vectors/wycheproof/flat_jws_jwk_cases.json is missing"),
    )
    .unwrap();
    let vectors: Vec<String> = flat["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["token"].as_str().unwrap().to_owned())
        .collect();
    assert!(vectors.len() > 400);
    for (name, h) in cases {
        let (status, headers, body) = get(&envoy, "/api/v1/docs", h).await;
        assert_eq!(status, 401, "{name}: {body}");
        let www = headers.get("www-authenticate").unwrap().to_str().unwrap();
        assert!(
            www.starts_with(r#"Bearer realm="apiguard""#),
            "{name}: {www}"
        );
        assert_eq!(
            headers.get("content-type").unwrap(),
            "application/problem+json"
        );
    }
    // Every Wycheproof token is refused through the proxy (none is a claims set for our issuer).
    for t in &vectors {
        let (status, _, _) = get(&envoy, "/api/v1/docs", bearer(t)).await;
        assert_eq!(status, 401, "{t}");
    }
    assert!(
        echo.requests().is_empty(),
        "a refused request reached the upstream: {:?}",
        echo.requests()
    );
    // The VM is alive and well: a valid token still passes.
    assert_eq!(get(&envoy, "/api/v1/docs", bearer(&good)).await.0, 200);
    // Claims reach filter state only with `publish_claims`.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let log = envoy.access_log();
    assert!(log.contains(" 200 ") && !log.contains("claims={"), "{log}");
    let stats = envoy.stats_text("wasm").await;
    assert!(
        !stats
            .lines()
            .any(|l| (l.contains("fail") || l.contains("crash")) && !l.ends_with(": 0")),
        "{stats}"
    );
    expect_stat(&envoy, "wasmcustom.apiguard.jwt.rejected.malformed", 1).await;
    // "missing" also counts the vectors' empty tokens: Envoy trims `Bearer ` to `Bearer`.
    expect_stat(&envoy, "wasmcustom.apiguard.jwt.missing", 1).await;
    // The tampered and key-confusion cases reached a signature check on the chosen path.
    let host_calls = "wasmcustom.apiguard.jwt.host_signatures";
    if host_signatures == "off" {
        // The counters above were flushed, so this one would have been too.
        assert_eq!(envoy.stat(host_calls).await, Some(0), "{stats}");
        assert!(envoy.proc.log().contains("jwt.host_signatures: off"));
    } else {
        expect_stat(&envoy, host_calls, 2).await;
    }
}

fn remote_config(jwks: std::net::SocketAddr, extra: Value) -> (String, EnvoySpec) {
    let mut remote = json!({"cluster": "idp", "path": "/.well-known/jwks.json", "refresh_s": 600, "min_refetch_s": 1, "timeout_ms": 500});
    if let (Some(o), Some(e)) = (remote.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            o.insert(k.clone(), v.clone());
        }
    }
    let cfg = json!({"jwt": {"providers": {"idp": {
        "issuer": "https://idp.test/", "audiences": ["api"], "jwks": {"remote": remote},
        "claims_to_headers": [{"claim": "sub", "header": "x-user-id"}]
    }}}})
    .to_string();
    (cfg, EnvoySpec::new(jwks).with_cluster("idp", jwks))
}

#[tokio::test(flavor = "multi_thread")]
async fn remote_jwks_fetch_rotation_and_outage() {
    let all = keys::all();
    let first = vec![all[1].clone()];
    let mut server = JwksServer::start(&keys::jwks(&first).to_string())
        .await
        .unwrap();
    let echo = Echo::start().await.unwrap();
    let (cfg, spec) = remote_config(server.addr, json!({"refresh_s": 2}));
    let mut spec = spec.with_filter(cfg);
    spec.upstream = echo.addr;
    let envoy = Envoy::start(&spec.concurrency(2)).await.unwrap();
    let (_, _, es) = &all[1];
    let es_token = token(Algorithm::ES256, "es", es, &claims(json!({})));
    // Keys arrive at start-up (or with the first request, whichever is first).
    assert_eq!(get(&envoy, "/a", bearer(&es_token)).await.0, 200);
    assert!(server.fetches() >= 1);

    // Rotation: the server adds a key; a token with its kid triggers one refetch.
    server.set(200, &keys::jwks(&all).to_string());
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (_, _, ed) = &all[3];
    let ed_token = token(Algorithm::EdDSA, "ed", ed, &claims(json!({})));
    assert_eq!(
        get(&envoy, "/a", bearer(&ed_token)).await.0,
        200,
        "{}",
        envoy.proc.log()
    );

    // Unknown kids do not turn into a fetch storm: at most one refetch per min_refetch_s (1 s),
    // besides the periodic refresh (2 s here).
    let before = server.fetches();
    let started = std::time::Instant::now();
    let stranger = token(Algorithm::ES256, "nobody", es, &claims(json!({})));
    for _ in 0..30 {
        assert_eq!(get(&envoy, "/a", bearer(&stranger)).await.0, 401);
    }
    let fetched = server.fetches() - before;
    let allowed = 2 + (started.elapsed().as_secs_f64() * 1.5).ceil() as usize;
    assert!(
        fetched <= allowed.min(10),
        "{fetched} fetches for 30 unknown-kid requests in {:?}",
        started.elapsed()
    );

    // Outage after warm-up: refreshes fail, the last good keys keep working.
    server.stop();
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let fresh = token(
        Algorithm::EdDSA,
        "ed",
        ed,
        &claims(json!({"sub": "after-outage"})),
    );
    assert_eq!(get(&envoy, "/a", bearer(&fresh)).await.0, 200);
    expect_stat(&envoy, "wasmcustom.apiguard.jwks.fetch_failure", 1).await;
    expect_stat(&envoy, "wasmcustom.apiguard.jwks.fetch_success", 2).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn remote_jwks_down_from_the_start_is_401_never_200() {
    let echo = Echo::start().await.unwrap();
    let dead = std::net::SocketAddr::from(([127, 0, 0, 1], apiguard_e2e::free_port().unwrap()));
    let (cfg, spec) = remote_config(dead, json!({}));
    let mut spec = spec.with_filter(cfg);
    spec.upstream = echo.addr;
    let envoy = Envoy::start(&spec).await.unwrap();
    let all = keys::all();
    let (_, _, es) = &all[1];
    let t = token(Algorithm::ES256, "es", es, &claims(json!({})));
    for _ in 0..5 {
        assert_eq!(get(&envoy, "/a", bearer(&t)).await.0, 401);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(echo.requests().is_empty());
    expect_stat(
        &envoy,
        "wasmcustom.apiguard.jwt.rejected.keys_unavailable",
        1,
    )
    .await;
}

/// Issue 27 (7): with a query-parameter token source, the filter's log lines name the request
/// by its normalised path without the query, so no token (accepted or refused) reaches Envoy's
/// log.
#[tokio::test(flavor = "multi_thread")]
async fn a_query_token_never_reaches_the_log() {
    let echo = Echo::start().await.unwrap();
    let mut cfg = inline_config();
    cfg["jwt"]["providers"]["primary"]["sources"] = json!([{"query": "access_token"}]);
    cfg["policy"] = json!({
        "modules": {"deny.rego": "package api.authz\nimport rego.v1\ndefault allow := false\nreasons contains \"denied by test\"\n"},
        "expose_reasons": true
    });
    let envoy = Envoy::start(&EnvoySpec::new(echo.addr).with_filter(cfg.to_string()))
        .await
        .unwrap();
    let (alg, kid, key) = keys::all().swap_remove(1);
    let good = token(alg, kid, &key, &claims(json!({})));
    let expired = token(alg, kid, &key, &claims(json!({"exp": keys::now() - 120})));
    let (status, _, body) = get(
        &envoy,
        &format!("/api//v1/docs?access_token={good}"),
        HeaderMap::new(),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    let (status, _, body) = get(
        &envoy,
        &format!("/api/v1/./docs?a=1&access_token={expired}"),
        HeaderMap::new(),
    )
    .await;
    assert_eq!(status, 401, "{body}");
    let logged = |log: &str| {
        log.contains("policy denied /api/v1/docs [denied by test]")
            && log.contains("token refused (expired)")
    };
    for _ in 0..50 {
        if logged(&envoy.proc.log()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = envoy.proc.log();
    assert!(logged(&log), "the refusals were not logged:\n{log}");
    for (what, secret) in [("accepted", &good), ("refused", &expired)] {
        let signature = secret.rsplit('.').next().unwrap_or_default();
        assert!(
            !log.contains(signature),
            "the {what} token is in the log:\n{log}"
        );
    }
    assert_eq!(echo.count(), 0);
}
