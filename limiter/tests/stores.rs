//! One test body per behaviour, run against every store: in-memory, Redis (a real
//! `redis-server` started on a free loopback port) and Redis over mutual TLS (`rediss://`, the
//! same server serving TLS only with certificates the test makes). A missing `redis-server`
//! fails the Redis variants with a message saying how to install it.

// Test code: helpers outside `#[test]` functions may panic too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use apiguard_e2e::certs::Pki;
use apiguard_e2e::Redis;
use apiguard_limiter::{MemoryStore, RedisStore, RedisTarget, RedisTls, Store};
use apiguard_limiter_api::{Check, LimitAlgorithm};

/// Generous: these tests run in parallel on a small machine; the fault tests use tight ones.
const TIMEOUT: Duration = Duration::from_secs(2);

fn check(key: &str, limit: u64, window_ms: u64, algorithm: LimitAlgorithm) -> Check {
    Check {
        key: key.into(),
        limit,
        window_ms,
        cost: 1,
        algorithm,
    }
}

/// TLS options for a Redis started by [`Redis::start_tls`] with `pki`.
fn tls(pki: &Pki) -> RedisTls {
    let read = |n: &str| std::fs::read(pki.path(n)).unwrap();
    RedisTls {
        ca_pem: Some(read("ca.pem")),
        client_pem: Some((read("client.pem"), read("client.key"))),
        server_name: Some(apiguard_e2e::certs::LIMITER_NAME.into()),
    }
}

/// Runs `$body(store)` once per store, as `$name::memory`, `$name::redis` and
/// `$name::redis_tls`.
macro_rules! for_each_store {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn memory() {
                super::$name(Arc::new(MemoryStore::new())).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn redis() {
                let redis = Redis::start().unwrap();
                let store = RedisStore::new(RedisTarget::Single(redis.url()), TIMEOUT);
                super::$name(Arc::new(store)).await;
                drop(redis);
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn redis_tls() {
                let pki = Pki::new().unwrap();
                let redis = Redis::start_tls(&pki, &["--tls-auth-clients", "yes"]).unwrap();
                let target = RedisTarget::Single(redis.url());
                let store = RedisStore::with_tls(target, TIMEOUT, Some(tls(&pki))).unwrap();
                super::$name(Arc::new(store)).await;
                drop(redis);
            }
        }
    )*};
}

for_each_store!(
    log_is_exact_under_concurrency,
    counter_never_over_admits_under_concurrency,
    multi_check_is_all_or_nothing,
    no_double_burst_across_a_window_boundary,
    log_retry_after_is_exact,
    counter_retry_after_is_never_early,
    results_report_remaining_and_reset,
    cost_counts_units,
    costly_calls_leave_the_log_with_their_cost,
);

async fn one<S: Store>(store: &Arc<S>, c: &Check) -> apiguard_limiter::store::Decision {
    store.check(std::slice::from_ref(c)).await.unwrap()
}

async fn admitted<S: Store>(store: &Arc<S>, checks: Vec<Check>, calls: usize) -> usize {
    let mut tasks = Vec::new();
    for _ in 0..calls {
        let store = store.clone();
        let checks = checks.clone();
        tasks.push(tokio::spawn(async move { store.check(&checks).await }));
    }
    let mut n = 0;
    for t in tasks {
        if t.await.unwrap().unwrap().allowed {
            n += 1;
        }
    }
    n
}

async fn log_is_exact_under_concurrency<S: Store>(store: Arc<S>) {
    let c = check("{exact}", 100, 60_000, LimitAlgorithm::Log);
    assert_eq!(admitted(&store, vec![c], 500).await, 100);
}

async fn counter_never_over_admits_under_concurrency<S: Store>(store: Arc<S>) {
    // One fixed window is a day long, so the 500 calls almost surely land in one window, where
    // the counter is exact; across a boundary it may only admit fewer.
    let c = check("{ctr}", 100, 86_400_000, LimitAlgorithm::Counter);
    let n = admitted(&store, vec![c], 500).await;
    assert!((95..=100).contains(&n), "admitted {n}");
}

async fn multi_check_is_all_or_nothing<S: Store>(store: Arc<S>) {
    let burst = check("{u1}:burst", 3, 60_000, LimitAlgorithm::Log);
    let sustained = check("{u1}:sustained", 5, 60_000, LimitAlgorithm::Counter);
    let both = vec![burst.clone(), sustained.clone()];
    for _ in 0..3 {
        assert!(store.check(&both).await.unwrap().allowed);
    }
    // The burst window is full: the call is refused and the sustained window is not charged.
    let d = store.check(&both).await.unwrap();
    assert!(!d.allowed);
    assert_eq!(d.results[0].remaining, 0);
    assert!(d.results[0].retry_after_ms > 0);
    assert_eq!(d.results[1].retry_after_ms, 0, "{d:?}");
    assert_eq!(d.results[1].remaining, 2, "{d:?}");
    // The sustained window alone still has exactly two left.
    assert!(one(&store, &sustained).await.allowed);
    assert!(one(&store, &sustained).await.allowed);
    assert!(!one(&store, &sustained).await.allowed);
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Sleeps until `now % period` is `at` (ms).
async fn align(period: u64, at: u64) {
    let phase = now_ms() % period;
    let wait = (at + period - phase) % period;
    tokio::time::sleep(Duration::from_millis(wait)).await;
}

async fn no_double_burst_across_a_window_boundary<S: Store>(store: Arc<S>) {
    for algorithm in [LimitAlgorithm::Log, LimitAlgorithm::Counter] {
        let c = check(&format!("{{burst-{algorithm:?}}}"), 5, 1000, algorithm);
        // Fill the window late in a fixed window, then ask again just after the boundary: a
        // fixed window would admit a second burst there; a sliding one must not.
        align(1000, 700).await;
        for _ in 0..5 {
            assert!(one(&store, &c).await.allowed);
        }
        align(1000, 100).await;
        let d = one(&store, &c).await;
        assert!(!d.allowed, "{algorithm:?} admitted a second burst: {d:?}");
    }
}

async fn log_retry_after_is_exact<S: Store>(store: Arc<S>) {
    let c = check("{retry}", 3, 1000, LimitAlgorithm::Log);
    for _ in 0..3 {
        assert!(one(&store, &c).await.allowed);
    }
    let d = one(&store, &c).await;
    assert!(!d.allowed);
    let retry = d.results[0].retry_after_ms;
    assert!((800..=1000).contains(&retry), "retry_after_ms {retry}");
    tokio::time::sleep(Duration::from_millis(retry - 200)).await;
    assert!(!one(&store, &c).await.allowed, "admitted early");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        one(&store, &c).await.allowed,
        "refused after retry_after_ms"
    );
}

async fn counter_retry_after_is_never_early<S: Store>(store: Arc<S>) {
    let c = check("{retry-ctr}", 3, 1000, LimitAlgorithm::Counter);
    align(1000, 100).await;
    for _ in 0..3 {
        assert!(one(&store, &c).await.allowed);
    }
    let d = one(&store, &c).await;
    assert!(!d.allowed);
    let retry = d.results[0].retry_after_ms;
    assert!(retry > 0 && retry <= 2000, "retry_after_ms {retry}");
    tokio::time::sleep(Duration::from_millis(retry + 50)).await;
    assert!(
        one(&store, &c).await.allowed,
        "refused after retry_after_ms"
    );
}

async fn results_report_remaining_and_reset<S: Store>(store: Arc<S>) {
    let c = check("{report}", 10, 60_000, LimitAlgorithm::Log);
    let d = one(&store, &c).await;
    let r = &d.results[0];
    assert_eq!((r.key.as_str(), r.limit, r.remaining), ("{report}", 10, 9));
    assert!((59_000..=60_000).contains(&r.reset_ms), "{r:?}");
    assert_eq!(r.retry_after_ms, 0);
    let d = one(&store, &c).await;
    assert_eq!(d.results[0].remaining, 8);
}

async fn cost_counts_units<S: Store>(store: Arc<S>) {
    for algorithm in [LimitAlgorithm::Log, LimitAlgorithm::Counter] {
        let mut c = check(&format!("{{cost-{algorithm:?}}}"), 10, 60_000, algorithm);
        c.cost = 4;
        assert!(one(&store, &c).await.allowed);
        assert!(one(&store, &c).await.allowed);
        let d = one(&store, &c).await;
        assert!(
            !d.allowed,
            "{algorithm:?}: 12 units admitted under a limit of 10"
        );
        assert_eq!(d.results[0].remaining, 2);
        c.cost = 2;
        assert!(one(&store, &c).await.allowed);
    }
}

/// A call's whole cost leaves the log when the call does, and `retry_after_ms` names the
/// moment enough cost has left.
async fn costly_calls_leave_the_log_with_their_cost<S: Store>(store: Arc<S>) {
    let mut c = check("{costly}", 10, 600, LimitAlgorithm::Log);
    c.cost = 4;
    assert!(one(&store, &c).await.allowed);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(one(&store, &c).await.allowed);
    let d = one(&store, &c).await;
    assert!(!d.allowed);
    assert_eq!(d.results[0].remaining, 2);
    let retry = d.results[0].retry_after_ms;
    assert!((100..=300).contains(&retry), "retry_after_ms {retry}");
    tokio::time::sleep(Duration::from_millis(retry + 50)).await;
    let d = one(&store, &c).await;
    assert!(d.allowed, "refused after retry_after_ms: {d:?}");
    assert_eq!(d.results[0].remaining, 2);
}

/// Memory per check is bounded by calls, not by units of cost: 300 calls of cost 1000 under a
/// limit nobody reaches leave 300 log entries in Redis (plus the running sum), not 300,000.
#[tokio::test(flavor = "multi_thread")]
async fn the_log_keeps_one_entry_per_call_in_redis() {
    let redis = Redis::start().unwrap();
    let store = RedisStore::new(RedisTarget::Single(redis.url()), TIMEOUT);
    let mut c = check(
        "{big-spender}",
        1_000_000_000,
        86_400_000,
        LimitAlgorithm::Log,
    );
    c.cost = 1000;
    for _ in 0..300 {
        assert!(store.check(std::slice::from_ref(&c)).await.unwrap().allowed);
    }
    let port = redis.port().to_string();
    let conn = ["-p", port.as_str()];
    let key = "apiguard:{big-spender}:log:86400000:{big-spender}";
    let entries = apiguard_e2e::redis_cli(&conn, &["ZCARD", key]).unwrap();
    assert_eq!(entries.trim(), "301", "{entries}");
    let bytes: u64 = apiguard_e2e::redis_cli(&conn, &["MEMORY", "USAGE", key])
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    eprintln!("{bytes} bytes for 300 calls");
    assert!(bytes < 64 * 1024, "{bytes} bytes for 300 calls");
    let d = store.check(std::slice::from_ref(&c)).await.unwrap();
    assert_eq!(d.results[0].remaining, 1_000_000_000 - 301_000);
}

/// A log written one member per unit (before costs were recorded) keeps counting after an
/// upgrade: each old member counts 1 until it leaves the window.
#[tokio::test(flavor = "multi_thread")]
async fn a_log_written_per_unit_keeps_counting() {
    let redis = Redis::start().unwrap();
    let store = RedisStore::new(RedisTarget::Single(redis.url()), TIMEOUT);
    let port = redis.port().to_string();
    let conn = ["-p", port.as_str()];
    let key = "apiguard:{legacy}:log:60000:{legacy}";
    let now = now_ms().to_string();
    let added = apiguard_e2e::redis_cli(
        &conn,
        &[
            "ZADD", key, &now, "old:1:1", &now, "old:1:2", &now, "old:1:3",
        ],
    )
    .unwrap();
    assert_eq!(added.trim(), "3", "{added}");
    let mut c = check("{legacy}", 5, 60_000, LimitAlgorithm::Log);
    c.cost = 2;
    let d = store.check(std::slice::from_ref(&c)).await.unwrap();
    assert!(d.allowed);
    assert_eq!(d.results[0].remaining, 0);
    assert!(!store.check(std::slice::from_ref(&c)).await.unwrap().allowed);
}

/// A connection dropped while idle (here by a proxy that closes idle connections, as a NAT, a
/// load balancer or Redis's `timeout` does) costs no request, and no quota twice.
#[tokio::test(flavor = "multi_thread")]
async fn an_idle_drop_costs_no_request() {
    let redis = Redis::start().unwrap();
    let proxy = apiguard_e2e::idle_proxy::IdleProxy::start(redis.addr, Duration::from_millis(300))
        .await
        .unwrap();
    let store = RedisStore::new(
        RedisTarget::Single(format!("redis://{}", proxy.addr)),
        TIMEOUT,
    );
    let c = check("{idle}", 3, 60_000, LimitAlgorithm::Log);
    for round in 0..3 {
        let d = store.check(std::slice::from_ref(&c)).await;
        let d = d.unwrap_or_else(|e| panic!("check {round} after an idle drop: {e}"));
        assert!(d.allowed, "check {round}: {d:?}");
        assert_eq!(d.results[0].remaining, 2 - round);
        tokio::time::sleep(Duration::from_millis(600)).await;
    }
    assert!(!store.check(std::slice::from_ref(&c)).await.unwrap().allowed);
}
