//! Public test vectors, read from `tests/vectors/` at compile time so the same tests run
//! natively and inside a Wasm VM: Wycheproof JWS/JWK cases and signature primitives, RFC 7515
//! Appendix A, RFC 7520 §4 and RFC 8037. Expectations come from the files (with the errata the
//! vectors' README lists already applied in `flat_jws_jwk_cases.json`), never typed in by hand.

#[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
use wasm_bindgen_test::wasm_bindgen_test as test;

use serde_json::{json, Value};

use super::alg;
use super::host_signature::software::{BrokenHost, SoftwareHost};
use super::host_signature::{self, HostVerdict, SignatureHost};
use super::keys::{parse_key, KeySet};
use super::token::{self, Reject, TokenRules};
use crate::jose::AlgSet;
use crate::jose::Algorithm;
use apiguard_testkit::vector_keys::{ec_jwk, public};

macro_rules! vector {
    ($path:literal) => {
        include_str!(concat!("../../tests/vectors/", $path))
    };
}

fn load(text: &str) -> Value {
    serde_json::from_str(text).unwrap()
}

fn all_algs() -> AlgSet {
    AlgSet::of(&Algorithm::ALL)
}

/// Signature-level verdict of a token against a JWK Set (loaded the way a fetched set is),
/// verified in Wasm and through the host path (the software stand-in for Envoy's
/// `verify_signature`); the two must agree, and the host must be asked for RS*/ES*.
fn jws_valid(token: &str, jwks: &Value) -> bool {
    let Ok((keys, _)) = KeySet::from_document(jwks.to_string().as_bytes()) else {
        return false;
    };
    let host = SoftwareHost::default();
    let check = |h: Option<&dyn SignatureHost>| {
        token::parse(token.as_bytes(), token::DEFAULT_MAX_TOKEN_BYTES)
            .and_then(|p| token::verify_signature(&p, all_algs(), &keys, h))
            .is_ok()
    };
    let in_wasm = check(None);
    assert_eq!(
        check(Some(&host)),
        in_wasm,
        "host and Wasm disagree on {token}"
    );
    assert_eq!(
        check(Some(&BrokenHost)),
        in_wasm,
        "fallback disagrees on {token}"
    );
    if in_wasm && token_alg(token).is_some_and(|a| host_signature::hash_for(a).is_some()) {
        assert!(
            host.calls.get() > 0,
            "a valid {token} never reached the host"
        );
    }
    in_wasm
}

fn token_alg(token: &str) -> Option<Algorithm> {
    let p = token::parse(token.as_bytes(), token::DEFAULT_MAX_TOKEN_BYTES).ok()?;
    Algorithm::from_name(&p.alg)
}

#[test]
fn wycheproof_jws_and_jwk_cases() {
    let flat = load(vector!("wycheproof/flat_jws_jwk_cases.json"));
    let mut wrong = Vec::new();
    let (mut checked, mut valid) = (0, 0);
    for c in flat["cases"].as_array().unwrap() {
        let expected = c["expected"].as_str().unwrap();
        if expected != "valid" && expected != "invalid" {
            continue; // "skip" and "optional" per the vectors' README
        }
        let got = jws_valid(c["token"].as_str().unwrap(), &c["jwks"]);
        checked += 1;
        valid += usize::from(got);
        if got != (expected == "valid") {
            wrong.push(format!(
                "{} ({} {}): expected {expected}",
                c["id"], c["group"], c["comment"]
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {checked} wrong:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    assert!(
        checked > 400 && valid >= 40,
        "checked {checked}, valid {valid}"
    );
}

#[test]
fn rfc7515_appendix_a() {
    let doc = load(vector!("rfc7515-appendix-a.json"));
    let vectors = doc["vectors"].as_array().unwrap();
    let a3_key = vectors.iter().find(|v| v["id"] == "RFC7515-A.3").unwrap()["jwk"].clone();
    for v in vectors {
        let id = v["id"].as_str().unwrap();
        let key = if v["jwk"].is_object() {
            v["jwk"].clone()
        } else {
            a3_key.clone()
        };
        let jwks = json!({"keys": [public(&key)]});
        let token = v["compact"].as_str().unwrap();
        let alg_supported = Algorithm::from_name(v["alg"].as_str().unwrap()).is_some();
        let sig_valid = v["signature_valid"] == true && alg_supported;
        assert_eq!(jws_valid(token, &jwks), sig_valid, "{id}: signature");
        if v.get("jwt_claims_valid_now").is_some() && sig_valid {
            // A.1–A.3: {iss: joe, exp: 1300819380}: expired now, fine before its exp.
            let (keys, _) = KeySet::from_document(jwks.to_string().as_bytes()).unwrap();
            let rules = TokenRules {
                issuer: "joe".into(),
                audiences: None,
                algorithms: all_algs(),
                clock_skew_s: 30,
                max_lifetime_s: None,
                required_claims: vec![],
                typ: None,
                // These tokens name no subject.
                require_sub: false,
            };
            let parsed = token::parse(token.as_bytes(), 8192).unwrap();
            let claims = parsed.claims(8).unwrap();
            assert_eq!(
                token::verify(&parsed, &claims, &rules, &keys, None, 1_790_000_000),
                Err(Reject::Expired),
                "{id}: now"
            );
            let then = token::verify(&parsed, &claims, &rules, &keys, None, 1_300_819_000).unwrap();
            assert_eq!(then.exp, 1_300_819_380, "{id}");
            assert_eq!(then.claims["http://example.com/is_root"], true);
        }
    }
}

#[test]
fn rfc7520_section_4_and_rfc8037() {
    for (name, text) in [
        (
            "4.1 RS256",
            vector!("rfc7520-cookbook/jws/4_1.rsa_v15_signature.json"),
        ),
        (
            "4.2 PS384",
            vector!("rfc7520-cookbook/jws/4_2.rsa-pss_signature.json"),
        ),
        (
            "4.3 ES512",
            vector!("rfc7520-cookbook/jws/4_3.ecdsa_signature.json"),
        ),
        (
            "4.4 HS256",
            vector!("rfc7520-cookbook/jws/4_4.hmac-sha2_integrity_protection.json"),
        ),
        (
            "RFC 8037 EdDSA",
            vector!("rfc7520-cookbook/curve25519/jws.json"),
        ),
    ] {
        let v = load(text);
        let alg = v["input"]["alg"].as_str().unwrap();
        let jwks = json!({"keys": [public(&v["input"]["key"])]});
        let token = v["output"]["compact"].as_str().unwrap();
        // ES512 (P-521) is not an algorithm apiguard verifies: refused, never accepted.
        let supported = Algorithm::from_name(alg).is_some();
        assert_eq!(jws_valid(token, &jwks), supported, "{name}");
        // One flipped signature byte breaks it.
        let mut bad = token.to_owned();
        let last = bad.pop().unwrap();
        bad.push(if last == 'A' { 'B' } else { 'A' });
        assert!(!jws_valid(&bad, &jwks), "{name}: tampered");
    }
}

fn hex(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap()
}

/// Feeds a Wycheproof primitive file's (key, msg, sig) triples to the verifier the filter uses.
fn primitive(text: &str, alg: Algorithm, key_field: &str) -> usize {
    let doc = load(text);
    let mut wrong = Vec::new();
    let mut n = 0;
    for g in doc["testGroups"].as_array().unwrap() {
        let jwk = if g[key_field].is_object() {
            public(&g[key_field])
        } else {
            ec_jwk(&g["publicKey"]).unwrap()
        };
        let key = parse_key(&jwk);
        for t in g["tests"].as_array().unwrap() {
            let result = t["result"].as_str().unwrap();
            if result == "acceptable" {
                continue;
            }
            let (msg, sig) = (
                hex(t["msg"].as_str().unwrap()),
                hex(t["sig"].as_str().unwrap()),
            );
            let got = match &key {
                Ok(k) => {
                    let in_wasm = alg::verify(alg, &k.material, &msg, &sig);
                    let by_host =
                        host_signature::verify(&SoftwareHost::default(), alg, k, &msg, &sig);
                    let agrees = match by_host {
                        HostVerdict::Valid => in_wasm,
                        HostVerdict::Invalid => !in_wasm,
                        HostVerdict::NotOffered => host_signature::hash_for(alg).is_none(),
                        HostVerdict::Failed(_) => false,
                    };
                    assert!(agrees, "tc{}: host {by_host:?}, Wasm {in_wasm}", t["tcId"]);
                    in_wasm
                }
                Err(_) => false,
            };
            n += 1;
            if got != (result == "valid") {
                wrong.push(format!(
                    "tc{} {}: expected {result}",
                    t["tcId"], t["comment"]
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{alg:?}: {} wrong:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    n
}

#[test]
fn wycheproof_primitives() {
    assert!(
        primitive(
            vector!("wycheproof/ecdsa_secp256r1_sha256_p1363_test.json"),
            Algorithm::ES256,
            "publicKeyJwk"
        ) > 200
    );
    assert!(
        primitive(
            vector!("wycheproof/ecdsa_secp384r1_sha384_p1363_test.json"),
            Algorithm::ES384,
            "publicKeyJwk"
        ) > 200
    );
    assert!(
        primitive(
            vector!("wycheproof/ed25519_test.json"),
            Algorithm::EdDSA,
            "publicKeyJwk"
        ) > 100
    );
    assert!(
        primitive(
            vector!("wycheproof/rsa_signature_2048_sha256_test.json"),
            Algorithm::RS256,
            "keyJwk"
        ) > 200
    );
    assert!(
        primitive(
            vector!("wycheproof/rsa_pss_2048_sha256_mgf1_32_test.json"),
            Algorithm::PS256,
            "publicKeyJwk"
        ) > 100
    );
}

#[test]
fn wycheproof_hmac_sha256() {
    let doc = load(vector!("wycheproof/hmac_sha256_test.json"));
    let mut n = 0;
    for g in doc["testGroups"].as_array().unwrap() {
        if g["tagSize"] != 256 {
            continue;
        }
        for t in g["tests"].as_array().unwrap() {
            let key = super::keys::KeyMaterial::Hmac(hex(t["key"].as_str().unwrap()));
            let got = alg::verify(
                Algorithm::HS256,
                &key,
                &hex(t["msg"].as_str().unwrap()),
                &hex(t["tag"].as_str().unwrap()),
            );
            assert_eq!(got, t["result"] == "valid", "tc{}", t["tcId"]);
            n += 1;
        }
    }
    assert!(n > 20);
}

#[test]
fn the_host_self_test_accepts_a_correct_host_only() {
    assert_eq!(host_signature::self_test(&SoftwareHost::default()), Ok(()));
    assert!(matches!(
        host_signature::self_test(&BrokenHost),
        Err(host_signature::SelfTestError::Call(_))
    ));
    /// Says yes to everything: must be caught by the flipped-signature vectors.
    struct Yes;
    impl SignatureHost for Yes {
        fn call(&self, _: &[u8]) -> Result<Option<Vec<u8>>, host_signature::HostSignatureError> {
            Ok(Some(vec![0x08, 0x01])) // VerifySignatureResult { result: true }
        }
    }
    assert_eq!(
        host_signature::self_test(&Yes),
        Err(host_signature::SelfTestError::WrongVerdict("RS256"))
    );
    /// Answers garbage.
    struct Garbage;
    impl SignatureHost for Garbage {
        fn call(&self, _: &[u8]) -> Result<Option<Vec<u8>>, host_signature::HostSignatureError> {
            Ok(Some(vec![0xff, 0xff, 0xff]))
        }
    }
    assert_eq!(
        host_signature::read_answer(Err(host_signature::HostSignatureError::Missing)),
        Err(host_signature::HostSignatureError::Missing)
    );
    assert_eq!(
        host_signature::read_answer(Ok(None)),
        Err(host_signature::HostSignatureError::Empty)
    );
    assert_eq!(
        host_signature::self_test(&Garbage),
        Err(host_signature::SelfTestError::Call(
            host_signature::HostSignatureError::Undecodable
        ))
    );
}

/// A signature's last base64url character has unused low bits; a variant with them set decodes
/// to the same bytes in a lenient decoder. apiguard refuses it: one signature, one spelling.
#[test]
fn non_canonical_base64url_is_refused() {
    let doc = load(vector!("rfc7515-appendix-a.json"));
    let a2 = doc["vectors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["id"] == "RFC7515-A.2")
        .unwrap();
    let token = a2["compact"].as_str().unwrap();
    let jwks = json!({"keys": [public(&a2["jwk"])]});
    assert!(jws_valid(token, &jwks));
    // 2048-bit signature: 342 characters, the last carrying 2 data bits and 4 padding bits.
    const ALPHABET: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let last = token.chars().last().unwrap();
    let idx = ALPHABET.find(last).unwrap();
    assert_eq!(
        idx & 0b1111,
        0,
        "the canonical form has the padding bits clear"
    );
    let mut variant = token[..token.len() - 1].to_owned();
    variant.push(char::from(ALPHABET.as_bytes()[idx | 1]));
    assert!(
        token::parse(variant.as_bytes(), token::DEFAULT_MAX_TOKEN_BYTES).is_err(),
        "{variant}"
    );
}
