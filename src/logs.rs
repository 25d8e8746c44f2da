//! What the filter logs about a request, decided by the core: the glue writes each
//! [`LogLine`] at its level as it is.
//!
//! A request is named by its normalised path without the query, never by the raw `:path`: with
//! a query-parameter token source (`jwt.providers.*.from_query`), or any API that puts secrets
//! in the query, the raw path would put a bearer token in Envoy's log.

use std::borrow::Cow;

pub use crate::log_line::{Level, LogLine};

use crate::events::Event;
use crate::path::{normalize_with, MatrixParams};

/// How many bytes of a path a log line carries at most.
pub const MAX_LOGGED_PATH: usize = 256;

/// The path a log line names: the normalised path (as the decision saw it), without the query;
/// a path that does not normalise is shown up to its `?` with every byte outside printable
/// ASCII escaped. Either is cut to [`MAX_LOGGED_PATH`] bytes.
pub fn path_for_log(raw: &[u8], matrix: MatrixParams) -> String {
    let mut path = match normalize_with(raw, matrix) {
        Ok(p) => p.path,
        Err(_) => {
            let end = raw.iter().position(|b| *b == b'?').unwrap_or(raw.len());
            raw[..end].escape_ascii().to_string()
        }
    };
    if path.len() > MAX_LOGGED_PATH {
        // Both forms are ASCII, so any byte index is a char boundary.
        path.truncate(MAX_LOGGED_PATH);
        path.push('…');
    }
    path
}

/// The lines to log for a request's `events` (with the policy's deny `reasons`, if it
/// decided) on the request whose raw `:path` is `raw_path`.
pub fn log_lines(
    events: &[Event],
    reasons: Option<&[String]>,
    raw_path: &[u8],
    matrix: MatrixParams,
) -> Vec<LogLine> {
    let mut path: Option<String> = None;
    let mut path = || -> String {
        path.get_or_insert_with(|| path_for_log(raw_path, matrix))
            .clone()
    };
    let mut out = Vec::new();
    for e in events {
        let (level, text) = match e {
            Event::JwtRejected(why) => (
                Level::Debug,
                format!(
                    "apiguard: token refused ({}): {why:?} on {}",
                    why.class().name(),
                    path()
                ),
            ),
            Event::PolicyDenied | Event::PolicyDryRunDeny => {
                let reasons: Cow<'_, str> =
                    reasons.map_or(Cow::Borrowed(""), |r| Cow::Owned(r.join(",")));
                let what = if *e == Event::PolicyDryRunDeny {
                    "would deny (dry run)"
                } else {
                    "denied"
                };
                (
                    Level::Debug,
                    format!("apiguard: policy {what} {} [{reasons}]", path()),
                )
            }
            Event::PolicyFailed(f) => (
                Level::Warn,
                format!(
                    "apiguard: policy failed to decide ({}) on {}",
                    f.reason(),
                    path()
                ),
            ),
            Event::RateFailed(f) => (
                Level::Warn,
                format!("apiguard: rate limiter call failed ({})", f.name()),
            ),
            Event::PolicyShadowDisagree => (
                Level::Info,
                format!("apiguard: shadow policy disagrees on {}", path()),
            ),
            Event::ContractRefused(kind) => (
                Level::Debug,
                format!("apiguard: contract refused ({}) on {}", kind.name(), path()),
            ),
            Event::ContractWouldRefuse(kind) => (
                Level::Info,
                format!(
                    "apiguard: contract would refuse ({}) on {}",
                    kind.name(),
                    path()
                ),
            ),
            _ => continue,
        };
        out.push(LogLine { level, text });
    }
    out
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    /// Issue 27, finding 7: a token in the query never reaches a log line.
    #[test]
    fn a_logged_path_never_carries_the_query() {
        for (raw, want) in [
            (&b"/api/v1/x?access_token=SECRET"[..], "/api/v1/x"),
            (b"/api//v1/./x?access_token=SECRET&a=1", "/api/v1/x"),
            (b"/api/v1/%2fx?access_token=SECRET", "/api/v1/%2fx"),
            (b"/api/v1/\x01x?access_token=SECRET", "/api/v1/\\x01x"),
            (b"relative?access_token=SECRET", "relative"),
        ] {
            let got = path_for_log(raw, MatrixParams::Reject);
            assert_eq!(got, want);
            assert!(!got.contains("SECRET"));
        }
        let long = format!("/{}?access_token=SECRET", "a".repeat(1000));
        let got = path_for_log(long.as_bytes(), MatrixParams::Reject);
        assert_eq!(got.len(), MAX_LOGGED_PATH + '…'.len_utf8());
    }

    #[test]
    fn a_failed_limiter_call_is_a_warning_naming_the_failure() {
        use crate::ratelimit::LimiterFailure;
        let lines = log_lines(
            &[
                Event::RateFailed(LimiterFailure::Status),
                Event::RateFailurePass,
            ],
            None,
            b"/x?access_token=SECRET",
            MatrixParams::Reject,
        );
        assert_eq!(
            lines,
            [LogLine {
                level: Level::Warn,
                text: "apiguard: rate limiter call failed (status)".into()
            }]
        );
    }
}
