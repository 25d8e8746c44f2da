//! The jwt stage's face to the flow: what one worker keeps for authentication ([`JwtWorker`])
//! and how authenticating a request ended ([`JwtOutcome`]), the "keys are missing" case already
//! turned into a fetch this worker holds the lease of, or a refusal.

use std::sync::Arc;

use super::cache::TokenCache;
use super::host_signature::SignatureHost;
use super::remote::{FetchError, FetchReason};
use super::shared::{Fetch, KeyNote, SharedData, SharedKeys};
use super::stage::{AuthOutcome, Invalid, JwtStage, KeyRing};
use super::token::Reject;
use crate::http::{HeaderOp, Headers};
use crate::identity::Claims;
use crate::path::NormalizedPath;

/// Per worker: the keys known now and their coordination with other workers, the
/// verified-token cache, the host's signature verifier.
pub struct JwtWorker {
    pub keys: KeyRing,
    pub cache: TokenCache,
    /// The host's signature verifier, when it offers one and `jwt.host_signatures` allows it
    /// (the filter installs it after [`super::host_signature::self_test`]).
    pub signature_host: Option<Box<dyn SignatureHost>>,
    remote: SharedKeys,
    shared: Box<dyn SharedData>,
}

/// How authentication ended.
#[derive(Debug, Clone)]
pub enum JwtOutcome {
    /// The path requires no token.
    Public,
    /// A token checked out: who sent it, whether the cache knew it, and the header changes
    /// (identity headers set, the token removed unless forwarded).
    Verified {
        provider: Arc<str>,
        claims: Arc<Claims>,
        cached: bool,
        ops: Vec<HeaderOp>,
    },
    Missing,
    Refused(Invalid),
    /// This worker took the lease to fetch the provider's keys: make the call, then run the
    /// request again (once; without the keys the token is refused).
    FetchKeys(Fetch),
}

impl JwtWorker {
    /// Fresh state for `stage` (none: no jwt section), coordinating remote keys through
    /// `shared`; creates the fetch leases that do not exist yet.
    pub fn new(stage: Option<&JwtStage>, shared: Box<dyn SharedData>) -> JwtWorker {
        let (keys, cache, remote) = match stage {
            Some(j) => (
                KeyRing::new(j),
                TokenCache::new(j.cache_entries),
                SharedKeys::new(j),
            ),
            None => (
                KeyRing::default(),
                TokenCache::new(0),
                SharedKeys::default(),
            ),
        };
        remote.create_leases(&*shared);
        JwtWorker {
            keys,
            cache,
            signature_host: None,
            remote,
            shared,
        }
    }

    /// Whether any provider's keys are remote (the timer has key work to do).
    pub fn has_remote_keys(&self) -> bool {
        self.remote.any()
    }

    /// The timer's key work: load keys other workers fetched, drop stale ones, and take the
    /// lease of every refresh that is due (the filter makes those calls).
    pub fn tick(&mut self, now: i64) -> (Vec<Fetch>, Vec<KeyNote>) {
        self.remote.tick(&*self.shared, now, &mut self.keys)
    }

    /// A JWKS fetch ended: the status (`None`: no response), the body's full size, and the body
    /// as read (empty when over the limit).
    pub fn finish_fetch(
        &mut self,
        provider: usize,
        now: i64,
        answer: (Option<u16>, usize, Vec<u8>),
    ) -> Vec<KeyNote> {
        self.remote
            .finish(&*self.shared, provider, now, answer, &mut self.keys)
    }

    /// A JWKS fetch could not be started.
    pub fn fetch_failed(&mut self, provider: usize, now: i64) -> Vec<KeyNote> {
        self.remote
            .failed(&*self.shared, provider, now, FetchError::NoResponse)
    }
}

impl JwtStage {
    /// Authenticates a request at Unix time `now`. Keys missing for its token become a fetch
    /// when `may_fetch` and this worker wins the lease; otherwise the token is refused.
    pub fn run(
        &self,
        worker: &mut JwtWorker,
        headers: &Headers<'_>,
        path: &NormalizedPath,
        now: i64,
        may_fetch: bool,
    ) -> JwtOutcome {
        let auth = self.authenticate(
            headers,
            path,
            now,
            &worker.keys,
            &mut worker.cache,
            worker.signature_host.as_deref(),
        );
        match auth {
            AuthOutcome::Public => JwtOutcome::Public,
            AuthOutcome::Missing => JwtOutcome::Missing,
            AuthOutcome::Invalid(why) => JwtOutcome::Refused(why),
            AuthOutcome::NeedKeys {
                provider,
                unknown_kid,
            } => {
                let reason = if unknown_kid {
                    FetchReason::UnknownKid
                } else {
                    FetchReason::Refresh
                };
                let fetch = may_fetch
                    .then(|| worker.remote.begin(&*worker.shared, provider, now, reason))
                    .flatten();
                match fetch {
                    Some(fetch) => JwtOutcome::FetchKeys(fetch),
                    None if unknown_kid => JwtOutcome::Refused(Invalid::Token(Reject::UnknownKid)),
                    None => JwtOutcome::Refused(Invalid::NoKeys),
                }
            }
            AuthOutcome::Verified {
                ref identity,
                cached,
            } => match self.mutations(&auth) {
                Ok(ops) => JwtOutcome::Verified {
                    provider: self.provider_name(identity.provider),
                    claims: identity.claims.clone(),
                    cached,
                    ops,
                },
                Err(why) => JwtOutcome::Refused(why),
            },
        }
    }
}
