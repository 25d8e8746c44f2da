//! Test support for apiguard, never part of the filter: the core's unit tests use it as a
//! dev-dependency, the end-to-end harness and the `apiguard token` command as a dependency.
//!
//! - [`mint`]: signing tokens with private keys (and hostile ones, from raw bytes);
//! - [`vector_keys`]: JWKs of the public test vectors in `tests/vectors/`;
//! - [`software`]: a software stand-in for Envoy's `verify_signature` primitive;
//! - [`spellings`]: the request spellings backends route alike, for the edge tests.

pub mod gen;
pub mod mint;
pub mod software;
pub mod spellings;
pub mod vector_keys;
