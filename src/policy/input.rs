//! The policy input document (docs/policies.md): what the request is, who sent it, which
//! resource the path names. Sizes are capped here, before evaluation, so no request can hand
//! the policy engine an input large enough to exhaust the VM.
//!
//! This file is the input's one definition: its keys ([`key`]), which parts are optional
//! ([`InputReads`]), how a request's document is built ([`InputBuilder::build`]), the largest
//! document the VM's budget is measured on ([`InputBuilder::full_size`], built by `build`), and
//! the fields derived for a hand-written document ([`with_derived_fields`]). Adding a field
//! touches this file and docs/policies.md ("The input document"); a field from a fact the
//! request does not carry yet (a member of [`PolicyRequest`]) also the code that fills it in
//! (`crate::flow`, and the glue for a value the host gives) and the tests that write a
//! `PolicyRequest` out; a costly field the policy may not read also [`super::reads`].

use std::borrow::Cow;
use std::collections::BTreeMap;

use regorus::Value as RegoValue;

use crate::http::Headers;
use crate::identity::Claims;
use crate::path::{form_decode, form_decode_lossy, NormalizedPath};

/// Most request headers passed to the policy; the rest are left out (and `request.truncated`
/// says so).
pub const MAX_HEADERS: usize = 64;
/// Longest header value passed; longer ones are left out.
pub const MAX_HEADER_VALUE: usize = 1024;
/// Most query parameters passed.
pub const MAX_QUERY_PARAMS: usize = 32;
/// Longest path passed; a longer path is refused before the policy runs.
pub const MAX_PATH: usize = 4096;

/// Headers never shown to a policy: credentials.
const HIDDEN: &[&str] = &["authorization", "cookie", "proxy-authorization"];

/// The optional parts of the input a policy reads: costly to build, so filled only when the
/// policy can read them ([`super::reads`] finds which from its modules).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputReads {
    /// `input` at all: a policy that never names it (`allow := true`, a policy on `data` alone)
    /// gets an empty document, and building one is most of what such a policy costs.
    pub any: bool,
    pub headers: bool,
    pub query: bool,
    /// `input.source`: the downstream address costs the filter a host call to learn.
    pub source: bool,
}

impl InputReads {
    pub const ALL: InputReads = InputReads {
        any: true,
        headers: true,
        query: true,
        source: true,
    };
    pub const NONE: InputReads = InputReads {
        any: false,
        headers: false,
        query: false,
        source: false,
    };

    pub fn union(self, other: InputReads) -> InputReads {
        InputReads {
            any: self.any || other.any,
            headers: self.headers || other.headers,
            query: self.query || other.query,
            source: self.source || other.source,
        }
    }
}

/// The input document's keys, written once: [`InputBuilder::build`] makes the document with
/// them, [`InputBuilder::full_size`] the largest one, [`with_derived_fields`] completes a
/// hand-written one, and [`super::reads`] and the compiled pack read references against them.
pub mod key {
    pub const REQUEST: &str = "request";
    pub const METHOD: &str = "method";
    pub const PATH: &str = "path";
    /// Derived: `path` lower-cased.
    pub const LOWER_PATH: &str = "lower_path";
    pub const QUERY: &str = "query";
    pub const HEADERS: &str = "headers";
    pub const HOST: &str = "host";
    pub const TRUNCATED: &str = "truncated";
    pub const SOURCE: &str = "source";
    pub const ADDRESS: &str = "address";
    pub const RESOURCE: &str = "resource";
    pub const TOKEN: &str = "token";
    pub const PROVIDER: &str = "provider";
    pub const OPERATION: &str = "operation";
    pub const ID: &str = "id";
    pub const TEMPLATE: &str = "template";
    pub const TAGS: &str = "tags";
    pub const SCOPES: &str = "scopes";
}

/// The request as the policy judges it: the facts its input document is built from.
#[derive(Debug, Clone, Copy)]
pub struct PolicyRequest<'a> {
    pub headers: &'a Headers<'a>,
    /// The method the backend will act on ([`crate::http::effective_method`]).
    pub method: &'a str,
    pub path: &'a NormalizedPath,
    pub source: Option<&'a str>,
    /// The API contract's operation the request is (`contract`), when one matched.
    pub operation: Option<OperationFacts<'a>>,
}

/// What the policy sees of the contract's operation (`input.operation`).
#[derive(Debug, Clone, Copy)]
pub struct OperationFacts<'a> {
    /// `operationId`, `""` when the document gives none.
    pub id: &'a str,
    /// The declared path template, under the servers' path (`/api/v1/items/{id}`).
    pub template: &'a str,
    pub tags: &'a [String],
    /// The OAuth scopes the document's security requirements name for the operation.
    pub scopes: &'a [String],
}

/// A path template such as `/api/v1/tenants/{tenant_id}/documents/{doc_id}`.
#[derive(Debug, Clone)]
pub struct Template {
    segments: Vec<Segment>,
}

#[derive(Debug, Clone)]
enum Segment {
    Literal(String),
    /// A capture, named by a policy value (made once, cloned per request).
    Capture(RegoValue),
}

impl Template {
    /// Templates are validated with the configuration (`policy.resources`).
    pub fn parse(t: &str) -> Template {
        Template {
            segments: t
                .trim_start_matches('/')
                .split('/')
                .map(
                    |s| match s.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                        Some(name) => Segment::Capture(RegoValue::from(name)),
                        None => Segment::Literal(s.to_owned()),
                    },
                )
                .collect(),
        }
    }

    /// The captures (name, path segment), in template order, if the template covers the path:
    /// the path has at least the template's segments (a template also names the resource of
    /// deeper paths, such as `…/documents/7/versions`), literal segments compare
    /// case-insensitively (a disguise such as `/API/V1/Tenants/…` must not dodge the match),
    /// and a capture takes one whole segment.
    fn captures<'t, 'p>(&'t self, path: &'p str) -> Option<Vec<(&'t RegoValue, &'p str)>> {
        let mut parts = path.trim_start_matches('/').split('/');
        let mut out = Vec::new();
        for seg in &self.segments {
            let part = parts.next().filter(|p| !p.is_empty())?;
            match seg {
                Segment::Literal(l) => {
                    if !l.eq_ignore_ascii_case(part) {
                        return None;
                    }
                }
                Segment::Capture(name) => out.push((name, part)),
            }
        }
        Some(out)
    }
}

/// A header's value as the policy may see it: not a pseudo-header, not a credential. A value
/// that is not UTF-8 is shown with U+FFFD for each bad byte and marks the input truncated: a
/// policy that denies on a header's presence must see it, never find it silently absent.
/// The flag says whether the value was altered.
fn showable<'a>(name: &str, value: &'a [u8]) -> Option<(Cow<'a, str>, bool)> {
    if name.starts_with(':') || HIDDEN.contains(&name) {
        return None;
    }
    let text = String::from_utf8_lossy(value);
    let altered = matches!(text, Cow::Owned(_));
    Some((text, altered))
}

/// The headers a policy is shown, and whether some were left out or altered.
fn shown_headers(headers: &Headers<'_>) -> (BTreeMap<RegoValue, RegoValue>, bool) {
    let mut shown: BTreeMap<RegoValue, RegoValue> = BTreeMap::new();
    let mut truncated = false;
    for (name, value) in headers.iter() {
        let Some((value, altered)) = showable(name, value) else {
            continue;
        };
        truncated |= altered;
        let key = RegoValue::from(name);
        if value.len() > MAX_HEADER_VALUE
            || (shown.len() >= MAX_HEADERS && !shown.contains_key(&key))
        {
            truncated = true;
            continue;
        }
        // Repeated headers are joined with commas, as HTTP allows for list-valued fields.
        let joined = match shown.get(&key) {
            Some(RegoValue::String(prev)) => format!("{prev},{value}"),
            _ => value.into_owned(),
        };
        shown.insert(key, RegoValue::from(joined));
    }
    (shown, truncated)
}

/// Whether [`shown_headers`] would leave headers out or alter them, without building them when
/// it plainly would not (few enough headers, none too long, all UTF-8).
fn headers_truncated(headers: &Headers<'_>) -> bool {
    let mut count = 0;
    for (name, value) in headers.iter() {
        let Some((value, altered)) = showable(name, value) else {
            continue;
        };
        if altered || value.len() > MAX_HEADER_VALUE {
            return true;
        }
        count += 1;
    }
    count > MAX_HEADERS && shown_headers(headers).1
}

fn query_pairs(q: &str) -> impl Iterator<Item = &str> {
    q.split('&').filter(|p| !p.is_empty())
}

/// The query parameters a policy is shown (decoded, first value of each), and whether some
/// were left out or altered. A name or value that does not decode (a bad escape such as `%zz`,
/// bytes that are not UTF-8 such as `%ff`) is shown decoded leniently ([`form_decode_lossy`])
/// and marks the input truncated.
fn shown_query(q: &str) -> (BTreeMap<RegoValue, RegoValue>, bool) {
    let mut shown: BTreeMap<RegoValue, RegoValue> = BTreeMap::new();
    let mut truncated = false;
    for pair in query_pairs(q) {
        if shown.len() >= MAX_QUERY_PARAMS {
            return (shown, true);
        }
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let ((k, k_altered), (v, v_altered)) = (form_decode_lossy(k), form_decode_lossy(v));
        truncated |= k_altered || v_altered;
        shown
            .entry(RegoValue::from(k))
            .or_insert(RegoValue::from(v));
    }
    (shown, truncated)
}

/// Whether [`shown_query`] would leave parameters out or alter them, without building the
/// policy values.
fn query_truncated(q: &str) -> bool {
    // A pair decodes as a whole exactly when its name and value both do (`=` decodes as
    // itself and a bad byte sequence cannot span it); the query itself is printable ASCII.
    query_pairs(q).any(|p| p.contains('%') && form_decode(p).is_none())
        || (query_pairs(q).count() > MAX_QUERY_PARAMS && shown_query(q).1)
}

/// The methods whose policy values are made once (any other is made per request).
const COMMON_METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE",
];

/// Builds input documents for one configuration. The parts that are the same for every request
/// (the document's keys, the common methods, empty objects, the capture names) are policy
/// values made here once: a clone is a reference-count increment where a fresh value is an
/// allocation, and the allocator is a large part of what building the input costs in Envoy
/// (docs/benchmarks.md).
#[derive(Debug, Clone)]
pub struct InputBuilder {
    templates: Vec<Template>,
    reads: InputReads,
    k: Keys,
}

/// Keys and constant values of the input document.
#[derive(Debug, Clone)]
struct Keys {
    request: RegoValue,
    method: RegoValue,
    path: RegoValue,
    lower_path: RegoValue,
    query: RegoValue,
    headers: RegoValue,
    host: RegoValue,
    truncated: RegoValue,
    source: RegoValue,
    address: RegoValue,
    resource: RegoValue,
    token: RegoValue,
    provider: RegoValue,
    /// `{}`.
    empty: RegoValue,
    /// `{"address": ""}`: the source of a request whose policy does not read it, or whose
    /// address the host did not give.
    no_source: RegoValue,
    methods: Vec<(&'static str, RegoValue)>,
}

impl Keys {
    fn new() -> Keys {
        let address = RegoValue::from(key::ADDRESS);
        Keys {
            request: RegoValue::from(key::REQUEST),
            method: RegoValue::from(key::METHOD),
            path: RegoValue::from(key::PATH),
            lower_path: RegoValue::from(key::LOWER_PATH),
            query: RegoValue::from(key::QUERY),
            headers: RegoValue::from(key::HEADERS),
            host: RegoValue::from(key::HOST),
            truncated: RegoValue::from(key::TRUNCATED),
            source: RegoValue::from(key::SOURCE),
            address: address.clone(),
            resource: RegoValue::from(key::RESOURCE),
            token: RegoValue::from(key::TOKEN),
            provider: RegoValue::from(key::PROVIDER),
            empty: RegoValue::from(BTreeMap::new()),
            no_source: RegoValue::from(BTreeMap::from([(address, RegoValue::from(""))])),
            methods: COMMON_METHODS
                .iter()
                .map(|m| (*m, RegoValue::from(*m)))
                .collect(),
        }
    }
}

impl InputBuilder {
    /// For `policy.resources` templates and what the policy `reads`.
    pub fn new(templates: Vec<Template>, reads: InputReads) -> InputBuilder {
        InputBuilder {
            templates,
            reads,
            k: Keys::new(),
        }
    }

    /// What the policy reads of the optional parts.
    pub fn reads(&self) -> InputReads {
        self.reads
    }

    /// Builds the input document, directly as a policy value (no JSON round trip). Headers,
    /// query parameters and the source address are filled in only when the policy reads them
    /// (see [`super::reads`]); otherwise they are empty, which such a policy cannot tell
    /// apart. `truncated` is exact either way.
    pub fn build(
        &self,
        request: &PolicyRequest<'_>,
        identity: Option<(&str, &Claims)>,
    ) -> RegoValue {
        let PolicyRequest {
            headers,
            method,
            path,
            source,
            operation,
        } = *request;
        let (k, reads) = (&self.k, self.reads);
        // A policy that never names `input` cannot tell this from the full document.
        if !reads.any {
            return k.empty.clone();
        }
        let text = |name| {
            headers
                .get(name)
                .and_then(|v| std::str::from_utf8(v).ok())
                .unwrap_or("")
        };
        let (shown, headers_cut) = if reads.headers {
            shown_headers(headers)
        } else {
            (BTreeMap::new(), headers_truncated(headers))
        };
        let (query, query_cut) = match path.query.as_deref() {
            Some(q) if reads.query => shown_query(q),
            Some(q) => (BTreeMap::new(), query_truncated(q)),
            None => (BTreeMap::new(), false),
        };
        let method = k
            .methods
            .iter()
            .find(|(m, _)| *m == method)
            .map_or_else(|| RegoValue::from(method), |(_, v)| v.clone());
        // `lower_path` lets a policy match prefixes case-insensitively, as apiguard's own rules
        // do; most paths are lowercase already and share the one value.
        let path_value = RegoValue::from(path.path.as_str());
        let lower_path = match path.lower() {
            Cow::Owned(lower) => RegoValue::from(lower),
            Cow::Borrowed(_) => path_value.clone(),
        };
        let request = BTreeMap::from([
            (k.method.clone(), method),
            (k.path.clone(), path_value.clone()),
            (k.lower_path.clone(), lower_path),
            (k.query.clone(), self.object(query)),
            (k.headers.clone(), self.object(shown)),
            (k.host.clone(), RegoValue::from(text(":authority"))),
            (
                k.truncated.clone(),
                RegoValue::from(headers_cut || query_cut),
            ),
        ]);
        let source = match source.filter(|s| reads.source && !s.is_empty()) {
            Some(address) => RegoValue::from(BTreeMap::from([(
                k.address.clone(),
                RegoValue::from(address),
            )])),
            None => k.no_source.clone(),
        };
        let resource = self.resource(&path.path);
        let mut doc = BTreeMap::from([
            (k.request.clone(), RegoValue::from(request)),
            (k.source.clone(), source),
            (k.resource.clone(), self.object(resource)),
        ]);
        if let Some((provider, claims)) = identity {
            doc.insert(k.token.clone(), claims_value(claims));
            doc.insert(k.provider.clone(), RegoValue::from(provider));
        }
        if let Some(op) = operation {
            let list = |items: &[String]| {
                RegoValue::from(
                    items
                        .iter()
                        .map(|s| RegoValue::from(s.as_str()))
                        .collect::<Vec<_>>(),
                )
            };
            let value = BTreeMap::from([
                (RegoValue::from(key::ID), RegoValue::from(op.id)),
                (RegoValue::from(key::TEMPLATE), RegoValue::from(op.template)),
                (RegoValue::from(key::TAGS), list(op.tags)),
                (RegoValue::from(key::SCOPES), list(op.scopes)),
            ]);
            doc.insert(RegoValue::from(key::OPERATION), RegoValue::from(value));
        }
        RegoValue::from(doc)
    }

    /// The capture `name` of the first template that covers `path`, as `input.resource.<name>`
    /// has it (a name captured twice keeps its last segment, as the document's object does).
    pub fn capture<'p>(&self, path: &'p str, name: &str) -> Option<&'p str> {
        let parts = self.templates.iter().find_map(|t| t.captures(path))?;
        parts
            .into_iter()
            .rev()
            .find(|(n, _)| matches!(n, RegoValue::String(s) if s.as_ref() == name))
            .map(|(_, part)| part)
    }

    /// The parameters of the first template that covers `path` (none when none does).
    fn resource(&self, path: &str) -> BTreeMap<RegoValue, RegoValue> {
        self.templates
            .iter()
            .find_map(|t| t.captures(path))
            .map(|parts| {
                parts
                    .into_iter()
                    .map(|(name, part)| (name.clone(), RegoValue::from(part)))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// An object, the shared `{}` when it is empty.
    fn object(&self, members: BTreeMap<RegoValue, RegoValue>) -> RegoValue {
        if members.is_empty() {
            self.k.empty.clone()
        } else {
            RegoValue::from(members)
        }
    }
}

/// The claims as a policy value, converted once per verified token (kept with the token).
fn claims_value(claims: &Claims) -> RegoValue {
    let convert = |m: &serde_json::Map<String, serde_json::Value>| {
        RegoValue::from(serde_json::Value::Object(m.clone()))
    };
    match claims.derived(convert) {
        Some(v) => v.clone(),
        None => convert(&claims.map),
    }
}

/// Claims in the full-size input's token, and roles in its list claims: a token larger than
/// most (the filter does not bound claims beyond the token's size).
const FULL_SIZE_CLAIMS: usize = 64;

impl InputBuilder {
    /// An input document as large as the filter ever passes (docs/policies.md), built by
    /// [`InputBuilder::build`] itself from a request at every limit: the most headers, each as
    /// long as passed, the most query parameters, a long path naming a resource, a token with
    /// many claims and long roles lists. The VM's instruction budget is measured on it
    /// ([`super::vm`]), so it has every part a request's document has.
    pub fn full_size() -> RegoValue {
        let value = "v".repeat(MAX_HEADER_VALUE).into_bytes();
        let headers: Vec<(String, Vec<u8>)> =
            std::iter::once((":authority".to_owned(), b"api.example.com".to_vec()))
                .chain((0..MAX_HEADERS).map(|i| (format!("x-header-{i}"), value.clone())))
                .collect();
        let query: Vec<String> = (0..MAX_QUERY_PARAMS).map(|i| format!("q{i}={i}")).collect();
        let path = NormalizedPath {
            path: format!("/api/v1/tenants/t1/documents/1/{}", "x/".repeat(64)),
            query: Some(query.join("&")),
        };
        let roles: Vec<serde_json::Value> = (0..FULL_SIZE_CLAIMS)
            .map(|i| format!("role-{i}").into())
            .collect();
        let mut token: serde_json::Map<String, serde_json::Value> = (0..FULL_SIZE_CLAIMS)
            .map(|i| (format!("claim_{i}"), format!("value-{i}").into()))
            .collect();
        for (k, v) in [
            ("sub", serde_json::json!("user")),
            ("roles", roles.clone().into()),
            ("groups", roles.into()),
            ("tenant_id", "t1".into()),
            ("scope", "read write admin".into()),
        ] {
            token.insert(k.into(), v);
        }
        let builder = InputBuilder::new(
            vec![Template::parse(
                "/api/v1/tenants/{tenant_id}/documents/{doc_id}",
            )],
            InputReads::ALL,
        );
        // An operation with many tags and scopes and a long template.
        let names: Vec<String> = (0..FULL_SIZE_CLAIMS).map(|i| format!("name-{i}")).collect();
        let template = format!("/api/v1{}", "/segment/{id}".repeat(20));
        builder.build(
            &PolicyRequest {
                headers: &Headers::new(&headers),
                method: "GET",
                path: &path,
                source: Some("10.0.0.1"),
                operation: Some(OperationFacts {
                    id: "operationIdOfAReasonableLength",
                    template: &template,
                    tags: &names,
                    scopes: &names,
                }),
            },
            Some(("primary", &Claims::new(token))),
        )
    }
}

/// A hand-written input document with the fields apiguard derives filled in where they are
/// missing: `request.lower_path` from `request.path`. Inputs written for `apiguard policy
/// test/eval` then need only what the request is, as docs/policies.md describes it.
pub fn with_derived_fields(input: &serde_json::Value) -> serde_json::Value {
    let mut input = input.clone();
    if let Some(request) = input
        .get_mut(key::REQUEST)
        .and_then(serde_json::Value::as_object_mut)
    {
        if !request.contains_key(key::LOWER_PATH) {
            if let Some(path) = request.get(key::PATH).and_then(serde_json::Value::as_str) {
                // As [`NormalizedPath::lower`] makes it for a request.
                let lower = path.to_ascii_lowercase();
                request.insert(key::LOWER_PATH.to_owned(), serde_json::Value::from(lower));
            }
        }
    }
    input
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    /// A policy that reads the input, none of its costly parts.
    const READS_INPUT: InputReads = InputReads {
        any: true,
        ..InputReads::NONE
    };

    /// A template's captures by name.
    fn captures(t: &Template, path: &str) -> Option<BTreeMap<String, String>> {
        let parts = t.captures(path)?;
        Some(
            parts
                .into_iter()
                .map(|(n, p)| (text(n), p.to_owned()))
                .collect(),
        )
    }

    /// The resource the input document names for `path`, by parameter name.
    fn resource(templates: &[Template], path: &str) -> BTreeMap<String, String> {
        InputBuilder::new(templates.to_vec(), READS_INPUT)
            .resource(path)
            .iter()
            .map(|(n, v)| (text(n), text(v)))
            .collect()
    }

    fn text(v: &RegoValue) -> String {
        v.as_string().map(|s| s.to_string()).unwrap_or_default()
    }

    /// A policy that never names `input` gets the empty document, whatever the request.
    #[test]
    fn a_policy_that_reads_no_input_gets_an_empty_document() {
        let t = Template::parse("/api/v1/tenants/{tenant_id}");
        let headers = vec![("x-a".to_owned(), b"1".to_vec())];
        let path = crate::path::normalize(b"/api/v1/tenants/t1?q=1").unwrap();
        let build = |reads| {
            InputBuilder::new(vec![t.clone()], reads).build(
                &PolicyRequest {
                    headers: &Headers::new(&headers),
                    method: "GET",
                    path: &path,
                    source: Some("10.0.0.1"),
                    operation: None,
                },
                None,
            )
        };
        assert_eq!(build(InputReads::NONE), RegoValue::from(BTreeMap::new()));
        assert_ne!(build(READS_INPUT), RegoValue::from(BTreeMap::new()));
    }

    #[test]
    fn templates_match_on_segments_case_insensitively() {
        let t = Template::parse("/api/v1/tenants/{tenant_id}/documents/{doc_id}");
        let got = captures(&t, "/api/v1/tenants/t1/documents/7").unwrap();
        assert_eq!(got["tenant_id"], "t1");
        assert_eq!(got["doc_id"], "7");
        assert_eq!(
            captures(&t, "/API/V1/Tenants/t2/Documents/9").unwrap()["tenant_id"],
            "t2"
        );
        assert_eq!(
            captures(&t, "/api/v1/tenants/t1/documents/7/versions").unwrap()["doc_id"],
            "7"
        );
        assert!(captures(&t, "/api/v1/tenants/t1/documents").is_none());
        assert!(captures(&t, "/api/v1/tenants/t1/documents/").is_none());
        assert!(captures(&t, "/api/v2/tenants/t1/documents/7").is_none());
        let all = [Template::parse("/a/{x}/b"), Template::parse("/a/{y}")];
        assert_eq!(resource(&all, "/a/1/b")["x"], "1");
        assert_eq!(resource(&all, "/a/1/c")["y"], "1");
        assert!(resource(&all, "/z").is_empty());
    }

    #[test]
    fn input_hides_credentials_and_caps_sizes() {
        let mut list: Vec<(String, Vec<u8>)> = vec![
            (":method".into(), b"GET".to_vec()),
            (":authority".into(), b"api.example.com".to_vec()),
            ("authorization".into(), b"Bearer x".to_vec()),
            ("cookie".into(), b"s=1".to_vec()),
            ("x-api-key".into(), b"k1".to_vec()),
            ("x-multi".into(), b"a".to_vec()),
            ("x-multi".into(), b"b".to_vec()),
            ("x-bin".into(), b"\xff".to_vec()),
            ("x-big".into(), vec![b'a'; MAX_HEADER_VALUE + 1]),
        ];
        for i in 0..100 {
            list.push((format!("x-h{i}"), b"v".to_vec()));
        }
        let path = crate::path::normalize(b"/api/x?page=2&page=3&q=a+b").unwrap();
        let doc: serde_json::Value = serde_json::from_str(
            &InputBuilder::new(Vec::new(), InputReads::ALL)
                .build(
                    &PolicyRequest {
                        headers: &Headers::new(&list),
                        method: "GET",
                        path: &path,
                        source: Some("10.0.0.5"),
                        operation: None,
                    },
                    None,
                )
                .to_json_str()
                .unwrap(),
        )
        .unwrap();
        let h = doc["request"]["headers"].as_object().unwrap();
        assert!(h.get("authorization").is_none() && h.get("cookie").is_none());
        assert_eq!(h["x-api-key"], "k1");
        assert_eq!(h["x-multi"], "a,b");
        assert_eq!(h["x-bin"], "\u{fffd}");
        assert!(h.get("x-big").is_none());
        assert_eq!(h.len(), MAX_HEADERS);
        assert_eq!(doc["request"]["truncated"], true);
        assert_eq!(doc["request"]["method"], "GET");
        assert_eq!(doc["request"]["host"], "api.example.com");
        assert_eq!(doc["request"]["query"]["page"], "2");
        assert_eq!(doc["request"]["query"]["q"], "a b");
        assert_eq!(doc["source"]["address"], "10.0.0.5");
        assert!(doc.get("token").is_none());
    }

    /// The whole document for a typical request, built twice by one builder: the second is
    /// equal to the first (the shared keys and constants carry nothing from one request to
    /// the next), and what the policy does not read is empty.
    #[test]
    fn document_is_complete_and_repeatable() {
        let list: Vec<(String, Vec<u8>)> = vec![
            (":method".into(), b"PATCH".to_vec()),
            (":authority".into(), b"api.example.com".to_vec()),
            ("x-api-key".into(), b"k1".to_vec()),
        ];
        let builder = InputBuilder::new(
            vec![Template::parse(
                "/api/v1/tenants/{tenant_id}/documents/{doc_id}",
            )],
            READS_INPUT,
        );
        let claims = Claims::new(
            serde_json::json!({"sub": "u1", "tenant_id": "t1"})
                .as_object()
                .unwrap()
                .clone(),
        );
        let path = crate::path::normalize(b"/api/v1/Tenants/t1/documents/7/versions?v=2").unwrap();
        let build = || {
            let doc = builder.build(
                &PolicyRequest {
                    headers: &Headers::new(&list),
                    method: "PATCH",
                    path: &path,
                    source: Some("10.0.0.5"),
                    operation: None,
                },
                Some(("idp", &claims)),
            );
            serde_json::from_str::<serde_json::Value>(&doc.to_json_str().unwrap()).unwrap()
        };
        let first = build();
        assert_eq!(
            first,
            serde_json::json!({
                "request": {"method": "PATCH", "path": "/api/v1/Tenants/t1/documents/7/versions",
                            "lower_path": "/api/v1/tenants/t1/documents/7/versions",
                            "query": {}, "headers": {}, "host": "api.example.com",
                            "truncated": false},
                "source": {"address": ""},
                "resource": {"tenant_id": "t1", "doc_id": "7"},
                "token": {"sub": "u1", "tenant_id": "t1"},
                "provider": "idp"
            })
        );
        assert_eq!(build(), first);
        let all = InputBuilder::new(Vec::new(), InputReads::ALL);
        let doc = all.build(
            &PolicyRequest {
                headers: &Headers::new(&list),
                method: "GET",
                path: &path,
                source: Some("10.0.0.5"),
                operation: None,
            },
            None,
        );
        let doc: serde_json::Value = serde_json::from_str(&doc.to_json_str().unwrap()).unwrap();
        assert_eq!(doc["source"]["address"], "10.0.0.5");
        assert_eq!(doc["request"]["query"]["v"], "2");
        assert_eq!(doc["request"]["headers"]["x-api-key"], "k1");
        assert_eq!(doc["resource"], serde_json::json!({}));
    }

    /// `truncated` is the same whether or not the policy reads headers and query.
    #[test]
    fn truncated_does_not_depend_on_what_is_read() {
        let few: Vec<(String, Vec<u8>)> = vec![("x-a".into(), b"1".to_vec())];
        let mut many = few.clone();
        for i in 0..(MAX_HEADERS + 5) {
            many.push((format!("x-h{i}"), b"v".to_vec()));
        }
        let mut long = few.clone();
        long.push(("x-big".into(), vec![b'a'; MAX_HEADER_VALUE + 1]));
        let mut repeated = few.clone();
        for _ in 0..(MAX_HEADERS + 5) {
            repeated.push(("x-same".into(), b"v".to_vec()));
        }
        let params: String = (0..MAX_QUERY_PARAMS + 3)
            .map(|i| format!("p{i}=1&"))
            .collect();
        let same: String = (0..MAX_QUERY_PARAMS + 3).map(|_| "p=1&").collect();
        for list in [&few, &many, &long, &repeated] {
            for raw in [
                "/x".to_owned(),
                format!("/x?{params}"),
                format!("/x?{same}"),
            ] {
                let path = crate::path::normalize(raw.as_bytes()).unwrap();
                let truncated = |reads| {
                    let doc = InputBuilder::new(Vec::new(), reads).build(
                        &PolicyRequest {
                            headers: &Headers::new(list),
                            method: "GET",
                            path: &path,
                            source: None,
                            operation: None,
                        },
                        None,
                    );
                    serde_json::from_str::<serde_json::Value>(&doc.to_json_str().unwrap()).unwrap()
                        ["request"]["truncated"]
                        .clone()
                };
                assert_eq!(truncated(InputReads::ALL), truncated(READS_INPUT), "{raw}");
            }
        }
    }

    /// A value the input cannot hold exactly is shown altered and marks the input truncated,
    /// whether or not the policy reads that part: never silently absent.
    #[test]
    fn unrepresentable_values_are_visible() {
        let list: Vec<(String, Vec<u8>)> = vec![("x-debug".into(), b"1\xff".to_vec())];
        let clean: Vec<(String, Vec<u8>)> = vec![("x-debug".into(), b"1".to_vec())];
        for reads in [InputReads::ALL, READS_INPUT] {
            let builder = InputBuilder::new(Vec::new(), reads);
            let doc = |headers: &Vec<(String, Vec<u8>)>, raw: &str| {
                let path = crate::path::normalize(raw.as_bytes()).unwrap();
                let doc = builder.build(
                    &PolicyRequest {
                        headers: &Headers::new(headers),
                        method: "GET",
                        path: &path,
                        source: None,
                        operation: None,
                    },
                    None,
                );
                serde_json::from_str::<serde_json::Value>(&doc.to_json_str().unwrap()).unwrap()
            };
            assert_eq!(doc(&clean, "/x?debug=1")["request"]["truncated"], false);
            for (headers, raw, what) in [
                (&list, "/x", "header"),
                (&clean, "/x?debug=1%zz", "query"),
                (&clean, "/x?debug=%ff", "query"),
                (&clean, "/x?de%ffbug=1", "query"),
            ] {
                let d = doc(headers, raw);
                assert_eq!(d["request"]["truncated"], true, "{raw}");
                if reads == InputReads::ALL {
                    let shown = match what {
                        "header" => &d["request"]["headers"]["x-debug"],
                        _ => d["request"]["query"]
                            .as_object()
                            .unwrap()
                            .values()
                            .next()
                            .unwrap(),
                    };
                    assert!(shown.is_string(), "{raw}: {d}");
                }
            }
            let d = doc(&clean, "/x?debug=1%zz");
            if reads == InputReads::ALL {
                assert_eq!(d["request"]["query"]["debug"], "1%zz");
            }
        }
    }

    /// The full-size document the instruction budget is measured on is the builder's own, at
    /// every limit and not truncated: every header and query parameter it passes, each part a
    /// request's document has (the same keys as a typical request's, all filled).
    #[test]
    fn full_size_input_is_a_built_document_at_every_limit() {
        let doc: serde_json::Value =
            serde_json::from_str(&InputBuilder::full_size().to_json_str().unwrap()).unwrap();
        let request = &doc[key::REQUEST];
        assert_eq!(
            request[key::HEADERS].as_object().unwrap().len(),
            MAX_HEADERS
        );
        assert!(request[key::HEADERS]
            .as_object()
            .unwrap()
            .values()
            .all(|v| v.as_str().unwrap().len() == MAX_HEADER_VALUE));
        assert_eq!(
            request[key::QUERY].as_object().unwrap().len(),
            MAX_QUERY_PARAMS
        );
        assert_eq!(request[key::TRUNCATED], false);
        assert_ne!(doc[key::SOURCE][key::ADDRESS], "");
        assert!(!doc[key::RESOURCE].as_object().unwrap().is_empty());
        assert!(doc[key::TOKEN].as_object().unwrap().len() > 64);
        let typical = InputBuilder::new(Vec::new(), InputReads::ALL).build(
            &PolicyRequest {
                headers: &Headers::new(&[]),
                method: "GET",
                path: &crate::path::normalize(b"/x").unwrap(),
                source: Some("10.0.0.1"),
                operation: Some(OperationFacts {
                    id: "",
                    template: "/x",
                    tags: &[],
                    scopes: &[],
                }),
            },
            Some(("idp", &Claims::new(serde_json::Map::new()))),
        );
        let typical: serde_json::Value =
            serde_json::from_str(&typical.to_json_str().unwrap()).unwrap();
        let keys = |v: &serde_json::Value| {
            let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
            k.extend(
                v[key::REQUEST]
                    .as_object()
                    .unwrap()
                    .keys()
                    .map(|k| format!("request.{k}")),
            );
            k
        };
        assert_eq!(keys(&doc), keys(&typical));
    }
}
