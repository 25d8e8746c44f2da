//! Request path normalisation, so that path-based rules (which prefixes need a token, which
//! resource a request names) see the path the upstream will act on, not a disguise of it.
//!
//! Steps: split off the query; decode percent-encoded unreserved characters (RFC 3986 §2.3,
//! so `%2e` is `.` and `%41` is `A`) and upper-case the hex of the others; merge repeated
//! slashes; remove dot segments (RFC 3986 §5.2.4), never climbing above the root.
//!
//! A path that stays ambiguous is refused rather than guessed at: an encoded `/` or `\` (servers
//! disagree on whether it separates segments), a raw `\`, invalid percent-encoding, control or
//! non-ASCII bytes, or a path that does not start with `/`.
//!
//! Path parameters (`;` in a segment, raw or as `%3B`) are refused too unless the operator asks
//! for [`MatrixParams::Strip`]: Tomcat, Jetty and Spring drop `;…` up to the next `/` before
//! routing, so `/tenants;x/globex` and `/acme/..;/globex` reach a backend as `/tenants/globex`
//! and `/globex` while a plain reading sees other paths. In strip mode every decision is made on
//! the path with the parameters removed (what such a backend routes); the request is forwarded
//! as sent.
//!
//! Matching against configured prefixes and templates is ASCII-case-insensitive
//! ([`prefix_matches`]): many frameworks route `/API/V1/Admin` like `/api/v1/admin`, so a rule
//! written in one spelling must hold for every spelling (docs/security.md).

use std::borrow::Cow;

/// A normalised path and the untouched query string (without `?`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NormalizedPath {
    pub path: String,
    pub query: Option<String>,
}

impl NormalizedPath {
    /// The path ASCII-lower-cased: what policies match prefixes on (`input.request.lower_path`,
    /// and the compiled pack), as apiguard's own prefix rules match case-insensitively. Borrowed
    /// when the path is lowercase already, as most are.
    pub fn lower(&self) -> Cow<'_, str> {
        if self.path.bytes().any(|b| b.is_ascii_uppercase()) {
            Cow::Owned(self.path.to_ascii_lowercase())
        } else {
            Cow::Borrowed(&self.path)
        }
    }
}

/// What to do with path parameters (`;` in a segment, raw or percent-encoded):
/// `request.matrix_params` in the configuration.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum MatrixParams {
    /// Refuse the request (400): the default, since backends disagree on what `;` means.
    #[default]
    Reject,
    /// Decide on the path with every segment's `;…` removed, as Tomcat, Jetty and Spring route.
    Strip,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the path does not start with '/'")]
    NotAbsolute,
    #[error("the path has invalid percent-encoding")]
    BadEncoding,
    #[error("the path has an encoded '/' or '\\'")]
    EncodedSeparator,
    #[error("the path has a backslash")]
    Backslash,
    #[error("the path has control or non-ASCII bytes")]
    BadByte,
    #[error("the path has a ';' parameter")]
    MatrixParam,
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Normalises a raw `:path` value, refusing path parameters (the default), for tests.
#[cfg(test)]
pub fn normalize(raw: &[u8]) -> Result<NormalizedPath, PathError> {
    normalize_with(raw, MatrixParams::Reject)
}

/// Normalises a raw `:path` value, treating path parameters as `matrix` says.
pub fn normalize_with(raw: &[u8], matrix: MatrixParams) -> Result<NormalizedPath, PathError> {
    let (path, query) = match raw.iter().position(|b| *b == b'?') {
        Some(i) => (&raw[..i], Some(&raw[i + 1..])),
        None => (raw, None),
    };
    if path.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    let path = if already_normal(path) {
        String::from_utf8(path.to_vec()).map_err(|_| PathError::BadByte)?
    } else {
        normalize_path(path, matrix)?
    };
    let query = match query {
        Some(q) if q.iter().all(|b| (0x21..=0x7e).contains(b)) => {
            Some(q.iter().map(|b| char::from(*b)).collect())
        }
        Some(_) => return Err(PathError::BadByte),
        None => None,
    };
    Ok(NormalizedPath { path, query })
}

/// Whether [`normalize_path`] would return `path` unchanged: printable ASCII without `%`, `\`
/// or `;`, no empty segment but a trailing one, no `.` or `..` segment. Most request paths are
/// like that, and this check is cheaper than rebuilding them (it runs on every request).
fn already_normal(path: &[u8]) -> bool {
    path.iter()
        .all(|b| (0x21..=0x7e).contains(b) && !matches!(b, b'%' | b'\\' | b';'))
        && !path.windows(2).any(|w| w == b"//")
        && !path
            .split(|b| *b == b'/')
            .any(|seg| seg == b"." || seg == b"..")
}

/// The general case: decode, check, drop or refuse path parameters, and remove dot segments
/// from an absolute path. Every byte is checked, those of a dropped parameter too.
fn normalize_path(path: &[u8], matrix: MatrixParams) -> Result<String, PathError> {
    let mut decoded = String::with_capacity(path.len());
    // Inside a `;…` parameter being dropped, up to the next raw `/`.
    let mut in_param = false;
    let mut i = 0;
    while i < path.len() {
        let b = path[i];
        let is_param = b == b';'
            || (b == b'%'
                && path.get(i + 1) == Some(&b'3')
                && matches!(path.get(i + 2), Some(b'b' | b'B')));
        if is_param || in_param {
            if matrix == MatrixParams::Reject {
                return Err(PathError::MatrixParam);
            }
            in_param = true;
        }
        if b == b'/' {
            in_param = false;
        }
        let start = decoded.len();
        match b {
            b'%' => {
                let (h, l) = match (
                    path.get(i + 1).copied().and_then(hex_val),
                    path.get(i + 2).copied().and_then(hex_val),
                ) {
                    (Some(h), Some(l)) => (h, l),
                    _ => return Err(PathError::BadEncoding),
                };
                let v = h << 4 | l;
                if v == b'/' || v == b'\\' {
                    return Err(PathError::EncodedSeparator);
                }
                if is_unreserved(v) {
                    decoded.push(char::from(v));
                } else {
                    decoded.push('%');
                    decoded.push(char::from(b"0123456789ABCDEF"[usize::from(h)]));
                    decoded.push(char::from(b"0123456789ABCDEF"[usize::from(l)]));
                }
                i += 3;
            }
            b'\\' => return Err(PathError::Backslash),
            0x21..=0x7e => {
                decoded.push(char::from(b));
                i += 1;
            }
            _ => return Err(PathError::BadByte),
        }
        if in_param {
            decoded.truncate(start);
        }
    }
    Ok(remove_dot_segments(&decoded))
}

/// Merges empty segments and resolves `.` and `..`; the result starts with `/`, and keeps a
/// trailing `/` when the input's last segment was empty, `.` or `..`.
fn remove_dot_segments(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let mut trailing_slash = false;
    for (i, seg) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        match *seg {
            "" | "." => trailing_slash = last,
            ".." => {
                out.pop();
                trailing_slash = last;
            }
            s => {
                out.push(s);
                trailing_slash = false;
            }
        }
    }
    let mut p = String::with_capacity(path.len());
    for s in &out {
        p.push('/');
        p.push_str(s);
    }
    if p.is_empty() || trailing_slash {
        p.push('/');
    }
    p
}

/// Whether `prefix` covers `path` on a segment boundary, ASCII-case-insensitively: `/api`
/// covers `/api`, `/API/x` and `/api/x` but not `/apix`; a prefix ending in `/` covers
/// everything under it.
pub fn prefix_matches(prefix: &str, path: &str) -> bool {
    let (p, s) = (prefix.as_bytes(), path.as_bytes());
    match (s.get(..p.len()), s.get(p.len()..)) {
        (Some(head), Some(rest)) if head.eq_ignore_ascii_case(p) => {
            p.last() == Some(&b'/') || rest.is_empty() || rest.first() == Some(&b'/')
        }
        _ => false,
    }
}

/// Why a query parameter could not be read unambiguously.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error("the parameter appears more than once")]
    Repeated,
    #[error("the parameter does not decode to UTF-8")]
    NotUtf8,
}

/// The value of query parameter `name`, percent-decoded.
pub fn query_param(query: &str, name: &str) -> Result<Option<String>, QueryError> {
    let mut found = None;
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if form_decode(k).as_deref() == Some(name) {
            if found.is_some() {
                return Err(QueryError::Repeated);
            }
            found = Some(form_decode(v).ok_or(QueryError::NotUtf8)?);
        }
    }
    Ok(found)
}

/// Every parameter of `query` whose decoded name `wanted` accepts, in order: its name (decoded
/// lossily, as a lenient parser would read it: see [`form_decode_lossy`]) and its decoded value
/// (`None` when it does not decode to UTF-8). A parameter without `=` has the value `""`.
pub fn params_where(
    query: Option<&str>,
    wanted: impl Fn(&str) -> bool,
) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    for pair in query.unwrap_or("").split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        // On the per-request path: a name with nothing to decode is asked as it is, so only
        // the parameters `wanted` accepts (rarely any) cost an allocation.
        let name = if k.bytes().any(|b| b == b'%' || b == b'+') {
            Cow::Owned(form_decode_lossy(k).0)
        } else {
            Cow::Borrowed(k)
        };
        if wanted(&name) {
            out.push((name.into_owned(), form_decode(v)));
        }
    }
    out
}

/// `application/x-www-form-urlencoded` decoding: `+` is a space, `%XX` a byte; `None` for bad
/// escapes or bytes that are not UTF-8.
pub fn form_decode(s: &str) -> Option<String> {
    decode(s, true)
}

/// Percent-decoding of a path segment: `%XX` a byte, `+` itself; `None` for bad escapes or
/// bytes that are not UTF-8.
pub fn percent_decode(s: &str) -> Option<String> {
    decode(s, false)
}

fn decode(s: &str, plus_is_space: bool) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let h = hex_val(*b.get(i + 1)?)?;
                let l = hex_val(*b.get(i + 2)?)?;
                out.push(h << 4 | l);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// [`form_decode`] that never fails: a bad escape stays as written and bytes that are not
/// UTF-8 become U+FFFD. The flag says whether anything was kept or replaced that way.
pub fn form_decode_lossy(s: &str) -> (String, bool) {
    if let Some(clean) = form_decode(s) {
        return (clean, false);
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let escape = match (b[i], b.get(i + 1), b.get(i + 2)) {
            (b'%', Some(h), Some(l)) => hex_val(*h).zip(hex_val(*l)),
            _ => None,
        };
        match (escape, b[i]) {
            (Some((h, l)), _) => {
                out.push(h << 4 | l);
                i += 3;
            }
            (None, b'+') => {
                out.push(b' ');
                i += 1;
            }
            (None, c) => {
                out.push(c);
                i += 1;
            }
        }
    }
    (String::from_utf8_lossy(&out).into_owned(), true)
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    fn n(p: &str) -> Result<String, PathError> {
        normalize(p.as_bytes()).map(|n| n.path)
    }

    /// The fast path gives exactly what the general one gives: every absolute path of up to
    /// four segments drawn from pieces that exercise each rule.
    #[test]
    fn the_fast_path_agrees_with_the_general_one() {
        let pieces = [
            "", "a", "B", ".", "..", "x.y", "...", "%2e", "%41", "%7e", "~", "a%20b", "\\", "%2F",
            "-_", "a;x",
        ];
        let mut checked = 0;
        let mut fast = 0;
        let mut stack: Vec<String> = vec![String::new()];
        for _ in 0..4 {
            let mut next = Vec::new();
            for prefix in &stack {
                for p in pieces {
                    let path = format!("{prefix}/{p}");
                    let general = normalize_path(path.as_bytes(), MatrixParams::Reject);
                    if already_normal(path.as_bytes()) {
                        fast += 1;
                        assert_eq!(general.as_deref(), Ok(path.as_str()), "{path}");
                    }
                    assert_eq!(
                        normalize(path.as_bytes()).map(|n| n.path),
                        general,
                        "{path}"
                    );
                    checked += 1;
                    next.push(path);
                }
            }
            stack = next;
        }
        assert!(
            checked > 50_000 && fast > 1_000,
            "{checked} checked, {fast} fast"
        );
    }

    #[test]
    fn normalises_disguises() {
        for (raw, want) in [
            ("/", "/"),
            ("/a/b", "/a/b"),
            ("//a///b", "/a/b"),
            ("/a/./b", "/a/b"),
            ("/a/../b", "/b"),
            ("/../../etc", "/etc"),
            ("/a/%2e%2e/b", "/b"),
            ("/a/%2E/b", "/a/b"),
            ("/%61%70%69", "/api"),
            ("/a/b/", "/a/b/"),
            ("/a/b/..", "/a/"),
            ("/a/%7e", "/a/~"),
            ("/a/%3a", "/a/%3A"),
            ("/a%20b", "/a%20b"),
        ] {
            assert_eq!(n(raw).as_deref(), Ok(want), "{raw}");
        }
    }

    #[test]
    fn refuses_ambiguity() {
        assert_eq!(n("/a%2Fb"), Err(PathError::EncodedSeparator));
        assert_eq!(n("/a%2fb"), Err(PathError::EncodedSeparator));
        assert_eq!(n("/a%5cb"), Err(PathError::EncodedSeparator));
        assert_eq!(n("/a\\b"), Err(PathError::Backslash));
        assert_eq!(n("/a%zz"), Err(PathError::BadEncoding));
        assert_eq!(n("/a%4"), Err(PathError::BadEncoding));
        assert_eq!(n("a/b"), Err(PathError::NotAbsolute));
        assert_eq!(n("*"), Err(PathError::NotAbsolute));
        assert_eq!(
            normalize(b"/a\xffb").map(|n| n.path),
            Err(PathError::BadByte)
        );
        assert_eq!(n("/a b"), Err(PathError::BadByte));
    }

    #[test]
    fn path_parameters_are_refused_or_stripped() {
        for raw in ["/a;x/b", "/a/..;/b", "/a%3bx/b", "/a%3Bx", "/a;", "/;/a"] {
            assert_eq!(n(raw), Err(PathError::MatrixParam), "{raw}");
        }
        let strip = |p: &str| normalize_with(p.as_bytes(), MatrixParams::Strip).map(|n| n.path);
        for (raw, want) in [
            (
                "/api/v1/tenants;x/globex/documents/7",
                "/api/v1/tenants/globex/documents/7",
            ),
            (
                "/api/v1/tenants/acme/..;/globex/documents/7",
                "/api/v1/tenants/globex/documents/7",
            ),
            (
                "/healthz/..;/api/v1/admin/settings",
                "/api/v1/admin/settings",
            ),
            ("/api/v1/admin%3Bx/settings", "/api/v1/admin/settings"),
            ("/a;jsessionid=1", "/a"),
            ("/a;x=1;y=2/b;z", "/a/b"),
            ("/a/b?x=1;2", "/a/b"),
        ] {
            assert_eq!(strip(raw).as_deref(), Ok(want), "{raw}");
        }
        // The bytes of a dropped parameter are still checked.
        assert_eq!(strip("/a;%zz/b"), Err(PathError::BadEncoding));
        assert_eq!(strip("/a;%2F/b"), Err(PathError::EncodedSeparator));
        // `;` in the query is not a path parameter.
        assert_eq!(n("/a?x=1;2").as_deref(), Ok("/a"));
    }

    #[test]
    fn keeps_the_query() {
        let p = normalize(b"/x/../y?a=1&b=%2F").unwrap();
        assert_eq!(
            (p.path.as_str(), p.query.as_deref()),
            ("/y", Some("a=1&b=%2F"))
        );
    }

    #[test]
    fn prefixes_match_on_segments() {
        assert!(prefix_matches("/api", "/api"));
        assert!(prefix_matches("/api", "/api/v1"));
        assert!(!prefix_matches("/api", "/apix"));
        assert!(prefix_matches("/api/", "/api/v1"));
        assert!(prefix_matches("/", "/anything"));
        assert!(prefix_matches("/api/v1/admin", "/API/V1/Admin/settings"));
        assert!(prefix_matches("/API/", "/api/x"));
        assert!(!prefix_matches("/api/v1/admin", "/api/v1/administrators"));
        assert!(!prefix_matches("/api/v1/admin", "/api/v1"));
    }

    #[test]
    fn query_params() {
        assert_eq!(
            query_param("a=1&access_token=x%2By+z", "access_token"),
            Ok(Some("x+y z".into()))
        );
        assert_eq!(query_param("a=1", "access_token"), Ok(None));
        assert_eq!(query_param("t=1&t=2", "t"), Err(QueryError::Repeated));
    }
}
