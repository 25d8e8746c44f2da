//! The verified-token cache: one bounded LRU per worker, keyed by the whole token (the map
//! compares the bytes on every hit, so a hash collision can never return another token's
//! claims). Only successes are stored; `exp` is checked again on every hit; a change of keys
//! empties it.

use std::num::NonZeroUsize;
use std::sync::Arc;

use lru::LruCache;

use crate::identity::Claims;

#[derive(Debug, Clone)]
pub struct CachedToken {
    pub provider: usize,
    pub claims: Arc<Claims>,
    pub exp: i64,
    /// The token arrived in this header (stripped when the provider does not forward tokens).
    pub header: Option<String>,
}

/// Tokens are hashed with foldhash rather than std's SipHash: a whole token (0.5–1 KiB) is
/// hashed on every request, and foldhash is the faster of the two on long keys. Its per-process
/// random seed keeps bucket placement unpredictable to clients, and the cache is bounded anyway.
type Hasher = foldhash::fast::RandomState;

pub struct TokenCache {
    lru: Option<LruCache<String, CachedToken, Hasher>>,
    /// The key generation the entries were verified under.
    generation: u64,
}

impl TokenCache {
    /// A cache of `capacity` entries; 0 disables caching.
    pub fn new(capacity: usize) -> Self {
        TokenCache {
            lru: NonZeroUsize::new(capacity).map(|c| LruCache::with_hasher(c, Hasher::default())),
            generation: 0,
        }
    }

    /// Empties the cache when the keys it was filled under have changed.
    pub fn sync_generation(&mut self, generation: u64) {
        if generation != self.generation {
            if let Some(l) = &mut self.lru {
                l.clear();
            }
            self.generation = generation;
        }
    }

    /// A remembered verification of `token`, if it has not expired (with `skew` leeway).
    pub fn get(
        &mut self,
        token: &str,
        now: i64,
        skew: impl Fn(usize) -> i64,
    ) -> Option<CachedToken> {
        let lru = self.lru.as_mut()?;
        let hit = lru.get(token)?;
        if now >= hit.exp.saturating_add(skew(hit.provider)) {
            lru.pop(token);
            return None;
        }
        Some(hit.clone())
    }

    pub fn put(&mut self, token: &str, entry: CachedToken) {
        if let Some(l) = &mut self.lru {
            l.put(token.to_owned(), entry);
        }
    }
}
