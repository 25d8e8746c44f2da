//! `apiguard-limiter --ready-check`: asks a running limiter's `GET /readyz` and says whether it
//! answered 200, for a container's HEALTHCHECK (the production image has no curl).
//!
//! Plain HTTP/1.0 over a std socket, written by hand: one request line and one status line do
//! not justify an HTTP client in the production binary. A limiter serving mutual TLS cannot be
//! asked this way (the probe has no client certificate); that is an error that says so.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::time::Duration;

/// Why the limiter is not ready, as the health check prints it.
#[derive(Debug, thiserror::Error)]
pub enum NotReady {
    #[error("cannot reach the limiter at {addr}: {source}")]
    Unreachable {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("the limiter at {addr} answered /readyz with {status_line:?}")]
    Status {
        addr: SocketAddr,
        status_line: String,
    },
    #[error(
        "the limiter serves mutual TLS: --ready-check speaks plain HTTP only; probe /readyz with a \
         client certificate (docs/operations.md)"
    )]
    Tls,
}

/// The address to ask for a limiter listening on `listen`: the unspecified address (`0.0.0.0`,
/// `::`) is reached through loopback.
pub fn probe_address(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
}

/// `Ok` when the limiter on `listen` answers `GET /readyz` with 200 within `timeout` (each of
/// connect, write and read).
pub fn ready_check(listen: SocketAddr, timeout: Duration) -> Result<(), NotReady> {
    let addr = probe_address(listen);
    let unreachable = |source| NotReady::Unreachable { addr, source };
    let mut stream = TcpStream::connect_timeout(&addr, timeout).map_err(unreachable)?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(unreachable)?;
    stream
        .set_write_timeout(Some(timeout))
        .map_err(unreachable)?;
    stream
        .write_all(b"GET /readyz HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .map_err(unreachable)?;
    // The status line fits in the first 64 bytes; the rest of the answer is not needed.
    let mut head = [0u8; 64];
    let mut read = 0;
    while read < head.len() {
        match stream.read(&mut head[read..]).map_err(unreachable)? {
            0 => break,
            n => read += n,
        }
        if head[..read].contains(&b'\n') {
            break;
        }
    }
    let text = String::from_utf8_lossy(&head[..read]);
    let status_line = text.lines().next().unwrap_or_default().to_owned();
    let mut parts = status_line.split_whitespace();
    match (parts.next(), parts.next()) {
        (Some(version), Some("200")) if version.starts_with("HTTP/") => Ok(()),
        _ => Err(NotReady::Status { addr, status_line }),
    }
}
