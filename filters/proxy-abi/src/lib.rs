//! The proxy-wasm ABI (0.2.1, as proxy-wasm-cpp-host implements it) as apiguard's filter speaks
//! it, in place of the proxy-wasm SDK, whose host calls and dispatcher panic on host answers
//! they do not expect (a panic kills the Wasm VM for every later request on that worker):
//! - [`hostcall`]: statuses to `Result`s, header maps and property paths (de)serialised, behind
//!   the [`hostcall::Abi`] trait so that code using it runs natively against a fake;
//! - `abi` (Wasm only): the raw imports, the exports every module needs, and the only `unsafe`
//!   code of the filter;
//! - [`fake`] (native only): a scripted host for tests.
//!
//! The filter (`filters/apiguard-wasm`) keeps only the translation between host events and the
//! core; this crate knows nothing of apiguard.

#![deny(unsafe_code)]

#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code)]
pub mod abi;
#[cfg(not(target_arch = "wasm32"))]
pub mod fake;
pub mod hostcall;
