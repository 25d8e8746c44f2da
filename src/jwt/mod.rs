//! The JWT authentication stage.

pub mod alg;
pub mod cache;
pub mod host_signature;
pub mod json;
pub mod keys;
pub mod remote;
pub mod shared;
pub mod stage;
pub mod token;

/// TEMPORARY: the old name of [`host_signature`], for the Wasm glue only, which is being
/// restructured (issue 28) and still imports `jwt::host`; remove once it names `host_signature`.
#[doc(hidden)]
pub use host_signature as host;

#[cfg(test)]
mod vectors;

#[cfg(test)]
mod stage_tests;

#[cfg(test)]
mod shared_tests;
