//! Suite `policy`: Envoy CPU per request of the built-in policy pack on top of the JWT stage
//! (cache hit) against the JWT stage alone, same token, on an allowed tenant-document path: the
//! pack compiled (the default) and as Rego on regorus, with and without its decision cache; also
//! `allow := true` (the floor of any Rego policy). See [`crate::measure`]. Prints the µs each adds.

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
    JwtPackRego,
    JwtAllowTrue,
    JwtPackRegoDecisionCache,
}

impl Label for PolicyVariant {
    fn label(&self) -> &str {
        match self {
            PolicyVariant::NoFilter => "no filter",
            PolicyVariant::Jwt => "apiguard jwt (cached)",
            PolicyVariant::JwtPack => "apiguard jwt (cached) + policy pack (compiled)",
            PolicyVariant::JwtPackRego => "apiguard jwt (cached) + policy pack (Rego)",
            PolicyVariant::JwtAllowTrue => "apiguard jwt (cached) + `allow := true`",
            PolicyVariant::JwtPackRegoDecisionCache => {
                "apiguard jwt (cached) + pack (Rego) + decision cache"
            }
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
    let mut rego_pack = pack.clone();
    rego_pack["pack_engine"] = json!("rego");
    let with_rego = json!({"jwt": jwt, "policy": rego_pack}).to_string();
    let mut cached_pack = rego_pack;
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
            (JwtPackRego, spec().with_filter(with_rego)),
            (JwtAllowTrue, spec().with_filter(trivial)),
            (JwtPackRegoDecisionCache, spec().with_filter(with_cache)),
        ],
        Some(&auth),
        doc,
    )
    .await?;
    run.measure().await?;
    // What the pack adds, compiled (goal ≤ 5 µs) and as Rego; the floor of any Rego policy.
    run.difference(JwtPack, Jwt, 5.0);
    run.difference(JwtPackRego, Jwt, 46.0);
    run.difference(JwtAllowTrue, Jwt, 12.0);
    run.ratio(JwtPack, Jwt, None);
    write_json(Suite::Policy, run.json())
}
