//! Claim checks as data (`src/jwt/claim_cases.json`), one runner: each case compiles a
//! provider's rules through the configuration's one pass (`TokenRules::compile`), checks a
//! token's claims at a fixed time, and names the outcome (`ok`, or the `Reject`). A new claim
//! check is its setting, its rule and a case here.

#[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
use wasm_bindgen_test::wasm_bindgen_test as test;

use serde_json::{json, Map, Value};

use super::token::{check_claims, TokenRules};
use crate::config::ProviderConfig;

const NOW: i64 = 1_800_000_000;

/// `extra`'s members over `base`'s (a null member is kept: it tests a null value).
fn merged(base: Value, extra: &Value) -> Map<String, Value> {
    let mut out = base.as_object().cloned().unwrap_or_default();
    if let Some(extra) = extra.as_object() {
        out.extend(extra.clone());
    }
    out
}

#[test]
fn every_claim_case_has_its_outcome() {
    let cases: Vec<Value> = serde_json::from_str(include_str!("claim_cases.json")).unwrap();
    assert!(cases.len() >= 20);
    for c in &cases {
        let name = c["case"].as_str().unwrap();
        let provider = merged(
            json!({"issuer": "https://idp.example/", "audiences": ["api"],
                   "jwks": {"remote": {"cluster": "idp", "path": "/jwks"}}}),
            &c["rules"],
        );
        let provider: ProviderConfig = serde_json::from_value(Value::Object(provider)).unwrap();
        let rules = TokenRules::compile("jwt.providers.p", &provider).unwrap();
        let mut claims = merged(
            json!({"iss": "https://idp.example/", "aud": "api", "sub": "u1",
                   "exp": NOW + 600, "iat": NOW - 10}),
            &c["claims"],
        );
        for gone in c["drop"].as_array().into_iter().flatten() {
            claims.remove(gone.as_str().unwrap());
        }
        let got = match check_claims(&claims, &rules, NOW) {
            Ok(_) => "ok".to_owned(),
            Err(r) => format!("{r:?}"),
        };
        assert_eq!(got, c["want"].as_str().unwrap(), "{name}");
    }
}
