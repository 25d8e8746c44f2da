//! Host-verified and Wasm-verified signatures agree on every public vector, through a real
//! Envoy's `verify_signature` (BoringSSL).
//!
//! The probe module (`tests/probe`) runs `apiguard_core::jwt::host_signature::verify` (the filter's host path)
//! and `apiguard_core::jwt::alg::verify` (jwt-compact, the filter's Wasm path) on each case it is
//! sent. Cases: every token × key of the Wycheproof JWS/JWK cases, RFC 7515 Appendix A, RFC 7520
//! §4 and RFC 8037, and every test of the Wycheproof primitive files (RSA PKCS#1 v1.5 and PSS,
//! ECDSA P-256 and P-384 in P1363 form, Ed25519). Natively, `src/jwt/vectors.rs` checks the Wasm
//! verdicts against the files' expectations; here the host must agree with it everywhere, and
//! with the primitive files' own expectations.

use apiguard_core::jwt::token;
use apiguard_e2e::envoy::wasm_filter;
use apiguard_e2e::{Echo, Envoy, EnvoySpec};
use apiguard_testkit::vector_keys::{ec_jwk, public};
use serde_json::{json, Value};

fn vectors(path: &str) -> Value {
    let file = apiguard_e2e::repo_root().join("tests/vectors").join(path);
    let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    serde_json::from_str(&text).unwrap()
}

struct Case {
    name: String,
    body: Value,
    /// From the vector file where it states one for this exact (key, message, signature).
    expected: Option<bool>,
}

/// A compact JWS checked against one key: the probe sees what the filter's signature check sees.
fn token_case(name: String, compact: &str, jwk: &Value, expected: Option<bool>) -> Option<Case> {
    let parsed = token::parse(compact.as_bytes(), token::DEFAULT_MAX_TOKEN_BYTES).ok()?;
    Some(Case {
        name,
        body: json!({"alg": parsed.alg, "jwk": public(jwk), "msg": hex::encode(parsed.signing_input), "sig": hex::encode(&parsed.signature)}),
        expected,
    })
}

fn all_cases() -> Vec<Case> {
    let mut cases = Vec::new();
    for c in vectors("wycheproof/flat_jws_jwk_cases.json")["cases"]
        .as_array()
        .unwrap()
    {
        let keys = c["jwks"]["keys"].as_array().cloned().unwrap_or_default();
        for (i, k) in keys.iter().enumerate() {
            let name = format!("wycheproof {} key {i}", c["id"]);
            cases.extend(token_case(name, c["token"].as_str().unwrap(), k, None));
        }
    }
    let a = vectors("rfc7515-appendix-a.json");
    let list = a["vectors"].as_array().unwrap();
    let a3 = list.iter().find(|v| v["id"] == "RFC7515-A.3").unwrap()["jwk"].clone();
    for v in list {
        let key = if v["jwk"].is_object() {
            v["jwk"].clone()
        } else {
            a3.clone()
        };
        let name = v["id"].as_str().unwrap().to_owned();
        cases.extend(token_case(
            name,
            v["compact"].as_str().unwrap(),
            &key,
            Some(v["signature_valid"] == true),
        ));
    }
    for f in [
        "rfc7520-cookbook/jws/4_1.rsa_v15_signature.json",
        "rfc7520-cookbook/jws/4_2.rsa-pss_signature.json",
        "rfc7520-cookbook/jws/4_3.ecdsa_signature.json",
        "rfc7520-cookbook/jws/4_4.hmac-sha2_integrity_protection.json",
        "rfc7520-cookbook/curve25519/jws.json",
    ] {
        let v = vectors(f);
        let compact = v["output"]["compact"].as_str().unwrap();
        cases.extend(token_case(
            f.to_owned(),
            compact,
            &v["input"]["key"],
            Some(true),
        ));
    }
    for (file, alg, key_field) in [
        (
            "wycheproof/rsa_signature_2048_sha256_test.json",
            "RS256",
            "keyJwk",
        ),
        (
            "wycheproof/rsa_pss_2048_sha256_mgf1_32_test.json",
            "PS256",
            "publicKeyJwk",
        ),
        (
            "wycheproof/ecdsa_secp256r1_sha256_p1363_test.json",
            "ES256",
            "publicKeyJwk",
        ),
        (
            "wycheproof/ecdsa_secp384r1_sha384_p1363_test.json",
            "ES384",
            "publicKeyJwk",
        ),
        ("wycheproof/ed25519_test.json", "EdDSA", "publicKeyJwk"),
    ] {
        for g in vectors(file)["testGroups"].as_array().unwrap() {
            let jwk = if g[key_field].is_object() {
                public(&g[key_field])
            } else {
                ec_jwk(&g["publicKey"]).unwrap()
            };
            for t in g["tests"].as_array().unwrap() {
                let result = t["result"].as_str().unwrap();
                cases.push(Case {
                    name: format!("{file} tc{}", t["tcId"]),
                    body: json!({"alg": alg, "jwk": jwk, "msg": t["msg"], "sig": t["sig"]}),
                    expected: (result != "acceptable").then_some(result == "valid"),
                });
            }
        }
    }
    cases
}

#[tokio::test(flavor = "multi_thread")]
async fn host_and_wasm_signatures_agree_on_every_vector() {
    let probe = apiguard_e2e::probe_wasm_path().unwrap();
    let echo = Echo::start().await.unwrap();
    let spec = EnvoySpec::new(echo.addr).with_native_filter(wasm_filter(&probe, "{}"));
    let envoy = Envoy::start(&spec).await.unwrap();
    let cases = all_cases();
    let mut answers = Vec::new();
    for batch in cases.chunks(100) {
        let body: Vec<&Value> = batch.iter().map(|c| &c.body).collect();
        let res = apiguard_e2e::client()
            .post(envoy.url("/probe"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{}", envoy.proc.log());
        let got: Vec<Value> = res.json().await.unwrap();
        assert_eq!(got.len(), batch.len());
        answers.extend(got);
    }
    let (mut wrong, mut by_host, mut host_valid) = (Vec::new(), 0, 0);
    for (c, a) in cases.iter().zip(&answers) {
        let host = a["host"].as_str().unwrap();
        let wasm = a["wasm"].as_bool().unwrap();
        let host_says = match host {
            "valid" => Some(true),
            "invalid" => Some(false),
            "not_offered" | "bad_key" | "bad_alg" => None,
            other => {
                wrong.push(format!("{}: host call {other}", c.name));
                None
            }
        };
        if let Some(h) = host_says {
            by_host += 1;
            host_valid += usize::from(h);
            if h != wasm {
                wrong.push(format!("{}: host {h}, Wasm {wasm}", c.name));
            }
        }
        let verdict = host_says.unwrap_or(wasm);
        if let Some(e) = c.expected {
            let supported = host != "bad_alg" && host != "bad_key";
            if supported && verdict != e {
                wrong.push(format!("{}: {verdict}, the file says {e}", c.name));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {}:\n{}",
        wrong.len(),
        cases.len(),
        wrong.join("\n")
    );
    // Most cases are RS*/ES* and reached Envoy; a good share of them valid.
    assert!(cases.len() > 1400, "{} cases", cases.len());
    assert!(
        by_host > 900 && host_valid > 200,
        "{by_host} by the host, {host_valid} valid"
    );
    eprintln!(
        "{} cases, {by_host} verified by Envoy ({host_valid} valid), all agreeing",
        cases.len()
    );
}
