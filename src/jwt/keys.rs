//! JWK Sets: decoding keys once, when a configuration or a fetched JWKS is loaded, into the
//! verifying keys the signature primitives take, with the algorithms each key may be used with.
//!
//! A key's algorithms come from the key itself (RFC 8725 §3.1): `alg` when the JWK names one,
//! otherwise its type and curve. Weak keys are refused here, not at verification time: RSA under
//! 2048 bits (or with an even or tiny exponent), HMAC secrets shorter than the hash, EC points
//! that are not on the curve, small-order Ed25519 points.

use std::sync::Arc;

use jwt_compact::jwk::JsonWebKey;
use rsa::pkcs8::EncodePublicKey;
use rsa::traits::PublicKeyParts;
use rsa::RsaPublicKey;
use serde_json::Value;

use crate::jose::AlgSet;
use crate::jose::Algorithm;

/// Largest JWK Set document accepted (fetched or inline).
pub const MAX_JWKS_BYTES: usize = 64 * 1024;
/// Most keys in one set.
pub const MAX_KEYS: usize = 64;
/// RSA moduli accepted, in bits. Above the upper bound a verification costs enough CPU to be a
/// denial-of-service lever for whoever controls the JWKS.
pub const MIN_RSA_BITS: usize = 2048;
pub const MAX_RSA_BITS: usize = 8192;

/// Verifying key material.
#[derive(Debug, Clone)]
pub enum KeyMaterial {
    Rsa(RsaPublicKey),
    P256(p256::ecdsa::VerifyingKey),
    P384(p384::ecdsa::VerifyingKey),
    Ed25519(ed25519_dalek::VerifyingKey),
    Hmac(Vec<u8>),
}

/// One usable key.
#[derive(Debug, Clone)]
pub struct Jwk {
    pub kid: Option<String>,
    /// The algorithms this key may verify.
    pub algs: AlgSet,
    pub material: KeyMaterial,
    /// The key as a DER SubjectPublicKeyInfo, for keys the host can verify with
    /// (RSA, P-256, P-384; see [`super::host_signature`]). Encoded once, when the set is loaded.
    pub spki: Option<Arc<[u8]>>,
}

/// The keys of one provider.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    pub keys: Vec<Jwk>,
}

/// Why one key is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("not a JSON object")]
    NotAnObject,
    #[error("`{0}` must be a string")]
    NotAString(&'static str),
    #[error("`use` is `{0}`: only signature keys (`sig`) verify tokens")]
    NotForSignatures(String),
    #[error("`key_ops` does not include `verify`")]
    NoVerifyOp,
    #[error("key type `{0}` is not supported")]
    UnsupportedType(String),
    #[error("curve `{0}` is not supported (P-256, P-384, Ed25519 are)")]
    UnsupportedCurve(String),
    #[error("`alg` is `{0}`, which apiguard does not verify")]
    UnsupportedAlg(String),
    #[error("`alg` is `{alg}`, which does not fit a `{kty}` key")]
    AlgMismatch { alg: String, kty: &'static str },
    #[error("holds private key material (`{0}`): publish only the public key")]
    PrivateMaterial(&'static str),
    #[error("malformed key: {0}")]
    Malformed(String),
    #[error("weak key: {0}")]
    Weak(String),
}

/// Why a JWK Set was refused as a whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwksError {
    #[error("JWK Set is {0} bytes, over the {MAX_JWKS_BYTES}-byte limit")]
    TooLarge(usize),
    #[error("JWK Set is not valid JSON: {0}")]
    Json(String),
    #[error("JWK Set has no `keys` array")]
    NoKeys,
    #[error("JWK Set has {0} keys, over the limit of {MAX_KEYS}")]
    TooManyKeys(usize),
    #[error("keys[{index}]{}: {error}", kid.as_ref().map(|k| format!(" (kid `{k}`)")).unwrap_or_default())]
    Key {
        index: usize,
        kid: Option<String>,
        error: KeyError,
    },
    #[error("JWK Set has no usable signature key")]
    NoUsableKeys,
    /// Secret (`oct`) keys beside public ones: whoever reads the set for public keys would also
    /// read the secrets, and a token could pick a secret key by `kid`.
    #[error("JWK Set mixes secret (`oct`) and public keys")]
    MixedSymmetry,
    #[error("kid `{0}` names more than one key: every key with it was dropped")]
    AmbiguousKid(String),
    #[error("keys[{index}]: kid `{kid}` is also used by keys[{first}]")]
    DuplicateKid {
        index: usize,
        first: usize,
        kid: String,
    },
}

/// A key that a lenient load skipped, for the log.
pub type Skipped = JwksError;

impl KeySet {
    /// Loads a fetched JWK Set document. Keys that cannot be used (encryption keys, unsupported
    /// types, weak keys) are skipped and returned for logging, so one odd key at an identity
    /// provider does not take the others down; a set with no usable key is an error.
    pub fn from_document(bytes: &[u8]) -> Result<(KeySet, Vec<Skipped>), JwksError> {
        if bytes.len() > MAX_JWKS_BYTES {
            return Err(JwksError::TooLarge(bytes.len()));
        }
        let doc = super::json::parse(bytes, 8).map_err(|e| JwksError::Json(e.to_string()))?;
        let keys = doc
            .get("keys")
            .and_then(Value::as_array)
            .ok_or(JwksError::NoKeys)?;
        if keys.len() > MAX_KEYS {
            return Err(JwksError::TooManyKeys(keys.len()));
        }
        // A kid names one key; when two entries claim it (even one we could not decode),
        // neither can be trusted to be the one.
        let dups = duplicate_kids(keys);
        let mut set = KeySet::default();
        let mut skipped: Vec<Skipped> = dups.iter().cloned().map(JwksError::AmbiguousKid).collect();
        for (index, v) in keys.iter().enumerate() {
            let kid = kid_of(v);
            if kid.as_ref().is_some_and(|k| dups.contains(k)) {
                continue;
            }
            match parse_key(v) {
                Ok(k) => set.keys.push(k),
                Err(error) => skipped.push(JwksError::Key { index, kid, error }),
            }
        }
        check_mixed(&set)?;
        if set.keys.is_empty() {
            return Err(JwksError::NoUsableKeys);
        }
        Ok((set, skipped))
    }

    /// Loads keys written into the configuration: every key must be usable, since an operator
    /// who pasted a key expects it to work.
    pub fn from_inline(keys: &[Value]) -> Result<KeySet, JwksError> {
        if keys.len() > MAX_KEYS {
            return Err(JwksError::TooManyKeys(keys.len()));
        }
        let mut set = KeySet::default();
        for (index, v) in keys.iter().enumerate() {
            let key = parse_key(v).map_err(|error| JwksError::Key {
                index,
                kid: kid_of(v),
                error,
            })?;
            if let Some(kid) = &key.kid {
                if let Some(first) = set.keys.iter().position(|k| k.kid.as_ref() == Some(kid)) {
                    return Err(JwksError::DuplicateKid {
                        index,
                        first,
                        kid: kid.clone(),
                    });
                }
            }
            set.keys.push(key);
        }
        check_mixed(&set)?;
        if set.keys.is_empty() {
            return Err(JwksError::NoUsableKeys);
        }
        Ok(set)
    }
}

fn check_mixed(set: &KeySet) -> Result<(), JwksError> {
    let secret = set
        .keys
        .iter()
        .filter(|k| matches!(k.material, KeyMaterial::Hmac(_)))
        .count();
    if secret > 0 && secret < set.keys.len() {
        Err(JwksError::MixedSymmetry)
    } else {
        Ok(())
    }
}

fn duplicate_kids(keys: &[Value]) -> Vec<String> {
    let mut seen: Vec<String> = Vec::new();
    let mut dups: Vec<String> = Vec::new();
    for kid in keys.iter().filter_map(kid_of) {
        if seen.contains(&kid) {
            if !dups.contains(&kid) {
                dups.push(kid);
            }
        } else {
            seen.push(kid);
        }
    }
    dups
}

fn kid_of(v: &Value) -> Option<String> {
    v.get("kid").and_then(Value::as_str).map(str::to_owned)
}

fn opt_str<'a>(v: &'a Value, field: &'static str) -> Result<Option<&'a str>, KeyError> {
    match v.get(field) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(KeyError::NotAString(field)),
    }
}

/// Decodes one JWK.
pub fn parse_key(v: &Value) -> Result<Jwk, KeyError> {
    let obj = v.as_object().ok_or(KeyError::NotAnObject)?;
    let kid = opt_str(v, "kid")?.map(str::to_owned);
    if let Some(u) = opt_str(v, "use")? {
        if u != "sig" {
            return Err(KeyError::NotForSignatures(u.to_owned()));
        }
    }
    if let Some(ops) = obj.get("key_ops") {
        let verifies = ops
            .as_array()
            .is_some_and(|ops| ops.iter().any(|o| o == "verify"));
        if !verifies {
            return Err(KeyError::NoVerifyOp);
        }
    }
    let kty = opt_str(v, "kty")?.ok_or(KeyError::NotAString("kty"))?;
    let named_alg = opt_str(v, "alg")?;
    if kty != "oct" {
        for private in ["d", "p", "q", "dp", "dq", "qi"] {
            if obj.contains_key(private) {
                return Err(KeyError::PrivateMaterial(private));
            }
        }
    }
    let jwk: JsonWebKey<'_> = match kty {
        "RSA" | "EC" | "OKP" | "oct" => {
            serde_json::from_value(v.clone()).map_err(|e| KeyError::Malformed(e.to_string()))?
        }
        other => return Err(KeyError::UnsupportedType(other.to_owned())),
    };
    let (kty_name, family, material): (&'static str, AlgSet, KeyMaterial) = match &jwk {
        JsonWebKey::Rsa { .. } => {
            let key =
                RsaPublicKey::try_from(&jwk).map_err(|e| KeyError::Malformed(e.to_string()))?;
            let bits = key.n().bits();
            if bits < MIN_RSA_BITS {
                return Err(KeyError::Weak(format!(
                    "RSA modulus of {bits} bits (at least {MIN_RSA_BITS} required)"
                )));
            }
            if bits > MAX_RSA_BITS {
                return Err(KeyError::Malformed(format!(
                    "RSA modulus of {bits} bits (at most {MAX_RSA_BITS} accepted)"
                )));
            }
            let e = key.e();
            let odd = e.to_bytes_le().first().is_some_and(|b| b & 1 == 1);
            if e.bits() < 2 || !odd {
                return Err(KeyError::Weak(
                    "RSA public exponent must be odd and at least 3".into(),
                ));
            }
            ("RSA", AlgSet::RSA, KeyMaterial::Rsa(key))
        }
        JsonWebKey::EllipticCurve { curve, x, y, .. } => match curve.as_ref() {
            "P-256" => {
                let key = ec_point::<p256::NistP256>(x, y, 32).and_then(|p| {
                    p256::ecdsa::VerifyingKey::from_encoded_point(&p).map_err(|_| not_on_curve())
                })?;
                (
                    "EC",
                    AlgSet::single(Algorithm::ES256),
                    KeyMaterial::P256(key),
                )
            }
            "P-384" => {
                let key = ec_point::<p384::NistP384>(x, y, 48).and_then(|p| {
                    p384::ecdsa::VerifyingKey::from_encoded_point(&p).map_err(|_| not_on_curve())
                })?;
                (
                    "EC",
                    AlgSet::single(Algorithm::ES384),
                    KeyMaterial::P384(key),
                )
            }
            other => return Err(KeyError::UnsupportedCurve(other.to_owned())),
        },
        JsonWebKey::KeyPair { curve, .. } => {
            if curve != "Ed25519" {
                return Err(KeyError::UnsupportedCurve(curve.to_string()));
            }
            let key = ed25519_dalek::VerifyingKey::try_from(&jwk)
                .map_err(|e| KeyError::Malformed(e.to_string()))?;
            if key.is_weak() {
                return Err(KeyError::Weak("small-order Ed25519 point".into()));
            }
            (
                "OKP",
                AlgSet::single(Algorithm::EdDSA),
                KeyMaterial::Ed25519(key),
            )
        }
        JsonWebKey::Symmetric { secret } => {
            // RFC 7518 §3.2: the key must be at least as long as the hash output.
            let len = secret.len();
            let mut fits = Vec::new();
            for (alg, min) in [
                (Algorithm::HS256, 32),
                (Algorithm::HS384, 48),
                (Algorithm::HS512, 64),
            ] {
                if len >= min {
                    fits.push(alg);
                }
            }
            if fits.is_empty() {
                return Err(KeyError::Weak(format!(
                    "HMAC key of {} bits (at least 256 required)",
                    len * 8
                )));
            }
            ("oct", AlgSet::of(&fits), KeyMaterial::Hmac(secret.to_vec()))
        }
        _ => return Err(KeyError::UnsupportedType(kty.to_owned())),
    };
    let algs = match named_alg {
        None => family,
        Some(name) => {
            let alg = Algorithm::from_name(name)
                .ok_or_else(|| KeyError::UnsupportedAlg(name.to_owned()))?;
            if !family.contains(alg) {
                // An `oct` key too short for the named HMAC is weak; anything else is a mismatch.
                if kty_name == "oct" && AlgSet::HMAC.contains(alg) {
                    return Err(KeyError::Weak(format!("HMAC key too short for {name}")));
                }
                return Err(KeyError::AlgMismatch {
                    alg: name.to_owned(),
                    kty: kty_name,
                });
            }
            AlgSet::single(alg)
        }
    };
    let spki = spki_der(&material);
    Ok(Jwk {
        kid,
        algs,
        material,
        spki,
    })
}

/// The SubjectPublicKeyInfo DER of a key the host verifies with; `None` for the others (and,
/// were encoding ever to fail, the key is simply verified in Wasm).
fn spki_der(material: &KeyMaterial) -> Option<Arc<[u8]>> {
    let doc = match material {
        KeyMaterial::Rsa(k) => k.to_public_key_der().ok()?,
        KeyMaterial::P256(k) => p256::PublicKey::from(k).to_public_key_der().ok()?,
        KeyMaterial::P384(k) => p384::PublicKey::from(k).to_public_key_der().ok()?,
        KeyMaterial::Ed25519(_) | KeyMaterial::Hmac(_) => return None,
    };
    Some(Arc::from(doc.as_bytes()))
}

fn not_on_curve() -> KeyError {
    KeyError::Weak("EC point is not on the curve".into())
}

/// Builds an uncompressed SEC1 point from JWK coordinates of exactly `len` bytes each.
fn ec_point<C>(
    x: &[u8],
    y: &[u8],
    len: usize,
) -> Result<elliptic_curve::sec1::EncodedPoint<C>, KeyError>
where
    C: elliptic_curve::Curve,
    elliptic_curve::FieldBytesSize<C>: elliptic_curve::sec1::ModulusSize,
{
    if x.len() != len || y.len() != len {
        return Err(KeyError::Malformed(format!(
            "EC coordinates must be {len} bytes each"
        )));
    }
    Ok(elliptic_curve::sec1::EncodedPoint::<C>::from_affine_coordinates(x.into(), y.into(), false))
}
