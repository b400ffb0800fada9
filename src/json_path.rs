//! Dot paths into JSON values: `a.b.0.c`, numeric segments index arrays, `[N]` too,
//! and `[*]` takes every element of an array.

use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Key(String),
    /// Digits: an index into an array, or a key of an object.
    Index(usize, String),
    Every,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonPath {
    text: String,
    segments: Vec<Segment>,
}

/// What a path finds in a value.
#[derive(Debug, PartialEq)]
pub enum Found<'v> {
    Nothing,
    One(&'v Value),
    /// The path has `[*]`: every match, in document order.
    Many(Vec<&'v Value>),
}

impl JsonPath {
    /// Parses a path; the empty path is the whole value.
    pub fn parse(text: &str) -> Result<JsonPath, String> {
        let mut segments = Vec::new();
        if !text.is_empty() {
            for part in text.split('.') {
                parse_part(part, &mut segments)
                    .map_err(|why| format!("invalid path \"{text}\": {why}"))?;
            }
        }
        Ok(JsonPath {
            text: text.to_string(),
            segments,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn has_wildcard(&self) -> bool {
        self.segments.contains(&Segment::Every)
    }

    pub fn find<'v>(&self, root: &'v Value) -> Found<'v> {
        if self.has_wildcard() {
            let mut found = Vec::new();
            collect(root, &self.segments, &mut found);
            Found::Many(found)
        } else {
            match single(root, &self.segments) {
                Some(value) => Found::One(value),
                None => Found::Nothing,
            }
        }
    }
}

impl JsonPath {
    /// The value at a path without `[*]`, for changing it in place.
    pub fn find_mut<'v>(&self, root: &'v mut Value) -> Option<&'v mut Value> {
        self.segments
            .iter()
            .try_fold(root, |value, segment| match (segment, value) {
                (Segment::Key(key) | Segment::Index(_, key), Value::Object(map)) => {
                    map.get_mut(key)
                }
                (Segment::Index(index, _), Value::Array(items)) => items.get_mut(*index),
                _ => None,
            })
    }
}

fn parse_part(part: &str, segments: &mut Vec<Segment>) -> Result<(), String> {
    let (name, mut brackets) = match part.find('[') {
        Some(at) => part.split_at(at),
        None => (part, ""),
    };
    if name.is_empty() && brackets.is_empty() {
        return Err("empty segment".to_string());
    }
    if !name.is_empty() {
        segments.push(plain_segment(name)?);
    }
    while !brackets.is_empty() {
        let Some(rest) = brackets.strip_prefix('[') else {
            return Err(format!("unexpected text \"{brackets}\""));
        };
        let Some((inside, after)) = rest.split_once(']') else {
            return Err("unclosed \"[\"".to_string());
        };
        match inside {
            "*" => segments.push(Segment::Every),
            digits if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) => {
                segments.push(plain_segment(digits)?)
            }
            other => return Err(format!("\"[{other}]\" is neither [*] nor an index")),
        }
        brackets = after;
    }
    Ok(())
}

fn plain_segment(name: &str) -> Result<Segment, String> {
    if name.contains([']', '{', '}', '|']) {
        return Err(format!("unexpected character in \"{name}\""));
    }
    if name.bytes().all(|b| b.is_ascii_digit()) {
        let index = name
            .parse::<usize>()
            .map_err(|_| format!("index \"{name}\" is too large"))?;
        return Ok(Segment::Index(index, name.to_string()));
    }
    Ok(Segment::Key(name.to_string()))
}

fn step<'v>(value: &'v Value, segment: &Segment) -> Option<&'v Value> {
    match (segment, value) {
        (Segment::Key(key), Value::Object(map)) => map.get(key),
        (Segment::Index(_, key), Value::Object(map)) => map.get(key),
        (Segment::Index(index, _), Value::Array(items)) => items.get(*index),
        _ => None,
    }
}

fn single<'v>(root: &'v Value, segments: &[Segment]) -> Option<&'v Value> {
    segments
        .iter()
        .try_fold(root, |value, segment| step(value, segment))
}

fn collect<'v>(value: &'v Value, segments: &[Segment], found: &mut Vec<&'v Value>) {
    let Some((first, rest)) = segments.split_first() else {
        found.push(value);
        return;
    };
    match first {
        Segment::Every => {
            if let Value::Array(items) = value {
                for item in items {
                    collect(item, rest, found);
                }
            }
        }
        other => {
            if let Some(next) = step(value, other) {
                collect(next, rest, found);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn find(path: &str, value: &Value) -> Option<Value> {
        match JsonPath::parse(path).unwrap().find(value) {
            Found::Nothing => None,
            Found::One(v) => Some(v.clone()),
            Found::Many(vs) => Some(Value::Array(vs.into_iter().cloned().collect())),
        }
    }

    #[test]
    fn dot_paths_walk_objects_and_index_arrays() {
        let doc = json!({"a": {"b": [{"c": 1}, {"c": 2}]}, "7": "seven"});
        assert_eq!(find("a.b.1.c", &doc), Some(json!(2)));
        assert_eq!(find("a.b[0].c", &doc), Some(json!(1)));
        assert_eq!(find("7", &doc), Some(json!("seven")));
        assert_eq!(find("", &doc), Some(doc.clone()));
        assert_eq!(find("a.x", &doc), None);
        assert_eq!(find("a.b.5", &doc), None);
        assert_eq!(find("a.b.c", &doc), None);
    }

    #[test]
    fn every_element_is_taken_in_document_order() {
        let doc = json!({"items": [{"id": 3}, {"id": 1}, {"x": 0}, {"id": 3}], "n": 5});
        assert_eq!(find("items[*].id", &doc), Some(json!([3, 1, 3])));
        assert_eq!(find("n[*]", &doc), Some(json!([])));
        let nested = json!({"a": [[1, 2], [3]]});
        assert_eq!(find("a[*][*]", &nested), Some(json!([1, 2, 3])));
    }

    #[test]
    fn plain_paths_can_change_values_in_place() {
        let mut doc = json!({"a": {"list": [{"id": 1}]}});
        let list = JsonPath::parse("a.list.0")
            .unwrap()
            .find_mut(&mut doc)
            .unwrap();
        list["x"] = json!(true);
        assert_eq!(doc, json!({"a": {"list": [{"id": 1, "x": true}]}}));
        assert!(JsonPath::parse("a.nope")
            .unwrap()
            .find_mut(&mut doc)
            .is_none());
    }

    #[test]
    fn malformed_paths_are_refused() {
        for bad in ["a..b", ".a", "a[", "a[x]", "a[*]b", "a}"] {
            assert!(JsonPath::parse(bad).is_err(), "{bad}");
        }
        assert!(JsonPath::parse("items[*].id").unwrap().has_wildcard());
    }
}
