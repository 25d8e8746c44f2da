//! Redis and apiguard-limiter as child processes on loopback.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::{free_port, workspace_bin, HarnessError, Proc, Result};

const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// `redis-server` from PATH (`just setup` installs Debian's package), or `APIGUARD_REDIS_SERVER`.
pub fn redis_server_bin() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("APIGUARD_REDIS_SERVER") {
        return Ok(PathBuf::from(p));
    }
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("redis-server"))
            .find(|p| p.is_file())
    });
    found.ok_or(HarnessError::Missing {
        what: "redis-server",
        path: PathBuf::from("$PATH"),
        hint: "run `just setup` (apt-get install redis-server) or set APIGUARD_REDIS_SERVER",
    })
}

/// A throwaway Redis: no persistence, loopback only.
pub struct Redis {
    pub proc: Proc,
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Redis {
    /// A standalone Redis on a free loopback port.
    pub fn start() -> Result<Redis> {
        Self::start_on(free_port()?, &[])
    }

    /// A Redis on a given loopback port (a restart reuses the port) with extra arguments.
    pub fn start_on(port: u16, extra: &[&str]) -> Result<Redis> {
        let dir = tempfile::Builder::new()
            .prefix("apiguard-redis-")
            .tempdir()
            .map_err(|e| HarnessError::Io("tempdir".into(), e))?;
        let mut cmd = Command::new(redis_server_bin()?);
        cmd.args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .args(extra);
        let mut proc = Proc::spawn(&format!("redis-{port}"), cmd, dir.path())?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let start = Instant::now();
        while !ping(addr) {
            proc.check_alive()?;
            if start.elapsed() > READY_TIMEOUT {
                return Err(HarnessError::NotReady {
                    name: "redis".into(),
                    waited: READY_TIMEOUT,
                    log: proc.log(),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Redis {
            proc,
            addr,
            _dir: dir,
        })
    }

    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Runs `redis-cli` against this server and returns its output.
    pub fn cli(&self, args: &[&str]) -> Result<String> {
        redis_cli(&["-p", &self.port().to_string()], args)
    }
}

/// `redis-cli` next to `redis-server`.
pub fn redis_cli(conn: &[&str], args: &[&str]) -> Result<String> {
    let server = redis_server_bin()?;
    let cli = server.with_file_name("redis-cli");
    let out = Command::new(&cli)
        .args(["-h", "127.0.0.1"])
        .args(conn)
        .args(args)
        .output()
        .map_err(|e| HarnessError::Io(format!("{} {args:?}", cli.display()), e))?;
    Ok(format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
}

/// A Redis Cluster of `masters` nodes (no replicas) on loopback, created with
/// `redis-cli --cluster create` and waited on until every node reports `cluster_state:ok`.
pub struct RedisCluster {
    pub nodes: Vec<Redis>,
}

impl RedisCluster {
    pub fn start(masters: usize) -> Result<RedisCluster> {
        let mut nodes = Vec::new();
        for _ in 0..masters {
            nodes.push(Redis::start_on(
                free_port()?,
                &["--cluster-enabled", "yes", "--cluster-node-timeout", "5000"],
            )?);
        }
        let addrs: Vec<String> = nodes.iter().map(|n| n.addr.to_string()).collect();
        let mut args = vec!["--cluster", "create"];
        args.extend(addrs.iter().map(String::as_str));
        args.extend(["--cluster-replicas", "0", "--cluster-yes"]);
        let created = redis_cli(&[], &args)?;
        let start = Instant::now();
        loop {
            let mut ok = true;
            for n in &nodes {
                ok &= n.cli(&["cluster", "info"])?.contains("cluster_state:ok");
            }
            if ok {
                return Ok(RedisCluster { nodes });
            }
            if start.elapsed() > READY_TIMEOUT {
                return Err(HarnessError::NotReady {
                    name: "redis cluster".into(),
                    waited: READY_TIMEOUT,
                    log: created,
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Seed URLs for a cluster client.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(Redis::url).collect()
    }
}

/// `PING` over RESP, answered `+PONG`.
fn ping(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    let mut buf = [0u8; 7];
    s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
}

/// The apiguard-limiter binary built by `just build`.
pub struct Limiter {
    pub proc: Proc,
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Limiter {
    /// Starts the workspace's limiter binary with extra flags (e.g. `--redis URL`) and waits
    /// for `/healthz`.
    pub async fn start(args: &[String]) -> Result<Limiter> {
        Self::start_bin(&workspace_bin("apiguard-limiter")?, args).await
    }

    /// Same, with a given binary (the limiter's own tests pass Cargo's `CARGO_BIN_EXE_…`).
    pub async fn start_bin(bin: &std::path::Path, args: &[String]) -> Result<Limiter> {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        Self::start_bin_on(bin, addr, args).await
    }

    /// The workspace's limiter on a given address.
    pub async fn start_on(addr: SocketAddr, args: &[String]) -> Result<Limiter> {
        Self::start_bin_on(&workspace_bin("apiguard-limiter")?, addr, args).await
    }

    async fn start_bin_on(
        bin: &std::path::Path,
        addr: SocketAddr,
        args: &[String],
    ) -> Result<Limiter> {
        let dir = tempfile::Builder::new()
            .prefix("apiguard-limiter-")
            .tempdir()
            .map_err(|e| HarnessError::Io("tempdir".into(), e))?;
        let mut cmd = Command::new(bin);
        cmd.arg("--listen").arg(addr.to_string()).args(args);
        let mut proc = Proc::spawn("limiter", cmd, dir.path())?;
        let http = crate::client();
        let start = Instant::now();
        // Over mutual TLS a plain client cannot ask `/healthz`: wait for the log line instead.
        let tls = args.iter().any(|a| a == "--tls-cert");
        loop {
            proc.check_alive()?;
            let ready = if tls {
                proc.log().contains("apiguard-limiter serving")
            } else {
                let r = http.get(format!("http://{addr}/healthz")).send().await;
                r.is_ok_and(|r| r.status().is_success())
            };
            if ready {
                return Ok(Limiter {
                    proc,
                    addr,
                    _dir: dir,
                });
            }
            if start.elapsed() > READY_TIMEOUT {
                return Err(HarnessError::NotReady {
                    name: "limiter".into(),
                    waited: READY_TIMEOUT,
                    log: proc.log(),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
