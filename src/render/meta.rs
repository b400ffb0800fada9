//! The completeness object (`_meta`) and what a client may learn about a failure.

use super::{CallStatus, CallView};
use crate::outcome::Failure;
use std::borrow::Cow;

/// One entry of `_meta.errors`.
#[derive(Debug)]
pub enum ErrorEntry<'a> {
    Call(Cow<'a, Failure>),
    /// The failed items of a `for_each` call.
    Items(&'a [(&'a str, &'a Failure)]),
}

/// What `_meta` reports.
pub struct Report<'a> {
    pub complete: bool,
    pub errors: &'a [(&'a str, ErrorEntry<'a>)],
    pub fell_back: &'a [&'a str],
    pub calls: &'a [CallView<'a>],
    pub expose: bool,
}

/// `{"complete":…,"errors":{…},"fallback":[…],"stale":{…},"attempts":{…},"not_waited_for":[…]}`;
/// empty parts are left out.
pub fn write_meta(body: &mut Vec<u8>, report: &Report<'_>) {
    let (complete, errors, fell_back, expose) = (
        report.complete,
        report.errors,
        report.fell_back,
        report.expose,
    );
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
    write_names(body, "fallback", fell_back);
    write_stale(body, report.calls);
    let retried: Vec<&CallView<'_>> = report.calls.iter().filter(|c| c.retried).collect();
    if !retried.is_empty() {
        body.extend_from_slice(br#","attempts":{"#);
        for (i, call) in retried.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            push_key(body, call.name);
            body.extend_from_slice(call.attempts.to_string().as_bytes());
        }
        body.push(b'}');
    }
    let unfinished: Vec<&str> = report
        .calls
        .iter()
        .filter(|c| matches!(c.status, CallStatus::Unfinished))
        .map(|c| c.name)
        .collect();
    write_names(body, "not_waited_for", &unfinished);
    body.push(b'}');
}

/// `,"key":["a","b"]`, unless the list is empty.
fn write_names(body: &mut Vec<u8>, key: &str, names: &[&str]) {
    if names.is_empty() {
        return;
    }
    body.extend_from_slice(format!(r#","{key}":["#).as_bytes());
    for (i, name) in names.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        push_string(body, name);
    }
    body.push(b']');
}

/// `,"stale":{"inventory":{"age_ms":5300},"authors":{"items":{"u1":{"age_ms":10}}}}`.
fn write_stale(body: &mut Vec<u8>, calls: &[CallView<'_>]) {
    let stale: Vec<&CallView<'_>> = calls.iter().filter(|c| !c.stale.is_empty()).collect();
    if stale.is_empty() {
        return;
    }
    body.extend_from_slice(br#","stale":{"#);
    for (i, call) in stale.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        push_key(body, call.name);
        match call.stale.as_slice() {
            [(None, age)] => body.extend_from_slice(format!(r#"{{"age_ms":{age}}}"#).as_bytes()),
            items => {
                body.extend_from_slice(br#"{"items":{"#);
                for (j, (key, age)) in items.iter().enumerate() {
                    if j > 0 {
                        body.push(b',');
                    }
                    push_key(body, key.unwrap_or(""));
                    body.extend_from_slice(format!(r#"{{"age_ms":{age}}}"#).as_bytes());
                }
                body.extend_from_slice(b"}}");
            }
        }
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
