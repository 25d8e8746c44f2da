//! Remote JWKS: the decisions behind fetching, sharing and expiring keys, without the I/O.
//!
//! Every Envoy worker runs its own Wasm VM. One fetch serves them all: the fetched document is
//! kept in proxy-wasm shared data as a [`JwksRecord`], and a [`Lease`] in shared data
//! (taken with compare-and-swap) makes fetching single-flight across workers and spaces retries
//! after failures. Each worker reloads its keys when the record changes.

use std::sync::Arc;

use super::keys::{JwksError, KeySet, Skipped, MAX_JWKS_BYTES};
use crate::config::RemoteJwks;

/// The shared record: when the keys were fetched (Unix seconds) and the JWK Set document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwksRecord {
    pub fetched_at: i64,
    pub body: Vec<u8>,
}

impl JwksRecord {
    /// `<fetched_at>\n<body>`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = format!("{}\n", self.fetched_at).into_bytes();
        out.extend_from_slice(&self.body);
        out
    }

    pub fn decode(bytes: &[u8]) -> Option<JwksRecord> {
        let nl = bytes.iter().position(|b| *b == b'\n')?;
        let fetched_at = std::str::from_utf8(&bytes[..nl]).ok()?.parse().ok()?;
        Some(JwksRecord {
            fetched_at,
            body: bytes[nl + 1..].to_vec(),
        })
    }
}

/// Who may fetch next: nobody until `until` (a fetch is in flight, or failures back off).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    pub until: i64,
    /// Consecutive failed fetches.
    pub failures: u32,
}

impl Lease {
    pub fn encode(&self) -> Vec<u8> {
        format!("{} {}", self.until, self.failures).into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Option<Lease> {
        let text = std::str::from_utf8(bytes).ok()?;
        let (until, failures) = text.split_once(' ')?;
        Some(Lease {
            until: until.parse().ok()?,
            failures: failures.parse().ok()?,
        })
    }

    pub fn is_free(lease: Option<Lease>, now: i64) -> bool {
        lease.is_none_or(|l| l.until <= now)
    }

    /// Held while a fetch is in flight: released early when it ends, or after the timeout.
    pub fn taken(prev: Option<Lease>, now: i64, cfg: &RemoteJwks) -> Lease {
        let timeout_s = i64::try_from(cfg.timeout_ms.div_ceil(1000)).unwrap_or(i64::MAX);
        Lease {
            until: now.saturating_add(timeout_s).saturating_add(1),
            failures: prev.map_or(0, |l| l.failures),
        }
    }

    /// After a success: free at once.
    pub fn succeeded(now: i64) -> Lease {
        Lease {
            until: now,
            failures: 0,
        }
    }

    /// After a failure: the next attempt waits 1, 2, 4 … seconds, at most a minute, and never
    /// longer than the refresh period.
    pub fn failed(prev: Lease, now: i64, cfg: &RemoteJwks) -> Lease {
        let failures = prev.failures.saturating_add(1);
        let backoff = (1i64 << failures.min(6)).min(60);
        let cap = i64::try_from(cfg.refresh_s).unwrap_or(i64::MAX);
        Lease {
            until: now.saturating_add(backoff.min(cap)),
            failures,
        }
    }
}

/// Why a fetch is wanted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchReason {
    /// No keys yet, or the refresh period has passed.
    Refresh,
    /// A token names a `kid` the current keys lack.
    UnknownKid,
}

/// Whether a fetch is due for `reason`, given when the shared keys were fetched.
pub fn fetch_due(fetched_at: Option<i64>, now: i64, cfg: &RemoteJwks, reason: FetchReason) -> bool {
    let Some(at) = fetched_at else {
        return true;
    };
    let age = now.saturating_sub(at);
    match reason {
        FetchReason::Refresh => age >= i64::try_from(cfg.refresh_s).unwrap_or(i64::MAX),
        FetchReason::UnknownKid => age >= i64::try_from(cfg.min_refetch_s).unwrap_or(i64::MAX),
    }
}

/// Whether keys fetched at `fetched_at` are too old to use (refreshes kept failing).
pub fn is_stale(fetched_at: i64, now: i64, cfg: &RemoteJwks) -> bool {
    now.saturating_sub(fetched_at) > i64::try_from(cfg.max_stale_s).unwrap_or(i64::MAX)
}

/// Why a fetch did not produce keys.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    #[error("the key server could not be reached or timed out")]
    NoResponse,
    #[error("the key server answered HTTP {0}")]
    Status(u16),
    #[error("the response body is {0} bytes, over the {MAX_JWKS_BYTES}-byte limit")]
    TooLarge(usize),
    #[error(transparent)]
    Jwks(#[from] JwksError),
}

/// Judges a fetch's outcome: `status` is `None` when no response arrived. Returns the keys and
/// the keys it skipped.
pub fn accept_response(
    status: Option<u16>,
    body_size: usize,
    body: &[u8],
) -> Result<(Arc<KeySet>, Vec<Skipped>), FetchError> {
    let status = status.ok_or(FetchError::NoResponse)?;
    if status != 200 {
        return Err(FetchError::Status(status));
    }
    if body_size > MAX_JWKS_BYTES {
        return Err(FetchError::TooLarge(body_size));
    }
    let (keys, skipped) = KeySet::from_document(body)?;
    Ok((Arc::new(keys), skipped))
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    fn cfg() -> RemoteJwks {
        RemoteJwks {
            cluster: "idp".into(),
            path: "/jwks".into(),
            authority: None,
            timeout_ms: 1500,
            refresh_s: 600,
            min_refetch_s: 30,
            max_stale_s: 3600,
        }
    }

    #[test]
    fn records_round_trip() {
        let r = JwksRecord {
            fetched_at: 42,
            body: b"{\"keys\":[]}\nx".to_vec(),
        };
        assert_eq!(JwksRecord::decode(&r.encode()), Some(r));
        let l = Lease {
            until: 9,
            failures: 3,
        };
        assert_eq!(Lease::decode(&l.encode()), Some(l));
        assert_eq!(Lease::decode(b"junk"), None);
    }

    #[test]
    fn leases_single_flight_and_back_off() {
        let c = cfg();
        assert!(Lease::is_free(None, 100));
        let taken = Lease::taken(None, 100, &c);
        assert_eq!(taken.until, 103);
        assert!(!Lease::is_free(Some(taken), 102));
        let f1 = Lease::failed(taken, 100, &c);
        assert_eq!((f1.until, f1.failures), (102, 1));
        let f5 = Lease::failed(
            Lease {
                until: 0,
                failures: 9,
            },
            100,
            &c,
        );
        assert_eq!(f5.until, 160);
        assert!(Lease::is_free(Some(Lease::succeeded(100)), 100));
    }

    #[test]
    fn due_and_stale() {
        let c = cfg();
        assert!(fetch_due(None, 0, &c, FetchReason::Refresh));
        assert!(!fetch_due(Some(100), 699, &c, FetchReason::Refresh));
        assert!(fetch_due(Some(100), 700, &c, FetchReason::Refresh));
        assert!(!fetch_due(Some(100), 129, &c, FetchReason::UnknownKid));
        assert!(fetch_due(Some(100), 130, &c, FetchReason::UnknownKid));
        assert!(!is_stale(100, 3700, &c));
        assert!(is_stale(100, 3701, &c));
    }

    #[test]
    fn responses_are_judged() {
        assert_eq!(
            accept_response(None, 0, b"").unwrap_err(),
            FetchError::NoResponse
        );
        assert_eq!(
            accept_response(Some(503), 0, b"").unwrap_err(),
            FetchError::Status(503)
        );
        assert_eq!(
            accept_response(Some(200), 70_000, b"").unwrap_err(),
            FetchError::TooLarge(70_000)
        );
        assert!(matches!(
            accept_response(Some(200), 3, b"{]}"),
            Err(FetchError::Jwks(JwksError::Json(_)))
        ));
        assert!(matches!(
            accept_response(Some(200), 11, br#"{"keys":[]}"#),
            Err(FetchError::Jwks(JwksError::NoUsableKeys))
        ));
    }
}
