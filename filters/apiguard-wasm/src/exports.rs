//! The host's events: the proxy-wasm exports, each handing its event to `dispatch`. Attributes
//! only: no `unsafe` block here (the ABI's unsafe code is in apiguard-proxy-abi), but
//! `no_mangle` counts as unsafe code, hence this module's lint exception.

use crate::dispatch;

/// Called once by the host before anything else (the WASI reactor entry point).
#[unsafe(no_mangle)]
pub extern "C" fn _initialize() {
    apiguard_proxy_abi::abi::initialize();
    dispatch::init();
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_context_create(context_id: u32, root_context_id: u32) {
    dispatch::on_context_create(context_id, root_context_id);
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_vm_start(_root_context_id: u32, _vm_configuration_size: usize) -> u32 {
    1
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_configure(
    root_context_id: u32,
    _plugin_configuration_size: usize,
) -> u32 {
    u32::from(dispatch::on_configure(root_context_id))
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_tick(root_context_id: u32) {
    dispatch::on_tick(root_context_id);
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_request_headers(
    context_id: u32,
    _num_headers: usize,
    end_of_stream: u32,
) -> u32 {
    dispatch::on_request_headers(context_id, end_of_stream != 0) as u32
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_response_headers(
    context_id: u32,
    _num_headers: usize,
    _end_of_stream: u32,
) -> u32 {
    dispatch::on_response_headers(context_id) as u32
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_http_call_response(
    _context_id: u32,
    token: u32,
    _num_headers: usize,
    body_size: usize,
    _num_trailers: usize,
) {
    dispatch::on_http_call_response(token, body_size);
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_done(_context_id: u32) -> u32 {
    1
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_delete(context_id: u32) {
    dispatch::on_delete(context_id);
}
