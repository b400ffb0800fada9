//! Conditional calls (SPEC §3.6): a call's `when`, compiled once and judged per request just
//! before the call would start, from a fixed vocabulary (`present`, `equals`, `in`, and `all` /
//! `any` / `not` over those) — no expression language.
//!
//! Equality has two cases, because the inputs have two kinds of values:
//!
//! - a value of an earlier call's JSON body (or of the client's JSON body) is JSON, compared by
//!   [`same_value`]: numbers by exact value (`7` = `7.0`, a 30-digit id only equals itself),
//!   never a number with a string (`7` ≠ `"7"`);
//! - client input (path capture, query parameter, header) is text, compared with a string
//!   literal as text, and with a number or boolean literal by the literal's JSON text (`2`
//!   matches `?page=2`, not `?page=02` nor `?page=2.0`; `true` matches `?debug=true`).
//!
//! `present` is the templates' rule for "absent" turned round: the value exists and is not
//! `null`, an empty string or an empty array.

use super::template::{Inputs, Placeholder, Read, RenderError};
use crate::json_number::same_value;
use serde_json::Value;

/// A compiled `when`: every reference resolved to a source of the route.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    /// The value exists and is not null or empty.
    Present(Placeholder),
    /// The value equals the literal (a string, number or boolean).
    Equals(Placeholder, Value),
    /// The value equals one of the literals.
    In(Placeholder, Vec<Value>),
    /// Every condition holds (judged in order, stopping at the first that does not).
    All(Vec<Condition>),
    /// Some condition holds (judged in order, stopping at the first that does).
    Any(Vec<Condition>),
    /// The condition does not hold.
    Not(Box<Condition>),
}

impl Condition {
    /// Every reference the condition reads, in the order written.
    pub fn references(&self) -> Vec<&Placeholder> {
        let mut found = Vec::new();
        self.collect(&mut found);
        found
    }

    fn collect<'a>(&'a self, found: &mut Vec<&'a Placeholder>) {
        match self {
            Condition::Present(reference)
            | Condition::Equals(reference, _)
            | Condition::In(reference, _) => found.push(reference),
            Condition::All(list) | Condition::Any(list) => {
                list.iter().for_each(|c| c.collect(found))
            }
            Condition::Not(inner) => inner.collect(found),
        }
    }

    /// Whether the condition holds for this request.
    ///
    /// # Errors
    /// A value that cannot be read ([`RenderError::Invalid`]: client input that is not UTF-8
    /// once decoded, a client body that is not JSON): the call fails with `invalid_input`, as
    /// it would from a template.
    pub fn holds(&self, inputs: &dyn Inputs) -> Result<bool, RenderError> {
        Ok(match self {
            Condition::Present(reference) => reference.read(inputs)?.is_some_and(|v| present(&v)),
            Condition::Equals(reference, literal) => reference
                .read(inputs)?
                .is_some_and(|value| equals(&value, literal)),
            Condition::In(reference, literals) => reference
                .read(inputs)?
                .is_some_and(|value| literals.iter().any(|literal| equals(&value, literal))),
            Condition::All(list) => {
                for condition in list {
                    if !condition.holds(inputs)? {
                        return Ok(false);
                    }
                }
                true
            }
            Condition::Any(list) => {
                for condition in list {
                    if condition.holds(inputs)? {
                        return Ok(true);
                    }
                }
                false
            }
            Condition::Not(inner) => !inner.holds(inputs)?,
        })
    }
}

/// Not null, not an empty string or array: what templates count as present.
fn present(value: &Read<'_>) -> bool {
    match value {
        Read::Text(text) => !text.is_empty(),
        Read::Json(Value::Null) => false,
        Read::Json(Value::String(text)) => !text.is_empty(),
        Read::Json(Value::Array(items)) => !items.is_empty(),
        Read::Json(_) => true,
    }
}

/// JSON equality for JSON values; text against the literal's text for client input.
fn equals(value: &Read<'_>, literal: &Value) -> bool {
    match (value, literal) {
        (Read::Json(value), literal) => same_value(value, literal),
        (Read::Text(text), Value::String(literal)) => text == literal,
        // A number or boolean literal by its JSON text, as it was written in the configuration.
        (Read::Text(text), Value::Number(number)) => *text == number.as_str(),
        (Read::Text(text), Value::Bool(flag)) => *text == if *flag { "true" } else { "false" },
        (Read::Text(_), _) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json_number;
    use std::borrow::Cow;

    fn num(text: &str) -> Value {
        json_number::parse(text.as_bytes()).unwrap()
    }

    #[test]
    fn client_text_equals_literals_by_their_text() {
        let text = |t: &'static str| Read::Text(Cow::Borrowed(t));
        assert!(equals(&text("physical"), &Value::from("physical")));
        assert!(equals(&text("2"), &num("2")));
        assert!(!equals(&text("02"), &num("2")));
        assert!(!equals(&text("2.0"), &num("2")));
        assert!(equals(&text("2.0"), &num("2.0")), "the literal as written");
        assert!(equals(&text("true"), &Value::Bool(true)));
        assert!(!equals(&text("True"), &Value::Bool(true)));
    }

    #[test]
    fn json_values_equal_literals_by_json_equality() {
        let big = num("123456789012345678901234567890");
        assert!(equals(
            &Read::Json(&big),
            &num("123456789012345678901234567890")
        ));
        assert!(!equals(
            &Read::Json(&big),
            &num("123456789012345678901234567891")
        ));
        assert!(equals(&Read::Json(&num("7")), &num("7.0")));
        assert!(!equals(&Read::Json(&num("7")), &Value::from("7")));
        assert!(!equals(&Read::Json(&Value::from("7")), &num("7")));
        assert!(!equals(&Read::Json(&Value::Null), &Value::from("null")));
    }

    #[test]
    fn present_means_not_null_nor_empty() {
        assert!(!present(&Read::Text(Cow::Borrowed(""))));
        assert!(present(&Read::Text(Cow::Borrowed("0"))));
        for absent in [Value::Null, Value::from(""), Value::Array(Vec::new())] {
            assert!(!present(&Read::Json(&absent)), "{absent}");
        }
        for there in [num("0"), Value::Bool(false), serde_json::json!({})] {
            assert!(present(&Read::Json(&there)), "{there}");
        }
    }
}
