//! JWKs from the public test vectors (`tests/vectors/`), for the tests that read them: the
//! core's vector tests ([`super::vectors`]) and the end-to-end agreement test
//! (`tests/e2e/signatures.rs`). Not part of the filter: built for tests, and for the end-to-end
//! harness with the `test-vectors` feature.

use base64ct::{Base64UrlUnpadded, Encoding};
use serde_json::{json, Value};

/// The public half of a JWK (RFC 7520's keys carry their private members).
pub fn public(jwk: &Value) -> Value {
    let mut k = jwk.clone();
    if k["kty"] != "oct" {
        if let Some(o) = k.as_object_mut() {
            for m in ["d", "p", "q", "dp", "dq", "qi", "oth"] {
                o.remove(m);
            }
        }
    }
    k
}

/// The JWK of a Wycheproof ECDSA group that gives only the point (`wx`, `wy`: big-endian hex
/// integers, possibly with a leading zero byte or an odd number of digits); `None` for another
/// curve or a malformed point.
pub fn ec_jwk(pk: &Value) -> Option<Value> {
    let (crv, len): (&str, usize) = match pk["curve"].as_str()? {
        "secp256r1" => ("P-256", 32),
        "secp384r1" => ("P-384", 48),
        _ => return None,
    };
    let coord = |field: &str| {
        let h = pk[field].as_str()?;
        let raw = if h.len() % 2 == 1 {
            hex::decode(format!("0{h}"))
        } else {
            hex::decode(h)
        }
        .ok()?;
        let trimmed: Vec<u8> = raw.into_iter().skip_while(|b| *b == 0).collect();
        let mut out = vec![0u8; len.saturating_sub(trimmed.len())];
        out.extend(trimmed);
        Some(Base64UrlUnpadded::encode_string(&out))
    };
    Some(json!({"kty": "EC", "crv": crv, "x": coord("wx")?, "y": coord("wy")?}))
}
