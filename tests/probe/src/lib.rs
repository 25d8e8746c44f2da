//! Signature probe: a test fixture for `tests/e2e/signatures.rs`, never part of the product.
//!
//! POST a JSON array of `{"alg", "jwk", "msg" (hex), "sig" (hex)}`; the answer is one
//! `{"host", "wasm"}` per case: the verdict of Envoy's `verify_signature` through
//! `apiguard_core::jwt::host_signature::verify` (`valid`, `invalid`, `not_offered`, `failed`, or `bad_key`
//! when the JWK is refused), and jwt-compact's verdict in Wasm. The test feeds it every
//! vector in `tests/vectors/` and requires the two to agree.

use apiguard_core::jose::Algorithm;
use apiguard_core::jwt::host_signature::{self, HostSignatureError, HostVerdict, SignatureHost};
use apiguard_core::jwt::{alg, keys};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, Status};
use serde_json::{json, Value};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root) });
}}

struct Root;
impl Context for Root {}
impl RootContext for Root {
    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
    fn create_http_context(&self, _: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Probe))
    }
}

/// The host call as the filter makes it (filters/apiguard-wasm/src/host.rs): the raw answer,
/// read by the core's `jwt::host_signature::read_answer` for both. Only the status type differs (the
/// SDK's here), so only its names are mapped here.
struct Envoy;
impl SignatureHost for Envoy {
    fn call(&self, arguments: &[u8]) -> Result<Option<Vec<u8>>, HostSignatureError> {
        hostcalls::call_foreign_function(host_signature::FOREIGN_FUNCTION, Some(arguments)).map_err(
            |s| match s {
                Status::NotFound => HostSignatureError::Missing,
                Status::BadArgument => HostSignatureError::Status("BadArgument"),
                Status::SerializationFailure => HostSignatureError::Status("SerializationFailure"),
                Status::ParseFailure => HostSignatureError::Status("ParseFailure"),
                Status::Empty => HostSignatureError::Status("Empty"),
                Status::CasMismatch => HostSignatureError::Status("CasMismatch"),
                Status::InternalFailure => HostSignatureError::Status("InternalFailure"),
                _ => HostSignatureError::Status("unknown status"),
            },
        )
    }
}

struct Probe;
impl Context for Probe {}
impl HttpContext for Probe {
    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if !end_of_stream {
            return Action::Pause;
        }
        let body = hostcalls::get_buffer(BufferType::HttpRequestBody, 0, body_size)
            .ok()
            .flatten()
            .unwrap_or_default();
        let answer = match serde_json::from_slice::<Vec<Value>>(&body) {
            Ok(cases) => Value::Array(cases.iter().map(judge).collect()),
            Err(e) => json!({"error": e.to_string()}),
        };
        let _ = hostcalls::send_http_response(
            200,
            vec![("content-type", "application/json")],
            Some(answer.to_string().as_bytes()),
        );
        Action::Pause
    }
}

fn judge(case: &Value) -> Value {
    let bytes = |field: &str| {
        case.get(field)
            .and_then(Value::as_str)
            .and_then(|h| hex::decode(h).ok())
            .unwrap_or_default()
    };
    let Some(alg) = case
        .get("alg")
        .and_then(Value::as_str)
        .and_then(Algorithm::from_name)
    else {
        return json!({"host": "bad_alg", "wasm": false});
    };
    let key = match case.get("jwk").map(keys::parse_key) {
        Some(Ok(k)) => k,
        _ => return json!({"host": "bad_key", "wasm": false}),
    };
    let (msg, sig) = (bytes("msg"), bytes("sig"));
    let host = match host_signature::verify(&Envoy, alg, &key, &msg, &sig) {
        HostVerdict::Valid => "valid".to_owned(),
        HostVerdict::Invalid => "invalid".to_owned(),
        HostVerdict::NotOffered => "not_offered".to_owned(),
        HostVerdict::Failed(e) => format!("failed: {e}"),
    };
    json!({"host": host, "wasm": alg::verify(alg, &key.material, &msg, &sig)})
}
