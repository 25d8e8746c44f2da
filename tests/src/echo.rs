//! An upstream that answers every request with 200 and a JSON description of what it received,
//! and records each request so a test can assert what reached the upstream (and what did not).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, Uri};
use axum::Router;
use serde_json::json;

use crate::serve::Server;
use crate::Result;

/// One request as the upstream saw it. Header values are kept as bytes.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// Path and query, as received.
    pub uri: String,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body_len: usize,
}

impl Recorded {
    /// All values of a header, by lowercase name.
    pub fn header_all(&self, name: &str) -> Vec<&[u8]> {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
            .collect()
    }

    /// The first value of a header as text, if it is UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.header_all(name)
            .first()
            .and_then(|v| std::str::from_utf8(v).ok())
    }
}

type Log = Arc<Mutex<Vec<Recorded>>>;

pub struct Echo {
    pub addr: SocketAddr,
    log: Log,
    _server: Server,
}

impl Echo {
    /// Serves on a free loopback port, on the current tokio runtime.
    pub async fn start() -> Result<Echo> {
        Self::start_on("127.0.0.1:0").await
    }

    /// Serves on a given address (the demo uses a fixed port).
    pub async fn start_on(addr: &str) -> Result<Echo> {
        let log: Log = Arc::default();
        let app = Router::new().fallback(record).with_state(log.clone());
        let server = Server::start("echo upstream", addr, app).await?;
        Ok(Echo {
            addr: server.addr,
            log,
            _server: server,
        })
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    pub fn count(&self) -> usize {
        self.log.lock().map(|l| l.len()).unwrap_or_default()
    }

    pub fn clear(&self) {
        if let Ok(mut l) = self.log.lock() {
            l.clear();
        }
    }
}

async fn record(
    State(log): State<Log>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> axum::Json<serde_json::Value> {
    let rec = Recorded {
        method: method.to_string(),
        uri: uri.to_string(),
        headers: headers
            .iter()
            .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
            .collect(),
        body_len: body.len(),
    };
    let shown: serde_json::Map<String, serde_json::Value> = rec
        .headers
        .iter()
        .map(|(n, v)| (n.clone(), String::from_utf8_lossy(v).into_owned().into()))
        .collect();
    let reply = json!({ "method": rec.method, "uri": rec.uri, "headers": shown });
    if let Ok(mut l) = log.lock() {
        l.push(rec);
    }
    axum::Json(reply)
}
