//! Remote JWKS across workers: one fetch serves every worker's VM.
//!
//! Envoy runs one Wasm VM per worker; they share nothing but the host's shared data, a map of
//! byte values each with a version number that a write can be made conditional on (compare and
//! swap). [`SharedData`] is that map, so the coordination is decided here, natively tested
//! ([`MemoryShared`] behaves as Envoy's), and the filter only passes the host's map in.
//!
//! The contract, per remote JWKS (named by cluster and path, so two providers reading one JWKS
//! share one fetch):
//! - the fetched document is kept as a [`JwksRecord`]; each worker reloads its keys when
//!   the record's version changes ([`SharedKeys::sync`]);
//! - a [`Lease`] record makes fetching single-flight: a worker fetches only after winning a
//!   compare-and-swap on it, and failures back off through it;
//! - keys older than `max_stale_s` are dropped (tokens are refused until a fetch succeeds);
//! - a request waits for at most one fetch: the pipeline's `on_request` may answer
//!   `Step::FetchKeys`, its retry after the fetch (`on_request_after_fetch`) may not.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use super::keys::{JwksError, KeySet, Skipped};
use super::remote::{self, FetchError, FetchReason, JwksRecord, Lease};
use super::stage::{Jwks, JwtStage, KeyRing};
use crate::config::RemoteJwks;
use crate::log_line::Level;

/// The host's shared data, as proxy-wasm defines it.
pub trait SharedData {
    /// The value and its version; `None` if the key was never written (or the host failed).
    fn get(&self, key: &str) -> Option<(Vec<u8>, u32)>;
    /// Writes `value`. With `cas`, only if the stored version is still `cas` — but, as in Envoy,
    /// a key that does not exist yet is written whatever `cas` says (there is no create-only
    /// write). False if the write did not happen.
    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> bool;
}

/// Shared data in memory, with Envoy's semantics: one version counter for the whole map, a
/// conditional write to an existing key fails on a version mismatch. For tests, and for the
/// filter's native builds.
#[derive(Debug, Default)]
pub struct MemoryShared {
    map: RefCell<HashMap<String, (Vec<u8>, u32)>>,
    next: RefCell<u32>,
}

impl SharedData for MemoryShared {
    fn get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        self.map.borrow().get(key).cloned()
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> bool {
        let mut map = self.map.borrow_mut();
        // As in Envoy, a version of 0 is no condition at all.
        if let (Some(want), Some((_, have))) = (cas.filter(|c| *c != 0), map.get(key)) {
            if want != *have {
                return false;
            }
        }
        let mut next = self.next.borrow_mut();
        *next = next.wrapping_add(1).max(1);
        map.insert(key.to_owned(), (value.to_vec(), *next));
        true
    }
}

/// A JWKS fetch this worker won the lease for: the filter makes the call and hands the answer
/// to [`SharedKeys::finish`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetch {
    pub provider: usize,
    pub cluster: String,
    pub path: String,
    pub authority: String,
    pub timeout_ms: u64,
}

/// What happened to the keys, for the filter's log (and, through `events::Event::of_note`, its
/// counters).
#[derive(Debug, Clone, PartialEq)]
pub enum KeyNote {
    /// Keys another worker fetched were loaded.
    Loaded {
        provider: usize,
        keys: usize,
        fetched_at: i64,
    },
    /// The shared record could not be read as a JWK Set.
    Unusable { provider: usize, error: JwksError },
    /// Keys past `max_stale_s` were dropped.
    Dropped { provider: usize, max_stale_s: u64 },
    /// A fetch produced keys (and skipped these).
    Fetched {
        provider: usize,
        keys: usize,
        skipped: Vec<Skipped>,
    },
    /// The fetched keys could not be written to shared data (other workers will fetch).
    NotShared { provider: usize },
    /// A fetch failed; the last good keys stay.
    FetchFailed { provider: usize, error: FetchError },
}

impl KeyNote {
    /// How loud the note is in the log.
    pub fn level(&self) -> Level {
        match self {
            KeyNote::Loaded { .. } => Level::Debug,
            KeyNote::Fetched { skipped, .. } if skipped.is_empty() => Level::Info,
            KeyNote::Fetched { .. } => Level::Warn,
            _ => Level::Warn,
        }
    }
}

impl fmt::Display for KeyNote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyNote::Loaded {
                provider,
                keys,
                fetched_at,
            } => write!(
                f,
                "loaded {keys} keys for provider #{provider} (fetched at {fetched_at})"
            ),
            KeyNote::Unusable { provider, error } => {
                write!(f, "shared JWKS for provider #{provider} is unusable: {error}")
            }
            KeyNote::Dropped {
                provider,
                max_stale_s,
            } => write!(
                f,
                "keys of provider #{provider} are older than max_stale_s ({max_stale_s} s) and refreshes fail: dropping them; tokens are refused until a fetch succeeds"
            ),
            KeyNote::Fetched {
                provider,
                keys,
                skipped,
            } => {
                write!(f, "fetched JWKS for provider #{provider}: {keys} keys")?;
                for s in skipped {
                    write!(f, "; skipped {s}")?;
                }
                Ok(())
            }
            KeyNote::NotShared { provider } => write!(
                f,
                "cannot share the fetched JWKS of provider #{provider} with other workers"
            ),
            KeyNote::FetchFailed { provider, error } => write!(
                f,
                "JWKS fetch for provider #{provider} failed: {error}; keeping the last good keys"
            ),
        }
    }
}

/// This worker's view of one remote provider's shared keys.
#[derive(Debug, Clone)]
struct Slot {
    cfg: RemoteJwks,
    record_key: String,
    lease_key: String,
    /// The record version this worker last loaded.
    seen: Option<u32>,
    fetched_at: Option<i64>,
}

/// The keys of every remote provider as this worker shares them with the others: one worker's
/// side of the coordination (the record each reloads from, the lease each fetches under).
#[derive(Debug, Clone, Default)]
pub struct SharedKeys {
    slots: Vec<Option<Slot>>,
}

impl SharedKeys {
    pub fn new(stage: &JwtStage) -> SharedKeys {
        let slots = stage
            .providers
            .iter()
            .map(|p| match &p.jwks {
                Jwks::Remote(cfg) => Some(Slot {
                    record_key: format!("apiguard.jwks|{}|{}", cfg.cluster, cfg.path),
                    lease_key: format!("apiguard.jwks.lease|{}|{}", cfg.cluster, cfg.path),
                    cfg: cfg.clone(),
                    seen: None,
                    fetched_at: None,
                }),
                Jwks::Inline(_) => None,
            })
            .collect();
        SharedKeys { slots }
    }

    /// Whether any provider's keys are remote (else the filter needs no timer work for keys).
    pub fn any(&self) -> bool {
        self.slots.iter().any(Option::is_some)
    }

    /// Creates the leases that do not exist yet, so that taking one is always a compare-and-swap
    /// on an existing value (Envoy has no create-only write). Called at configure time.
    pub fn create_leases(&self, shared: &dyn SharedData) {
        for slot in self.slots.iter().flatten() {
            if shared.get(&slot.lease_key).is_none() {
                let free = Lease {
                    until: 0,
                    failures: 0,
                };
                let _ = shared.set(&slot.lease_key, &free.encode(), None);
            }
        }
    }

    /// Loads keys other workers fetched, and drops keys past `max_stale_s`.
    pub fn sync(&mut self, shared: &dyn SharedData, now: i64, keys: &mut KeyRing) -> Vec<KeyNote> {
        let mut notes = Vec::new();
        for (provider, slot) in self.slots.iter_mut().enumerate() {
            let Some(slot) = slot else { continue };
            if let Some((value, version)) = shared.get(&slot.record_key) {
                if slot.seen != Some(version) {
                    slot.seen = Some(version);
                    if let Some(rec) = JwksRecord::decode(&value) {
                        match KeySet::from_document(&rec.body) {
                            Ok((set, _)) => {
                                notes.push(KeyNote::Loaded {
                                    provider,
                                    keys: set.keys.len(),
                                    fetched_at: rec.fetched_at,
                                });
                                slot.fetched_at = Some(rec.fetched_at);
                                keys.set(provider, Some(Arc::new(set)));
                            }
                            Err(error) => notes.push(KeyNote::Unusable { provider, error }),
                        }
                    }
                }
            }
            if let Some(at) = slot.fetched_at {
                if remote::is_stale(at, now, &slot.cfg) && keys.get(provider).is_some() {
                    notes.push(KeyNote::Dropped {
                        provider,
                        max_stale_s: slot.cfg.max_stale_s,
                    });
                    keys.set(provider, None);
                }
            }
        }
        notes
    }

    /// The timer's work: sync, then take the lease of every provider whose refresh is due.
    pub fn tick(
        &mut self,
        shared: &dyn SharedData,
        now: i64,
        keys: &mut KeyRing,
    ) -> (Vec<Fetch>, Vec<KeyNote>) {
        let notes = self.sync(shared, now, keys);
        let fetches = (0..self.slots.len())
            .filter_map(|p| self.begin(shared, p, now, FetchReason::Refresh))
            .collect();
        (fetches, notes)
    }

    /// Takes the fetch lease for `provider` if a fetch for `reason` is due and no other worker
    /// holds it.
    pub fn begin(
        &mut self,
        shared: &dyn SharedData,
        provider: usize,
        now: i64,
        reason: FetchReason,
    ) -> Option<Fetch> {
        let slot = self.slots.get(provider)?.as_ref()?;
        if !remote::fetch_due(slot.fetched_at, now, &slot.cfg, reason) {
            return None;
        }
        let (value, version) = shared.get(&slot.lease_key)?;
        let prev = Lease::decode(&value);
        if !Lease::is_free(prev, now) {
            return None;
        }
        // Compare-and-swap on the version read above: of two workers racing here, one wins.
        let lease = Lease::taken(prev, now, &slot.cfg);
        if !shared.set(&slot.lease_key, &lease.encode(), Some(version)) {
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
            timeout_ms: slot.cfg.timeout_ms,
        })
    }

    /// A fetch ended: `answer` is the status (`None`: no response) with the body's full size
    /// and the body as read (empty when over the limit). On success the keys go to shared data
    /// (for every worker) and to this worker at once, and the lease is released; on failure the
    /// last good keys stay and the lease backs off.
    pub fn finish(
        &mut self,
        shared: &dyn SharedData,
        provider: usize,
        now: i64,
        answer: (Option<u16>, usize, Vec<u8>),
        keys: &mut KeyRing,
    ) -> Vec<KeyNote> {
        let (status, body_size, body) = answer;
        match remote::accept_response(status, body_size, &body) {
            Ok((set, skipped)) => {
                let Some(Some(slot)) = self.slots.get_mut(provider) else {
                    return Vec::new();
                };
                let mut notes = Vec::new();
                let record = JwksRecord {
                    fetched_at: now,
                    body,
                };
                if !shared.set(&slot.record_key, &record.encode(), None) {
                    notes.push(KeyNote::NotShared { provider });
                }
                slot.seen = shared.get(&slot.record_key).map(|(_, v)| v);
                slot.fetched_at = Some(now);
                let _ = shared.set(&slot.lease_key, &Lease::succeeded(now).encode(), None);
                notes.push(KeyNote::Fetched {
                    provider,
                    keys: set.keys.len(),
                    skipped,
                });
                keys.set(provider, Some(set));
                notes
            }
            Err(error) => self.failed(shared, provider, now, error),
        }
    }

    /// A fetch failed (or could not start): the lease backs off.
    pub fn failed(
        &mut self,
        shared: &dyn SharedData,
        provider: usize,
        now: i64,
        error: FetchError,
    ) -> Vec<KeyNote> {
        let Some(Some(slot)) = self.slots.get(provider) else {
            return Vec::new();
        };
        let prev = shared
            .get(&slot.lease_key)
            .and_then(|(v, _)| Lease::decode(&v))
            .unwrap_or(Lease {
                until: now,
                failures: 0,
            });
        let _ = shared.set(
            &slot.lease_key,
            &Lease::failed(prev, now, &slot.cfg).encode(),
            None,
        );
        vec![KeyNote::FetchFailed { provider, error }]
    }
}
