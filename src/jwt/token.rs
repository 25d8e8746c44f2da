//! Verifying one compact JWS token: structure and header hardening (RFC 8725), key selection
//! bound to the algorithm, the signature (through [`super::alg::verify`]), then the claims.
//!
//! Every failure is a [`Reject`]; the filter answers all of them with the same 401 body (no
//! oracle) and only logs and counts the reason.

use base64ct::{Base64UrlUnpadded, Encoding};
use serde_json::{Map, Value};

use super::alg;
use super::host_signature::{self, HostVerdict, SignatureHost};
use super::keys::KeySet;
use crate::config::{invalid, ConfigError, Problem, ProviderConfig, MAX_CLOCK_SKEW_S};
use crate::jose::AlgSet;
use crate::jose::Algorithm;

/// Default cap on a token's size.
pub const DEFAULT_MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Default cap on how deeply claims may nest.
pub const DEFAULT_MAX_CLAIMS_DEPTH: usize = 8;
/// A header is a flat object; a little room for `crit` arrays and `jwk` objects that we then
/// refuse or ignore.
const MAX_HEADER_DEPTH: usize = 3;
/// Most keys tried for a token without `kid`: each try is a full signature verification.
pub const MAX_KEY_TRIES: usize = 4;

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reject {
    /// Over the size cap.
    TooLarge,
    /// Not three base64url parts, bad base64url, or header/claims not a JSON object.
    Malformed,
    /// Five parts: an encrypted token (JWE), which apiguard does not accept.
    Encrypted,
    /// Duplicate member names in the header or the claims.
    DuplicateMember,
    /// Claims nested deeper than allowed.
    TooDeep,
    /// `crit`, `b64` or `cty` in the header: extensions and nested or non-JSON content.
    UnsupportedHeader,
    /// `alg` is `none`, unknown, not allowed for the provider, or not what the key says.
    AlgorithmNotAllowed,
    /// No key with the token's `kid` (a refetch may find it).
    UnknownKid,
    /// No key fits the token's algorithm.
    NoMatchingKey,
    BadSignature,
    Expired,
    /// `nbf` in the future.
    NotYetValid,
    /// `iat` in the future.
    IssuedInFuture,
    /// `exp` missing, or a time claim (`exp`, `nbf`, `iat`) not a number from 0 to the end of
    /// year 9999.
    BadTimeClaim,
    /// A registered claim of the wrong type (RFC 7519 §4.1): `sub` or `iss` not a string, `aud`
    /// neither a string nor an array of strings.
    BadClaimType,
    /// Lifetime longer than `max_lifetime_s`.
    LifetimeTooLong,
    WrongIssuer,
    WrongAudience,
    /// A `required_claims` entry is missing, or `sub` where the provider requires it.
    MissingClaim,
    /// Header `typ` is not the configured one.
    WrongType,
}

/// Why a token was refused, coarsely: the counter a refusal moves
/// (`apiguard.jwt.rejected.<name>`). A typed class, so the filter's counter mapping is checked
/// by the compiler: a new or renamed class cannot silently count as another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectClass {
    Malformed,
    Header,
    Key,
    Signature,
    Expired,
    Claims,
    KeysUnavailable,
}

impl RejectClass {
    /// The counter name's last part.
    pub fn name(self) -> &'static str {
        match self {
            RejectClass::Malformed => "malformed",
            RejectClass::Header => "header",
            RejectClass::Key => "key",
            RejectClass::Signature => "signature",
            RejectClass::Expired => "expired",
            RejectClass::Claims => "claims",
            RejectClass::KeysUnavailable => "keys_unavailable",
        }
    }
}

impl Reject {
    /// The counter class.
    pub fn class(self) -> RejectClass {
        match self {
            Reject::TooLarge
            | Reject::Malformed
            | Reject::Encrypted
            | Reject::DuplicateMember
            | Reject::TooDeep => RejectClass::Malformed,
            Reject::UnsupportedHeader | Reject::AlgorithmNotAllowed | Reject::WrongType => {
                RejectClass::Header
            }
            Reject::UnknownKid | Reject::NoMatchingKey => RejectClass::Key,
            Reject::BadSignature => RejectClass::Signature,
            Reject::Expired | Reject::NotYetValid | Reject::IssuedInFuture => RejectClass::Expired,
            Reject::BadTimeClaim
            | Reject::BadClaimType
            | Reject::LifetimeTooLong
            | Reject::WrongIssuer
            | Reject::WrongAudience
            | Reject::MissingClaim => RejectClass::Claims,
        }
    }
}

/// A token split and decoded, its signature not yet checked.
#[derive(Debug, Clone)]
pub struct Parsed<'a> {
    pub alg: String,
    pub kid: Option<String>,
    pub typ: Option<String>,
    /// The decoded payload, not yet parsed.
    pub payload: Vec<u8>,
    /// `BASE64URL(header) '.' BASE64URL(payload)`: what the signature covers.
    pub signing_input: &'a [u8],
    /// The decoded signature.
    pub signature: Vec<u8>,
}

impl Parsed<'_> {
    /// The payload as a claims object (strict: no duplicate members, bounded depth).
    pub fn claims(&self, max_depth: usize) -> Result<Map<String, Value>, Reject> {
        parse_object(&self.payload, max_depth)
    }
}

/// Splits and decodes a compact JWS, refusing what RFC 8725 says to refuse. Header members that
/// point at keys (`jku`, `x5u`, `x5c`, `jwk`) are never read: keys come only from configuration.
pub fn parse(token: &[u8], max_bytes: usize) -> Result<Parsed<'_>, Reject> {
    if token.len() > max_bytes {
        return Err(Reject::TooLarge);
    }
    if !token
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(Reject::Malformed);
    }
    let parts: Vec<&[u8]> = token.split(|b| *b == b'.').collect();
    let (header_b64, claims_b64, sig_b64) = match parts.as_slice() {
        [h, c, s] => (*h, *c, *s),
        [_, _, _, _, _] => return Err(Reject::Encrypted),
        _ => return Err(Reject::Malformed),
    };
    let header = decode_object(header_b64, MAX_HEADER_DEPTH)?;
    let signature =
        Base64UrlUnpadded::decode_vec(ascii(sig_b64)?).map_err(|_| Reject::Malformed)?;
    for ext in ["crit", "b64", "cty"] {
        if header.contains_key(ext) {
            return Err(Reject::UnsupportedHeader);
        }
    }
    let alg = match header.get("alg") {
        Some(Value::String(a)) => a.clone(),
        _ => return Err(Reject::Malformed),
    };
    let text = |name: &str| -> Result<Option<String>, Reject> {
        match header.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(Reject::Malformed),
        }
    };
    let kid = text("kid")?;
    let typ = text("typ")?;
    let payload =
        Base64UrlUnpadded::decode_vec(ascii(claims_b64)?).map_err(|_| Reject::Malformed)?;
    let signing_input = &token[..header_b64.len() + 1 + claims_b64.len()];
    Ok(Parsed {
        alg,
        kid,
        typ,
        payload,
        signing_input,
        signature,
    })
}

fn ascii(b: &[u8]) -> Result<&str, Reject> {
    std::str::from_utf8(b).map_err(|_| Reject::Malformed)
}

fn decode_object(b64: &[u8], depth: usize) -> Result<Map<String, Value>, Reject> {
    let bytes = Base64UrlUnpadded::decode_vec(ascii(b64)?).map_err(|_| Reject::Malformed)?;
    parse_object(&bytes, depth)
}

fn parse_object(bytes: &[u8], depth: usize) -> Result<Map<String, Value>, Reject> {
    match super::json::parse(bytes, depth) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(Reject::Malformed),
        Err(super::json::StrictJsonError::Duplicate(_)) => Err(Reject::DuplicateMember),
        Err(super::json::StrictJsonError::TooDeep(_)) => Err(Reject::TooDeep),
        Err(super::json::StrictJsonError::Syntax(_)) => Err(Reject::Malformed),
    }
}

/// What a provider requires of a token, compiled from its configuration.
#[derive(Debug, Clone)]
pub struct TokenRules {
    pub issuer: String,
    pub audiences: Option<Vec<String>>,
    /// Allowed algorithms; HMAC only when the configuration lists it.
    pub algorithms: AlgSet,
    pub clock_skew_s: i64,
    pub max_lifetime_s: Option<i64>,
    pub required_claims: Vec<String>,
    /// Expected header `typ` (e.g. `at+jwt`), compared as RFC 7515 §4.1.9 says.
    pub typ: Option<String>,
    /// `sub` must be present (RFC 9068 §2.2 requires it of access tokens).
    pub require_sub: bool,
}

impl TokenRules {
    /// A provider's claim rules, compiled in one pass with their checks: the one place a claim
    /// setting is read. `at`: the provider's place in the configuration, which errors name.
    pub fn compile(at: &str, p: &ProviderConfig) -> Result<TokenRules, ConfigError> {
        if p.max_lifetime_s == Some(0) {
            return Err(invalid(format!("{at}.max_lifetime_s"), Problem::Zero));
        }
        if p.clock_skew_s > MAX_CLOCK_SKEW_S {
            let max = MAX_CLOCK_SKEW_S;
            return Err(invalid(
                format!("{at}.clock_skew_s"),
                Problem::TooLarge { max },
            ));
        }
        if let Some(i) = p.required_claims.iter().position(String::is_empty) {
            return Err(invalid(
                format!("{at}.required_claims[{i}]"),
                Problem::Empty,
            ));
        }
        if p.typ.as_ref().is_some_and(String::is_empty) {
            return Err(invalid(format!("{at}.typ"), Problem::Empty));
        }
        let seconds = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        Ok(TokenRules {
            issuer: p.issuer.clone(),
            audiences: p.audiences.clone(),
            algorithms: p
                .algorithms
                .as_ref()
                .map_or(AlgSet::ASYMMETRIC, |l| AlgSet::of(l)),
            clock_skew_s: seconds(p.clock_skew_s),
            max_lifetime_s: p.max_lifetime_s.map(seconds),
            required_claims: p.required_claims.clone(),
            typ: p.typ.clone(),
            require_sub: p.require_sub,
        })
    }
}

/// A token whose signature and claims checked out.
#[derive(Debug, Clone, PartialEq)]
pub struct Verified {
    pub claims: Map<String, Value>,
    /// `exp`, whole seconds.
    pub exp: i64,
}

/// Verifies a parsed token's claims set with `keys` at Unix time `now`: the signature first,
/// then the claims.
pub fn verify(
    t: &Parsed<'_>,
    claims: &Map<String, Value>,
    rules: &TokenRules,
    keys: &KeySet,
    host: Option<&dyn SignatureHost>,
    now: i64,
) -> Result<Verified, Reject> {
    if let Some(want) = &rules.typ {
        let ok = t
            .typ
            .as_deref()
            .is_some_and(|got| same_media_type(got, want));
        if !ok {
            return Err(Reject::WrongType);
        }
    }
    verify_signature(t, rules.algorithms, keys, host)?;
    check_claims(claims, rules, now)
}

/// The JWS part alone: the algorithm is allowed and fits the key, and the signature is good.
/// Key selection: by `kid` when the token names one, else every key that fits the algorithm
/// (at most [`MAX_KEY_TRIES`]). With a `host`, RS*/ES* signatures are verified by it (see
/// [`super::host_signature`]); everything else, and any failed host call, is verified in Wasm.
pub fn verify_signature(
    t: &Parsed<'_>,
    allowed: AlgSet,
    keys: &KeySet,
    host: Option<&dyn SignatureHost>,
) -> Result<(), Reject> {
    let alg = Algorithm::from_name(&t.alg).ok_or(Reject::AlgorithmNotAllowed)?;
    if !allowed.contains(alg) {
        return Err(Reject::AlgorithmNotAllowed);
    }
    let named = |k: &&super::keys::Jwk| match &t.kid {
        Some(kid) => k.kid.as_deref() == Some(kid.as_str()),
        None => true,
    };
    if t.kid.is_some() && !keys.keys.iter().any(|k| named(&k)) {
        return Err(Reject::UnknownKid);
    }
    let mut fitting = keys
        .keys
        .iter()
        .filter(named)
        .filter(|k| k.algs.contains(alg))
        .take(MAX_KEY_TRIES)
        .peekable();
    if fitting.peek().is_none() {
        // With a kid: the key exists but is bound to other algorithms (algorithm confusion).
        return Err(if t.kid.is_some() {
            Reject::AlgorithmNotAllowed
        } else {
            Reject::NoMatchingKey
        });
    }
    let good = |k: &super::keys::Jwk| {
        let verdict =
            host.map(|h| host_signature::verify(h, alg, k, t.signing_input, &t.signature));
        match verdict {
            Some(HostVerdict::Valid) => true,
            Some(HostVerdict::Invalid) => false,
            None | Some(HostVerdict::NotOffered | HostVerdict::Failed(_)) => {
                alg::verify(alg, &k.material, t.signing_input, &t.signature)
            }
        }
    };
    if fitting.any(good) {
        Ok(())
    } else {
        Err(Reject::BadSignature)
    }
}

/// `application/at+jwt` and `at+jwt` name the same type; the comparison ignores case.
fn same_media_type(got: &str, want: &str) -> bool {
    let strip = |s: &str| {
        let l = s.to_ascii_lowercase();
        l.strip_prefix("application/")
            .map(str::to_owned)
            .unwrap_or(l)
    };
    strip(got) == strip(want)
}

/// The last second of year 9999 (UTC): later NumericDates (`1e20`, `2^63 − 1`) are no dates
/// any issuer means, and past `i64` they would wrap where they are used as integers.
pub const MAX_NUMERIC_DATE: f64 = 253_402_300_799.0;

fn number(claims: &Map<String, Value>, name: &str) -> Result<Option<f64>, Reject> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => match n.as_f64() {
            Some(t) if (0.0..=MAX_NUMERIC_DATE).contains(&t) => Ok(Some(t)),
            _ => Err(Reject::BadTimeClaim),
        },
        Some(_) => Err(Reject::BadTimeClaim),
    }
}

/// The registered-claim checks (RFC 7519 §4.1) with the leeway applied.
pub fn check_claims(
    claims: &Map<String, Value>,
    p: &TokenRules,
    now: i64,
) -> Result<Verified, Reject> {
    if claims.get("iss").and_then(Value::as_str) != Some(p.issuer.as_str()) {
        return Err(Reject::WrongIssuer);
    }
    // Registered claims have the types RFC 7519 §4.1 gives them: a `sub` object must never
    // become an identity, an `aud` of numbers never a list a backend reads.
    match claims.get("sub") {
        Some(Value::String(s)) if !s.is_empty() => {}
        None if !p.require_sub => {}
        None => return Err(Reject::MissingClaim),
        Some(_) => return Err(Reject::BadClaimType),
    }
    match claims.get("aud") {
        None | Some(Value::String(_)) => {}
        Some(Value::Array(list)) if list.iter().all(Value::is_string) => {}
        Some(_) => return Err(Reject::BadClaimType),
    }
    if let Some(audiences) = &p.audiences {
        let ok = match claims.get("aud") {
            Some(Value::String(a)) => audiences.contains(a),
            Some(Value::Array(list)) => list
                .iter()
                .any(|a| a.as_str().is_some_and(|a| audiences.iter().any(|w| w == a))),
            _ => false,
        };
        if !ok {
            return Err(Reject::WrongAudience);
        }
    }
    let now_f = now as f64;
    let skew = p.clock_skew_s as f64;
    let exp = number(claims, "exp")?.ok_or(Reject::BadTimeClaim)?;
    if now_f >= exp + skew {
        return Err(Reject::Expired);
    }
    if let Some(nbf) = number(claims, "nbf")? {
        if now_f + skew < nbf {
            return Err(Reject::NotYetValid);
        }
    }
    let iat = number(claims, "iat")?;
    if let Some(iat) = iat {
        if iat > now_f + skew {
            return Err(Reject::IssuedInFuture);
        }
    }
    if let Some(max) = p.max_lifetime_s {
        // Without `iat` the lifetime is unknowable; measure what is left of it from now.
        let start = iat.unwrap_or(now_f);
        if exp - start > max as f64 || exp - now_f > max as f64 + skew {
            return Err(Reject::LifetimeTooLong);
        }
    }
    for name in &p.required_claims {
        if claims.get(name).is_none_or(Value::is_null) {
            return Err(Reject::MissingClaim);
        }
    }
    Ok(Verified {
        claims: claims.clone(),
        exp: exp.floor() as i64,
    })
}
