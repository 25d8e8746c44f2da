//! End-to-end tests through a real Envoy with `apiguard.wasm` loaded.
//!
//! Every test starts its own processes on loopback ports and prints their logs if it fails.
//! Build first with `just build`; `just test` does.

// Test code: helpers outside `#[test]` functions may panic too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod compose;
mod contract;
mod edges;
mod foundation;
mod jwt;
mod keepalive;
mod metrics;
mod policy;
mod ratelimit;
mod rego_versions;
mod rls;
mod signatures;

use apiguard_e2e::Envoy;

/// Waits (up to 5 s) until Envoy's counter `name` is at least `min`; fails the test with
/// apiguard's counters otherwise.
async fn expect_stat(envoy: &Envoy, name: &str, min: u64) {
    let n = envoy.wait_stat(name, min).await;
    assert!(
        n >= min,
        "{name} = {n}, expected at least {min}; apiguard's counters:\n{}",
        envoy.stats_text("apiguard").await
    );
}
