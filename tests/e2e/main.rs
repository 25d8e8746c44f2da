//! End-to-end tests through a real Envoy with `apiguard.wasm` loaded.
//!
//! Every test starts its own processes on loopback ports and prints their logs if it fails.
//! Build first with `just build`; `just test` does.

mod foundation;
