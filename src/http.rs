//! The HTTP vocabulary every stage shares: request headers as the host gives them, the changes
//! a stage may make, which header names apiguard may set, how names compare the way backends
//! read them, and which method a request really asks for. A low module: it imports no stage.

use std::borrow::Cow;

/// Request headers as the host gave them: lowercase names, values as raw bytes (a value that
/// is not UTF-8 must not be able to crash anything).
#[derive(Debug, Clone, Copy)]
pub struct Headers<'a> {
    list: &'a [(String, Vec<u8>)],
}

impl<'a> Headers<'a> {
    pub fn new(list: &'a [(String, Vec<u8>)]) -> Self {
        Headers { list }
    }

    /// Every value of a header, in order.
    pub fn all(&self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.list
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    /// The first value of a header.
    pub fn get(&self, name: &'a str) -> Option<&'a [u8]> {
        self.all(name).next()
    }

    /// Every header, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&'a str, &'a [u8])> + 'a {
        self.list.iter().map(|(n, v)| (n.as_str(), v.as_slice()))
    }
}

/// A change to the request before it goes upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderOp {
    /// Remove every value of the header.
    Remove(String),
    /// Replace every value of the header with this one.
    Set(String, String),
}

/// Headers the filter never sets upstream (from claims or from a policy). Hop-by-hop headers
/// would be dropped or misread by Envoy, and overwriting credentials or routing headers from a
/// claim or a policy output would be a confused-deputy bug.
const RESERVED_HEADERS: &[&str] = &[
    "authorization",
    "cookie",
    "host",
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "content-length",
];

/// Whether the filter may set this header upstream: a lowercase name (letters, digits, `-`,
/// `_`; so no pseudo-header) that is not reserved.
pub fn is_settable_header(name: &str) -> bool {
    is_header_name(name) && !RESERVED_HEADERS.contains(&name)
}

pub fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// Headers through which some frameworks let a client replace the request's method (Rails,
/// Express's `method-override`, Symfony, Spring's `HiddenHttpMethodFilter` family). Compared by
/// [`same_header`], so `x_http_method_override` counts too.
pub const METHOD_OVERRIDE_HEADERS: [&str; 3] = [
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// `request.method_override` in the configuration.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum MethodOverride {
    /// A request carrying a method-override header is refused (400): the default, since apiguard
    /// cannot know whether the backend honours it.
    #[default]
    Reject,
    /// The policy sees the overridden method (upper-cased, as the frameworks that honour these
    /// headers read it); the request is forwarded as sent.
    Honor,
}

/// Whether two header names are the same header to a backend: ASCII case folded, and `_` read
/// as `-` (CGI, WSGI, Rack and PHP turn both into `HTTP_X_USER_ID`).
pub fn same_header(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).all(|(x, y)| fold(x) == fold(y))
}

fn fold(b: u8) -> u8 {
    match b {
        b'_' => b'-',
        b => b.to_ascii_lowercase(),
    }
}

/// Why a request's method cannot be judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MethodError {
    #[error("the request carries a method-override header")]
    OverrideRefused,
    #[error("the method-override headers are repeated, disagree or are not a method")]
    OverrideAmbiguous,
}

/// The method the backend will act on: `:method`, or under [`MethodOverride::Honor`] the one
/// value every method-override header agrees on (upper-cased). Under
/// [`MethodOverride::Reject`] any override header refuses the request.
pub fn effective_method<'a>(
    headers: &Headers<'a>,
    mode: MethodOverride,
) -> Result<Cow<'a, str>, MethodError> {
    let mut over: Option<&[u8]> = None;
    for (name, value) in headers.iter() {
        if !METHOD_OVERRIDE_HEADERS.iter().any(|h| same_header(h, name)) {
            continue;
        }
        if mode == MethodOverride::Reject {
            return Err(MethodError::OverrideRefused);
        }
        match over {
            Some(prev) if !prev.eq_ignore_ascii_case(value) => {
                return Err(MethodError::OverrideAmbiguous)
            }
            _ => over = Some(value),
        }
    }
    let method = headers
        .get(":method")
        .and_then(|v| std::str::from_utf8(v).ok())
        .unwrap_or("");
    match over {
        None => Ok(Cow::Borrowed(method)),
        // An RFC 9110 method is a token; anything else (`GET, DELETE`, spaces) is refused.
        Some(v) if !v.is_empty() && v.iter().all(|b| b.is_ascii_alphabetic()) => {
            Ok(Cow::Owned(String::from_utf8_lossy(v).to_ascii_uppercase()))
        }
        Some(_) => Err(MethodError::OverrideAmbiguous),
    }
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    fn list(pairs: &[(&str, &str)]) -> Vec<(String, Vec<u8>)> {
        pairs
            .iter()
            .map(|(n, v)| ((*n).to_owned(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn header_names_compare_as_backends_read_them() {
        assert!(same_header("x-user-id", "X_User_Id"));
        assert!(same_header("x_user_id", "x-user-id"));
        assert!(!same_header("x-user-id", "x-user-ids"));
        assert!(!same_header("x-user-id", "y-user-id"));
    }

    #[test]
    fn method_overrides_are_refused_or_honoured() {
        let plain = list(&[(":method", "POST")]);
        let over = list(&[(":method", "POST"), ("x-http-method-override", "delete")]);
        let under = list(&[(":method", "POST"), ("x_method_override", "DELETE")]);
        let two = list(&[
            (":method", "POST"),
            ("x-http-method", "DELETE"),
            ("x-method-override", "PUT"),
        ]);
        let junk = list(&[(":method", "POST"), ("x-http-method", "GET, DELETE")]);
        let m = |l: &Vec<(String, Vec<u8>)>, mode| {
            effective_method(&Headers::new(l), mode).map(|m| m.into_owned())
        };
        for mode in [MethodOverride::Reject, MethodOverride::Honor] {
            assert_eq!(m(&plain, mode).as_deref(), Ok("POST"));
        }
        for l in [&over, &under, &two, &junk] {
            assert_eq!(
                m(l, MethodOverride::Reject),
                Err(MethodError::OverrideRefused)
            );
        }
        assert_eq!(m(&over, MethodOverride::Honor).as_deref(), Ok("DELETE"));
        assert_eq!(m(&under, MethodOverride::Honor).as_deref(), Ok("DELETE"));
        assert_eq!(
            m(&two, MethodOverride::Honor),
            Err(MethodError::OverrideAmbiguous)
        );
        assert_eq!(
            m(&junk, MethodOverride::Honor),
            Err(MethodError::OverrideAmbiguous)
        );
    }
}
