//! A TCP proxy that closes a connection once it has been idle for a while, as a NAT, a load
//! balancer or Redis's own `timeout` does: for tests that a dropped idle connection costs no
//! request.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::{HarnessError, Result};

pub struct IdleProxy {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl IdleProxy {
    /// Forwards to `upstream`, closing both sides of a connection idle for `idle`.
    pub async fn start(upstream: SocketAddr, idle: Duration) -> Result<IdleProxy> {
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
                        pump(client, server, idle).await;
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

async fn pump(mut a: TcpStream, mut b: TcpStream, idle: Duration) {
    let (mut ar, mut aw) = a.split();
    let (mut br, mut bw) = b.split();
    let (mut abuf, mut bbuf) = (vec![0u8; 16 * 1024], vec![0u8; 16 * 1024]);
    loop {
        tokio::select! {
            r = ar.read(&mut abuf) => match r {
                Ok(n) if n > 0 => if bw.write_all(&abuf[..n]).await.is_err() { return },
                _ => return,
            },
            r = br.read(&mut bbuf) => match r {
                Ok(n) if n > 0 => if aw.write_all(&bbuf[..n]).await.is_err() { return },
                _ => return,
            },
            () = tokio::time::sleep(idle) => return,
        }
    }
}
