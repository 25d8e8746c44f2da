//! apiguard as a Proxy-Wasm HTTP filter.
//!
//! This crate is a thin translation layer: host events become calls into the host-independent
//! core (`apiguard-core`), and what the core returns becomes host calls. It never calls an SDK
//! convenience method that unwraps a host-call result (those panic on a host error, and a panic
//! kills the Wasm VM for every later request on this worker); it goes through
//! `proxy_wasm::hostcalls` and handles every `Result`.

use std::rc::Rc;

use apiguard_core::Config;
use log::{error, info, warn};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Trace);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root::default()) });
}}

/// One per plugin configuration per worker. Holds the compiled configuration that every
/// request context on this worker shares.
#[derive(Default)]
struct Root {
    config: Option<Rc<Config>>,
}

impl Context for Root {}

impl RootContext for Root {
    /// Parses and validates the configuration once. Returning `false` makes Envoy refuse the
    /// plugin, so a bad configuration never serves traffic; the log line names the field.
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let bytes = match hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX) {
            Ok(Some(bytes)) => bytes,
            Ok(None) => Vec::new(),
            Err(status) => {
                error!("apiguard: cannot read the plugin configuration: {status:?}");
                return false;
            }
        };
        match Config::from_json(&bytes) {
            Ok(validated) => {
                for w in &validated.warnings {
                    warn!("apiguard: configuration warning: {w}");
                }
                info!(
                    "apiguard: configuration loaded (jwt: {}, policy: {}, rate_limit: {})",
                    on_off(validated.config.jwt.is_some()),
                    on_off(validated.config.policy.is_some()),
                    on_off(validated.config.rate_limit.is_some()),
                );
                self.config = Some(Rc::new(validated.config));
                true
            }
            Err(e) => {
                error!("apiguard: invalid configuration: {e}");
                false
            }
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Request {
            _config: self.config.clone(),
        }))
    }
}

fn on_off(on: bool) -> &'static str {
    if on {
        "on"
    } else {
        "off"
    }
}

/// One per HTTP request.
struct Request {
    // Held for the stages that read it; the pass-through stage does not.
    _config: Option<Rc<Config>>,
}

impl Context for Request {}

impl HttpContext for Request {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        Action::Continue
    }
}
