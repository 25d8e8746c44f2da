//! The filter's host calls, over `apiguard_proxy_abi::hostcall::Host`: every failure is handled here (logged, and
//! the caller told in a way it cannot ignore or misread), so the rest of the filter never
//! holds a host `Result` it could be tempted to unwrap.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use apiguard_core::driver::{HostCall, RequestHead};
use apiguard_core::http::HeaderOp;
use apiguard_core::jwt::host_signature::{HostSignatureError, SignatureHost, FOREIGN_FUNCTION};
use apiguard_core::jwt::shared::SharedData;
use apiguard_core::logs::{Level, LogLine};
use apiguard_core::reply::Reply;
use log::{debug, info, warn};

use apiguard_proxy_abi::hostcall::{BufferType, Host, HostError, LogLevel, MapType, MetricType};

/// The host: Envoy through the proxy-wasm imports on Wasm; natively a scripted fake, so the
/// filter builds and its tests run off Wasm.
#[cfg(target_arch = "wasm32")]
pub const HOST: Host<apiguard_proxy_abi::abi::Envoy> = Host(apiguard_proxy_abi::abi::Envoy);
#[cfg(not(target_arch = "wasm32"))]
pub const HOST: Host<apiguard_proxy_abi::fake::Scripted> = Host(apiguard_proxy_abi::fake::Scripted);

/// Sends `log` records to the host's log (all levels: Envoy filters by its own level), and the
/// message of a panic, which would end the VM, at `critical`.
pub fn install_logger() {
    struct HostLog;
    impl log::Log for HostLog {
        fn enabled(&self, metadata: &log::Metadata) -> bool {
            metadata.level() <= log::max_level()
        }
        fn log(&self, record: &log::Record) {
            if !self.enabled(record.metadata()) {
                return;
            }
            let level = match record.level() {
                log::Level::Trace => LogLevel::Trace,
                log::Level::Debug => LogLevel::Debug,
                log::Level::Info => LogLevel::Info,
                log::Level::Warn => LogLevel::Warn,
                log::Level::Error => LogLevel::Error,
            };
            // Nowhere to report a failure to log.
            let _ = HOST.log(level, &record.args().to_string());
        }
        fn flush(&self) {}
    }
    static LOGGER: HostLog = HostLog;
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(log::LevelFilter::Trace);
        std::panic::set_hook(Box::new(|info| {
            let _ = HOST.log(LogLevel::Critical, &info.to_string());
        }));
    }
}

/// The plugin configuration (empty if the host has none).
pub fn plugin_configuration() -> Result<Vec<u8>, HostError> {
    HOST.buffer(BufferType::PluginConfiguration, 0, usize::MAX)
        .map(Option::unwrap_or_default)
}

pub fn set_tick_period(period: Duration) -> Result<(), HostError> {
    HOST.set_tick_period(period)
}

/// Unix milliseconds by the host's clock (0 if the host cannot tell).
pub fn now_ms() -> i64 {
    match HOST.now_nanos() {
        Ok(nanos) => i64::try_from(nanos / 1_000_000).unwrap_or(i64::MAX),
        Err(e) => {
            warn!("apiguard: cannot read the host's clock: {e}");
            0
        }
    }
}

/// The request's head: every header, values as bytes, the source address when `source`, and
/// whether a body follows. An error when the host cannot give the headers, or gives them
/// malformed (the core refuses the request then).
pub fn request_head(source: bool, body_follows: bool) -> Result<RequestHead, String> {
    let headers = HOST
        .header_pairs(MapType::HttpRequestHeaders)
        .map_err(|e| e.to_string())?;
    let source = if source { source_address() } else { None };
    Ok(RequestHead {
        headers,
        source,
        body_follows,
    })
}

/// Writes one of the core's log lines at its level.
pub fn log_line(line: &LogLine) {
    match line.level {
        Level::Debug => debug!("{}", line.text),
        Level::Info => info!("{}", line.text),
        Level::Warn => warn!("{}", line.text),
    }
}

/// The downstream address without its port (Envoy's `source.address` property).
fn source_address() -> Option<String> {
    let raw = match HOST.property(&["source", "address"]) {
        Ok(raw) => raw?,
        Err(e) => {
            warn!("apiguard: cannot read source.address: {e}");
            return None;
        }
    };
    let text = String::from_utf8(raw).ok()?;
    Some(match text.parse::<std::net::SocketAddr>() {
        Ok(addr) => addr.ip().to_string(),
        Err(_) => text,
    })
}

/// One header's value; `None` when absent or unreadable.
fn header_bytes(map: MapType, name: &str) -> Option<Vec<u8>> {
    match HOST.header(map, name) {
        Ok(value) => value,
        Err(e) => {
            debug!("apiguard: cannot read header {name}: {e}");
            None
        }
    }
}

/// Applies header changes to the request on its way upstream.
pub fn apply(ops: &[HeaderOp]) {
    for op in ops {
        let result = match op {
            HeaderOp::Remove(name) => HOST.remove_header(MapType::HttpRequestHeaders, name),
            HeaderOp::Set(name, value) => HOST.set_header(MapType::HttpRequestHeaders, name, value),
        };
        if let Err(e) = result {
            warn!("apiguard: cannot change request header ({op:?}): {e}");
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
    if let Err(e) = HOST.send_response(reply.status, reply.details, &headers, &reply.body) {
        warn!("apiguard: cannot send the {} reply: {e}", reply.status);
    }
}

/// Lets a paused request go on upstream.
pub fn resume() {
    if let Err(e) = HOST.resume_request() {
        warn!("apiguard: cannot resume the request: {e}");
    }
}

/// Stores a value in this request's filter state as `wasm.<name>` (readable in access logs
/// with `%FILTER_STATE(wasm.<name>:PLAIN)%`).
pub fn set_filter_state(name: &str, value: &[u8]) {
    if let Err(e) = HOST.set_property(&[name], value) {
        warn!("apiguard: cannot set filter state {name}: {e}");
    }
}

/// Starts a call; its token, or `Err` when the host refused it (logged here, with the
/// cluster).
pub fn http_call(call: &HostCall) -> Result<u32, ()> {
    let headers: Vec<(&str, &str)> = call.headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let timeout = Duration::from_millis(call.timeout_ms);
    HOST.http_call(&call.cluster, &headers, &call.body, timeout)
        .map_err(|e| warn!("apiguard: cannot call cluster `{}`: {e}", call.cluster))
}

/// Sets a response header (replacing any value the upstream sent).
pub fn set_response_header(name: &str, value: &str) {
    if let Err(e) = HOST.set_header(MapType::HttpResponseHeaders, name, value) {
        warn!("apiguard: cannot set response header {name}: {e}");
    }
}

/// A finished call's status (`None` when no response arrived: reset, timeout, no cluster) and
/// body, the body read only when it is at most `max` bytes.
pub fn call_response(body_size: usize, max: usize) -> (Option<u16>, Vec<u8>) {
    let status = header_bytes(MapType::HttpCallResponseHeaders, ":status")
        .and_then(|s| std::str::from_utf8(&s).ok().and_then(|s| s.parse().ok()));
    let body = if body_size <= max {
        match HOST.buffer(BufferType::HttpCallResponseBody, 0, body_size) {
            Ok(body) => body.unwrap_or_default(),
            Err(e) => {
                warn!("apiguard: cannot read a call's answer: {e}");
                Vec::new()
            }
        }
    } else {
        Vec::new()
    };
    (status, body)
}

/// Envoy's shared data, seen by every worker, for the core's key coordination.
pub struct EnvoyShared;

impl SharedData for EnvoyShared {
    fn get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        match HOST.shared_data(key) {
            Ok((value, Some(cas))) => Some((value.unwrap_or_default(), cas)),
            Ok((_, None)) => None,
            Err(e) => {
                warn!("apiguard: cannot read shared data {key}: {e}");
                None
            }
        }
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> bool {
        HOST.set_shared_data(key, value, cas).is_ok()
    }
}

/// An Envoy histogram (shown as `wasmcustom.<name>`).
pub fn define_histogram(name: &str) -> Option<u32> {
    match HOST.define_metric(MetricType::Histogram, name) {
        Ok(id) => Some(id),
        Err(e) => {
            warn!("apiguard: cannot define metric {name}: {e}");
            None
        }
    }
}

pub fn record(id: u32, value: u64) {
    let _ = HOST.record_metric(id, value);
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
    /// Defines the counters named, in order: a counter's index is its place in `names`.
    pub fn define<'a>(names: impl Iterator<Item = &'a str>) -> Counters {
        let slots = names
            .map(|name| match HOST.define_metric(MetricType::Counter, name) {
                Ok(id) => (Some(id), 0),
                Err(e) => {
                    warn!("apiguard: cannot define metric {name}: {e}");
                    (None, 0)
                }
            })
            .collect();
        Counters { slots }
    }

    /// Adds one to the counter at `index` (a `Counter` discriminant).
    pub fn add(&mut self, index: usize, n: u64) {
        if let Some(slot) = self.slots.get_mut(index) {
            slot.1 += n;
        }
    }

    /// Hands the pending increments to Envoy.
    pub fn flush(&mut self) {
        for (id, pending) in &mut self.slots {
            if let (Some(id), true) = (id, *pending > 0) {
                let _ = HOST.increment_metric(*id, i64::try_from(*pending).unwrap_or(i64::MAX));
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

/// Envoy's `verify_signature` foreign function (see `apiguard_core::jwt::host_signature`). Envoy's
/// function answers Ok or BadArgument; a host without it answers NotFound.
#[derive(Default)]
pub struct EnvoySignatures {
    pub stats: Rc<SignatureStats>,
}

impl SignatureHost for EnvoySignatures {
    fn call(&self, arguments: &[u8]) -> Result<Option<Vec<u8>>, HostSignatureError> {
        let stats = &self.stats;
        stats.calls.set(stats.calls.get() + 1);
        let answer = HOST
            .call_foreign_function(FOREIGN_FUNCTION, arguments)
            .map_err(|e| match e {
                HostError::NotFound => HostSignatureError::Missing,
                e => HostSignatureError::Status(e.name()),
            });
        if !matches!(answer, Ok(Some(_))) {
            stats.failures.set(stats.failures.get() + 1);
            debug!("apiguard: host signature check failed, verifying in Wasm: {answer:?}");
        }
        answer
    }
}
