//! The completeness object (`_meta`) and what a client may learn about a failure.

use super::{CallStatus, CallView};
use crate::json_number::Inexact;
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
    /// Derived fields that could not be exact (written as `null`), by output path.
    pub inexact: &'a [(&'a str, Inexact)],
    pub calls: &'a [CallView<'a>],
    pub expose: bool,
}

/// `{"complete":…,"errors":{…},"fallback":[…],"skipped":[…],"stale":{…},"coalesced":[…],"attempts":{…},
/// "not_waited_for":[…],"derive":{…}}`;
/// empty parts are left out.
pub fn write_meta(body: &mut Vec<u8>, report: &Report<'_>) {
    let expose = report.expose;
    body.extend_from_slice(if report.complete {
        br#"{"complete":true"#
    } else {
        br#"{"complete":false"#
    });
    write_object(
        body,
        ",\"errors\":",
        report.errors,
        |body, (name, entry)| {
            push_key(body, name);
            match entry {
                ErrorEntry::Call(failure) => write_failure(body, failure, expose),
                ErrorEntry::Items(items) => write_items(body, items, |body, failure| {
                    write_failure(body, failure, expose)
                }),
            }
        },
    );
    write_names(body, "fallback", report.fell_back);
    let skipped = names_where(report.calls, |s| matches!(s, CallStatus::Skipped));
    write_names(body, "skipped", &skipped);
    let stale: Vec<&CallView<'_>> = report
        .calls
        .iter()
        .filter(|c| !c.stale.is_empty())
        .collect();
    write_object(body, ",\"stale\":", &stale, |body, call| {
        push_key(body, call.name);
        match call.stale.as_slice() {
            [(None, age)] => write_age(body, *age),
            items => {
                let items: Vec<(&str, u64)> = items
                    .iter()
                    .map(|(key, age)| (key.unwrap_or(""), *age))
                    .collect();
                write_items(body, &items, |body, age| write_age(body, *age));
            }
        }
    });
    let coalesced: Vec<&str> = report
        .calls
        .iter()
        .filter(|c| c.coalesced)
        .map(|c| c.name)
        .collect();
    write_names(body, "coalesced", &coalesced);
    let retried: Vec<&CallView<'_>> = report.calls.iter().filter(|c| c.retried).collect();
    write_object(body, ",\"attempts\":", &retried, |body, call| {
        push_key(body, call.name);
        body.extend_from_slice(call.attempts.to_string().as_bytes());
    });
    let unfinished = names_where(report.calls, |s| matches!(s, CallStatus::Unfinished));
    write_names(body, "not_waited_for", &unfinished);
    write_object(body, ",\"derive\":", report.inexact, |body, (out, why)| {
        push_key(body, out);
        body.extend_from_slice(br#"{"reason":"#);
        push_string(body, why.reason());
        body.push(b'}');
    });
    body.push(b'}');
}

/// `prefix{entry,entry}` with `write` writing each `"key":value`; nothing when empty.
fn write_object<T>(
    body: &mut Vec<u8>,
    prefix: &str,
    entries: &[T],
    mut write: impl FnMut(&mut Vec<u8>, &T),
) {
    if entries.is_empty() {
        return;
    }
    body.extend_from_slice(prefix.as_bytes());
    body.push(b'{');
    for (i, entry) in entries.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        write(body, entry);
    }
    body.push(b'}');
}

/// `{"items":{"key":value,...}}` — per-item results of a `for_each` call.
fn write_items<T>(
    body: &mut Vec<u8>,
    items: &[(&str, T)],
    mut write: impl FnMut(&mut Vec<u8>, &T),
) {
    body.push(b'{');
    write_object(body, "\"items\":", items, |body, (key, value)| {
        push_key(body, key);
        write(body, value);
    });
    body.push(b'}');
}

fn write_age(body: &mut Vec<u8>, age_ms: u64) {
    body.extend_from_slice(format!(r#"{{"age_ms":{age_ms}}}"#).as_bytes());
}

/// `{"reason":…}` — one failure.
fn write_failure(body: &mut Vec<u8>, failure: &Failure, expose: bool) {
    body.push(b'{');
    write_failure_fields(body, failure, expose);
    body.push(b'}');
}

/// The names of the calls whose status passes `test`, in configuration order.
fn names_where<'a>(calls: &[CallView<'a>], test: impl Fn(&CallStatus<'a>) -> bool) -> Vec<&'a str> {
    calls
        .iter()
        .filter(|c| test(&c.status))
        .map(|c| c.name)
        .collect()
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
