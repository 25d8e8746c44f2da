//! What apiguard counts: the typed [`Event`]s the core reports, and the [`Counter`] each one
//! moves. The mapping lives here, in one `match` the compiler checks, so a new or renamed event
//! cannot silently count as something else; the filter only hands counters to the host.

use crate::contract::RefusalKind;
use crate::jwt::shared::KeyNote;
use crate::jwt::stage::Invalid;
use crate::jwt::token::RejectClass;
use crate::policy::PolicyFailure;
use crate::ratelimit::LimiterFailure;

/// Things worth counting, reported with each step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    JwtAccepted {
        cached: bool,
    },
    JwtMissing,
    JwtRejected(Invalid),
    /// The path could not be read unambiguously (or carried a refused `;` parameter).
    BadPath,
    /// A method-override header under `request.method_override: reject`, or overrides that
    /// cannot be read as one method.
    BadMethodOverride,
    PolicyAllowed,
    PolicyDenied,
    /// The policy failed to decide (and so denied, unless in dry run).
    PolicyFailed(PolicyFailure),
    /// Dry run: the policy denied, the request went on.
    PolicyDryRunDeny,
    /// The shadow policy decided otherwise.
    PolicyShadowDisagree,
    /// The decision came from `policy.decision_cache`.
    PolicyCacheHit,
    RateAllowed,
    RateLimited,
    /// Answered 429 from the local over-limit cache, without a call.
    RateLimitedLocal,
    /// Over a shadow limit: counted, not enforced.
    RateShadowLimited,
    RateFailed(LimiterFailure),
    /// A limiter failure let through by `failure_mode: allow`.
    RateFailurePass,
    /// The checks went on to Envoy's `ext_authz` filter in the handoff header
    /// (`rate_limit.call: ext_authz`).
    RateHandedOver,
    /// A remote JWKS fetch produced keys.
    JwksFetched,
    /// A remote JWKS fetch failed (the last good keys stay).
    JwksFetchFailed,
    /// The request breaks the API's contract and was refused.
    ContractRefused(RefusalKind),
    /// `contract.mode: monitor`: the request would have been refused, and went on.
    ContractWouldRefuse(RefusalKind),
}

/// Declares [`Counter`] with every variant's Envoy name, once.
macro_rules! counters {
    ($($variant:ident => $name:literal,)*) => {
        /// Every counter apiguard keeps. Envoy shows each as `wasmcustom.<name>`.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Counter { $($variant),* }

        impl Counter {
            /// Every counter, in declaration order (`Counter::ALL[c as usize] == c`).
            pub const ALL: &'static [Counter] = &[$(Counter::$variant),*];

            /// The metric's name.
            pub fn name(self) -> &'static str {
                match self { $(Counter::$variant => $name),* }
            }
        }
    };
}

counters! {
    JwtAccepted => "apiguard.jwt.accepted",
    JwtMissing => "apiguard.jwt.missing",
    JwtRejectedMalformed => "apiguard.jwt.rejected.malformed",
    JwtRejectedHeader => "apiguard.jwt.rejected.header",
    JwtRejectedKey => "apiguard.jwt.rejected.key",
    JwtRejectedSignature => "apiguard.jwt.rejected.signature",
    JwtRejectedExpired => "apiguard.jwt.rejected.expired",
    JwtRejectedClaims => "apiguard.jwt.rejected.claims",
    JwtRejectedKeysUnavailable => "apiguard.jwt.rejected.keys_unavailable",
    JwtCacheHit => "apiguard.jwt.cache_hit",
    JwtCacheMiss => "apiguard.jwt.cache_miss",
    JwtHostSignatures => "apiguard.jwt.host_signatures",
    JwtHostSignatureFailures => "apiguard.jwt.host_signature_failures",
    JwksFetchSuccess => "apiguard.jwks.fetch_success",
    JwksFetchFailure => "apiguard.jwks.fetch_failure",
    RequestBadPath => "apiguard.request.bad_path",
    RequestMethodOverride => "apiguard.request.method_override",
    PolicyAllowed => "apiguard.policy.allowed",
    PolicyDenied => "apiguard.policy.denied",
    PolicyError => "apiguard.policy.error",
    PolicyTimeout => "apiguard.policy.timeout",
    PolicyUndefined => "apiguard.policy.undefined",
    PolicyDryRunDeny => "apiguard.policy.dry_run_deny",
    PolicyShadowDisagree => "apiguard.policy.shadow_disagree",
    PolicyCacheHit => "apiguard.policy.cache_hit",
    RatelimitAllowed => "apiguard.ratelimit.allowed",
    RatelimitLimited => "apiguard.ratelimit.limited",
    RatelimitLimitedLocal => "apiguard.ratelimit.limited_local",
    RatelimitShadowLimited => "apiguard.ratelimit.shadow_limited",
    RatelimitFailureModePass => "apiguard.ratelimit.failure_mode_pass",
    RatelimitHandedOver => "apiguard.ratelimit.handed_over",
    RatelimitFailureDispatch => "apiguard.ratelimit.failure.dispatch",
    RatelimitFailureNoResponse => "apiguard.ratelimit.failure.no_response",
    RatelimitFailureStatus => "apiguard.ratelimit.failure.status",
    RatelimitFailureTooLarge => "apiguard.ratelimit.failure.too_large",
    RatelimitFailureMalformed => "apiguard.ratelimit.failure.malformed",
    RatelimitFailureUnknownTier => "apiguard.ratelimit.failure.unknown_tier",
    RatelimitFailureQueue => "apiguard.ratelimit.failure.queue",
    ContractUnknownOperation => "apiguard.contract.refused.unknown_operation",
    ContractMethodNotAllowed => "apiguard.contract.refused.method_not_allowed",
    ContractInvalid => "apiguard.contract.refused.invalid",
    ContractUnsupportedMediaType => "apiguard.contract.refused.unsupported_media_type",
    ContractTooLarge => "apiguard.contract.refused.too_large",
    ContractLengthRequired => "apiguard.contract.refused.length_required",
    ContractWouldRefuse => "apiguard.contract.would_refuse",
}

impl Event {
    /// The counted event a key note is, if it is one.
    pub fn of_note(note: &KeyNote) -> Option<Event> {
        match note {
            KeyNote::Fetched { .. } => Some(Event::JwksFetched),
            KeyNote::FetchFailed { .. } => Some(Event::JwksFetchFailed),
            _ => None,
        }
    }

    /// The counters this event moves (one, or two for an accepted token: accepted and a cache
    /// hit or miss).
    pub fn counters(self) -> impl Iterator<Item = Counter> {
        let (first, second) = match self {
            Event::JwtAccepted { cached } => (
                Counter::JwtAccepted,
                Some(if cached {
                    Counter::JwtCacheHit
                } else {
                    Counter::JwtCacheMiss
                }),
            ),
            Event::JwtMissing => (Counter::JwtMissing, None),
            Event::JwtRejected(why) => (rejected(why), None),
            Event::BadPath => (Counter::RequestBadPath, None),
            Event::BadMethodOverride => (Counter::RequestMethodOverride, None),
            Event::PolicyAllowed => (Counter::PolicyAllowed, None),
            Event::PolicyDenied => (Counter::PolicyDenied, None),
            Event::PolicyFailed(PolicyFailure::Error) => (Counter::PolicyError, None),
            Event::PolicyFailed(PolicyFailure::Timeout) => (Counter::PolicyTimeout, None),
            Event::PolicyFailed(PolicyFailure::Undefined) => (Counter::PolicyUndefined, None),
            Event::PolicyDryRunDeny => (Counter::PolicyDryRunDeny, None),
            Event::PolicyShadowDisagree => (Counter::PolicyShadowDisagree, None),
            Event::PolicyCacheHit => (Counter::PolicyCacheHit, None),
            Event::RateAllowed => (Counter::RatelimitAllowed, None),
            Event::RateLimited => (Counter::RatelimitLimited, None),
            Event::RateLimitedLocal => (Counter::RatelimitLimitedLocal, None),
            Event::RateShadowLimited => (Counter::RatelimitShadowLimited, None),
            Event::RateFailurePass => (Counter::RatelimitFailureModePass, None),
            Event::RateHandedOver => (Counter::RatelimitHandedOver, None),
            Event::RateFailed(f) => (limiter_failed(f), None),
            Event::JwksFetched => (Counter::JwksFetchSuccess, None),
            Event::JwksFetchFailed => (Counter::JwksFetchFailure, None),
            Event::ContractRefused(kind) => (contract_refused(kind), None),
            Event::ContractWouldRefuse(_) => (Counter::ContractWouldRefuse, None),
        };
        std::iter::once(first).chain(second)
    }
}

fn rejected(why: Invalid) -> Counter {
    match why.class() {
        RejectClass::Malformed => Counter::JwtRejectedMalformed,
        RejectClass::Header => Counter::JwtRejectedHeader,
        RejectClass::Key => Counter::JwtRejectedKey,
        RejectClass::Signature => Counter::JwtRejectedSignature,
        RejectClass::Expired => Counter::JwtRejectedExpired,
        RejectClass::Claims => Counter::JwtRejectedClaims,
        RejectClass::KeysUnavailable => Counter::JwtRejectedKeysUnavailable,
    }
}

fn contract_refused(kind: RefusalKind) -> Counter {
    match kind {
        RefusalKind::UnknownOperation => Counter::ContractUnknownOperation,
        RefusalKind::MethodNotAllowed => Counter::ContractMethodNotAllowed,
        RefusalKind::Invalid => Counter::ContractInvalid,
        RefusalKind::UnsupportedMediaType => Counter::ContractUnsupportedMediaType,
        RefusalKind::TooLarge => Counter::ContractTooLarge,
        RefusalKind::LengthRequired => Counter::ContractLengthRequired,
    }
}

fn limiter_failed(f: LimiterFailure) -> Counter {
    match f {
        LimiterFailure::Dispatch => Counter::RatelimitFailureDispatch,
        LimiterFailure::NoResponse => Counter::RatelimitFailureNoResponse,
        LimiterFailure::Status => Counter::RatelimitFailureStatus,
        LimiterFailure::TooLarge => Counter::RatelimitFailureTooLarge,
        LimiterFailure::Malformed => Counter::RatelimitFailureMalformed,
        LimiterFailure::UnknownTier => Counter::RatelimitFailureUnknownTier,
        LimiterFailure::Queue => Counter::RatelimitFailureQueue,
    }
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    #[test]
    fn counters_are_indexed_by_their_declaration_order_and_named_once() {
        for (i, c) in Counter::ALL.iter().enumerate() {
            assert_eq!(*c as usize, i);
        }
        let mut names: Vec<&str> = Counter::ALL.iter().map(|c| c.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Counter::ALL.len());
    }

    #[test]
    fn every_refusal_class_has_its_own_counter() {
        use crate::jwt::token::Reject;
        let cases = [
            (Invalid::Repeated, "apiguard.jwt.rejected.malformed"),
            (Invalid::NoKeys, "apiguard.jwt.rejected.keys_unavailable"),
            (
                Invalid::Token(Reject::UnknownKid),
                "apiguard.jwt.rejected.key",
            ),
            (
                Invalid::Token(Reject::BadSignature),
                "apiguard.jwt.rejected.signature",
            ),
            (
                Invalid::Token(Reject::Expired),
                "apiguard.jwt.rejected.expired",
            ),
        ];
        for (why, name) in cases {
            let got: Vec<&str> = Event::JwtRejected(why)
                .counters()
                .map(Counter::name)
                .collect();
            assert_eq!(got, [name], "{why:?}");
        }
        let cached: Vec<Counter> = Event::JwtAccepted { cached: true }.counters().collect();
        assert_eq!(cached, [Counter::JwtAccepted, Counter::JwtCacheHit]);
    }
}
