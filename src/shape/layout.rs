//! The `merge` and `concat` layouts: a deterministic deep merge in configuration order, and
//! sorting concatenated arrays.

use crate::config::Order;
use crate::json_number;
use crate::json_path::{Found, JsonPath};
use serde_json::Value;
use std::cmp::Ordering;

/// Merges `from` into `into`: objects merge key by key, recursively; arrays at the same path
/// are concatenated; anything else from `from` wins. Configuration order is call order, so
/// the outcome never depends on which upstream answered first.
pub fn deep_merge(into: &mut Value, from: Value) {
    match (into, from) {
        (Value::Object(target), Value::Object(source)) => {
            for (key, value) in source {
                match target.get_mut(&key) {
                    Some(existing) => deep_merge(existing, value),
                    None => {
                        target.insert(key, value);
                    }
                }
            }
        }
        (Value::Array(target), Value::Array(source)) => target.extend(source),
        (slot, value) => *slot = value,
    }
}

/// `concat` sorting: by the value at `path` inside each element.
#[derive(Debug)]
pub struct Sort {
    /// `sort_by`: the value compared, inside each element.
    pub path: JsonPath,
    /// `order`: ascending (the default) or descending.
    pub order: Order,
}

impl Sort {
    /// Stable sort; elements without a sort key go last in either order.
    pub fn apply(&self, items: &mut [Value]) {
        items.sort_by(|a, b| {
            let (a, b) = (key(&self.path, a), key(&self.path, b));
            match (a, b) {
                (None, None) => Ordering::Equal,
                (None, Some(_)) => Ordering::Greater,
                (Some(_), None) => Ordering::Less,
                (Some(a), Some(b)) => match self.order {
                    Order::Asc => compare_sort_keys(a, b),
                    Order::Desc => compare_sort_keys(b, a),
                },
            }
        });
    }
}

fn key<'v>(path: &JsonPath, item: &'v Value) -> Option<&'v Value> {
    match path.find(item) {
        Found::One(Value::Null) | Found::Nothing | Found::Many(_) => None,
        Found::One(value) => Some(value),
    }
}

/// Numbers by exact value, strings by code point, booleans false first; across types numbers come
/// before strings, booleans, arrays and objects.
pub fn compare_sort_keys(a: &Value, b: &Value) -> Ordering {
    fn rank(v: &Value) -> u8 {
        match v {
            Value::Number(_) => 0,
            Value::String(_) => 1,
            Value::Bool(_) => 2,
            Value::Array(_) => 3,
            Value::Object(_) => 4,
            Value::Null => 5,
        }
    }
    match (a, b) {
        // Exactly, by value: ids beyond 2^53 and 30-digit amounts keep their order.
        (Value::Number(x), Value::Number(y)) => json_number::compare(x, y),
        (Value::String(x), Value::String(y)) => x.cmp(y),
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        _ => rank(a).cmp(&rank(b)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn objects_merge_arrays_concatenate_later_scalars_win() {
        let mut doc = json!({"a": {"x": 1, "list": [1]}, "s": "first", "keep": true});
        deep_merge(
            &mut doc,
            json!({"a": {"y": 2, "list": [2, 3]}, "s": "second"}),
        );
        deep_merge(
            &mut doc,
            json!({"a": {"x": {"now": "object"}}, "new": null}),
        );
        assert_eq!(
            doc,
            json!({"a": {"x": {"now": "object"}, "y": 2, "list": [1, 2, 3]}, "s": "second", "keep": true, "new": null})
        );
    }

    #[test]
    fn sorting_is_stable_and_puts_missing_keys_last() {
        let mut items = vec![
            json!({"id": "a", "score": 2}),
            json!({"id": "b"}),
            json!({"id": "c", "score": 10}),
            json!({"id": "d", "score": 2}),
            json!({"id": "e", "score": null}),
        ];
        let sort = |order| Sort {
            path: JsonPath::parse("score").unwrap(),
            order,
        };
        sort(Order::Asc).apply(&mut items);
        let ids: Vec<&str> = items.iter().map(|i| i["id"].as_str().unwrap()).collect();
        assert_eq!(ids, ["a", "d", "c", "b", "e"]);
        sort(Order::Desc).apply(&mut items);
        let ids: Vec<&str> = items.iter().map(|i| i["id"].as_str().unwrap()).collect();
        assert_eq!(ids, ["c", "a", "d", "b", "e"]);
    }

    #[test]
    fn merge_keeps_arrival_order_and_spelling() {
        let parse = |t: &str| crate::json_number::parse(t.as_bytes()).unwrap();
        let mut doc = parse(r#"{"z":{"id":123456789012345678901234567890},"a":1.10}"#);
        deep_merge(
            &mut doc,
            parse(r#"{"m":1E+2,"z":{"b":-0,"id":1e400},"a":2.50}"#),
        );
        assert_eq!(
            serde_json::to_string(&doc).unwrap(),
            r#"{"z":{"id":1e400,"b":-0},"a":2.50,"m":1E+2}"#
        );
    }

    #[test]
    fn big_numbers_sort_by_exact_value() {
        let mut items: Vec<Value> = [
            "123456789012345678901234567891",
            "123456789012345678901234567890",
            "9007199254740993",
            "9007199254740992",
            "1E+2",
            "99.99",
            "-9223372036854775809",
        ]
        .iter()
        .map(|n| crate::json_number::parse(format!(r#"{{"v":{n}}}"#).as_bytes()).unwrap())
        .collect();
        Sort {
            path: JsonPath::parse("v").unwrap(),
            order: Order::Asc,
        }
        .apply(&mut items);
        let sorted: Vec<String> = items.iter().map(|i| i["v"].to_string()).collect();
        assert_eq!(
            sorted,
            [
                "-9223372036854775809",
                "99.99",
                "1E+2",
                "9007199254740992",
                "9007199254740993",
                "123456789012345678901234567890",
                "123456789012345678901234567891"
            ]
        );
    }

    #[test]
    fn mixed_types_have_a_fixed_order() {
        assert_eq!(
            compare_sort_keys(&json!(10), &json!(9.5)),
            Ordering::Greater
        );
        assert_eq!(
            compare_sort_keys(&json!("b"), &json!("a")),
            Ordering::Greater
        );
        assert_eq!(compare_sort_keys(&json!(1), &json!("1")), Ordering::Less);
    }
}
