//! One test body per behaviour of a store, run against every store (`matrix`: in-memory,
//! Redis, Redis over mutual TLS).

// Test code: helpers outside `#[test]` functions may panic too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use apiguard_e2e::Redis;
use apiguard_limiter::{RedisStore, RedisTarget, Store};
use apiguard_limiter_api::{Check, LimitAlgorithm};

#[macro_use]
mod matrix;
use matrix::TIMEOUT;

fn check(key: &str, limit: u64, window_ms: u64, algorithm: LimitAlgorithm) -> Check {
    Check {
        key: key.into(),
        limit,
        window_ms,
        cost: 1,
        algorithm,
    }
}

/// What these bodies take of a store.
async fn shared<S: Store>(store: S) -> Arc<S> {
    Arc::new(store)
}

for_each_store!(shared =>
    log_is_exact_under_concurrency,
    counter_never_over_admits_under_concurrency,
    multi_check_is_all_or_nothing,
    no_double_burst_across_a_window_boundary,
    log_retry_after_is_exact,
    counter_retry_after_is_never_early,
    results_report_remaining_and_reset,
    cost_counts_units,
    costly_calls_leave_the_log_with_their_cost,
    log_retry_after_past_a_lowered_limit_is_exact_for_unit_calls,
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

/// A log holding more than the limit (the limit was lowered, or two limits share a key) needs
/// more calls to leave than a refusal reads (`cost`); the answer then counts every later call
/// as 1 unit, which is exact when they cost 1: not a moment early, not a moment late.
async fn log_retry_after_past_a_lowered_limit_is_exact_for_unit_calls<S: Store>(store: Arc<S>) {
    let mut c = check("{lowered}", 10, 3000, LimitAlgorithm::Log);
    // Ten calls 150 ms apart: they leave the window one by one.
    for i in 0..10 {
        assert!(one(&store, &c).await.allowed, "call {i}");
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    // Under a limit of 4, one more unit fits once 7 have left: at the 7th call's departure,
    // 3000 - 150 * (10 - 6) ≈ 2400 ms from now (less the time the calls themselves took).
    c.limit = 4;
    let d = one(&store, &c).await;
    assert!(!d.allowed);
    assert_eq!(d.results[0].remaining, 0);
    let retry = d.results[0].retry_after_ms;
    assert!((2200..=2400).contains(&retry), "retry_after_ms {retry}");
    tokio::time::sleep(Duration::from_millis(retry - 70)).await;
    assert!(!one(&store, &c).await.allowed, "admitted early");
    tokio::time::sleep(Duration::from_millis(140)).await;
    let d = one(&store, &c).await;
    assert!(d.allowed, "refused after retry_after_ms: {d:?}");
}

/// Writes `n` admitted calls of cost 1 into the log `key` server-side, as `check.lua` would
/// have (members `<call id>:<i>:x<cost>` scored by admission time in the last `n` ms, and `=`
/// holding minus their sum): the store's own calls would take minutes for 100k entries.
const FILL_LOG: &str = r"
local n = tonumber(ARGV[1])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for i = 1, n do
  redis.call('ZADD', KEYS[1], now - n + i, 'fill' .. i .. ':1:x1')
end
redis.call('ZADD', KEYS[1], -n, '=')
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return redis.call('ZCARD', KEYS[1])
";

/// Issue 27, high 2: a caller refused over a window of 100k calls kept asking, and each refusal
/// walked the whole window to compute `retry_after_ms` (≈ 105 ms per refusal at 100k): Redis
/// stalled past every other tenant's store deadline. A refusal now reads O(log n + cost): its
/// Redis time stays far below a millisecond, and another key's checks, with a store deadline
/// of 250 ms, are all answered while four refusers loop.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refusals_over_a_100k_call_log_stay_cheap() {
    const CALLS: u64 = 100_000;
    const WINDOW_MS: u64 = 3_600_000;
    let redis = Redis::start().unwrap();
    let key = format!("apiguard:{{whale}}:log:{WINDOW_MS}:{{whale}}");
    let filled = redis
        .cli(&[
            "EVAL",
            FILL_LOG,
            "1",
            &key,
            &CALLS.to_string(),
            &WINDOW_MS.to_string(),
        ])
        .unwrap();
    assert_eq!(filled.trim(), (CALLS + 1).to_string(), "{filled}");

    let store = Arc::new(RedisStore::new(RedisTarget::Single(redis.url()), TIMEOUT));
    let whale = check("{whale}", CALLS, WINDOW_MS, LimitAlgorithm::Log);
    // The store reads the filled log as full: the fill is what the script writes.
    let d = one(&store, &whale).await;
    assert!(!d.allowed, "{d:?}");
    assert_eq!(d.results[0].remaining, 0);
    let retry = d.results[0].retry_after_ms;
    assert!(
        (WINDOW_MS - CALLS - 60_000..=WINDOW_MS - CALLS).contains(&retry),
        "retry_after_ms {retry}: the oldest call leaves first"
    );

    // Another tenant, through a store with a tight deadline (connected first, so the
    // deadline covers only its checks), while the refusals loop.
    let tenant = RedisStore::new(RedisTarget::Single(redis.url()), Duration::from_millis(250));
    let other = check("{minnow}", 1_000, 60_000, LimitAlgorithm::Log);
    assert!(
        tenant
            .check(std::slice::from_ref(&other))
            .await
            .unwrap()
            .allowed
    );
    redis.cli(&["CONFIG", "RESETSTAT"]).unwrap();
    const REFUSERS: usize = 4;
    const REFUSALS: usize = 50;
    let mut refusers = Vec::new();
    for _ in 0..REFUSERS {
        let (store, whale) = (store.clone(), whale.clone());
        refusers.push(tokio::spawn(async move {
            for _ in 0..REFUSALS {
                let d = store.check(std::slice::from_ref(&whale)).await.unwrap();
                assert!(!d.allowed);
            }
        }));
    }
    let mut answered = 0;
    while refusers.iter().any(|r| !r.is_finished()) && answered < 1_000 {
        match tenant.check(std::slice::from_ref(&other)).await {
            Ok(d) => assert!(d.allowed, "{d:?}"),
            Err(e) => panic!("another key's check failed while refusals looped: {e}"),
        }
        answered += 1;
    }
    for r in refusers {
        r.await.unwrap();
    }
    assert!(
        answered > 0,
        "no check of another key ran beside the refusals"
    );

    // Redis's own account of the time it spent: `usec_per_call` of EVALSHA, the refusals
    // and the other tenant's admissions together.
    let stats = redis.cli(&["INFO", "commandstats"]).unwrap();
    let per_call: f64 = stats
        .lines()
        .find_map(|l| l.strip_prefix("cmdstat_evalsha:"))
        .and_then(|l| l.split(',').find_map(|f| f.strip_prefix("usec_per_call=")))
        .unwrap_or_else(|| panic!("no EVALSHA in INFO commandstats: {stats}"))
        .trim()
        .parse()
        .unwrap();
    eprintln!(
        "{} refusals at {CALLS} calls in the window, {answered} checks of another key: \
         {per_call} µs of Redis time per script call",
        REFUSERS * REFUSALS
    );
    assert!(per_call < 2_000.0, "{per_call} µs per script call");
}

/// Writes calls into the log `KEYS[1]` server-side as `check.lua` would have: ARGV[1] the
/// window (ms), then pairs of (age in ms, cost).
const FILL_CALLS: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local sum = 0
for j = 2, #ARGV, 2 do
  local cost = tonumber(ARGV[j + 1])
  redis.call('ZADD', KEYS[1], now - tonumber(ARGV[j]), 'fill' .. j .. ':1:x' .. cost)
  sum = sum + cost
end
redis.call('ZADD', KEYS[1], -sum, '=')
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return sum
";

/// `check.lua` answers a refusal past a lowered limit as the memory store does
/// (`store::memory::tests::retry_after_past_a_lowered_limit_is_late_never_early`): it reads
/// `cost` calls and counts each later one as 1 unit, so with costlier calls it is late, never
/// early.
#[tokio::test(flavor = "multi_thread")]
async fn redis_retry_after_past_a_lowered_limit_is_late_never_early() {
    let redis = Redis::start().unwrap();
    let key = "apiguard:{lowered-mixed}:log:2000:{lowered-mixed}";
    // Calls 1000, 800, 600, 400 and 200 ms old, costing 3, 3, 1, 1, 1.
    let args = [
        "2000", "1000", "3", "800", "3", "600", "1", "400", "1", "200", "1",
    ];
    let mut cmd = vec!["EVAL", FILL_CALLS, "1", key];
    cmd.extend(args);
    assert_eq!(redis.cli(&cmd).unwrap().trim(), "9");
    let store = RedisStore::new(RedisTarget::Single(redis.url()), TIMEOUT);
    let c = check("{lowered-mixed}", 4, 2000, LimitAlgorithm::Log);
    let d = one(&Arc::new(store), &c).await;
    assert!(!d.allowed);
    // Exact: the 800-ms-old call's departure, in 1200 ms. Answered: the 400-ms-old one's.
    let retry = d.results[0].retry_after_ms;
    assert!((1400..=1600).contains(&retry), "retry_after_ms {retry}");
    assert!(d.results[0].reset_ms >= retry, "{d:?}");
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

/// Issue 27, low 8: a `--redis` URL without `://` was logged whole, password included, when the
/// limiter refused it at start. The log names the place and never the password, for one node
/// and for Cluster seeds alike.
#[test]
fn a_redis_url_is_never_logged_with_its_password() {
    for option in ["--redis", "--redis-cluster"] {
        for url in ["user:s3cret@127.0.0.1:1", ":s3cret@127.0.0.1:1/0"] {
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_apiguard-limiter"))
                .args(["--listen", "127.0.0.1:0", option, url])
                .output()
                .unwrap();
            let log = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(!out.status.success(), "{option} {url}: {log}");
            assert!(log.contains("127.0.0.1:1"), "{option} {url}: {log}");
            assert!(!log.contains("s3cret"), "{option} {url}: {log}");
        }
    }
}
