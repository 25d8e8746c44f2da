//! The test signing keys (`tests/fixtures/keys/`) and token minting through the core's
//! `apiguard_testkit::mint`, the same code `apiguard token mint` uses.

use apiguard_core::jose::Algorithm;
use apiguard_testkit::mint::{mint, SigningKey};
use serde_json::{json, Value};

use crate::repo_root;

/// A fixture key by file name (e.g. `es256.json`).
pub fn signing_key(file: &str) -> SigningKey {
    let path = repo_root().join("tests/fixtures/keys").join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    let jwk: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    match SigningKey::from_jwk(&jwk) {
        Ok(k) => k,
        Err(e) => {
            SigningKey::Hmac(format!("unreadable fixture {}: {e}", path.display()).into_bytes())
        }
    }
}

/// The four asymmetric test keys with their kids and algorithms.
pub fn all() -> Vec<(Algorithm, &'static str, SigningKey)> {
    vec![
        (Algorithm::RS256, "rs", signing_key("rs256.json")),
        (Algorithm::ES256, "es", signing_key("es256.json")),
        (Algorithm::ES384, "es384", signing_key("es384.json")),
        (Algorithm::EdDSA, "ed", signing_key("ed25519.json")),
    ]
}

/// A JWK Set with the public halves of `keys`.
pub fn jwks(keys: &[(Algorithm, &str, SigningKey)]) -> Value {
    json!({"keys": keys.iter().map(|(_, kid, k)| k.public_jwk(Some(kid))).collect::<Vec<_>>()})
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Claims for issuer `https://idp.test/` and audience `api`, valid for ten minutes, with
/// `extra` merged over them.
pub fn claims(extra: Value) -> Value {
    let now = now();
    let mut c = json!({"iss": "https://idp.test/", "aud": "api", "sub": "user-1", "tenant_id": "t1",
                       "roles": ["editor"], "iat": now, "exp": now + 600});
    if let (Some(o), Some(e)) = (c.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            o.insert(k.clone(), v.clone());
        }
    }
    c
}

pub fn token(alg: Algorithm, kid: &str, key: &SigningKey, claims: &Value) -> String {
    mint(alg, key, Some(kid), claims).unwrap_or_default()
}
