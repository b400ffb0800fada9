//! The reshaping path: the calls' bodies parsed and put together by the `nested`, `merge` or
//! `concat` layout, then derived fields. A body that does not fit the layout is reported.
//!
//! Keys are unique by construction (serde_json's `Map` holds one value per key), and the
//! completeness object's key is kept free for the filter (SPEC §4): `merge` drops a body's
//! top-level key of that name, and derived fields cannot be written there (refused at load,
//! like call names and `as` equal to it).

use super::CallView;
use crate::config::Layout;
use crate::json_number;
use crate::json_number::Inexact;
use crate::outcome::{Failure, Reason};
use crate::shape::{deep_merge, ResponseShape};
use serde_json::{Map, Value};

/// The answer's JSON, and what `_meta` reports about it.
pub struct Assembled<'a, 's> {
    pub body: Vec<u8>,
    /// Calls whose bodies did not fit the layout.
    pub misfits: Vec<(&'a str, Failure)>,
    /// Derived fields written as `null` because their value could not be exact: output path
    /// and why.
    pub inexact: Vec<(&'s str, Inexact)>,
}

/// Puts the calls' bodies together by the route's layout, then writes the derived fields.
/// `meta` is the completeness object's key, which the document leaves out for the filter to
/// add.
pub fn document<'a, 's>(
    calls: &[CallView<'a>],
    shape: &'s ResponseShape,
    meta: Option<&str>,
) -> Assembled<'a, 's> {
    let mut misfits = Vec::new();
    let bodies = calls
        .iter()
        .filter_map(|call| Some((call, json_number::parse(call.output.as_ref()?).ok()?)));
    let mut document = match shape.layout {
        Layout::Nested => Value::Object(
            bodies
                .map(|(call, body)| (call.name.to_string(), body))
                .collect(),
        ),
        Layout::Merge => {
            let mut merged = Value::Object(Map::new());
            for (call, body) in bodies {
                match body {
                    body if call.keyed => deep_merge(&mut merged, keyed(call.name, body)),
                    Value::Object(map) => merge_top_level(&mut merged, map, meta, call.name),
                    _ => misfits.push((
                        call.name,
                        misfit("is not an object, so it cannot be merged"),
                    )),
                }
            }
            merged
        }
        Layout::Concat => {
            let mut items = Vec::new();
            for (call, body) in bodies {
                match body {
                    Value::Array(list) => items.extend(list),
                    _ => misfits.push((
                        call.name,
                        misfit("is not an array, so it cannot be concatenated"),
                    )),
                }
            }
            if let Some(sort) = &shape.sort {
                sort.apply(&mut items);
            }
            if let Some(limit) = shape.limit {
                items.truncate(limit);
            }
            Value::Array(items)
        }
    };
    let inexact = shape
        .derive
        .iter()
        .filter_map(|derived| Some((derived.out.as_str(), derived.apply(&mut document)?)))
        .collect();
    Assembled {
        body: serde_json::to_vec(&document).unwrap_or_default(),
        misfits,
        inexact,
    }
}

/// [`deep_merge`] of one body's top-level keys into the document, but for the completeness
/// object's key, which is dropped: the meta object is the filter's own (SPEC §4).
fn merge_top_level(merged: &mut Value, body: Map<String, Value>, meta: Option<&str>, call: &str) {
    let Value::Object(target) = merged else {
        return;
    };
    for (key, value) in body {
        if Some(key.as_str()) == meta {
            log::debug!(
                "call {call}: top-level key {key:?} dropped: the meta object is the filter's own"
            );
            continue;
        }
        match target.get_mut(&key) {
            Some(existing) => deep_merge(existing, value),
            None => {
                target.insert(key, value);
            }
        }
    }
}

fn keyed(key: &str, body: Value) -> Value {
    let mut map = Map::with_capacity(1);
    map.insert(key.to_string(), body);
    Value::Object(map)
}

fn misfit(why: &str) -> Failure {
    Failure::new(Reason::InvalidBody).with_detail(format!("body {why} by the route's layout"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::CallStatus;
    use crate::shape::compile_response;
    use serde_json::json;

    fn view<'a>(name: &'a str, body: &'static str, keyed: bool) -> CallView<'a> {
        CallView {
            keyed,
            ..CallView::sample(name, Some(body), CallStatus::Succeeded, Some(1))
        }
    }

    fn shape(response: Value) -> ResponseShape {
        let config = crate::config::parse(
            json!({"routes": [{"name": "r", "match": {"path": "/"}, "response": response,
                   "calls": [{"name": "a", "cluster": "c", "path": "/"}]}]})
            .to_string()
            .as_bytes(),
        )
        .unwrap();
        compile_response(&config.routes[0].response).unwrap()
    }

    fn run(calls: &[CallView<'_>], response: Value) -> (Value, Vec<String>) {
        let shape = shape(response);
        let assembled = document(calls, &shape, Some("_meta"));
        (
            serde_json::from_slice(&assembled.body).unwrap(),
            assembled
                .misfits
                .into_iter()
                .map(|(n, _)| n.to_string())
                .collect(),
        )
    }

    #[test]
    fn merge_nests_keyed_calls_and_reports_misfits() {
        let calls = [
            view("a", r#"{"x":{"y":1},"l":[1]}"#, false),
            view("b", r#"{"x":{"z":2},"l":[2]}"#, false),
            view("n", "3", true),
            view("s", "\"text\"", false),
        ];
        let (doc, misfits) = run(&calls, json!({"layout": "merge"}));
        assert_eq!(doc, json!({"x": {"y": 1, "z": 2}, "l": [1, 2], "n": 3}));
        assert_eq!(misfits, ["s"]);
    }

    #[test]
    fn merge_drops_an_upstream_meta_key_at_the_top_only() {
        let calls = [
            view("m", r#"{"_meta":{"complete":true,"page":2},"x":1}"#, false),
            view(
                "n",
                r#"{"y":{"_meta":"kept"},"\u005fmeta":"escaped"}"#,
                false,
            ),
            view("k", r#"{"_meta":3}"#, true),
        ];
        let (doc, misfits) = run(&calls, json!({"layout": "merge"}));
        assert_eq!(
            doc,
            json!({"x": 1, "y": {"_meta": "kept"}, "k": {"_meta": 3}})
        );
        assert!(misfits.is_empty());
        let status = shape(json!({"layout": "merge"}));
        let assembled = document(&calls[..1], &status, Some("status"));
        let doc: Value = serde_json::from_slice(&assembled.body).unwrap();
        assert_eq!(
            doc["_meta"],
            json!({"complete": true, "page": 2}),
            "only the configured name is the filter's"
        );
    }

    #[test]
    fn concat_sorts_limits_and_reports_misfits() {
        let calls = [
            view("a", r#"[{"v":1},{"v":3}]"#, false),
            view("b", r#"[{"v":2}]"#, false),
            view("c", "{}", false),
        ];
        let (doc, misfits) = run(
            &calls,
            json!({"layout": "concat", "sort_by": "v", "limit": 2}),
        );
        assert_eq!(doc, json!([{"v": 1}, {"v": 2}]));
        assert_eq!(misfits, ["c"]);
    }

    #[test]
    fn layouts_keep_numbers_as_written_and_keys_in_arrival_order() {
        let text = |calls: &[CallView<'_>], response: Value| {
            let shape = shape(response);
            String::from_utf8(document(calls, &shape, Some("_meta")).body).unwrap()
        };
        let calls = [
            view(
                "a",
                r#"{"z":123456789012345678901234567890,"a":1.10}"#,
                false,
            ),
            view("b", r#"{"m":1E+2,"z":-0}"#, false),
        ];
        assert_eq!(
            text(&calls, json!({"layout": "merge"})),
            r#"{"z":-0,"a":1.10,"m":1E+2}"#
        );
        assert_eq!(
            text(&calls, json!({"derive": {"n": {"max": "a.z"}}})),
            r#"{"a":{"z":123456789012345678901234567890,"a":1.10},"b":{"m":1E+2,"z":-0},"n":123456789012345678901234567890}"#
        );
        let shards = [
            view("a", r#"[{"v":9007199254740993},{"v":1.10}]"#, false),
            view("b", r#"[{"v":9007199254740992},{"v":1E+2}]"#, false),
        ];
        assert_eq!(
            text(
                &shards,
                json!({"layout": "concat", "sort_by": "v", "order": "desc"})
            ),
            r#"[{"v":9007199254740993},{"v":9007199254740992},{"v":1E+2},{"v":1.10}]"#
        );
    }

    #[test]
    fn nested_with_derived_fields() {
        let calls = [view("r", r#"{"items":[1,2,3]}"#, false)];
        let (doc, _) = run(
            &calls,
            json!({"derive": {"n": {"count": "r.items"}, "total": {"sum": "r.items"}}}),
        );
        assert_eq!(doc, json!({"r": {"items": [1, 2, 3]}, "n": 3, "total": 6}));
    }
}
