//! State one worker's VM keeps for the whole plugin: the compiled pipeline, the keys and token
//! cache, counters, and the bookkeeping for remote JWKS shared with the other workers.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use apiguard_core::config::{HostSignatures, RemoteJwks};
use apiguard_core::flow::{Event, Pipeline, WorkerState};
use apiguard_core::jwt::host as jwt_host;
use apiguard_core::jwt::keys::{KeySet, MAX_JWKS_BYTES};
use apiguard_core::jwt::remote::{self, FetchError, FetchReason, Lease, SharedJwks};
use apiguard_core::jwt::stage::Jwks;
use apiguard_core::jwt::token::RejectClass;
use apiguard_core::policy::PolicyFailure;
use apiguard_core::ratelimit::LimiterFailure;
use log::{debug, info, warn};

use crate::counters;
use crate::host::{self, Counters, EnvoySignatures, SignatureStats};

// Every counter, once: its variant and its Envoy name.
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
    RatelimitFailureDispatch => "apiguard.ratelimit.failure.dispatch",
    RatelimitFailureNoResponse => "apiguard.ratelimit.failure.no_response",
    RatelimitFailureStatus => "apiguard.ratelimit.failure.status",
    RatelimitFailureTooLarge => "apiguard.ratelimit.failure.too_large",
    RatelimitFailureMalformed => "apiguard.ratelimit.failure.malformed",
    RatelimitFailureUnknownTier => "apiguard.ratelimit.failure.unknown_tier",
}

/// This worker's view of one remote provider's shared keys.
struct RemoteSlot {
    cfg: RemoteJwks,
    /// Shared-data keys: the record and the fetch lease. Named by cluster and path, so two
    /// providers reading one JWKS share one fetch.
    record_key: String,
    lease_key: String,
    /// The record version this worker last loaded.
    seen_cas: Option<u32>,
    fetched_at: Option<i64>,
}

/// An outgoing JWKS fetch this worker owns.
pub struct Fetch {
    pub provider: usize,
    pub cluster: String,
    pub path: String,
    pub authority: String,
    pub timeout: Duration,
}

pub struct Worker {
    pub pipeline: Arc<Pipeline>,
    pub state: WorkerState,
    pub counters: Counters,
    /// Histogram of limiter call latency (ms).
    callout_ms: Option<u32>,
    remote: Vec<Option<RemoteSlot>>,
    /// Present when signatures go to the host's `verify_signature`.
    signature_stats: Option<Rc<SignatureStats>>,
}

impl Worker {
    pub fn new(pipeline: Arc<Pipeline>) -> Worker {
        let state = pipeline.worker_state();
        let remote = pipeline
            .jwt
            .as_ref()
            .map(|j| {
                j.providers
                    .iter()
                    .map(|p| match &p.jwks {
                        Jwks::Remote(cfg) => Some(RemoteSlot {
                            record_key: format!("apiguard.jwks|{}|{}", cfg.cluster, cfg.path),
                            lease_key: format!("apiguard.jwks.lease|{}|{}", cfg.cluster, cfg.path),
                            cfg: cfg.clone(),
                            seen_cas: None,
                            fetched_at: None,
                        }),
                        Jwks::Inline(_) => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        let callout_ms = if pipeline.ratelimit.is_some() {
            host::define_histogram("apiguard.ratelimit.callout_ms")
        } else {
            None
        };
        Worker {
            pipeline,
            state,
            counters: Counters::define(COUNTER_NAMES),
            callout_ms,
            remote,
            signature_stats: None,
        }
    }

    /// Sends RS*/ES* signatures to Envoy's `verify_signature` when `jwt.host_signatures` is
    /// `auto` and the host passes the self-test; says which way it went in the log.
    pub fn choose_signature_path(&mut self) {
        let Some(jwt) = &self.pipeline.config.jwt else {
            return;
        };
        if jwt.host_signatures == HostSignatures::Off {
            info!("apiguard: signatures are verified in Wasm (jwt.host_signatures: off)");
            return;
        }
        let envoy = EnvoySignatures::default();
        match jwt_host::self_test(&envoy) {
            Ok(()) => {
                info!("apiguard: RS256/RS384/RS512/ES256/ES384 signatures are verified by the host (verify_signature); others in Wasm");
                // The self-test's calls are not traffic: count from zero.
                envoy.stats.calls.set(0);
                envoy.stats.failures.set(0);
                self.signature_stats = Some(envoy.stats.clone());
                self.state.signature_host = Some(Box::new(envoy));
            }
            Err(e) => info!("apiguard: signatures are verified in Wasm: {e}"),
        }
    }

    /// Hands pending counts to Envoy (once a tick).
    pub fn flush_counters(&mut self) {
        if let Some(s) = &self.signature_stats {
            self.counters
                .add(Counter::JwtHostSignatures, s.calls.replace(0));
            self.counters
                .add(Counter::JwtHostSignatureFailures, s.failures.replace(0));
        }
        self.counters.flush();
    }

    /// Creates the fetch leases that do not exist yet, so that taking one is always a
    /// compare-and-swap on an existing value.
    pub fn create_leases(&self) {
        for slot in self.remote.iter().flatten() {
            if host::shared_get(&slot.lease_key).1.is_none() {
                let free = Lease {
                    until: 0,
                    failures: 0,
                };
                let _ = host::shared_set(&slot.lease_key, &free.encode(), None);
            }
        }
    }

    pub fn has_remote_keys(&self) -> bool {
        self.remote.iter().any(Option::is_some)
    }

    pub fn count(&mut self, events: &[Event]) {
        for e in events {
            self.counters.inc(counter(e));
            if let Event::JwtAccepted { cached } = e {
                self.counters.inc(if *cached {
                    Counter::JwtCacheHit
                } else {
                    Counter::JwtCacheMiss
                });
            }
        }
    }

    /// Records one limiter call's latency.
    pub fn record_callout(&self, ms: i64) {
        if let Some(id) = self.callout_ms {
            host::record(id, u64::try_from(ms).unwrap_or(0));
        }
    }

    /// Loads keys other workers fetched, and drops keys past `max_stale_s`.
    pub fn sync(&mut self, now: i64) {
        for (i, slot) in self.remote.iter_mut().enumerate() {
            let Some(slot) = slot else { continue };
            let (value, cas) = host::shared_get(&slot.record_key);
            if cas.is_some() && cas != slot.seen_cas {
                slot.seen_cas = cas;
                if let Some(rec) = value.as_deref().and_then(SharedJwks::decode) {
                    match KeySet::from_document(&rec.body) {
                        Ok((keys, _)) => {
                            debug!(
                                "apiguard: loaded {} keys for provider #{i} (fetched at {})",
                                keys.len(),
                                rec.fetched_at
                            );
                            slot.fetched_at = Some(rec.fetched_at);
                            self.state.keys.set(i, Some(Arc::new(keys)));
                        }
                        Err(e) => warn!("apiguard: shared JWKS for provider #{i} is unusable: {e}"),
                    }
                }
            }
            if let Some(at) = slot.fetched_at {
                if remote::is_stale(at, now, &slot.cfg) && self.state.keys.get(i).is_some() {
                    warn!(
                        "apiguard: keys of provider #{i} are older than max_stale_s ({} s) and refreshes fail: dropping them; tokens are refused until a fetch succeeds",
                        slot.cfg.max_stale_s
                    );
                    self.state.keys.set(i, None);
                }
            }
        }
    }

    /// Providers whose periodic refresh is due.
    pub fn due(&self, now: i64) -> Vec<usize> {
        self.remote
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                let s = s.as_ref()?;
                remote::fetch_due(s.fetched_at, now, &s.cfg, FetchReason::Refresh).then_some(i)
            })
            .collect()
    }

    /// Takes the fetch lease for `provider` if a fetch for `reason` is due and no other worker
    /// holds it.
    pub fn begin_fetch(&mut self, provider: usize, now: i64, reason: FetchReason) -> Option<Fetch> {
        let slot = self.remote.get(provider)?.as_ref()?;
        if !remote::fetch_due(slot.fetched_at, now, &slot.cfg, reason) {
            return None;
        }
        let (value, cas) = host::shared_get(&slot.lease_key);
        let prev = value.as_deref().and_then(Lease::decode);
        if !Lease::is_free(prev, now) {
            return None;
        }
        // Compare-and-swap on the version read above: of two workers racing here, one wins.
        // (Envoy has no create-only write, hence the lease is created at configure time.)
        let cas = cas?;
        let lease = Lease::taken(prev, now, &slot.cfg);
        if !host::shared_set(&slot.lease_key, &lease.encode(), Some(cas)) {
            return None;
        }
        Some(Fetch {
            provider,
            cluster: slot.cfg.cluster.clone(),
            path: slot.cfg.path.clone(),
            authority: slot
                .cfg
                .authority
                .clone()
                .unwrap_or_else(|| slot.cfg.cluster.clone()),
            timeout: Duration::from_millis(slot.cfg.timeout_ms),
        })
    }

    /// Starts a fetch on the host; false (lease released as a failure) if it could not start.
    pub fn dispatch(&mut self, fetch: &Fetch, now: i64) -> Option<u32> {
        match host::http_get(&fetch.cluster, &fetch.path, &fetch.authority, fetch.timeout) {
            Ok(token) => Some(token),
            Err(status) => {
                warn!(
                    "apiguard: cannot fetch JWKS from cluster `{}`: {status}",
                    fetch.cluster
                );
                self.fail(fetch.provider, now, &FetchError::NoResponse);
                None
            }
        }
    }

    /// Handles a finished fetch: on success the keys go to shared data (for every worker) and
    /// to this worker at once; on failure the last good keys stay and the lease backs off.
    pub fn finish_fetch(&mut self, provider: usize, now: i64, body_size: usize) {
        let (status, body) = host::call_response(body_size, MAX_JWKS_BYTES);
        match remote::accept_response(status, body_size, &body) {
            Ok((keys, skipped)) => {
                for s in &skipped {
                    warn!("apiguard: JWKS of provider #{provider}: skipped {s}");
                }
                let Some(Some(slot)) = self.remote.get_mut(provider) else {
                    return;
                };
                let record = SharedJwks {
                    fetched_at: now,
                    body,
                };
                if !host::shared_set(&slot.record_key, &record.encode(), None) {
                    warn!("apiguard: cannot share fetched JWKS with other workers");
                }
                let (_, cas) = host::shared_get(&slot.record_key);
                slot.seen_cas = cas;
                slot.fetched_at = Some(now);
                let _ = host::shared_set(&slot.lease_key, &Lease::succeeded(now).encode(), None);
                info!(
                    "apiguard: fetched JWKS for provider #{provider}: {} keys",
                    keys.len()
                );
                self.state.keys.set(provider, Some(keys));
                self.counters.inc(Counter::JwksFetchSuccess);
            }
            Err(e) => self.fail(provider, now, &e),
        }
    }

    fn fail(&mut self, provider: usize, now: i64, e: &FetchError) {
        self.counters.inc(Counter::JwksFetchFailure);
        let Some(Some(slot)) = self.remote.get(provider) else {
            return;
        };
        warn!(
            "apiguard: JWKS fetch for provider #{provider} failed: {e}; keeping the last good keys"
        );
        let (value, _) = host::shared_get(&slot.lease_key);
        let prev = value.as_deref().and_then(Lease::decode).unwrap_or(Lease {
            until: now,
            failures: 0,
        });
        let _ = host::shared_set(
            &slot.lease_key,
            &Lease::failed(prev, now, &slot.cfg).encode(),
            None,
        );
    }
}

/// The counter an event moves.
fn counter(e: &Event) -> Counter {
    match e {
        Event::JwtAccepted { .. } => Counter::JwtAccepted,
        Event::JwtMissing => Counter::JwtMissing,
        Event::JwtRejected(why) => match why.class() {
            RejectClass::Malformed => Counter::JwtRejectedMalformed,
            RejectClass::Header => Counter::JwtRejectedHeader,
            RejectClass::Key => Counter::JwtRejectedKey,
            RejectClass::Signature => Counter::JwtRejectedSignature,
            RejectClass::Expired => Counter::JwtRejectedExpired,
            RejectClass::Claims => Counter::JwtRejectedClaims,
            RejectClass::KeysUnavailable => Counter::JwtRejectedKeysUnavailable,
        },
        Event::BadPath => Counter::RequestBadPath,
        Event::BadMethodOverride => Counter::RequestMethodOverride,
        Event::PolicyAllowed => Counter::PolicyAllowed,
        Event::PolicyDenied => Counter::PolicyDenied,
        Event::PolicyFailed(PolicyFailure::Error) => Counter::PolicyError,
        Event::PolicyFailed(PolicyFailure::Timeout) => Counter::PolicyTimeout,
        Event::PolicyFailed(PolicyFailure::Undefined) => Counter::PolicyUndefined,
        Event::PolicyDryRunDeny => Counter::PolicyDryRunDeny,
        Event::PolicyShadowDisagree => Counter::PolicyShadowDisagree,
        Event::PolicyCacheHit => Counter::PolicyCacheHit,
        Event::RateAllowed => Counter::RatelimitAllowed,
        Event::RateLimited => Counter::RatelimitLimited,
        Event::RateLimitedLocal => Counter::RatelimitLimitedLocal,
        Event::RateShadowLimited => Counter::RatelimitShadowLimited,
        Event::RateFailurePass => Counter::RatelimitFailureModePass,
        Event::RateFailed(f) => match f {
            LimiterFailure::Dispatch => Counter::RatelimitFailureDispatch,
            LimiterFailure::NoResponse => Counter::RatelimitFailureNoResponse,
            LimiterFailure::Status => Counter::RatelimitFailureStatus,
            LimiterFailure::TooLarge => Counter::RatelimitFailureTooLarge,
            LimiterFailure::Malformed => Counter::RatelimitFailureMalformed,
            LimiterFailure::UnknownTier => Counter::RatelimitFailureUnknownTier,
        },
    }
}

impl From<Counter> for usize {
    fn from(c: Counter) -> usize {
        c as usize
    }
}
