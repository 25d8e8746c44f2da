//! A JWK Set server for remote-JWKS tests: serves whatever document the test sets, counts
//! fetches, and can be stopped (connections refused) mid-test.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::serve::Server;
use crate::Result;

#[derive(Default)]
struct Served {
    status: u16,
    body: String,
    fetches: usize,
}

pub struct JwksServer {
    pub addr: SocketAddr,
    state: Arc<Mutex<Served>>,
    server: Server,
}

impl JwksServer {
    /// Serves `body` at `/.well-known/jwks.json` with status 200.
    pub async fn start(body: &str) -> Result<JwksServer> {
        Self::start_on("127.0.0.1:0", body).await
    }

    /// Same, on a given address (the demo uses a fixed port).
    pub async fn start_on(addr: &str, body: &str) -> Result<JwksServer> {
        let state = Arc::new(Mutex::new(Served {
            status: 200,
            body: body.to_owned(),
            fetches: 0,
        }));
        let app = Router::new()
            .route("/.well-known/jwks.json", get(serve))
            .with_state(state.clone());
        let server = Server::start("jwks server", addr, app).await?;
        Ok(JwksServer {
            addr: server.addr,
            state,
            server,
        })
    }

    /// From now on, answer with this status and body.
    pub fn set(&self, status: u16, body: &str) {
        if let Ok(mut s) = self.state.lock() {
            s.status = status;
            s.body = body.to_owned();
        }
    }

    pub fn fetches(&self) -> usize {
        self.state.lock().map(|s| s.fetches).unwrap_or_default()
    }

    /// Stops listening: later fetches find the port closed.
    pub fn stop(&mut self) {
        self.server.stop();
    }
}

async fn serve(State(state): State<Arc<Mutex<Served>>>) -> impl IntoResponse {
    let (status, body) = match state.lock() {
        Ok(mut s) => {
            s.fetches += 1;
            (s.status, s.body.clone())
        }
        Err(_) => (500, String::new()),
    };
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        [("content-type", "application/json")],
        body,
    )
}
