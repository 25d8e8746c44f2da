//! A raw HTTP/1.1 client: sends the request line and headers byte for byte, so tests can use
//! paths and header values that an ordinary client would normalise or refuse (`/./`, `%2e%2e`,
//! `//`, non-UTF-8 bytes).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::{HarnessError, Result};

/// A response: status, header block (as text) and body.
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: u16,
    pub head: String,
    pub body: String,
}

/// Sends one request on a fresh connection (`Connection: close`) and reads the whole answer.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &[u8],
    headers: &[(&str, &[u8])],
) -> Result<RawResponse> {
    let mut req = Vec::new();
    req.extend_from_slice(method.as_bytes());
    req.push(b' ');
    req.extend_from_slice(path);
    req.extend_from_slice(b" HTTP/1.1\r\nhost: api.example.com\r\nconnection: close\r\n");
    for (n, v) in headers {
        req.extend_from_slice(n.as_bytes());
        req.extend_from_slice(b": ");
        req.extend_from_slice(v);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"\r\n");
    let io = |e| HarnessError::Io(format!("raw request to {addr}"), e);
    let mut s = TcpStream::connect(addr).await.map_err(io)?;
    s.write_all(&req).await.map_err(io)?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf))
        .await
        .map_err(|_| {
            HarnessError::Io(
                format!("raw request to {addr}"),
                std::io::ErrorKind::TimedOut.into(),
            )
        })?
        .map_err(io)?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok(RawResponse {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    })
}
