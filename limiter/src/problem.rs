//! The service's one error type: every refusal, on every HTTP route, is a [`ProblemDetails`],
//! which turns itself into an RFC 9457 problem document (and, for a batch item, into the status
//! and body the single route would have answered).

use std::fmt;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// An error answer: its status and what went wrong. A 503 carries `Retry-After: 1`: the caller
/// applies its failure mode and may ask again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProblemDetails {
    pub status: StatusCode,
    pub detail: String,
}

impl ProblemDetails {
    pub fn new(status: StatusCode, detail: impl Into<String>) -> ProblemDetails {
        ProblemDetails {
            status,
            detail: detail.into(),
        }
    }

    /// 400: the request cannot be read.
    pub fn bad_request(detail: impl Into<String>) -> ProblemDetails {
        ProblemDetails::new(StatusCode::BAD_REQUEST, detail)
    }

    /// 503: the store failed or the service is at a limit; never "allowed".
    pub fn unavailable(detail: impl Into<String>) -> ProblemDetails {
        ProblemDetails::new(StatusCode::SERVICE_UNAVAILABLE, detail)
    }

    /// The problem document, as JSON text.
    pub fn body(&self) -> String {
        json!({
            "type": "about:blank",
            "title": self.status.canonical_reason().unwrap_or("Error"),
            "status": self.status.as_u16(),
            "detail": self.detail,
        })
        .to_string()
    }
}

impl fmt::Display for ProblemDetails {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.status, self.detail)
    }
}

impl IntoResponse for ProblemDetails {
    fn into_response(self) -> Response {
        let mut res = (self.status, self.body()).into_response();
        let h = res.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        res
    }
}
