//! The one store matrix of the limiter's tests: a test body that takes a store runs once per
//! store, in-memory, Redis (a real `redis-server` on a free loopback port) and Redis over
//! mutual TLS (`rediss://`, the same server serving TLS only, with certificates the test makes).
//! A missing `redis-server` fails the Redis variants with a message saying how to install it.
//!
//! A new store is one more arm here: every body of every suite then runs against it.

use std::time::Duration;

use apiguard_e2e::certs::Pki;
use apiguard_e2e::Redis;
use apiguard_limiter::{RedisStore, RedisTarget, RedisTls};

/// Generous: these tests run in parallel on a small machine; the fault tests use tight ones.
pub const TIMEOUT: Duration = Duration::from_secs(2);

/// A Redis store on a server of its own (kept while the store is used).
pub fn redis() -> (Redis, RedisStore) {
    let redis = Redis::start().unwrap();
    let store = RedisStore::new(RedisTarget::Single(redis.url()), TIMEOUT);
    (redis, store)
}

/// A Redis store over mutual TLS, on a server of its own.
pub fn redis_tls() -> (Redis, RedisStore) {
    let pki = Pki::new().unwrap();
    let redis = Redis::start_tls(&pki, &["--tls-auth-clients", "yes"]).unwrap();
    let target = RedisTarget::Single(redis.url());
    let store = RedisStore::with_tls(target, TIMEOUT, Some(tls(&pki))).unwrap();
    (redis, store)
}

/// TLS options for a Redis started by [`Redis::start_tls`] with `pki`.
pub fn tls(pki: &Pki) -> RedisTls {
    let read = |n: &str| std::fs::read(pki.path(n)).unwrap();
    RedisTls {
        ca_pem: Some(read("ca.pem")),
        client_pem: Some((read("client.pem"), read("client.key"))),
        server_name: Some(apiguard_e2e::certs::LIMITER_NAME.into()),
    }
}

/// Runs `$body($fixture(store).await)` once per store, as `$body::memory`, `$body::redis` and
/// `$body::redis_tls`; `$fixture` makes what the suite's bodies take of a store.
macro_rules! for_each_store {
    ($fixture:ident => $($name:ident),* $(,)?) => {$(
        mod $name {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn memory() {
                super::$name($fixture(apiguard_limiter::MemoryStore::new()).await).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn redis() {
                let (server, store) = matrix::redis();
                super::$name($fixture(store).await).await;
                drop(server);
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn redis_tls() {
                let (server, store) = matrix::redis_tls();
                super::$name($fixture(store).await).await;
                drop(server);
            }
        }
    )*};
}
