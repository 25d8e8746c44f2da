//! `apiguard-limiter` binary: flags, logging, bind, serve until SIGTERM or SIGINT.

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Parser;
use tracing::{error, info};

/// Sliding-window rate-limit service for the apiguard Envoy filter.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Address to serve HTTP on.
    #[arg(
        long,
        env = "APIGUARD_LIMITER_LISTEN",
        default_value = "127.0.0.1:8081"
    )]
    listen: SocketAddr,
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    let listener = match tokio::net::TcpListener::bind(args.listen).await {
        Ok(l) => l,
        Err(e) => {
            error!(listen = %args.listen, "cannot bind: {e}");
            return ExitCode::FAILURE;
        }
    };
    info!(listen = %args.listen, "apiguard-limiter serving");
    let served = axum::serve(listener, apiguard_limiter::app())
        .with_graceful_shutdown(shutdown_signal())
        .await;
    match served {
        Ok(()) => {
            info!("apiguard-limiter stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            error!("server error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Resolves on SIGINT or SIGTERM; in-flight requests then finish before the process exits.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(e) => {
                error!("cannot listen for SIGTERM: {e}");
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    info!("shutting down");
}
