//! The JWT authentication stage. The flow sees it through its face: [`JwtStage`] (compiled
//! once), [`JwtWorker`] (per worker) and [`JwtOutcome`] (per request).

pub mod alg;
pub mod cache;
pub mod host_signature;
pub mod json;
pub mod keys;
pub mod remote;
pub mod shared;
pub mod stage;
pub mod token;
pub mod worker;

pub use shared::{Fetch, KeyNote, MemoryShared, SharedData};
pub use stage::{Invalid, JwtStage};
pub use worker::{JwtOutcome, JwtWorker};

#[cfg(test)]
mod vectors;

#[cfg(test)]
mod stage_tests;

#[cfg(test)]
mod shared_tests;

#[cfg(test)]
mod claim_tests;
