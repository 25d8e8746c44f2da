//! The policy stage: Rego evaluated in the filter with regorus.
//!
//! Modules and data are compiled once, at configure time, into a regorus program for its
//! virtual machine (RVM); each worker keeps one VM loaded with the program and the data and only
//! swaps the input per request. A construct the RVM compiler does not support falls back to the
//! interpreter (on a compiled policy), and the configuration loader says so.
//!
//! The filter reads the entrypoint package's `allow`, `reasons`, `rate_limit_tier`,
//! `rate_limit_cost` and `headers` rules through one generated entry rule, so one evaluation
//! yields the whole decision. Anything but `allow == true` is a deny; any error, an undefined
//! `allow` or a time-budget overrun is a deny with a reason code (fail closed).
//!
//! The parts: [`program`] compiles a policy (modules, Rego versions, output [`forms`]), [`vm`]
//! runs it within its budget, [`decision`] reads what it returns; [`input`] builds the input
//! document, [`reads`] finds what of it a policy reads, [`pack`] is the built-in pack, [`stage`]
//! the policy's place in the request flow.

pub mod decision;
pub mod forms;
pub mod input;
pub mod pack;
pub mod program;
pub mod reads;
pub mod stage;
pub mod testcases;
pub mod vm;

pub use decision::{PolicyDecision, PolicyFailure};
pub use pack::{effective_data, BUILTIN_DATA, BUILTIN_NAME, BUILTIN_PACK};
pub use program::{add_modules, CompileError, Evaluator, PolicyProgram};
pub use vm::{Entry, PolicyVm};

#[cfg(test)]
mod tests;

#[cfg(test)]
mod cache_tests;

#[cfg(test)]
mod prune_tests;

#[cfg(test)]
mod pack_tests;

#[cfg(test)]
mod forms_tests;
