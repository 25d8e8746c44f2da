//! A TCP proxy between a client and a server, as a NAT, a load balancer, a sidecar or Redis's own
//! `timeout` stands there: it can close a connection once it has been idle for a while, and it
//! can learn late that the server closed one.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::{HarnessError, Result};

pub struct IdleProxy {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

/// How the proxy treats a connection.
#[derive(Debug, Clone, Copy)]
pub struct Behaviour {
    /// Closes both sides of a connection idle this long; `None`: never.
    pub idle: Option<Duration>,
    /// Passes a server's close on to the client only this long after it happened, as a proxy
    /// or balancer that notices it late does. Bytes the client sends meanwhile are lost (the
    /// server is gone) and the client's side is closed at once, without an answer: the
    /// keep-alive race an HTTP client's pool runs into, made wide enough to hit every time.
    pub late_close: Duration,
}

impl IdleProxy {
    /// Forwards to `upstream`, closing both sides of a connection idle for `idle`.
    pub async fn start(upstream: SocketAddr, idle: Duration) -> Result<IdleProxy> {
        Self::start_with(
            upstream,
            Behaviour {
                idle: Some(idle),
                late_close: Duration::ZERO,
            },
        )
        .await
    }

    /// Forwards to `upstream` as `behaviour` says.
    pub async fn start_with(upstream: SocketAddr, behaviour: Behaviour) -> Result<IdleProxy> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| HarnessError::Io("idle proxy: bind".into(), e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| HarnessError::Io("idle proxy: local_addr".into(), e))?;
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(upstream).await {
                        pump(client, server, behaviour).await;
                    }
                });
            }
        });
        Ok(IdleProxy { addr, task })
    }
}

impl Drop for IdleProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn pump(mut a: TcpStream, mut b: TcpStream, behaviour: Behaviour) {
    let (mut ar, mut aw) = a.split();
    let (mut br, mut bw) = b.split();
    let (mut abuf, mut bbuf) = (vec![0u8; 16 * 1024], vec![0u8; 16 * 1024]);
    // Never fires when there is no idle limit (a day stands for "never" in a test).
    let idle = behaviour.idle.unwrap_or(Duration::from_secs(86_400));
    loop {
        tokio::select! {
            r = ar.read(&mut abuf) => match r {
                Ok(n) if n > 0 => if bw.write_all(&abuf[..n]).await.is_err() { return },
                _ => return,
            },
            r = br.read(&mut bbuf) => match r {
                Ok(n) if n > 0 => if aw.write_all(&bbuf[..n]).await.is_err() { return },
                _ => break,
            },
            () = tokio::time::sleep(idle) => return,
        }
    }
    // The server closed. Until the proxy "notices", the client still sees an open connection;
    // whatever it sends now is lost, and its side closes without an answer.
    if !behaviour.late_close.is_zero() {
        let _ = tokio::time::timeout(behaviour.late_close, ar.read(&mut abuf)).await;
    }
}
