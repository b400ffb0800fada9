//! What the state machine knows of coalescing (SPEC §6 `coalesce`): which attempts may share an
//! identical request in flight (the key on [`Dispatch`]), and what a shared outcome does to an
//! aggregation ([`Gather::on_coalesced_event`]). Who shares with whom is the host's business.
#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]

use super::*;
use crate::plan::matcher::Capture;
use crate::plan::Plan;
use crate::resilience::MemoryStore;
use crate::time::Instant;
use serde_json::{json, Value};

const MS: u64 = 1000;

fn at(ms: u64) -> Instant {
    Instant::from_micros(ms * MS)
}

fn route(calls: &str) -> Rc<Route> {
    let json = format!(
        r#"{{"routes":[{{"name":"page","match":{{"path":"/p/{{id}}"}},"deadline_ms":300,"calls":[{calls}]}}]}}"#
    );
    let plan = Plan::compile(json.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    Rc::clone(&plan.routes[0])
}

/// A request for `/p/<id>` whose headers are `x-request-id: <request_id>` and, when given,
/// `authorization`.
fn begin(
    route: &Rc<Route>,
    store: &MemoryStore,
    id: &str,
    request_id: &str,
    authorization: Option<&str>,
) -> (Gather, Vec<Action>) {
    let headers = route
        .headers
        .iter()
        .map(|h| match h.as_str() {
            "x-request-id" => Some(request_id.into()),
            "authorization" => authorization.map(Into::into),
            _ => None,
        })
        .collect();
    let request = ClientRequest {
        captures: vec![Capture::Segment(id.into())],
        headers,
        ..ClientRequest::default()
    };
    Gather::start(Rc::clone(route), request, at(0), at(0), store)
}

fn sent(actions: &[Action]) -> Vec<&Dispatch> {
    actions.iter().filter_map(Action::dispatch).collect()
}

fn key(actions: &[Action]) -> Option<Rc<str>> {
    sent(actions)
        .first()
        .and_then(|d| d.coalesce.as_ref())
        .map(|c| Rc::clone(&c.key))
}

fn answer(attempt: usize, status: u16, body: &str) -> Event {
    Event::Answered {
        attempt: AttemptId::nth(attempt),
        status,
        headers: Vec::new(),
        body: body.as_bytes().to_vec(),
    }
}

fn response(actions: Vec<Action>) -> crate::render::Response {
    match actions.into_iter().last() {
        Some(Action::Respond(r)) => r,
        other => panic!("expected a response, got {other:?}"),
    }
}

fn body(r: &crate::render::Response) -> Value {
    serde_json::from_slice(&r.body).unwrap()
}

#[test]
fn identical_requests_share_a_key_whatever_their_trace_headers() {
    let route = route(r#"{"name":"a","cluster":"c","path":"/a/{path.id}","coalesce":true}"#);
    let store = MemoryStore::default();
    let (_, first) = begin(&route, &store, "1", "req-1", None);
    let (_, second) = begin(&route, &store, "1", "req-2", None);
    let (_, other) = begin(&route, &store, "2", "req-3", None);
    assert!(key(&first).is_some());
    let shared = sent(&first)[0].coalesce.as_ref().unwrap();
    assert_eq!(
        (sent(&first)[0].timeout, shared.timeout),
        (Duration::from_millis(300), Duration::from_millis(1000)),
        "the attempt waits until its deadline; the request is sent with the call's timeout"
    );
    assert_eq!(
        key(&first),
        key(&second),
        "x-request-id is not part of the key"
    );
    assert_ne!(key(&first), key(&other), "another path is another request");
    let plain = self::route(r#"{"name":"a","cluster":"c","path":"/a/{path.id}"}"#);
    let (_, actions) = begin(&plain, &store, "1", "req-1", None);
    assert_eq!(key(&actions), None, "coalesce is off by default");
}

#[test]
fn credentials_in_vary_separate_users() {
    let route = route(
        r#"{"name":"me","cluster":"c","path":"/me","forward_headers":["authorization"],"coalesce":true,
            "cache":{"ttl_ms":1,"vary":["authorization"]}}"#,
    );
    let store = MemoryStore::default();
    let (_, alice) = begin(&route, &store, "1", "r1", Some("Bearer alice"));
    let (_, alice_again) = begin(&route, &store, "1", "r2", Some("Bearer alice"));
    let (_, bob) = begin(&route, &store, "1", "r3", Some("Bearer bob"));
    assert_eq!(key(&alice), key(&alice_again));
    assert_ne!(key(&alice), key(&bob));
}

#[test]
fn hedges_and_the_breakers_probe_are_never_shared() {
    let route = route(
        r#"{"name":"a","cluster":"c","path":"/a","coalesce":true,"hedge_after_ms":10,
            "circuit_breaker":{"failures":1,"open_ms":50}}"#,
    );
    let store = MemoryStore::default();
    let (mut g, actions) = begin(&route, &store, "1", "r", None);
    assert!(key(&actions).is_some(), "a first attempt may share");
    let hedge = g.on_timer(at(10), &store);
    assert_eq!(sent(&hedge).len(), 1);
    assert_eq!(key(&hedge), None, "a hedge goes to the upstream itself");
    // Open the circuit, then wait for its probe.
    let (mut g, actions) = begin(&route, &store, "1", "r", None);
    let attempt = sent(&actions)[0].attempt;
    g.on_event(Event::Reset { attempt }, at(1), &store);
    let (_, actions) = begin(&route, &store, "1", "r", None);
    assert!(sent(&actions).is_empty(), "open: nothing is sent");
    let request = ClientRequest {
        captures: vec![Capture::Segment("1".into())],
        headers: route.headers.iter().map(|_| None).collect(),
        ..ClientRequest::default()
    };
    let (_, actions) = Gather::start(Rc::clone(&route), request, at(60), at(60), &store);
    let probe = sent(&actions);
    assert_eq!(probe.len(), 1, "the probe goes out after open_ms");
    assert_eq!(
        probe[0].coalesce, None,
        "the probe tests the upstream itself"
    );
}

#[test]
fn a_coalesced_answer_is_marked_and_recorded_neither_in_cache_nor_breaker() {
    let route = route(
        r#"{"name":"a","cluster":"c","path":"/a","coalesce":true,"cache":{"ttl_ms":1000},
            "circuit_breaker":{"failures":1,"open_ms":1000},"fallback":null},
           {"name":"b","cluster":"c","path":"/b"}"#,
    );
    let store = MemoryStore::default();
    // A shared failure does not count against the circuit: it is the sender's to count.
    let (mut g, actions) = begin(&route, &store, "1", "r", None);
    let a = sent(&actions)[0].attempt;
    g.on_coalesced_event(Event::Reset { attempt: a }, at(5), &store);
    let (mut g, actions) = begin(&route, &store, "1", "r", None);
    let (a, b) = (sent(&actions)[0].attempt, sent(&actions)[1].attempt);
    assert!(
        actions.len() >= 2,
        "the circuit is still closed: {actions:?}"
    );
    g.on_coalesced_event(answer(a.index(), 200, r#"{"v":1}"#), at(20), &store);
    let r = response(g.on_event(answer(b.index(), 200, "2"), at(30), &store));
    assert_eq!(
        body(&r),
        json!({"a": {"v": 1}, "b": 2, "_meta": {"complete": true, "coalesced": ["a"]}})
    );
    assert_eq!(
        r.header("server-timing"),
        Some(r#"a;dur=20.0;desc="coalesced", b;dur=30.0"#)
    );
    let summary = g.summary();
    assert_eq!(
        (summary.calls[0].attempts, summary.calls[0].coalesced),
        (1, 1)
    );
    assert_eq!(summary.calls[1].coalesced, 0);
    // The sender's own answer fills the cache; a coalesced one did not.
    let (_, actions) = begin(&route, &store, "1", "r", None);
    assert_eq!(sent(&actions).len(), 2, "nothing was cached: {actions:?}");
}

#[test]
fn the_senders_answer_fills_the_cache_and_is_not_marked() {
    let route =
        route(r#"{"name":"a","cluster":"c","path":"/a","coalesce":true,"cache":{"ttl_ms":1000}}"#);
    let store = MemoryStore::default();
    let (mut g, actions) = begin(&route, &store, "1", "r", None);
    let r = response(g.on_event(
        answer(sent(&actions)[0].attempt.index(), 200, "1"),
        at(5),
        &store,
    ));
    assert_eq!(body(&r), json!({"a": 1, "_meta": {"complete": true}}));
    let (_, actions) = begin(&route, &store, "1", "r", None);
    assert!(sent(&actions).is_empty(), "a cache hit");
}

#[test]
fn a_waiter_that_stops_waiting_times_out_and_its_own_rules_apply() {
    let route = route(
        r#"{"name":"a","cluster":"c","path":"/a","coalesce":true,"timeout_ms":50,
            "retries":{"attempts":2,"backoff_ms":0,"on":["timeout"]},"fallback":"none"}"#,
    );
    let store = MemoryStore::default();
    let (mut g, actions) = begin(&route, &store, "1", "r", None);
    let first = sent(&actions)[0].attempt;
    let retry = g.on_coalesced_event(Event::TimedOut { attempt: first }, at(50), &store);
    let again = sent(&retry);
    assert_eq!(again.len(), 1, "timeout is retried: {retry:?}");
    assert!(again[0].coalesce.is_some(), "a retry may share too");
    assert_eq!(again[0].timeout, Duration::from_millis(50));
    let r = response(g.on_coalesced_event(
        Event::TimedOut {
            attempt: again[0].attempt,
        },
        at(100),
        &store,
    ));
    assert_eq!(
        body(&r),
        json!({"a": "none", "_meta": {"complete": false, "errors": {"a": {"reason": "timeout"}},
               "fallback": ["a"], "attempts": {"a": 2}}})
    );
    assert_eq!(
        r.header("server-timing"),
        Some(r#"a;dur=100.0;desc="timeout";attempts=2"#)
    );
    assert_eq!(g.summary().calls[0].coalesced, 2);
}
