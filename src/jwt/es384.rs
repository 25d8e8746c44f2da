//! `ES384` (ECDSA on P-384 with SHA-384), which jwt-compact does not provide, implemented on its
//! `Algorithm` trait with the RustCrypto `p384` crate so it plugs into the same verification
//! path as the algorithms jwt-compact ships.

use std::borrow::Cow;
use std::num::NonZeroUsize;

use jwt_compact::{Algorithm, AlgorithmSignature};
use p384::ecdsa::signature::{DigestSigner, DigestVerifier};
use p384::ecdsa::{Signature, SigningKey, VerifyingKey};
use sha2::{Digest, Sha384};

/// The JOSE form of an ES384 signature: `r ‖ s`, 48 bytes each (RFC 7518 §3.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Es384Signature(Signature);

impl AlgorithmSignature for Es384Signature {
    const LENGTH: Option<NonZeroUsize> = NonZeroUsize::new(96);

    /// Refuses r or s equal to zero or not below the group order (`Signature::from_slice`).
    fn try_from_slice(slice: &[u8]) -> anyhow::Result<Self> {
        Signature::from_slice(slice)
            .map(Es384Signature)
            .map_err(|e| anyhow::anyhow!(e))
    }

    fn as_bytes(&self) -> Cow<'_, [u8]> {
        Cow::Owned(self.0.to_bytes().to_vec())
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Es384;

impl Algorithm for Es384 {
    type SigningKey = SigningKey;
    type VerifyingKey = VerifyingKey;
    type Signature = Es384Signature;

    fn name(&self) -> Cow<'static, str> {
        Cow::Borrowed("ES384")
    }

    fn sign(&self, signing_key: &SigningKey, message: &[u8]) -> Es384Signature {
        Es384Signature(signing_key.sign_digest(Sha384::new_with_prefix(message)))
    }

    fn verify_signature(
        &self,
        signature: &Es384Signature,
        verifying_key: &VerifyingKey,
        message: &[u8],
    ) -> bool {
        verifying_key
            .verify_digest(Sha384::new_with_prefix(message), &signature.0)
            .is_ok()
    }
}
