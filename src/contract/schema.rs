//! The JSON Schema keywords that apply to a parameter's value (one value, or an array of them),
//! compiled once and checked per request.
//!
//! Written here rather than taken from a JSON Schema crate: the one that fits (`jsonschema`,
//! tried first) made the filter module 2.9 MB → 7.4 MB, for a subset of keywords this small
//! (docs/contract.md lists them). `pattern` is compiled by `regex-lite` (no Unicode classes,
//! as ECMA-262 patterns without the `u` flag); a pattern it cannot compile is refused with the
//! document, never ignored.

use serde_json::{Map, Number, Value};

/// A compiled parameter schema.
#[derive(Debug, Default)]
pub struct ValueSchema {
    /// `enum` or `const`: the values allowed, and which keyword said so.
    one_of_values: Option<(Vec<Value>, &'static str)>,
    pattern: Option<regex_lite::Regex>,
    minimum: Option<Bound>,
    maximum: Option<Bound>,
    multiple_of: Option<f64>,
    min_length: Option<u64>,
    max_length: Option<u64>,
    format: Option<Format>,
    items: Option<Box<ValueSchema>>,
    min_items: Option<u64>,
    max_items: Option<u64>,
    unique_items: bool,
}

/// A numeric bound; `exclusive`: the bound itself is outside.
#[derive(Debug, Clone, Copy)]
struct Bound {
    value: f64,
    exclusive: bool,
    /// The keyword a violation names.
    keyword: &'static str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Date,
    DateTime,
    Time,
    Uuid,
    Ipv4,
    Ipv6,
}

/// The largest `maxItems` beside `uniqueItems` (items are compared pairwise).
const MAX_UNIQUE_ITEMS: u64 = 256;

/// Keywords that only annotate.
const ANNOTATIONS: &[&str] = &[
    "title",
    "description",
    "default",
    "example",
    "examples",
    "deprecated",
    "readOnly",
    "writeOnly",
    "$comment",
    "type",
];

/// Formats the coercion checks (`int32`, `int64`, `float`, `double`) or that only hint at
/// display (`password`).
const COERCED_FORMATS: &[&str] = &["int32", "int64", "float", "double", "password"];

/// The one type a schema names (a 3.1 `["string", "null"]` names `string`). A schema without
/// one, or with two, is refused: the value a backend parses would be a guess.
pub fn scalar_type(t: Option<&Value>) -> Result<&str, String> {
    let named: Vec<&str> = match t {
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(list)) => list
            .iter()
            .map(|v| v.as_str().ok_or_else(|| "`type` names types".to_owned()))
            .collect::<Result<Vec<&str>, String>>()?
            .into_iter()
            .filter(|s| *s != "null")
            .collect(),
        Some(_) => return Err("`type` names types".into()),
        None => return Err("a parameter schema names its `type`".into()),
    };
    match named.as_slice() {
        [one] => Ok(one),
        _ => Err("a parameter schema names one `type` (and `null`)".into()),
    }
}

impl ValueSchema {
    /// Compiles a schema in 2020-12's words (3.0's `nullable` and boolean bounds already
    /// turned into them); `Err`: the keyword's pointer (relative) and why it is refused.
    pub fn compile(schema: &Map<String, Value>) -> Result<ValueSchema, (String, String)> {
        let mut out = ValueSchema::default();
        // Keywords that cannot apply to the value's type would never hold it to anything.
        let ty = scalar_type(schema.get("type")).map_err(|why| ("/type".to_owned(), why))?;
        let applies = |key: &str| -> Result<(), (String, String)> {
            let ok = match key {
                "minimum" | "maximum" | "exclusiveMinimum" | "exclusiveMaximum" | "multipleOf" => {
                    matches!(ty, "integer" | "number")
                }
                "pattern" | "minLength" | "maxLength" => ty == "string",
                "items" | "minItems" | "maxItems" | "uniqueItems" => ty == "array",
                _ => true,
            };
            if ok {
                Ok(())
            } else {
                Err((
                    format!("/{key}"),
                    format!("`{key}` does not apply to a `{ty}`"),
                ))
            }
        };
        let number = |key: &str, v: &Value| {
            v.as_f64()
                .filter(|n| n.is_finite())
                .ok_or_else(|| (format!("/{key}"), format!("`{key}` is a number")))
        };
        let count = |key: &str, v: &Value| {
            v.as_u64()
                .ok_or_else(|| (format!("/{key}"), format!("`{key}` is a whole number")))
        };
        for (key, v) in schema {
            applies(key)?;
            match key.as_str() {
                k if k.starts_with("x-") || ANNOTATIONS.contains(&k) => {}
                "enum" => {
                    let list = v
                        .as_array()
                        .ok_or_else(|| ("/enum".to_owned(), "`enum` is an array".to_owned()))?;
                    out.one_of_values = Some((list.clone(), "enum"));
                }
                "const" => out.one_of_values = Some((vec![v.clone()], "const")),
                "pattern" => {
                    let p = v.as_str().ok_or_else(|| {
                        ("/pattern".to_owned(), "`pattern` is a string".to_owned())
                    })?;
                    let re = regex_lite::Regex::new(p).map_err(|e| {
                        (
                            "/pattern".to_owned(),
                            format!("the pattern does not compile: {e}"),
                        )
                    })?;
                    out.pattern = Some(re);
                }
                "minimum" | "exclusiveMinimum" => {
                    let b = Bound {
                        value: number(key, v)?,
                        exclusive: key == "exclusiveMinimum",
                        keyword: if key == "minimum" {
                            "minimum"
                        } else {
                            "exclusiveMinimum"
                        },
                    };
                    // Both given: the stricter one holds.
                    out.minimum = Some(match out.minimum {
                        Some(old)
                            if old.value > b.value || (old.value == b.value && old.exclusive) =>
                        {
                            old
                        }
                        _ => b,
                    });
                }
                "maximum" | "exclusiveMaximum" => {
                    let b = Bound {
                        value: number(key, v)?,
                        exclusive: key == "exclusiveMaximum",
                        keyword: if key == "maximum" {
                            "maximum"
                        } else {
                            "exclusiveMaximum"
                        },
                    };
                    out.maximum = Some(match out.maximum {
                        Some(old)
                            if old.value < b.value || (old.value == b.value && old.exclusive) =>
                        {
                            old
                        }
                        _ => b,
                    });
                }
                "multipleOf" => {
                    let m = number(key, v)?;
                    if m <= 0.0 {
                        return Err((
                            "/multipleOf".into(),
                            "`multipleOf` is greater than 0".into(),
                        ));
                    }
                    out.multiple_of = Some(m);
                }
                "minLength" => out.min_length = Some(count(key, v)?),
                "maxLength" => out.max_length = Some(count(key, v)?),
                "minItems" => out.min_items = Some(count(key, v)?),
                "maxItems" => out.max_items = Some(count(key, v)?),
                "uniqueItems" => {
                    out.unique_items = v.as_bool().ok_or_else(|| {
                        (
                            "/uniqueItems".to_owned(),
                            "`uniqueItems` is a boolean".to_owned(),
                        )
                    })?;
                }
                "format" => {
                    let f = v.as_str().unwrap_or_default();
                    let numeric = matches!(f, "int32" | "int64" | "float" | "double");
                    if numeric != matches!(ty, "integer" | "number") && f != "password" {
                        return Err((
                            "/format".into(),
                            format!("format `{f}` does not apply to a `{ty}`"),
                        ));
                    }
                    out.format = match f {
                        "date" => Some(Format::Date),
                        "date-time" => Some(Format::DateTime),
                        "time" => Some(Format::Time),
                        "uuid" => Some(Format::Uuid),
                        "ipv4" => Some(Format::Ipv4),
                        "ipv6" => Some(Format::Ipv6),
                        f if COERCED_FORMATS.contains(&f) => None,
                        f => {
                            return Err(("/format".into(), format!("format `{f}` is not checked")))
                        }
                    };
                }
                "items" => {
                    let items = v.as_object().ok_or_else(|| {
                        (
                            "/items".to_owned(),
                            "`items` is one schema (an object)".to_owned(),
                        )
                    })?;
                    let inner = ValueSchema::compile(items)
                        .map_err(|(at, why)| (format!("/items{at}"), why))?;
                    out.items = Some(Box::new(inner));
                }
                other => {
                    return Err((
                        format!("/{other}"),
                        format!("keyword `{other}` is not enforced in parameters"),
                    ))
                }
            }
        }
        // Comparing every pair of items is quadratic: bounded by a small `maxItems`.
        if out.unique_items && out.max_items.is_none_or(|m| m > MAX_UNIQUE_ITEMS) {
            return Err((
                "/uniqueItems".into(),
                format!("`uniqueItems` needs a `maxItems` of at most {MAX_UNIQUE_ITEMS}"),
            ));
        }
        Ok(out)
    }

    /// Checks a value; `Err`: where in it (a JSON pointer, `""` for the value itself) and the
    /// keyword it breaks.
    pub fn check(&self, v: &Value) -> Result<(), (String, &'static str)> {
        let fail = |keyword| Err((String::new(), keyword));
        if let Some((allowed, keyword)) = &self.one_of_values {
            if !allowed.iter().any(|a| same(a, v)) {
                return fail(*keyword);
            }
        }
        match v {
            Value::String(s) => {
                let len = s.chars().count() as u64;
                if self.min_length.is_some_and(|m| len < m) {
                    return fail("minLength");
                }
                if self.max_length.is_some_and(|m| len > m) {
                    return fail("maxLength");
                }
                if self.pattern.as_ref().is_some_and(|p| !p.is_match(s)) {
                    return fail("pattern");
                }
                if self.format.is_some_and(|f| !f.holds(s)) {
                    return fail("format");
                }
            }
            Value::Number(n) => {
                let x = n.as_f64().unwrap_or(f64::NAN);
                if let Some(b) = self.minimum {
                    if x < b.value || (b.exclusive && x == b.value) {
                        return fail(b.keyword);
                    }
                }
                if let Some(b) = self.maximum {
                    if x > b.value || (b.exclusive && x == b.value) {
                        return fail(b.keyword);
                    }
                }
                if let Some(m) = self.multiple_of {
                    if !multiple_of(n, m) {
                        return fail("multipleOf");
                    }
                }
            }
            Value::Array(items) => {
                let len = items.len() as u64;
                if self.min_items.is_some_and(|m| len < m) {
                    return fail("minItems");
                }
                if self.max_items.is_some_and(|m| len > m) {
                    return fail("maxItems");
                }
                if self.unique_items
                    && items
                        .iter()
                        .enumerate()
                        .any(|(i, a)| items[..i].iter().any(|b| same(a, b)))
                {
                    return fail("uniqueItems");
                }
                if let Some(schema) = &self.items {
                    for (i, item) in items.iter().enumerate() {
                        schema
                            .check(item)
                            .map_err(|(at, k)| (format!("/{i}{at}"), k))?;
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// JSON equality, numbers compared by value (`1` is `1.0`).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(x), Some(y)) => x == y,
            _ => x.as_f64() == y.as_f64(),
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
        }
        _ => a == b,
    }
}

fn multiple_of(n: &Number, m: f64) -> bool {
    if let (Some(x), true) = (n.as_i64(), m.fract() == 0.0 && m <= i64::MAX as f64) {
        // Whole numbers: exact.
        return x % (m as i64) == 0;
    }
    let q = n.as_f64().unwrap_or(f64::NAN) / m;
    q.is_finite() && (q - q.round()).abs() <= q.abs().max(1.0) * f64::EPSILON * 4.0
}

impl Format {
    fn holds(self, s: &str) -> bool {
        match self {
            Format::Date => date(s),
            Format::Time => time(s),
            Format::DateTime => s
                .split_once(['T', 't'])
                .is_some_and(|(d, t)| date(d) && time(t)),
            Format::Uuid => uuid(s),
            Format::Ipv4 => s.parse::<std::net::Ipv4Addr>().is_ok(),
            Format::Ipv6 => !s.contains('%') && s.parse::<std::net::Ipv6Addr>().is_ok(),
        }
    }
}

fn digits(s: &str, n: usize) -> Option<u32> {
    (s.len() == n && s.bytes().all(|b| b.is_ascii_digit()))
        .then(|| s.parse().ok())
        .flatten()
}

/// RFC 3339 `full-date`, with the month's real length.
fn date(s: &str) -> bool {
    let mut parts = s.split('-');
    let (Some(y), Some(m), Some(d), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let (Some(y), Some(m), Some(d)) = (digits(y, 4), digits(m, 2), digits(d, 2)) else {
        return false;
    };
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    (1..=days).contains(&d)
}

/// RFC 3339 `full-time`: `hh:mm:ss[.frac]` and `Z` or `±hh:mm` (a leap second allowed).
fn time(s: &str) -> bool {
    let (clock, offset) = match s.find(['Z', 'z', '+', '-']) {
        Some(i) => s.split_at(i),
        None => return false,
    };
    let offset_ok = match offset {
        "Z" | "z" => true,
        o => {
            let hm = &o[1..];
            hm.split_once(':').is_some_and(|(h, m)| {
                digits(h, 2).is_some_and(|h| h < 24) && digits(m, 2).is_some_and(|m| m < 60)
            })
        }
    };
    let (hms, frac) = match clock.split_once('.') {
        Some((hms, f)) => (hms, Some(f)),
        None => (clock, None),
    };
    let mut p = hms.split(':');
    let (Some(h), Some(m), Some(sec), None) = (p.next(), p.next(), p.next(), p.next()) else {
        return false;
    };
    offset_ok
        && frac.is_none_or(|f| !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()))
        && digits(h, 2).is_some_and(|h| h < 24)
        && digits(m, 2).is_some_and(|m| m < 60)
        && digits(sec, 2).is_some_and(|s| s <= 60)
}

/// `8-4-4-4-12` hex digits.
fn uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;
    use serde_json::json;

    fn schema(s: Value) -> ValueSchema {
        ValueSchema::compile(s.as_object().unwrap()).unwrap()
    }

    fn keyword(s: &ValueSchema, v: Value) -> Option<&'static str> {
        s.check(&v).err().map(|(_, k)| k)
    }

    #[test]
    fn each_keyword_holds() {
        let s = schema(
            json!({"type": "number", "minimum": 1, "exclusiveMaximum": 10, "multipleOf": 0.5}),
        );
        assert_eq!(keyword(&s, json!(1)), None);
        assert_eq!(keyword(&s, json!(9.5)), None);
        assert_eq!(keyword(&s, json!(0.5)), Some("minimum"));
        assert_eq!(keyword(&s, json!(10)), Some("exclusiveMaximum"));
        assert_eq!(keyword(&s, json!(1.2)), Some("multipleOf"));
        let s = schema(json!({"type": "number", "enum": [1, 2]}));
        assert_eq!(keyword(&s, json!(2)), None);
        assert_eq!(keyword(&s, json!(2.0)), None, "numbers compare by value");
        assert_eq!(keyword(&s, json!(3)), Some("enum"));
        let s = schema(
            json!({"type": "string", "minLength": 2, "maxLength": 3, "pattern": "^[a-zé]+$"}),
        );
        assert_eq!(keyword(&s, json!("éé")), None, "lengths count characters");
        assert_eq!(keyword(&s, json!("a")), Some("minLength"));
        assert_eq!(keyword(&s, json!("abcd")), Some("maxLength"));
        assert_eq!(keyword(&s, json!("AB")), Some("pattern"));
        let s = schema(json!({"type": "array", "uniqueItems": true, "maxItems": 3,
            "items": {"type": "number", "maximum": 5}}));
        assert_eq!(keyword(&s, json!([1, 2])), None);
        assert_eq!(keyword(&s, json!([1, 1.0])), Some("uniqueItems"));
        assert_eq!(keyword(&s, json!([1, 2, 3, 4])), Some("maxItems"));
        assert_eq!(
            s.check(&json!([1, 9])).err(),
            Some(("/1".to_owned(), "maximum"))
        );
    }

    #[test]
    fn formats_are_checked_by_their_rfcs() {
        let holds = |f: &str, v: &str| {
            schema(json!({"type": "string", "format": f}))
                .check(&json!(v))
                .is_ok()
        };
        assert!(holds("date", "2024-02-29"));
        assert!(!holds("date", "2023-02-29"));
        assert!(!holds("date", "2024-13-01"));
        assert!(!holds("date", "24-01-01"));
        assert!(holds("date-time", "2024-01-01T10:00:00Z"));
        assert!(holds("date-time", "2024-01-01t10:00:00.123+02:00"));
        assert!(!holds("date-time", "2024-01-01 10:00:00Z"));
        assert!(!holds("date-time", "2024-01-01T25:00:00Z"));
        assert!(!holds("time", "10:00:00"));
        assert!(holds("uuid", "7c9e6679-7425-40de-944b-e07fc1f90ae7"));
        assert!(!holds("uuid", "7c9e6679742540de944be07fc1f90ae7"));
        assert!(holds("ipv4", "192.0.2.1"));
        assert!(!holds("ipv4", "192.0.2.01"));
        assert!(holds("ipv6", "2001:db8::1"));
        assert!(!holds("ipv6", "fe80::1%eth0"));
    }

    #[test]
    fn what_is_not_checked_is_refused() {
        let refused = |s: Value| ValueSchema::compile(s.as_object().unwrap()).unwrap_err().0;
        assert_eq!(refused(json!({"type": "string", "oneOf": []})), "/oneOf");
        assert_eq!(
            refused(json!({"type": "string", "format": "email"})),
            "/format"
        );
        assert_eq!(
            refused(json!({"type": "string", "pattern": "(?<=a)b"})),
            "/pattern"
        );
        assert_eq!(
            refused(json!({"type": "array", "items": {"type": "string", "not": {}}})),
            "/items/not"
        );
        assert_eq!(
            refused(json!({"type": "number", "multipleOf": 0})),
            "/multipleOf"
        );
        assert!(ValueSchema::compile(
            json!({"type": "string", "format": "password"})
                .as_object()
                .unwrap()
        )
        .is_ok());
        // Review findings: what would silently never hold a value to anything.
        assert_eq!(
            refused(json!({"maximum": 100})),
            "/type",
            "no type: a guess"
        );
        assert_eq!(refused(json!({"type": ["string", "integer"]})), "/type");
        assert_eq!(
            refused(json!({"type": "string", "maximum": 100})),
            "/maximum"
        );
        assert_eq!(
            refused(json!({"type": "integer", "pattern": "^1"})),
            "/pattern"
        );
        assert_eq!(refused(json!({"type": "string", "pattern": 7})), "/pattern");
        assert_eq!(
            refused(json!({"type": "string", "format": "int32"})),
            "/format"
        );
        assert_eq!(
            refused(json!({"type": "array", "uniqueItems": true, "items": {"type": "string"}})),
            "/uniqueItems",
            "pairwise comparison needs a small maxItems"
        );
        assert_eq!(
            refused(
                json!({"type": "array", "uniqueItems": "yes", "maxItems": 2, "items": {"type": "string"}})
            ),
            "/uniqueItems"
        );
    }
}
