//! The answer to the client (SPEC §4, §5): the aggregated body — spliced from the calls'
//! validated bytes when the route does not reshape it, assembled by the layout otherwise —
//! the error body of a failed required call, and the response headers.

mod assemble;
mod meta;

use crate::outcome::Failure;
use crate::shape::ResponseShape;
use meta::{write_failure_fields, write_meta, ErrorEntry};
use serde_json::Value;
use std::borrow::Cow;
use std::fmt::Write as _;
use std::time::Duration;

/// A local reply for the host to send, exactly once per request: the aggregated answer or an
/// error (SPEC §4).
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    /// The HTTP status.
    pub status: u16,
    /// Names and values, in the order they are sent; a name may repeat (copied `set-cookie`
    /// headers, say).
    pub headers: Vec<(Cow<'static, str>, String)>,
    /// The body: JSON for every answer the filter writes.
    pub body: Vec<u8>,
}

impl Response {
    /// The first value of header `name` (lowercase), if the response has it.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What the renderer needs to know about one call of the route, in configuration order.
#[derive(Debug)]
pub struct CallView<'a> {
    /// The key the call is shown under (its `as`, or its name).
    pub name: &'a str,
    /// The JSON under the call's key; `None` leaves the key out.
    pub output: Option<Cow<'a, [u8]>>,
    /// How the call ended, or that it did not.
    pub status: CallStatus<'a>,
    /// A fallback stands in for the call's body (or for some of its items).
    pub fell_back: bool,
    /// Time from the first dispatch to the last answer; `None` if it was never dispatched.
    pub duration: Option<Duration>,
    /// The call has `as`: in the `merge` layout its body goes under its key.
    pub keyed: bool,
    /// Upstream response headers copied to the client (`headers_from`).
    pub headers: &'a [(String, String)],
    /// Requests sent for the call (first attempts, retries, hedges), reported when some
    /// request of the call was sent more than once.
    pub attempts: u32,
    /// Some request of the call was sent more than once: `attempts` is reported in
    /// `_meta.attempts` and `server-timing`.
    pub retried: bool,
    /// Answered from the cache.
    pub cached: bool,
    /// Answered (some item of it, for `for_each`) by an identical request another aggregation
    /// sent (SPEC §6 `coalesce`).
    pub coalesced: bool,
    /// Stale cache entries that stood in for failures: `for_each` item (or `None` for the
    /// call itself) and age.
    pub stale: Vec<(Option<&'a str>, u64)>,
}

#[cfg(test)]
impl<'a> CallView<'a> {
    /// For tests: a call sent once, not cached, copying no headers, with the given outcome.
    pub fn sample(
        name: &'a str,
        output: Option<&'static str>,
        status: CallStatus<'a>,
        duration_us: Option<u64>,
    ) -> Self {
        CallView {
            name,
            output: output.map(|o| Cow::Borrowed(o.as_bytes())),
            status,
            fell_back: false,
            duration: duration_us.map(Duration::from_micros),
            keyed: false,
            headers: &[],
            attempts: 1,
            retried: false,
            cached: false,
            coalesced: false,
            stale: Vec::new(),
        }
    }
}

/// Where a call stands when the answer is written.
#[derive(Debug)]
pub enum CallStatus<'a> {
    /// Not fetched for this request (`fields`): it neither counts nor shows.
    NotFetched,
    /// Still running when a required call failed.
    Unfinished,
    /// Skipped by its `when` (SPEC §3.6): absent, listed in `_meta.skipped`, shown in
    /// `server-timing` as `desc="skipped"`; it does not make the answer incomplete.
    Skipped,
    /// Succeeded (a stale cache entry counts, reported in [`CallView::stale`]).
    Succeeded,
    /// Failed: reported in `_meta.errors` (its fallback, if any, is the output).
    Failed(&'a Failure),
    /// A `for_each` call some of whose items failed: item text and failure.
    ItemsFailed(Vec<(&'a str, &'a Failure)>),
}

impl CallView<'_> {
    fn finished(&self) -> bool {
        !matches!(self.status, CallStatus::NotFetched | CallStatus::Unfinished)
    }

    fn complete(&self) -> bool {
        matches!(
            self.status,
            CallStatus::NotFetched | CallStatus::Succeeded | CallStatus::Skipped
        ) && self.stale.is_empty()
    }

    /// The reason shown in `server-timing`.
    fn reason(&self) -> Option<&'static str> {
        match &self.status {
            CallStatus::Failed(failure) => Some(failure.reason.as_str()),
            CallStatus::ItemsFailed(items) => items.first().map(|(_, f)| f.reason.as_str()),
            CallStatus::Skipped => Some("skipped"),
            _ if !self.stale.is_empty() => Some("stale"),
            _ if self.cached => Some("cache"),
            _ if self.coalesced => Some("coalesced"),
            _ => None,
        }
    }
}

/// Settings of the route that shape the answer.
#[derive(Debug, Clone, Copy)]
pub struct Shape<'a> {
    /// The completeness object's key, JSON-encoded with quotes; `None` omits it.
    pub meta_key: Option<&'a str>,
    /// The same key as text: an upstream key of that name never reaches the answer.
    pub meta_name: Option<&'a str>,
    /// Show failures' `detail` (the route's `expose_errors`).
    pub expose_errors: bool,
    /// The route's layout, derived fields and static headers.
    pub response: &'a ResponseShape,
}

/// 200 with the calls' bodies put together by the route's layout, and `_meta` where it fits.
pub fn aggregate(calls: &[CallView<'_>], shape: Shape<'_>) -> Response {
    let mut errors: Vec<(&str, ErrorEntry<'_>)> = calls
        .iter()
        .filter_map(|call| match &call.status {
            CallStatus::Failed(failure) => {
                Some((call.name, ErrorEntry::Call(Cow::Borrowed(*failure))))
            }
            CallStatus::ItemsFailed(items) => {
                Some((call.name, ErrorEntry::Items(items.as_slice())))
            }
            _ => None,
        })
        .collect();
    let assembled = if shape.response.splices() {
        assemble::Assembled {
            body: splice(calls),
            misfits: Vec::new(),
            inexact: Vec::new(),
        }
    } else {
        assemble::document(calls, shape.response, shape.meta_name)
    };
    let document = assembled.body;
    // One entry per call: a failed call whose fallback does not fit the layout either is
    // reported with its own failure.
    for (name, failure) in assembled.misfits {
        if !errors.iter().any(|(reported, _)| *reported == name) {
            errors.push((name, ErrorEntry::Call(Cow::Owned(failure))));
        }
    }
    let complete = errors.is_empty() && calls.iter().all(CallView::complete);
    let fell_back: Vec<&str> = calls
        .iter()
        .filter(|c| c.fell_back)
        .map(|c| c.name)
        .collect();
    let report = meta::Report {
        complete,
        errors: &errors,
        fell_back: &fell_back,
        inexact: &assembled.inexact,
        calls,
        expose: shape.expose_errors,
    };
    let body = match (shape.meta_key, document.last()) {
        (Some(meta_key), Some(b'}')) => {
            let mut body = document;
            body.pop();
            if body.len() > 1 {
                body.push(b',');
            }
            body.extend_from_slice(meta_key.as_bytes());
            body.push(b':');
            write_meta(&mut body, &report);
            body.push(b'}');
            body
        }
        _ => document,
    };
    let mut headers = headers(calls, complete, shape.response);
    for call in calls {
        headers.extend(
            call.headers
                .iter()
                .map(|(n, v)| (Cow::Owned(n.clone()), v.clone())),
        );
    }
    Response {
        status: 200,
        headers,
        body,
    }
}

/// `{call: body, ...}` in configuration order, each body's bytes as they are.
fn splice(calls: &[CallView<'_>]) -> Vec<u8> {
    let estimate: usize = calls
        .iter()
        .map(|c| c.output.as_ref().map_or(0, |o| o.len() + c.name.len() + 4))
        .sum();
    let mut body = Vec::with_capacity(estimate + 64);
    body.push(b'{');
    let mut first = true;
    for call in calls {
        let Some(json) = &call.output else { continue };
        if !first {
            body.push(b',');
        }
        first = false;
        meta::push_key(&mut body, call.name);
        body.extend_from_slice(json);
    }
    body.push(b'}');
    body
}

/// The `code` of every error body the filter writes, `{"error":{"code":…}}`: one list, so a
/// client (and the README's table) can rely on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// A required call failed (SPEC §4): the status follows the call's failure.
    RequiredCallFailed,
    /// `?fields=` named no call of the route (SPEC §5): 400.
    UnknownField,
    /// The client body is over the route's `max_body_bytes` (SPEC §3.4): 413.
    RequestBodyTooLarge,
    /// The client body was not complete at the route deadline (SPEC §3.4): 408.
    RequestBodyTimeout,
    /// Envoy held the client body back from the filter (SPEC §3.4): 500.
    RequestBodyUnavailable,
    /// The route is at its `max_inflight` (SPEC §6): 503.
    Overload,
    /// The filter found its own state contradicting itself (a bug): 500, logged at error.
    InternalError,
}

impl ErrorCode {
    /// Every code, for documentation checks.
    pub const ALL: [ErrorCode; 7] = [
        ErrorCode::RequiredCallFailed,
        ErrorCode::UnknownField,
        ErrorCode::RequestBodyTooLarge,
        ErrorCode::RequestBodyTimeout,
        ErrorCode::RequestBodyUnavailable,
        ErrorCode::Overload,
        ErrorCode::InternalError,
    ];

    /// The code as clients read it.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::RequiredCallFailed => "required_call_failed",
            ErrorCode::UnknownField => "unknown_field",
            ErrorCode::RequestBodyTooLarge => "request_body_too_large",
            ErrorCode::RequestBodyTimeout => "request_body_timeout",
            ErrorCode::RequestBodyUnavailable => "request_body_unavailable",
            ErrorCode::Overload => "overload",
            ErrorCode::InternalError => "internal_error",
        }
    }

    /// The status of an answer with this code; `None` for a required call's failure, whose
    /// status depends on how the call failed ([`Failure::client_status`]).
    pub fn status(self) -> Option<u16> {
        match self {
            ErrorCode::RequiredCallFailed => None,
            ErrorCode::UnknownField => Some(400),
            ErrorCode::RequestBodyTooLarge => Some(413),
            ErrorCode::RequestBodyTimeout => Some(408),
            ErrorCode::RequestBodyUnavailable => Some(500),
            ErrorCode::Overload => Some(503),
            ErrorCode::InternalError => Some(500),
        }
    }

    /// `{"error":{"code":"…", <fields>}}` with the code's status.
    fn answer(self, fields: serde_json::Map<String, Value>) -> Response {
        let mut error = serde_json::Map::with_capacity(fields.len() + 1);
        error.insert("code".to_string(), Value::from(self.as_str()));
        error.extend(fields);
        let body = serde_json::json!({ "error": error });
        client_error(self.status().unwrap_or(500), &body)
    }
}

/// 400 for a `?fields=` name that is no call's output key (SPEC §5):
/// `{"error":{"code":"unknown_field","field":"price","valid":["product",…]}}`.
pub fn unknown_field(field: &str, valid: &[&str]) -> Response {
    let mut fields = serde_json::Map::new();
    fields.insert("field".to_string(), Value::from(field));
    fields.insert("valid".to_string(), Value::from(valid.to_vec()));
    ErrorCode::UnknownField.answer(fields)
}

/// 500 when the aggregation's state contradicts itself (a bug, logged at error): the request
/// ends instead of waiting for an answer that cannot come. `{"error":{"code":"internal_error"}}`.
pub fn internal_error() -> Response {
    ErrorCode::InternalError.answer(serde_json::Map::new())
}

/// 503 for a route over its `max_inflight`: the client should come back shortly.
pub fn overload(route: &str) -> Response {
    let mut fields = serde_json::Map::new();
    fields.insert("reason".to_string(), Value::from("overload"));
    fields.insert("route".to_string(), Value::from(route));
    let mut response = ErrorCode::Overload.answer(fields);
    response
        .headers
        .push((Cow::Borrowed("retry-after"), "1".to_string()));
    response
}

/// 413 for a client body larger than the route's `max_body_bytes` (SPEC §3.4):
/// `{"error":{"code":"request_body_too_large","limit":N}}`, N in bytes.
pub fn request_body_too_large(limit: u64) -> Response {
    let mut fields = serde_json::Map::new();
    fields.insert("limit".to_string(), Value::from(limit));
    ErrorCode::RequestBodyTooLarge.answer(fields)
}

/// 408 for a client body not complete when the route deadline (`deadline_ms`, counted from
/// the request headers) passed (SPEC §3.4):
/// `{"error":{"code":"request_body_timeout","deadline_ms":N}}`.
pub fn request_body_timeout(deadline_ms: u64) -> Response {
    let mut fields = serde_json::Map::new();
    fields.insert("deadline_ms".to_string(), Value::from(deadline_ms));
    ErrorCode::RequestBodyTimeout.answer(fields)
}

/// 500 when Envoy received the client body but never handed it to the filter (the Wasm filter
/// lacks `allow_on_headers_stop_iteration: true`): `{"error":{"code":"request_body_unavailable"}}`.
/// The gateway's fault, not the client's; what to fix is logged, not shown to the client.
pub fn request_body_unavailable() -> Response {
    ErrorCode::RequestBodyUnavailable.answer(serde_json::Map::new())
}

/// An error answer that is not about any call (unknown field, client body too large, late or
/// unavailable), with `content-type: application/json` and `cache-control: no-store`.
fn client_error(status: u16, body: &Value) -> Response {
    Response {
        status,
        headers: vec![
            (
                Cow::Borrowed("content-type"),
                "application/json".to_string(),
            ),
            (Cow::Borrowed("cache-control"), "no-store".to_string()),
        ],
        body: serde_json::to_vec(body).unwrap_or_default(),
    }
}

/// The answer when a required call failed: its status by the policy of SPEC §4, the upstream's
/// JSON body for a 4xx, otherwise `{"error": {...}}`.
pub fn required_failure(
    calls: &[CallView<'_>],
    call: &str,
    failure: &Failure,
    shape: Shape<'_>,
) -> Response {
    let status = failure.client_status();
    let body = match &failure.json_body {
        Some(upstream) if (400..500).contains(&status) => upstream.to_vec(),
        _ => {
            let mut body = Vec::with_capacity(128);
            body.extend_from_slice(br#"{"error":{"code":"#);
            meta::push_string(&mut body, ErrorCode::RequiredCallFailed.as_str());
            body.extend_from_slice(br#","call":"#);
            meta::push_string(&mut body, call);
            body.push(b',');
            write_failure_fields(&mut body, failure, shape.expose_errors);
            body.extend_from_slice(b"}}");
            body
        }
    };
    Response {
        status,
        headers: headers(calls, false, shape.response),
        body,
    }
}

/// The filter's own headers, then the route's static ones; an incomplete answer is never
/// cached, whatever `cache-control` the route sets.
fn headers(
    calls: &[CallView<'_>],
    complete: bool,
    response: &ResponseShape,
) -> Vec<(Cow<'static, str>, String)> {
    let mut headers = vec![
        (
            Cow::Borrowed("content-type"),
            "application/json".to_string(),
        ),
        (
            Cow::Borrowed("x-aggregation-complete"),
            complete.to_string(),
        ),
        (Cow::Borrowed("server-timing"), server_timing(calls)),
    ];
    if !complete {
        headers.push((Cow::Borrowed("cache-control"), "no-store".to_string()));
    }
    let overridden = |name: &str| !complete && name == "cache-control";
    for (name, value) in response
        .headers
        .iter()
        .filter(|(name, _)| !overridden(name))
    {
        headers.push((Cow::Owned(name.clone()), value.clone()));
    }
    headers
}

/// `name;dur=12.3` per finished call; a failed one adds `;desc="reason"`, one answered from
/// the cache, a stale entry or another aggregation's identical request `;desc="cache"`,
/// `"stale"`, `"coalesced"`; a skipped one is `name;desc="skipped"` (never dispatched, so no
/// duration).
pub fn server_timing(calls: &[CallView<'_>]) -> String {
    let mut out = String::new();
    for call in calls.iter().filter(|c| c.finished()) {
        if !out.is_empty() {
            out.push_str(", ");
        }
        out.push_str(call.name);
        if let Some(duration) = call.duration {
            let us = u64::try_from(duration.as_micros()).unwrap_or(u64::MAX);
            // Milliseconds to one decimal, rounded half up, without float formatting (which
            // would cost time per answer and size in the .wasm), nor core::fmt (itoa, which
            // serde_json links anyway: 4 answers' worth of `write!` was 2 % of the VM's time).
            let tenths = us.saturating_add(50) / 100;
            out.push_str(";dur=");
            out.push_str(itoa::Buffer::new().format(tenths / 10));
            out.push('.');
            out.push_str(itoa::Buffer::new().format(tenths % 10));
        }
        if let Some(reason) = call.reason() {
            let _ = write!(out, ";desc=\"{reason}\"");
        }
        if call.retried {
            let _ = write!(out, ";attempts={}", call.attempts);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::Reason;
    use serde_json::json;

    static NESTED: ResponseShape = ResponseShape::nested();
    const SHAPE: Shape<'static> = Shape {
        meta_key: Some("\"_meta\""),
        meta_name: Some("_meta"),
        expose_errors: false,
        response: &NESTED,
    };

    fn ok<'a>(name: &'a str, json: &'static str, us: u64) -> CallView<'a> {
        CallView::sample(name, Some(json), CallStatus::Succeeded, Some(us))
    }

    fn failed<'a>(
        name: &'a str,
        failure: &'a Failure,
        fallback: Option<&'static str>,
        us: Option<u64>,
    ) -> CallView<'a> {
        CallView {
            fell_back: fallback.is_some(),
            ..CallView::sample(name, fallback, CallStatus::Failed(failure), us)
        }
    }

    fn parse(response: &Response) -> Value {
        serde_json::from_slice(&response.body).unwrap()
    }

    #[test]
    fn complete_answer_splices_bodies_in_configuration_order() {
        let calls = [
            ok("product", r#"{"id": 1}"#, 12_340),
            ok("stock", "[1,2]", 800),
        ];
        let response = aggregate(&calls, SHAPE);
        assert_eq!(response.status, 200);
        assert_eq!(
            std::str::from_utf8(&response.body).unwrap(),
            r#"{"product":{"id": 1},"stock":[1,2],"_meta":{"complete":true}}"#
        );
        assert_eq!(response.header("x-aggregation-complete"), Some("true"));
        assert_eq!(
            response.header("server-timing"),
            Some("product;dur=12.3, stock;dur=0.8")
        );
        assert_eq!(response.header("cache-control"), None);
    }

    #[test]
    fn partial_answer_reports_errors_and_fallbacks() {
        let mut status = Failure::new(Reason::Status).with_detail("HTTP 503: boom at 10.0.0.1");
        status.status = Some(503);
        let timeout = Failure::new(Reason::Timeout);
        let mut missing = Failure::new(Reason::MissingInput);
        missing.input = Some("query.q".into());
        let calls = [
            ok("a", "1", 1000),
            failed("b", &status, None, Some(2000)),
            failed("c", &timeout, Some("[]"), Some(3000)),
            failed("d", &missing, None, None),
        ];
        let response = aggregate(&calls, SHAPE);
        assert_eq!(
            parse(&response),
            json!({"a": 1, "c": [], "_meta": {"complete": false,
                "errors": {"b": {"reason": "status", "status": 503}, "c": {"reason": "timeout"},
                           "d": {"reason": "missing_input", "input": "query.q"}},
                "fallback": ["c"]}})
        );
        assert!(!String::from_utf8_lossy(&response.body).contains("10.0.0.1"));
        assert_eq!(response.header("x-aggregation-complete"), Some("false"));
        assert_eq!(response.header("cache-control"), Some("no-store"));
        assert_eq!(
            response.header("server-timing"),
            Some(
                r#"a;dur=1.0, b;dur=2.0;desc="status", c;dur=3.0;desc="timeout", d;desc="missing_input""#
            )
        );
        let exposed = aggregate(
            &calls,
            Shape {
                expose_errors: true,
                ..SHAPE
            },
        );
        assert_eq!(
            parse(&exposed)["_meta"]["errors"]["b"]["detail"],
            "HTTP 503: boom at 10.0.0.1"
        );
    }

    #[test]
    fn failed_items_are_reported_per_item_and_unfetched_calls_do_not_count() {
        let timeout = Failure::new(Reason::Timeout);
        let calls = [
            CallView::sample(
                "authors",
                Some(r#"[{"n":1},null]"#),
                CallStatus::ItemsFailed(vec![("u2", &timeout)]),
                Some(5000),
            ),
            CallView::sample("skipped", None, CallStatus::NotFetched, None),
        ];
        let response = aggregate(&calls, SHAPE);
        assert_eq!(
            parse(&response),
            json!({"authors": [{"n": 1}, null], "_meta": {"complete": false,
                "errors": {"authors": {"items": {"u2": {"reason": "timeout"}}}}}})
        );
        assert_eq!(
            response.header("server-timing"),
            Some(r#"authors;dur=5.0;desc="timeout""#)
        );
        let only_skipped = aggregate(&calls[1..], SHAPE);
        assert_eq!(parse(&only_skipped), json!({"_meta": {"complete": true}}));
    }

    #[test]
    fn skipped_calls_are_absent_listed_and_do_not_make_the_answer_incomplete() {
        let calls = [
            ok("a", "1", 1000),
            CallView::sample("b", None, CallStatus::Skipped, None),
            CallView::sample("c", None, CallStatus::Skipped, None),
        ];
        let response = aggregate(&calls, SHAPE);
        assert_eq!(
            parse(&response),
            json!({"a": 1, "_meta": {"complete": true, "skipped": ["b", "c"]}})
        );
        assert_eq!(response.header("x-aggregation-complete"), Some("true"));
        assert_eq!(response.header("cache-control"), None);
        assert_eq!(
            response.header("server-timing"),
            Some(r#"a;dur=1.0, b;desc="skipped", c;desc="skipped""#)
        );
    }

    #[test]
    fn meta_can_be_renamed_or_omitted() {
        let calls = [ok("a", "1", 1)];
        let renamed = aggregate(
            &calls,
            Shape {
                meta_key: Some("\"status\""),
                meta_name: Some("status"),
                ..SHAPE
            },
        );
        assert_eq!(
            parse(&renamed),
            json!({"a": 1, "status": {"complete": true}})
        );
        let omitted = aggregate(
            &calls,
            Shape {
                meta_key: None,
                meta_name: None,
                ..SHAPE
            },
        );
        assert_eq!(omitted.body, br#"{"a":1}"#);
        let none = aggregate(
            &[],
            Shape {
                meta_key: None,
                meta_name: None,
                ..SHAPE
            },
        );
        assert_eq!(none.body, b"{}");
    }

    fn merge() -> ResponseShape {
        let config = crate::config::parse(
            br#"{"routes":[{"name":"r","match":{"path":"/"},"response":{"layout":"merge"},
                "calls":[{"name":"a","cluster":"c","path":"/"}]}]}"#,
        )
        .unwrap();
        crate::shape::compile_response(&config.routes[0].response).unwrap()
    }

    /// The body is JSON with unique keys at every level (json_check refuses repeats).
    fn assert_unique_keys(response: &Response) {
        if let Err(e) = crate::json_check::check(&response.body, 127) {
            panic!("{e}: {}", String::from_utf8_lossy(&response.body));
        }
    }

    #[test]
    fn the_meta_object_is_the_filters_own_in_merge() {
        let mut not_found = Failure::new(Reason::Status);
        not_found.status = Some(404);
        let calls = [
            ok("m", r#"{"_meta":{"complete":true,"page":2},"x":1}"#, 1),
            failed("down", &not_found, None, Some(1)),
        ];
        let shape = merge();
        let response = aggregate(
            &calls,
            Shape {
                response: &shape,
                ..SHAPE
            },
        );
        assert_unique_keys(&response);
        assert_eq!(
            parse(&response),
            json!({"x": 1, "_meta": {"complete": false,
                "errors": {"down": {"reason": "status", "status": 404}}}})
        );
    }

    #[test]
    fn a_failed_call_whose_fallback_does_not_fit_is_reported_once() {
        let timeout = Failure::new(Reason::Timeout);
        let calls = [
            ok("a", r#"{"x":1}"#, 1),
            failed("b", &timeout, Some("[]"), Some(1)),
        ];
        let shape = merge();
        let response = aggregate(
            &calls,
            Shape {
                response: &shape,
                ..SHAPE
            },
        );
        assert_unique_keys(&response);
        assert_eq!(
            parse(&response),
            json!({"x": 1, "_meta": {"complete": false, "errors": {"b": {"reason": "timeout"}},
                "fallback": ["b"]}})
        );
    }

    #[test]
    fn client_body_errors_have_their_status_and_code() {
        let cases = [
            (
                request_body_too_large(2048),
                413,
                json!({"error": {"code": "request_body_too_large", "limit": 2048}}),
            ),
            (
                request_body_timeout(500),
                408,
                json!({"error": {"code": "request_body_timeout", "deadline_ms": 500}}),
            ),
            (
                request_body_unavailable(),
                500,
                json!({"error": {"code": "request_body_unavailable"}}),
            ),
        ];
        for (response, status, body) in cases {
            assert_eq!((response.status, parse(&response)), (status, body));
            assert_eq!(response.header("content-type"), Some("application/json"));
            assert_eq!(response.header("cache-control"), Some("no-store"));
        }
    }

    #[test]
    fn required_failure_body_and_status() {
        let mut failure = Failure::new(Reason::Status).with_detail("HTTP 503: internal");
        failure.status = Some(503);
        let calls = [failed("product", &failure, None, Some(5))];
        let response = required_failure(&calls, "product", &failure, SHAPE);
        assert_eq!(response.status, 502);
        assert_eq!(
            parse(&response),
            json!({"error": {"code": "required_call_failed", "call": "product", "reason": "status", "status": 503}})
        );
        assert_eq!(response.header("cache-control"), Some("no-store"));
        assert_eq!(response.header("x-aggregation-complete"), Some("false"));

        let mut not_found = Failure::new(Reason::Status);
        not_found.status = Some(404);
        not_found.json_body = Some(br#"{"message":"no such product"}"#.to_vec().into());
        let response = required_failure(&calls, "product", &not_found, SHAPE);
        assert_eq!(
            (response.status, response.body.as_slice()),
            (404, &br#"{"message":"no such product"}"#[..])
        );
    }
}
