//! Per-call transforms, applied in this order: `extract`, `select`, `omit`, `rename`.
//! Missing paths are ignored: shaping never fails a call.

use crate::config::{CallConfig, ConfigError};
use crate::json_path::{self, JsonPath};
use serde_json::Value;

/// A call's transforms (SPEC §5), compiled once by [`CallShape::compile`] and applied to every
/// successful answer of the call before the layout; later calls' templates still read the
/// upstream body.
#[derive(Debug, Clone, PartialEq)]
pub struct CallShape {
    extract: Option<JsonPath>,
    select: Vec<JsonPath>,
    omit: Vec<JsonPath>,
    rename: Vec<(JsonPath, JsonPath)>,
}

impl CallShape {
    /// Compiles a call's `extract`, `select`, `omit` and `rename` (SPEC §5); `None` when the
    /// call has none, so its answer keeps its upstream bytes.
    ///
    /// Errors name the key (`extract`, …) but not the call: the caller places them
    /// ([`Place::locate`](crate::config::Place::locate)).
    pub fn compile(call: &CallConfig) -> Result<Option<CallShape>, ConfigError> {
        let parse =
            |key: &str, text: &str| JsonPath::parse(text).map_err(|why| ConfigError::at(key, why));
        let plain = |key: &str, text: &str| {
            let path = parse(key, text)?;
            if path.has_wildcard() || text.is_empty() {
                return Err(ConfigError::at(
                    key,
                    format!("\"{text}\" must be a non-empty path without [*]"),
                ));
            }
            Ok(path)
        };
        let shape = CallShape {
            extract: call
                .extract
                .as_deref()
                .map(|p| plain("extract", p))
                .transpose()?,
            select: call
                .select
                .iter()
                .map(|p| parse("select", p))
                .collect::<Result<_, _>>()?,
            omit: call
                .omit
                .iter()
                .map(|p| parse("omit", p))
                .collect::<Result<_, _>>()?,
            rename: call
                .rename
                .iter()
                .map(|(from, to)| Ok((plain("rename", from)?, plain("rename", to)?)))
                .collect::<Result<_, ConfigError>>()?,
        };
        let empty = shape.extract.is_none()
            && shape.select.is_empty()
            && shape.omit.is_empty()
            && shape.rename.is_empty();
        Ok((!empty).then_some(shape))
    }

    /// The reshaped JSON of an answer: `parsed` is its body if the caller has it parsed
    /// already, else `json` is parsed (exactly: numbers and key order as written). `None` only
    /// if serialising fails, which a `Value` never does.
    pub fn apply_to_json(&self, parsed: Option<Value>, json: &[u8]) -> Option<Vec<u8>> {
        let body = parsed
            .or_else(|| crate::json_number::parse(json).ok())
            .unwrap_or(Value::Null);
        serde_json::to_vec(&self.apply(body)).ok()
    }

    /// Applies the transforms in their order: `extract`, `select`, `omit`, `rename`.
    pub fn apply(&self, body: Value) -> Value {
        let mut body = match &self.extract {
            Some(path) => {
                let mut body = body;
                path.take(&mut body).unwrap_or(Value::Null)
            }
            None => body,
        };
        if !self.select.is_empty() {
            let selected = json_path::select(&self.select, &body);
            body = match (selected, &body) {
                (Value::Null, Value::Object(_)) => Value::Object(serde_json::Map::new()),
                (selected, _) => selected,
            };
        }
        for path in &self.omit {
            path.remove(&mut body);
        }
        for (from, to) in &self.rename {
            from.rename(to, &mut body);
        }
        body
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;
    use crate::testing;
    use serde_json::json;

    fn shape(call: &str) -> CallShape {
        let json = testing::route("r", "/")
            .calls(&format!(
                r#"{{"name":"c","cluster":"k","path":"/",{call}}}"#
            ))
            .config();
        let config = config::parse(json.as_bytes()).unwrap();
        CallShape::compile(&config.routes[0].calls[0])
            .unwrap()
            .unwrap()
    }

    const BODY: &str = r#"{"data":{"id":7,"name":"Lamp","internal":{"cost":3},"price":{"amount":9.5,"cur":"EUR"},
        "tags":[{"k":"a","v":1},{"k":"b","v":2}]},"meta":{"page":1}}"#;

    fn body() -> Value {
        serde_json::from_str(BODY).unwrap()
    }

    #[test]
    fn extract_omit_rename_apply_in_order() {
        let s = shape(
            r#""extract":"data","omit":["internal","tags[*].v"],"rename":{"price.amount":"price_eur","name":"title.text"}"#,
        );
        assert_eq!(
            s.apply(body()),
            json!({"id": 7, "title": {"text": "Lamp"}, "price": {"cur": "EUR"}, "price_eur": 9.5, "tags": [{"k": "a"}, {"k": "b"}]})
        );
    }

    #[test]
    fn select_keeps_nested_paths_with_their_parents() {
        let s = shape(r#""select":["data.id","data.price.amount","data.tags[*].k","nope"]"#);
        assert_eq!(
            s.apply(body()),
            json!({"data": {"id": 7, "price": {"amount": 9.5}, "tags": [{"k": "a"}, {"k": "b"}]}})
        );
        let none = shape(r#""select":["absent"]"#);
        assert_eq!(
            none.apply(body()),
            json!({}),
            "an object with nothing selected is empty"
        );
    }

    /// Numbers a float would change, and keys out of alphabetical order.
    const EXACT: &str = r#"{"data":{"id":123456789012345678901234567890,"snow":9007199254740993,"neg":-9223372036854775809,"price":1.10,"sci":1E+2,"deep":{"n":18446744073709551616},"z":1,"a":2},"x":0}"#;

    fn apply_exact(transforms: &str) -> String {
        let body = crate::json_number::parse(EXACT.as_bytes()).unwrap();
        serde_json::to_string(&shape(transforms).apply(body)).unwrap()
    }

    #[test]
    fn every_transform_keeps_numbers_as_written_and_keys_in_upstream_order() {
        assert_eq!(
            apply_exact(r#""extract":"data""#),
            r#"{"id":123456789012345678901234567890,"snow":9007199254740993,"neg":-9223372036854775809,"price":1.10,"sci":1E+2,"deep":{"n":18446744073709551616},"z":1,"a":2}"#
        );
        assert_eq!(
            apply_exact(r#""extract":"data","select":["a","deep.n","z","sci","id"]"#),
            r#"{"id":123456789012345678901234567890,"sci":1E+2,"deep":{"n":18446744073709551616},"z":1,"a":2}"#,
            "select keeps the upstream's order, not the order of the paths"
        );
        assert_eq!(
            apply_exact(r#""extract":"data","omit":["snow","deep"]"#),
            r#"{"id":123456789012345678901234567890,"neg":-9223372036854775809,"price":1.10,"sci":1E+2,"z":1,"a":2}"#,
            "omit closes the gap without reordering"
        );
        assert_eq!(
            apply_exact(r#""extract":"data","rename":{"price":"amount","deep.n":"n","a":"z"}"#),
            r#"{"id":123456789012345678901234567890,"snow":9007199254740993,"neg":-9223372036854775809,"amount":1.10,"sci":1E+2,"deep":{},"z":2,"n":18446744073709551616}"#,
            "a rename in place keeps the key's position; a move goes last; onto an existing key replaces it"
        );
    }

    #[test]
    fn missing_paths_and_non_objects_are_left_alone() {
        assert_eq!(shape(r#""extract":"nope""#).apply(body()), Value::Null);
        let s = shape(r#""omit":["x.y"],"rename":{"a":"b"}"#);
        assert_eq!(s.apply(json!([1, 2])), json!([1, 2]));
        assert_eq!(s.apply(json!("text")), json!("text"));
    }

    #[test]
    fn calls_without_transforms_have_no_shape() {
        let config = config::parse(br#"{"routes":[{"name":"r","match":{"path":"/"},"calls":[{"name":"c","cluster":"k","path":"/"}]}]}"#).unwrap();
        assert_eq!(
            CallShape::compile(&config.routes[0].calls[0]).unwrap(),
            None
        );
    }

    #[test]
    fn bad_paths_are_refused() {
        let config = config::parse(br#"{"routes":[{"name":"r","match":{"path":"/"},"calls":[{"name":"c","cluster":"k","path":"/","rename":{"a[*]":"b"}}]}]}"#).unwrap();
        assert_eq!(
            CallShape::compile(&config.routes[0].calls[0])
                .unwrap_err()
                .to_string(),
            r#"key "rename": "a[*]" must be a non-empty path without [*]"#
        );
    }
}
