//! `just demo`: the whole apiguard pipeline on localhost — Envoy with `envoy/demo.yaml` (JWT with
//! keys from the demo issuer, the built-in policy pack, rate limits through apiguard-limiter) in
//! front of the sample API — then a walkthrough of what it does, then serving until Ctrl-C.
//!
//! `--check` (`just demo-check`, part of `just test`) runs the walkthrough on free ports and
//! exits non-zero on any unexpected answer. The `upstream` and `issuer` subcommands run one piece
//! alone, for the docker-compose demo (`demo/`).

use std::path::PathBuf;
use std::process::ExitCode;

use apiguard_e2e::demo::{self, Ports, Stack};
use apiguard_e2e::JwksServer;
use apiguard_testkit::mint::SigningKey;
use clap::{Parser, Subcommand};

/// The apiguard demo.
#[derive(Debug, Parser)]
struct Args {
    /// Run the walkthrough on free ports, check every answer, and exit.
    #[arg(long)]
    check: bool,
    #[command(subcommand)]
    part: Option<Part>,
}

/// Run one piece of the demo alone (for containers).
#[derive(Debug, Subcommand)]
enum Part {
    /// The sample API (tenant documents, admin, auth, search, export).
    Upstream {
        #[arg(long, default_value = "0.0.0.0:8080")]
        listen: String,
    },
    /// The demo issuer: serves the public half of a private JWK at /.well-known/jwks.json.
    Issuer {
        #[arg(long, default_value = "0.0.0.0:8081")]
        listen: String,
        /// The private JWK whose public key to publish (tokens are minted with it).
        #[arg(long)]
        key: PathBuf,
        #[arg(long, default_value = "demo-es256")]
        kid: String,
    },
}

async fn serve_part(part: Part) -> Result<ExitCode, Box<dyn std::error::Error>> {
    match part {
        Part::Upstream { listen } => {
            let api = apiguard_e2e::sample_api::start(&listen).await?;
            println!("sample API on http://{}", api.addr);
            tokio::signal::ctrl_c().await?;
        }
        Part::Issuer { listen, key, kid } => {
            let jwk: serde_json::Value = serde_json::from_slice(&std::fs::read(&key)?)?;
            let key = SigningKey::from_jwk(&jwk)?;
            let jwks = serde_json::json!({"keys": [key.public_jwk(Some(&kid))]}).to_string();
            let issuer = JwksServer::start_on(&listen, &jwks).await?;
            println!(
                "demo issuer JWKS on http://{}/.well-known/jwks.json",
                issuer.addr
            );
            tokio::signal::ctrl_c().await?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let result = match args.part {
        Some(part) => serve_part(part).await,
        None => run(args.check).await,
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("demo failed: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(check: bool) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let ports = if check { Ports::FREE } else { Ports::FIXED };
    let stack = Stack::start(ports)
        .await
        .map_err(|e| format!("{e}\n(is another demo running on ports 10000 and 18080–18082?)"))?;
    println!("apiguard demo");
    println!(
        "  Envoy with apiguard    http://{}  (admin http://{}/)",
        stack.envoy.addr, stack.envoy.admin
    );
    println!("  sample API (upstream)  http://{}", stack.upstream.addr);
    println!(
        "  demo issuer JWKS       http://{}/.well-known/jwks.json",
        stack.issuer.addr
    );
    match &stack.redis {
        Some(r) => println!(
            "  apiguard-limiter       http://{} (Redis {})",
            stack.limiter.addr,
            r.url()
        ),
        None => println!(
            "  apiguard-limiter       http://{} (redis-server is not installed: in-memory store)",
            stack.limiter.addr
        ),
    }
    println!(
        "  Envoy log              {}",
        demo::log_path(&stack).display()
    );
    let mut wrong = demo::walkthrough(&stack).await;
    if check {
        // What the README promises to find in Envoy's log.
        tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
        let log = stack.envoy.proc.log();
        if !log.contains("apiguard: configuration loaded (jwt: on, policy: on, rate_limit: on)") {
            wrong.push("Envoy's log lacks the configuration-loaded line".into());
        }
        let denied = log.lines().any(|l| {
            l.starts_with("[access] GET /api/v1/tenants/acme/%2e%2e/globex/documents/7 403")
                && l.contains(r#"decision={"decision":"deny""#)
                && l.contains(r#""reasons":["tenant_mismatch"]"#)
        });
        if !denied {
            wrong.push("Envoy's access log lacks the tenant_mismatch decision".into());
        }
        if wrong.is_empty() {
            println!("\ndemo-check: every scenario answered as expected");
            return Ok(ExitCode::SUCCESS);
        }
        eprintln!(
            "\ndemo-check: {} unexpected answers:\n  {}",
            wrong.len(),
            wrong.join("\n  ")
        );
        eprintln!("----- Envoy log -----\n{}", stack.envoy.proc.log());
        return Ok(ExitCode::FAILURE);
    }
    if !wrong.is_empty() {
        eprintln!(
            "\nwarning: {} scenarios did not answer as expected:\n  {}",
            wrong.len(),
            wrong.join("\n  ")
        );
    }
    println!("\n{}", demo::cheat_sheet(&stack));
    println!("Serving until Ctrl-C.");
    tokio::signal::ctrl_c().await?;
    println!("\nStopping Envoy, the limiter, Redis, the issuer and the upstream.");
    drop(stack);
    Ok(ExitCode::SUCCESS)
}
