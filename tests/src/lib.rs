//! End-to-end harness: real Envoy with `apiguard.wasm`, real Redis, the real limiter binary and
//! an echo upstream, all on loopback ports chosen at run time.
//!
//! Every process is owned by a [`Proc`]: it is killed when dropped, and when the drop happens
//! during a panic (a failing test) its log is printed, so a red test shows what Envoy, Redis or
//! the limiter said. A missing binary is an error that says how to install it; nothing is
//! skipped.

pub mod certs;
pub mod demo;
pub mod echo;
pub mod envoy;
pub mod fake_limiter;
pub mod idle_proxy;
pub mod jwks;
pub mod keys;
pub mod load;
pub mod proc;
pub mod raw;
pub mod redis;
pub mod sample_api;
pub mod serve;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use echo::{Echo, Recorded};
pub use envoy::{Envoy, EnvoySpec};
pub use jwks::JwksServer;
pub use proc::Proc;
pub use redis::{redis_cli, Limiter, Redis, RedisCluster};

/// What can go wrong while setting up a test environment.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    #[error("{what} not found at {path}: {hint}")]
    Missing {
        what: &'static str,
        path: PathBuf,
        hint: &'static str,
    },
    #[error("{0}: {1}")]
    Io(String, #[source] std::io::Error),
    #[error("{name} did not become ready within {waited:?}; its log:\n{log}")]
    NotReady {
        name: String,
        waited: Duration,
        log: String,
    },
    #[error("{name} exited early ({status}); its log:\n{log}")]
    Exited {
        name: String,
        status: String,
        log: String,
    },
    #[error("{0} is still running after {1:?}, but it was expected to exit")]
    StillRunning(String, Duration),
}

pub type Result<T> = std::result::Result<T, HarnessError>;

/// The repository root (this crate lives in `tests/`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Cargo's target directory, honouring `CARGO_TARGET_DIR`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) => {
            let d = PathBuf::from(d);
            if d.is_absolute() {
                d
            } else {
                repo_root().join(d)
            }
        }
        None => repo_root().join("target"),
    }
}

/// The filter module built by `just build` (release, `wasm32-wasip1`). Override with
/// `APIGUARD_WASM`.
pub fn wasm_path() -> Result<PathBuf> {
    let path = std::env::var_os("APIGUARD_WASM")
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir().join("wasm32-wasip1/release/apiguard.wasm"));
    existing(
        "apiguard.wasm",
        path,
        "build it with `just build` (cargo build --release --target wasm32-wasip1 -p apiguard-wasm)",
    )
}

/// The signature probe (`tests/probe`, a test fixture) built by `just build`.
pub fn probe_wasm_path() -> Result<PathBuf> {
    existing(
        "apiguard_probe.wasm",
        target_dir().join("wasm32-wasip1/release/apiguard_probe.wasm"),
        "build it with `just build` (cargo build --release --target wasm32-wasip1 -p apiguard-probe)",
    )
}

/// A binary of this workspace built by `just build` (debug profile unless the running harness
/// is itself a release build, as the benchmark is).
pub fn workspace_bin(name: &'static str) -> Result<PathBuf> {
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    existing(
        name,
        target_dir().join(profile).join(name),
        "build the workspace with `just build`",
    )
}

fn existing(what: &'static str, path: PathBuf, hint: &'static str) -> Result<PathBuf> {
    if path.is_file() {
        Ok(path)
    } else {
        Err(HarnessError::Missing { what, path, hint })
    }
}

/// A loopback port that was free a moment ago. Only for programs that cannot bind port 0 and
/// report it back (Envoy's listener is bound to port 0 and read from its admin API instead).
pub fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| HarnessError::Io("bind".into(), e))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| HarnessError::Io("local_addr".into(), e))
}

/// An HTTP client that never follows redirects and never reuses a connection across tests.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap_or_else(|_| reqwest::Client::new())
}
