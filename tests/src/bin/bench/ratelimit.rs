//! Suite `ratelimit`: Envoy CPU per request of the full pipeline (cached JWT + policy pack +
//! the limiter callout, to a real apiguard-limiter over Redis, limits never reached) against
//! pass-through and the same without the callout; and the local over-limit path, every request
//! a 429 from the cache (see [`crate::measure`]). Prints the call's share and client p50/p99.

use apiguard_e2e::{Echo, EnvoySpec};
use serde_json::{json, Value};

use crate::measure::{write_json, Label, Run};
use crate::setup::{es256_caller, limiter_over_redis, unlimited, RESOURCES};
use crate::{BenchResult, Suite};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RatelimitVariant {
    PassThrough,
    JwtPack,
    JwtPackLimiter,
    LocalOverLimit,
}

impl Label for RatelimitVariant {
    fn label(&self) -> &str {
        match self {
            RatelimitVariant::PassThrough => "apiguard pass-through",
            RatelimitVariant::JwtPack => "apiguard jwt + pack",
            RatelimitVariant::JwtPackLimiter => "apiguard jwt + pack + limiter call",
            RatelimitVariant::LocalOverLimit => "apiguard local over-limit (429)",
        }
    }
}

/// The full pipeline (cached JWT + policy pack + limiter callout) against pass-through, the
/// same without the callout, and the local over-limit path.
pub async fn run() -> BenchResult {
    use RatelimitVariant::*;
    let echo = Echo::start().await?;
    let (_redis, limiter) = limiter_over_redis().await?;
    let (auth, jwt) = es256_caller();
    let policy = json!({ "resources": RESOURCES });
    let cfg = |tiers: Value| {
        json!({"jwt": jwt, "policy": policy, "rate_limit": {"cluster": "limiter", "timeout_ms": 200, "tiers": tiers}}).to_string()
    };
    let big = json!({"standard": unlimited()});
    let tiny = json!({"standard": [{"requests": 1, "window_s": 86_400}]});
    let spec = || EnvoySpec::new(echo.addr).with_cluster("limiter", limiter.addr);
    let doc = "/api/v1/tenants/t1/documents/7";
    let mut run = Run::start(
        vec![
            (PassThrough, spec().with_filter("{}")),
            (
                JwtPack,
                spec().with_filter(json!({"jwt": jwt, "policy": policy}).to_string()),
            ),
            (JwtPackLimiter, spec().with_filter(cfg(big))),
            (LocalOverLimit, spec().with_filter(cfg(tiny))),
        ],
        Some(&auth),
        doc,
    )
    .await?;
    if let Some(v) = run.variant_mut(LocalOverLimit) {
        v.expect = 429;
    }
    run.measure().await?;
    run.print_latency();
    run.ratio(JwtPackLimiter, PassThrough, None);
    run.ratio(JwtPackLimiter, JwtPack, None);
    run.ratio(LocalOverLimit, PassThrough, None);
    write_json(Suite::Ratelimit, run.json())
}
