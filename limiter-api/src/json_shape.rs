//! A shape check that serde's derive cannot express.
//!
//! serde's derived `Deserialize` also accepts a struct written as a JSON array of its fields in
//! order, so `{"rate_limit": ["limiter"]}` would silently be read as
//! `{"rate_limit": {"cluster": "limiter"}}`. No attribute turns that off, so strict inputs (the
//! plugin configuration, the limiter's requests) are checked against this after parsing: an
//! array may stand only where the schema has one.
//!
//! It lives in the wire crate because both the limiter's request checks and the core's
//! configuration checks use it, and this crate depends on nothing of the core.

use serde_json::Value;

/// Where a schema has arrays.
pub struct Shape<'a> {
    /// Fields whose value is an array.
    pub arrays: &'a [&'a str],
    /// Fields whose value is an object of arrays (e.g. `tiers: {name: [...]}`).
    pub maps_of_arrays: &'a [&'a str],
    /// Fields whose value is free-form JSON, not descended into.
    pub opaque: &'a [&'a str],
}

/// The JSON path of the first array that stands for an object (`(root)` for the top level).
pub fn array_for_object(root: &Value, shape: &Shape<'_>) -> Option<String> {
    if !root.is_object() {
        return Some("(root)".to_owned());
    }
    walk(root, "", shape)
}

fn walk(v: &Value, path: &str, shape: &Shape<'_>) -> Option<String> {
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                let at = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                let key = k.as_str();
                if shape.opaque.contains(&key) {
                    continue;
                }
                if shape.maps_of_arrays.contains(&key) {
                    if let Value::Object(m) = child {
                        for (name, arr) in m {
                            if let Some(bad) = walk_array(arr, &format!("{at}.{name}"), shape) {
                                return Some(bad);
                            }
                        }
                    }
                    continue;
                }
                if shape.arrays.contains(&key) {
                    if let Some(bad) = walk_array(child, &at, shape) {
                        return Some(bad);
                    }
                    continue;
                }
                if child.is_array() {
                    return Some(at);
                }
                if let Some(bad) = walk(child, &at, shape) {
                    return Some(bad);
                }
            }
            None
        }
        _ => None,
    }
}

/// Elements of a schema array are objects or scalars, never arrays.
fn walk_array(v: &Value, path: &str, shape: &Shape<'_>) -> Option<String> {
    let Value::Array(items) = v else {
        return walk(v, path, shape);
    };
    for (i, item) in items.iter().enumerate() {
        let at = format!("{path}[{i}]");
        if item.is_array() {
            return Some(at);
        }
        if let Some(bad) = walk(item, &at, shape) {
            return Some(bad);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;
    use serde_json::json;

    const SHAPE: Shape<'static> = Shape {
        arrays: &["list"],
        maps_of_arrays: &["tiers"],
        opaque: &["data"],
    };

    #[test]
    fn arrays_only_where_the_schema_has_them() {
        assert_eq!(array_for_object(&json!([]), &SHAPE), Some("(root)".into()));
        assert_eq!(
            array_for_object(&json!({"a": [1]}), &SHAPE),
            Some("a".into())
        );
        assert_eq!(
            array_for_object(&json!({"a": {"b": []}}), &SHAPE),
            Some("a.b".into())
        );
        assert_eq!(
            array_for_object(&json!({"list": [{"x": 1}, [1]]}), &SHAPE),
            Some("list[1]".into())
        );
        assert_eq!(
            array_for_object(&json!({"list": [{"x": [1]}]}), &SHAPE),
            Some("list[0].x".into())
        );
        assert_eq!(
            array_for_object(&json!({"tiers": {"s": [[1]]}}), &SHAPE),
            Some("tiers.s[0]".into())
        );
        assert_eq!(
            array_for_object(
                &json!({"tiers": {"s": [{"a": 1}]}, "data": [[1]], "list": [1, "x"]}),
                &SHAPE
            ),
            None
        );
    }
}
