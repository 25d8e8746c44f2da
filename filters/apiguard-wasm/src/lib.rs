//! apiguard as a Proxy-Wasm HTTP filter.
//!
//! This crate is a plain executor: host events become calls of the core's driver
//! (`apiguard_core::driver`), which keeps every request's waits and returns effects, and the
//! effects become host calls. It must never panic: a panic kills the Wasm VM for every later
//! request on this worker. So it does not use the proxy-wasm SDK, whose host calls and
//! dispatcher panic on host answers they do not expect; it speaks the ABI through
//! `apiguard-proxy-abi` (`filters/proxy-abi`), which holds all the `unsafe` code:
//! - `exports` (Wasm only): the host's events, each handed to `dispatch`;
//! - `dispatch`: the table of contexts, and each event to its root;
//! - `root`: a plugin configuration on this worker: its driver and its metrics, one driver call
//!   per event;
//! - `effects`: the driver's effects, carried out in order;
//! - `host`: the filter's host calls, each failure logged and failed closed.

#![deny(unsafe_code)]

/// Public: its functions are the host's entry points, called by `exports` on Wasm; natively only
/// tests call them, and being public keeps them (and the filter behind them) checked code
/// rather than dead code.
pub mod dispatch;
mod effects;
#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code)]
mod exports;
mod host;
mod root;

// Talc instead of Rust's default Wasm allocator (dlmalloc): the policy engine allocates and
// frees many small values per request, and talc does that markedly faster (docs/benchmarks.md).
#[cfg(all(target_family = "wasm", not(target_feature = "atomics")))]
#[global_allocator]
static ALLOCATOR: talc::wasm::WasmDynamicTalc = talc::wasm::new_wasm_dynamic_allocator();
