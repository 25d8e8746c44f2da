//! The JWT authentication stage.

pub mod alg;
pub mod cache;
pub mod es384;
pub mod host;
pub mod json;
pub mod keys;
pub mod mint;
pub mod remote;
pub mod stage;
pub mod token;
#[cfg(any(test, feature = "test-vectors"))]
pub mod vector_keys;

#[cfg(test)]
mod vectors;

#[cfg(test)]
mod stage_tests;
