//! End-to-end tests through a real Envoy with `apiguard.wasm` loaded.
//!
//! Every test starts its own processes on loopback ports and prints their logs if it fails.
//! Build first with `just build`; `just test` does.

// Test code: helpers outside `#[test]` functions may panic too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod compose;
mod foundation;
mod jwt;
mod policy;
mod ratelimit;
mod signatures;
