//! The wire contract between the filter and apiguard-limiter (`POST /v1/check`), defined once
//! and used by both sides.
//!
//! One call carries every window that applies to a request (say a burst and a sustained limit);
//! the limiter decides them atomically: when one is over its limit, none is consumed.

use serde::{Deserialize, Serialize};

pub mod batch;
pub mod handoff;
pub mod json_shape;

use json_shape::{array_for_object, Shape};

/// The check endpoint's path.
pub const CHECK_PATH: &str = "/v1/check";
/// Largest request body the limiter reads.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Most checks in one call.
pub const MAX_CHECKS: usize = 16;
/// Longest key, in bytes.
pub const MAX_KEY_BYTES: usize = 512;
/// Shortest and longest window.
pub const MIN_WINDOW_MS: u64 = 1;
pub const MAX_WINDOW_MS: u64 = 86_400_000;
/// Largest cost of one check. The `log` algorithm stores one entry per unit of cost, so the
/// bound keeps one call's work bounded.
pub const MAX_COST: u64 = 1_000;

/// `POST /v1/check` request body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckRequest {
    pub checks: Vec<Check>,
}

/// One window to check and, if every check of the call fits, to consume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Check {
    /// Who and what is counted, e.g. `{sub:u1}:route:auth`. Keys of one call must share a hash
    /// tag: the part between the first `{` and the next `}` when there is one, else the whole key.
    pub key: String,
    /// Most units admitted per window.
    pub limit: u64,
    pub window_ms: u64,
    #[serde(default = "one")]
    pub cost: u64,
    #[serde(default)]
    pub algorithm: LimitAlgorithm,
}

fn one() -> u64 {
    1
}

/// How a window slides.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitAlgorithm {
    /// Exact sliding window: one entry per admitted unit, kept for one window.
    #[default]
    Log,
    /// Sliding-window counter: the current and previous fixed windows, the previous one weighted
    /// by how much of it still overlaps the sliding window. O(1) memory per key; approximate, and
    /// its `remaining` and `retry_after_ms` err on the side of refusing.
    Counter,
}

impl LimitAlgorithm {
    /// The name on the wire (`"log"`, `"counter"`), which the limiter's keys and script use too.
    pub fn as_str(self) -> &'static str {
        match self {
            LimitAlgorithm::Log => "log",
            LimitAlgorithm::Counter => "counter",
        }
    }
}

/// `POST /v1/check` response body (status 200).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckResponse {
    /// True when every check fitted and was consumed.
    pub allowed: bool,
    /// One per check, in request order.
    pub results: Vec<CheckResult>,
}

/// The state of one window after the call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckResult {
    pub key: String,
    pub limit: u64,
    /// Units still admissible in the window now.
    pub remaining: u64,
    /// Milliseconds from now until the window holds nothing counted (the quota is whole again).
    pub reset_ms: u64,
    /// Milliseconds from now until this check's cost would fit; 0 when it fits now.
    pub retry_after_ms: u64,
}

/// Why a check request was refused (400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckError {
    #[error("checks: must not be empty")]
    NoChecks,
    #[error("checks: at most {MAX_CHECKS} per call, got {0}")]
    TooManyChecks(usize),
    #[error("checks[{0}].key: must not be empty")]
    EmptyKey(usize),
    #[error("checks[{0}].key: at most {MAX_KEY_BYTES} bytes, got {1}")]
    KeyTooLong(usize, usize),
    #[error("checks[{0}].limit: must be greater than zero")]
    ZeroLimit(usize),
    #[error("checks[{0}].cost: must be between 1 and {MAX_COST}, got {1}")]
    BadCost(usize, u64),
    #[error("checks[{0}].window_ms: must be between {MIN_WINDOW_MS} and {MAX_WINDOW_MS}, got {1}")]
    BadWindow(usize, u64),
    #[error("checks[{0}]: same key, window and algorithm as checks[{1}]")]
    Duplicate(usize, usize),
    #[error("checks[{0}].key: hash tag `{1}` differs from checks[0]'s `{2}`; keys of one call must share a hash tag")]
    TagMismatch(usize, String, String),
}

/// Why a check request body was refused (400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("{0}: must be a JSON object")]
    NotAnObject(String),
    #[error(transparent)]
    Invalid(#[from] CheckError),
}

impl CheckRequest {
    /// Parses and validates a request body strictly: unknown fields, trailing bytes and arrays
    /// standing for objects are refused, and every error names the field.
    pub fn from_json(body: &[u8]) -> Result<CheckRequest, RequestError> {
        let req: CheckRequest = parse_strict(body)?;
        const SHAPE: Shape<'static> = Shape {
            arrays: &["checks"],
            maps_of_arrays: &[],
            opaque: &[],
        };
        if let Ok(tree) = serde_json::from_slice(body) {
            if let Some(path) = array_for_object(&tree, &SHAPE) {
                return Err(RequestError::NotAnObject(path));
            }
        }
        req.validate()?;
        Ok(req)
    }

    /// Checks the bounds every limiter store relies on.
    pub fn validate(&self) -> Result<(), CheckError> {
        if self.checks.is_empty() {
            return Err(CheckError::NoChecks);
        }
        if self.checks.len() > MAX_CHECKS {
            return Err(CheckError::TooManyChecks(self.checks.len()));
        }
        let tag0 = hash_tag(&self.checks[0].key);
        for (i, c) in self.checks.iter().enumerate() {
            if c.key.is_empty() {
                return Err(CheckError::EmptyKey(i));
            }
            if c.key.len() > MAX_KEY_BYTES {
                return Err(CheckError::KeyTooLong(i, c.key.len()));
            }
            if c.limit == 0 {
                return Err(CheckError::ZeroLimit(i));
            }
            if c.cost == 0 || c.cost > MAX_COST {
                return Err(CheckError::BadCost(i, c.cost));
            }
            if !(MIN_WINDOW_MS..=MAX_WINDOW_MS).contains(&c.window_ms) {
                return Err(CheckError::BadWindow(i, c.window_ms));
            }
            let tag = hash_tag(&c.key);
            if tag != tag0 {
                return Err(CheckError::TagMismatch(i, tag.to_owned(), tag0.to_owned()));
            }
            // Two checks of one window would each be judged against the same count and then
            // both consumed, admitting more than the limit.
            if let Some(j) = self.checks[..i].iter().position(|d| {
                d.key == c.key && d.window_ms == c.window_ms && d.algorithm == c.algorithm
            }) {
                return Err(CheckError::Duplicate(i, j));
            }
        }
        Ok(())
    }
}

/// One JSON value of type `T` and nothing after it; errors name the field (serde's own errors
/// name only a line and column).
pub(crate) fn parse_strict<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, RequestError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| RequestError::Parse {
        path: e.path().to_string(),
        message: e.inner().to_string(),
    })?;
    de.end().map_err(|e| RequestError::Parse {
        path: ".".into(),
        message: e.to_string(),
    })?;
    Ok(value)
}

/// The key's hash tag, as Redis Cluster reads it: the text between the first `{` and the first
/// `}` after it, if that is not empty; otherwise the whole key.
pub fn hash_tag(key: &str) -> &str {
    if let Some(open) = key.find('{') {
        if let Some(len) = key[open + 1..].find('}') {
            if len > 0 {
                return &key[open + 1..open + 1 + len];
            }
        }
    }
    key
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    fn check(key: &str) -> Check {
        Check {
            key: key.into(),
            limit: 10,
            window_ms: 1000,
            cost: 1,
            algorithm: LimitAlgorithm::Log,
        }
    }

    #[test]
    fn defaults_and_wire_names() {
        let r: CheckRequest =
            serde_json::from_str(r#"{"checks":[{"key":"k","limit":10,"window_ms":60000}]}"#)
                .unwrap();
        assert_eq!(r.checks[0].cost, 1);
        assert_eq!(r.checks[0].algorithm, LimitAlgorithm::Log);
        let c: Check = serde_json::from_str(
            r#"{"key":"k","limit":1,"window_ms":1,"cost":2,"algorithm":"counter"}"#,
        )
        .unwrap();
        assert_eq!(c.algorithm, LimitAlgorithm::Counter);
        assert!(
            serde_json::from_str::<Check>(r#"{"key":"k","limit":1,"window_ms":1,"x":1}"#).is_err()
        );
    }

    #[test]
    fn from_json_is_strict() {
        let ok = br#"{"checks":[{"key":"k","limit":1,"window_ms":5}]}"#;
        assert_eq!(CheckRequest::from_json(ok).unwrap().checks[0].window_ms, 5);
        for (body, want) in [
            (
                &br#"[[{"key":"k","limit":1,"window_ms":5}]]"#[..],
                "(root): must be a JSON object",
            ),
            (
                br#"{"checks":[["k",1,5]]}"#,
                "checks[0]: must be a JSON object",
            ),
            (br#"{"checks":[]} x"#, "trailing characters"),
            (
                br#"{"checks":[{"key":"k","limit":"1","window_ms":5}]}"#,
                "checks[0].limit: invalid type",
            ),
            (br#"{"checks":[]}"#, "checks: must not be empty"),
        ] {
            let e = CheckRequest::from_json(body).unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
        }
    }

    #[test]
    fn hash_tags_follow_redis_cluster() {
        assert_eq!(hash_tag("{user1}:a"), "user1");
        assert_eq!(hash_tag("x{user1}y{z}"), "user1");
        assert_eq!(hash_tag("{}user"), "{}user");
        assert_eq!(hash_tag("no-tag"), "no-tag");
        assert_eq!(hash_tag("open{only"), "open{only");
    }

    #[test]
    fn validation_names_the_check() {
        let ok = CheckRequest {
            checks: vec![check("{u}:a"), check("{u}:b")],
        };
        assert_eq!(ok.validate(), Ok(()));
        let mut bad = ok.clone();
        bad.checks[1].key = "{v}:b".into();
        assert!(matches!(
            bad.validate(),
            Err(CheckError::TagMismatch(1, _, _))
        ));
        let mut bad = ok.clone();
        bad.checks[1].window_ms = MAX_WINDOW_MS + 1;
        assert_eq!(
            bad.validate().unwrap_err().to_string(),
            "checks[1].window_ms: must be between 1 and 86400000, got 86400001"
        );
        let mut bad = ok.clone();
        bad.checks[1].key = "{u}:a".into();
        assert_eq!(bad.validate(), Err(CheckError::Duplicate(1, 0)));
        assert_eq!(
            CheckRequest { checks: vec![] }.validate(),
            Err(CheckError::NoChecks)
        );
    }
}
