// These tests also run inside a Wasm VM (`just test-wasm`): the attribute below swaps `#[test]`
// for wasm-bindgen-test's on `wasm32-unknown-unknown`.
#[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
use wasm_bindgen_test::wasm_bindgen_test as test;

use super::*;
use crate::jose::Algorithm;

/// The complete example of docs/configuration.md, kept as a file so the CLI and the end-to-end
/// tests load the same bytes.
const FULL: &str = include_str!("../../tests/fixtures/full-config.json");

/// The error the whole configuration pass (parse, validate, compile) gives `json`.
fn err(json: &str) -> ConfigError {
    match crate::flow::Pipeline::from_json(json.as_bytes()) {
        Ok(v) => panic!("accepted {json}: {v:?}"),
        Err(e) => e,
    }
}

/// Whether the whole configuration pass accepts `json`.
fn accepted(json: &str) -> bool {
    crate::flow::Pipeline::from_json(json.as_bytes()).is_ok()
}

fn err_path(json: &str) -> String {
    match err(json) {
        ConfigError::Parse { path, .. } | ConfigError::Invalid { path, .. } => path,
        other => panic!("no path in {other:?}"),
    }
}

/// A minimal provider, with `extra` spliced into its object.
fn provider(extra: &str) -> String {
    format!(
        r#"{{"jwt":{{"providers":{{"p":{{"issuer":"i","audiences":["a"],"jwks":{{"remote":{{"cluster":"c","path":"/j"}}}}{extra}}}}}}}}}"#
    )
}

#[test]
fn full_example_parses_with_its_values() {
    let v = Config::from_json(FULL.as_bytes()).unwrap();
    assert!(v.warnings.is_empty());
    let jwt = v.config.jwt.unwrap();
    let p = &jwt.providers["primary"];
    assert_eq!(p.issuer, "https://auth.example.com/");
    assert_eq!(p.algorithms, Some(vec![Algorithm::RS256, Algorithm::ES256]));
    assert_eq!(jwt.rules.unwrap().len(), 2);
    let rl = v.config.rate_limit.unwrap();
    assert_eq!(
        rl.identity,
        vec![
            IdentitySource::Claim("sub".into()),
            IdentitySource::Header("x-api-key".into()),
            IdentitySource::SourceIp
        ]
    );
    assert_eq!(rl.tiers["unlimited"], vec![]);
    assert_eq!(rl.failure_mode, FailureMode::Deny);
}

#[test]
fn empty_object_is_pass_through() {
    let v = Config::from_json(b" {} ").unwrap();
    assert_eq!(v.config, Config::default());
}

#[test]
fn defaults_are_the_documented_ones() {
    let json = br#"{"jwt":{"providers":{"p":{"issuer":"i","jwks":{"remote":{"cluster":"idp","path":"/jwks"}}}}},
             "rate_limit":{"cluster":"limiter"}}"#;
    let v = Config::from_json(json).unwrap();
    // The warning comes from the section's one pass, where it is checked.
    let (_, warnings) = crate::flow::Pipeline::from_json(json).unwrap();
    assert_eq!(
        warnings,
        vec![ConfigWarning::NoAudiences {
            provider: "p".into()
        }]
    );
    let p = &v.config.jwt.unwrap().providers["p"];
    assert_eq!(p.clock_skew_s, 30);
    assert!(p.forward_token);
    let JwksConfig::Remote(r) = &p.jwks else {
        panic!("not remote")
    };
    assert_eq!(
        (r.timeout_ms, r.refresh_s, r.min_refetch_s, r.max_stale_s),
        (1000, 600, 30, 86_400)
    );
    let rl = v.config.rate_limit.unwrap();
    assert_eq!(rl.timeout_ms, 50);
    assert_eq!(rl.failure_mode, FailureMode::Deny);
    assert_eq!(
        rl.identity,
        vec![
            IdentitySource::Claim("sub".into()),
            IdentitySource::SourceIp
        ]
    );
}

#[test]
fn unknown_fields_are_refused_with_their_path() {
    assert_eq!(err_path(r#"{"jwtt":{}}"#), "jwtt");
    assert_eq!(
        err_path(&provider(r#","audience":["x"]"#)),
        "jwt.providers.p.audience"
    );
    assert_eq!(
        err_path(
            r#"{"jwt":{"providers":{"p":{"issuer":"i","jwks":{"remote":{"cluster":"c","path":"/j","refresh":1}}}}}}"#
        ),
        "jwt.providers.p.jwks.remote.refresh"
    );
    assert_eq!(
        err_path(
            r#"{"rate_limit":{"cluster":"l","routes":[{"name":"a","prefix":"/","limits":[{"requests":1,"window_s":1,"burst":2}]}]}}"#
        ),
        "rate_limit.routes[0].limits[0].burst"
    );
    let msg = err(r#"{"policy":{"entry":"data.x"}}"#).to_string();
    assert!(
        msg.starts_with("policy.entry: unknown field `entry`"),
        "{msg}"
    );
}

#[test]
fn alg_none_cannot_be_configured() {
    assert_eq!(
        err_path(&provider(r#","algorithms":["none"]"#)),
        "jwt.providers.p.algorithms[0]"
    );
    assert_eq!(
        err_path(&provider(r#","algorithms":[]"#)),
        "jwt.providers.p.algorithms"
    );
}

#[test]
fn malformed_input_is_refused() {
    assert_eq!(err(""), ConfigError::Empty);
    assert_eq!(err("  \n"), ConfigError::Empty);
    assert!(matches!(err("{} {}"), ConfigError::Parse { .. }));
    assert!(matches!(err("{"), ConfigError::Parse { .. }));
    assert_eq!(err_path("[]"), "(root)");
    // serde would read these arrays as the structs' fields in order.
    assert_eq!(err_path(r#"{"rate_limit":["limiter"]}"#), "rate_limit");
    assert_eq!(
        err_path(r#"{"rate_limit":{"cluster":"l","routes":[["a","/",[]]]}}"#),
        "rate_limit.routes[0]"
    );
    assert_eq!(
        err_path(r#"{"rate_limit":{"cluster":"l","tiers":{"s":[[1,1]]}}}"#),
        "rate_limit.tiers.s[0]"
    );
    assert_eq!(
        err_path(r#"{"jwt":{"providers":{"p":["i",null,null,{"inline":{"keys":[]}}]}}}"#),
        "jwt.providers.p"
    );
    // Free-form places keep their arrays.
    Config::from_json(br#"{"policy":{"data":{"roles":[["a"]]}}}"#).unwrap();
    Config::from_json(
        br#"{"jwt":{"providers":{"p":{"issuer":"i","audiences":["a"],"jwks":{"inline":{"keys":[{"x5c":["a"]}]}}}}}}"#,
    )
    .unwrap();
    let big = format!(
        "{{\"policy\":{{\"data\":{{\"x\":\"{}\"}}}}}}",
        "a".repeat(MAX_CONFIG_BYTES)
    );
    assert!(matches!(err(&big), ConfigError::TooLarge { .. }));
}

/// Configuration mistakes as data (`src/config/cases.json`, every section), one runner: each case is refused by
/// the whole configuration pass at the field it names (`path`), with a message that says
/// `says` when given. A case gives a whole `config`, or a `provider` spliced into a minimal one.
#[test]
fn every_config_case_is_refused_at_its_field() {
    let cases: Vec<serde_json::Value> = serde_json::from_str(include_str!("cases.json")).unwrap();
    assert!(cases.len() >= 32);
    for c in &cases {
        let name = c["case"].as_str().unwrap();
        let json = match (&c["config"], c["provider"].as_object()) {
            (serde_json::Value::Null, Some(extra)) => {
                let extra = serde_json::to_string(extra).unwrap();
                provider(&format!(",{}", &extra[1..extra.len() - 1]))
            }
            (config, _) => config.to_string(),
        };
        let e = err(&json);
        let path = match &e {
            ConfigError::Parse { path, .. } | ConfigError::Invalid { path, .. } => path.as_str(),
            other => panic!("{name}: no path in {other:?}"),
        };
        assert_eq!(path, c["path"].as_str().unwrap(), "{name}: {e}");
        if let Some(says) = c["says"].as_str() {
            assert!(e.to_string().contains(says), "{name}: {e}");
        }
    }
}

#[test]
fn rate_limit_values_are_checked() {
    // Tier and route names go into the quoted item names of `RateLimit-Policy`: a quote, a
    // space or a control character would break the header, so they are refused here.
    let long = "x".repeat(65);
    for bad in ["a\"b", "a b", "a\u{1}b", "", long.as_str()] {
        let tier = serde_json::json!({"rate_limit": {"cluster": "l", "tiers": {bad: []}}});
        assert_eq!(
            err(&tier.to_string()),
            ConfigError::Invalid {
                path: format!("rate_limit.tiers.{bad}"),
                problem: Problem::BadName(bad.to_owned()),
            },
            "tier {bad:?}"
        );
        let route = serde_json::json!({"rate_limit": {"cluster": "l",
            "routes": [{"name": bad, "prefix": "/a", "limits": []}]}});
        assert_eq!(
            err_path(&route.to_string()),
            "rate_limit.routes[0].name",
            "route {bad:?}"
        );
    }
    // Batching is the filter's own call's: with ext_authz it would be ignored, so it is refused.
    assert!(accepted(r#"{"rate_limit":{"cluster":"l","batch":true}}"#));
    // Who calls: the filter needs a cluster; ext_authz names its own, so one here is refused.
    assert!(accepted(r#"{"rate_limit":{"call":"ext_authz"}}"#));
}

/// Numbers the host reads as narrower types, and names that go into keys, are bounded.
#[test]
fn bounds_and_names() {
    let rl = |extra: &str| format!(r#"{{"rate_limit":{{"cluster":"l"{extra}}}}}"#);
    assert_eq!(
        err_path(&rl(r#","timeout_ms":4294967296"#)),
        "rate_limit.timeout_ms"
    );
    assert_eq!(
        err_path(&rl(r#","timeout_ms":60001"#)),
        "rate_limit.timeout_ms"
    );
    assert!(accepted(&rl(r#","timeout_ms":60000"#)));
    let remote = |field: &str| {
        format!(
            r#"{{"jwt":{{"providers":{{"p":{{"issuer":"i","audiences":["a"],"jwks":{{"remote":{{"cluster":"c","path":"/j",{field}}}}}}}}}}}}}"#
        )
    };
    for (field, at) in [
        (r#""timeout_ms":4294967296"#, "timeout_ms"),
        (r#""refresh_s":100000000"#, "refresh_s"),
        (r#""min_refetch_s":100000000"#, "min_refetch_s"),
        (r#""max_stale_s":100000000"#, "max_stale_s"),
    ] {
        assert_eq!(
            err_path(&remote(field)),
            format!("jwt.providers.p.jwks.remote.{at}")
        );
    }
    let named = |name: &str| {
        format!(
            r#"{{"jwt":{{"providers":{{"{name}":{{"issuer":"i","audiences":["a"],"jwks":{{"remote":{{"cluster":"c","path":"/j"}}}}}}}}}}}}"#
        )
    };
    assert_eq!(err_path(&named("a/b")), "jwt.providers.a/b");
    assert_eq!(err_path(&named("")), "jwt.providers.");
    assert!(accepted(&named("idp-1.example_x")));
}

#[test]
fn request_spellings_and_policy_headers() {
    let v = Config::from_json(br#"{}"#).unwrap();
    assert_eq!(v.warnings, vec![ConfigWarning::PassThrough]);
    assert_eq!(
        v.config.request.matrix_params,
        crate::path::MatrixParams::Reject
    );
    assert_eq!(
        v.config.request.method_override,
        crate::http::MethodOverride::Reject
    );
    let v =
        Config::from_json(br#"{"request":{"matrix_params":"strip","method_override":"honor"}}"#)
            .unwrap();
    assert_eq!(
        v.config.request.matrix_params,
        crate::path::MatrixParams::Strip
    );
    assert_eq!(
        err_path(r#"{"request":{"matrix":"strip"}}"#),
        "request.matrix"
    );
    assert_eq!(
        err_path(r#"{"request":{"method_override":"yes"}}"#),
        "request.method_override"
    );
    assert_eq!(
        err_path(r#"{"policy":{"headers":["X-Plan"]}}"#),
        "policy.headers[0]"
    );
    assert_eq!(
        err_path(r#"{"policy":{"headers":["authorization"]}}"#),
        "policy.headers[0]"
    );
    assert_eq!(
        err_path(r#"{"policy":{"headers":["x-a","x-a"]}}"#),
        "policy.headers[1]"
    );
    assert_eq!(
        err_path(r#"{"policy":{"headers":{"x-a":1}}}"#),
        "policy.headers"
    );
}
