#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
use super::*;
use crate::plan::Plan;
use serde_json::json;

const MS: u64 = 1000;

fn route(json: &str) -> Rc<Route> {
    let plan = Plan::compile(json.as_bytes()).unwrap();
    Rc::clone(&plan.routes[0])
}

fn page(calls: &str) -> Rc<Route> {
    route(&format!(
        r#"{{"routes":[{{"name":"page","match":{{"path":"/p/{{id}}"}},"deadline_ms":300,"calls":[{calls}]}}]}}"#
    ))
}

fn start(route: &Rc<Route>, id: &str, query: &str) -> (Gather, Vec<Action>) {
    let headers = route
        .headers
        .iter()
        .map(|h| (h == "x-request-id").then(|| "req-1".to_string()))
        .collect();
    Gather::start(
        Rc::clone(route),
        vec![Capture::Segment(id.into())],
        query,
        headers,
        0,
    )
}

fn dispatches(actions: &[Action]) -> Vec<&Dispatch> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Dispatch(d) => Some(d),
            Action::Respond(_) => None,
        })
        .collect()
}

fn response(actions: Vec<Action>) -> Response {
    match actions.into_iter().last() {
        Some(Action::Respond(r)) => r,
        other => panic!("expected a response, got {other:?}"),
    }
}

fn header<'a>(d: &'a Dispatch, name: &str) -> Option<&'a str> {
    d.headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

fn answer(call: usize, body: &str) -> Event {
    Event::Answered {
        call,
        status: 200,
        body: body.as_bytes().to_vec(),
    }
}

fn body(r: &Response) -> Value {
    serde_json::from_slice(&r.body).unwrap()
}

#[test]
fn independent_calls_are_dispatched_together_and_answered_in_config_order() {
    let route = page(
        r#"{"name":"a","cluster":"ca","path":"/a/{path.id}"},
           {"name":"b","cluster":"cb","path":"/b?c={query.currency|EUR}","timeout_ms":100},
           {"name":"c","cluster":"cc","path":"/c"}"#,
    );
    let (mut gather, actions) = start(&route, "42", "currency=USD");
    let sent = dispatches(&actions);
    assert_eq!(sent.len(), 3);
    assert_eq!(header(sent[0], ":path"), Some("/a/42"));
    assert_eq!(header(sent[0], ":method"), Some("GET"));
    assert_eq!(header(sent[0], ":authority"), Some("ca"));
    assert_eq!(header(sent[0], "x-request-id"), Some("req-1"));
    assert_eq!(header(sent[1], ":path"), Some("/b?c=USD"));
    assert_eq!(
        (sent[0].timeout_ms, sent[1].timeout_ms),
        (300, 100),
        "timeout = min(call, deadline)"
    );

    assert!(gather.on_event(answer(2, "3"), 10 * MS).is_empty());
    assert!(gather.on_event(answer(0, "1"), 20 * MS).is_empty());
    let r = response(gather.on_event(answer(1, "2"), 30 * MS));
    assert_eq!(r.body, br#"{"a":1,"b":2,"c":3,"_meta":{"complete":true}}"#);
    assert_eq!(
        r.header("server-timing"),
        Some("a;dur=20.0, b;dur=30.0, c;dur=10.0")
    );
    assert!(
        gather.on_event(answer(1, "2"), 40 * MS).is_empty(),
        "nothing after the answer"
    );
}

#[test]
fn dependent_call_waits_for_its_dependency_and_reads_its_body() {
    let route = page(
        r#"{"name":"product","cluster":"catalog","path":"/products/{path.id}"},
           {"name":"seller","cluster":"sellers","path":"/sellers/{calls.product.seller.id}"},
           {"name":"stock","cluster":"stock","path":"/stock/{path.id}"}"#,
    );
    let (mut gather, actions) = start(&route, "7", "");
    let first: Vec<usize> = dispatches(&actions).iter().map(|d| d.call).collect();
    assert_eq!(first, [0, 2]);
    let actions = gather.on_event(answer(0, r#"{"seller":{"id":"s/1"}}"#), 50 * MS);
    let next = dispatches(&actions);
    assert_eq!(next.len(), 1);
    assert_eq!(header(next[0], ":path"), Some("/sellers/s%2F1"));
    assert_eq!(
        next[0].timeout_ms, 250,
        "the remaining deadline caps the timeout"
    );
    assert!(gather.on_event(answer(2, "5"), 60 * MS).is_empty());
    let r = response(gather.on_event(answer(1, r#"{"name":"Bob"}"#), 70 * MS));
    assert_eq!(body(&r)["seller"], json!({"name": "Bob"}));
}

#[test]
fn failed_dependency_stops_dependents_unless_it_has_a_fallback() {
    let route = page(
        r#"{"name":"a","cluster":"c","path":"/a"},
           {"name":"b","cluster":"c","path":"/b/{calls.a.id}"},
           {"name":"c","cluster":"c","path":"/c","fallback":{"id":9}},
           {"name":"d","cluster":"c","path":"/d/{calls.c.id}"}"#,
    );
    let (mut gather, _) = start(&route, "1", "");
    assert!(gather.on_event(Event::Reset { call: 0 }, MS).is_empty());
    let actions = gather.on_event(
        Event::Answered {
            call: 2,
            status: 500,
            body: b"oops".to_vec(),
        },
        2 * MS,
    );
    let sent = dispatches(&actions);
    assert_eq!(sent.len(), 1);
    assert_eq!(header(sent[0], ":path"), Some("/d/9"));
    let r = response(gather.on_event(answer(3, "4"), 3 * MS));
    assert_eq!(
        body(&r),
        json!({"c": {"id": 9}, "d": 4, "_meta": {"complete": false, "errors": {
            "a": {"reason": "connect"},
            "b": {"reason": "dependency_failed", "dependency": "a"},
            "c": {"reason": "status", "status": 500}}, "fallback": ["c"]}})
    );
}

#[test]
fn required_failure_answers_at_once_and_ignores_the_rest() {
    let route = page(
        r#"{"name":"product","cluster":"c","path":"/p","required":true},
           {"name":"other","cluster":"c","path":"/o"}"#,
    );
    let (mut gather, _) = start(&route, "1", "");
    let r = response(gather.on_event(
        Event::Answered {
            call: 0,
            status: 503,
            body: b"down".to_vec(),
        },
        MS,
    ));
    assert_eq!(r.status, 502);
    assert_eq!(
        body(&r),
        json!({"error": {"code": "required_call_failed", "call": "product", "reason": "status", "status": 503}})
    );
    assert!(gather.is_answered());
    assert!(gather.on_event(answer(1, "1"), 2 * MS).is_empty());
}

#[test]
fn required_client_error_is_passed_through_with_its_json_body() {
    let route = page(r#"{"name":"product","cluster":"c","path":"/p","required":true}"#);
    let (mut gather, _) = start(&route, "1", "");
    let r = response(gather.on_event(
        Event::Answered {
            call: 0,
            status: 404,
            body: br#"{"error":"gone"}"#.to_vec(),
        },
        MS,
    ));
    assert_eq!(
        (r.status, r.body.as_slice()),
        (404, &br#"{"error":"gone"}"#[..])
    );
}

#[test]
fn required_timeout_is_504() {
    let route = page(r#"{"name":"product","cluster":"c","path":"/p","required":true}"#);
    let (mut gather, _) = start(&route, "1", "");
    let timeout = Event::Answered {
        call: 0,
        status: 504,
        body: b"upstream request timeout".to_vec(),
    };
    assert_eq!(response(gather.on_event(timeout, 300 * MS)).status, 504);
}

#[test]
fn missing_required_client_input_is_400_before_anything_is_dispatched() {
    let route = page(
        r#"{"name":"other","cluster":"c","path":"/o"},
           {"name":"search","cluster":"c","path":"/s?q={query.q}","required":true}"#,
    );
    let (gather, actions) = start(&route, "1", "page=2");
    assert!(gather.is_answered());
    assert_eq!(actions.len(), 1, "no dispatch is wasted: {actions:?}");
    let r = response(actions);
    assert_eq!(r.status, 400);
    assert_eq!(
        body(&r),
        json!({"error": {"code": "required_call_failed", "call": "search", "reason": "missing_input", "input": "query.q"}})
    );
}

#[test]
fn optional_missing_input_uses_the_fallback_and_is_reported() {
    let route = page(r#"{"name":"search","cluster":"c","path":"/s?q={query.q}","fallback":[]}"#);
    let (_, actions) = start(&route, "1", "");
    let r = response(actions);
    assert_eq!(r.status, 200);
    assert_eq!(
        body(&r),
        json!({"search": [], "_meta": {"complete": false, "errors": {"search": {"reason": "missing_input", "input": "query.q"}}, "fallback": ["search"]}})
    );
    assert_eq!(
        r.header("server-timing"),
        Some(r#"search;desc="missing_input""#)
    );
}

#[test]
fn dependent_ready_after_the_deadline_is_not_dispatched() {
    let route = page(
        r#"{"name":"a","cluster":"c","path":"/a"},
           {"name":"b","cluster":"c","path":"/b","after":["a"],"required":true}"#,
    );
    let (mut gather, _) = start(&route, "1", "");
    let r = response(gather.on_event(answer(0, "1"), 300 * MS));
    assert_eq!(r.status, 504);
    assert_eq!(body(&r)["error"]["reason"], "deadline");
}

#[test]
fn refused_unreachable_and_oversized_calls_are_reported() {
    let route = page(
        r#"{"name":"a","cluster":"ghost","path":"/a"},
           {"name":"b","cluster":"c","path":"/b","max_body_bytes":10},
           {"name":"n","cluster":"empty","path":"/n"}"#,
    );
    let (mut gather, _) = start(&route, "1", "");
    assert!(gather.body_limit(1) == 10);
    assert!(gather
        .on_event(
            Event::Refused {
                call: 0,
                detail: "unknown cluster".into()
            },
            0
        )
        .is_empty());
    let unreachable = Event::Unreachable {
        call: 2,
        detail: "no healthy host".into(),
    };
    assert!(gather.on_event(unreachable, 0).is_empty());
    let r = response(gather.on_event(
        Event::TooLarge {
            call: 1,
            status: 200,
        },
        MS,
    ));
    assert_eq!(
        body(&r)["_meta"]["errors"],
        json!({"a": {"reason": "dispatch"}, "b": {"reason": "too_large"}, "n": {"reason": "connect"}})
    );
}

#[test]
fn invalid_bodies_and_text_format() {
    let route = page(
        r#"{"name":"a","cluster":"c","path":"/a"},
           {"name":"b","cluster":"c","path":"/b","format":"text"},
           {"name":"e","cluster":"c","path":"/e"}"#,
    );
    let (mut gather, _) = start(&route, "1", "");
    gather.on_event(answer(0, "{not json"), MS);
    gather.on_event(answer(1, "plain <b>text</b>"), MS);
    let r = response(gather.on_event(
        Event::Answered {
            call: 2,
            status: 204,
            body: Vec::new(),
        },
        MS,
    ));
    assert_eq!(
        body(&r),
        json!({"b": "plain <b>text</b>", "e": null, "_meta": {"complete": false, "errors": {"a": {"reason": "invalid_body"}}}})
    );
}

#[test]
fn header_templates_refuse_line_breaks_from_client_input() {
    let route = page(
        r#"{"name":"a","cluster":"c","path":"/a","headers":{"x-user":"{query.u}"},"required":true}"#,
    );
    let (_, actions) = start(&route, "1", "u=a%0D%0Ax-admin:%201");
    let r = response(actions);
    assert_eq!(r.status, 400);
    assert_eq!(body(&r)["error"]["reason"], "invalid_input");
}

#[test]
fn events_for_unknown_calls_are_ignored() {
    let route = page(r#"{"name":"a","cluster":"c","path":"/a"}"#);
    let (mut gather, _) = start(&route, "1", "");
    assert!(gather.on_event(answer(7, "1"), MS).is_empty());
    assert!(!gather.is_answered());
}

#[test]
fn a_reset_at_the_timeout_is_a_timeout() {
    let route = page(
        r#"{"name":"a","cluster":"c","path":"/a","timeout_ms":100},{"name":"b","cluster":"c","path":"/b"}"#,
    );
    let (mut gather, _) = start(&route, "1", "");
    gather.on_event(Event::Reset { call: 0 }, 95 * MS);
    let r = response(gather.on_event(Event::Reset { call: 1 }, 120 * MS));
    assert_eq!(
        body(&r)["_meta"]["errors"],
        json!({"a": {"reason": "timeout"}, "b": {"reason": "connect"}})
    );
}
