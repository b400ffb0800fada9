//! YAML for the tests (`tests/schema.rs`, `tests/istio_crds.rs`), read into `serde_json::Value`
//! in one of two ways:
//!
//! - [`Reading::Yaml12`]: YAML 1.2's core schema, where `true` and `false` (in three spellings)
//!   are the only booleans;
//! - [`Reading::Kubernetes`]: as `kubectl` and the API server read a manifest (sigs.k8s.io/yaml,
//!   YAML 1.1 booleans): a plain (unquoted) `on`, `off`, `yes`, `no`, `y` or `n`, in any of the
//!   spellings YAML 1.1 lists, is a boolean, and a mapping key that is not a string becomes its
//!   text (an unquoted `on:` is the key "true").
//!
//! Other scalars resolve as YAML 1.2 says in both readings. Both refuse what a reader should not
//! have to guess at: a duplicate key (also one that only resolves to the same text, `a` and
//! `"a"`), a key that is a collection, a tag that is not YAML's own, and a number JSON cannot
//! hold (`.nan`, `.inf`). Empty documents (only comments, a trailing `---`) are left out, as
//! kubectl leaves them out.
//!
//! The parser is saphyr's: its loader keeps each scalar's text and quoting style
//! (`early_parse(false)`), and this module resolves them, so one parse serves both readings.

use saphyr::{Scalar, ScalarStyle, Tag, Yaml, YamlLoader};
use saphyr_parser::Parser;
use serde_json::{Map, Number, Value};
use std::borrow::Cow;

/// How plain scalars are resolved; see the module documentation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reading {
    Yaml12,
    Kubernetes,
}

/// Every non-empty document of a YAML stream, in order.
pub fn documents(text: &str, reading: Reading) -> Result<Vec<Value>, String> {
    let mut loader: YamlLoader<'_, Yaml<'_>> = YamlLoader::default();
    loader.early_parse(false);
    Parser::new_from_str(text)
        .load(&mut loader, true)
        .map_err(|e| e.to_string())?;
    if let Some(e) = loader.error() {
        return Err(e.to_string());
    }
    let mut found = Vec::new();
    for (index, document) in loader.into_documents().iter().enumerate() {
        // The loader's placeholder for a document without a node.
        if matches!(document, Yaml::BadValue) {
            continue;
        }
        let value = to_json(document, reading, "")
            .map_err(|e| format!("YAML document {}: {e}", index + 1))?;
        if !value.is_null() {
            found.push(value);
        }
    }
    Ok(found)
}

/// The words YAML 1.1 (and so Kubernetes) reads as booleans when they are not quoted.
const YAML_1_1_TRUE: [&str; 11] = [
    "y", "Y", "yes", "Yes", "YES", "true", "True", "TRUE", "on", "On", "ON",
];
const YAML_1_1_FALSE: [&str; 11] = [
    "n", "N", "no", "No", "NO", "false", "False", "FALSE", "off", "Off", "OFF",
];

fn place(at: &str) -> &str {
    if at.is_empty() {
        "the document"
    } else {
        at.trim_start_matches('.')
    }
}

fn to_json(node: &Yaml<'_>, reading: Reading, at: &str) -> Result<Value, String> {
    match node {
        Yaml::Representation(text, style, tag) => {
            scalar(text, *style, tag.as_ref(), reading).map_err(|e| format!("{}: {e}", place(at)))
        }
        Yaml::Value(resolved) => {
            scalar_to_json(resolved.clone()).map_err(|e| format!("{}: {e}", place(at)))
        }
        Yaml::Sequence(items) => items
            .iter()
            .enumerate()
            .map(|(i, item)| to_json(item, reading, &format!("{at}[{i}]")))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array),
        Yaml::Mapping(entries) => {
            let mut object = Map::new();
            for (key, value) in entries {
                let key = match to_json(key, reading, at)? {
                    Value::String(text) => text,
                    scalar @ (Value::Bool(_) | Value::Number(_) | Value::Null) => {
                        scalar.to_string()
                    }
                    other => {
                        return Err(format!(
                            "{}: a mapping key must be a scalar, not {other}",
                            place(at)
                        ))
                    }
                };
                let child = to_json(value, reading, &format!("{at}.{key}"))?;
                if object.insert(key.clone(), child).is_some() {
                    return Err(format!("{}: duplicate key {key:?}", place(at)));
                }
            }
            Ok(Value::Object(object))
        }
        Yaml::Tagged(tag, _) => Err(format!("{}: unsupported tag {tag}", place(at))),
        Yaml::Alias(_) | Yaml::BadValue => Err(format!(
            "{}: an alias to an unknown anchor, or a value the parser could not resolve",
            place(at)
        )),
    }
}

fn scalar(
    text: &str,
    style: ScalarStyle,
    tag: Option<&Cow<'_, Tag>>,
    reading: Reading,
) -> Result<Value, String> {
    if let Some(tag) = tag {
        if !tag.is_yaml_core_schema() {
            return Err(format!("unsupported tag {tag} on {text:?}"));
        }
    }
    if reading == Reading::Kubernetes && style == ScalarStyle::Plain && tag.is_none() {
        if YAML_1_1_TRUE.contains(&text) {
            return Ok(Value::Bool(true));
        }
        if YAML_1_1_FALSE.contains(&text) {
            return Ok(Value::Bool(false));
        }
    }
    let resolved = Scalar::parse_from_cow_and_metadata(Cow::Borrowed(text), style, tag)
        .ok_or_else(|| format!("{text:?} does not match its tag"))?;
    scalar_to_json(resolved)
}

fn scalar_to_json(resolved: Scalar<'_>) -> Result<Value, String> {
    Ok(match resolved {
        Scalar::Null => Value::Null,
        Scalar::Boolean(b) => Value::Bool(b),
        Scalar::Integer(i) => Value::from(i),
        Scalar::FloatingPoint(f) => Value::Number(
            Number::from_f64(f.into_inner())
                .ok_or_else(|| format!("{} is not a JSON number", f.into_inner()))?,
        ),
        Scalar::String(text) => Value::String(text.into_owned()),
    })
}
