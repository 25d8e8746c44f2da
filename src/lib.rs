//! apiguard core: everything the Envoy filter decides, with no dependency on a proxy host.
//!
//! The core is sans-IO. The Wasm filter (`filters/apiguard-wasm`) hands it bytes and request
//! facts and acts on what it returns, so every rule here is testable natively with `cargo test`
//! and, for a subset, inside a Wasm VM under `wasm-bindgen-test`.
//!
//! Configuration is parsed, validated and compiled once ([`flow::Pipeline::from_json`]); the
//! per-request path never re-reads it.
#![forbid(unsafe_code)]

pub mod config;
pub mod contract;
pub mod driver;
pub mod events;
pub mod flow;
pub mod http;
pub mod identity;
pub mod jose;
pub mod jwt;
pub mod log_line;
pub mod logs;
pub mod path;
pub mod policy;
pub mod ratelimit;
pub mod reply;

#[cfg(test)]
mod driver_tests;
#[cfg(test)]
mod edge_tests;
#[cfg(test)]
mod flow_tests;
#[cfg(test)]
mod layer_tests;

pub use config::{Config, ConfigError, ConfigWarning};
pub use flow::{Pipeline, RequestFacts, Step};
pub use http::Headers;
