//! Suite `jwt`: Envoy CPU per request of apiguard's JWT stage (cache hit; and without its cache
//! for RS256, ES256 and EdDSA) against Envoy's native `jwt_authn` with and without its token
//! cache, same key and token (see [`crate::measure`]). Uncached variants verify a signature on
//! every request and send a tenth of the requests.

use apiguard_core::jose::Algorithm;
use apiguard_e2e::keys::{self, claims, token};
use apiguard_e2e::{Echo, EnvoySpec};
use serde_json::json;

use crate::measure::{write_json, Label, Run, Variant};
use crate::setup::{jwt_authn, jwt_section, one_request};
use crate::{BenchResult, Suite};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JwtVariant {
    NoFilter,
    NativeJwtAuthnCache,
    NativeJwtAuthn,
    ApiguardCached,
    ApiguardUncachedRs256,
    ApiguardUncachedEs256,
    ApiguardUncachedEdDsa,
}

impl Label for JwtVariant {
    fn label(&self) -> &str {
        match self {
            JwtVariant::NoFilter => "no filter",
            JwtVariant::NativeJwtAuthnCache => "native jwt_authn + cache, RS256",
            JwtVariant::NativeJwtAuthn => "native jwt_authn, RS256",
            JwtVariant::ApiguardCached => "apiguard jwt cached, RS256",
            JwtVariant::ApiguardUncachedRs256 => "apiguard jwt uncached, RS256",
            JwtVariant::ApiguardUncachedEs256 => "apiguard jwt uncached, ES256",
            JwtVariant::ApiguardUncachedEdDsa => "apiguard jwt uncached, EdDSA",
        }
    }
}

/// The JWT stage against Envoy's native `jwt_authn`, same key and token.
pub async fn run() -> BenchResult {
    use JwtVariant::*;
    let echo = Echo::start().await?;
    let all = keys::all();
    let jwks = keys::jwks(&all);
    let tok = |alg: Algorithm| {
        let (a, kid, k) = all.iter().find(|(a, _, _)| *a == alg).ok_or("no key")?;
        Ok::<String, String>(format!(
            "Bearer {}",
            token(*a, kid, k, &claims(json!({"exp": keys::now() + 86_400})))
        ))
    };
    let rs = tok(Algorithm::RS256)?;
    let apiguard = |cache: usize| {
        let mut jwt = jwt_section(&jwks);
        jwt["cache_entries"] = json!(cache);
        json!({ "jwt": jwt }).to_string()
    };
    let native = |cache: bool| jwt_authn(&jwks, cache.then_some(100), false);
    let spec = || EnvoySpec::new(echo.addr);
    let variants = vec![
        Variant::new(NoFilter, spec(), one_request("/bench", Some(&rs)), 1).await?,
        Variant::new(
            NativeJwtAuthnCache,
            spec().with_native_filter(native(true)),
            one_request("/bench", Some(&rs)),
            1,
        )
        .await?,
        Variant::new(
            NativeJwtAuthn,
            spec().with_native_filter(native(false)),
            one_request("/bench", Some(&rs)),
            1,
        )
        .await?,
        Variant::new(
            ApiguardCached,
            spec().with_filter(apiguard(1024)),
            one_request("/bench", Some(&rs)),
            1,
        )
        .await?,
        Variant::new(
            ApiguardUncachedRs256,
            spec().with_filter(apiguard(0)),
            one_request("/bench", Some(&rs)),
            10,
        )
        .await?,
        Variant::new(
            ApiguardUncachedEs256,
            spec().with_filter(apiguard(0)),
            one_request("/bench", Some(&tok(Algorithm::ES256)?)),
            10,
        )
        .await?,
        Variant::new(
            ApiguardUncachedEdDsa,
            spec().with_filter(apiguard(0)),
            one_request("/bench", Some(&tok(Algorithm::EdDSA)?)),
            10,
        )
        .await?,
    ];
    let mut run = Run::new(variants);
    run.measure().await?;
    run.ratio(ApiguardCached, NativeJwtAuthnCache, Some(1.3));
    run.ratio(ApiguardUncachedRs256, NativeJwtAuthn, None);
    write_json(Suite::Jwt, run.json())
}
