//! `apiguard-limiter` binary: flags, logging, store choice, bind, serve until SIGTERM or SIGINT.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use std::io::IsTerminal;

use apiguard_limiter::probe;
use apiguard_limiter::rls::Descriptors;
use apiguard_limiter::serve::{self, Limits, Stopped};
use apiguard_limiter::tls::{self, TlsFiles};
use apiguard_limiter::{
    app, AppState, MemoryStore, Metrics, RedisStore, RedisTarget, RedisTls, Store,
};
use clap::{Parser, ValueEnum};
use tracing::{error, info, warn};

/// Sliding-window rate-limit service for the apiguard Envoy filter.
///
/// With no store flag the windows live in this process only: fine for development, wrong for
/// more than one replica.
#[derive(Debug, Parser)]
#[command(version = apiguard_buildinfo::LONG_VERSION, about)]
struct Args {
    /// Address to serve HTTP on.
    #[arg(
        long,
        env = "APIGUARD_LIMITER_LISTEN",
        default_value = "127.0.0.1:8081"
    )]
    listen: SocketAddr,
    /// A single Redis node, e.g. redis://127.0.0.1:6379.
    #[arg(long, env = "APIGUARD_LIMITER_REDIS", conflicts_with = "redis_cluster")]
    redis: Option<String>,
    /// A Redis Cluster seed node; repeat for more (env: comma-separated).
    #[arg(long, env = "APIGUARD_LIMITER_REDIS_CLUSTER", value_delimiter = ',')]
    redis_cluster: Vec<String>,
    /// For rediss:// URLs: the CA (PEM) that signs Redis's certificate (default: the system's
    /// roots).
    #[arg(long, env = "APIGUARD_LIMITER_REDIS_TLS_CA")]
    redis_tls_ca: Option<PathBuf>,
    /// For rediss:// URLs: a client certificate (PEM) to present (Redis's tls-auth-clients).
    #[arg(
        long,
        env = "APIGUARD_LIMITER_REDIS_TLS_CERT",
        requires = "redis_tls_key"
    )]
    redis_tls_cert: Option<PathBuf>,
    /// The key of --redis-tls-cert (PEM).
    #[arg(
        long,
        env = "APIGUARD_LIMITER_REDIS_TLS_KEY",
        requires = "redis_tls_cert"
    )]
    redis_tls_key: Option<PathBuf>,
    /// For a rediss:// single node: the name Redis's certificate must carry when it is not the
    /// URL's host.
    #[arg(long, env = "APIGUARD_LIMITER_REDIS_TLS_SERVER_NAME")]
    redis_tls_server_name: Option<String>,
    /// Deadline for one Redis call (connect or reply); past it the answer is 503.
    #[arg(long, env = "APIGUARD_LIMITER_REDIS_TIMEOUT_MS", default_value_t = 50,
          value_parser = clap::value_parser!(u64).range(1..=60_000))]
    redis_timeout_ms: u64,
    /// A client must send its whole request header within this time (the first request's from
    /// accept, TLS handshake included; a later one's from its first byte), or the connection
    /// closes.
    #[arg(long, env = "APIGUARD_LIMITER_HEADER_TIMEOUT_MS", default_value_t = 5_000,
          value_parser = clap::value_parser!(u64).range(1..=600_000))]
    header_timeout_ms: u64,
    /// A connection with no request in flight is closed after this long. Callers' pools
    /// (Envoy's cluster `idle_timeout`) must close idle connections sooner.
    #[arg(long, env = "APIGUARD_LIMITER_IDLE_TIMEOUT_MS", default_value_t = 60_000,
          value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    idle_timeout_ms: u64,
    /// A whole request (header, body, answer) must take at most this long (408 otherwise).
    #[arg(long, env = "APIGUARD_LIMITER_REQUEST_TIMEOUT_MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1..=600_000))]
    request_timeout_ms: u64,
    /// Most connections served at once (authenticated by TLS or, in plain HTTP, past their
    /// first request header); a connection finding none free is closed (plain HTTP: answered
    /// 503 first).
    #[arg(long, env = "APIGUARD_LIMITER_MAX_CONNECTIONS", default_value_t = 4096,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    max_connections: u64,
    /// Most connections not yet authenticated (TLS handshake not done or, in plain HTTP, no
    /// complete request yet) open at once; more are closed as they are accepted.
    #[arg(long, env = "APIGUARD_LIMITER_MAX_PENDING_CONNECTIONS", default_value_t = 1024,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    max_pending_connections: u64,
    /// Most connections not yet authenticated from one peer (an IPv4 address or an IPv6 /64).
    #[arg(long, env = "APIGUARD_LIMITER_MAX_PENDING_PER_PEER", default_value_t = 128,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    max_pending_per_peer: u64,
    /// On SIGTERM or SIGINT, how long in-flight requests get to finish before the process exits.
    #[arg(long, env = "APIGUARD_LIMITER_SHUTDOWN_TIMEOUT_MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(0..=600_000))]
    shutdown_timeout_ms: u64,
    /// The limiter's certificate chain (PEM). With --tls-key and --tls-client-ca, only callers
    /// presenting a certificate signed by the client CA are served (mutual TLS).
    #[arg(long, env = "APIGUARD_LIMITER_TLS_CERT", requires_all = ["tls_key", "tls_client_ca"])]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, env = "APIGUARD_LIMITER_TLS_KEY", requires_all = ["tls_cert", "tls_client_ca"])]
    tls_key: Option<PathBuf>,
    /// The CA (PEM) whose certificates callers must present.
    #[arg(long, env = "APIGUARD_LIMITER_TLS_CLIENT_CA", requires_all = ["tls_cert", "tls_key"])]
    tls_client_ca: Option<PathBuf>,
    /// Serve plain HTTP on a non-loopback address (refused otherwise): only where the network
    /// itself keeps every other caller out.
    #[arg(long, env = "APIGUARD_LIMITER_ALLOW_PLAINTEXT")]
    allow_plaintext: bool,
    /// Descriptor limits for Envoy's rate-limit service protocol (gRPC `ShouldRateLimit`): a
    /// YAML file, one document per domain (docs/ratelimit.md). Without it every domain is
    /// unknown to that protocol; `POST /v1/check` needs none.
    #[arg(long, env = "APIGUARD_LIMITER_RLS_CONFIG")]
    rls_config: Option<PathBuf>,
    /// `text` (colours only on a terminal) or `json` (one object a line, for log pipelines).
    #[arg(long, env = "APIGUARD_LIMITER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Do not serve: ask the limiter listening on --listen whether it is ready (`GET /readyz`
    /// answers 200) and exit 0 if so, 1 otherwise. For container health checks; plain HTTP only.
    #[arg(long)]
    ready_check: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    if args.ready_check {
        return ready_check(&args);
    }
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt().with_env_filter(filter);
    match args.log_format {
        LogFormat::Json => logs.json().with_ansi(false).init(),
        // Colour codes only where a person reads them: a file or a pipe gets plain text.
        LogFormat::Text => logs.with_ansi(std::io::stdout().is_terminal()).init(),
    }
    let timeout = Duration::from_millis(args.redis_timeout_ms);
    let target = match (&args.redis, args.redis_cluster.is_empty()) {
        (Some(url), _) => Some(RedisTarget::Single(url.clone())),
        (None, false) => Some(RedisTarget::Cluster(args.redis_cluster.clone())),
        (None, true) => None,
    };
    match target {
        Some(t) => {
            let store = match redis_tls(&args)
                .and_then(|tls| RedisStore::with_tls(t, timeout, tls).map_err(|e| e.to_string()))
            {
                Ok(s) => s,
                Err(e) => {
                    error!("redis: {e}");
                    return ExitCode::FAILURE;
                }
            };
            serve(&args, store, timeout).await
        }
        None => {
            warn!(
                "NO REDIS CONFIGURED: using the in-memory store. Limits are per process and lost \
                 on restart; pass --redis or --redis-cluster for anything but development"
            );
            serve(&args, MemoryStore::new(), timeout).await
        }
    }
}

/// The `--redis-tls-*` options, files read now; `None` when none is set.
fn redis_tls(args: &Args) -> Result<Option<RedisTls>, String> {
    let read = |flag: &str, p: &PathBuf| {
        std::fs::read(p).map_err(|e| format!("{flag} {}: {e}", p.display()))
    };
    if args.redis_tls_ca.is_none()
        && args.redis_tls_cert.is_none()
        && args.redis_tls_server_name.is_none()
    {
        return Ok(None);
    }
    let ca_pem = match &args.redis_tls_ca {
        Some(p) => Some(read("--redis-tls-ca", p)?),
        None => None,
    };
    let client_pem = match (&args.redis_tls_cert, &args.redis_tls_key) {
        (Some(c), Some(k)) => Some((read("--redis-tls-cert", c)?, read("--redis-tls-key", k)?)),
        _ => None,
    };
    Ok(Some(RedisTls {
        ca_pem,
        client_pem,
        server_name: args.redis_tls_server_name.clone(),
    }))
}

/// `--ready-check`: one `GET /readyz` to this configuration's listener, no logging set-up.
fn ready_check(args: &Args) -> ExitCode {
    let result = if args.tls_cert.is_some() {
        Err(probe::NotReady::Tls)
    } else {
        probe::ready_check(args.listen, Duration::from_secs(2))
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("apiguard-limiter: not ready: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve<S: Store>(args: &Args, store: S, timeout: Duration) -> ExitCode {
    let store_name = store.describe();
    let descriptors = match &args.rls_config {
        Some(path) => match Descriptors::load(path) {
            Ok(d) => {
                info!(file = %path.display(), domains = d.domains(), "rate-limit service descriptors loaded");
                d
            }
            Err(e) => {
                error!("--rls-config: {e}");
                return ExitCode::FAILURE;
            }
        },
        None => Descriptors::default(),
    };
    let state = Arc::new(AppState {
        store,
        metrics: Metrics::new(),
        store_timeout: timeout,
        descriptors,
    });
    let files = match (&args.tls_cert, &args.tls_key, &args.tls_client_ca) {
        (Some(cert), Some(key), Some(client_ca)) => Some(TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
            client_ca: client_ca.clone(),
        }),
        _ => None,
    };
    let tls = match tls::acceptor(args.listen, files, args.allow_plaintext) {
        Ok(t) => t,
        Err(e) => {
            error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let listener = match tokio::net::TcpListener::bind(args.listen).await {
        Ok(l) => l,
        Err(e) => {
            error!(listen = %args.listen, "cannot bind: {e}");
            return ExitCode::FAILURE;
        }
    };
    let transport = if tls.is_some() {
        "mutual TLS"
    } else {
        "plain HTTP"
    };
    info!(
        listen = %args.listen,
        store = %store_name,
        transport,
        version = apiguard_buildinfo::VERSION,
        revision = apiguard_buildinfo::REVISION,
        "apiguard-limiter serving"
    );
    let limits = Limits {
        header_read_timeout: Duration::from_millis(args.header_timeout_ms),
        idle_timeout: Duration::from_millis(args.idle_timeout_ms),
        request_timeout: Duration::from_millis(args.request_timeout_ms),
        max_connections: usize::try_from(args.max_connections).unwrap_or(usize::MAX),
        max_pending: usize::try_from(args.max_pending_connections).unwrap_or(usize::MAX),
        max_pending_per_peer: usize::try_from(args.max_pending_per_peer).unwrap_or(usize::MAX),
        shutdown_timeout: Duration::from_millis(args.shutdown_timeout_ms),
    };
    match serve::serve(listener, app(state), tls, limits, shutdown_signal()).await {
        Stopped::Drained => info!("apiguard-limiter stopped"),
        Stopped::DeadlinePassed => info!("apiguard-limiter stopped (shutdown deadline passed)"),
    }
    ExitCode::SUCCESS
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
