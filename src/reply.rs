//! Local replies: the answers apiguard gives instead of the upstream's, as RFC 9457
//! `application/problem+json` documents.
//!
//! Every invalid token gets the very same 401 (status, headers and body), whatever the reason:
//! telling a caller which check failed would be an oracle. The reason goes to the log and the
//! counters only.

use serde_json::json;

/// A response the filter sends itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// For Envoy's response-code details (access logs), e.g. `apiguard_jwt_invalid`.
    pub details: &'static str,
}

pub const PROBLEM_JSON: &str = "application/problem+json";

impl Reply {
    fn problem(status: u16, title: &str, detail: &str, details: &'static str) -> Reply {
        let body = json!({
            "type": "about:blank",
            "title": title,
            "status": status,
            "detail": detail,
        });
        Reply {
            status,
            headers: vec![("content-type".into(), PROBLEM_JSON.into())],
            body: body.to_string().into_bytes(),
            details,
        }
    }

    fn with_header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// 401: no token where one is required.
    pub fn token_missing() -> Reply {
        Reply::problem(
            401,
            "Unauthorized",
            "A bearer token is required.",
            "apiguard_jwt_missing",
        )
        .with_header("www-authenticate", r#"Bearer realm="apiguard""#)
    }

    /// 401: a token was presented and refused, for any reason.
    pub fn token_invalid() -> Reply {
        Reply::problem(
            401,
            "Unauthorized",
            "The bearer token is not valid.",
            "apiguard_jwt_invalid",
        )
        .with_header(
            "www-authenticate",
            r#"Bearer realm="apiguard", error="invalid_token""#,
        )
    }

    /// 403: the policy denied the request; `reasons` only when the configuration exposes them.
    pub fn forbidden(reasons: Option<&[String]>) -> Reply {
        let mut r = Reply::problem(
            403,
            "Forbidden",
            "The request is not allowed.",
            "apiguard_policy_denied",
        );
        if let Some(reasons) = reasons {
            let mut body: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_default();
            body["reasons"] = json!(reasons);
            r.body = body.to_string().into_bytes();
        }
        r
    }

    /// 429: over a rate limit. The caller adds the rate-limit headers.
    /// The body is the limiter's own 429 body too (`rate_limit.call: ext_authz`), so a client
    /// sees one answer whichever way the limiter is called.
    pub fn too_many_requests(retry_after_s: u64) -> Reply {
        Reply {
            status: 429,
            headers: vec![
                ("content-type".into(), PROBLEM_JSON.into()),
                ("retry-after".into(), retry_after_s.max(1).to_string()),
            ],
            body: apiguard_limiter_api::handoff::too_many_requests_body(),
            details: "apiguard_rate_limited",
        }
    }

    /// 503: the rate limiter could not decide and the failure mode is `deny`.
    pub fn limiter_unavailable() -> Reply {
        Reply::problem(
            503,
            "Service Unavailable",
            "The rate limiter is unavailable.",
            "apiguard_limiter_unavailable",
        )
        .with_header("retry-after", "1")
    }

    /// 503: the filter cannot work at all (no compiled configuration on this worker).
    pub fn filter_unavailable() -> Reply {
        Reply::problem(
            503,
            "Service Unavailable",
            "apiguard is not ready.",
            "apiguard_unavailable",
        )
    }

    /// 400: a method-override header apiguard is configured to refuse, or overrides that do not
    /// name one method.
    pub fn bad_method_override() -> Reply {
        Reply::problem(
            400,
            "Bad Request",
            "Method-override headers are not accepted.",
            "apiguard_method_override",
        )
    }

    /// 404: no operation of the API's contract has this path (`contract`).
    pub fn unknown_operation() -> Reply {
        Reply::problem(
            404,
            "Not Found",
            "No operation of the API matches the request.",
            "apiguard_unknown_operation",
        )
    }

    /// 405: the path is declared, the method is not; `allow` lists the declared ones.
    pub fn method_not_allowed(allow: &str) -> Reply {
        Reply::problem(
            405,
            "Method Not Allowed",
            "The API does not declare this method for this path.",
            "apiguard_method_not_allowed",
        )
        .with_header("allow", allow)
    }

    /// 400: a parameter or the body breaks the contract; `violation` names where (a JSON
    /// pointer) and the keyword, never the value.
    pub fn contract_violation(violation: &str) -> Reply {
        Reply::problem(400, "Bad Request", violation, "apiguard_contract_violation")
    }

    /// 413: the body is larger than `contract.max_body_bytes`.
    pub fn body_too_large() -> Reply {
        Reply::problem(
            413,
            "Content Too Large",
            "The request body is larger than the API allows.",
            "apiguard_body_too_large",
        )
    }

    /// 411: a body without a `Content-Length`, whose size the contract cannot hold to its limit
    /// before reading it.
    pub fn length_required() -> Reply {
        Reply::problem(
            411,
            "Length Required",
            "A request body needs a Content-Length here.",
            "apiguard_length_required",
        )
    }

    /// 415: a body of a media type (or an encoding) the operation does not declare.
    pub fn unsupported_media_type() -> Reply {
        Reply::problem(
            415,
            "Unsupported Media Type",
            "The operation does not declare this content type or encoding.",
            "apiguard_unsupported_media_type",
        )
    }

    /// 400: a path apiguard cannot interpret unambiguously.
    pub fn bad_path() -> Reply {
        Reply::problem(
            400,
            "Bad Request",
            "The request path is ambiguous.",
            "apiguard_bad_path",
        )
    }
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    #[test]
    fn unauthorized_replies_follow_rfc6750() {
        let m = Reply::token_missing();
        assert_eq!(m.status, 401);
        assert!(m.headers.contains(&(
            "www-authenticate".into(),
            r#"Bearer realm="apiguard""#.into()
        )));
        let i = Reply::token_invalid();
        assert!(i
            .headers
            .iter()
            .any(|(_, v)| v.contains(r#"error="invalid_token""#)));
        let body: serde_json::Value = serde_json::from_slice(&i.body).unwrap();
        assert_eq!(body["status"], 401);
        assert_eq!(body["type"], "about:blank");
    }
}
