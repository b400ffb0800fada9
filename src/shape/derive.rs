//! Derived fields (SPEC §5): `count`, `sum`, `min`, `max`, `coalesce`, `concat` over paths of
//! the answer. Absent inputs give `null`, never an error. Nothing more: business logic belongs
//! in services.

use crate::config::ConfigError;
use crate::json_number::{self, Inexact};
use crate::json_path::{Found, JsonPath};
use serde_json::{Number, Value};
use std::cmp::Ordering;

/// The operation of a derived field, with the paths it reads. Numbers are compared and added
/// exactly, as written (`json_number`); non-numbers are skipped.
#[derive(Debug)]
pub enum Op {
    /// How many elements (of the array found, or matches of `[*]`), or keys of an object.
    Count(JsonPath),
    /// The exact sum of the numbers found (an array's elements, or `[*]` matches); `null` when
    /// it cannot be exact.
    Sum(JsonPath),
    /// The smallest number found, as written (the first of equals).
    Min(JsonPath),
    /// The largest number found, as written (the first of equals).
    Max(JsonPath),
    /// The first non-null value of the paths.
    Coalesce(Vec<JsonPath>),
    /// The arrays at the paths, concatenated.
    Concat(Vec<JsonPath>),
}

/// One `response.derive` entry (SPEC §5): a field written into the answer, computed from it.
#[derive(Debug)]
pub struct Derived {
    /// Where the value is written: a non-empty path without `[*]`.
    pub out: JsonPath,
    /// What is computed; with nothing to compute from, the value is `null`.
    pub op: Op,
}

impl Derived {
    /// Compiles one `response.derive` entry (SPEC §5), `"out.path": {"count": "reviews.items"}`:
    /// `out` a dot path without `[*]`, `op` an object with one operation (`count`, `sum`, `min`,
    /// `max` take a path; `coalesce`, `concat` a non-empty list of paths).
    ///
    /// Errors are at the key `response.derive.<out>`, without the route: the caller places them
    /// ([`Place::locate`](crate::config::Place::locate)).
    pub fn compile(out: &str, op: &Value) -> Result<Derived, ConfigError> {
        Derived::compile_op(out, op)
            .map_err(|why| ConfigError::at(format!("response.derive.{out}"), why))
    }

    fn compile_op(out: &str, op: &Value) -> Result<Derived, String> {
        let out_path = JsonPath::parse(out)?;
        if out.is_empty() || out_path.has_wildcard() {
            return Err("the output must be a non-empty path without [*]".to_string());
        }
        let Some((name, argument)) = op
            .as_object()
            .filter(|o| o.len() == 1)
            .and_then(|o| o.iter().next())
        else {
            return Err("must be one operation, like {\"count\": \"reviews.items\"}".to_string());
        };
        let path = || match argument.as_str() {
            Some(text) => JsonPath::parse(text),
            None => Err(format!("{name} takes one path (a string)")),
        };
        let paths = || match argument.as_array() {
            Some(list) if !list.is_empty() => list
                .iter()
                .map(|p| {
                    p.as_str()
                        .ok_or_else(|| format!("{name} takes a list of paths"))
                        .and_then(JsonPath::parse)
                })
                .collect::<Result<Vec<_>, _>>(),
            _ => Err(format!("{name} takes a non-empty list of paths")),
        };
        let op = match name.as_str() {
            "count" => Op::Count(path()?),
            "sum" => Op::Sum(path()?),
            "min" => Op::Min(path()?),
            "max" => Op::Max(path()?),
            "coalesce" => Op::Coalesce(paths()?),
            "concat" => Op::Concat(paths()?),
            other => {
                return Err(format!(
                    "unknown operation \"{other}\" (count, sum, min, max, coalesce, concat)"
                ))
            }
        };
        Ok(Derived { out: out_path, op })
    }

    /// Computes the value from `doc` and writes it at the output path. A `sum` that cannot
    /// be exact writes `null` and returns why, for `_meta.derive`.
    pub fn apply(&self, doc: &mut Value) -> Option<Inexact> {
        let (value, inexact) = match self.evaluate(doc) {
            Ok(value) => (value, None),
            Err(why) => (Value::Null, Some(why)),
        };
        self.out.insert(doc, value);
        inexact
    }

    fn evaluate(&self, doc: &Value) -> Result<Value, Inexact> {
        Ok(match &self.op {
            Op::Count(path) => match path.find(doc) {
                Found::Many(found) => Value::from(found.len()),
                Found::One(Value::Array(items)) => Value::from(items.len()),
                Found::One(Value::Object(map)) => Value::from(map.len()),
                _ => Value::Null,
            },
            // Exact decimal arithmetic: big integers and decimals add without rounding.
            Op::Sum(path) => json_number::sum(numbers(path.find(doc)).into_iter())?
                .map_or(Value::Null, Value::Number),
            Op::Min(path) => extreme(numbers(path.find(doc)), Ordering::Less),
            Op::Max(path) => extreme(numbers(path.find(doc)), Ordering::Greater),
            Op::Coalesce(paths) => paths
                .iter()
                .find_map(|path| match path.find(doc) {
                    Found::One(value) if !value.is_null() => Some(value.clone()),
                    Found::Many(values) => values.into_iter().find(|v| !v.is_null()).cloned(),
                    _ => None,
                })
                .unwrap_or(Value::Null),
            Op::Concat(paths) => {
                let mut out = Vec::new();
                let mut any = false;
                for path in paths {
                    match path.find(doc) {
                        Found::One(Value::Array(items)) => {
                            any = true;
                            out.extend(items.iter().cloned());
                        }
                        Found::Many(values) => {
                            any = true;
                            for value in values {
                                match value {
                                    Value::Array(items) => out.extend(items.iter().cloned()),
                                    other => out.push(other.clone()),
                                }
                            }
                        }
                        _ => {}
                    }
                }
                if any {
                    Value::Array(out)
                } else {
                    Value::Null
                }
            }
        })
    }
}

/// The numbers a path finds: one, every match under `[*]`, or the elements of an array.
fn numbers(found: Found<'_>) -> Vec<&Number> {
    let values: Vec<&Value> = match found {
        Found::Nothing => Vec::new(),
        Found::One(Value::Array(items)) => items.iter().collect(),
        Found::One(value) => vec![value],
        Found::Many(values) => values,
    };
    values
        .into_iter()
        .filter_map(|v| match v {
            Value::Number(n) => Some(n),
            _ => None,
        })
        .collect()
}

/// The smallest or largest number by exact value, as it was written; the first of equals.
fn extreme(values: Vec<&Number>, wanted: Ordering) -> Value {
    values
        .into_iter()
        .reduce(|best, n| {
            if json_number::compare(n, best) == wanted {
                n
            } else {
                best
            }
        })
        .map_or(Value::Null, |n| Value::Number(n.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn derive(out: &str, op: Value, doc: &Value) -> Value {
        let mut doc = doc.clone();
        Derived::compile(out, &op).unwrap().apply(&mut doc);
        JsonPath::parse(out).unwrap().take(&mut doc).unwrap()
    }

    fn doc() -> Value {
        json!({"reviews": {"items": [{"stars": 4}, {"stars": 5}, {"stars": 2, "extra": true}, {"text": "no stars"}]},
               "prices": [9.5, 12, 3], "a": null, "b": {"c": "found"}, "tags1": ["x"], "tags2": ["y", "z"]})
    }

    #[test]
    fn count_sum_min_max_over_wildcards_and_arrays() {
        let d = doc();
        assert_eq!(derive("n", json!({"count": "reviews.items"}), &d), json!(4));
        assert_eq!(
            derive("n", json!({"count": "reviews.items[*].stars"}), &d),
            json!(3)
        );
        assert_eq!(
            derive("s", json!({"sum": "reviews.items[*].stars"}), &d),
            json!(11)
        );
        assert_eq!(derive("s", json!({"sum": "prices"}), &d), json!(24.5));
        assert_eq!(
            derive("m", json!({"max": "reviews.items[*].stars"}), &d),
            json!(5)
        );
        assert_eq!(derive("m", json!({"min": "prices"}), &d), json!(3));
    }

    fn derive_text(op: Value, doc: &str) -> (String, Option<Inexact>) {
        let mut doc = crate::json_number::parse(doc.as_bytes()).unwrap();
        let inexact = Derived::compile("out", &op).unwrap().apply(&mut doc);
        (doc["out"].to_string(), inexact)
    }

    #[test]
    fn min_max_and_coalesce_return_the_inputs_as_written() {
        let doc = r#"{"v":[1.10,123456789012345678901234567891,123456789012345678901234567890,1E+2,-0.5e1],"n":null,"s":1E+2}"#;
        assert_eq!(
            derive_text(json!({"max": "v"}), doc).0,
            "123456789012345678901234567891"
        );
        assert_eq!(derive_text(json!({"min": "v"}), doc).0, "-0.5e1");
        assert_eq!(derive_text(json!({"coalesce": ["n", "s"]}), doc).0, "1E+2");
        assert_eq!(
            derive_text(json!({"concat": ["v"]}), doc).0,
            "[1.10,123456789012345678901234567891,123456789012345678901234567890,1E+2,-0.5e1]"
        );
    }

    #[test]
    fn sums_are_exact_for_big_integers_and_decimals_alike() {
        let big = r#"{"v":[123456789012345678901234567890,1,9007199254740993]}"#;
        assert_eq!(
            derive_text(json!({"sum": "v"}), big),
            ("123456789012354686100489308884".to_string(), None)
        );
        let mixed = r#"{"v":[1.10,2,0.05]}"#;
        assert_eq!(
            derive_text(json!({"sum": "v"}), mixed),
            ("3.15".to_string(), None),
            "integers and decimals add exactly, to the finest scale of the inputs"
        );
        assert_eq!(
            derive_text(json!({"sum": "v"}), r#"{"v":[0.1,0.2]}"#).0,
            "0.3",
            "not 0.30000000000000004"
        );
        assert_eq!(
            derive_text(json!({"sum": "v"}), r#"{"v":[1e600,1e-600]}"#),
            ("null".to_string(), Some(Inexact::TooManyDigits)),
            "a sum that cannot be exact is null, never a rounded float"
        );
    }

    #[test]
    fn absent_inputs_give_null() {
        let d = doc();
        for op in [
            json!({"count": "nope"}),
            json!({"sum": "nope[*].x"}),
            json!({"max": "b.c"}),
            json!({"coalesce": ["a", "nope"]}),
            json!({"concat": ["nope"]}),
        ] {
            assert_eq!(derive("out", op.clone(), &d), Value::Null, "{op}");
        }
    }

    #[test]
    fn coalesce_and_concat() {
        let d = doc();
        assert_eq!(
            derive("x", json!({"coalesce": ["a", "nope", "b.c"]}), &d),
            json!("found")
        );
        assert_eq!(
            derive("x", json!({"concat": ["tags1", "tags2", "nope"]}), &d),
            json!(["x", "y", "z"])
        );
    }

    #[test]
    fn outputs_can_be_nested_paths() {
        let mut d = doc();
        Derived::compile("summary.review_count", &json!({"count": "reviews.items"}))
            .unwrap()
            .apply(&mut d);
        assert_eq!(d["summary"], json!({"review_count": 4}));
    }

    #[test]
    fn bad_operations_are_refused() {
        for op in [
            json!({"avg": "x"}),
            json!({"count": ["x"]}),
            json!({"coalesce": "x"}),
            json!({}),
            json!({"count": "a", "sum": "b"}),
            json!("count"),
        ] {
            assert!(Derived::compile("out", &op).is_err(), "{op}");
        }
        assert!(Derived::compile("a[*]", &json!({"count": "x"})).is_err());
    }
}
