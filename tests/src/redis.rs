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
    /// `redis-cli`'s TLS flags when this Redis serves TLS only; empty for plain TCP.
    tls_cli: Vec<String>,
}

impl Redis {
    /// A standalone Redis on a free loopback port.
    pub fn start() -> Result<Redis> {
        Self::start_on(free_port()?, &[])
    }

    /// A Redis on a given loopback port (a restart reuses the port) with extra arguments.
    pub fn start_on(port: u16, extra: &[&str]) -> Result<Redis> {
        Self::launch(port, extra, Vec::new())
    }

    /// A Redis serving TLS only on a free loopback port, with `pki`'s server certificate
    /// (`limiter.test` and 127.0.0.1) and its CA for client certificates; `extra` as for
    /// [`Redis::start_on`] (e.g. `--tls-auth-clients no`).
    pub fn start_tls(pki: &crate::certs::Pki, extra: &[&str]) -> Result<Redis> {
        Self::start_tls_on(free_port()?, pki, extra)
    }

    /// [`Redis::start_tls`] on a given port.
    pub fn start_tls_on(port: u16, pki: &crate::certs::Pki, extra: &[&str]) -> Result<Redis> {
        let p = |n: &str| pki.path(n).display().to_string();
        let port_text = port.to_string();
        let (cert, key, ca) = (p("server.pem"), p("server.key"), p("ca.pem"));
        let mut args = vec!["--port", "0", "--tls-port", &port_text];
        args.extend(["--tls-cert-file", &cert, "--tls-key-file", &key]);
        args.extend(["--tls-ca-cert-file", &ca]);
        // What a node presents when it connects out (the Cluster bus, replication): a client
        // certificate, since the server certificate is for server authentication only.
        let (client_cert, client_key) = (p("client.pem"), p("client.key"));
        args.extend(["--tls-client-cert-file", &client_cert]);
        args.extend(["--tls-client-key-file", &client_key]);
        args.extend(extra);
        let tls_cli = [
            "--tls",
            "--cacert",
            &ca,
            "--cert",
            &client_cert,
            "--key",
            &client_key,
        ]
        .map(str::to_owned)
        .to_vec();
        Self::launch(port, &args, tls_cli)
    }

    fn launch(port: u16, extra: &[&str], tls_cli: Vec<String>) -> Result<Redis> {
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
        let ready = || {
            if tls_cli.is_empty() {
                ping(addr)
            } else {
                cli_at(&tls_cli, port, &["ping"]).is_ok_and(|out| out.contains("PONG"))
            }
        };
        while !ready() {
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
            tls_cli,
        })
    }

    /// `redis://…`, or `rediss://…` when it serves TLS.
    pub fn url(&self) -> String {
        let scheme = if self.tls_cli.is_empty() {
            "redis"
        } else {
            "rediss"
        };
        format!("{scheme}://{}", self.addr)
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Runs `redis-cli` against this server and returns its output.
    pub fn cli(&self, args: &[&str]) -> Result<String> {
        cli_at(&self.tls_cli, self.port(), args)
    }
}

/// `redis-cli` against the server on `port`, with its TLS flags (none for plain TCP).
fn cli_at(tls_cli: &[String], port: u16, args: &[&str]) -> Result<String> {
    let port = port.to_string();
    let mut conn: Vec<&str> = tls_cli.iter().map(String::as_str).collect();
    conn.extend(["-p", &port]);
    redis_cli(&conn, args)
}

/// `redis-cli` next to `redis-server`.
/// It is stopped after [`READY_TIMEOUT`] (`--cluster create` waits for ever on nodes that cannot
/// meet), and that is an error carrying its output so far.
pub fn redis_cli(conn: &[&str], args: &[&str]) -> Result<String> {
    let server = redis_server_bin()?;
    let cli = server.with_file_name("redis-cli");
    let io = |e| HarnessError::Io(format!("{} {args:?}", cli.display()), e);
    let dir = tempfile::tempdir().map_err(io)?;
    let (out, err) = (dir.path().join("out"), dir.path().join("err"));
    let mut child = Command::new(&cli)
        .args(["-h", "127.0.0.1"])
        .args(conn)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(&out).map_err(io)?)
        .stderr(std::fs::File::create(&err).map_err(io)?)
        .spawn()
        .map_err(io)?;
    let start = Instant::now();
    let mut stopped = false;
    while child.try_wait().map_err(io)?.is_none() {
        if start.elapsed() > READY_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            stopped = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let read = |p: &std::path::Path| {
        String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned()
    };
    let output = format!("{}{}", read(&out), read(&err));
    if stopped {
        return Err(HarnessError::NotReady {
            name: format!("redis-cli {args:?}"),
            waited: READY_TIMEOUT,
            log: output,
        });
    }
    Ok(output)
}

/// A Redis Cluster of `masters` nodes (no replicas) on loopback, created with
/// `redis-cli --cluster create` and waited on until every node reports `cluster_state:ok`.
pub struct RedisCluster {
    pub nodes: Vec<Redis>,
}

impl RedisCluster {
    pub fn start(masters: usize) -> Result<RedisCluster> {
        Self::start_with(masters, None)
    }

    /// A Cluster whose nodes serve (and talk to each other over) TLS only, with `pki`'s
    /// certificates (see [`Redis::start_tls`]).
    pub fn start_tls(masters: usize, pki: &crate::certs::Pki) -> Result<RedisCluster> {
        Self::start_with(masters, Some(pki))
    }

    fn start_with(masters: usize, pki: Option<&crate::certs::Pki>) -> Result<RedisCluster> {
        let mut nodes = Vec::new();
        let cluster = ["--cluster-enabled", "yes", "--cluster-node-timeout", "5000"];
        for _ in 0..masters {
            nodes.push(match pki {
                None => Redis::start_on(free_port()?, &cluster)?,
                Some(pki) => {
                    let mut extra = cluster.to_vec();
                    extra.extend(["--tls-cluster", "yes", "--tls-replication", "yes"]);
                    Redis::start_tls(pki, &extra)?
                }
            });
        }
        let addrs: Vec<String> = nodes.iter().map(|n| n.addr.to_string()).collect();
        let mut args = vec!["--cluster", "create"];
        args.extend(addrs.iter().map(String::as_str));
        args.extend(["--cluster-replicas", "0", "--cluster-yes"]);
        let tls_cli: Vec<&str> = nodes
            .first()
            .map(|n| n.tls_cli.iter().map(String::as_str).collect())
            .unwrap_or_default();
        let created = redis_cli(&tls_cli, &args)?;
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
