//! JOSE vocabulary every part shares: the signature algorithms apiguard can be told to accept,
//! by their `alg` names, and sets of them. A low module: it imports nothing of the core.
//! Verification lives in `jwt::alg`.

use serde::Deserialize;

/// JOSE signature algorithms apiguard can be told to accept. `none` has no variant on purpose:
/// listing it is a configuration error, not a setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum Algorithm {
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    EdDSA,
    HS256,
    HS384,
    HS512,
}

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
    pub const ASYMMETRIC: AlgSet = AlgSet(AlgSet::of(&Algorithm::ALL).0 & !AlgSet::HMAC.0);

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
}

/// The JOSE `alg` name, so code that takes an algorithm by name (the test kit's signer) accepts
/// an [`Algorithm`] as it is.
impl AsRef<str> for Algorithm {
    fn as_ref(&self) -> &str {
        self.name()
    }
}
