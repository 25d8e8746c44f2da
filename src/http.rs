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

/// The query parameter through which Symfony, Laravel and Spring's `HiddenHttpMethodFilter`
/// let a client replace the method (they read it from the query as well as from a form body).
pub const METHOD_OVERRIDE_PARAM: &str = "_method";

/// The only method on which an override is honoured: the frameworks that apply one (Rails,
/// Express's `method-override`, Symfony, Laravel, ASP.NET Core) apply it to POST alone.
pub const OVERRIDABLE_METHOD: &str = "POST";

/// `request.method_override` in the configuration.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum MethodOverride {
    /// A request carrying a method override (header or `_method` query parameter) is refused
    /// (400): the default, since apiguard cannot know whether the backend honours it.
    #[default]
    Reject,
    /// On a POST, the policy sees the overridden method (upper-cased, as the frameworks that
    /// honour overrides read it); the request is forwarded as sent. An override on any other
    /// method is refused (400): no framework applies it there, so judging the override would
    /// let a `DELETE` pose as a `GET`.
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
    #[error("the request carries a method override")]
    OverrideRefused,
    #[error("the method overrides are repeated, disagree or are not a method")]
    OverrideAmbiguous,
    #[error("the request carries a method override on a method other than POST")]
    OverrideNotOnPost,
}

/// How a decoded query parameter name reads to a backend that takes `_method` overrides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ParamName {
    Other,
    /// `_method`: ASCII case folded, and ` `, `.` and `[` read as `_` (PHP turns all three
    /// into `_` in `$_GET`'s names, so `?.method=DELETE` reaches Symfony as `_method`).
    Override,
    /// `_method[…]`: an array to PHP, a value nobody can read unambiguously.
    OverrideArray,
}

/// Whether a query parameter, by its decoded name, is a method override (`_method` or
/// `_method[…]` as a backend reads it): what [`effective_method`] must be given.
pub fn names_method_override(name: &str) -> bool {
    param_name(name) != ParamName::Other
}

fn param_name(name: &str) -> ParamName {
    let want = METHOD_OVERRIDE_PARAM.as_bytes();
    let b = name.as_bytes();
    let folded = |i: usize| match b[i] {
        b' ' | b'.' | b'[' => b'_',
        c => c.to_ascii_lowercase(),
    };
    if b.len() < want.len() || (0..want.len()).any(|i| folded(i) != want[i]) {
        return ParamName::Other;
    }
    match b.get(want.len()) {
        None => ParamName::Override,
        Some(b'[') => ParamName::OverrideArray,
        Some(_) => ParamName::Other,
    }
}

/// The method the backend will act on: `:method`, or under [`MethodOverride::Honor`] on a POST
/// the one value every method override agrees on (upper-cased). The overrides are the
/// [`METHOD_OVERRIDE_HEADERS`] and the query parameters in `params`: each parameter whose
/// decoded name [`names_method_override`] accepts, with its decoded value (`None`: it does not
/// decode), as `path::params_where` gives them. Under [`MethodOverride::Reject`] any override refuses
/// the request; under either mode an override on a method other than POST does.
pub fn effective_method<'a>(
    headers: &Headers<'a>,
    params: &[(String, Option<String>)],
    mode: MethodOverride,
) -> Result<Cow<'a, str>, MethodError> {
    // The one value every override agrees on (ASCII case folded); `consistent` turns false
    // at the first that disagrees or does not decode.
    let mut over: Option<Cow<'a, [u8]>> = None;
    let mut any = false;
    let mut consistent = true;
    let mut see = |value: Option<Cow<'a, [u8]>>| {
        any = true;
        match (value, &over) {
            (Some(v), Some(prev)) => consistent &= prev.eq_ignore_ascii_case(&v),
            (Some(v), None) => over = Some(v),
            (None, _) => consistent = false,
        }
    };
    for (name, value) in headers.iter() {
        if METHOD_OVERRIDE_HEADERS.iter().any(|h| same_header(h, name)) {
            see(Some(Cow::Borrowed(value)));
        }
    }
    for (name, value) in params {
        match param_name(name) {
            ParamName::Other => {}
            ParamName::Override => see(value.as_ref().map(|v| Cow::Owned(v.as_bytes().to_vec()))),
            ParamName::OverrideArray => see(None),
        }
    }
    let method = headers
        .get(":method")
        .and_then(|v| std::str::from_utf8(v).ok())
        .unwrap_or("");
    if !any {
        return Ok(Cow::Borrowed(method));
    }
    if mode == MethodOverride::Reject {
        return Err(MethodError::OverrideRefused);
    }
    if method != OVERRIDABLE_METHOD {
        return Err(MethodError::OverrideNotOnPost);
    }
    match over {
        // An RFC 9110 method is a token; anything else (`GET, DELETE`, spaces) is refused.
        Some(v) if consistent && !v.is_empty() && v.iter().all(|b| b.is_ascii_alphabetic()) => {
            Ok(Cow::Owned(String::from_utf8_lossy(&v).to_ascii_uppercase()))
        }
        _ => Err(MethodError::OverrideAmbiguous),
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

    fn method(
        pairs: &[(&str, &str)],
        query: &str,
        mode: MethodOverride,
    ) -> Result<String, MethodError> {
        let l = list(pairs);
        let params =
            crate::path::params_where((!query.is_empty()).then_some(query), names_method_override);
        effective_method(&Headers::new(&l), &params, mode).map(|m| m.into_owned())
    }

    #[test]
    fn method_overrides_are_refused_or_honoured() {
        use MethodError::*;
        use MethodOverride::*;
        fn post<'a>(h: &'a str, v: &'a str) -> [(&'a str, &'a str); 2] {
            [(":method", "POST"), (h, v)]
        }
        for mode in [Reject, Honor] {
            assert_eq!(
                method(&[(":method", "POST")], "a=1", mode).as_deref(),
                Ok("POST")
            );
        }
        type Case<'a> = (
            &'a [(&'a str, &'a str)],
            &'a str,
            Result<&'a str, MethodError>,
        );
        let cases: [Case; 6] = [
            (&post("x-http-method-override", "delete"), "", Ok("DELETE")),
            (&post("x_method_override", "DELETE"), "", Ok("DELETE")),
            (
                &post("x-http-method", "GET, DELETE"),
                "",
                Err(OverrideAmbiguous),
            ),
            (
                &[
                    (":method", "POST"),
                    ("x-http-method", "DELETE"),
                    ("x-method-override", "PUT"),
                ],
                "",
                Err(OverrideAmbiguous),
            ),
            (
                &post("x-http-method", "DELETE"),
                "_method=put",
                Err(OverrideAmbiguous),
            ),
            (
                &post("x-http-method", "DELETE"),
                "_method=delete",
                Ok("DELETE"),
            ),
        ];
        for (headers, query, honoured) in cases {
            assert_eq!(
                method(headers, query, Reject),
                Err(OverrideRefused),
                "{headers:?}"
            );
            assert_eq!(
                method(headers, query, Honor).as_deref().map_err(|e| *e),
                honoured,
                "{headers:?} {query}"
            );
        }
    }

    /// Issue 27, finding 1: an override is honoured on POST alone, as the frameworks that apply
    /// one do; on any other method it is refused in both modes, so a `DELETE` cannot be judged
    /// as the `GET` it claims to be.
    #[test]
    fn an_override_on_a_method_other_than_post_is_refused_in_both_modes() {
        for (m, h, v) in [
            ("DELETE", "x-http-method-override", "GET"),
            ("PUT", "X-HTTP-Method", "HEAD"),
            ("TRACE", "x-http-method-override", "GET"),
            ("GET", "x-method-override", "GET"),
            ("post", "x-http-method-override", "GET"),
        ] {
            let pairs = [(":method", m), (h, v)];
            assert_eq!(
                method(&pairs, "", MethodOverride::Reject),
                Err(MethodError::OverrideRefused)
            );
            assert_eq!(
                method(&pairs, "", MethodOverride::Honor),
                Err(MethodError::OverrideNotOnPost),
                "{m} {h}"
            );
            assert_eq!(
                method(
                    &[(":method", m)],
                    &format!("_method={v}"),
                    MethodOverride::Honor
                ),
                Err(MethodError::OverrideNotOnPost)
            );
        }
    }

    /// Issue 27, finding 5: `_method` in the query (any case, any spelling a backend folds to
    /// it) is an override like the headers.
    #[test]
    fn a_method_query_parameter_is_an_override() {
        let post = [(":method", "POST")];
        for query in [
            "_method=DELETE",
            "a=1&_METHOD=delete",
            "_Method=Delete&b",
            "%5Fmethod=DELETE",
            "%5fMETHOD=delete",
            ".method=DELETE",
            "+method=DELETE",
            "_method%5B%5D=DELETE",
        ] {
            assert_eq!(
                method(&post, query, MethodOverride::Reject),
                Err(MethodError::OverrideRefused),
                "{query}"
            );
        }
        for query in [
            "_method=DELETE",
            "a=1&_METHOD=delete",
            "%5Fmethod=Delete",
            "_method=delete&_method=DELETE",
        ] {
            assert_eq!(
                method(&post, query, MethodOverride::Honor).as_deref(),
                Ok("DELETE"),
                "{query}"
            );
        }
        for query in [
            "_method=DELETE&_method=GET",
            "_method=%FF",
            "_method=",
            "_method%5B%5D=DELETE",
            "_method=GET%20DELETE",
        ] {
            assert_eq!(
                method(&post, query, MethodOverride::Honor),
                Err(MethodError::OverrideAmbiguous),
                "{query}"
            );
        }
        for query in [
            "method=DELETE",
            "x_method=DELETE",
            "_methods=DELETE",
            "_method_=DELETE",
        ] {
            for mode in [MethodOverride::Reject, MethodOverride::Honor] {
                assert_eq!(method(&post, query, mode).as_deref(), Ok("POST"), "{query}");
            }
        }
    }
}
