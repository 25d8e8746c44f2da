//! `apiguard token mint` and `apiguard token inspect`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use apiguard_core::jose::AlgSet;
use apiguard_core::jose::Algorithm;
use apiguard_core::jwt::keys::KeySet;
use apiguard_core::jwt::token;
use apiguard_testkit::mint::{mint, SigningKey};
use base64ct::{Base64UrlUnpadded, Encoding};
use clap::Subcommand;
use serde_json::{json, Value};

use crate::files::read;

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Sign a token with a private JWK (for demos and tests; apiguard itself never signs).
    Mint {
        /// A private JWK file (RSA, EC P-256/P-384, OKP Ed25519 or oct).
        #[arg(long)]
        key: PathBuf,
        /// Signature algorithm, e.g. ES256, RS256, EdDSA.
        #[arg(long)]
        alg: String,
        /// `kid` header.
        #[arg(long)]
        kid: Option<String>,
        /// Claims as a JSON object; `iat` and `exp` are added when missing.
        #[arg(long, default_value = "{}")]
        claims: String,
        /// Lifetime in seconds, for the added `exp`.
        #[arg(long, default_value_t = 3600)]
        ttl: i64,
    },
    /// Decode a token; with `--jwks`, also check its signature. Never calls a token valid
    /// without a key.
    Inspect {
        token: String,
        /// A JWK Set file to check the signature with.
        #[arg(long)]
        jwks: Option<PathBuf>,
    },
}

pub fn run(cmd: TokenCommand) -> ExitCode {
    match cmd {
        TokenCommand::Mint {
            key,
            alg,
            kid,
            claims,
            ttl,
        } => mint_cmd(&key, &alg, kid.as_deref(), &claims, ttl),
        TokenCommand::Inspect { token, jwks } => inspect(&token, jwks.as_deref()),
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn mint_cmd(key: &Path, alg: &str, kid: Option<&str>, claims: &str, ttl: i64) -> ExitCode {
    let Some(alg) = Algorithm::from_name(alg) else {
        eprintln!("error: --alg {alg}: not an algorithm apiguard knows");
        return ExitCode::from(2);
    };
    let jwk: Value = match read(key).map(|b| serde_json::from_slice(&b)) {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => {
            eprintln!("error: {}: not JSON: {e}", key.display());
            return ExitCode::from(1);
        }
        Err(code) => return code,
    };
    let key = match SigningKey::from_jwk(&jwk) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("error: --key: {e}");
            return ExitCode::from(1);
        }
    };
    let mut claims: Value = match serde_json::from_str(claims) {
        Ok(v @ Value::Object(_)) => v,
        _ => {
            eprintln!("error: --claims must be a JSON object");
            return ExitCode::from(2);
        }
    };
    let n = now();
    if let Some(o) = claims.as_object_mut() {
        o.entry("iat").or_insert(json!(n));
        o.entry("exp").or_insert(json!(n + ttl));
    }
    match mint(alg, &key, kid, &claims) {
        Ok(t) => {
            println!("{t}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

fn decode_part(part: &str) -> Value {
    Base64UrlUnpadded::decode_vec(part)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null)
}

fn inspect(t: &str, jwks: Option<&Path>) -> ExitCode {
    let parts: Vec<&str> = t.trim().split('.').collect();
    if parts.len() != 3 {
        eprintln!(
            "error: not a compact JWS (expected 3 parts, got {})",
            parts.len()
        );
        return ExitCode::from(1);
    }
    println!(
        "{}",
        serde_json::to_string_pretty(
            &json!({"header": decode_part(parts[0]), "claims": decode_part(parts[1])})
        )
        .unwrap_or_default()
    );
    let Some(path) = jwks else {
        println!("signature: NOT checked (no --jwks given); nothing here says this token is valid");
        return ExitCode::SUCCESS;
    };
    let bytes = match read(path) {
        Ok(b) => b,
        Err(code) => return code,
    };
    let keys = match KeySet::from_document(&bytes) {
        Ok((k, _)) => k,
        Err(e) => {
            eprintln!("error: {}: {e}", path.display());
            return ExitCode::from(1);
        }
    };
    let all = AlgSet::of(&Algorithm::ALL);
    match token::parse(t.trim().as_bytes(), 64 * 1024)
        .and_then(|p| token::verify_signature(&p, all, &keys, None))
    {
        Ok(()) => {
            println!("signature: valid for a key in {} (claims such as iss, aud and exp are not checked here)", path.display());
            ExitCode::SUCCESS
        }
        Err(why) => {
            println!("signature: INVALID ({why:?})");
            ExitCode::from(1)
        }
    }
}
