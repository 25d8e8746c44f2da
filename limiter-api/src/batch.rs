//! `POST /v1/check/batch`: the checks of several requests in one call (docs/limiter.md).
//!
//! Contract: the body is `{"requests": [R1, R2, …]}`, each `Rn` a `POST /v1/check` body. The
//! limiter decides each item as `POST /v1/check` would — its windows atomically, and alone: no
//! item's answer depends on another's — and answers `200` with `{"answers": [A1, A2, …]}`, in
//! the same order, each `An` being `{"status": S, "body": B}`: the status and JSON body that
//! `POST /v1/check` would have answered for `Rn` (200 with a check response, 400 for an invalid
//! item, 503 when the store failed it). The batch as a whole is refused with 400 when it is not
//! this shape or holds no item or more than [`MAX_BATCH`].
//!
//! Why: the filter's call costs Envoy mostly for its mechanism (dispatch, wait, wake-up), not
//! its payload (docs/benchmarks.md). Under load a worker sends the checks that queued while one
//! call was in flight as one call, so calls per request fall with the load while every window
//! stays exact.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::{RequestError, MAX_BODY_BYTES};

/// The batch endpoint's path.
pub const BATCH_PATH: &str = "/v1/check/batch";
/// Most requests in one batch.
pub const MAX_BATCH: usize = 32;
/// Largest batch body the limiter reads: [`MAX_BATCH`] items of at most [`MAX_BODY_BYTES`].
pub const MAX_BATCH_BODY_BYTES: usize = MAX_BATCH * (MAX_BODY_BYTES + 1) + 64;

/// A batch as the limiter reads it: each item's bytes, parsed later as a check request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest<'a> {
    #[serde(borrow)]
    pub requests: Vec<&'a RawValue>,
}

/// One item's answer: what `POST /v1/check` would have answered.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Answer<'a> {
    pub status: u16,
    #[serde(borrow)]
    pub body: &'a RawValue,
}

/// The limiter's answer, items in request order.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchResponse<'a> {
    #[serde(borrow)]
    pub answers: Vec<Answer<'a>>,
}

impl<'a> BatchRequest<'a> {
    /// Reads a batch body; each item is left to [`crate::CheckRequest::from_json`].
    pub fn from_json(body: &'a [u8]) -> Result<BatchRequest<'a>, RequestError> {
        let batch: BatchRequest =
            serde_json::from_slice(body).map_err(|e| RequestError::Parse {
                path: ".".into(),
                message: e.to_string(),
            })?;
        if batch.requests.is_empty() || batch.requests.len() > MAX_BATCH {
            return Err(RequestError::Parse {
                path: "requests".into(),
                message: format!("must hold 1 to {MAX_BATCH} requests"),
            });
        }
        Ok(batch)
    }
}

/// The batch body for these `POST /v1/check` bodies (each already valid JSON, as the filter
/// builds them): joined as they are, not parsed again.
pub fn join<'b>(bodies: impl IntoIterator<Item = &'b [u8]>) -> Vec<u8> {
    let mut out = b"{\"requests\":[".to_vec();
    for (i, body) in bodies.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(body);
    }
    out.extend_from_slice(b"]}");
    out
}

/// Why a batch answer cannot be split.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SplitError {
    #[error("not a batch answer: {0}")]
    Malformed(String),
    #[error("{got} answers for {sent} requests")]
    Count { sent: usize, got: usize },
}

/// Each item's status and body, in request order; the answer must hold exactly `sent` items.
pub fn split(answer: &[u8], sent: usize) -> Result<Vec<(u16, &[u8])>, SplitError> {
    let parsed: BatchResponse =
        serde_json::from_slice(answer).map_err(|e| SplitError::Malformed(e.to_string()))?;
    if parsed.answers.len() != sent {
        return Err(SplitError::Count {
            sent,
            got: parsed.answers.len(),
        });
    }
    Ok(parsed
        .answers
        .into_iter()
        .map(|a| (a.status, a.body.get().as_bytes()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CheckRequest;

    #[test]
    fn joined_bodies_read_back_as_the_same_requests() {
        let a = br#"{"checks":[{"key":"{a}:x","limit":1,"window_ms":1000}]}"#;
        let b = br#"{"checks":[]}"#;
        let body = join([a.as_slice(), b.as_slice()]);
        let batch = BatchRequest::from_json(&body).unwrap();
        assert_eq!(batch.requests.len(), 2);
        let first = CheckRequest::from_json(batch.requests[0].get().as_bytes()).unwrap();
        assert_eq!(first.checks[0].key, "{a}:x");
        assert_eq!(batch.requests[1].get(), r#"{"checks":[]}"#);
    }

    #[test]
    fn a_batch_holds_one_to_max_requests() {
        assert!(BatchRequest::from_json(br#"{"requests":[]}"#).is_err());
        let many = join(std::iter::repeat_n(
            br#"{"checks":[]}"#.as_slice(),
            MAX_BATCH + 1,
        ));
        assert!(BatchRequest::from_json(&many).is_err());
        let full = join(std::iter::repeat_n(
            br#"{"checks":[]}"#.as_slice(),
            MAX_BATCH,
        ));
        assert_eq!(
            BatchRequest::from_json(&full).unwrap().requests.len(),
            MAX_BATCH
        );
        assert!(BatchRequest::from_json(br#"{"requests":[],"x":1}"#).is_err());
    }

    #[test]
    fn an_answer_splits_into_its_items_in_order_or_not_at_all() {
        let answer = br#"{"answers":[{"status":200,"body":{"allowed":true,"results":[]}},{"status":503,"body":{"detail":"store"}}]}"#;
        let items = split(answer, 2).unwrap();
        assert_eq!(
            items[0],
            (200, br#"{"allowed":true,"results":[]}"#.as_slice())
        );
        assert_eq!(items[1].0, 503);
        assert_eq!(split(answer, 3), Err(SplitError::Count { sent: 3, got: 2 }));
        assert!(matches!(split(b"{}", 0), Err(SplitError::Malformed(_))));
        assert!(matches!(split(b"[", 1), Err(SplitError::Malformed(_))));
    }
}
