//! The dispatch from a signature algorithm and a key to the verifying primitive (jwt-compact's
//! `Algorithm` implementations, and p384 for ES384). The algorithms themselves are named in
//! [`crate::jose`].

use jwt_compact::alg::{Ed25519, Es256, Hs256, Hs256Key, Hs384, Hs384Key, Hs512, Hs512Key, Rsa};
use jwt_compact::{Algorithm as JwtAlgorithm, AlgorithmSignature};

use super::keys::KeyMaterial;
use crate::jose::Algorithm;
use p384::ecdsa::signature::DigestVerifier;
use sha2::{Digest, Sha384};

/// Verifies `signature` over `message` with `alg` and `key`; false for any mismatch between the
/// algorithm and the key's type, a malformed signature, or a bad one.
pub fn verify(alg: Algorithm, key: &KeyMaterial, message: &[u8], signature: &[u8]) -> bool {
    match (alg, key) {
        (Algorithm::RS256, KeyMaterial::Rsa(k)) => check(&Rsa::rs256(), k, message, signature),
        (Algorithm::RS384, KeyMaterial::Rsa(k)) => check(&Rsa::rs384(), k, message, signature),
        (Algorithm::RS512, KeyMaterial::Rsa(k)) => check(&Rsa::rs512(), k, message, signature),
        (Algorithm::PS256, KeyMaterial::Rsa(k)) => check(&Rsa::ps256(), k, message, signature),
        (Algorithm::PS384, KeyMaterial::Rsa(k)) => check(&Rsa::ps384(), k, message, signature),
        (Algorithm::PS512, KeyMaterial::Rsa(k)) => check(&Rsa::ps512(), k, message, signature),
        (Algorithm::ES256, KeyMaterial::P256(k)) => check(&Es256, k, message, signature),
        (Algorithm::ES384, KeyMaterial::P384(k)) => es384(k, message, signature),
        (Algorithm::EdDSA, KeyMaterial::Ed25519(k)) => check(&Ed25519, k, message, signature),
        (Algorithm::HS256, KeyMaterial::Hmac(k)) => {
            check(&Hs256, &Hs256Key::new(k), message, signature)
        }
        (Algorithm::HS384, KeyMaterial::Hmac(k)) => {
            check(&Hs384, &Hs384Key::new(k), message, signature)
        }
        (Algorithm::HS512, KeyMaterial::Hmac(k)) => {
            check(&Hs512, &Hs512Key::new(k), message, signature)
        }
        _ => false,
    }
}

/// The length check jwt-compact's validator performs, then the primitive.
fn check<A: JwtAlgorithm>(alg: &A, key: &A::VerifyingKey, message: &[u8], sig: &[u8]) -> bool {
    if let Some(len) = <A::Signature as AlgorithmSignature>::LENGTH {
        if sig.len() != len.get() {
            return false;
        }
    }
    match <A::Signature as AlgorithmSignature>::try_from_slice(sig) {
        Ok(s) => alg.verify_signature(&s, key, message),
        Err(_) => false,
    }
}

/// ES384 (ECDSA on P-384 with SHA-384), which jwt-compact does not provide. The JOSE signature
/// is `r ‖ s`, 48 bytes each (RFC 7518 §3.4); r or s equal to zero or not below the group
/// order is refused (`Signature::from_slice`). Verification only: apiguard never signs.
fn es384(key: &p384::ecdsa::VerifyingKey, message: &[u8], signature: &[u8]) -> bool {
    signature.len() == 96
        && p384::ecdsa::Signature::from_slice(signature).is_ok_and(|s| {
            key.verify_digest(Sha384::new_with_prefix(message), &s)
                .is_ok()
        })
}
