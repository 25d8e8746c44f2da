//! The proxy-wasm ABI itself, and the only `unsafe` code of the filter: the host's imports
//! ([`Envoy`], the real [`Abi`]), the exports every module needs whatever it does (the ABI
//! version, the memory the host borrows to return data), and the module's start-up. The events
//! are exported by the filter (`filters/apiguard-wasm/src/exports.rs`). Built for `wasm32` only.
//!
//! Contracts relied on, all from the proxy-wasm ABI 0.2.1 as proxy-wasm-cpp-host implements it:
//! - an import reads the `(pointer, size)` arguments it is given, and writes its `return_*`
//!   out-parameters, only during the call;
//! - data it returns lives in memory it got from `proxy_on_memory_allocate` during that call,
//!   and the returned pointer and size are that allocation's (checked through [`Loans`]
//!   rather than trusted: a stray pointer is refused, never freed or read);
//! - status numbers are any `u32` (declared as `u32`, not an enum, so an unknown number is just
//!   a number), boolean arguments any `u32`.
//!
//! Exports use the ABI's names; nothing else in the program defines them (the filter does not
//! link the proxy-wasm SDK, whose dispatcher defines the same names).

use std::alloc::{alloc_zeroed, Layout};
use std::cell::RefCell;
use std::ptr::{null, null_mut, NonNull};

use crate::hostcall::{
    Abi, BufferType, Loans, LogLevel, MapType, MetricType, Returned, StreamType,
};

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_log(level: u32, message_data: *const u8, message_size: usize) -> u32;
    fn proxy_get_current_time_nanoseconds(return_time: *mut u64) -> u32;
    fn proxy_set_tick_period_milliseconds(period: u32) -> u32;
    fn proxy_get_buffer_bytes(
        buffer_type: u32,
        start: usize,
        max_size: usize,
        return_buffer_data: *mut *mut u8,
        return_buffer_size: *mut usize,
    ) -> u32;
    fn proxy_get_header_map_pairs(
        map_type: u32,
        return_map_data: *mut *mut u8,
        return_map_size: *mut usize,
    ) -> u32;
    fn proxy_get_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> u32;
    fn proxy_replace_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_remove_header_map_value(map_type: u32, key_data: *const u8, key_size: usize) -> u32;
    fn proxy_get_property(
        path_data: *const u8,
        path_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> u32;
    fn proxy_set_property(
        path_data: *const u8,
        path_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_get_shared_data(
        key_data: *const u8,
        key_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
        return_cas: *mut u32,
    ) -> u32;
    fn proxy_set_shared_data(
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
        cas: u32,
    ) -> u32;
    fn proxy_send_local_response(
        status_code: u32,
        status_code_details_data: *const u8,
        status_code_details_size: usize,
        body_data: *const u8,
        body_size: usize,
        headers_data: *const u8,
        headers_size: usize,
        grpc_status: i32,
    ) -> u32;
    fn proxy_http_call(
        upstream_data: *const u8,
        upstream_size: usize,
        headers_data: *const u8,
        headers_size: usize,
        body_data: *const u8,
        body_size: usize,
        trailers_data: *const u8,
        trailers_size: usize,
        timeout: u32,
        return_token: *mut u32,
    ) -> u32;
    fn proxy_continue_stream(stream_type: u32) -> u32;
    fn proxy_define_metric(
        metric_type: u32,
        name_data: *const u8,
        name_size: usize,
        return_id: *mut u32,
    ) -> u32;
    fn proxy_increment_metric(metric_id: u32, offset: i64) -> u32;
    fn proxy_record_metric(metric_id: u32, value: u64) -> u32;
    fn proxy_call_foreign_function(
        function_name_data: *const u8,
        function_name_size: usize,
        arguments_data: *const u8,
        arguments_size: usize,
        results_data: *mut *mut u8,
        results_size: *mut usize,
    ) -> u32;
    fn proxy_set_effective_context(context_id: u32) -> u32;
}

/// A slice as the ABI takes it; an empty one as `(null, 0)`, as the SDK passes "none".
fn raw(bytes: &[u8]) -> (*const u8, usize) {
    if bytes.is_empty() {
        (null(), 0)
    } else {
        (bytes.as_ptr(), bytes.len())
    }
}

thread_local! {
    /// Allocations the host holds now (a Wasm VM is single-threaded: this is one list).
    static LOANS: RefCell<Loans<*mut u8>> = RefCell::new(Loans::default());
}

/// Runs a call that may return a buffer through `(data, size)` out-parameters, and takes the
/// buffer back.
fn returning(call: impl FnOnce(*mut *mut u8, *mut usize) -> u32) -> (u32, Returned) {
    let mut data: *mut u8 = null_mut();
    let mut size: usize = 0;
    let status = call(&mut data, &mut size);
    (status, reclaim(data, size))
}

/// Owns `(data, size)` again if it is one of this module's loans; frees every other loan.
fn reclaim(data: *mut u8, size: usize) -> Returned {
    let free = |ptr: *mut u8, len: usize| {
        // SAFETY: `(ptr, len)` was lent by `proxy_on_memory_allocate` (the global allocator,
        // `len` bytes, alignment 1: `Vec<u8>`'s layout for capacity `len`), is not freed yet,
        // and the host no longer holds it (module contract above).
        drop(unsafe { Vec::from_raw_parts(ptr, len, len) });
    };
    let ours = LOANS
        .try_with(|l| {
            l.try_borrow_mut()
                .ok()
                .map(|mut l| l.settle(data, size, free))
        })
        .ok()
        .flatten()
        // Bookkeeping unavailable (never expected): leak rather than guess.
        .unwrap_or(false);
    if data.is_null() {
        Returned::Nothing
    } else if ours {
        // SAFETY: as above, for the loan this call handed back; its `size` bytes are
        // initialised (zeroed at allocation, then written by the host).
        Returned::Bytes(unsafe { Vec::from_raw_parts(data, size, size) })
    } else {
        Returned::Unowned
    }
}

/// The host: proxy-wasm imports as Envoy provides them.
pub struct Envoy;

impl Abi for Envoy {
    fn log(&self, level: LogLevel, message: &[u8]) -> u32 {
        let (m, m_len) = raw(message);
        // SAFETY: `m` points to `m_len` live bytes for the duration of the call.
        unsafe { proxy_log(level as u32, m, m_len) }
    }

    fn get_current_time_nanoseconds(&self) -> (u32, u64) {
        let mut nanos = 0u64;
        // SAFETY: the out-parameter is a live local.
        let status = unsafe { proxy_get_current_time_nanoseconds(&mut nanos) };
        (status, nanos)
    }

    fn set_tick_period_milliseconds(&self, period_ms: u32) -> u32 {
        // SAFETY: no pointers.
        unsafe { proxy_set_tick_period_milliseconds(period_ms) }
    }

    fn get_buffer_bytes(
        &self,
        buffer: BufferType,
        start: usize,
        max_size: usize,
    ) -> (u32, Returned) {
        returning(|data, size| {
            // SAFETY: the out-parameters are live locals of `returning`.
            unsafe { proxy_get_buffer_bytes(buffer as u32, start, max_size, data, size) }
        })
    }

    fn get_header_map_pairs(&self, map: MapType) -> (u32, Returned) {
        returning(|data, size| {
            // SAFETY: the out-parameters are live locals of `returning`.
            unsafe { proxy_get_header_map_pairs(map as u32, data, size) }
        })
    }

    fn get_header_map_value(&self, map: MapType, key: &[u8]) -> (u32, Returned) {
        let (k, k_len) = raw(key);
        returning(|data, size| {
            // SAFETY: `k` points to `k_len` live bytes; the out-parameters are live locals.
            unsafe { proxy_get_header_map_value(map as u32, k, k_len, data, size) }
        })
    }

    fn replace_header_map_value(&self, map: MapType, key: &[u8], value: &[u8]) -> u32 {
        let ((k, k_len), (v, v_len)) = (raw(key), raw(value));
        // SAFETY: both pointers point to live bytes of the given lengths.
        unsafe { proxy_replace_header_map_value(map as u32, k, k_len, v, v_len) }
    }

    fn remove_header_map_value(&self, map: MapType, key: &[u8]) -> u32 {
        let (k, k_len) = raw(key);
        // SAFETY: `k` points to `k_len` live bytes.
        unsafe { proxy_remove_header_map_value(map as u32, k, k_len) }
    }

    fn get_property(&self, path: &[u8]) -> (u32, Returned) {
        let (p, p_len) = raw(path);
        returning(|data, size| {
            // SAFETY: `p` points to `p_len` live bytes; the out-parameters are live locals.
            unsafe { proxy_get_property(p, p_len, data, size) }
        })
    }

    fn set_property(&self, path: &[u8], value: &[u8]) -> u32 {
        let ((p, p_len), (v, v_len)) = (raw(path), raw(value));
        // SAFETY: both pointers point to live bytes of the given lengths.
        unsafe { proxy_set_property(p, p_len, v, v_len) }
    }

    fn get_shared_data(&self, key: &[u8]) -> (u32, Returned, u32) {
        let (k, k_len) = raw(key);
        let mut cas = 0u32;
        let (status, data) = returning(|data, size| {
            // SAFETY: `k` points to `k_len` live bytes; the out-parameters are live locals.
            unsafe { proxy_get_shared_data(k, k_len, data, size, &mut cas) }
        });
        (status, data, cas)
    }

    fn set_shared_data(&self, key: &[u8], value: &[u8], cas: u32) -> u32 {
        let ((k, k_len), (v, v_len)) = (raw(key), raw(value));
        // SAFETY: both pointers point to live bytes of the given lengths.
        unsafe { proxy_set_shared_data(k, k_len, v, v_len, cas) }
    }

    fn send_local_response(
        &self,
        status_code: u32,
        details: &[u8],
        body: &[u8],
        headers: &[u8],
    ) -> u32 {
        let ((d, d_len), (b, b_len), (h, h_len)) = (raw(details), raw(body), raw(headers));
        // SAFETY: the three pointers point to live bytes of the given lengths; -1: not a gRPC
        // reply.
        unsafe { proxy_send_local_response(status_code, d, d_len, b, b_len, h, h_len, -1) }
    }

    fn http_call(
        &self,
        upstream: &[u8],
        headers: &[u8],
        body: &[u8],
        trailers: &[u8],
        timeout_ms: u32,
    ) -> (u32, u32) {
        let (u, u_len) = raw(upstream);
        let (h, h_len) = raw(headers);
        let (b, b_len) = raw(body);
        let (t, t_len) = raw(trailers);
        let mut token = 0u32;
        // SAFETY: every pointer points to live bytes of its length; the token is a live local.
        let status = unsafe {
            proxy_http_call(
                u, u_len, h, h_len, b, b_len, t, t_len, timeout_ms, &mut token,
            )
        };
        (status, token)
    }

    fn continue_stream(&self, stream: StreamType) -> u32 {
        // SAFETY: no pointers.
        unsafe { proxy_continue_stream(stream as u32) }
    }

    fn define_metric(&self, kind: MetricType, name: &[u8]) -> (u32, u32) {
        let (n, n_len) = raw(name);
        let mut id = 0u32;
        // SAFETY: `n` points to `n_len` live bytes; the id is a live local.
        let status = unsafe { proxy_define_metric(kind as u32, n, n_len, &mut id) };
        (status, id)
    }

    fn increment_metric(&self, id: u32, offset: i64) -> u32 {
        // SAFETY: no pointers.
        unsafe { proxy_increment_metric(id, offset) }
    }

    fn record_metric(&self, id: u32, value: u64) -> u32 {
        // SAFETY: no pointers.
        unsafe { proxy_record_metric(id, value) }
    }

    fn call_foreign_function(&self, name: &[u8], arguments: &[u8]) -> (u32, Returned) {
        let ((n, n_len), (a, a_len)) = (raw(name), raw(arguments));
        returning(|data, size| {
            // SAFETY: both pointers point to live bytes of the given lengths; the
            // out-parameters are live locals.
            unsafe { proxy_call_foreign_function(n, n_len, a, a_len, data, size) }
        })
    }

    fn set_effective_context(&self, context_id: u32) -> u32 {
        // SAFETY: no pointers.
        unsafe { proxy_set_effective_context(context_id) }
    }
}

// What the filter's exports need from here.

#[cfg(target_os = "wasi")]
extern "C" {
    fn __wasm_call_ctors();
}

/// Runs the module's static constructors; for the filter's `_initialize` export, once, first,
/// as `proxy_wasm::main!` runs them.
pub fn initialize() {
    // SAFETY: the linker-made constructor function; `_initialize` is the host's first call and
    // is made once.
    #[cfg(target_os = "wasi")]
    unsafe {
        __wasm_call_ctors()
    };
}

/// Tells the host which ABI this module speaks.
#[unsafe(no_mangle)]
pub extern "C" fn proxy_abi_version_0_2_1() {}

/// Memory for data the host returns (the `proxy_on_memory_allocate` export): `size` zeroed
/// bytes, recorded as a loan until the call that asked for it returns ([`reclaim`]). Null when
/// it cannot be had, which fails the host's call instead of aborting the VM.
#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_memory_allocate(size: usize) -> *mut u8 {
    let ptr = if size == 0 {
        NonNull::<u8>::dangling().as_ptr()
    } else {
        let Ok(layout) = Layout::array::<u8>(size) else {
            return null_mut();
        };
        // SAFETY: the layout's size is not zero.
        unsafe { alloc_zeroed(layout) }
    };
    if ptr.is_null() {
        return ptr;
    }
    let lent = LOANS
        .try_with(|l| l.try_borrow_mut().map(|mut l| l.lend(ptr, size)).is_ok())
        .unwrap_or(false);
    if !lent {
        // SAFETY: just allocated above with this layout and never shared.
        drop(unsafe { Vec::from_raw_parts(ptr, size, size) });
        return null_mut();
    }
    ptr
}
