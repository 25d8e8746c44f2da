//! Signatures verified by the host: Envoy's `verify_signature` foreign function.
//!
//! Envoy (source/extensions/common/wasm/foreign.cc) exposes BoringSSL's `EVP_DigestVerify` to
//! Wasm modules: a protobuf `VerifySignatureArguments {hash_function, public_key (DER
//! SubjectPublicKeyInfo), signature, text}` in, `VerifySignatureResult {result, error}` out.
//! With the default RSA padding that is PKCS#1 v1.5, so it verifies RS256/384/512, and with an
//! EC key it verifies ECDSA signatures in DER, so ES256/ES384 once the JOSE `r‖s` form is
//! converted. That is native speed where pure Wasm big-number arithmetic is an order of
//! magnitude slower. Everything else (parsing, the algorithm–key binding, claims) stays in
//! Rust, and jwt-compact remains the verifier for EdDSA, PS*, HS*, for hosts without the
//! function, and whenever a host call fails.
//!
//! The wire messages are the two messages of Envoy's `verify_signature.proto`, declared here
//! with prost's derive (no build script, no protoc).

use base64ct::{Base64UrlUnpadded, Encoding};

use super::keys::{Jwk, KeyMaterial};
use crate::jose::Algorithm;
use rsa::traits::PublicKeyParts;

/// The foreign function's name in Envoy.
pub const FOREIGN_FUNCTION: &str = "verify_signature";

/// `envoy.source.extensions.common.wasm.VerifySignatureArguments`.
#[derive(Clone, PartialEq, prost::Message)]
struct VerifySignatureArguments {
    #[prost(string, tag = "1")]
    hash_function: String,
    #[prost(bytes = "vec", tag = "2")]
    public_key: Vec<u8>,
    #[prost(bytes = "vec", tag = "3")]
    signature: Vec<u8>,
    #[prost(bytes = "vec", tag = "4")]
    text: Vec<u8>,
}

/// `envoy.source.extensions.common.wasm.VerifySignatureResult`.
#[derive(Clone, PartialEq, prost::Message)]
struct VerifySignatureResult {
    #[prost(bool, tag = "1")]
    result: bool,
    #[prost(string, tag = "2")]
    error: String,
}

/// The host side: one call of the foreign function with encoded arguments, returning what the
/// host handed back (`None`: nothing) or how the call failed, untouched. The filter implements
/// it with `proxy_call_foreign_function`, and so does the signature probe (`tests/probe`); what
/// an answer means is decided once, here ([`read_answer`]), so the two cannot read a host alike
/// in one place and differently in the other.
pub trait SignatureHost {
    /// The host's answer; a failed call as [`HostSignatureError::Missing`] (proxy-wasm status
    /// `NotFound`) or [`HostSignatureError::Status`] (any other, by its proxy-wasm name).
    fn call(&self, arguments: &[u8]) -> Result<Option<Vec<u8>>, HostSignatureError>;
}

/// What a call's answer is: the encoded result, or why there is none.
pub fn read_answer(
    answer: Result<Option<Vec<u8>>, HostSignatureError>,
) -> Result<Vec<u8>, HostSignatureError> {
    answer?.ok_or(HostSignatureError::Empty)
}

/// Why a host call gave no verdict. The token is then verified in Wasm instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostSignatureError {
    #[error("the host has no `verify_signature` foreign function")]
    Missing,
    #[error("`verify_signature` answered with status {0}")]
    Status(&'static str),
    #[error("`verify_signature` answered with nothing")]
    Empty,
    #[error("`verify_signature` answered with bytes that are not a VerifySignatureResult")]
    Undecodable,
}

/// The host's answer for one signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostVerdict {
    Valid,
    Invalid,
    /// The host does not verify this algorithm (or this key has no DER form): use Wasm.
    NotOffered,
    /// The call failed: use Wasm.
    Failed(HostSignatureError),
}

/// The digest name the host takes for an algorithm it verifies.
pub(crate) fn hash_for(alg: Algorithm) -> Option<&'static str> {
    match alg {
        Algorithm::RS256 | Algorithm::ES256 => Some("sha256"),
        Algorithm::RS384 | Algorithm::ES384 => Some("sha384"),
        Algorithm::RS512 => Some("sha512"),
        _ => None,
    }
}

/// The signature in the form the host verifies, or `None` when it cannot be valid: an RSA
/// signature must be exactly as long as the modulus; a JOSE ECDSA signature is exactly `r‖s`
/// at the curve's size (RFC 7518 §3.4) with both scalars in range, and only then is it
/// re-encoded as DER. The same inputs are invalid for jwt-compact, so both paths agree.
fn host_signature(alg: Algorithm, key: &KeyMaterial, sig: &[u8]) -> Option<Vec<u8>> {
    match (alg, key) {
        (Algorithm::RS256 | Algorithm::RS384 | Algorithm::RS512, KeyMaterial::Rsa(k)) => {
            (sig.len() == k.size()).then(|| sig.to_vec())
        }
        (Algorithm::ES256, KeyMaterial::P256(_)) if sig.len() == 64 => {
            let s = p256::ecdsa::Signature::from_slice(sig).ok()?;
            Some(s.to_der().as_bytes().to_vec())
        }
        (Algorithm::ES384, KeyMaterial::P384(_)) if sig.len() == 96 => {
            let s = p384::ecdsa::Signature::from_slice(sig).ok()?;
            Some(s.to_der().as_bytes().to_vec())
        }
        _ => None,
    }
}

/// Verifies `sig` over `message` with `alg` and `key` through the host.
pub fn verify(
    host: &dyn SignatureHost,
    alg: Algorithm,
    key: &Jwk,
    message: &[u8],
    sig: &[u8],
) -> HostVerdict {
    let (Some(hash), Some(spki)) = (hash_for(alg), key.spki.as_ref()) else {
        return HostVerdict::NotOffered;
    };
    // A mismatch between the algorithm and the key, or a malformed signature, is invalid
    // without asking the host (the Wasm path says the same).
    let Some(signature) = host_signature(alg, &key.material, sig) else {
        return HostVerdict::Invalid;
    };
    let args = VerifySignatureArguments {
        hash_function: hash.to_owned(),
        public_key: spki.to_vec(),
        signature,
        text: message.to_vec(),
    };
    let answer = match read_answer(host.call(&prost::Message::encode_to_vec(&args))) {
        Ok(a) => a,
        Err(e) => return HostVerdict::Failed(e),
    };
    match <VerifySignatureResult as prost::Message>::decode(answer.as_slice()) {
        Ok(r) if r.result => HostVerdict::Valid,
        Ok(_) => HostVerdict::Invalid,
        Err(_) => HostVerdict::Failed(HostSignatureError::Undecodable),
    }
}

/// Why [`self_test`] decided not to use the host.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelfTestError {
    #[error(transparent)]
    Call(#[from] HostSignatureError),
    #[error("`verify_signature` gave the wrong verdict on the {0} self-test vector")]
    WrongVerdict(&'static str),
}

/// Checks, once at configure time, that the host's `verify_signature` exists and answers
/// correctly: RFC 7515 Appendix A.2 (RS256) and A.3 (ES256) must verify, and the same
/// signatures with one bit flipped must not. Only then are signatures sent to the host.
pub fn self_test(host: &dyn SignatureHost) -> Result<(), SelfTestError> {
    for (name, alg, jwk, token) in [
        ("RS256", Algorithm::RS256, RFC7515_A2_JWK, RFC7515_A2_TOKEN),
        ("ES256", Algorithm::ES256, RFC7515_A3_JWK, RFC7515_A3_TOKEN),
    ] {
        let key = serde_json::from_str(jwk)
            .ok()
            .and_then(|v| super::keys::parse_key(&v).ok())
            .ok_or(SelfTestError::WrongVerdict(name))?;
        // The vectors are constants in JWS compact form: the signing input is everything before
        // the last dot, the signature (base64url) after it. No token parsing is needed (and the
        // host signature path stays below the token module, which calls it).
        let (signing_input, signature) = token
            .rsplit_once('.')
            .and_then(|(input, sig)| Some((input, Base64UrlUnpadded::decode_vec(sig).ok()?)))
            .ok_or(SelfTestError::WrongVerdict(name))?;
        let mut flipped = signature.clone();
        if let Some(b) = flipped.last_mut() {
            *b ^= 1;
        }
        for (sig, want) in [
            (signature.as_slice(), HostVerdict::Valid),
            (flipped.as_slice(), HostVerdict::Invalid),
        ] {
            match verify(host, alg, &key, signing_input.as_bytes(), sig) {
                HostVerdict::Failed(e) => return Err(e.into()),
                got if got == want => {}
                _ => return Err(SelfTestError::WrongVerdict(name)),
            }
        }
    }
    Ok(())
}

// RFC 7515 Appendix A.2 (RS256) and A.3 (ES256): the public keys and the example JWSs, as
// printed in the RFC (also in tests/vectors/rfc7515-appendix-a.json).
const RFC7515_A2_JWK: &str = r#"{"kty":"RSA","n":"ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4d4QlL-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSHSXndS5z5rexMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFvUK-DWNmoudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ","e":"AQAB"}"#;
const RFC7515_A2_TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.cC4hiUPoj9Eetdgtv3hF80EGrhuB__dzERat0XF9g2VtQgr9PJbu3XOiZj5RZmh7AAuHIm4Bh-0Qc_lF5YKt_O8W2Fp5jujGbds9uJdbF9CUAr7t1dnZcAcQjbKBYNX4BAynRFdiuB--f_nZLgrnbyTyWzO75vRK5h6xBArLIARNPvkSjtQBMHlb1L07Qe7K0GarZRmB_eSN9383LcOLn6_dO--xi12jzDwusC-eOkHWEsqtFZESc6BfI7noOPqvhJ1phCnvWh6IeYI2w9QOYEUipUTI8np6LbgGY9Fs98rqVt5AXLIhWkWywlVmtVrBp0igcN_IoypGlUPQGe77Rw";
const RFC7515_A3_JWK: &str = r#"{"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}"#;
const RFC7515_A3_TOKEN: &str = "eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q";

/// Test hosts: Envoy's foreign function emulated in software (the primitive is
/// `apiguard_testkit::software`; this wraps it in the host call's protobuf and counts calls, so
/// tests can tell the host path was taken), and a host whose every call fails.
#[cfg(test)]
pub mod software {
    use std::cell::Cell;

    use super::{
        HostSignatureError, SignatureHost, VerifySignatureArguments, VerifySignatureResult,
    };

    #[derive(Default)]
    pub struct SoftwareHost {
        pub calls: Cell<usize>,
    }

    impl SignatureHost for SoftwareHost {
        fn call(&self, arguments: &[u8]) -> Result<Option<Vec<u8>>, HostSignatureError> {
            self.calls.set(self.calls.get() + 1);
            let a = <VerifySignatureArguments as prost::Message>::decode(arguments)
                .map_err(|_| HostSignatureError::Status("BadArgument"))?;
            let ok = apiguard_testkit::software::verify(
                &a.hash_function,
                &a.public_key,
                &a.text,
                &a.signature,
            )
            .ok_or(HostSignatureError::Status("BadArgument"))?;
            let r = VerifySignatureResult {
                result: ok,
                error: String::new(),
            };
            Ok(Some(prost::Message::encode_to_vec(&r)))
        }
    }

    /// A host whose every call fails.
    pub struct BrokenHost;

    impl SignatureHost for BrokenHost {
        fn call(&self, _: &[u8]) -> Result<Option<Vec<u8>>, HostSignatureError> {
            Err(HostSignatureError::Status("InternalFailure"))
        }
    }
}
