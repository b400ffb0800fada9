//! The outcome of one call (SPEC §4): success with a splice-ready body, or a failure with one
//! reason from the fixed list; and the status the client gets when a required call fails.

use crate::config::Format;
use crate::json_check;
use crate::json_number;
use serde_json::Value;
use std::time::Duration;

/// Why a call failed: the fixed list of SPEC §4. Clients see it by its [name](Reason::as_str)
/// in `_meta.errors`, in `server-timing` and in error bodies; each has a
/// `failure.<reason>` counter per call. [`Failure::client_status`] says what a required call's
/// failure answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// `timeout`: no complete answer within the attempt's timeout (the call's `timeout_ms`,
    /// cut to the route deadline). Envoy answers the attempt with its own `504` `upstream
    /// request timeout`, or, when the answer's headers had arrived, resets it at the timeout.
    Timeout,
    /// `status`: the upstream answered, but not 2xx; [`Failure::status`] holds the status.
    Status,
    /// `connect`: connection refused or reset, or no healthy host: Envoy's `503` `upstream
    /// connect error or disconnect/reset before headers…` or `no healthy upstream`, a reset
    /// before the answer was complete, or Envoy unable to start the attempt.
    Connect,
    /// `invalid_body`: a 2xx body that is not JSON (or not UTF-8 with `"format": "text"`), nests
    /// deeper than [`MAX_JSON_DEPTH`], repeats a key in one object, or starts with a byte order
    /// mark.
    InvalidBody,
    /// `too_large`: a 2xx body over the call's `max_body_bytes`, left unread.
    TooLarge,
    /// `missing_input`: a template reads a value that is absent (or empty, or `null`) and has
    /// no default; the call is not made. [`Failure::input`] names the placeholder.
    MissingInput,
    /// `invalid_input`: a template reads a value it cannot use: not UTF-8 once decoded, an
    /// object, a header value with CR, LF or NUL, a `.` or `..` path segment, a client body
    /// that is not JSON, or a `for_each` item that is not a scalar; the call is not made.
    InvalidInput,
    /// `dependency_failed`: a call this one depends on failed without a fallback; the call is
    /// not made. [`Failure::dependency`] names it.
    DependencyFailed,
    /// `deadline`: the call was ready to go only after the route deadline; never dispatched.
    Deadline,
    /// `dispatch`: Envoy refused the attempt (unknown or not yet warmed cluster). Clusters are
    /// not checked at configure time.
    Dispatch,
    /// `too_many_items`: a `for_each` call found more distinct items than its `max_fan_out`;
    /// nothing was sent.
    TooManyItems,
    /// `circuit_open`: the circuit breaker of the call's cluster is open; nothing was sent.
    CircuitOpen,
    /// `overload`: the route has `max_inflight` aggregations in flight on this worker; the
    /// client is answered 503 before any call is made (SPEC §6). It names the refusal in the
    /// error body, never a call's failure.
    Overload,
}

impl Reason {
    /// Every reason, in the order of SPEC §4: the one list that stats and docs follow. A new
    /// variant does not compile until [`Reason::index`] places it, and a unit test checks that
    /// it stands here at that place.
    pub const ALL: [Reason; 13] = [
        Reason::Timeout,
        Reason::Status,
        Reason::Connect,
        Reason::InvalidBody,
        Reason::TooLarge,
        Reason::MissingInput,
        Reason::InvalidInput,
        Reason::DependencyFailed,
        Reason::Deadline,
        Reason::Dispatch,
        Reason::CircuitOpen,
        Reason::TooManyItems,
        Reason::Overload,
    ];

    /// This reason's place in [`Reason::ALL`].
    pub const fn index(self) -> usize {
        match self {
            Reason::Timeout => 0,
            Reason::Status => 1,
            Reason::Connect => 2,
            Reason::InvalidBody => 3,
            Reason::TooLarge => 4,
            Reason::MissingInput => 5,
            Reason::InvalidInput => 6,
            Reason::DependencyFailed => 7,
            Reason::Deadline => 8,
            Reason::Dispatch => 9,
            Reason::CircuitOpen => 10,
            Reason::TooManyItems => 11,
            Reason::Overload => 12,
        }
    }

    /// The name clients and stats see (`_meta`, `server-timing`, `failure.<reason>`).
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Timeout => "timeout",
            Reason::Status => "status",
            Reason::Connect => "connect",
            Reason::InvalidBody => "invalid_body",
            Reason::TooLarge => "too_large",
            Reason::MissingInput => "missing_input",
            Reason::InvalidInput => "invalid_input",
            Reason::DependencyFailed => "dependency_failed",
            Reason::Deadline => "deadline",
            Reason::Dispatch => "dispatch",
            Reason::TooManyItems => "too_many_items",
            Reason::CircuitOpen => "circuit_open",
            Reason::Overload => "overload",
        }
    }
}

/// A failed call (or `for_each` item) and what the client may learn about it: the reason and
/// the fields that go with it in `_meta.errors` and in error bodies (SPEC §4).
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    /// Why it failed.
    pub reason: Reason,
    /// The upstream status, for `status`.
    pub status: Option<u16>,
    /// The template input that was missing or invalid (`query.q`), for `*_input`.
    pub input: Option<Box<str>>,
    /// The input came from the client (path, query, header), not from another call.
    pub from_client: bool,
    /// The call this one depended on, for `dependency_failed`.
    pub dependency: Option<Box<str>>,
    /// The `for_each` item whose call failed, when a required call fails on one item.
    pub item: Option<Box<str>>,
    /// Upstream or Envoy text, shown only with `expose_errors`.
    pub detail: Option<Box<str>>,
    /// A 4xx answer's JSON body, passed through when the call is required.
    pub json_body: Option<Box<[u8]>>,
}

impl Failure {
    /// A failure with only its reason; set the fields that apply to it afterwards.
    pub fn new(reason: Reason) -> Failure {
        Failure {
            reason,
            status: None,
            input: None,
            from_client: false,
            dependency: None,
            item: None,
            detail: None,
            json_body: None,
        }
    }

    /// The same failure with `detail`: upstream or Envoy text, or our own words, shown only
    /// on routes with `expose_errors`.
    pub fn with_detail(mut self, detail: impl Into<String>) -> Failure {
        self.detail = Some(detail.into().into_boxed_str());
        self
    }

    /// The status the client gets when this failure is a required call's (SPEC §4).
    pub fn client_status(&self) -> u16 {
        match (self.reason, self.status) {
            (Reason::Status, Some(status)) if (400..500).contains(&status) => status,
            (Reason::Timeout | Reason::Deadline, _) => 504,
            (Reason::Overload, _) => 503,
            (Reason::MissingInput | Reason::InvalidInput, _) if self.from_client => 400,
            _ => 502,
        }
    }
}

/// A successful call: its body as JSON bytes to splice, and the parsed value if later calls
/// read from it.
#[derive(Debug, Clone, PartialEq)]
pub struct Success {
    /// What the client sees: the upstream bytes, or the reshaped body.
    pub json: Vec<u8>,
    /// The upstream body parsed, for templates of later calls.
    pub value: Option<Value>,
    /// Upstream response headers to copy to the client (`headers_from`).
    pub headers: Vec<(String, String)>,
    /// Served from the cache, fresh.
    pub cached: bool,
    /// Served from the cache after the call failed: the entry's age.
    pub stale_age_ms: Option<u64>,
    /// The failure a stale answer stands in for.
    pub failure_replaced: Option<Reason>,
    /// The answer of an identical request another aggregation sent (SPEC §6 `coalesce`).
    pub coalesced: bool,
}

impl Success {
    fn new(json: Vec<u8>, value: Option<Value>) -> Success {
        Success {
            json,
            value,
            headers: Vec::new(),
            cached: false,
            stale_age_ms: None,
            failure_replaced: None,
            coalesced: false,
        }
    }
}

impl Reason {
    /// Failures that say the upstream is unwell, as opposed to an answer it chose to give.
    pub fn counts_against_upstream(self, status: Option<u16>) -> bool {
        match self {
            Reason::Connect | Reason::Timeout => true,
            Reason::Status => status.is_some_and(|s| s >= 500),
            _ => false,
        }
    }
}

/// Deepest nesting accepted in an upstream body: what serde_json parses (its limit is 128
/// levels, exclusive), so the spliced and the parsed paths agree, and clients never receive
/// JSON too deep for common parsers.
pub const MAX_JSON_DEPTH: usize = 127;

/// How much of an upstream body `expose_errors` shows.
const DETAIL_LIMIT: usize = 1024;

/// Whether a call reported with no headers (a reset), `elapsed` after it was sent with
/// `timeout`, is its timeout firing. Envoy resets a call whose timeout fires after the answer's
/// headers arrived, and arms its timers from the event loop's cached clock, which is as old as
/// the loop iteration that dispatched the call (our clock reads are real time): they fire early
/// by that much, a fraction of a millisecond when Envoy is idle, and measured at 46 ms of a
/// 250 ms timeout on a loaded 2-core machine. Envoy does not say why it reset a call, so timing
/// is the only signal: a genuine reset in the last quarter of the timeout (at least the last
/// 10 ms) is reported as a timeout, the lesser error.
pub fn reset_is_timeout(elapsed: Duration, timeout: Duration) -> bool {
    let slack = (timeout / 4).max(Duration::from_millis(10));
    elapsed + slack >= timeout
}

/// Envoy answers a call it could not complete with a local reply; these are its bodies.
const ENVOY_TIMEOUT_BODY: &[u8] = b"upstream request timeout";
const ENVOY_CONNECT_BODIES: [&[u8]; 2] = [
    b"upstream connect error or disconnect/reset before headers",
    b"no healthy upstream",
];

/// Judges an upstream answer (SPEC §4). `parse` asks for the parsed value as well.
pub fn judge_answer(
    status: u16,
    body: Vec<u8>,
    format: Format,
    parse: bool,
) -> Result<Success, Failure> {
    if (200..300).contains(&status) {
        return accept_body(body, format, parse);
    }
    if status == 504 && body == ENVOY_TIMEOUT_BODY {
        return Err(Failure::new(Reason::Timeout).with_detail("upstream request timeout"));
    }
    // 503 for refused, reset or no host; 502 when the connection spoke the wrong protocol (an
    // HTTP/2 cluster whose service only speaks HTTP/1.1): a connection fault either way.
    if matches!(status, 502 | 503) && ENVOY_CONNECT_BODIES.iter().any(|p| body.starts_with(p)) {
        return Err(Failure::new(Reason::Connect).with_detail(excerpt(&body)));
    }
    let mut failure =
        Failure::new(Reason::Status).with_detail(format!("HTTP {status}: {}", excerpt(&body)));
    failure.status = Some(status);
    if (400..500).contains(&status) && is_json(&body) {
        failure.json_body = Some(body.into_boxed_slice());
    }
    Err(failure)
}

fn accept_body(body: Vec<u8>, format: Format, parse: bool) -> Result<Success, Failure> {
    if body.is_empty() {
        return Ok(Success::new(b"null".to_vec(), parse.then_some(Value::Null)));
    }
    match format {
        Format::Json => {
            // Checked byte for byte even when parsed: serde_json's `Value` keeps the last of
            // two equal keys, the bytes spliced for the client hold both, and the same body
            // must not be valid on one route and invalid on another.
            if let Err(invalid) = json_check::check(&body, MAX_JSON_DEPTH) {
                return Err(Failure::new(Reason::InvalidBody).with_detail(invalid.to_string()));
            }
            if !parse {
                return Ok(Success::new(body, None));
            }
            match json_number::parse(&body) {
                Ok(value) => Ok(Success::new(body, Some(value))),
                Err(e) => Err(invalid_body(&e)),
            }
        }
        Format::Text => {
            let text = String::from_utf8(body).map_err(|_| {
                Failure::new(Reason::InvalidBody).with_detail("text body is not UTF-8")
            })?;
            let json = serde_json::to_vec(&text)
                .map_err(|e| Failure::new(Reason::InvalidBody).with_detail(e.to_string()))?;
            Ok(Success::new(json, parse.then_some(Value::String(text))))
        }
    }
}

fn invalid_body(error: &serde_json::Error) -> Failure {
    Failure::new(Reason::InvalidBody).with_detail(format!("body is not JSON: {error}"))
}

fn is_json(body: &[u8]) -> bool {
    json_check::check(body, MAX_JSON_DEPTH).is_ok()
}

/// The first KiB of a body as text, for `expose_errors`.
fn excerpt(body: &[u8]) -> String {
    let cut = body.get(..DETAIL_LIMIT).unwrap_or(body);
    String::from_utf8_lossy(cut).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn judge(status: u16, body: &str) -> Result<Success, Failure> {
        judge_answer(status, body.as_bytes().to_vec(), Format::Json, false)
    }

    #[test]
    fn json_bodies_are_validated_and_kept_byte_for_byte() {
        let ok = judge(200, " {\"a\": [1, 2]} \n").unwrap();
        assert_eq!(ok.json, b" {\"a\": [1, 2]} \n");
        assert_eq!(ok.value, None);
        assert_eq!(
            judge(201, "{\"a\":").unwrap_err().reason,
            Reason::InvalidBody
        );
        assert_eq!(
            judge(200, "{} trailing").unwrap_err().reason,
            Reason::InvalidBody
        );
    }

    #[test]
    fn nesting_is_limited_the_same_way_whether_spliced_or_parsed() {
        let nested = |depth: usize| "[".repeat(depth) + &"]".repeat(depth);
        for parse in [false, true] {
            let judge = |body: String| judge_answer(200, body.into_bytes(), Format::Json, parse);
            assert!(judge(nested(MAX_JSON_DEPTH)).is_ok());
            assert_eq!(
                judge(nested(MAX_JSON_DEPTH + 1))
                    .map_err(|f| f.reason)
                    .err(),
                Some(Reason::InvalidBody)
            );
            assert_eq!(
                judge(nested(100_000)).map_err(|f| f.reason).err(),
                Some(Reason::InvalidBody)
            );
        }
        let tricky = format!(r#"{{"s":"{}\"[[[","a":[1]}}"#, "[".repeat(500));
        assert!(
            judge_answer(200, tricky.into_bytes(), Format::Json, false).is_ok(),
            "brackets in strings do not count"
        );
        let deep_after_escapes = format!(
            r#"{{"s":"a\\","t":"\"{}","u":{}}}"#,
            "[".repeat(300),
            "[".repeat(200) + &"]".repeat(200)
        );
        assert_eq!(
            judge_answer(200, deep_after_escapes.into_bytes(), Format::Json, false)
                .map_err(|f| f.reason)
                .err(),
            Some(Reason::InvalidBody),
            "escaped backslashes and quotes do not hide real nesting"
        );
    }

    #[test]
    fn invalid_utf8_inside_json_strings_is_invalid_body() {
        let failure =
            judge_answer(200, b"{\"a\":\"caf\xe9\"}".to_vec(), Format::Json, false).unwrap_err();
        assert_eq!(failure.reason, Reason::InvalidBody);
        assert_eq!(
            failure.detail.as_deref(),
            Some("body is not JSON: invalid UTF-8 at byte 9")
        );
    }

    #[test]
    fn duplicate_keys_are_invalid_body_whether_spliced_or_parsed() {
        for parse in [false, true] {
            for body in [r#"{"a":1,"a":2}"#, r#"{"x":{"a":1,"\u0061":2}}"#] {
                let failure =
                    judge_answer(200, body.as_bytes().to_vec(), Format::Json, parse).unwrap_err();
                assert_eq!(failure.reason, Reason::InvalidBody, "{body}");
                assert!(
                    failure.detail.as_deref().is_some_and(
                        |d| d.starts_with(r#"body is not JSON: duplicate key "a" at byte "#)
                    ),
                    "{failure:?}"
                );
            }
        }
        let failure = judge(404, r#"{"error":"gone","error":"here"}"#).unwrap_err();
        assert_eq!(
            failure.json_body, None,
            "a 4xx body with a repeated key is not passed on to the client"
        );
    }

    #[test]
    fn a_byte_order_mark_is_invalid_body() {
        for parse in [false, true] {
            let failure =
                judge_answer(200, b"\xEF\xBB\xBF{}".to_vec(), Format::Json, parse).unwrap_err();
            assert_eq!(failure.reason, Reason::InvalidBody);
            assert_eq!(
                failure.detail.as_deref(),
                Some("body is not JSON: byte order mark at byte 0")
            );
        }
        assert_eq!(judge(404, "\u{feff}{}").unwrap_err().json_body, None);
    }

    #[test]
    fn empty_bodies_are_null() {
        for status in [200, 204] {
            let ok = judge_answer(status, Vec::new(), Format::Json, true).unwrap();
            assert_eq!(
                (ok.json.as_slice(), ok.value),
                (&b"null"[..], Some(Value::Null))
            );
        }
    }

    #[test]
    fn text_bodies_become_json_strings() {
        let ok = judge_answer(200, b"hi \"there\"\n".to_vec(), Format::Text, true).unwrap();
        assert_eq!(ok.json, br#""hi \"there\"\n""#);
        assert_eq!(ok.value, Some(Value::String("hi \"there\"\n".into())));
        let bad = judge_answer(200, vec![0xff], Format::Text, false).unwrap_err();
        assert_eq!(bad.reason, Reason::InvalidBody);
    }

    #[test]
    fn envoy_local_replies_map_to_timeout_and_connect() {
        assert_eq!(
            judge(504, "upstream request timeout").unwrap_err().reason,
            Reason::Timeout
        );
        let refused = "upstream connect error or disconnect/reset before headers. reset reason: connection failure";
        assert_eq!(judge(503, refused).unwrap_err().reason, Reason::Connect);
        assert_eq!(
            judge(503, "no healthy upstream").unwrap_err().reason,
            Reason::Connect
        );
        let protocol = "upstream connect error or disconnect/reset before headers. reset reason: protocol error";
        assert_eq!(judge(502, protocol).unwrap_err().reason, Reason::Connect);
        let own_504 = judge(504, "{\"busy\":true}").unwrap_err();
        assert_eq!(
            (own_504.reason, own_504.status),
            (Reason::Status, Some(504))
        );
    }

    #[test]
    fn client_errors_keep_their_json_body() {
        let missing = judge(404, "{\"error\":\"no such product\"}").unwrap_err();
        assert_eq!(missing.client_status(), 404);
        assert_eq!(
            missing.json_body.as_deref(),
            Some(&b"{\"error\":\"no such product\"}"[..])
        );
        let html = judge(404, "<html>").unwrap_err();
        assert_eq!(html.json_body, None);
        assert_eq!(html.client_status(), 404);
    }

    #[test]
    fn every_reason_is_listed_once_at_its_index() {
        for (index, reason) in Reason::ALL.iter().enumerate() {
            assert_eq!(reason.index(), index, "{reason:?}");
        }
        let mut names: Vec<&str> = Reason::ALL.iter().map(|r| r.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Reason::ALL.len());
    }

    #[test]
    fn status_policy() {
        assert_eq!(judge(503, "{}").unwrap_err().client_status(), 502);
        assert_eq!(judge(302, "").unwrap_err().client_status(), 502);
        assert_eq!(Failure::new(Reason::Timeout).client_status(), 504);
        assert_eq!(Failure::new(Reason::Deadline).client_status(), 504);
        let mut missing = Failure::new(Reason::MissingInput);
        assert_eq!(missing.client_status(), 502);
        missing.from_client = true;
        assert_eq!(missing.client_status(), 400);
        assert_eq!(Failure::new(Reason::Connect).client_status(), 502);
        assert_eq!(Failure::new(Reason::Dispatch).client_status(), 502);
    }

    #[test]
    fn exposed_detail_is_capped() {
        let long = "x".repeat(5000);
        let failure = judge(500, &long).unwrap_err();
        assert!(failure.detail.unwrap().len() < 1100);
    }
}
