//! The contract stage: the API's OpenAPI 3.0/3.1 document as a positive model
//! (docs/contract.md). Compiled once: a table of the declared paths ([`routes`]) with their
//! operations, and each parameter's decoder and validator ([`params`]). Per request, on the path
//! and method the other stages judge: an undeclared path is a 404, an undeclared method a 405
//! with `Allow`, a parameter that breaks its schema a 400 naming its JSON pointer and keyword,
//! a body of an undeclared media type or encoding a 415, a declared size over
//! `max_body_bytes` a 413 — all decided on the headers, before any body is read.
//!
//! What the document says that apiguard cannot enforce exactly is refused when it is compiled,
//! with the JSON pointer of the node: remote `$ref`s, `servers` whose paths disagree, templates
//! that are ambiguous or not whole segments, parameter styles and keywords it does not check,
//! and (until bodies are validated) request body schemas. Never silently weakened.

pub mod params;
pub mod routes;
pub mod schema;

#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::config::{
    invalid, validate_contract, ConfigError, ContractConfig, ContractMode, Problem,
};
use crate::http::{same_header, Headers};
use crate::path::{form_decode, percent_decode, NormalizedPath};
use crate::reply::Reply;
use params::{Dialect, Location, Param, Violation};
use routes::{Routes, Segment};

/// How deep `$ref`s may chain (a cycle is refused by this bound).
const MAX_REF_DEPTH: usize = 32;

/// How many nodes one parameter may expand to once its `$ref`s are followed.
const MAX_INLINED_NODES: usize = 10_000;

/// The methods an OpenAPI path item may declare, as they are sent.
const METHODS: [&str; 8] = [
    "GET", "PUT", "POST", "DELETE", "OPTIONS", "HEAD", "PATCH", "TRACE",
];

/// The compiled contract.
#[derive(Debug)]
pub struct ContractStage {
    pub mode: ContractMode,
    pub max_body_bytes: u64,
    routes: Routes,
    paths: Vec<DeclaredPath>,
}

#[derive(Debug)]
struct DeclaredPath {
    operations: BTreeMap<&'static str, Operation>,
    /// The `Allow` header of a 405.
    allow: String,
}

/// A declared operation.
#[derive(Debug)]
pub struct Operation {
    pub id: Option<String>,
    /// The path template as declared (with the servers' path before it).
    pub template: String,
    pub method: &'static str,
    pub tags: Vec<String>,
    /// The scopes its security requirements name (the operation's, else the document's), every
    /// alternative's, in order, once each.
    pub scopes: Vec<String>,
    /// `x-apiguard-cost`: what one request of it counts against rate limits (the policy's
    /// `rate_limit_cost` wins over it).
    pub cost: Option<u64>,
    params: Vec<Param>,
    /// The path parameters in template order: indexes into `params`.
    path_params: Vec<usize>,
    body: Option<BodyRule>,
}

/// What an operation's `requestBody` allows, as far as the headers tell.
#[derive(Debug)]
struct BodyRule {
    required: bool,
    /// Declared media types, lowercase (`application/json`, `image/*`, `*/*`).
    media: Vec<String>,
}

/// Why a request breaks the contract.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    UnknownOperation,
    /// The declared methods, for `Allow`.
    MethodNotAllowed(String),
    Invalid(Violation),
    UnsupportedMediaType,
    TooLarge,
    /// A body follows without a `Content-Length`: its size cannot be held to `max_body_bytes`
    /// on the headers (until the body itself is read and counted, it is refused).
    LengthRequired,
}

/// A refusal's kind, for counters and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefusalKind {
    UnknownOperation,
    MethodNotAllowed,
    Invalid,
    UnsupportedMediaType,
    TooLarge,
    LengthRequired,
}

impl RefusalKind {
    pub fn name(self) -> &'static str {
        match self {
            RefusalKind::UnknownOperation => "unknown_operation",
            RefusalKind::MethodNotAllowed => "method_not_allowed",
            RefusalKind::Invalid => "invalid",
            RefusalKind::UnsupportedMediaType => "unsupported_media_type",
            RefusalKind::TooLarge => "too_large",
            RefusalKind::LengthRequired => "length_required",
        }
    }
}

impl Refusal {
    pub fn kind(&self) -> RefusalKind {
        match self {
            Refusal::UnknownOperation => RefusalKind::UnknownOperation,
            Refusal::MethodNotAllowed(_) => RefusalKind::MethodNotAllowed,
            Refusal::Invalid(_) => RefusalKind::Invalid,
            Refusal::UnsupportedMediaType => RefusalKind::UnsupportedMediaType,
            Refusal::TooLarge => RefusalKind::TooLarge,
            Refusal::LengthRequired => RefusalKind::LengthRequired,
        }
    }

    pub fn reply(&self) -> Reply {
        match self {
            Refusal::UnknownOperation => Reply::unknown_operation(),
            Refusal::MethodNotAllowed(allow) => Reply::method_not_allowed(allow),
            Refusal::Invalid(v) => {
                Reply::contract_violation(&format!("{}: {}", v.pointer, v.keyword))
            }
            Refusal::UnsupportedMediaType => Reply::unsupported_media_type(),
            Refusal::TooLarge => Reply::body_too_large(),
            Refusal::LengthRequired => Reply::length_required(),
        }
    }
}

/// A document node that cannot be enforced exactly: its pointer and why.
fn unenforceable(pointer: &str, why: impl Into<String>) -> ConfigError {
    invalid(
        format!("contract.openapi#{pointer}"),
        Problem::Unenforceable(why.into()),
    )
}

/// RFC 6901 escaping of one reference token.
fn token(s: &str) -> String {
    s.replace('~', "~0").replace('/', "~1")
}

impl ContractStage {
    /// Checks and compiles the `contract` section in one pass.
    pub fn compile(cfg: &ContractConfig) -> Result<ContractStage, ConfigError> {
        validate_contract(cfg)?;
        let doc = &cfg.openapi;
        let dialect = match doc.get("openapi").and_then(Value::as_str) {
            Some(v) if v.starts_with("3.0.") => Dialect::V30,
            Some(v) if v.starts_with("3.1.") => Dialect::V31,
            _ => {
                return Err(unenforceable(
                    "/openapi",
                    "only OpenAPI 3.0.x and 3.1.x documents are enforced",
                ))
            }
        };
        let base = server_path(doc)?;
        let Some(paths) = doc.get("paths").and_then(Value::as_object) else {
            return Err(unenforceable(
                "/paths",
                "the document declares `paths` (an object)",
            ));
        };
        let mut stage = ContractStage {
            mode: cfg.mode,
            max_body_bytes: cfg.max_body_bytes,
            routes: Routes::default(),
            paths: Vec::new(),
        };
        for (template, item) in paths {
            let at = format!("/paths/{}", token(template));
            let item = resolve(doc, item, &at)?;
            let item = item
                .as_object()
                .ok_or_else(|| unenforceable(&at, "a path item is an object"))?;
            let full = format!("{base}{template}");
            let segments = routes::parse(&full).map_err(|e| unenforceable(&at, e.says()))?;
            let declared = compile_path(doc, dialect, item, &at, &full, &segments)?;
            stage
                .routes
                .insert(&segments, stage.paths.len())
                .map_err(|e| unenforceable(&at, e.says()))?;
            stage.paths.push(declared);
        }
        Ok(stage)
    }

    /// The operation a request is, or why it breaks the contract. `method`: the one the backend
    /// acts on (overrides resolved); `path`: normalised; `body_follows`: the headers did not
    /// end the stream.
    pub fn check(
        &self,
        method: &str,
        path: &NormalizedPath,
        headers: &Headers<'_>,
        body_follows: bool,
    ) -> Result<&Operation, Refusal> {
        let found = self
            .routes
            .find(&path.path)
            .map_err(|_| Refusal::Invalid(Violation::new("/path".into(), "case")))?;
        let (index, values) = found.ok_or(Refusal::UnknownOperation)?;
        let declared = self.paths.get(index).ok_or(Refusal::UnknownOperation)?;
        let op = declared
            .operations
            .get(method)
            .ok_or_else(|| Refusal::MethodNotAllowed(declared.allow.clone()))?;
        op.check_params(&values, path.query.as_deref(), headers)?;
        self.check_body_headers(op, headers, body_follows)?;
        Ok(op)
    }

    /// What the headers say of the body: its size, media type and encoding. Whether there is
    /// one is the stream's word (`body_follows`), not `Content-Length`'s: an HTTP/2 request may
    /// carry a body without one.
    fn check_body_headers(
        &self,
        op: &Operation,
        headers: &Headers<'_>,
        body_follows: bool,
    ) -> Result<(), Refusal> {
        let lengths: Vec<&[u8]> = headers.all("content-length").collect();
        // Digits only (`+5` or ` 5` are not a length every reader agrees on); equal repeats
        // count once, as Envoy lets them through.
        let digits = |v: &[u8]| {
            (!v.is_empty() && v.len() <= 19 && v.iter().all(u8::is_ascii_digit))
                .then(|| {
                    std::str::from_utf8(v)
                        .ok()
                        .and_then(|s| s.parse::<u64>().ok())
                })
                .flatten()
        };
        let bad_length = || Refusal::Invalid(Violation::new("/body".into(), "content-length"));
        let length = match lengths.split_first() {
            None => None,
            Some((first, rest)) if rest.iter().all(|v| v == first) => {
                Some(digits(first).ok_or_else(bad_length)?)
            }
            Some(_) => return Err(bad_length()),
        };
        if length.is_some_and(|n| n > self.max_body_bytes) {
            return Err(Refusal::TooLarge);
        }
        let has_body = body_follows && length != Some(0);
        if has_body && length.is_none() {
            return Err(Refusal::LengthRequired);
        }
        let Some(rule) = &op.body else {
            // No `requestBody`: no body (a form body would reach parameters the contract never
            // checked, in backends that merge them).
            return if has_body {
                Err(Refusal::UnsupportedMediaType)
            } else {
                Ok(())
            };
        };
        if !has_body {
            return if rule.required {
                Err(Refusal::Invalid(Violation::new("/body".into(), "required")))
            } else {
                Ok(())
            };
        }
        let identity = headers
            .all("content-encoding")
            .all(|v| v.eq_ignore_ascii_case(b"identity"));
        if !identity {
            return Err(Refusal::UnsupportedMediaType);
        }
        let types: Vec<&[u8]> = headers.all("content-type").collect();
        let [content_type] = types.as_slice() else {
            return Err(Refusal::UnsupportedMediaType);
        };
        let media = std::str::from_utf8(content_type)
            .ok()
            .and_then(|v| v.split(';').next())
            .map(|v| v.trim().to_ascii_lowercase())
            .unwrap_or_default();
        if rule.media.iter().any(|m| media_matches(m, &media)) {
            Ok(())
        } else {
            Err(Refusal::UnsupportedMediaType)
        }
    }
}

/// Whether a declared media range covers a request's media type.
fn media_matches(declared: &str, media: &str) -> bool {
    let Some((ty, sub)) = media.split_once('/') else {
        return false;
    };
    match declared.split_once('/') {
        Some(("*", "*")) => true,
        Some((dt, "*")) => dt == ty,
        Some((dt, ds)) => dt == ty && ds == sub,
        None => false,
    }
}

impl Operation {
    fn check_params(
        &self,
        path_values: &[&str],
        query: Option<&str>,
        headers: &Headers<'_>,
    ) -> Result<(), Refusal> {
        let query = query_pairs(query.unwrap_or(""))?;
        // A positive model: a query parameter the operation does not declare is refused (a
        // backend may read `name[$ne]`, `max.rows` or `limit[]` as something the contract never
        // checked). Its name is not echoed.
        let declared = |name: &String| {
            self.params
                .iter()
                .any(|p| p.location == Location::Query && p.name == *name)
        };
        if !query.iter().all(|(name, _)| declared(name)) {
            return Err(Refusal::Invalid(Violation::new(
                "/query".into(),
                "undeclared",
            )));
        }
        for (i, p) in self.params.iter().enumerate() {
            let values: Vec<Cow<'_, str>> = match p.location {
                Location::Path => {
                    let slot = self.path_params.iter().position(|&k| k == i);
                    let raw = slot.and_then(|s| path_values.get(s)).copied().unwrap_or("");
                    // The normalised segment with its escapes decoded (a `+` stays a `+`).
                    match percent_decode(raw) {
                        Some(v) => vec![Cow::Owned(v)],
                        None => {
                            return Err(Refusal::Invalid(Violation::new(
                                format!("/path/{}", p.name),
                                "type",
                            )))
                        }
                    }
                }
                Location::Query => query
                    .iter()
                    .filter(|(name, _)| *name == p.name)
                    .map(|(_, v)| Cow::Borrowed(v.as_str()))
                    .collect(),
                Location::Header => {
                    // Under any spelling a backend reads alike (`X_Tenant_Id` is `x-tenant-id` to
                    // CGI, WSGI, Rack and PHP).
                    let mut out = Vec::new();
                    for (name, v) in headers.iter() {
                        if !same_header(&p.name, name) {
                            continue;
                        }
                        let v = std::str::from_utf8(v).map_err(|_| {
                            Refusal::Invalid(Violation::new(format!("/header/{}", p.name), "type"))
                        })?;
                        out.push(Cow::Borrowed(v));
                    }
                    out
                }
            };
            p.check(&values).map_err(Refusal::Invalid)?;
        }
        Ok(())
    }
}

/// The query's parameters, each decoded once (form encoding). A raw `;` is refused: some
/// backends (Rack 2) split the query on it too. A name or value that does not decode is
/// refused rather than guessed.
fn query_pairs(query: &str) -> Result<Vec<(String, String)>, Refusal> {
    if query.contains(';') {
        return Err(Refusal::Invalid(Violation::new(
            "/query".into(),
            "separator",
        )));
    }
    let mut out = Vec::new();
    for pair in query.split('&').filter(|s| !s.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match (form_decode(k), form_decode(v)) {
            (Some(k), Some(v)) => out.push((k, v)),
            _ => {
                return Err(Refusal::Invalid(Violation::new(
                    "/query".into(),
                    "encoding",
                )))
            }
        }
    }
    Ok(out)
}

/// The path every declared path is under: that of the `servers` (all the same), or none.
fn server_path(doc: &Value) -> Result<String, ConfigError> {
    let Some(servers) = doc.get("servers") else {
        return Ok(String::new());
    };
    let list = servers
        .as_array()
        .ok_or_else(|| unenforceable("/servers", "`servers` is an array"))?;
    let mut base: Option<String> = None;
    for (i, s) in list.iter().enumerate() {
        let at = format!("/servers/{i}/url");
        let url = s
            .get("url")
            .and_then(Value::as_str)
            .ok_or_else(|| unenforceable(&at, "a server has a `url`"))?;
        if url.contains('{') {
            return Err(unenforceable(&at, "server variables are not enforced"));
        }
        let path = match url.split_once("://") {
            Some((_, rest)) => rest.find('/').map_or("", |i| &rest[i..]),
            None => url,
        };
        let path = path.trim_end_matches('/').to_owned();
        if !path.is_empty() && !path.starts_with('/') {
            return Err(unenforceable(
                &at,
                "a server URL is absolute or starts with '/'",
            ));
        }
        match &base {
            Some(b) if *b != path => {
                return Err(unenforceable(
                    &at,
                    "servers under different paths: which one a request is under would be a guess",
                ));
            }
            _ => base = Some(path),
        }
    }
    Ok(base.unwrap_or_default())
}

/// Follows a local `$ref` (`#/components/...`), to a bound; remote ones are refused.
fn resolve<'d>(doc: &'d Value, node: &'d Value, at: &str) -> Result<&'d Value, ConfigError> {
    let mut node = node;
    for _ in 0..MAX_REF_DEPTH {
        let Some(r) = node.get("$ref").and_then(Value::as_str) else {
            return Ok(node);
        };
        // 3.1 lets keywords stand beside a `$ref` and apply too; following the reference alone
        // would drop them.
        if let Some(other) = node.as_object().and_then(|m| {
            m.keys()
                .find(|k| !matches!(k.as_str(), "$ref" | "summary" | "description"))
        }) {
            return Err(unenforceable(
                at,
                format!("`{other}` beside a `$ref` is not enforced"),
            ));
        }
        let Some(pointer) = r.strip_prefix('#') else {
            return Err(unenforceable(
                at,
                format!("`$ref` `{r}` is not in this document: remote references are refused"),
            ));
        };
        node = doc
            .pointer(pointer)
            .ok_or_else(|| unenforceable(at, format!("`$ref` `{r}` points to nothing")))?;
    }
    Err(unenforceable(at, "`$ref`s chain deeper than 32 (a cycle?)"))
}

/// Resolves every `$ref` inside a parameter, to bounds: a depth (recursive schemas are refused:
/// a parameter's value is one value or an array) and a number of nodes made (a document of
/// `$ref`s to `$ref`s could otherwise expand exponentially). Annotations (`x-*`, `example`,
/// `examples`, `description`) are dropped, not expanded.
fn inline(
    doc: &Value,
    node: &Value,
    at: &str,
    depth: usize,
    budget: &mut usize,
) -> Result<Value, ConfigError> {
    if depth > MAX_REF_DEPTH {
        return Err(unenforceable(
            at,
            "the schema nests deeper than 32 (a recursive `$ref`?)",
        ));
    }
    *budget = budget
        .checked_sub(1)
        .ok_or_else(|| unenforceable(at, "the parameter expands to too many nodes"))?;
    let node = resolve(doc, node, at)?;
    Ok(match node {
        Value::Object(m) => {
            let mut out = Map::new();
            for (k, v) in m {
                let annotation = k.starts_with("x-")
                    || matches!(k.as_str(), "example" | "examples" | "description");
                if !annotation {
                    let v = inline(doc, v, &format!("{at}/{}", token(k)), depth + 1, budget)?;
                    out.insert(k.clone(), v);
                }
            }
            Value::Object(out)
        }
        Value::Array(a) => {
            let mut out = Vec::with_capacity(a.len());
            for (i, v) in a.iter().enumerate() {
                out.push(inline(doc, v, &format!("{at}/{i}"), depth + 1, budget)?);
            }
            Value::Array(out)
        }
        other => other.clone(),
    })
}

/// A parameter object as declared (its `$ref`s resolved), with its pointer.
type Declared = (String, Map<String, Value>);

/// The parameters of a path item or an operation, in order.
fn parameters(doc: &Value, list: Option<&Value>, at: &str) -> Result<Vec<Declared>, ConfigError> {
    let Some(list) = list else {
        return Ok(Vec::new());
    };
    let list = list
        .as_array()
        .ok_or_else(|| unenforceable(at, "`parameters` is an array"))?;
    let mut out: Vec<Declared> = Vec::new();
    for (i, p) in list.iter().enumerate() {
        let pat = format!("{at}/{i}");
        let mut budget = MAX_INLINED_NODES;
        let p = inline(doc, p, &pat, 0, &mut budget)?;
        let Value::Object(p) = p else {
            return Err(unenforceable(&pat, "a parameter is an object"));
        };
        let same = |q: &Map<String, Value>| {
            let s = |m: &Map<String, Value>, k: &str| {
                m.get(k)
                    .and_then(Value::as_str)
                    .map(str::to_ascii_lowercase)
            };
            s(q, "in") == s(&p, "in") && s(q, "name") == s(&p, "name")
        };
        if out.iter().any(|(_, q)| same(q)) {
            return Err(unenforceable(
                &pat,
                "the same parameter is declared twice in one list",
            ));
        }
        out.push((pat, p));
    }
    Ok(out)
}

fn compile_path(
    doc: &Value,
    dialect: Dialect,
    item: &Map<String, Value>,
    at: &str,
    template: &str,
    segments: &[Segment],
) -> Result<DeclaredPath, ConfigError> {
    let shared = parameters(doc, item.get("parameters"), &format!("{at}/parameters"))?;
    let mut operations = BTreeMap::new();
    for (key, op) in item {
        // OpenAPI's keys are lowercase; `GET` beside `get` would be a second, silent answer.
        let method = METHODS
            .iter()
            .find(|m| m.to_ascii_lowercase() == *key)
            .copied();
        let Some(method) = method else {
            match key.as_str() {
                "summary" | "description" | "parameters" => continue,
                k if k.starts_with("x-") => continue,
                other => {
                    return Err(unenforceable(
                        &format!("{at}/{}", token(other)),
                        format!("`{other}` in a path item is not enforced"),
                    ))
                }
            }
        };
        let oat = format!("{at}/{key}");
        let op = op
            .as_object()
            .ok_or_else(|| unenforceable(&oat, "an operation is an object"))?;
        operations.insert(
            method,
            compile_operation(doc, dialect, op, &oat, template, segments, method, &shared)?,
        );
    }
    let allow = operations.keys().copied().collect::<Vec<_>>().join(", ");
    Ok(DeclaredPath { operations, allow })
}

#[allow(clippy::too_many_arguments)]
fn compile_operation(
    doc: &Value,
    dialect: Dialect,
    op: &Map<String, Value>,
    at: &str,
    template: &str,
    segments: &[Segment],
    method: &'static str,
    shared: &[Declared],
) -> Result<Operation, ConfigError> {
    if op.contains_key("servers") {
        return Err(unenforceable(
            &format!("{at}/servers"),
            "servers of one operation are not enforced",
        ));
    }
    // The operation's parameters override the path item's of the same `in` and `name`.
    let own = parameters(doc, op.get("parameters"), &format!("{at}/parameters"))?;
    let key = |p: &Map<String, Value>| {
        let s = |k: &str| {
            p.get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        // Header names are case-insensitive.
        let name = if s("in") == "header" {
            s("name").to_ascii_lowercase()
        } else {
            s("name")
        };
        (s("in"), name)
    };
    let mut all: Vec<Declared> = Vec::new();
    for (pat, p) in shared.iter().chain(own.iter()) {
        let k = key(p);
        all.retain(|(_, q)| key(q) != k);
        all.push((pat.clone(), p.clone()));
    }
    let mut params = Vec::new();
    for (pat, p) in all {
        let (location, name) = key(&p);
        // OpenAPI: these header parameters are ignored (the request's own headers say them).
        if location == "header"
            && ["accept", "content-type", "authorization"].contains(&name.as_str())
        {
            continue;
        }
        let mut param = Param::compile(&p, dialect)
            .map_err(|(inner, why)| unenforceable(&format!("{pat}{inner}"), why))?;
        if param.location == Location::Header {
            param.name = param.name.to_ascii_lowercase();
        }
        params.push(param);
    }
    let mut path_params = Vec::new();
    for s in segments {
        if let Segment::Param(name) = s {
            let i = params
                .iter()
                .position(|p| p.location == Location::Path && p.name == *name)
                .ok_or_else(|| {
                    unenforceable(
                        at,
                        format!("path parameter `{name}` of the template is not declared"),
                    )
                })?;
            path_params.push(i);
        }
    }
    if let Some(p) = params.iter().find(|p| {
        p.location == Location::Path && !segments.contains(&Segment::Param(p.name.clone()))
    }) {
        return Err(unenforceable(
            at,
            format!("path parameter `{}` is not in the template", p.name),
        ));
    }
    let body = match op.get("requestBody") {
        None => None,
        Some(b) => {
            let bat = format!("{at}/requestBody");
            let b = resolve(doc, b, &bat)?;
            let content = b
                .get("content")
                .and_then(Value::as_object)
                .ok_or_else(|| unenforceable(&bat, "a request body declares its `content`"))?;
            let mut media = Vec::new();
            for (m, spec) in content {
                let mat = format!("{bat}/content/{}", token(m));
                if spec.get("schema").is_some() {
                    return Err(unenforceable(
                        &format!("{mat}/schema"),
                        "request body schemas are not validated yet: this version checks a body's media type, encoding and size only",
                    ));
                }
                if spec.get("encoding").is_some() {
                    return Err(unenforceable(
                        &format!("{mat}/encoding"),
                        "`encoding` is not enforced",
                    ));
                }
                let lower = m.to_ascii_lowercase();
                // Until bodies are validated: a form or multipart body (or a range that admits
                // one) is read as parameters by many backends, which the contract would not check.
                let form = lower == "application/x-www-form-urlencoded"
                    || lower.starts_with("multipart/")
                    || lower == "*/*"
                    || lower == "application/*";
                if form {
                    return Err(unenforceable(
                        &mat,
                        "form and multipart bodies (and ranges that admit them) are not validated yet: backends read them as parameters",
                    ));
                }
                media.push(lower);
            }
            Some(BodyRule {
                required: b.get("required").and_then(Value::as_bool).unwrap_or(false),
                media,
            })
        }
    };
    let tags = op
        .get("tags")
        .and_then(Value::as_array)
        .map(|t| {
            t.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let cost = match op.get("x-apiguard-cost") {
        None => None,
        Some(c) => match c.as_u64() {
            Some(c) if (1..=apiguard_limiter_api::MAX_COST).contains(&c) => Some(c),
            _ => {
                return Err(unenforceable(
                    &format!("{at}/x-apiguard-cost"),
                    format!(
                        "a cost is a whole number from 1 to {}",
                        apiguard_limiter_api::MAX_COST
                    ),
                ))
            }
        },
    };
    let mut scopes: Vec<String> = Vec::new();
    let (security, sat) = match op.get("security") {
        Some(s) => (Some(s), format!("{at}/security")),
        None => (doc.get("security"), "/security".to_owned()),
    };
    let malformed = || {
        unenforceable(
            &sat,
            "`security` is a list of requirement objects naming lists of scopes",
        )
    };
    if let Some(security) = security {
        for requirement in security.as_array().ok_or_else(malformed)? {
            for list in requirement.as_object().ok_or_else(malformed)?.values() {
                for scope in list.as_array().ok_or_else(malformed)? {
                    let scope = scope.as_str().ok_or_else(malformed)?;
                    if !scopes.iter().any(|s| s == scope) {
                        scopes.push(scope.to_owned());
                    }
                }
            }
        }
    }
    Ok(Operation {
        id: op
            .get("operationId")
            .and_then(Value::as_str)
            .map(str::to_owned),
        template: template.to_owned(),
        method,
        tags,
        scopes,
        cost,
        params,
        path_params,
        body,
    })
}
