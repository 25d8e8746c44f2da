//! Suite `policy`: Envoy CPU per request of the built-in policy pack on top of the JWT stage
//! (cache hit) against the JWT stage alone, same token, on an allowed tenant-document path; also
//! `allow := true` (the floor of any policy) and the pack with its decision cache (see
//! [`crate::measure`]). Prints the µs the pack adds.

use apiguard_e2e::{Echo, EnvoySpec};
use serde_json::json;

use crate::measure::{write_json, Label, Run};
use crate::setup::{es256_caller, RESOURCES};
use crate::{BenchResult, Suite};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PolicyVariant {
    NoFilter,
    Jwt,
    JwtPack,
    JwtAllowTrue,
    JwtPackDecisionCache,
}

impl Label for PolicyVariant {
    fn label(&self) -> &str {
        match self {
            PolicyVariant::NoFilter => "no filter",
            PolicyVariant::Jwt => "apiguard jwt (cached)",
            PolicyVariant::JwtPack => "apiguard jwt (cached) + policy pack",
            PolicyVariant::JwtAllowTrue => "apiguard jwt (cached) + `allow := true`",
            PolicyVariant::JwtPackDecisionCache => "apiguard jwt (cached) + pack + decision cache",
        }
    }
}

/// The policy pack on top of the JWT stage (cache hit), same token and path.
pub async fn run() -> BenchResult {
    use PolicyVariant::*;
    let echo = Echo::start().await?;
    let (auth, jwt) = es256_caller();
    let jwt_only = json!({"jwt": jwt}).to_string();
    let pack = json!({"resources": RESOURCES});
    let with_pack = json!({"jwt": jwt, "policy": pack}).to_string();
    let mut cached_pack = pack;
    cached_pack["decision_cache"] = json!({"max_entries": 10_000, "ttl_s": 60});
    let with_cache = json!({"jwt": jwt, "policy": cached_pack}).to_string();
    // The floor: the cost of running any policy at all (input, evaluation, decision).
    let trivial = json!({"jwt": jwt, "policy": {"modules": {"trivial.rego": "package api.authz\nallow := true\n"}}})
        .to_string();
    let spec = || EnvoySpec::new(echo.addr);
    let doc = "/api/v1/tenants/t1/documents/7";
    let mut run = Run::start(
        vec![
            (NoFilter, spec()),
            (Jwt, spec().with_filter(jwt_only)),
            (JwtPack, spec().with_filter(with_pack)),
            (JwtAllowTrue, spec().with_filter(trivial)),
            (JwtPackDecisionCache, spec().with_filter(with_cache)),
        ],
        Some(&auth),
        doc,
    )
    .await?;
    run.measure().await?;
    // What the pack adds.
    run.difference(JwtPack, Jwt, 15.0);
    run.ratio(JwtPack, Jwt, None);
    write_json(Suite::Policy, run.json())
}
