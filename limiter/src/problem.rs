//! Error answers: RFC 9457 problem documents, for every route of the service.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

/// An RFC 9457 problem document.
pub fn problem(status: StatusCode, detail: &str) -> Response {
    let mut res = (status, Json(problem_body(status, detail))).into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    res
}

/// An RFC 9457 problem document.
fn problem_body(status: StatusCode, detail: &str) -> serde_json::Value {
    json!({
        "type": "about:blank",
        "title": status.canonical_reason().unwrap_or("Error"),
        "status": status.as_u16(),
        "detail": detail,
    })
}

pub(crate) fn problem_json(status: StatusCode, detail: &str) -> String {
    problem_body(status, detail).to_string()
}

/// 503 with `Retry-After: 1`: the caller applies its failure mode.
pub(crate) fn unavailable(detail: &str) -> Response {
    let mut res = problem(StatusCode::SERVICE_UNAVAILABLE, detail);
    res.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    res
}
