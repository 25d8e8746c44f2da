//! The JWT authentication stage.

pub mod alg;
pub mod es384;
pub mod json;
pub mod keys;
pub mod token;

#[cfg(test)]
mod vectors;
