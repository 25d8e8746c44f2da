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

#[cfg(test)]
mod vectors;

#[cfg(test)]
mod stage_tests;

#[cfg(test)]
mod shared_tests;

#[cfg(test)]
mod claim_tests;
