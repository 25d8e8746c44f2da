//! The signature algorithms apiguard verifies, as a small set type, and the dispatch from an
//! algorithm and a key to the verifying primitive (jwt-compact's `Algorithm` implementations,
//! plus our ES384).

use jwt_compact::alg::{Ed25519, Es256, Hs256, Hs256Key, Hs384, Hs384Key, Hs512, Hs512Key, Rsa};
use jwt_compact::{Algorithm as JwtAlgorithm, AlgorithmSignature};

use super::es384::Es384;
use super::keys::KeyMaterial;
use crate::config::Algorithm;

impl Algorithm {
    pub const ALL: [Algorithm; 12] = [
        Algorithm::RS256,
        Algorithm::RS384,
        Algorithm::RS512,
        Algorithm::PS256,
        Algorithm::PS384,
        Algorithm::PS512,
        Algorithm::ES256,
        Algorithm::ES384,
        Algorithm::EdDSA,
        Algorithm::HS256,
        Algorithm::HS384,
        Algorithm::HS512,
    ];

    /// The JOSE `alg` name.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::RS256 => "RS256",
            Algorithm::RS384 => "RS384",
            Algorithm::RS512 => "RS512",
            Algorithm::PS256 => "PS256",
            Algorithm::PS384 => "PS384",
            Algorithm::PS512 => "PS512",
            Algorithm::ES256 => "ES256",
            Algorithm::ES384 => "ES384",
            Algorithm::EdDSA => "EdDSA",
            Algorithm::HS256 => "HS256",
            Algorithm::HS384 => "HS384",
            Algorithm::HS512 => "HS512",
        }
    }

    /// From a JOSE `alg` name; `none` and anything unknown are `None`.
    pub fn from_name(name: &str) -> Option<Algorithm> {
        Algorithm::ALL.into_iter().find(|a| a.name() == name)
    }

    pub fn is_hmac(self) -> bool {
        matches!(self, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
    }

    fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

/// A set of algorithms.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AlgSet(u16);

impl AlgSet {
    pub const RSA: AlgSet = AlgSet::of(&[
        Algorithm::RS256,
        Algorithm::RS384,
        Algorithm::RS512,
        Algorithm::PS256,
        Algorithm::PS384,
        Algorithm::PS512,
    ]);
    pub const HMAC: AlgSet = AlgSet::of(&[Algorithm::HS256, Algorithm::HS384, Algorithm::HS512]);
    /// Everything but HMAC: the default allow-list when a provider names none.
    pub const ASYMMETRIC: AlgSet = AlgSet::of(&[
        Algorithm::RS256,
        Algorithm::RS384,
        Algorithm::RS512,
        Algorithm::PS256,
        Algorithm::PS384,
        Algorithm::PS512,
        Algorithm::ES256,
        Algorithm::ES384,
        Algorithm::EdDSA,
    ]);

    pub const fn of(algs: &[Algorithm]) -> AlgSet {
        let mut bits = 0u16;
        let mut i = 0;
        while i < algs.len() {
            bits |= 1 << (algs[i] as u16);
            i += 1;
        }
        AlgSet(bits)
    }

    pub fn single(a: Algorithm) -> AlgSet {
        AlgSet(a.bit())
    }

    pub fn contains(self, a: Algorithm) -> bool {
        self.0 & a.bit() != 0
    }

    pub fn intersect(self, other: AlgSet) -> AlgSet {
        AlgSet(self.0 & other.0)
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn iter(self) -> impl Iterator<Item = Algorithm> {
        Algorithm::ALL
            .into_iter()
            .filter(move |a| self.contains(*a))
    }
}

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
        (Algorithm::ES384, KeyMaterial::P384(k)) => check(&Es384, k, message, signature),
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
