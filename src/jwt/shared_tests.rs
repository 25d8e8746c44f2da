//! Remote JWKS coordination across workers, natively: several workers' states over one
//! [`MemoryShared`] (Envoy's semantics), including the interleavings a real host produces.

#[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
use wasm_bindgen_test::wasm_bindgen_test as test;

use std::cell::RefCell;
use std::rc::Rc;

use serde_json::json;

use super::remote::{FetchError, FetchReason};
use super::shared::{Fetch, KeyNote, MemoryShared, SharedData, SharedKeys};
use super::stage::KeyRing;
use crate::flow::Pipeline;

const T0: i64 = 1_700_000_000;

/// The shared data of one Envoy, handed to each worker.
#[derive(Clone, Default)]
struct Envoy(Rc<MemoryShared>);

impl SharedData for Envoy {
    fn get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        self.0.get(key)
    }
    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> bool {
        self.0.set(key, value, cas)
    }
}

/// Shared data where another worker acts between this worker's read and its conditional
/// write: the interleaving that makes a read-then-write lease unsafe without compare-and-swap.
struct Interleaved {
    inner: Envoy,
    before_cas: RefCell<Option<Box<dyn FnOnce()>>>,
}

impl SharedData for Interleaved {
    fn get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        self.inner.get(key)
    }
    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> bool {
        if cas.is_some() {
            if let Some(other) = self.before_cas.borrow_mut().take() {
                other();
            }
        }
        self.inner.set(key, value, cas)
    }
}

fn pipeline() -> Pipeline {
    let cfg = json!({"jwt": {"providers": {"p": {"issuer": "i", "jwks": {"remote": {
        "cluster": "idp", "path": "/jwks", "timeout_ms": 2000, "refresh_s": 300,
        "min_refetch_s": 30, "max_stale_s": 3600}}}}}});
    Pipeline::from_json(cfg.to_string().as_bytes()).unwrap().0
}

/// One worker: its coordination state and its keys.
fn worker(p: &Pipeline, shared: &dyn SharedData) -> (SharedKeys, KeyRing) {
    let jwt = p.jwt.as_ref().unwrap();
    let remote = SharedKeys::new(jwt);
    remote.create_leases(shared);
    (remote, KeyRing::new(jwt))
}

fn jwks() -> Vec<u8> {
    let k = serde_json::from_str::<serde_json::Value>(include_str!(
        "../../tests/fixtures/keys/es256.json"
    ))
    .unwrap();
    let public = json!({"kty": k["kty"], "crv": k["crv"], "x": k["x"], "y": k["y"], "kid": "es"});
    json!({"keys": [public]}).to_string().into_bytes()
}

fn ok(body: Vec<u8>) -> (Option<u16>, usize, Vec<u8>) {
    (Some(200), body.len(), body)
}

#[test]
fn shared_data_behaves_as_envoys() {
    let s = MemoryShared::default();
    assert_eq!(s.get("k"), None);
    // No create-only write: a conditional write to a missing key succeeds.
    assert!(s.set("k", b"a", Some(12345)));
    let (v, version) = s.get("k").unwrap();
    assert_eq!(v, b"a");
    assert!(!s.set("k", b"b", Some(version.wrapping_add(1))));
    assert!(s.set("k", b"b", Some(version)));
    assert!(!s.set("k", b"c", Some(version)), "the version moved on");
    assert!(s.set("k", b"c", None));
    assert!(s.set("k", b"c", Some(0)), "version 0 is no condition");
    assert_eq!(s.get("k").unwrap().0, b"c");
}

#[test]
fn of_workers_asking_at_once_one_fetches() {
    let p = pipeline();
    let envoy = Envoy::default();
    let mut workers: Vec<_> = (0..4).map(|_| worker(&p, &envoy)).collect();
    let fetches: Vec<Fetch> = workers
        .iter_mut()
        .filter_map(|(r, _)| r.begin(&envoy, 0, T0, FetchReason::Refresh))
        .collect();
    assert_eq!(fetches.len(), 1, "{fetches:?}");
    assert_eq!(fetches[0].authority, "idp");
    assert_eq!(fetches[0].timeout_ms, 2000);
}

#[test]
fn a_worker_that_read_the_free_lease_loses_to_one_that_wrote_first() {
    let p = pipeline();
    let envoy = Envoy::default();
    let (_, _) = worker(&p, &envoy);
    let other = Rc::new(RefCell::new(worker(&p, &envoy)));
    let won_by_other = Rc::new(RefCell::new(None));
    let racing = Interleaved {
        inner: envoy.clone(),
        before_cas: RefCell::new(Some(Box::new({
            let (other, envoy, won) = (other.clone(), envoy.clone(), won_by_other.clone());
            move || {
                let fetch = other
                    .borrow_mut()
                    .0
                    .begin(&envoy, 0, T0, FetchReason::Refresh);
                *won.borrow_mut() = fetch;
            }
        }))),
    };
    let (mut me, _) = worker(&p, &racing);
    // Both read a free lease; the other worker writes between this one's read and write.
    let mine = me.begin(&racing, 0, T0, FetchReason::Refresh);
    assert!(won_by_other.borrow().is_some(), "the other worker fetches");
    assert_eq!(mine, None, "this worker's compare-and-swap fails");
}

#[test]
fn one_fetch_serves_every_worker() {
    let p = pipeline();
    let envoy = Envoy::default();
    let (mut a, mut a_keys) = worker(&p, &envoy);
    let (mut b, mut b_keys) = worker(&p, &envoy);
    let fetch = a.begin(&envoy, 0, T0, FetchReason::Refresh).unwrap();
    assert_eq!(b.begin(&envoy, 0, T0, FetchReason::Refresh), None);
    let notes = a.finish(&envoy, fetch.provider, T0, ok(jwks()), &mut a_keys);
    assert!(
        matches!(notes[..], [KeyNote::Fetched { keys: 1, .. }]),
        "{notes:?}"
    );
    assert!(a_keys.get(0).is_some());
    assert!(b_keys.get(0).is_none(), "not before its next sync");
    let notes = b.sync(&envoy, T0 + 1, &mut b_keys);
    assert!(
        matches!(
            notes[..],
            [KeyNote::Loaded {
                keys: 1,
                fetched_at: T0,
                ..
            }]
        ),
        "{notes:?}"
    );
    assert!(b_keys.get(0).is_some());
    // Loaded once: the next sync sees the same version and does nothing.
    assert!(b.sync(&envoy, T0 + 2, &mut b_keys).is_empty());
    // Nobody refreshes before refresh_s, or refetches for an unknown kid before min_refetch_s.
    assert_eq!(b.begin(&envoy, 0, T0 + 299, FetchReason::Refresh), None);
    assert_eq!(b.begin(&envoy, 0, T0 + 29, FetchReason::UnknownKid), None);
    assert!(b
        .begin(&envoy, 0, T0 + 30, FetchReason::UnknownKid)
        .is_some());
}

#[test]
fn failures_back_off_for_every_worker_and_keep_the_last_good_keys() {
    let p = pipeline();
    let envoy = Envoy::default();
    let (mut a, mut a_keys) = worker(&p, &envoy);
    let (mut b, _) = worker(&p, &envoy);
    let f = a.begin(&envoy, 0, T0, FetchReason::Refresh).unwrap();
    a.finish(&envoy, f.provider, T0, ok(jwks()), &mut a_keys);
    // Refreshes fail: 1, 2, 4 … seconds between attempts, whoever attempts.
    let mut at = T0 + 300;
    for (failures, backoff) in [(1, 2), (2, 4), (3, 8)] {
        let f = b.begin(&envoy, 0, at, FetchReason::Refresh).unwrap();
        let notes = b.failed(&envoy, f.provider, at, FetchError::Status(503));
        assert!(
            matches!(notes[..], [KeyNote::FetchFailed { .. }]),
            "failure {failures}"
        );
        assert_eq!(
            a.begin(&envoy, 0, at + backoff - 1, FetchReason::Refresh),
            None
        );
        at += backoff;
    }
    let f = a.begin(&envoy, 0, at, FetchReason::Refresh).unwrap();
    let bad = a.finish(
        &envoy,
        f.provider,
        at,
        (Some(200), 2, b"{}".to_vec()),
        &mut a_keys,
    );
    assert!(matches!(bad[..], [KeyNote::FetchFailed { .. }]), "{bad:?}");
    assert!(a_keys.get(0).is_some(), "the last good keys stay");
}

#[test]
fn a_lease_whose_holder_vanished_expires() {
    let p = pipeline();
    let envoy = Envoy::default();
    let (mut a, _) = worker(&p, &envoy);
    let (mut b, _) = worker(&p, &envoy);
    assert!(a.begin(&envoy, 0, T0, FetchReason::Refresh).is_some());
    // `a` never finishes (its VM restarted). The lease outlives the 2 s timeout by one second.
    assert_eq!(b.begin(&envoy, 0, T0 + 2, FetchReason::Refresh), None);
    assert!(b.begin(&envoy, 0, T0 + 3, FetchReason::Refresh).is_some());
}

#[test]
fn keys_past_max_stale_are_dropped_until_a_fetch_succeeds() {
    let p = pipeline();
    let envoy = Envoy::default();
    let (mut a, mut keys) = worker(&p, &envoy);
    let f = a.begin(&envoy, 0, T0, FetchReason::Refresh).unwrap();
    a.finish(&envoy, f.provider, T0, ok(jwks()), &mut keys);
    assert!(a.sync(&envoy, T0 + 3600, &mut keys).is_empty());
    let notes = a.sync(&envoy, T0 + 3601, &mut keys);
    assert!(
        matches!(
            notes[..],
            [KeyNote::Dropped {
                max_stale_s: 3600,
                ..
            }]
        ),
        "{notes:?}"
    );
    assert!(keys.get(0).is_none());
    let (fetches, _) = a.tick(&envoy, T0 + 3601, &mut keys);
    assert_eq!(fetches.len(), 1, "the tick asks for a refresh");
    a.finish(&envoy, 0, T0 + 3601, ok(jwks()), &mut keys);
    assert!(keys.get(0).is_some());
}

#[test]
fn a_shared_record_that_is_not_a_jwks_is_reported_not_loaded() {
    let p = pipeline();
    let envoy = Envoy::default();
    let (mut a, mut keys) = worker(&p, &envoy);
    assert!(envoy.set(
        "apiguard.jwks|idp|/jwks",
        format!("{T0}\nnot json").as_bytes(),
        None
    ));
    let notes = a.sync(&envoy, T0, &mut keys);
    assert!(
        matches!(notes[..], [KeyNote::Unusable { provider: 0, .. }]),
        "{notes:?}"
    );
    assert!(keys.get(0).is_none());
}
