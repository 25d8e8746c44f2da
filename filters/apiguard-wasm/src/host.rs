//! Thin wrappers over `proxy_wasm::hostcalls`: every host result is handled here, so the rest
//! of the filter never sees a `Result` it could be tempted to unwrap.
//!
//! `get_map_bytes` is the one SDK call that could panic on host data (it expects UTF-8 header
//! names); Envoy's HTTP codecs only admit RFC 9110 token characters in names, and values are
//! kept as bytes.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};

use apiguard_core::flow::HeaderOp;
use apiguard_core::jwt::host::{HostCallError, SignatureHost, FOREIGN_FUNCTION};
use apiguard_core::reply::Reply;
use log::{debug, warn};
use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, MapType, MetricType, Status};

/// Unix seconds by the host's clock (0 if the host cannot tell, which fails every `exp`).
pub fn now() -> i64 {
    now_ms().div_euclid(1000)
}

/// Unix milliseconds by the host's clock.
pub fn now_ms() -> i64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// All request headers, values as bytes.
pub fn request_headers() -> Vec<(String, Vec<u8>)> {
    hostcalls::get_map_bytes(MapType::HttpRequestHeaders).unwrap_or_default()
}

/// The downstream address without its port (Envoy's `source.address` property).
pub fn source_address() -> Option<String> {
    let raw = hostcalls::get_property(vec!["source", "address"])
        .ok()
        .flatten()?;
    let text = String::from_utf8(raw).ok()?;
    Some(match text.parse::<std::net::SocketAddr>() {
        Ok(addr) => addr.ip().to_string(),
        Err(_) => text,
    })
}

pub fn header_bytes(map: MapType, name: &str) -> Option<Vec<u8>> {
    hostcalls::get_map_value_bytes(map, name).ok().flatten()
}

/// Applies header changes to the request on its way upstream.
pub fn apply(ops: &[HeaderOp]) {
    for op in ops {
        let result = match op {
            HeaderOp::Remove(name) => {
                hostcalls::remove_map_value(MapType::HttpRequestHeaders, name)
            }
            HeaderOp::Set(name, value) => {
                hostcalls::set_map_value(MapType::HttpRequestHeaders, name, Some(value))
            }
        };
        if let Err(status) = result {
            warn!("apiguard: cannot change request header ({op:?}): {status:?}");
        }
    }
}

/// Sends a local reply.
pub fn respond(reply: &Reply) {
    let headers: Vec<(&str, &str)> = reply
        .headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    if let Err(status) =
        hostcalls::send_http_response(u32::from(reply.status), headers, Some(&reply.body))
    {
        warn!(
            "apiguard: cannot send the {} reply: {status:?}",
            reply.status
        );
    }
}

/// Stores a value in this request's filter state as `wasm.<name>` (readable in access logs
/// with `%FILTER_STATE(wasm.<name>:PLAIN)%`).
pub fn set_filter_state(name: &str, value: &[u8]) {
    if let Err(status) = hostcalls::set_property(vec![name], Some(value)) {
        warn!("apiguard: cannot set filter state {name}: {status:?}");
    }
}

/// An outgoing GET to an Envoy cluster; the call's token on success.
pub fn http_get(
    cluster: &str,
    path: &str,
    authority: &str,
    timeout: Duration,
) -> Result<u32, String> {
    let headers = vec![
        (":method", "GET"),
        (":path", path),
        (":authority", authority),
        ("accept", "application/json"),
    ];
    hostcalls::dispatch_http_call(cluster, headers, None, vec![], timeout)
        .map_err(|s| format!("{s:?}"))
}

/// An outgoing JSON POST to an Envoy cluster; the call's token on success.
pub fn http_post(cluster: &str, path: &str, body: &[u8], timeout: Duration) -> Result<u32, String> {
    let headers = vec![
        (":method", "POST"),
        (":path", path),
        (":authority", "apiguard-limiter"),
        ("content-type", "application/json"),
    ];
    hostcalls::dispatch_http_call(cluster, headers, Some(body), vec![], timeout)
        .map_err(|s| format!("{s:?}"))
}

/// Sets a response header (replacing any value the upstream sent).
pub fn set_response_header(name: &str, value: &str) {
    if let Err(status) = hostcalls::set_map_value(MapType::HttpResponseHeaders, name, Some(value)) {
        warn!("apiguard: cannot set response header {name}: {status:?}");
    }
}

/// A finished call's status (`None` when no response arrived: reset, timeout, no cluster) and
/// body, the body read only when it is at most `max` bytes.
pub fn call_response(body_size: usize, max: usize) -> (Option<u16>, Vec<u8>) {
    let status = header_bytes(MapType::HttpCallResponseHeaders, ":status")
        .and_then(|s| std::str::from_utf8(&s).ok().and_then(|s| s.parse().ok()));
    let body = if body_size <= max {
        hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, body_size)
            .ok()
            .flatten()
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    (status, body)
}

/// A shared-data value and its compare-and-swap version.
pub fn shared_get(key: &str) -> (Option<Vec<u8>>, Option<u32>) {
    hostcalls::get_shared_data(key).unwrap_or((None, None))
}

/// Writes shared data; with `cas`, only if nobody wrote since that version.
pub fn shared_set(key: &str, value: &[u8], cas: Option<u32>) -> bool {
    hostcalls::set_shared_data(key, Some(value), cas).is_ok()
}

/// An Envoy histogram (shown as `wasmcustom.<name>`).
pub fn define_histogram(name: &str) -> Option<u32> {
    match hostcalls::define_metric(MetricType::Histogram, name) {
        Ok(id) => Some(id),
        Err(status) => {
            warn!("apiguard: cannot define metric {name}: {status:?}");
            None
        }
    }
}

pub fn record(id: u32, value: u64) {
    let _ = hostcalls::record_metric(id, value);
}

/// Declares the filter's counters once: an enum `Counter` (whose discriminant indexes
/// [`Counters`]) and `COUNTER_NAMES`, the Envoy names in the same order.
#[macro_export]
macro_rules! counters {
    ($($variant:ident => $name:literal,)*) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Counter { $($variant),* }
        pub const COUNTER_NAMES: &[&str] = &[$($name),*];
    };
}

/// Envoy counters, defined once per VM (Envoy shows them as `wasmcustom.<name>`).
///
/// Increments are kept in the VM and handed to Envoy in one batch per tick ([`Counters::flush`]):
/// a host call per counter per request would cost more than the counting is worth. Envoy's own
/// stats are flushed every few seconds anyway, so nothing observable is lost.
#[derive(Default)]
pub struct Counters {
    /// By counter index: Envoy's metric id (if defined) and the increments not yet handed over.
    slots: Vec<(Option<u32>, u64)>,
}

impl Counters {
    pub fn define(names: &[&'static str]) -> Counters {
        let slots = names
            .iter()
            .map(
                |name| match hostcalls::define_metric(MetricType::Counter, name) {
                    Ok(id) => (Some(id), 0),
                    Err(status) => {
                        warn!("apiguard: cannot define metric {name}: {status:?}");
                        (None, 0)
                    }
                },
            )
            .collect();
        Counters { slots }
    }

    /// Adds one to the counter at `index` (a `Counter` discriminant).
    pub fn inc(&mut self, index: impl Into<usize>) {
        self.add(index, 1);
    }

    pub fn add(&mut self, index: impl Into<usize>, n: u64) {
        if let Some(slot) = self.slots.get_mut(index.into()) {
            slot.1 += n;
        }
    }

    /// Hands the pending increments to Envoy.
    pub fn flush(&mut self) {
        for (id, pending) in &mut self.slots {
            if let (Some(id), true) = (id, *pending > 0) {
                let _ =
                    hostcalls::increment_metric(*id, i64::try_from(*pending).unwrap_or(i64::MAX));
                *pending = 0;
            }
        }
    }
}

/// Calls and failures of the host's signature verifier, read into counters at each tick.
#[derive(Default)]
pub struct SignatureStats {
    pub calls: Cell<u64>,
    pub failures: Cell<u64>,
}

/// Envoy's `verify_signature` foreign function (see `apiguard_core::jwt::host`).
///
/// The SDK's `call_foreign_function` panics on a status outside Ok, NotFound, BadArgument,
/// SerializationFailure and InternalFailure; Envoy's `verify_signature` returns only Ok and
/// BadArgument, and a host without the function answers NotFound.
#[derive(Default)]
pub struct EnvoySignatures {
    pub stats: Rc<SignatureStats>,
}

impl SignatureHost for EnvoySignatures {
    fn call(&self, arguments: &[u8]) -> Result<Vec<u8>, HostCallError> {
        let stats = &self.stats;
        stats.calls.set(stats.calls.get() + 1);
        let answer = match hostcalls::call_foreign_function(FOREIGN_FUNCTION, Some(arguments)) {
            Ok(Some(bytes)) => Ok(bytes),
            Ok(None) => Err(HostCallError::Empty),
            Err(Status::NotFound) => Err(HostCallError::Missing),
            Err(Status::BadArgument) => Err(HostCallError::Status("BadArgument")),
            Err(Status::SerializationFailure) => Err(HostCallError::Status("SerializationFailure")),
            Err(Status::InternalFailure) => Err(HostCallError::Status("InternalFailure")),
            Err(_) => Err(HostCallError::Status("unexpected")),
        };
        if let Err(e) = &answer {
            stats.failures.set(stats.failures.get() + 1);
            debug!("apiguard: host signature check failed, verifying in Wasm: {e}");
        }
        answer
    }
}
