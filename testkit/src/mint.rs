//! Signing tokens, for the `apiguard token mint` command, the demo issuer and the tests. The
//! filter never signs anything, so this is not in the core; every tool signs the same way
//! through it.
//!
//! [`sign_raw`] signs arbitrary header and payload bytes, so tests can also build the malformed
//! and hostile tokens a verifier must refuse (duplicate members, `crit`, wrong `alg`).

use base64ct::{Base64UrlUnpadded, Encoding};
use jwt_compact::alg::{Ed25519, Es256, Hs256, Hs256Key, Hs384, Hs384Key, Hs512, Hs512Key, Rsa};
use jwt_compact::jwk::JsonWebKey;
use jwt_compact::{Algorithm as JwtAlgorithm, AlgorithmSignature};
use p384::ecdsa::signature::DigestSigner;
use rsa::RsaPrivateKey;
use serde_json::{json, Value};
use sha2::{Digest, Sha384};

/// A private key that can sign.
#[derive(Clone)]
pub enum SigningKey {
    Rsa(Box<RsaPrivateKey>),
    P256(p256::ecdsa::SigningKey),
    P384(p384::ecdsa::SigningKey),
    Ed25519(ed25519_dalek::SigningKey),
    Hmac(Vec<u8>),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MintError {
    #[error("not a private JWK: {0}")]
    BadKey(String),
    #[error("a {key} key cannot sign {alg}")]
    AlgKeyMismatch { alg: String, key: &'static str },
    #[error("unknown algorithm {0:?}")]
    UnknownAlg(String),
}

impl SigningKey {
    /// From a private JWK (RSA with `d`, `p`, `q`…; EC or OKP with `d`; `oct`).
    pub fn from_jwk(v: &Value) -> Result<SigningKey, MintError> {
        let jwk: JsonWebKey<'_> =
            serde_json::from_value(v.clone()).map_err(|e| MintError::BadKey(e.to_string()))?;
        let bad = |e: &dyn std::fmt::Display| MintError::BadKey(e.to_string());
        match &jwk {
            JsonWebKey::Rsa { .. } => RsaPrivateKey::try_from(&jwk)
                .map(|k| SigningKey::Rsa(Box::new(k)))
                .map_err(|e| bad(&e)),
            JsonWebKey::EllipticCurve { curve, secret, .. } => {
                let d = secret
                    .as_ref()
                    .ok_or_else(|| MintError::BadKey("no `d`".into()))?;
                match curve.as_ref() {
                    "P-256" => p256::ecdsa::SigningKey::from_slice(d)
                        .map(SigningKey::P256)
                        .map_err(|e| bad(&e)),
                    "P-384" => p384::ecdsa::SigningKey::from_slice(d)
                        .map(SigningKey::P384)
                        .map_err(|e| bad(&e)),
                    other => Err(MintError::BadKey(format!("curve {other}"))),
                }
            }
            JsonWebKey::KeyPair { .. } => ed25519_dalek::SigningKey::try_from(&jwk)
                .map(SigningKey::Ed25519)
                .map_err(|e| bad(&e)),
            JsonWebKey::Symmetric { secret } => Ok(SigningKey::Hmac(secret.to_vec())),
            _ => Err(MintError::BadKey("unsupported key type".into())),
        }
    }

    /// The public JWK to publish in a JWK Set (for `oct`, the secret itself).
    pub fn public_jwk(&self, kid: Option<&str>) -> Value {
        let mut v = match self {
            SigningKey::Rsa(k) => serde_json::to_value(JsonWebKey::from(&k.to_public_key())),
            SigningKey::P256(k) => serde_json::to_value(JsonWebKey::from(k.verifying_key())),
            SigningKey::P384(k) => {
                let p = k.verifying_key().to_encoded_point(false);
                let enc = |b: Option<&p384::FieldBytes>| {
                    b.map(|b| Base64UrlUnpadded::encode_string(b))
                        .unwrap_or_default()
                };
                Ok(json!({"kty": "EC", "crv": "P-384", "x": enc(p.x()), "y": enc(p.y())}))
            }
            SigningKey::Ed25519(k) => serde_json::to_value(JsonWebKey::from(&k.verifying_key())),
            SigningKey::Hmac(k) => {
                Ok(json!({"kty": "oct", "k": Base64UrlUnpadded::encode_string(k)}))
            }
        }
        .unwrap_or(Value::Null);
        if let (Some(kid), Some(o)) = (kid, v.as_object_mut()) {
            o.insert("kid".into(), Value::String(kid.to_owned()));
        }
        v
    }

    fn kind(&self) -> &'static str {
        match self {
            SigningKey::Rsa(_) => "RSA",
            SigningKey::P256(_) => "P-256",
            SigningKey::P384(_) => "P-384",
            SigningKey::Ed25519(_) => "Ed25519",
            SigningKey::Hmac(_) => "oct",
        }
    }
}

fn sig<A: JwtAlgorithm>(alg: &A, key: &A::SigningKey, msg: &[u8]) -> Vec<u8> {
    alg.sign(key, msg).as_bytes().into_owned()
}

/// Signs `header` and `payload` (raw bytes, base64url-encoded here) into a compact JWS.
pub fn sign_raw(
    alg: impl AsRef<str>,
    key: &SigningKey,
    header: &[u8],
    payload: &[u8],
) -> Result<String, MintError> {
    let alg = alg.as_ref();
    let mut out = Base64UrlUnpadded::encode_string(header);
    out.push('.');
    out.push_str(&Base64UrlUnpadded::encode_string(payload));
    let msg = out.as_bytes();
    let signature = match (alg, key) {
        ("RS256", SigningKey::Rsa(k)) => sig(&Rsa::rs256(), k, msg),
        ("RS384", SigningKey::Rsa(k)) => sig(&Rsa::rs384(), k, msg),
        ("RS512", SigningKey::Rsa(k)) => sig(&Rsa::rs512(), k, msg),
        ("PS256", SigningKey::Rsa(k)) => sig(&Rsa::ps256(), k, msg),
        ("PS384", SigningKey::Rsa(k)) => sig(&Rsa::ps384(), k, msg),
        ("PS512", SigningKey::Rsa(k)) => sig(&Rsa::ps512(), k, msg),
        ("ES256", SigningKey::P256(k)) => sig(&Es256, k, msg),
        // JWS ES384 (RFC 7518 §3.4): ECDSA P-384 over SHA-384, signature as r ‖ s.
        ("ES384", SigningKey::P384(k)) => {
            let s: p384::ecdsa::Signature = k.sign_digest(Sha384::new_with_prefix(msg));
            s.to_bytes().to_vec()
        }
        ("EdDSA", SigningKey::Ed25519(k)) => sig(&Ed25519, k, msg),
        ("HS256", SigningKey::Hmac(k)) => sig(&Hs256, &Hs256Key::new(k), msg),
        ("HS384", SigningKey::Hmac(k)) => sig(&Hs384, &Hs384Key::new(k), msg),
        ("HS512", SigningKey::Hmac(k)) => sig(&Hs512, &Hs512Key::new(k), msg),
        (
            "RS256" | "RS384" | "RS512" | "PS256" | "PS384" | "PS512" | "ES256" | "ES384" | "EdDSA"
            | "HS256" | "HS384" | "HS512",
            key,
        ) => {
            return Err(MintError::AlgKeyMismatch {
                alg: alg.to_owned(),
                key: key.kind(),
            })
        }
        (other, _) => return Err(MintError::UnknownAlg(other.to_owned())),
    };
    out.push('.');
    out.push_str(&Base64UrlUnpadded::encode_string(&signature));
    Ok(out)
}

/// A JWT with header `{"alg", "typ": "JWT", "kid"?}` and the given claims.
pub fn mint(
    alg: impl AsRef<str>,
    key: &SigningKey,
    kid: Option<&str>,
    claims: &Value,
) -> Result<String, MintError> {
    let mut header = json!({"alg": alg.as_ref(), "typ": "JWT"});
    if let (Some(kid), Some(o)) = (kid, header.as_object_mut()) {
        o.insert("kid".into(), Value::String(kid.to_owned()));
    }
    sign_raw(
        alg,
        key,
        header.to_string().as_bytes(),
        claims.to_string().as_bytes(),
    )
}
