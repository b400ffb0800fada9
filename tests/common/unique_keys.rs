//! A JSON parse that refuses repeated keys, for checking answers (SPEC §4: every answer is JSON
//! with unique keys at every level). `serde_json::Value` keeps the last of two equal keys, so a
//! test that parses an answer into a `Value` cannot see a repeat; this can.
//!
//! Shared by the integration tests (`tests/common`) and the fuzz targets (`#[path]` include),
//! so both judge answers the same way. Std and serde only.

use serde::de::{DeserializeSeed, Deserializer, Error as _, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use std::collections::HashSet;
use std::fmt;

/// Parses one JSON text into a `Value`, or says why it is not JSON with unique keys at every
/// level: serde_json's message, e.g. `duplicate key "a" at line 1 column 12`. Keys are
/// compared as unescaped strings (`"a"` and `"\u0061"` are the same key).
///
/// Two passes: the first only walks the text and remembers each object's keys; the `Value`
/// comes from serde_json itself, so it follows whatever features (`arbitrary_precision`,
/// `preserve_order`) the build enables.
pub fn parse_unique_keys(json: &[u8]) -> Result<Value, serde_json::Error> {
    let mut walk = serde_json::Deserializer::from_slice(json);
    UniqueKeys.deserialize(&mut walk)?;
    walk.end()?;
    serde_json::from_slice(json)
}

/// Walks any JSON value and fails on the first object that repeats a key.
struct UniqueKeys;

impl<'de> DeserializeSeed<'de> for UniqueKeys {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for UniqueKeys {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<(), A::Error> {
        while items.next_element_seed(UniqueKeys)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut entries: A) -> Result<(), A::Error> {
        let mut seen = HashSet::new();
        while let Some(key) = entries.next_key::<String>()? {
            if seen.contains(&key) {
                return Err(A::Error::custom(format!("duplicate key {key:?}")));
            }
            entries.next_value_seed(UniqueKeys)?;
            seen.insert(key);
        }
        Ok(())
    }
}
