//! The host off Wasm: a scripted stand-in, so the filter builds natively and its tests can drive
//! the dispatcher and the filter end to end. Never shipped (`apiguard.wasm` uses `abi::Envoy`).
//!
//! By default every call succeeds and returns nothing; a test sets a [`Script`] (per thread, as
//! the test harness runs each test on its own thread) and reads back what the filter did.

use std::cell::RefCell;

use crate::hostcall::{
    decode_map, Abi, BufferType, LogLevel, MapType, MetricType, Returned, StreamType,
};

#[derive(Debug, Default)]
pub struct Script {
    /// When set, every call answers this status and returns nothing.
    pub fail_with: Option<u32>,
    /// `get_buffer_bytes(PluginConfiguration)`.
    pub config: Vec<u8>,
    /// `get_header_map_pairs(HttpRequestHeaders)`, as the host would serialise it (or not).
    pub request_headers: Vec<u8>,
    /// `:status` of a call's answer; `None`: the call got no answer.
    pub call_status: Option<Vec<u8>>,
    /// `get_buffer_bytes(HttpCallResponseBody)`.
    pub call_body: Vec<u8>,
    /// The token every `http_call` is given.
    pub token: u32,
    /// What the filter did, in order: `call <token>`, `context <id>`, `respond <status>`,
    /// `resume`.
    pub journal: Vec<String>,
}

thread_local! {
    static SCRIPT: RefCell<Script> = RefCell::new(Script::default());
}

/// Reads or changes this thread's script.
pub fn script<R>(f: impl FnOnce(&mut Script) -> R) -> Option<R> {
    SCRIPT
        .try_with(|s| s.try_borrow_mut().ok().map(|mut s| f(&mut s)))
        .ok()
        .flatten()
}

/// Answers from the script: `(status, data)` unless the script fails every call.
fn answer(f: impl FnOnce(&mut Script) -> (u32, Returned)) -> (u32, Returned) {
    script(|s| match s.fail_with {
        Some(status) => (status, Returned::Nothing),
        None => f(s),
    })
    .unwrap_or((12, Returned::Nothing))
}

fn status(f: impl FnOnce(&mut Script)) -> u32 {
    answer(|s| {
        f(s);
        (0, Returned::Nothing)
    })
    .0
}

fn note(entry: String) {
    script(|s| s.journal.push(entry));
}

pub struct Scripted;

impl Abi for Scripted {
    fn log(&self, _: LogLevel, _: &[u8]) -> u32 {
        status(|_| {})
    }

    fn get_current_time_nanoseconds(&self) -> (u32, u64) {
        (status(|_| {}), 1_700_000_000_000_000_000)
    }

    fn set_tick_period_milliseconds(&self, _: u32) -> u32 {
        status(|_| {})
    }

    fn get_buffer_bytes(&self, buffer: BufferType, _: usize, _: usize) -> (u32, Returned) {
        answer(|s| {
            let data = match buffer {
                BufferType::PluginConfiguration => s.config.clone(),
                BufferType::HttpCallResponseBody => s.call_body.clone(),
            };
            (0, Returned::Bytes(data))
        })
    }

    fn get_header_map_pairs(&self, map: MapType) -> (u32, Returned) {
        answer(|s| match map {
            MapType::HttpRequestHeaders => (0, Returned::Bytes(s.request_headers.clone())),
            _ => (0, Returned::Nothing),
        })
    }

    fn get_header_map_value(&self, map: MapType, key: &[u8]) -> (u32, Returned) {
        answer(|s| match map {
            MapType::HttpCallResponseHeaders if key == b":status" => match &s.call_status {
                Some(v) => (0, Returned::Bytes(v.clone())),
                None => (1, Returned::Nothing),
            },
            MapType::HttpRequestHeaders => {
                let found = decode_map(&s.request_headers)
                    .ok()
                    .and_then(|pairs| pairs.into_iter().find(|(n, _)| *n == key))
                    .map(|(_, v)| v.to_vec());
                match found {
                    Some(v) => (0, Returned::Bytes(v)),
                    None => (1, Returned::Nothing),
                }
            }
            _ => (1, Returned::Nothing),
        })
    }

    fn replace_header_map_value(&self, _: MapType, _: &[u8], _: &[u8]) -> u32 {
        status(|_| {})
    }

    fn remove_header_map_value(&self, _: MapType, _: &[u8]) -> u32 {
        status(|_| {})
    }

    fn get_property(&self, _: &[u8]) -> (u32, Returned) {
        answer(|_| (1, Returned::Nothing))
    }

    fn set_property(&self, _: &[u8], _: &[u8]) -> u32 {
        status(|_| {})
    }

    fn get_shared_data(&self, _: &[u8]) -> (u32, Returned, u32) {
        let (status, data) = answer(|_| (1, Returned::Nothing));
        (status, data, 0)
    }

    fn set_shared_data(&self, _: &[u8], _: &[u8], _: u32) -> u32 {
        status(|_| {})
    }

    fn send_local_response(&self, status_code: u32, _: &[u8], _: &[u8], _: &[u8]) -> u32 {
        // Noted even when the call fails: tests check that the filter tried to refuse.
        note(format!("respond {status_code}"));
        status(|_| {})
    }

    fn http_call(&self, _: &[u8], _: &[u8], _: &[u8], _: &[u8], _: u32) -> (u32, u32) {
        let mut token = 0;
        let status = status(|s| {
            token = s.token;
            s.journal.push(format!("call {token}"));
        });
        (status, token)
    }

    fn continue_stream(&self, _: StreamType) -> u32 {
        note("resume".to_owned());
        status(|_| {})
    }

    fn define_metric(&self, _: MetricType, _: &[u8]) -> (u32, u32) {
        (status(|_| {}), 1)
    }

    fn increment_metric(&self, _: u32, _: i64) -> u32 {
        status(|_| {})
    }

    fn record_metric(&self, _: u32, _: u64) -> u32 {
        status(|_| {})
    }

    fn call_foreign_function(&self, _: &[u8], _: &[u8]) -> (u32, Returned) {
        answer(|_| (1, Returned::Nothing))
    }

    fn set_effective_context(&self, context_id: u32) -> u32 {
        note(format!("context {context_id}"));
        status(|_| {})
    }
}
