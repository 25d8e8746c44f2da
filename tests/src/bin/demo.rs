//! `just demo`: the whole apiguard pipeline on localhost — Envoy with `envoy/demo.yaml` (JWT with
//! keys from the demo issuer, the built-in policy pack, rate limits through apiguard-limiter) in
//! front of the sample API — then a walkthrough of what it does, then serving until Ctrl-C.
//!
//! `--check` (`just demo-check`, part of `just test`) runs the walkthrough on free ports and
//! exits non-zero on any unexpected answer. The `upstream` and `issuer` subcommands run one piece
//! alone, for the docker-compose demo (`demo/`); `walk` and `check-log` check a demo running
//! elsewhere (`just demo-compose-check`).

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
    /// Run the walkthrough against a demo running elsewhere (the compose demo) and exit non-zero
    /// on any unexpected answer.
    Walk {
        /// Envoy's listener, e.g. 127.0.0.1:10000.
        #[arg(long)]
        envoy: std::net::SocketAddr,
        /// The issuer's private JWK (the demo's: tests/fixtures/keys/es256.json).
        #[arg(long)]
        key: PathBuf,
    },
    /// Check a saved Envoy log (after `walk`) for the lines the README promises.
    CheckLog { log: PathBuf },
}

fn read_key(path: &std::path::Path) -> Result<SigningKey, Box<dyn std::error::Error>> {
    let jwk: serde_json::Value = serde_json::from_slice(
        &std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?,
    )?;
    Ok(SigningKey::from_jwk(&jwk)?)
}

/// `SUCCESS` with `what: ok_line` when nothing is `wrong`, else every problem and `FAILURE`.
fn verdict(what: &str, ok_line: &str, wrong: &[String]) -> ExitCode {
    if wrong.is_empty() {
        println!("\n{what}: {ok_line}");
        return ExitCode::SUCCESS;
    }
    eprintln!(
        "\n{what}: {} unexpected answers:\n  {}",
        wrong.len(),
        wrong.join("\n  ")
    );
    ExitCode::FAILURE
}

async fn serve_part(part: Part) -> Result<ExitCode, Box<dyn std::error::Error>> {
    match part {
        Part::Upstream { listen } => {
            let api = apiguard_e2e::sample_api::start(&listen).await?;
            println!("sample API on http://{}", api.addr);
            tokio::signal::ctrl_c().await?;
        }
        Part::Walk { envoy, key } => {
            let front = demo::Front::new(envoy, read_key(&key)?);
            println!("apiguard demo at http://{envoy}");
            return Ok(verdict(
                "walk",
                "every scenario answered as expected",
                &demo::walkthrough(&front).await,
            ));
        }
        Part::CheckLog { log } => {
            let text =
                std::fs::read_to_string(&log).map_err(|e| format!("{}: {e}", log.display()))?;
            return Ok(verdict(
                "check-log",
                "Envoy's log has the lines the README shows",
                &demo::log_problems(&text),
            ));
        }
        Part::Issuer { listen, key, kid } => {
            let key = read_key(&key)?;
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
    let mut wrong = demo::walkthrough(&stack.front).await;
    if check {
        // What the README promises to find in Envoy's log (the access log is flushed each second).
        tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
        wrong.extend(demo::log_problems(&stack.envoy.proc.log()));
        let code = verdict("demo-check", "every scenario answered as expected", &wrong);
        if code != ExitCode::SUCCESS {
            eprintln!("----- Envoy log -----\n{}", stack.envoy.proc.log());
        }
        return Ok(code);
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
