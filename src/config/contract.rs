//! The `contract` section: the API's OpenAPI 3.0/3.1 document, enforced at the boundary
//! (docs/contract.md). The document is compiled by `contract::ContractStage::compile`, which
//! refuses what it cannot enforce exactly, naming the JSON pointer of the node.

use serde::Deserialize;
use serde_json::Value;

use super::common::{invalid, ConfigError, Problem};

/// `contract`: the positive model of the API.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct ContractConfig {
    /// The OpenAPI 3.0 or 3.1 document, as a JSON object (`apiguard contract import` prints one
    /// from YAML or JSON with its local `$ref`s resolved).
    pub openapi: Value,
    /// `enforce` refuses what the contract does not allow; `monitor` never refuses, and counts
    /// and logs what `enforce` would have refused.
    #[serde(default)]
    pub mode: ContractMode,
    /// The largest request body allowed, in bytes; one byte more is a 413.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum ContractMode {
    #[default]
    Enforce,
    Monitor,
}

/// 1 MiB.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 1024 * 1024;
/// Bodies are buffered in the worker to be validated: 64 MiB at most.
pub const MAX_BODY_BYTES: u64 = 64 * 1024 * 1024;

fn default_max_body_bytes() -> u64 {
    DEFAULT_MAX_BODY_BYTES
}

/// Checks what the types alone cannot say; run first by the stage's `compile`.
pub(crate) fn validate_contract(c: &ContractConfig) -> Result<(), ConfigError> {
    if !c.openapi.is_object() {
        return Err(invalid("contract.openapi", Problem::NotAnObject));
    }
    if !(1..=MAX_BODY_BYTES).contains(&c.max_body_bytes) {
        return Err(invalid(
            "contract.max_body_bytes",
            Problem::OutOfRange {
                min: 1,
                max: MAX_BODY_BYTES,
            },
        ));
    }
    Ok(())
}
