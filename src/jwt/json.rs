//! A strict JSON reader for token headers and claims.
//!
//! RFC 7515 §4 and RFC 8725 §3.x: a JOSE header with duplicate member names must be rejected,
//! and claim sets are held to the same rule, because two parsers that pick different duplicates
//! (first vs last) let an attacker show one value to the verifier and another to the upstream.
//! serde_json keeps the last duplicate silently and has no option to refuse, so this module
//! drives serde_json with a visitor of its own that refuses duplicates and bounds nesting depth.

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, Error as _, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StrictJsonError {
    #[error("invalid JSON: {0}")]
    Syntax(String),
    #[error("duplicate member `{0}`")]
    Duplicate(String),
    #[error("nested deeper than {0} levels")]
    TooDeep(usize),
}

/// Parses `bytes` as one JSON value, refusing duplicate member names and nesting deeper than
/// `max_depth` (an object or array opens a level).
pub fn parse(bytes: &[u8], max_depth: usize) -> Result<Value, StrictJsonError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = Strict {
        depth: max_depth,
        max: max_depth,
    }
    .deserialize(&mut de)
    .map_err(classify)?;
    de.end()
        .map_err(|e| StrictJsonError::Syntax(e.to_string()))?;
    Ok(value)
}

/// Our own errors travel through serde_json as custom messages with these prefixes.
const DUP: &str = "\u{0}duplicate:";
const DEEP: &str = "\u{0}depth:";

fn classify(e: serde_json::Error) -> StrictJsonError {
    let msg = e.to_string();
    if let Some(rest) = msg.strip_prefix(DUP) {
        // serde_json appends " at line L column C"; the member name is before it.
        let name = rest.rsplit_once(" at line ").map_or(rest, |(n, _)| n);
        StrictJsonError::Duplicate(name.to_owned())
    } else if let Some(rest) = msg.strip_prefix(DEEP) {
        let n = rest
            .split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        StrictJsonError::TooDeep(n)
    } else {
        StrictJsonError::Syntax(msg)
    }
}

#[derive(Clone, Copy)]
struct Strict {
    /// Levels still allowed below this value.
    depth: usize,
    max: usize,
}

impl Strict {
    fn deeper<E: serde::de::Error>(self) -> Result<Strict, E> {
        match self.depth.checked_sub(1) {
            Some(depth) => Ok(Strict { depth, ..self }),
            None => Err(E::custom(format_args!("{DEEP}{}", self.max))),
        }
    }
}

impl<'de> DeserializeSeed<'de> for Strict {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Strict {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Value, E> {
        Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("non-finite number"))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let inner = self.deeper()?;
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(inner)? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let inner = self.deeper()?;
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(A::Error::custom(format_args!("{DUP}{key}")));
            }
            let v = map.next_value_seed(inner)?;
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    #[test]
    fn parses_ordinary_json() {
        let v = parse(br#"{"a":[1,2.5,"x",{"b":null}],"c":true}"#, 8).unwrap();
        assert_eq!(v["a"][3]["b"], Value::Null);
        assert_eq!(v["a"][1], 2.5);
    }

    #[test]
    fn refuses_duplicates_at_any_depth() {
        assert_eq!(
            parse(br#"{"alg":"RS256","alg":"none"}"#, 8),
            Err(StrictJsonError::Duplicate("alg".into()))
        );
        assert_eq!(
            parse(br#"{"a":{"sub":"x","sub":"y"}}"#, 8),
            Err(StrictJsonError::Duplicate("sub".into()))
        );
        // Escapes decode before comparison: "\u0061" is "a".
        assert_eq!(
            parse(br#"{"a":1,"\u0061":2}"#, 8),
            Err(StrictJsonError::Duplicate("a".into()))
        );
    }

    #[test]
    fn bounds_depth() {
        assert!(parse(br#"{"a":{"b":[1]}}"#, 3).is_ok());
        assert_eq!(
            parse(br#"{"a":{"b":[1]}}"#, 2),
            Err(StrictJsonError::TooDeep(2))
        );
        let deep = "[".repeat(10_000) + &"]".repeat(10_000);
        assert!(parse(deep.as_bytes(), 32).is_err());
    }

    #[test]
    fn refuses_trailing_bytes_and_garbage() {
        assert!(matches!(parse(b"{} x", 4), Err(StrictJsonError::Syntax(_))));
        assert!(matches!(parse(b"\xff", 4), Err(StrictJsonError::Syntax(_))));
    }
}
