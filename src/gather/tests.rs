use super::driver::route;
use super::*;
use crate::plan::matcher::Capture;
use crate::plan::Plan;
use crate::resilience::Store;
use crate::testing;
use crate::time::Instant;
use serde_json::Value;

/// Tests without shared state.
struct NoStore;

impl Store for NoStore {
    fn get(&self, _: &str) -> Option<(Vec<u8>, u32)> {
        None
    }
    fn set(&self, _: &str, _: &[u8], _: Option<u32>) -> bool {
        true
    }
}

trait Drive {
    fn ev(&mut self, event: Event, now_us: u64) -> Vec<Action>;
}

impl Drive for Gather {
    fn ev(&mut self, event: Event, now_us: u64) -> Vec<Action> {
        self.on_event(event, at(now_us), &NoStore)
    }
}
use serde_json::json;

const MS: u64 = 1000;

/// The moment `us` microseconds after the test's epoch.
fn at(us: u64) -> Instant {
    Instant::from_micros(us)
}

/// [`testing::page`] with a 300 ms deadline and these calls, compiled.
fn page(calls: &str) -> Rc<Route> {
    route(
        &testing::page()
            .key("deadline_ms", 300)
            .calls(calls)
            .config(),
    )
}

fn start(route: &Rc<Route>, id: &str, query: &str) -> (Gather, Vec<Action>) {
    let headers = route
        .headers
        .iter()
        .map(|h| (h == "x-request-id").then(|| "req-1".into()))
        .collect();
    let request = ClientRequest {
        captures: vec![Capture::Segment(id.into())],
        query: query.to_string(),
        headers,
        body: None,
    };
    Gather::start(Rc::clone(route), request, at(0), at(0), &NoStore)
}

fn dispatches(actions: &[Action]) -> Vec<&Dispatch> {
    actions.iter().filter_map(Action::dispatch).collect()
}

fn response(actions: Vec<Action>) -> Response {
    match actions.into_iter().last() {
        Some(Action::Respond(r)) => r,
        other => panic!("expected a response, got {other:?}"),
    }
}

fn header<'a>(d: &'a Dispatch, name: &str) -> Option<&'a str> {
    d.request
        .headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| &**v)
}

fn answer(job: usize, body: &str) -> Event {
    let attempt = AttemptId::nth(job);
    Event::Answered {
        headers: Vec::new(),
        attempt,
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
        (sent[0].timeout.as_millis(), sent[1].timeout.as_millis()),
        (300, 100),
        "timeout = min(call, deadline)"
    );

    assert!(gather.ev(answer(2, "3"), 10 * MS).is_empty());
    assert!(gather.ev(answer(0, "1"), 20 * MS).is_empty());
    let r = response(gather.ev(answer(1, "2"), 30 * MS));
    assert_eq!(r.body, br#"{"a":1,"b":2,"c":3,"_meta":{"complete":true}}"#);
    assert_eq!(
        r.header("server-timing"),
        Some("a;dur=20.0, b;dur=30.0, c;dur=10.0")
    );
    assert!(
        gather.ev(answer(1, "2"), 40 * MS).is_empty(),
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
    let paths: Vec<&str> = dispatches(&actions)
        .iter()
        .map(|d| header(d, ":path").unwrap())
        .collect();
    assert_eq!(paths, ["/products/7", "/stock/7"]);
    let actions = gather.ev(answer(0, r#"{"seller":{"id":"s/1"}}"#), 50 * MS);
    let next = dispatches(&actions);
    assert_eq!(next.len(), 1);
    assert_eq!(header(next[0], ":path"), Some("/sellers/s%2F1"));
    assert_eq!(
        next[0].timeout.as_millis(),
        250,
        "the remaining deadline caps the timeout"
    );
    assert_eq!(next[0].attempt.index(), 2);
    assert!(gather.ev(answer(1, "5"), 60 * MS).is_empty());
    let r = response(gather.ev(answer(2, r#"{"name":"Bob"}"#), 70 * MS));
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
    assert!(gather
        .ev(
            Event::Reset {
                attempt: AttemptId::nth(0)
            },
            MS
        )
        .is_empty());
    let actions = gather.ev(
        Event::Answered {
            headers: Vec::new(),
            attempt: AttemptId::nth(1),
            status: 500,
            body: b"oops".to_vec(),
        },
        2 * MS,
    );
    let sent = dispatches(&actions);
    assert_eq!(sent.len(), 1);
    assert_eq!(header(sent[0], ":path"), Some("/d/9"));
    let r = response(gather.ev(answer(2, "4"), 3 * MS));
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
    let r = response(gather.ev(
        Event::Answered {
            headers: Vec::new(),
            attempt: AttemptId::nth(0),
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
    assert!(gather.ev(answer(1, "1"), 2 * MS).is_empty());
}

#[test]
fn required_client_error_is_passed_through_with_its_json_body() {
    let route = page(r#"{"name":"product","cluster":"c","path":"/p","required":true}"#);
    let (mut gather, _) = start(&route, "1", "");
    let r = response(gather.ev(
        Event::Answered {
            headers: Vec::new(),
            attempt: AttemptId::nth(0),
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
        headers: Vec::new(),
        attempt: AttemptId::nth(0),
        status: 504,
        body: b"upstream request timeout".to_vec(),
    };
    assert_eq!(response(gather.ev(timeout, 300 * MS)).status, 504);
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
    let r = response(gather.ev(answer(0, "1"), 300 * MS));
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
    assert!(gather.body_limit(AttemptId::nth(1)) == 10);
    assert!(gather
        .ev(
            Event::Refused {
                attempt: AttemptId::nth(0),
                detail: "unknown cluster".into()
            },
            0
        )
        .is_empty());
    let unreachable = Event::Unreachable {
        attempt: AttemptId::nth(2),
        detail: "no healthy host".into(),
    };
    assert!(gather.ev(unreachable, 0).is_empty());
    let r = response(gather.ev(
        Event::TooLarge {
            attempt: AttemptId::nth(1),
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
    gather.ev(answer(0, "{not json"), MS);
    gather.ev(answer(1, "plain <b>text</b>"), MS);
    let r = response(gather.ev(
        Event::Answered {
            headers: Vec::new(),
            attempt: AttemptId::nth(2),
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
    assert!(gather.ev(answer(7, "1"), MS).is_empty());
    assert!(!gather.is_answered());
}

#[test]
fn a_reset_at_the_timeout_is_a_timeout() {
    let route = page(
        r#"{"name":"a","cluster":"c","path":"/a","timeout_ms":100},{"name":"b","cluster":"c","path":"/b"}"#,
    );
    let (mut gather, _) = start(&route, "1", "");
    gather.ev(
        Event::Reset {
            attempt: AttemptId::nth(0),
        },
        95 * MS,
    );
    let r = response(gather.ev(
        Event::Reset {
            attempt: AttemptId::nth(1),
        },
        120 * MS,
    ));
    assert_eq!(
        body(&r)["_meta"]["errors"],
        json!({"a": {"reason": "timeout"}, "b": {"reason": "connect"}})
    );
    // The last quarter of the timeout counts as the timeout (Envoy's timers fire early by the
    // age of its loop's cached clock); before it, a reset is a reset.
    let (mut gather, _) = start(&route, "1", "");
    gather.ev(
        Event::Reset {
            attempt: AttemptId::nth(0),
        },
        74 * MS,
    );
    let r = response(gather.ev(answer(1, "{}"), 80 * MS));
    assert_eq!(body(&r)["_meta"]["errors"]["a"]["reason"], "connect");
}

fn start_with_body(
    route: &Rc<Route>,
    query: &str,
    body: &str,
    content_type: &str,
) -> (Gather, Vec<Action>) {
    let headers = route
        .headers
        .iter()
        .map(|h| (h == "content-type").then(|| content_type.into()))
        .collect();
    let request = ClientRequest {
        captures: vec![Capture::Segment("1".into())],
        query: query.to_string(),
        headers,
        body: Some(body.as_bytes().to_vec()),
    };
    Gather::start(Rc::clone(route), request, at(0), at(0), &NoStore)
}

const POSTS: &str = r#"{"items":[{"id":1,"author":"u1"},{"id":2,"author":"u2"},{"id":3,"author":"u1"},{"id":4,"author":null}]}"#;

#[test]
fn for_each_makes_one_call_per_distinct_item_in_first_seen_order() {
    let route = page(
        r#"{"name":"posts","cluster":"posts","path":"/posts"},
           {"name":"authors","cluster":"users","path":"/users/{item}","for_each":"calls.posts.items[*].author"}"#,
    );
    let (mut gather, _) = start(&route, "1", "");
    let actions = gather.ev(answer(0, POSTS), MS);
    let sent = dispatches(&actions);
    let paths: Vec<&str> = sent.iter().map(|d| header(d, ":path").unwrap()).collect();
    assert_eq!(paths, ["/users/u1", "/users/u2"], "null skipped, u1 once");
    assert!(gather
        .ev(answer(sent[1].attempt.index(), r#"{"name":"Two"}"#), 2 * MS)
        .is_empty());
    let r = response(gather.ev(answer(sent[0].attempt.index(), r#"{"name":"One"}"#), 3 * MS));
    assert_eq!(
        body(&r),
        json!({"posts": serde_json::from_str::<Value>(POSTS).unwrap(),
               "authors": [{"name": "One"}, {"name": "Two"}], "_meta": {"complete": true}})
    );
}

#[test]
fn join_puts_each_result_into_the_matching_elements() {
    let route = page(
        r#"{"name":"posts","cluster":"posts","path":"/posts"},
           {"name":"authors","cluster":"users","path":"/users/{item}","for_each":"calls.posts.items[*].author",
            "join":{"into":"posts.items","on":"author","as":"author_detail"},"fallback":{"name":"?"}}"#,
    );
    let (mut gather, _) = start(&route, "1", "");
    let sent: Vec<usize> = dispatches(&gather.ev(answer(0, POSTS), MS))
        .iter()
        .map(|d| d.attempt.index())
        .collect();
    gather.ev(answer(sent[0], r#"{"name":"One"}"#), 2 * MS);
    let r = response(gather.ev(
        Event::Reset {
            attempt: AttemptId::nth(sent[1]),
        },
        3 * MS,
    ));
    assert_eq!(
        body(&r),
        json!({"posts": {"items": [
                {"id": 1, "author": "u1", "author_detail": {"name": "One"}},
                {"id": 2, "author": "u2", "author_detail": {"name": "?"}},
                {"id": 3, "author": "u1", "author_detail": {"name": "One"}},
                {"id": 4, "author": null}]},
               "_meta": {"complete": false, "errors": {"authors": {"items": {"u2": {"reason": "connect"}}}},
                         "fallback": ["authors"]}})
    );
}

#[test]
fn failed_items_without_fallback_are_null_in_the_array() {
    let route = page(
        r#"{"name":"posts","cluster":"posts","path":"/posts"},
           {"name":"authors","cluster":"users","path":"/users/{item}","for_each":"calls.posts.items[*].author"}"#,
    );
    let (mut gather, _) = start(&route, "1", "");
    let sent: Vec<usize> = dispatches(&gather.ev(answer(0, POSTS), MS))
        .iter()
        .map(|d| d.attempt.index())
        .collect();
    gather.ev(
        Event::Answered {
            headers: Vec::new(),
            attempt: AttemptId::nth(sent[0]),
            status: 404,
            body: b"{}".to_vec(),
        },
        2 * MS,
    );
    let r = response(gather.ev(answer(sent[1], "2"), 3 * MS));
    assert_eq!(body(&r)["authors"], json!([null, 2]));
    assert_eq!(
        body(&r)["_meta"]["errors"]["authors"],
        json!({"items": {"u1": {"reason": "status", "status": 404}}})
    );
}

/// The answer's body has unique keys at every level (json_check refuses repeats).
fn assert_unique_keys(r: &Response) {
    if let Err(e) = crate::json_check::check(&r.body, 127) {
        panic!("{e}: {}", String::from_utf8_lossy(&r.body));
    }
}

#[test]
fn items_of_mixed_types_are_keyed_by_their_json() {
    let route = page(
        r#"{"name":"posts","cluster":"posts","path":"/posts"},
           {"name":"authors","cluster":"users","path":"/users/{item}","for_each":"calls.posts.items[*].author"}"#,
    );
    let (mut gather, _) = start(&route, "1", "");
    let posts = r#"{"items":[{"author":7},{"author":"7"},{"author":"u\"1"}]}"#;
    let sent: Vec<usize> = dispatches(&gather.ev(answer(0, posts), MS))
        .iter()
        .map(|d| d.attempt.index())
        .collect();
    assert_eq!(sent.len(), 3, "7 and \"7\" are two items");
    gather.ev(
        Event::Reset {
            attempt: AttemptId::nth(sent[0]),
        },
        2 * MS,
    );
    gather.ev(
        Event::Reset {
            attempt: AttemptId::nth(sent[1]),
        },
        2 * MS,
    );
    let r = response(gather.ev(
        Event::Reset {
            attempt: AttemptId::nth(sent[2]),
        },
        2 * MS,
    ));
    assert_unique_keys(&r);
    assert_eq!(
        body(&r)["_meta"]["errors"]["authors"]["items"],
        json!({"7": {"reason": "connect"}, "\"7\"": {"reason": "connect"},
               "\"u\\\"1\"": {"reason": "connect"}})
    );
}

#[test]
fn items_of_one_type_keep_plain_keys() {
    let keys = |values: Value| -> Vec<String> {
        let Value::Array(values) = values else {
            panic!()
        };
        state::ItemState::all(values)
            .into_iter()
            .map(|i| i.key)
            .collect()
    };
    assert_eq!(keys(json!(["u1", "7", "true"])), ["u1", "7", "true"]);
    assert_eq!(keys(json!([7, 7.5, true, -1])), ["7", "7.5", "true", "-1"]);
    assert_eq!(
        keys(json!(["u1", 8, "7"])),
        ["\"u1\"", "8", "\"7\""],
        "strings mixed with numbers: every key is JSON"
    );
    assert_eq!(keys(json!([true, "true"])), ["true", "\"true\""]);
}

#[test]
fn a_join_replaces_an_upstream_key_of_its_name_or_removes_it() {
    let route = page(
        r#"{"name":"posts","cluster":"posts","path":"/posts"},
           {"name":"authors","cluster":"users","path":"/users/{item}","for_each":"calls.posts.items[*].author",
            "join":{"into":"posts.items","on":"author","as":"detail"}}"#,
    );
    let (mut gather, _) = start(&route, "1", "");
    let posts = r#"{"items":[{"author":"u1","detail":"upstream"},{"author":"u2","detail":"upstream"},{"author":"u3","detail":"kept"}]}"#;
    let sent: Vec<usize> = dispatches(&gather.ev(answer(0, posts), MS))
        .iter()
        .map(|d| d.attempt.index())
        .collect();
    gather.ev(answer(sent[0], r#"{"name":"One"}"#), 2 * MS);
    gather.ev(answer(sent[2], r#"{"name":"Three"}"#), 2 * MS);
    let r = response(gather.ev(
        Event::Reset {
            attempt: AttemptId::nth(sent[1]),
        },
        3 * MS,
    ));
    assert_unique_keys(&r);
    assert_eq!(
        body(&r)["posts"]["items"],
        json!([{"author": "u1", "detail": {"name": "One"}}, {"author": "u2"},
               {"author": "u3", "detail": {"name": "Three"}}])
    );
}

#[test]
fn an_upstream_body_with_a_repeated_key_is_invalid_body() {
    let route =
        page(r#"{"name":"a","cluster":"a","path":"/a"},{"name":"b","cluster":"b","path":"/b"}"#);
    let (mut gather, _) = start(&route, "1", "");
    gather.ev(answer(0, r#"{"ok":true}"#), MS);
    let r = response(gather.ev(answer(1, r#"{"x":{"complete":true,"complete":false}}"#), MS));
    assert_unique_keys(&r);
    assert_eq!(
        body(&r),
        json!({"a": {"ok": true}, "_meta": {"complete": false, "errors": {"b": {"reason": "invalid_body"}}}})
    );
}

#[test]
fn too_many_items_fails_the_call_without_dispatching() {
    let route = page(
        r#"{"name":"posts","cluster":"posts","path":"/posts"},
           {"name":"authors","cluster":"users","path":"/users/{item}","for_each":"calls.posts.items[*].id","max_fan_out":3}"#,
    );
    let (mut gather, _) = start(&route, "1", "");
    let r = response(gather.ev(answer(0, POSTS), MS));
    assert_eq!(
        body(&r)["_meta"]["errors"]["authors"],
        json!({"reason": "too_many_items"})
    );
}

#[test]
fn a_required_fan_out_fails_on_its_first_failed_item() {
    let route = page(
        r#"{"name":"posts","cluster":"posts","path":"/posts"},
           {"name":"authors","cluster":"users","path":"/users/{item}","for_each":"calls.posts.items[*].author","required":true}"#,
    );
    let (mut gather, _) = start(&route, "1", "");
    let sent: Vec<usize> = dispatches(&gather.ev(answer(0, POSTS), MS))
        .iter()
        .map(|d| d.attempt.index())
        .collect();
    let r = response(gather.ev(
        Event::Answered {
            headers: Vec::new(),
            attempt: AttemptId::nth(sent[1]),
            status: 503,
            body: Vec::new(),
        },
        2 * MS,
    ));
    assert_eq!(r.status, 502);
    assert_eq!(
        body(&r),
        json!({"error": {"code": "required_call_failed", "call": "authors", "reason": "status", "status": 503, "item": "u2"}})
    );
}

#[test]
fn empty_item_lists_give_an_empty_array() {
    let route = page(
        r#"{"name":"posts","cluster":"posts","path":"/posts"},
           {"name":"authors","cluster":"users","path":"/users/{item}","for_each":"calls.posts.items[*].author"}"#,
    );
    let (mut gather, _) = start(&route, "1", "");
    let r = response(gather.ev(answer(0, r#"{"items":[]}"#), MS));
    assert_eq!(body(&r)["authors"], json!([]));
    assert_eq!(body(&r)["_meta"], json!({"complete": true}));
}

#[test]
fn fields_fetch_only_what_is_named_and_its_dependencies() {
    let route = page(
        r#"{"name":"product","cluster":"c","path":"/p"},
           {"name":"seller","cluster":"c","path":"/s/{calls.product.seller}"},
           {"name":"reviews","cluster":"c","path":"/r","required":true}"#,
    );
    let (mut gather, actions) = start(&route, "1", "fields=seller");
    let sent = dispatches(&actions);
    assert_eq!(sent.len(), 1, "only the dependency starts");
    assert_eq!(header(sent[0], ":path"), Some("/p"));
    let actions = gather.ev(answer(0, r#"{"seller":"s1"}"#), MS);
    let job = dispatches(&actions)[0].attempt.index();
    let r = response(gather.ev(answer(job, r#"{"name":"S"}"#), 2 * MS));
    assert_eq!(
        body(&r),
        json!({"seller": {"name": "S"}, "_meta": {"complete": true}})
    );
    assert_eq!(
        r.header("server-timing")
            .map(|t| t.starts_with("product;dur=")),
        Some(true)
    );
}

#[test]
fn unknown_fields_are_a_400_listing_the_valid_names() {
    let route =
        page(r#"{"name":"a","cluster":"c","path":"/a"},{"name":"b","cluster":"c","path":"/b"}"#);
    let (gather, actions) = start(&route, "1", "fields=a,%20nope");
    assert!(gather.is_answered());
    let r = response(actions);
    assert_eq!(r.status, 400);
    assert_eq!(
        body(&r),
        json!({"error": {"code": "unknown_field", "field": "nope", "valid": ["a", "b"]}})
    );
    let (_, actions) = start(&route, "1", "fields=");
    assert_eq!(
        dispatches(&actions).len(),
        2,
        "an empty list selects everything"
    );
}

#[test]
fn client_body_is_forwarded_with_its_content_type() {
    let route = route(
        r#"{"routes":[{"name":"order","match":{"path":"/o/{id}","methods":["POST"]},"calls":[
            {"name":"create","cluster":"orders","method":"POST","path":"/orders","body":"{request.body}"},
            {"name":"audit","cluster":"audit","method":"POST","path":"/audit",
             "body":{"order":"{path.id}","qty":"{request.body.qty}","who":"user {request.body.user.name}","fixed":[1]}}]}]}"#,
    );
    assert!(route.client_body.needed && route.client_body.parsed);
    let (_, actions) = start_with_body(
        &route,
        "",
        r#"{"qty":2,"user":{"name":"Zoë"}}"#,
        "application/json; charset=utf-8",
    );
    let sent = dispatches(&actions);
    assert_eq!(
        sent[0].request.body.as_deref(),
        Some(r#"{"qty":2,"user":{"name":"Zoë"}}"#.as_bytes())
    );
    assert_eq!(
        header(sent[0], "content-type"),
        Some("application/json; charset=utf-8")
    );
    let audit: Value = serde_json::from_slice(sent[1].request.body.as_deref().unwrap()).unwrap();
    assert_eq!(
        audit,
        json!({"order": "1", "qty": 2, "who": "user Zoë", "fixed": [1]})
    );
    assert_eq!(header(sent[1], "content-type"), Some("application/json"));
}

#[test]
fn a_client_body_that_is_not_json_is_invalid_input() {
    let route = route(
        r#"{"routes":[{"name":"order","match":{"path":"/o/{id}","methods":["POST"]},"calls":[
            {"name":"audit","cluster":"audit","method":"POST","path":"/audit","body":{"qty":"{request.body.qty}"},"required":true}]}]}"#,
    );
    let (_, actions) = start_with_body(&route, "", "qty=2", "application/x-www-form-urlencoded");
    let r = response(actions);
    assert_eq!(r.status, 400);
    assert_eq!(body(&r)["error"]["reason"], "invalid_input");
}

/// The body of issue 12: numbers a float would change and keys out of alphabetical order.
const EXACT: &str = r#"{"data":{"id":123456789012345678901234567890,"snow":9007199254740993,"neg":-9223372036854775809,"price":1.10,"sci":1E+2,"deep":{"n":18446744073709551616},"z":1,"a":2}}"#;
const EXACT_DATA: &str = r#"{"id":123456789012345678901234567890,"snow":9007199254740993,"neg":-9223372036854775809,"price":1.10,"sci":1E+2,"deep":{"n":18446744073709551616},"z":1,"a":2}"#;

fn text(r: &Response) -> &str {
    std::str::from_utf8(&r.body).unwrap()
}

#[test]
fn templates_write_numbers_with_the_digits_the_upstream_sent() {
    let route = page(
        r#"{"name":"num","cluster":"n","path":"/n"},
           {"name":"dep","cluster":"d","path":"/items/{calls.num.data.id}?s={calls.num.data.sci}&p={calls.num.data.price}",
            "headers":{"x-snow":"{calls.num.data.snow}"},"method":"POST",
            "body":{"id":"{calls.num.data.id}","label":"id {calls.num.data.neg}","deep":"{calls.num.data.deep}"}}"#,
    );
    let (mut gather, _) = start(&route, "1", "");
    let actions = gather.ev(answer(0, EXACT), MS);
    let sent = dispatches(&actions);
    assert_eq!(
        header(sent[0], ":path"),
        Some("/items/123456789012345678901234567890?s=1E%2B2&p=1.10")
    );
    assert_eq!(header(sent[0], "x-snow"), Some("9007199254740993"));
    assert_eq!(
        sent[0].request.body.as_deref(),
        Some(
            br#"{"id":123456789012345678901234567890,"label":"id -9223372036854775809","deep":{"n":18446744073709551616}}"#
                .as_slice()
        )
    );
}

#[test]
fn extract_and_merge_answer_the_upstream_numbers_and_key_order() {
    for merge in [false, true] {
        let mut config =
            testing::page().calls(r#"{"name":"num","cluster":"n","path":"/n","extract":"data"}"#);
        if merge {
            config = config.key("response", json!({"layout": "merge", "meta": null}));
        }
        let route = route(&config.config());
        let (mut gather, _) = start(&route, "1", "");
        let r = response(gather.ev(answer(0, EXACT), MS));
        let expected = if merge {
            EXACT_DATA.to_string()
        } else {
            format!(r#"{{"num":{EXACT_DATA},"_meta":{{"complete":true}}}}"#)
        };
        assert_eq!(text(&r), expected);
    }
}

#[test]
fn big_ids_are_items_and_join_keys_exactly() {
    let route = page(
        r#"{"name":"posts","cluster":"posts","path":"/posts"},
           {"name":"authors","cluster":"users","path":"/users/{item}","for_each":"calls.posts.items[*].author",
            "join":{"into":"posts.items","on":"author","as":"who"}}"#,
    );
    let (mut gather, _) = start(&route, "1", "");
    let posts = r#"{"items":[{"author":123456789012345678901234567890},{"author":123456789012345678901234567891},
        {"author":123456789012345678901234567890},{"author":7},{"author":"7"},{"author":7.0}]}"#;
    let actions = gather.ev(answer(0, posts), MS);
    let sent = dispatches(&actions);
    let paths: Vec<&str> = sent.iter().map(|d| header(d, ":path").unwrap()).collect();
    assert_eq!(
        paths,
        [
            "/users/123456789012345678901234567890",
            "/users/123456789012345678901234567891",
            "/users/7",
            "/users/7"
        ],
        "ids differing in the last digit are two items, 7 and \"7\" two, 7 and 7.0 one"
    );
    let jobs: Vec<usize> = sent.iter().map(|d| d.attempt.index()).collect();
    gather.ev(answer(jobs[0], r#"{"n":"first"}"#), MS);
    gather.ev(answer(jobs[1], r#"{"n":"second"}"#), MS);
    gather.ev(answer(jobs[2], r#"{"n":"number"}"#), MS);
    let r = response(gather.ev(answer(jobs[3], r#"{"n":"string"}"#), MS));
    assert_eq!(
        text(&r),
        r#"{"posts":{"items":[{"author":123456789012345678901234567890,"who":{"n":"first"}},{"author":123456789012345678901234567891,"who":{"n":"second"}},{"author":123456789012345678901234567890,"who":{"n":"first"}},{"author":7,"who":{"n":"number"}},{"author":"7","who":{"n":"string"}},{"author":7.0,"who":{"n":"number"}}]},"_meta":{"complete":true}}"#
    );
}

#[test]
fn client_body_values_keep_their_digits() {
    let route = route(
        r#"{"routes":[{"name":"pay","match":{"path":"/pay/{id}","methods":["POST"]},"calls":[
            {"name":"ledger","cluster":"ledger","method":"POST","path":"/l/{request.body.amount}",
             "body":{"amount":"{request.body.amount}","fee":"{request.body.fee}","note":"{request.body.amount} cents"}}]}]}"#,
    );
    let (_, actions) = start_with_body(
        &route,
        "",
        r#"{"amount":1234567890123456789012345,"fee":0.10}"#,
        "application/json",
    );
    let sent = dispatches(&actions);
    assert_eq!(
        header(sent[0], ":path"),
        Some("/l/1234567890123456789012345")
    );
    assert_eq!(
        sent[0].request.body.as_deref(),
        Some(
            br#"{"amount":1234567890123456789012345,"fee":0.10,"note":"1234567890123456789012345 cents"}"#
                .as_slice()
        )
    );
}

#[test]
fn an_inexact_sum_is_null_and_reported() {
    let route = route(
        &testing::page()
            .key(
                "response",
                json!({"derive": {"total": {"sum": "num.v"}, "big": {"sum": "num.w"}}}),
            )
            .calls(r#"{"name":"num","cluster":"n","path":"/n"}"#)
            .config(),
    );
    let (mut gather, _) = start(&route, "1", "");
    let r = response(gather.ev(
        answer(
            0,
            r#"{"v":[1e600,1e-600],"w":[123456789012345678901234567890,0.10]}"#,
        ),
        MS,
    ));
    assert_eq!(
        text(&r),
        r#"{"num":{"v":[1e600,1e-600],"w":[123456789012345678901234567890,0.10]},"total":null,"big":123456789012345678901234567890.10,"_meta":{"complete":true,"derive":{"total":{"reason":"not_exact"}}}}"#
    );
}

mod resilience {
    use super::*;
    use crate::resilience::MemoryStore;

    fn begin(route: &Rc<Route>, store: &MemoryStore, now_us: u64) -> (Gather, Vec<Action>) {
        let request = ClientRequest {
            captures: vec![Capture::Segment("1".into())],
            headers: route.headers.iter().map(|_| None).collect(),
            ..ClientRequest::default()
        };
        Gather::start(Rc::clone(route), request, at(now_us), at(now_us), store)
    }

    fn jobs(actions: &[Action]) -> Vec<usize> {
        dispatches(actions)
            .iter()
            .map(|d| d.attempt.index())
            .collect()
    }

    fn wake(actions: &[Action]) -> Option<u64> {
        actions.iter().find_map(|a| match a {
            Action::WakeAt(due) => Some(due.as_micros()),
            _ => None,
        })
    }

    fn status(job: usize, status: u16) -> Event {
        Event::Answered {
            headers: Vec::new(),
            attempt: AttemptId::nth(job),
            status,
            body: b"{}".to_vec(),
        }
    }

    #[test]
    fn retries_after_backoff_until_an_attempt_succeeds() {
        let route = page(
            r#"{"name":"a","cluster":"c","path":"/a","retries":{"attempts":3,"backoff_ms":10,"on":["5xx"]}}"#,
        );
        let store = MemoryStore::default();
        let (mut g, actions) = begin(&route, &store, 0);
        assert_eq!(jobs(&actions), [0]);
        let actions = g.on_event(status(0, 503), at(MS), &store);
        assert_eq!(wake(&actions), Some(11 * MS), "backoff before the retry");
        assert!(
            jobs(&g.on_timer(at(5 * MS), &store)).is_empty(),
            "not yet due"
        );
        assert_eq!(jobs(&g.on_timer(at(11 * MS), &store)), [1]);
        let actions = g.on_event(status(1, 500), at(12 * MS), &store);
        assert_eq!(jobs(&g.on_timer(at(wake(&actions).unwrap()), &store)), [2]);
        let r = response(g.on_event(answer(2, "\"ok\""), at(30 * MS), &store));
        assert_eq!(
            body(&r),
            json!({"a": "ok", "_meta": {"complete": true, "attempts": {"a": 3}}})
        );
        assert!(r.header("server-timing").unwrap().ends_with(";attempts=3"));
    }

    #[test]
    fn retries_stop_at_the_attempt_limit_and_on_other_reasons() {
        let route = page(
            r#"{"name":"a","cluster":"c","path":"/a","retries":{"attempts":2,"backoff_ms":0,"on":["connect"]}}"#,
        );
        let store = MemoryStore::default();
        let (mut g, _) = begin(&route, &store, 0);
        assert_eq!(
            jobs(&g.on_event(
                Event::Reset {
                    attempt: AttemptId::nth(0)
                },
                at(MS),
                &store
            )),
            [1],
            "no backoff: at once"
        );
        let r = response(g.on_event(
            Event::Reset {
                attempt: AttemptId::nth(1),
            },
            at(2 * MS),
            &store,
        ));
        assert_eq!(body(&r)["_meta"]["errors"]["a"]["reason"], "connect");
        let (mut g, _) = begin(&route, &store, 0);
        let r = response(g.on_event(status(0, 503), at(MS), &store));
        assert_eq!(
            body(&r)["_meta"]["errors"]["a"],
            json!({"reason": "status", "status": 503}),
            "5xx not listed"
        );
    }

    #[test]
    fn retries_never_run_past_the_deadline() {
        let route = page(
            r#"{"name":"a","cluster":"c","path":"/a","retries":{"attempts":5,"backoff_ms":100}}"#,
        );
        let store = MemoryStore::default();
        let (mut g, _) = begin(&route, &store, 0);
        let r = response(g.on_event(status(0, 500), at(250 * MS), &store));
        assert_eq!(
            body(&r)["_meta"]["errors"]["a"]["status"],
            500,
            "300 ms deadline: no time for a retry"
        );
    }

    #[test]
    fn inherited_retries_skip_unsafe_methods() {
        let route = route(
            r#"{"defaults":{"retries":{"attempts":3,"backoff_ms":0}},"routes":[{"name":"r","match":{"path":"/x"},"calls":[
            {"name":"post","cluster":"c","method":"POST","path":"/a"},
            {"name":"unsafe","cluster":"c","method":"POST","path":"/b","unsafe":true}]}]}"#,
        );
        assert!(route.calls[0].resilience.retries.is_none());
        assert!(route.calls[1].resilience.retries.is_some());
        let e = Plan::compile(br#"{"routes":[{"name":"r","match":{"path":"/x"},"calls":[{"name":"p","cluster":"c","method":"POST","path":"/","retries":{"attempts":2}}]}]}"#).unwrap_err();
        assert!(
            e.to_string()
                .contains(r#"key "retries": POST is not idempotent"#),
            "{e}"
        );
    }

    #[test]
    fn a_hedge_goes_out_after_silence_and_the_first_success_wins() {
        let route = page(r#"{"name":"a","cluster":"c","path":"/a","hedge_after_ms":50}"#);
        let store = MemoryStore::default();
        let (mut g, actions) = begin(&route, &store, 0);
        assert_eq!(wake(&actions), Some(50 * MS));
        assert_eq!(jobs(&g.on_timer(at(50 * MS), &store)), [1]);
        let r = response(g.on_event(answer(1, "\"hedge\""), at(60 * MS), &store));
        assert_eq!(body(&r)["a"], "hedge");
        assert!(
            g.on_event(answer(0, "\"slow\""), at(200 * MS), &store)
                .is_empty(),
            "the loser is ignored"
        );
    }

    #[test]
    fn a_failed_first_attempt_waits_for_its_hedge() {
        let route = page(r#"{"name":"a","cluster":"c","path":"/a","hedge_after_ms":10}"#);
        let store = MemoryStore::default();
        let (mut g, _) = begin(&route, &store, 0);
        g.on_timer(at(10 * MS), &store);
        assert!(g.on_event(status(0, 500), at(20 * MS), &store).is_empty());
        let r = response(g.on_event(answer(1, "1"), at(30 * MS), &store));
        assert_eq!(body(&r)["a"], 1);
    }

    #[test]
    fn fresh_cache_hits_skip_the_upstream_and_stale_entries_stand_in_for_failures() {
        let route = page(
            r#"{"name":"a","cluster":"c","path":"/a/{path.id}","cache":{"ttl_ms":100,"stale_if_error_ms":1000}}"#,
        );
        let store = MemoryStore::default();
        let (mut g, actions) = begin(&route, &store, 0);
        response(g.on_event(answer(jobs(&actions)[0], "{\"v\":1}"), at(MS), &store));

        let (_, actions) = begin(&route, &store, 50 * MS);
        let r = response(actions);
        assert_eq!(
            body(&r),
            json!({"a": {"v": 1}, "_meta": {"complete": true}}),
            "fresh hit, nothing dispatched"
        );
        assert_eq!(r.header("server-timing"), Some(r#"a;dur=0.0;desc="cache""#));

        let (mut g, actions) = begin(&route, &store, 500 * MS);
        let r = response(g.on_event(status(jobs(&actions)[0], 503), at(501 * MS), &store));
        assert_eq!(
            body(&r),
            json!({"a": {"v": 1}, "_meta": {"complete": false, "stale": {"a": {"age_ms": 500}}}})
        );
        assert_eq!(r.header("cache-control"), Some("no-store"));
    }

    #[test]
    fn an_open_circuit_fails_calls_at_once() {
        let route = page(
            r#"{"name":"a","cluster":"c","path":"/a","circuit_breaker":{"failures":2,"open_ms":1000},"fallback":null}"#,
        );
        let store = MemoryStore::default();
        for _ in 0..2 {
            let (mut g, actions) = begin(&route, &store, 0);
            g.on_event(
                Event::Reset {
                    attempt: AttemptId::nth(jobs(&actions)[0]),
                },
                at(MS),
                &store,
            );
        }
        let (_, actions) = begin(&route, &store, 10 * MS);
        let r = response(actions);
        assert_eq!(
            body(&r),
            json!({"a": null, "_meta": {"complete": false, "errors": {"a": {"reason": "circuit_open"}}, "fallback": ["a"]}})
        );
        let (_, actions) = begin(&route, &store, 1100 * MS);
        assert_eq!(jobs(&actions).len(), 1, "after open_ms, one probe");
    }

    #[test]
    fn wait_for_any_answers_with_the_first_success_and_names_the_rest() {
        let route = route(
            &testing::route("r", "/x")
                .key("wait_for", "any")
                .calls(r#"{"name":"slow","cluster":"c","path":"/s"},{"name":"fast","cluster":"c","path":"/f"}"#)
                .config(),
        );
        let store = MemoryStore::default();
        let request = ClientRequest {
            headers: route.headers.iter().map(|_| None).collect(),
            ..ClientRequest::default()
        };
        let (mut g, _) = Gather::start(Rc::clone(&route), request, at(0), at(0), &store);
        let r = response(g.on_event(answer(1, "\"f\""), at(MS), &store));
        assert_eq!(
            body(&r),
            json!({"fast": "f", "_meta": {"complete": false, "not_waited_for": ["slow"]}})
        );
        assert!(
            g.on_event(answer(0, "\"s\""), at(2 * MS), &store)
                .is_empty(),
            "late answers are ignored"
        );
    }

    #[test]
    fn wait_for_still_waits_for_required_calls() {
        let route = route(
            &testing::route("r", "/x")
                .key("wait_for", 1)
                .calls(r#"{"name":"must","cluster":"c","path":"/m","required":true},{"name":"fast","cluster":"c","path":"/f"}"#)
                .config(),
        );
        let store = MemoryStore::default();
        let request = ClientRequest {
            headers: route.headers.iter().map(|_| None).collect(),
            ..ClientRequest::default()
        };
        let (mut g, _) = Gather::start(Rc::clone(&route), request, at(0), at(0), &store);
        assert!(g.on_event(answer(1, "1"), at(MS), &store).is_empty());
        let r = response(g.on_event(answer(0, "2"), at(2 * MS), &store));
        assert_eq!(body(&r)["_meta"], json!({"complete": true}));
    }
}

/// Scenarios on the fake host (`driver.rs`): answered by call name, on a virtual clock.
mod scenarios {
    use super::super::driver::{request, Driver};
    use super::super::machine::Broken;
    use crate::time::Instant;
    use serde_json::json;

    const CALLS: &str = r#"
        {"name":"product","cluster":"catalog","path":"/products/{path.id}","required":true},
        {"name":"seller","cluster":"sellers","path":"/sellers/{calls.product.seller}"},
        {"name":"stock","cluster":"stock","path":"/stock/{path.id}",
         "retries":{"attempts":3,"backoff_ms":10},"hedge_after_ms":40}"#;

    fn page() -> Driver {
        let route = super::page(CALLS);
        let request = request(&route, "42", "", None);
        Driver::start(&route, request)
    }

    #[test]
    fn a_dependent_call_goes_out_the_moment_its_dependency_answers() {
        let mut d = page();
        assert_eq!(d.open_paths(), ["/products/42", "/stock/42"]);
        d.advance(5);
        d.ok("product", r#"{"seller":7}"#);
        assert_eq!(d.open_paths(), ["/stock/42", "/sellers/7"]);
        d.ok("stock", r#"{"n":1}"#);
        d.ok("seller", r#"{"name":"Ann"}"#);
        assert_eq!(
            d.body(),
            json!({"product": {"seller": 7}, "seller": {"name": "Ann"}, "stock": {"n": 1},
                   "_meta": {"complete": true}})
        );
    }

    #[test]
    fn a_failed_attempt_is_retried_after_its_backoff_on_the_clock() {
        let mut d = page();
        d.ok("product", r#"{"seller":7}"#);
        d.ok("seller", "{}");
        d.reset("stock");
        assert!(d.open_of("stock").is_empty(), "backing off");
        d.advance(9);
        assert!(d.open_of("stock").is_empty(), "not yet due");
        d.advance(1);
        assert_eq!(d.open_of("stock").len(), 1, "the retry after 10 ms");
        d.ok("stock", r#"{"n":2}"#);
        assert_eq!(
            d.body()["_meta"],
            json!({"complete": true, "attempts": {"stock": 2}})
        );
    }

    #[test]
    fn a_hedge_races_a_slow_first_attempt_and_the_loser_is_ignored() {
        let mut d = page();
        d.ok("product", r#"{"seller":7}"#);
        d.ok("seller", "{}");
        d.advance(40);
        assert_eq!(d.open_of("stock").len(), 2, "the hedge is out");
        let hedge = d.open.pop().unwrap();
        let first = d.open.pop().unwrap();
        d.open.push(hedge);
        d.ok("stock", r#"{"from":"hedge"}"#);
        assert_eq!(d.body()["stock"], json!({"from": "hedge"}));
        let late = crate::gather::Event::Answered {
            attempt: first.attempt,
            status: 200,
            headers: Vec::new(),
            body: b"{}".to_vec(),
        };
        assert!(d.gather.on_event(late, d.now, &*d.store).is_empty());
        let summary = d.gather.summary();
        assert_eq!((summary.calls[2].attempts, summary.calls[2].hedges), (2, 1));
    }

    #[test]
    fn nothing_follows_the_answer() {
        let mut d = page();
        d.answer("product", 503, "{}");
        assert_eq!(d.response().status, 502);
        assert!(
            !d.open_of("stock").is_empty(),
            "still out when the answer went"
        );
        d.advance(100);
        d.ok("stock", "{}");
        assert!(d.gather.is_answered());
    }

    #[test]
    fn a_broken_state_ends_the_request_with_500_instead_of_stalling() {
        let mut d = page();
        let actions = d.gather.step(Instant::from_micros(1), |_| {
            Err(Broken("a test's contradiction"))
        });
        match actions.as_slice() {
            [crate::gather::Action::Respond(response)] => {
                assert_eq!(response.status, 500);
                assert_eq!(
                    serde_json::from_slice::<serde_json::Value>(&response.body).unwrap(),
                    json!({"error": {"code": "internal_error"}})
                );
            }
            other => panic!("expected one answer, got {other:?}"),
        }
        assert!(d
            .gather
            .on_timer(Instant::from_micros(2), &*d.store)
            .is_empty());
    }
}
