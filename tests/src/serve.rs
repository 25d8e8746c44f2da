//! In-process HTTP servers for tests (echo upstream, JWKS server): bind on loopback, serve an
//! axum router on the current tokio runtime, stop when the handle is dropped.

use std::net::SocketAddr;

use axum::Router;
use tokio::sync::oneshot;

use crate::{HarnessError, Result};

/// A running server; dropping it (or [`Server::stop`]) closes the listener.
pub struct Server {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
}

impl Server {
    /// Serves `app` on `addr` (`127.0.0.1:0` for a free port); `what` names it in errors.
    pub async fn start(what: &str, addr: &str, app: Router) -> Result<Server> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| HarnessError::Io(format!("{what}: bind {addr}"), e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| HarnessError::Io(format!("{what}: local_addr"), e))?;
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
        Ok(Server {
            addr,
            stop: Some(stop),
        })
    }

    /// Stops listening: later connections are refused.
    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}
