//! Dot paths into JSON values: `a.b.0.c`, numeric segments index arrays, `[N]` too,
//! and `[*]` takes every element of an array.

use serde_json::{Map, Value};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Key(String),
    /// Digits: an index into an array, or a key of an object.
    Index(usize, String),
    Every,
}

/// A parsed dot path (`reviews.items[*].stars`): what `extract`, `select`, `sort_by`,
/// `for_each`, `derive` and `{calls.<call>.<path>}` read. The empty path is the whole value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonPath {
    text: String,
    segments: Vec<Segment>,
}

/// What a path finds in a value.
#[derive(Debug, PartialEq)]
pub enum Found<'v> {
    /// The path leads nowhere (a missing key, an index out of range, a scalar on the way).
    Nothing,
    /// The value at a path without `[*]`.
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

    /// The path as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether both paths lead to the same place, however they were written (`items.0` and
    /// `items[0]`).
    pub fn same_path(&self, other: &JsonPath) -> bool {
        self.segments == other.segments
    }

    /// Whether the path has a `[*]` segment (and so finds [`Found::Many`]).
    pub fn has_wildcard(&self) -> bool {
        self.segments.contains(&Segment::Every)
    }

    /// What the path finds in `root`: with `[*]`, every match (perhaps none); without, the
    /// one value or nothing.
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
    /// Moves the value at this path to `to` (both without `[*]`). Within one object the
    /// value keeps its place under its new key, so a rename does not reorder the upstream's
    /// keys; moved elsewhere it comes last in its new object. A missing value moves nothing.
    pub fn rename(&self, to: &JsonPath, root: &mut Value) {
        if let (
            Some((Segment::Key(from_key) | Segment::Index(_, from_key), parent)),
            Some((Segment::Key(to_key) | Segment::Index(_, to_key), to_parent)),
        ) = (self.segments.split_last(), to.segments.split_last())
        {
            if parent == to_parent {
                let object = parent
                    .iter()
                    .try_fold(&mut *root, |value, segment| step_mut(value, segment));
                if let Some(Value::Object(map)) = object {
                    rename_in_place(map, from_key, to_key);
                    return;
                }
            }
        }
        if let Some(value) = self.take(root) {
            to.insert(root, value);
        }
    }

    /// Removes what this path finds (every match under `[*]`).
    pub fn remove(&self, root: &mut Value) {
        remove(&self.segments, root);
    }

    /// Removes and returns the value at a path without `[*]`.
    pub fn take(&self, root: &mut Value) -> Option<Value> {
        let (last, parents) = self.segments.split_last()?;
        let parent = parents
            .iter()
            .try_fold(root, |value, segment| step_mut(value, segment))?;
        match (last, parent) {
            (Segment::Key(key) | Segment::Index(_, key), Value::Object(map)) => {
                map.shift_remove(key)
            }
            (Segment::Index(index, _), Value::Array(items)) if *index < items.len() => {
                Some(items.remove(*index))
            }
            _ => None,
        }
    }

    /// Sets the value at a path without `[*]`, creating objects on the way; a scalar in the
    /// way is replaced by an object. The empty path replaces the root.
    pub fn insert(&self, root: &mut Value, value: Value) {
        insert(&self.segments, root, value);
    }

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

/// Renames `from` to `to` at `from`'s position; an existing `to` is replaced.
fn rename_in_place(map: &mut Map<String, Value>, from: &str, to: &str) {
    let Some(position) = map.keys().position(|k| k == from) else {
        return;
    };
    let Some(value) = map.shift_remove(from) else {
        return;
    };
    // A `to` key before `from` moves the position one back once it is removed.
    let position = match map.keys().position(|k| k == to) {
        Some(existing) if existing < position => position - 1,
        _ => position,
    };
    map.shift_remove(to);
    map.shift_insert(position.min(map.len()), to.to_string(), value);
}

/// Keeps only what `paths` find in `source`: nested paths keep their parents, `[*]` keeps
/// array positions, and every object keeps its keys in `source`'s order (not the order of
/// the paths), so `select` drops keys without reordering the upstream's.
pub fn select(paths: &[JsonPath], source: &Value) -> Value {
    let mut selected = Value::Null;
    for path in paths {
        copy_into(&path.segments, source, &mut selected);
    }
    keep_order(&mut selected, source);
    selected
}

/// Orders every object of `picked` like its counterpart in `original`.
fn keep_order(picked: &mut Value, original: &Value) {
    match (picked, original) {
        (Value::Object(picked), Value::Object(original)) => {
            if picked.len() > 1 {
                let mut ordered = Map::with_capacity(picked.len());
                for key in original.keys() {
                    if let Some(value) = picked.shift_remove(key) {
                        ordered.insert(key.clone(), value);
                    }
                }
                *picked = ordered;
            }
            for (key, value) in picked.iter_mut() {
                if let Some(original) = original.get(key) {
                    keep_order(value, original);
                }
            }
        }
        (Value::Array(picked), Value::Array(original)) => {
            for (value, original) in picked.iter_mut().zip(original) {
                keep_order(value, original);
            }
        }
        _ => {}
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

fn step_mut<'v>(value: &'v mut Value, segment: &Segment) -> Option<&'v mut Value> {
    match (segment, value) {
        (Segment::Key(key) | Segment::Index(_, key), Value::Object(map)) => map.get_mut(key),
        (Segment::Index(index, _), Value::Array(items)) => items.get_mut(*index),
        _ => None,
    }
}

fn insert(segments: &[Segment], target: &mut Value, value: Value) {
    let Some((first, rest)) = segments.split_first() else {
        *target = value;
        return;
    };
    let key = match first {
        Segment::Key(key) | Segment::Index(_, key) => key,
        Segment::Every => return,
    };
    if let (Segment::Index(index, _), Value::Array(items)) = (first, &mut *target) {
        if let Some(item) = items.get_mut(*index) {
            insert(rest, item, value);
            return;
        }
    }
    if !target.is_object() {
        *target = Value::Object(serde_json::Map::new());
    }
    if let Value::Object(map) = target {
        insert(rest, map.entry(key.clone()).or_insert(Value::Null), value);
    }
}

fn copy_into(segments: &[Segment], source: &Value, target: &mut Value) {
    let Some((first, rest)) = segments.split_first() else {
        *target = source.clone();
        return;
    };
    match (first, source) {
        (Segment::Every, Value::Array(items)) => {
            if !matches!(target, Value::Array(existing) if existing.len() == items.len()) {
                *target = Value::Array(vec![Value::Null; items.len()]);
            }
            if let Value::Array(slots) = target {
                for (item, slot) in items.iter().zip(slots.iter_mut()) {
                    copy_into(rest, item, slot);
                }
            }
        }
        (Segment::Key(key) | Segment::Index(_, key), Value::Object(map)) => {
            let Some(child) = map.get(key) else { return };
            if !target.is_object() {
                *target = Value::Object(serde_json::Map::new());
            }
            if let Value::Object(out) = target {
                copy_into(rest, child, out.entry(key.clone()).or_insert(Value::Null));
            }
        }
        _ => {}
    }
}

fn remove(segments: &[Segment], value: &mut Value) {
    let Some((first, rest)) = segments.split_first() else {
        return;
    };
    match (first, value, rest.is_empty()) {
        (Segment::Every, Value::Array(items), true) => items.clear(),
        (Segment::Every, Value::Array(items), false) => {
            items.iter_mut().for_each(|item| remove(rest, item))
        }
        (Segment::Key(key) | Segment::Index(_, key), Value::Object(map), true) => {
            map.shift_remove(key);
        }
        (Segment::Index(index, _), Value::Array(items), true) if *index < items.len() => {
            items.remove(*index);
        }
        (segment, value, false) => {
            if let Some(child) = step_mut(value, segment) {
                remove(rest, child);
            }
        }
        _ => {}
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
    fn selection_keeps_parents_and_array_positions() {
        let doc = json!({"id": 1, "user": {"name": "Ann", "email": "a@x"}, "items": [{"id": 1, "p": 2}, {"id": 2, "p": 3}], "n": 0});
        let paths: Vec<JsonPath> = ["user.name", "items[*].id", "missing.path"]
            .iter()
            .map(|p| JsonPath::parse(p).unwrap())
            .collect();
        let out = select(&paths, &doc);
        assert_eq!(
            out,
            json!({"user": {"name": "Ann"}, "items": [{"id": 1}, {"id": 2}]})
        );
    }

    #[test]
    fn removal_take_and_insert() {
        let mut doc = json!({"a": {"b": 1, "c": 2}, "items": [{"x": 1, "y": 2}, {"x": 3}], "list": [1, 2, 3]});
        JsonPath::parse("a.b").unwrap().remove(&mut doc);
        JsonPath::parse("items[*].x").unwrap().remove(&mut doc);
        JsonPath::parse("list.1").unwrap().remove(&mut doc);
        JsonPath::parse("nope.deeper").unwrap().remove(&mut doc);
        assert_eq!(
            doc,
            json!({"a": {"c": 2}, "items": [{"y": 2}, {}], "list": [1, 3]})
        );
        let taken = JsonPath::parse("a.c").unwrap().take(&mut doc);
        assert_eq!(taken, Some(json!(2)));
        JsonPath::parse("moved.to.here")
            .unwrap()
            .insert(&mut doc, json!(2));
        JsonPath::parse("list.0")
            .unwrap()
            .insert(&mut doc, json!("first"));
        JsonPath::parse("a")
            .unwrap()
            .insert(&mut doc, json!("scalar"));
        JsonPath::parse("a.z")
            .unwrap()
            .insert(&mut doc, json!(true));
        assert_eq!(
            doc,
            json!({"a": {"z": true}, "items": [{"y": 2}, {}], "list": ["first", 3], "moved": {"to": {"here": 2}}})
        );
        let mut root = json!(1);
        JsonPath::parse("")
            .unwrap()
            .insert(&mut root, json!({"k": 1}));
        assert_eq!(root, json!({"k": 1}));
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
