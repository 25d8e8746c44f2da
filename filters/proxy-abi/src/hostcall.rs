//! The host calls the filter makes, typed and total: every host status becomes a `Result`, never
//! a panic.
//!
//! Why not `proxy_wasm::hostcalls`: proxy-wasm 0.2.5 `panic!`s on any status a call does not
//! expect (and `get_map_bytes` also on a header name that is not UTF-8), and its declarations
//! type the returned status as a Rust enum, so a number outside it is undefined behaviour. A
//! panic kills the Wasm VM for every later request on that worker.
//!
//! Two layers:
//! - [`Abi`]: the raw imports, one method per proxy-wasm function the filter uses, answering the
//!   host's status number as is and any returned buffer already back in Rust's hands
//!   ([`Returned`]). The real one (`abi.rs`) exists only on `wasm32`; tests use fakes.
//! - [`Host`]: maps statuses to [`HostError`], encodes and decodes the ABI's serialisations
//!   (header maps, property paths), and gives each call the meaning the filter relies on
//!   (`NotFound` from a getter is "absent", elsewhere an error).
//!
//! Nothing here indexes, unwraps or does unchecked arithmetic on what the host returned.

use std::fmt;
use std::time::Duration;

/// Why a host call failed: the host's status (proxy-wasm `WasmResult`, numbered as in
/// proxy-wasm-cpp-host), or an answer this module cannot use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostError {
    NotFound,
    BadArgument,
    SerializationFailure,
    ParseFailure,
    BadExpression,
    InvalidMemoryAccess,
    Empty,
    CasMismatch,
    ResultMismatch,
    InternalFailure,
    BrokenConnection,
    Unimplemented,
    /// A status number outside the ABI.
    Unknown(u32),
    /// The call succeeded but what it handed back cannot be read: a malformed header map, or a
    /// pointer this module did not allocate.
    Malformed,
    /// An argument longer than the ABI's 32-bit lengths (only possible off Wasm).
    TooLarge,
}

impl HostError {
    /// The name, for logs and for `jwt::host_signature::HostSignatureError::Status`.
    pub fn name(self) -> &'static str {
        match self {
            HostError::NotFound => "NotFound",
            HostError::BadArgument => "BadArgument",
            HostError::SerializationFailure => "SerializationFailure",
            HostError::ParseFailure => "ParseFailure",
            HostError::BadExpression => "BadExpression",
            HostError::InvalidMemoryAccess => "InvalidMemoryAccess",
            HostError::Empty => "Empty",
            HostError::CasMismatch => "CasMismatch",
            HostError::ResultMismatch => "ResultMismatch",
            HostError::InternalFailure => "InternalFailure",
            HostError::BrokenConnection => "BrokenConnection",
            HostError::Unimplemented => "Unimplemented",
            HostError::Unknown(_) => "unknown status",
            HostError::Malformed => "malformed answer",
            HostError::TooLarge => "argument too large",
        }
    }
}

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostError::Unknown(n) => write!(f, "unknown status {n}"),
            e => f.write_str(e.name()),
        }
    }
}

/// `Ok` for status 0 and the error for any other number: total over `u32`.
pub fn check(status: u32) -> Result<(), HostError> {
    Err(match status {
        0 => return Ok(()),
        1 => HostError::NotFound,
        2 => HostError::BadArgument,
        3 => HostError::SerializationFailure,
        4 => HostError::ParseFailure,
        5 => HostError::BadExpression,
        6 => HostError::InvalidMemoryAccess,
        7 => HostError::Empty,
        8 => HostError::CasMismatch,
        9 => HostError::ResultMismatch,
        10 => HostError::InternalFailure,
        11 => HostError::BrokenConnection,
        12 => HostError::Unimplemented,
        n => HostError::Unknown(n),
    })
}

/// What a call handed back through its `return_*_data` / `return_*_size` pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Returned {
    /// A null pointer: the host had nothing, or zero bytes, to return.
    Nothing,
    /// A buffer this module allocated for the host (`proxy_on_memory_allocate`), owned again.
    Bytes(Vec<u8>),
    /// A pointer this module did not hand out, or not with that length: left untouched.
    #[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))] // made by `abi`, Wasm only
    Unowned,
}

impl Returned {
    fn into_data(self) -> Result<Option<Vec<u8>>, HostError> {
        match self {
            Returned::Nothing => Ok(None),
            Returned::Bytes(b) => Ok(Some(b)),
            Returned::Unowned => Err(HostError::Malformed),
        }
    }
}

/// proxy-wasm log levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum LogLevel {
    Trace = 0,
    Debug = 1,
    Info = 2,
    Warn = 3,
    Error = 4,
    Critical = 5,
}

/// The buffers the filter reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum BufferType {
    HttpCallResponseBody = 4,
    PluginConfiguration = 7,
}

/// The header maps the filter reads or changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
#[allow(clippy::enum_variant_names)] // the ABI's names
pub enum MapType {
    HttpRequestHeaders = 0,
    HttpResponseHeaders = 2,
    HttpCallResponseHeaders = 6,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum MetricType {
    Counter = 0,
    Histogram = 2,
}

/// The stream `proxy_continue_stream` resumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum StreamType {
    HttpRequest = 0,
}

/// What a header callback tells the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Action {
    Continue = 0,
    Pause = 1,
}

/// The proxy-wasm imports the filter uses, as the host answers them: a raw status number, and
/// for calls that return data, what came back. Arguments are already serialised.
pub trait Abi {
    fn log(&self, level: LogLevel, message: &[u8]) -> u32;
    fn get_current_time_nanoseconds(&self) -> (u32, u64);
    fn set_tick_period_milliseconds(&self, period_ms: u32) -> u32;
    fn get_buffer_bytes(
        &self,
        buffer: BufferType,
        start: usize,
        max_size: usize,
    ) -> (u32, Returned);
    fn get_header_map_pairs(&self, map: MapType) -> (u32, Returned);
    fn get_header_map_value(&self, map: MapType, key: &[u8]) -> (u32, Returned);
    fn replace_header_map_value(&self, map: MapType, key: &[u8], value: &[u8]) -> u32;
    fn remove_header_map_value(&self, map: MapType, key: &[u8]) -> u32;
    fn get_property(&self, path: &[u8]) -> (u32, Returned);
    fn set_property(&self, path: &[u8], value: &[u8]) -> u32;
    /// Status, value, compare-and-swap version (0: none).
    fn get_shared_data(&self, key: &[u8]) -> (u32, Returned, u32);
    fn set_shared_data(&self, key: &[u8], value: &[u8], cas: u32) -> u32;
    /// `details` becomes Envoy's response code details (`%RESPONSE_CODE_DETAILS%`).
    fn send_local_response(
        &self,
        status_code: u32,
        details: &[u8],
        body: &[u8],
        headers: &[u8],
    ) -> u32;
    /// Status and the call's token.
    fn http_call(
        &self,
        upstream: &[u8],
        headers: &[u8],
        body: &[u8],
        trailers: &[u8],
        timeout_ms: u32,
    ) -> (u32, u32);
    fn continue_stream(&self, stream: StreamType) -> u32;
    /// Status and the metric's id.
    fn define_metric(&self, kind: MetricType, name: &[u8]) -> (u32, u32);
    fn increment_metric(&self, id: u32, offset: i64) -> u32;
    fn record_metric(&self, id: u32, value: u64) -> u32;
    fn call_foreign_function(&self, name: &[u8], arguments: &[u8]) -> (u32, Returned);
    fn set_effective_context(&self, context_id: u32) -> u32;
}

/// The typed host calls over an [`Abi`].
pub struct Host<A>(pub A);

impl<A: Abi> Host<A> {
    pub fn log(&self, level: LogLevel, message: &str) -> Result<(), HostError> {
        check(self.0.log(level, message.as_bytes()))
    }

    /// Nanoseconds since the Unix epoch by the host's clock.
    pub fn now_nanos(&self) -> Result<u64, HostError> {
        let (status, nanos) = self.0.get_current_time_nanoseconds();
        check(status).map(|()| nanos)
    }

    /// Sets the tick period (saturating at `u32::MAX` ms).
    pub fn set_tick_period(&self, period: Duration) -> Result<(), HostError> {
        check(self.0.set_tick_period_milliseconds(millis(period)))
    }

    /// Up to `max` bytes of a buffer from `start`; `None` when the host has none (`NotFound` or
    /// nothing returned).
    pub fn buffer(
        &self,
        buffer: BufferType,
        start: usize,
        max: usize,
    ) -> Result<Option<Vec<u8>>, HostError> {
        let (status, data) = self.0.get_buffer_bytes(buffer, start, max);
        match check(status) {
            Ok(()) => data.into_data(),
            Err(HostError::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every pair of a header map, values as bytes. A name that is not UTF-8 is kept, lossily
    /// (see [`owned_pairs`]). A map that does not decode is an error, never a partial map.
    pub fn header_pairs(&self, map: MapType) -> Result<Vec<(String, Vec<u8>)>, HostError> {
        let (status, data) = self.0.get_header_map_pairs(map);
        check(status)?;
        let bytes = data.into_data()?.unwrap_or_default();
        decode_map(&bytes).map(|pairs| owned_pairs(&pairs))
    }

    /// One header's value; `None` when absent. (Several values come back joined by the host.)
    pub fn header(&self, map: MapType, name: &str) -> Result<Option<Vec<u8>>, HostError> {
        let (status, data) = self.0.get_header_map_value(map, name.as_bytes());
        match check(status) {
            // A null pointer with Ok is an empty value.
            Ok(()) => data.into_data().map(|d| Some(d.unwrap_or_default())),
            Err(HostError::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Replaces every value of a header with `value`.
    pub fn set_header(&self, map: MapType, name: &str, value: &str) -> Result<(), HostError> {
        check(
            self.0
                .replace_header_map_value(map, name.as_bytes(), value.as_bytes()),
        )
    }

    pub fn remove_header(&self, map: MapType, name: &str) -> Result<(), HostError> {
        check(self.0.remove_header_map_value(map, name.as_bytes()))
    }

    /// A host property; `None` when absent or empty.
    pub fn property(&self, path: &[&str]) -> Result<Option<Vec<u8>>, HostError> {
        let (status, data) = self.0.get_property(&encode_path(path));
        match check(status) {
            Ok(()) => data.into_data(),
            Err(HostError::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn set_property(&self, path: &[&str], value: &[u8]) -> Result<(), HostError> {
        check(self.0.set_property(&encode_path(path), value))
    }

    /// A shared-data value and its compare-and-swap version; both `None` when the key is absent.
    pub fn shared_data(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), HostError> {
        let (status, data, cas) = self.0.get_shared_data(key.as_bytes());
        match check(status) {
            Ok(()) => Ok((data.into_data()?, (cas != 0).then_some(cas))),
            Err(HostError::NotFound) => Ok((None, None)),
            Err(e) => Err(e),
        }
    }

    /// Writes shared data; with `cas`, only if nobody wrote since that version
    /// (`Err(CasMismatch)` otherwise).
    pub fn set_shared_data(
        &self,
        key: &str,
        value: &[u8],
        cas: Option<u32>,
    ) -> Result<(), HostError> {
        check(
            self.0
                .set_shared_data(key.as_bytes(), value, cas.unwrap_or(0)),
        )
    }

    /// Sends a local reply instead of forwarding the request; `details` names it in Envoy's
    /// access log (`%RESPONSE_CODE_DETAILS%`).
    pub fn send_response(
        &self,
        status: u16,
        details: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<(), HostError> {
        let headers = encode_map(headers)?;
        check(
            self.0
                .send_local_response(u32::from(status), details.as_bytes(), body, &headers),
        )
    }

    /// Starts an HTTP call to an Envoy cluster; its token on success. The caller records who
    /// waits for it (`dispatch::callout_started`).
    pub fn http_call(
        &self,
        upstream: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        timeout: Duration,
    ) -> Result<u32, HostError> {
        let headers = encode_map(headers)?;
        let trailers = encode_map(&[])?;
        let (status, token) = self.0.http_call(
            upstream.as_bytes(),
            &headers,
            body,
            &trailers,
            millis(timeout),
        );
        check(status).map(|()| token)
    }

    /// Lets a paused request go on upstream.
    pub fn resume_request(&self) -> Result<(), HostError> {
        check(self.0.continue_stream(StreamType::HttpRequest))
    }

    pub fn define_metric(&self, kind: MetricType, name: &str) -> Result<u32, HostError> {
        let (status, id) = self.0.define_metric(kind, name.as_bytes());
        check(status).map(|()| id)
    }

    pub fn increment_metric(&self, id: u32, offset: i64) -> Result<(), HostError> {
        check(self.0.increment_metric(id, offset))
    }

    pub fn record_metric(&self, id: u32, value: u64) -> Result<(), HostError> {
        check(self.0.record_metric(id, value))
    }

    /// A host function by name; `Ok(None)` when it answered nothing.
    pub fn call_foreign_function(
        &self,
        name: &str,
        arguments: &[u8],
    ) -> Result<Option<Vec<u8>>, HostError> {
        let (status, data) = self.0.call_foreign_function(name.as_bytes(), arguments);
        check(status)?;
        data.into_data()
    }

    /// Makes later calls act on `context_id` (the context a call's answer is delivered to).
    pub fn set_effective_context(&self, context_id: u32) -> Result<(), HostError> {
        check(self.0.set_effective_context(context_id))
    }
}

fn millis(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

/// A header's name and value, borrowed from the host's serialised map.
pub type Pair<'a> = (&'a [u8], &'a [u8]);

/// Reads a proxy-wasm header map without copying: a little-endian `u32` count N, N pairs of
/// little-endian `u32` lengths (name, value), then every name and value in that order, each
/// followed by a NUL byte. An empty buffer is an empty map.
///
/// Anything that does not add up exactly (a table or a field past the end, a missing NUL,
/// bytes left over) is [`HostError::Malformed`]: Envoy writes exactly this layout, so anything
/// else means the framing is not what this code thinks, and a misframed map can shift a value
/// into a name.
pub fn decode_map(bytes: &[u8]) -> Result<Vec<Pair<'_>>, HostError> {
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    let (count, rest) = read_u32(bytes)?;
    let table_len = usize::try_from(count)
        .ok()
        .and_then(|n| n.checked_mul(8))
        .ok_or(HostError::Malformed)?;
    let (table, mut data) = split(rest, table_len)?;
    // The table fits in the buffer, so the count is bounded by the buffer's size.
    let mut pairs = Vec::with_capacity(table.len() / 8);
    for entry in table.chunks_exact(8) {
        let (name_len, lens) = read_u32(entry)?;
        let (value_len, _) = read_u32(lens)?;
        let name;
        (name, data) = field(data, name_len)?;
        let value;
        (value, data) = field(data, value_len)?;
        pairs.push((name, value));
    }
    if !data.is_empty() {
        return Err(HostError::Malformed);
    }
    Ok(pairs)
}

/// Owned pairs for the core (`http::Headers` takes `(String, Vec<u8>)`).
///
/// A name that is not UTF-8 is kept with its invalid bytes replaced by U+FFFD rather than
/// dropped: the request keeps every header it has (a policy counting or listing headers sees
/// it), and a name holding U+FFFD can never equal an ASCII name the filter looks up
/// (`authorization`, `:path`, a configured `header:NAME`), so it cannot pose as one. Envoy's
/// codecs only admit RFC 9110 token characters in names, so this is for other hosts and for
/// names other filters set.
pub fn owned_pairs(pairs: &[Pair<'_>]) -> Vec<(String, Vec<u8>)> {
    pairs
        .iter()
        .map(|(n, v)| (String::from_utf8_lossy(n).into_owned(), v.to_vec()))
        .collect()
}

/// Writes a proxy-wasm header map (the layout [`decode_map`] reads).
pub fn encode_map(pairs: &[(&str, &str)]) -> Result<Vec<u8>, HostError> {
    let len32 = |n: usize| u32::try_from(n).map_err(|_| HostError::TooLarge);
    let mut size = 4usize;
    for (n, v) in pairs {
        size = size
            .checked_add(n.len())
            .and_then(|s| s.checked_add(v.len()))
            .and_then(|s| s.checked_add(10))
            .ok_or(HostError::TooLarge)?;
    }
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(&len32(pairs.len())?.to_le_bytes());
    for (n, v) in pairs {
        out.extend_from_slice(&len32(n.len())?.to_le_bytes());
        out.extend_from_slice(&len32(v.len())?.to_le_bytes());
    }
    for (n, v) in pairs {
        out.extend_from_slice(n.as_bytes());
        out.push(0);
        out.extend_from_slice(v.as_bytes());
        out.push(0);
    }
    Ok(out)
}

/// A property path: its segments joined by NUL bytes.
pub fn encode_path(path: &[&str]) -> Vec<u8> {
    path.join("\0").into_bytes()
}

fn read_u32(bytes: &[u8]) -> Result<(u32, &[u8]), HostError> {
    let (head, rest) = split(bytes, 4)?;
    let head: [u8; 4] = head.try_into().map_err(|_| HostError::Malformed)?;
    Ok((u32::from_le_bytes(head), rest))
}

fn split(bytes: &[u8], at: usize) -> Result<(&[u8], &[u8]), HostError> {
    if at > bytes.len() {
        return Err(HostError::Malformed);
    }
    Ok(bytes.split_at(at))
}

/// `len` bytes and the NUL after them; the rest.
fn field(data: &[u8], len: u32) -> Result<(&[u8], &[u8]), HostError> {
    let len = usize::try_from(len).map_err(|_| HostError::Malformed)?;
    let (value, rest) = split(data, len)?;
    match rest.split_first() {
        Some((0, rest)) => Ok((value, rest)),
        _ => Err(HostError::Malformed),
    }
}

/// Buffers lent to the host by `proxy_on_memory_allocate`, by pointer and length, until a call
/// hands one back. `abi.rs` takes ownership of a returned pointer only if it is here with that
/// exact length, so a host answering a stray pointer or a wrong size cannot make this module
/// free or read memory it does not own.
#[derive(Debug)]
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))] // used by `abi`, Wasm only
pub struct Loans<P> {
    lent: Vec<(P, usize)>,
}

impl<P> Default for Loans<P> {
    fn default() -> Self {
        Loans { lent: Vec::new() }
    }
}

#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
impl<P: Copy + PartialEq> Loans<P> {
    pub fn lend(&mut self, ptr: P, len: usize) {
        self.lent.push((ptr, len));
    }

    /// Settles a call that returned `(ptr, len)`: whether that is a loan (now ended), after
    /// handing every other loan to `free`. The ABI hands an allocation back only through the
    /// return pointer of the call that asked for it, so once the call is over the host holds
    /// none of them.
    pub fn settle(&mut self, ptr: P, len: usize, mut free: impl FnMut(P, usize)) -> bool {
        let mut returned = false;
        for (p, n) in self.lent.drain(..) {
            if !returned && (p, n) == (ptr, len) {
                returned = true;
            } else {
                free(p, n);
            }
        }
        returned
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    /// Every status the ABI defines, plus numbers it does not.
    const STATUSES: &[u32] = &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 99, u32::MAX];

    /// A host that answers every call with one status and one returned buffer, and remembers
    /// the serialised arguments it was given.
    struct Fake {
        status: u32,
        returned: Returned,
        cas: u32,
        seen: RefCell<Vec<Vec<u8>>>,
    }

    fn fake(status: u32, returned: Returned) -> Host<Fake> {
        Host(Fake {
            status,
            returned,
            cas: 0,
            seen: RefCell::new(Vec::new()),
        })
    }

    impl Fake {
        fn saw(&self, bytes: &[u8]) {
            self.seen.borrow_mut().push(bytes.to_vec());
        }
        fn answer(&self) -> (u32, Returned) {
            (self.status, self.returned.clone())
        }
    }

    impl Abi for Fake {
        fn log(&self, _: LogLevel, m: &[u8]) -> u32 {
            self.saw(m);
            self.status
        }
        fn get_current_time_nanoseconds(&self) -> (u32, u64) {
            (self.status, 1_700_000_000_000_000_000)
        }
        fn set_tick_period_milliseconds(&self, _: u32) -> u32 {
            self.status
        }
        fn get_buffer_bytes(&self, _: BufferType, _: usize, _: usize) -> (u32, Returned) {
            self.answer()
        }
        fn get_header_map_pairs(&self, _: MapType) -> (u32, Returned) {
            self.answer()
        }
        fn get_header_map_value(&self, _: MapType, k: &[u8]) -> (u32, Returned) {
            self.saw(k);
            self.answer()
        }
        fn replace_header_map_value(&self, _: MapType, k: &[u8], v: &[u8]) -> u32 {
            self.saw(k);
            self.saw(v);
            self.status
        }
        fn remove_header_map_value(&self, _: MapType, k: &[u8]) -> u32 {
            self.saw(k);
            self.status
        }
        fn get_property(&self, p: &[u8]) -> (u32, Returned) {
            self.saw(p);
            self.answer()
        }
        fn set_property(&self, p: &[u8], v: &[u8]) -> u32 {
            self.saw(p);
            self.saw(v);
            self.status
        }
        fn get_shared_data(&self, k: &[u8]) -> (u32, Returned, u32) {
            self.saw(k);
            (self.status, self.returned.clone(), self.cas)
        }
        fn set_shared_data(&self, k: &[u8], v: &[u8], _: u32) -> u32 {
            self.saw(k);
            self.saw(v);
            self.status
        }
        fn send_local_response(&self, _: u32, d: &[u8], b: &[u8], h: &[u8]) -> u32 {
            self.saw(d);
            self.saw(b);
            self.saw(h);
            self.status
        }
        fn http_call(&self, u: &[u8], h: &[u8], b: &[u8], t: &[u8], _: u32) -> (u32, u32) {
            for x in [u, h, b, t] {
                self.saw(x);
            }
            (self.status, 4)
        }
        fn continue_stream(&self, _: StreamType) -> u32 {
            self.status
        }
        fn define_metric(&self, _: MetricType, n: &[u8]) -> (u32, u32) {
            self.saw(n);
            (self.status, 7)
        }
        fn increment_metric(&self, _: u32, _: i64) -> u32 {
            self.status
        }
        fn record_metric(&self, _: u32, _: u64) -> u32 {
            self.status
        }
        fn call_foreign_function(&self, n: &[u8], a: &[u8]) -> (u32, Returned) {
            self.saw(n);
            self.saw(a);
            self.answer()
        }
        fn set_effective_context(&self, _: u32) -> u32 {
            self.status
        }
    }

    /// The example map of proxy-wasm's own serialisation tests.
    const MAP: &[(&str, &str)] = &[
        (":method", "GET"),
        (":path", "/bytes/1"),
        (":authority", "httpbin.org"),
        ("Powered-By", "proxy-wasm"),
    ];

    #[rustfmt::skip]
    const SERIALIZED_MAP: &[u8] = &[
        4, 0, 0, 0,
        7, 0, 0, 0, 3, 0, 0, 0,
        5, 0, 0, 0, 8, 0, 0, 0,
        10, 0, 0, 0, 11, 0, 0, 0,
        10, 0, 0, 0, 10, 0, 0, 0,
        58, 109, 101, 116, 104, 111, 100, 0,
        71, 69, 84, 0,
        58, 112, 97, 116, 104, 0,
        47, 98, 121, 116, 101, 115, 47, 49, 0,
        58, 97, 117, 116, 104, 111, 114, 105, 116, 121, 0,
        104, 116, 116, 112, 98, 105, 110, 46, 111, 114, 103, 0,
        80, 111, 119, 101, 114, 101, 100, 45, 66, 121, 0,
        112, 114, 111, 120, 121, 45, 119, 97, 115, 109, 0,
    ];

    #[test]
    fn every_status_number_maps_to_a_result() {
        assert_eq!(check(0), Ok(()));
        let names: Vec<String> = (1..=12)
            .map(|s| check(s).unwrap_err().to_string())
            .collect();
        assert_eq!(
            names,
            [
                "NotFound",
                "BadArgument",
                "SerializationFailure",
                "ParseFailure",
                "BadExpression",
                "InvalidMemoryAccess",
                "Empty",
                "CasMismatch",
                "ResultMismatch",
                "InternalFailure",
                "BrokenConnection",
                "Unimplemented"
            ]
        );
        for n in [13, 99, 1 << 31, u32::MAX] {
            assert_eq!(check(n), Err(HostError::Unknown(n)));
            assert_eq!(
                check(n).unwrap_err().to_string(),
                format!("unknown status {n}")
            );
        }
    }

    #[test]
    fn maps_encode_as_proxy_wasm_does_and_decode_back() {
        assert_eq!(encode_map(MAP).unwrap(), SERIALIZED_MAP);
        assert_eq!(encode_map(&[]).unwrap(), [0, 0, 0, 0]);
        let decoded = decode_map(SERIALIZED_MAP).unwrap();
        let expected: Vec<(&[u8], &[u8])> = MAP
            .iter()
            .map(|(n, v)| (n.as_bytes(), v.as_bytes()))
            .collect();
        assert_eq!(decoded, expected);
        // Zero-copy: the pairs point into the buffer.
        let range = SERIALIZED_MAP.as_ptr_range();
        assert!(decoded
            .iter()
            .all(|(n, v)| range.contains(&n.as_ptr()) && range.contains(&v.as_ptr())));
    }

    #[test]
    fn empty_maps_and_empty_fields_decode() {
        assert_eq!(decode_map(&[]).unwrap(), []);
        assert_eq!(decode_map(&[0, 0, 0, 0]).unwrap(), []);
        let empty: &[u8] = &[];
        assert_eq!(
            decode_map(&[1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]).unwrap(),
            [(empty, empty)]
        );
    }

    #[test]
    fn malformed_maps_are_errors_not_panics() {
        let bad: &[&[u8]] = &[
            // Shorter than the count.
            &[1],
            &[1, 0, 0],
            // A count with no table.
            &[1, 0, 0, 0],
            // A table with no data.
            &[1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0],
            // Half a table.
            &[1, 0, 0, 0, 1, 0, 0, 0],
            // Lengths past the end.
            &[1, 0, 0, 0, 255, 255, 255, 255, 0, 0, 0, 0, 97, 0, 0],
            &[1, 0, 0, 0, 1, 0, 0, 0, 255, 255, 255, 255, 97, 0, 98, 0],
            // Missing or wrong NUL terminators.
            &[1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 97, 98, 0],
            &[1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 97, 0, 98],
            &[1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 97, 1, 98, 1],
            // Bytes left over.
            &[1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 97, 0, 98, 0, 0],
            &[0, 0, 0, 0, 0],
            // A count whose table cannot exist (and would overflow 32-bit arithmetic).
            &[255, 255, 255, 255, 0, 0, 0, 0],
            &[0, 0, 0, 32, 1, 0, 0, 0, 1, 0, 0, 0, 97, 0, 98, 0],
        ];
        for bytes in bad {
            assert_eq!(decode_map(bytes), Err(HostError::Malformed), "{bytes:?}");
        }
        // Every truncation of a good map.
        for end in 1..SERIALIZED_MAP.len() {
            assert_eq!(
                decode_map(&SERIALIZED_MAP[..end]),
                Err(HostError::Malformed),
                "cut at {end}"
            );
        }
    }

    #[test]
    fn garbage_never_panics_the_decoder() {
        // A deterministic xorshift stream: buffers of every small size, and the good map with
        // bytes flipped.
        let mut x: u32 = 0x9e37_79b9;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x
        };
        for _ in 0..20_000 {
            let len = (next() % 64) as usize;
            let mut bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if let Some(b) = bytes.first_mut() {
                *b %= 5; // small counts, so some buffers decode part of the way
            }
            let _ = decode_map(&bytes);
            let mut flipped = SERIALIZED_MAP.to_vec();
            let i = next() as usize % flipped.len();
            flipped[i] ^= 1 << (next() % 8);
            let _ = decode_map(&flipped);
        }
    }

    #[test]
    fn names_that_are_not_utf8_are_kept_lossily_and_values_as_bytes() {
        let bytes = [
            2, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 13, 0, 0, 0, 1, 0, 0, 0, 0xff, 0xfe, 0, 0x80, 0x81,
            0, b'a', b'u', b't', b'h', b'o', b'r', b'i', b'z', b'a', b't', b'i', b'o', b'n', 0,
            b'x', 0,
        ];
        let host = fake(0, Returned::Bytes(bytes.to_vec()));
        let pairs = host.header_pairs(MapType::HttpRequestHeaders).unwrap();
        assert_eq!(
            pairs,
            [
                ("\u{fffd}\u{fffd}".to_owned(), vec![0x80, 0x81]),
                ("authorization".to_owned(), b"x".to_vec()),
            ]
        );
    }

    #[test]
    fn header_pairs_under_every_status_and_answer() {
        for &status in STATUSES {
            for returned in [
                Returned::Nothing,
                Returned::Bytes(Vec::new()),
                Returned::Bytes(SERIALIZED_MAP.to_vec()),
                Returned::Bytes(vec![9, 9, 9]),
                Returned::Unowned,
            ] {
                let r = fake(status, returned.clone()).header_pairs(MapType::HttpRequestHeaders);
                let expected = match (status, &returned) {
                    (0, Returned::Unowned) => Err(HostError::Malformed),
                    (0, Returned::Bytes(b)) if b == &[9, 9, 9] => Err(HostError::Malformed),
                    (0, _) => Ok(()),
                    _ => Err(check(status).unwrap_err()),
                };
                assert_eq!(r.map(|_| ()), expected, "{status} {returned:?}");
            }
        }
    }

    #[test]
    fn getters_read_not_found_as_absent_and_fail_on_the_rest() {
        let data = || Returned::Bytes(b"v".to_vec());
        for &status in STATUSES {
            let h = fake(status, data());
            let expected_err = check(status).err();
            let absent = status == 1;
            let cases: Vec<(&str, Result<bool, HostError>)> = vec![
                (
                    "buffer",
                    h.buffer(BufferType::PluginConfiguration, 0, 10)
                        .map(|o| o.is_some()),
                ),
                (
                    "header",
                    h.header(MapType::HttpRequestHeaders, ":path")
                        .map(|o| o.is_some()),
                ),
                (
                    "property",
                    h.property(&["source", "address"]).map(|o| o.is_some()),
                ),
                ("shared", h.shared_data("k").map(|(v, _)| v.is_some())),
            ];
            for (what, r) in cases {
                match (status, absent) {
                    (0, _) => assert_eq!(r, Ok(true), "{what}"),
                    (_, true) => assert_eq!(r, Ok(false), "{what}"),
                    _ => assert_eq!(r.err(), expected_err, "{what} {status}"),
                }
            }
            // Foreign functions: NotFound means "no such function", an error the caller reads.
            let r = h.call_foreign_function("verify_signature", b"x");
            match status {
                0 => assert_eq!(r, Ok(Some(b"v".to_vec()))),
                _ => assert_eq!(r.err(), expected_err),
            }
        }
    }

    #[test]
    fn a_pointer_this_module_did_not_lend_is_an_error() {
        let h = fake(0, Returned::Unowned);
        assert_eq!(
            h.buffer(BufferType::HttpCallResponseBody, 0, 10),
            Err(HostError::Malformed)
        );
        assert_eq!(
            h.header(MapType::HttpCallResponseHeaders, ":status"),
            Err(HostError::Malformed)
        );
        assert_eq!(h.property(&["a"]), Err(HostError::Malformed));
        assert_eq!(h.shared_data("k"), Err(HostError::Malformed));
        assert_eq!(h.call_foreign_function("f", b""), Err(HostError::Malformed));
    }

    #[test]
    fn nothing_returned_with_ok_keeps_the_sdk_meanings() {
        let h = fake(0, Returned::Nothing);
        assert_eq!(h.buffer(BufferType::PluginConfiguration, 0, 10), Ok(None));
        assert_eq!(
            h.header(MapType::HttpRequestHeaders, "x"),
            Ok(Some(Vec::new()))
        );
        assert_eq!(h.header_pairs(MapType::HttpRequestHeaders), Ok(Vec::new()));
        assert_eq!(h.property(&["a"]), Ok(None));
        assert_eq!(h.shared_data("k"), Ok((None, None)));
        assert_eq!(h.call_foreign_function("f", b""), Ok(None));
        let mut with_cas = fake(0, Returned::Nothing);
        with_cas.0.cas = 3;
        assert_eq!(with_cas.shared_data("k"), Ok((None, Some(3))));
    }

    #[test]
    fn setters_and_actions_fail_on_every_status_but_ok() {
        for &status in STATUSES {
            let h = fake(status, Returned::Nothing);
            let expected = check(status);
            let results = [
                h.log(LogLevel::Info, "m"),
                h.set_tick_period(Duration::from_secs(1)),
                h.set_header(MapType::HttpResponseHeaders, "n", "v"),
                h.remove_header(MapType::HttpRequestHeaders, "n"),
                h.set_property(&["apiguard_sub"], b"v"),
                h.set_shared_data("k", b"v", Some(1)),
                h.send_response(503, "test", &[("content-type", "text/plain")], b"no"),
                h.resume_request(),
                h.increment_metric(1, 1),
                h.record_metric(1, 1),
                h.set_effective_context(2),
                h.now_nanos().map(|_| ()),
                h.http_call("limiter", &[(":path", "/")], b"{}", Duration::MAX)
                    .map(|_| ()),
                h.define_metric(MetricType::Counter, "c").map(|_| ()),
            ];
            for r in results {
                assert_eq!(r, expected, "status {status}");
            }
        }
        let h = fake(0, Returned::Nothing);
        assert_eq!(h.http_call("c", &[], b"", Duration::ZERO), Ok(4));
        assert_eq!(h.define_metric(MetricType::Histogram, "h"), Ok(7));
    }

    #[test]
    fn arguments_are_serialised_as_the_abi_wants() {
        let h = fake(0, Returned::Nothing);
        h.property(&["source", "address"]).unwrap();
        h.http_call(
            "limiter",
            &[(":method", "POST")],
            b"{}",
            Duration::from_millis(5),
        )
        .unwrap();
        let seen = h.0.seen.borrow();
        assert_eq!(seen[0], b"source\0address");
        assert_eq!(seen[1], b"limiter");
        assert_eq!(
            decode_map(&seen[2]).unwrap(),
            [(&b":method"[..], &b"POST"[..])]
        );
        assert_eq!(seen[3], b"{}");
        assert_eq!(seen[4], [0, 0, 0, 0]);
        assert_eq!(encode_path(&[]), b"");
        assert_eq!(encode_path(&["a"]), b"a");
    }

    #[test]
    fn loans_are_reclaimed_only_with_their_exact_length() {
        let mut loans = Loans::<usize>::default();
        let mut freed = Vec::new();
        loans.lend(100, 8);
        loans.lend(200, 4);
        // A stray pointer or a wrong length is not a loan; every loan is settled either way.
        assert!(!loans.settle(100, 9, |p, n| freed.push((p, n))));
        assert_eq!(freed, [(100, 8), (200, 4)]);
        freed.clear();
        assert!(!loans.settle(100, 8, |p, n| freed.push((p, n))));
        assert_eq!(freed, []);
        loans.lend(100, 8);
        loans.lend(200, 4);
        assert!(loans.settle(200, 4, |p, n| freed.push((p, n))));
        assert_eq!(freed, [(100, 8)]);
        freed.clear();
        assert!(!loans.settle(0, 0, |p, n| freed.push((p, n))));
        assert_eq!(freed, []);
    }
}
