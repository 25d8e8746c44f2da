//! A misbehaving limiter for failure tests: answers every connection as the current mode says,
//! with bytes written by hand so that broken answers really are broken.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::{HarnessError, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `200` with a body that is not JSON.
    Garbage,
    /// `500`.
    ServerError,
    /// `200` with a 20 KiB body.
    Oversized,
    /// Close the connection without answering.
    Reset,
    /// Wait this long, then answer `200 {"allowed":true,"results":[]}`.
    Slow(Duration),
}

pub struct FakeLimiter {
    pub addr: SocketAddr,
    mode: Arc<Mutex<Mode>>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeLimiter {
    pub async fn start(mode: Mode) -> Result<FakeLimiter> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| HarnessError::Io("fake limiter: bind".into(), e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| HarnessError::Io("fake limiter: local_addr".into(), e))?;
        let shared = Arc::new(Mutex::new(mode));
        let m = shared.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let mode = m.lock().map(|g| *g).unwrap_or(Mode::Reset);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 65536];
                    let _ = sock.read(&mut buf).await;
                    let reply: Vec<u8> = match mode {
                        Mode::Reset => return,
                        Mode::Garbage => response(200, b"garbage"),
                        Mode::ServerError => response(500, b"{\"error\":\"boom\"}"),
                        Mode::Oversized => response(200, &vec![b' '; 20 * 1024]),
                        Mode::Slow(d) => {
                            tokio::time::sleep(d).await;
                            response(200, br#"{"allowed":true,"results":[]}"#)
                        }
                    };
                    let _ = sock.write_all(&reply).await;
                    let _ = sock.shutdown().await;
                });
            }
        });
        Ok(FakeLimiter {
            addr,
            mode: shared,
            task,
        })
    }

    pub fn set(&self, mode: Mode) {
        if let Ok(mut g) = self.mode.lock() {
            *g = mode;
        }
    }
}

impl Drop for FakeLimiter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn response(status: u16, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}
