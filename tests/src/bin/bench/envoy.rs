//! Suite `envoy`: Envoy CPU per request of apiguard in pass-through (an empty configuration)
//! against Envoy without the filter, measured in the same run (see [`crate::measure`]).

use apiguard_e2e::{Echo, EnvoySpec};

use crate::measure::{write_json, Label, Run};
use crate::{BenchResult, Suite};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EnvoyVariant {
    NoFilter,
    PassThrough,
}

impl Label for EnvoyVariant {
    fn label(&self) -> &str {
        match self {
            EnvoyVariant::NoFilter => "no filter",
            EnvoyVariant::PassThrough => "apiguard pass-through",
        }
    }
}

/// Pass-through against no filter.
pub async fn run() -> BenchResult {
    use EnvoyVariant::*;
    let echo = Echo::start().await?;
    let mut run = Run::start(
        vec![
            (NoFilter, EnvoySpec::new(echo.addr)),
            (PassThrough, EnvoySpec::new(echo.addr).with_filter("{}")),
        ],
        None,
        "/bench",
    )
    .await?;
    run.measure().await?;
    run.ratio(PassThrough, NoFilter, None);
    write_json(Suite::Envoy, run.json())
}
