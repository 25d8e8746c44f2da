//! Parameters (path, query, header) read as the backend reads them and checked against their
//! schema: each raw value is decoded, coerced to the schema's type by OpenAPI's serialization
//! rules (`simple` for path and header, `form` for the query, `explode` honoured for arrays),
//! then checked against its schema, compiled once (`schema.rs`).
//!
//! What the contract cannot say exactly is refused when it is compiled (`compile`): object
//! parameters, `content` instead of `schema`, styles other than those above, keywords that do
//! not apply to one value (`oneOf`, `not`, …), formats nothing checks. A value that appears more
//! than once where the schema expects one is a violation: backends disagree on which one counts.

use std::borrow::Cow;

use serde_json::{Map, Value};

use super::schema::{scalar_type, ValueSchema};

/// Where a parameter is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Location {
    Path,
    Query,
    Header,
}

impl Location {
    pub fn name(self) -> &'static str {
        match self {
            Location::Path => "path",
            Location::Query => "query",
            Location::Header => "header",
        }
    }
}

/// The JSON type a value is coerced to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    String,
    Integer,
    /// `format: int32`: an integer that fits.
    Int32,
    Number,
    Boolean,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    One(Kind),
    /// `explode`: one occurrence per item (query, `form` style); else items separated by `,`.
    Array {
        items: Kind,
        explode: bool,
    },
}

/// A declared parameter, compiled.
#[derive(Debug)]
pub struct Param {
    pub name: String,
    pub location: Location,
    pub required: bool,
    /// `allowEmptyValue` (query): an empty value is taken as given, unchecked.
    allow_empty: bool,
    shape: Shape,
    schema: ValueSchema,
}

/// What in a request breaks the contract: where, as a JSON pointer (`/query/limit`,
/// `/path/id`, `/query/ids/2`), and the keyword it breaks. Never the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub pointer: String,
    pub keyword: String,
}

impl Violation {
    pub fn new(pointer: String, keyword: &str) -> Violation {
        Violation {
            pointer,
            keyword: keyword.to_owned(),
        }
    }
}

/// The OpenAPI version's dialect of JSON Schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// OpenAPI 3.0: draft 4's words (boolean `exclusiveMaximum`) with `nullable`.
    V30,
    /// OpenAPI 3.1: draft 2020-12.
    V31,
}

impl Param {
    /// Compiles a parameter object whose `$ref`s are resolved; `Err`: why it cannot be enforced
    /// exactly, and the pointer (relative to the parameter) of the node.
    pub fn compile(p: &Map<String, Value>, dialect: Dialect) -> Result<Param, (String, String)> {
        let fail = |at: &str, why: String| Err((at.to_owned(), why));
        let Some(name) = p.get("name").and_then(Value::as_str) else {
            return fail("/name", "a parameter has a name".into());
        };
        let location = match p.get("in").and_then(Value::as_str) {
            Some("path") => Location::Path,
            Some("query") => Location::Query,
            Some("header") => Location::Header,
            Some(other) => return fail("/in", format!("`{other}` parameters are not enforced")),
            None => return fail("/in", "a parameter says where it is (`in`)".into()),
        };
        for key in p.keys() {
            let known = [
                "name",
                "in",
                "required",
                "schema",
                "style",
                "explode",
                "allowEmptyValue",
                "allowReserved",
                "description",
                "deprecated",
                "example",
                "examples",
            ];
            if !known.contains(&key.as_str()) && !key.starts_with("x-") {
                return fail(&format!("/{key}"), format!("`{key}` is not enforced"));
            }
        }
        let style = p.get("style").and_then(Value::as_str);
        let default_style = match location {
            Location::Query => "form",
            _ => "simple",
        };
        if style.is_some_and(|s| s != default_style) {
            return fail(
                "/style",
                format!(
                    "only the `{default_style}` style is enforced for {} parameters",
                    location.name()
                ),
            );
        }
        // A flag of another type would read as `false`, silently: refused.
        let flag = |key: &str| match p.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err((format!("/{key}"), format!("`{key}` is a boolean"))),
        };
        let explode = flag("explode")?.unwrap_or(location == Location::Query);
        let required = flag("required")?.unwrap_or(false);
        let allow_empty = flag("allowEmptyValue")?.unwrap_or(false);
        if location == Location::Path && !required {
            return fail("/required", "a path parameter is required".into());
        }
        let schema = match p.get("schema") {
            Some(Value::Object(s)) => s.clone(),
            Some(_) => return fail("/schema", "a schema is an object".into()),
            None => return fail("", "a parameter without `schema` is not enforced".into()),
        };
        let shape =
            shape_of(&schema, explode).map_err(|(at, why)| (format!("/schema{at}"), why))?;
        let schema =
            dialect_schema(schema, dialect).map_err(|(at, why)| (format!("/schema{at}"), why))?;
        let schema =
            ValueSchema::compile(&schema).map_err(|(at, why)| (format!("/schema{at}"), why))?;
        Ok(Param {
            name: name.to_owned(),
            location,
            required,
            allow_empty: location == Location::Query && allow_empty,
            shape,
            schema,
        })
    }

    /// Checks the parameter's raw values as the request carries them (the path segment as
    /// normalised, each occurrence of a query parameter decoded, each header value).
    pub fn check(&self, values: &[Cow<'_, str>]) -> Result<(), Violation> {
        let at = format!("/{}/{}", self.location.name(), self.name);
        let Some(first) = values.first() else {
            return if self.required {
                Err(Violation::new(at, "required"))
            } else {
                Ok(())
            };
        };
        if self.allow_empty && values.len() == 1 && first.is_empty() {
            return Ok(());
        }
        let value = match self.shape {
            Shape::One(kind) => {
                if values.len() > 1 {
                    return Err(Violation::new(at, "repeated"));
                }
                coerce(first, kind).ok_or_else(|| Violation::new(at.clone(), "type"))?
            }
            Shape::Array { items, explode } => {
                let raw: Vec<&str> = if explode && self.location == Location::Query {
                    // One item an occurrence; an item with a `,` would be several to a backend
                    // that splits on it too (Spring does).
                    if let Some(i) = values.iter().position(|v| v.contains(',')) {
                        return Err(Violation::new(format!("{at}/{i}"), "separator"));
                    }
                    values.iter().map(|v| v.as_ref()).collect()
                } else {
                    if values.len() > 1 {
                        return Err(Violation::new(at, "repeated"));
                    }
                    first.split(',').collect()
                };
                let mut out = Vec::with_capacity(raw.len());
                for (i, r) in raw.iter().enumerate() {
                    let v = coerce(r, items)
                        .ok_or_else(|| Violation::new(format!("{at}/{i}"), "type"))?;
                    out.push(v);
                }
                Value::Array(out)
            }
        };
        self.schema
            .check(&value)
            .map_err(|(inner, keyword)| Violation::new(format!("{at}{inner}"), keyword))
    }
}

/// The value a raw string is, for the schema's type; `None` when it is not one (a backend
/// parsing it would refuse it or read something else).
fn coerce(raw: &str, kind: Kind) -> Option<Value> {
    let plain_integer = |s: &str| {
        let digits = s.strip_prefix('-').unwrap_or(s);
        !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
    };
    match kind {
        Kind::String => Some(Value::String(raw.to_owned())),
        Kind::Integer if plain_integer(raw) => raw.parse::<i64>().ok().map(Value::from),
        Kind::Int32 if plain_integer(raw) => raw.parse::<i32>().ok().map(Value::from),
        Kind::Integer | Kind::Int32 => None,
        // JSON's number grammar only: no `inf`, `NaN`, `+1` or spaces.
        Kind::Number => match serde_json::from_str::<Value>(raw) {
            Ok(v @ Value::Number(_)) if raw.trim() == raw => Some(v),
            _ => None,
        },
        Kind::Boolean => match raw {
            "true" => Some(Value::Bool(true)),
            "false" => Some(Value::Bool(false)),
            _ => None,
        },
    }
}

/// The shape of a parameter from its schema's `type`: one scalar, or an array of scalars.
fn shape_of(schema: &Map<String, Value>, explode: bool) -> Result<Shape, (String, String)> {
    let kind = |s: &Map<String, Value>, at: &str| -> Result<Kind, (String, String)> {
        let format = s.get("format").and_then(Value::as_str);
        match scalar_type(s.get("type")).map_err(|why| (format!("{at}/type"), why))? {
            "integer" if format == Some("int32") => Ok(Kind::Int32),
            "integer" => Ok(Kind::Integer),
            "number" => Ok(Kind::Number),
            "boolean" => Ok(Kind::Boolean),
            "string" => Ok(Kind::String),
            other => Err((
                format!("{at}/type"),
                format!("`{other}` parameters are not enforced"),
            )),
        }
    };
    if scalar_type(schema.get("type")) == Ok("array") {
        let items = match schema.get("items") {
            Some(Value::Object(i)) => i,
            _ => {
                return Err((
                    "/items".into(),
                    "an array parameter declares its items".into(),
                ))
            }
        };
        return Ok(Shape::Array {
            items: kind(items, "/items")?,
            explode,
        });
    }
    Ok(Shape::One(kind(schema, "")?))
}

/// The schema in 2020-12's words: OpenAPI 3.0's `nullable` turned into a type and its boolean
/// bounds into numbers (which keywords are checked is `schema.rs`'s).
fn dialect_schema(
    mut schema: Map<String, Value>,
    dialect: Dialect,
) -> Result<Map<String, Value>, (String, String)> {
    if let Some(Value::Object(items)) = schema.get("items").cloned() {
        let items =
            dialect_schema(items, dialect).map_err(|(at, why)| (format!("/items{at}"), why))?;
        schema.insert("items".into(), Value::Object(items));
    }
    if dialect == Dialect::V30 {
        if schema.contains_key("const") {
            return Err((
                "/const".into(),
                "`const` is not an OpenAPI 3.0 keyword".into(),
            ));
        }
        // Draft 4's boolean bounds, in 2020-12's words.
        for (flag, bound) in [
            ("exclusiveMinimum", "minimum"),
            ("exclusiveMaximum", "maximum"),
        ] {
            match schema.get(flag) {
                Some(Value::Bool(true)) => match schema.remove(bound) {
                    Some(b) => {
                        schema.insert(flag.into(), b);
                    }
                    None => {
                        return Err((format!("/{flag}"), format!("`{flag}` without `{bound}`")))
                    }
                },
                Some(Value::Bool(false)) => {
                    schema.remove(flag);
                }
                Some(_) => {
                    return Err((format!("/{flag}"), "is a boolean in OpenAPI 3.0".into()));
                }
                None => {}
            }
        }
        if schema.remove("nullable") == Some(Value::Bool(true)) {
            if let Some(Value::String(t)) = schema.get("type").cloned() {
                schema.insert("type".into(), serde_json::json!([t, "null"]));
            }
        }
    }
    Ok(schema)
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;
    use serde_json::json;

    fn param(p: Value) -> Param {
        Param::compile(p.as_object().unwrap(), Dialect::V30).unwrap()
    }

    fn check(p: &Param, values: &[&str]) -> Result<(), (String, String)> {
        let values: Vec<Cow<'_, str>> = values.iter().map(|v| Cow::Borrowed(*v)).collect();
        p.check(&values).map_err(|v| (v.pointer, v.keyword))
    }

    fn broken(at: &str, keyword: &str) -> Result<(), (String, String)> {
        Err((at.to_owned(), keyword.to_owned()))
    }

    #[test]
    fn values_are_coerced_as_backends_read_them_then_validated() {
        let limit = param(json!({"name": "limit", "in": "query",
            "schema": {"type": "integer", "format": "int32", "minimum": 1, "maximum": 100}}));
        assert_eq!(check(&limit, &[]), Ok(()));
        assert_eq!(check(&limit, &["10"]), Ok(()));
        assert_eq!(check(&limit, &["0"]), broken("/query/limit", "minimum"));
        assert_eq!(check(&limit, &["101"]), broken("/query/limit", "maximum"));
        for bad in ["1.0", "+1", " 1", "1e2", "ten", "", "4294967296"] {
            assert_eq!(
                check(&limit, &[bad]),
                broken("/query/limit", "type"),
                "{bad:?}"
            );
        }
        assert_eq!(
            check(&limit, &["1", "2"]),
            broken("/query/limit", "repeated")
        );
        let ratio = param(json!({"name": "r", "in": "header", "required": true,
            "schema": {"type": "number", "exclusiveMaximum": true, "maximum": 1}}));
        assert_eq!(check(&ratio, &[]), broken("/header/r", "required"));
        assert_eq!(check(&ratio, &["0.5"]), Ok(()));
        assert_eq!(
            check(&ratio, &["1"]),
            broken("/header/r", "exclusiveMaximum")
        );
        for bad in ["inf", "NaN", "0x1", "1 "] {
            assert_eq!(
                check(&ratio, &[bad]),
                broken("/header/r", "type"),
                "{bad:?}"
            );
        }
        let flag = param(json!({"name": "f", "in": "query", "schema": {"type": "boolean"}}));
        assert_eq!(check(&flag, &["true"]), Ok(()));
        assert_eq!(check(&flag, &["True"]), broken("/query/f", "type"));
        let id = param(json!({"name": "id", "in": "path", "required": true,
            "schema": {"type": "string", "format": "uuid"}}));
        assert_eq!(
            check(&id, &["7c9e6679-7425-40de-944b-e07fc1f90ae7"]),
            Ok(())
        );
        assert_eq!(check(&id, &["7"]), broken("/path/id", "format"));
        let sort = param(json!({"name": "sort", "in": "query",
            "schema": {"type": "string", "enum": ["asc", "desc"], "nullable": true}}));
        assert_eq!(check(&sort, &["asc"]), Ok(()));
        assert_eq!(check(&sort, &["up"]), broken("/query/sort", "enum"));
        let code = param(json!({"name": "code", "in": "query",
            "schema": {"type": "string", "pattern": "^[A-Z]{3}$", "maxLength": 3}}));
        assert_eq!(check(&code, &["EUR"]), Ok(()));
        assert_eq!(check(&code, &["eur"]), broken("/query/code", "pattern"));
    }

    #[test]
    fn arrays_follow_explode_and_name_the_item() {
        let ids = param(json!({"name": "ids", "in": "query",
            "schema": {"type": "array", "maxItems": 3, "items": {"type": "integer", "minimum": 1}}}));
        assert_eq!(check(&ids, &["1", "2"]), Ok(()));
        assert_eq!(check(&ids, &["1", "0"]), broken("/query/ids/1", "minimum"));
        assert_eq!(check(&ids, &["1", "x"]), broken("/query/ids/1", "type"));
        assert_eq!(
            check(&ids, &["1", "2", "3", "4"]),
            broken("/query/ids", "maxItems")
        );
        let csv = param(json!({"name": "ids", "in": "query", "explode": false,
            "schema": {"type": "array", "items": {"type": "integer"}}}));
        assert_eq!(check(&csv, &["1,2,3"]), Ok(()));
        assert_eq!(check(&csv, &["1,b"]), broken("/query/ids/1", "type"));
        assert_eq!(check(&csv, &["1", "2"]), broken("/query/ids", "repeated"));
        // Exploded: an item with a `,` is several items to Spring.
        assert_eq!(
            check(&ids, &["1", "2,3"]),
            broken("/query/ids/1", "separator")
        );
    }

    #[test]
    fn what_cannot_be_enforced_exactly_is_refused() {
        let refused = |p: Value| {
            Param::compile(p.as_object().unwrap(), Dialect::V31)
                .unwrap_err()
                .0
        };
        let q = |schema: Value| json!({"name": "q", "in": "query", "schema": schema});
        assert_eq!(refused(q(json!({"type": "object"}))), "/schema/type");
        assert_eq!(
            refused(q(json!({"type": "string", "oneOf": [{"type": "string"}]}))),
            "/schema/oneOf"
        );
        assert_eq!(
            refused(q(json!({"type": "string", "format": "byte"}))),
            "/schema/format"
        );
        assert_eq!(refused(q(json!({"type": "array"}))), "/schema/items");
        assert_eq!(
            refused(q(
                json!({"type": "array", "items": {"type": "string", "not": {}}})
            )),
            "/schema/items/not"
        );
        assert_eq!(
            refused(json!({"name": "q", "in": "query", "style": "deepObject", "schema": {}})),
            "/style"
        );
        assert_eq!(
            refused(json!({"name": "q", "in": "query", "content": {"application/json": {}}})),
            "/content"
        );
        assert_eq!(
            refused(json!({"name": "c", "in": "cookie", "schema": {}})),
            "/in"
        );
        assert_eq!(
            refused(json!({"name": "id", "in": "path", "schema": {"type": "string"}})),
            "/required"
        );
        assert_eq!(
            refused(json!({"name": "h", "in": "header", "required": "true",
                           "schema": {"type": "string"}})),
            "/required",
            "a flag of another type would read as false"
        );
    }
}
