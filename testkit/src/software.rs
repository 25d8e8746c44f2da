//! A software stand-in for the primitive behind Envoy's `verify_signature` foreign function:
//! import a DER public key (SubjectPublicKeyInfo), hash the text, verify PKCS#1 v1.5 (RSA) or
//! DER-encoded ECDSA (P-256, P-384) with RustCrypto. The core's tests wrap it in the host
//! call's protobuf, so the filter's host path is tested natively.

use p256::ecdsa::signature::Verifier;
use rsa::pkcs8::DecodePublicKey;
use sha2::{Digest, Sha256, Sha384, Sha512};

/// Whether `signature` is valid over `text` for `public_key` (DER) with `hash_function`
/// (`sha256`, `sha384`, `sha512`, as Envoy names them); `None` when the key cannot be imported,
/// which Envoy answers with an error status rather than a verdict.
pub fn verify(
    hash_function: &str,
    public_key: &[u8],
    text: &[u8],
    signature: &[u8],
) -> Option<bool> {
    if let Ok(k) = rsa::RsaPublicKey::from_public_key_der(public_key) {
        let pkcs1 =
            |scheme: rsa::Pkcs1v15Sign, digest: &[u8]| k.verify(scheme, digest, signature).is_ok();
        return Some(match hash_function {
            "sha256" => pkcs1(rsa::Pkcs1v15Sign::new::<Sha256>(), &Sha256::digest(text)),
            "sha384" => pkcs1(rsa::Pkcs1v15Sign::new::<Sha384>(), &Sha384::digest(text)),
            "sha512" => pkcs1(rsa::Pkcs1v15Sign::new::<Sha512>(), &Sha512::digest(text)),
            _ => false,
        });
    }
    if let Ok(k) = p256::PublicKey::from_public_key_der(public_key) {
        let k = p256::ecdsa::VerifyingKey::from(k);
        return Some(
            hash_function == "sha256"
                && p256::ecdsa::Signature::from_der(signature)
                    .is_ok_and(|s| k.verify(text, &s).is_ok()),
        );
    }
    if let Ok(k) = p384::PublicKey::from_public_key_der(public_key) {
        let k = p384::ecdsa::VerifyingKey::from(k);
        return Some(
            hash_function == "sha384"
                && p384::ecdsa::Signature::from_der(signature)
                    .is_ok_and(|s| k.verify(text, &s).is_ok()),
        );
    }
    None
}
