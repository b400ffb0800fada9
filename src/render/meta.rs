//! The completeness object (`_meta`) and what a client may learn about a failure.

use crate::outcome::Failure;
use std::borrow::Cow;

/// One entry of `_meta.errors`.
#[derive(Debug)]
pub enum ErrorEntry<'a> {
    Call(Cow<'a, Failure>),
    /// The failed items of a `for_each` call.
    Items(&'a [(&'a str, &'a Failure)]),
}

/// `{"complete":…,"errors":{…},"fallback":[…]}`; empty lists are left out.
pub fn write_meta(
    body: &mut Vec<u8>,
    complete: bool,
    errors: &[(&str, ErrorEntry<'_>)],
    fell_back: &[&str],
    expose: bool,
) {
    body.extend_from_slice(if complete {
        br#"{"complete":true"#
    } else {
        br#"{"complete":false"#
    });
    if !errors.is_empty() {
        body.extend_from_slice(br#","errors":{"#);
        for (i, (name, entry)) in errors.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            push_key(body, name);
            body.push(b'{');
            match entry {
                ErrorEntry::Call(failure) => write_failure_fields(body, failure, expose),
                ErrorEntry::Items(items) => write_item_failures(body, items, expose),
            }
            body.push(b'}');
        }
        body.push(b'}');
    }
    if !fell_back.is_empty() {
        body.extend_from_slice(br#","fallback":["#);
        for (i, name) in fell_back.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            push_string(body, name);
        }
        body.push(b']');
    }
    body.push(b'}');
}

/// `"items":{"u1":{"reason":"timeout"},...}` — the failed items of a `for_each` call.
fn write_item_failures(body: &mut Vec<u8>, items: &[(&str, &Failure)], expose: bool) {
    body.extend_from_slice(br#""items":{"#);
    for (i, (key, failure)) in items.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        push_key(body, key);
        body.push(b'{');
        write_failure_fields(body, failure, expose);
        body.push(b'}');
    }
    body.push(b'}');
}

/// `"reason":"status","status":503,...` — what a client may know about a failure.
pub fn write_failure_fields(body: &mut Vec<u8>, failure: &Failure, expose: bool) {
    body.extend_from_slice(br#""reason":"#);
    push_string(body, failure.reason.as_str());
    if let Some(status) = failure.status {
        body.extend_from_slice(format!(r#","status":{status}"#).as_bytes());
    }
    let fields = [
        ("input", &failure.input),
        ("item", &failure.item),
        ("dependency", &failure.dependency),
    ];
    for (key, value) in fields {
        if let Some(value) = value {
            body.extend_from_slice(format!(r#","{key}":"#).as_bytes());
            push_string(body, value);
        }
    }
    if let (true, Some(detail)) = (expose, &failure.detail) {
        body.extend_from_slice(br#","detail":"#);
        push_string(body, detail);
    }
}

pub fn push_key(body: &mut Vec<u8>, name: &str) {
    push_string(body, name);
    body.push(b':');
}

pub fn push_string(body: &mut Vec<u8>, text: &str) {
    // Writing a str into a Vec cannot fail; fall back to an empty string regardless.
    if serde_json::to_writer(&mut *body, text).is_err() {
        body.extend_from_slice(b"\"\"");
    }
}
