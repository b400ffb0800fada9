//! Coalescing of identical upstream requests (SPEC §6 `coalesce`) in real Envoy: identical
//! requests in flight on one worker share one upstream request, each aggregation under its own
//! timeout and deadline; different paths or `vary` values, unsafe methods and credentials
//! without `vary` never share; a sender that leaves does not strand the others.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    dead_code
)]

mod common;

use common::*;
use serde_json::json;
use std::io::Write;
use std::net::TcpStream;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

/// Answers `{"path": <the path it was asked for>, "user": <authorization or "-">}` after
/// `delay_ms`.
fn echo(delay_ms: u64) -> Upstream {
    Upstream::start(move |r| {
        let body = json!({"path": r.path, "user": r.header("authorization").unwrap_or("-")});
        Behavior::Reply(Reply::json(200, &body.to_string()).delay_ms(delay_ms))
    })
}

/// `GET path` with `headers` from `count` clients at once; the answers in client order.
fn at_once(
    envoy: &Arc<Envoy>,
    requests: Vec<(String, Vec<(String, String)>)>,
) -> Vec<HttpResponse> {
    let barrier = Arc::new(Barrier::new(requests.len()));
    let clients: Vec<_> = requests
        .into_iter()
        .map(|(path, headers)| {
            let (envoy, barrier) = (Arc::clone(envoy), Arc::clone(&barrier));
            thread::spawn(move || {
                let headers: Vec<(&str, &str)> = headers
                    .iter()
                    .map(|(n, v)| (n.as_str(), v.as_str()))
                    .collect();
                barrier.wait();
                envoy.request("GET", &path, &headers, b"")
            })
        })
        .collect();
    clients.into_iter().map(|c| c.join().unwrap()).collect()
}

fn plain(path: &str, count: usize) -> Vec<(String, Vec<(String, String)>)> {
    (0..count).map(|_| (path.to_string(), Vec::new())).collect()
}

fn stat(envoy: &Envoy, name: &str) -> u64 {
    let key = format!("wasmcustom.gateway_aggregator.{name}: ");
    envoy
        .stats()
        .lines()
        .find_map(|l| l.strip_prefix(&key).map(|v| v.trim().parse().unwrap()))
        .unwrap_or_else(|| panic!("no stat {name}"))
}

fn coalesced(response: &HttpResponse) -> bool {
    response.json()["_meta"].get("coalesced").is_some()
}

#[test]
fn identical_requests_in_flight_share_one_upstream_request() {
    let service = echo(400);
    let config = r#"{"routes":[{"name":"r","match":{"path":"/p/{id}"},"calls":[
        {"name":"product","cluster":"c","path":"/products/{path.id}","coalesce":true}]}]}"#;
    let envoy = Arc::new(Envoy::builder(config).cluster("c", service.port()).start());
    let responses = at_once(&envoy, plain("/p/1", 8));
    assert_eq!(
        service.hit_count(),
        1,
        "one upstream request for eight clients"
    );
    for response in &responses {
        assert_eq!(response.status, 200, "{}", response.text());
        assert_eq!(
            response.json()["product"],
            json!({"path": "/products/1", "user": "-"})
        );
        response.assert_took(300, 3000, "everyone waited for the one upstream answer");
    }
    let marked: Vec<&HttpResponse> = responses.iter().filter(|r| coalesced(r)).collect();
    assert_eq!(marked.len(), 7, "all but the one it was sent for");
    for response in &marked {
        assert_eq!(
            response.json()["_meta"],
            json!({"complete": true, "coalesced": ["product"]})
        );
        let timing = response.header("server-timing").unwrap();
        assert!(
            timing.starts_with("product;dur=") && timing.ends_with(r#";desc="coalesced""#),
            "{timing}"
        );
        assert_eq!(response.header("x-aggregation-complete"), Some("true"));
    }
    // Once answered, the next request is a new one.
    assert_eq!(envoy.get("/p/1").status, 200);
    assert_eq!(service.hit_count(), 2);
    thread::sleep(Duration::from_millis(1300));
    assert_eq!(stat(&envoy, "route.r.call.product.coalesced"), 7);
    assert_eq!(stat(&envoy, "route.r.call.product.attempts"), 9);
    assert_eq!(stat(&envoy, "route.r.call.product.success"), 9);
    envoy.assert_no_vm_failures();
}

#[test]
fn different_paths_and_vary_values_are_different_requests() {
    let service = echo(400);
    let config = r#"{"routes":[
        {"name":"p","match":{"path":"/p/{id}"},"calls":[
            {"name":"product","cluster":"c","path":"/products/{path.id}","coalesce":true}]},
        {"name":"me","match":{"path":"/me"},"calls":[
            {"name":"me","cluster":"c","path":"/me","forward_headers":["authorization"],"coalesce":true,
             "cache":{"ttl_ms":60000,"vary":["authorization"]}}]}]}"#;
    let envoy = Arc::new(Envoy::builder(config).cluster("c", service.port()).start());
    let mut requests = plain("/p/1", 3);
    requests.extend(plain("/p/2", 3));
    let responses = at_once(&envoy, requests);
    for (i, response) in responses.iter().enumerate() {
        let id = if i < 3 { 1 } else { 2 };
        assert_eq!(
            response.json()["product"]["path"],
            format!("/products/{id}")
        );
    }
    assert_eq!(service.hit_count(), 2, "one per path");
    assert_eq!(responses.iter().filter(|r| coalesced(r)).count(), 4);

    service.reset_hits();
    let user = |token: &str| {
        (
            "/me".to_string(),
            vec![("authorization".to_string(), token.to_string())],
        )
    };
    let responses = at_once(
        &envoy,
        vec![
            user("alice"),
            user("bob"),
            user("alice"),
            user("bob"),
            user("alice"),
        ],
    );
    for (response, who) in responses
        .iter()
        .zip(["alice", "bob", "alice", "bob", "alice"])
    {
        assert_eq!(response.json()["me"]["user"], who, "{}", response.text());
    }
    let mut users: Vec<String> = service
        .hits()
        .iter()
        .map(|h| h.header("authorization").unwrap().to_string())
        .collect();
    users.sort();
    assert_eq!(
        users,
        ["alice", "bob"],
        "one per user: a cache miss joins the fetch in flight"
    );
    let again = envoy.request("GET", "/me", &[("authorization", "alice")], b"");
    assert_eq!(again.json()["me"]["user"], "alice");
    assert!(again
        .header("server-timing")
        .unwrap()
        .contains(r#"desc="cache""#));
    assert_eq!(service.hit_count(), 2, "the shared answer was cached once");
    envoy.assert_no_vm_failures();
}

const TWO_DEADLINES: &str = r#"{"routes":[
    {"name":"patient","match":{"path":"/a/{id}"},"calls":[
        {"name":"item","cluster":"c","path":"/items/{path.id}","timeout_ms":2000,"coalesce":true}]},
    {"name":"impatient","match":{"path":"/b/{id}"},"deadline_ms":200,"calls":[
        {"name":"item","cluster":"c","path":"/items/{path.id}","timeout_ms":2000,"coalesce":true}]}]}"#;

/// `GET first`, then `GET second` 100 ms later, from two clients.
fn one_then_another(envoy: &Arc<Envoy>, first: &str, second: &str) -> (HttpResponse, HttpResponse) {
    let (envoy_a, first) = (Arc::clone(envoy), first.to_string());
    let a = thread::spawn(move || envoy_a.get(&first));
    thread::sleep(Duration::from_millis(100));
    let b = envoy.get(second);
    (a.join().unwrap(), b)
}

fn assert_timed_out_at_its_deadline(response: &HttpResponse) {
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(
        response.json(),
        json!({"_meta": {"complete": false, "errors": {"item": {"reason": "timeout"}}}})
    );
    assert!(
        response
            .header("server-timing")
            .unwrap()
            .contains(r#"desc="timeout""#),
        "{:?}",
        response.header("server-timing")
    );
    response.assert_took(180, 500, "at its own 200 ms deadline");
}

#[test]
fn a_waiter_with_a_shorter_deadline_times_out_while_the_others_get_the_answer() {
    let service = echo(700);
    let envoy = Arc::new(
        Envoy::builder(TWO_DEADLINES)
            .cluster("c", service.port())
            .start(),
    );
    let (patient, impatient) = one_then_another(&envoy, "/a/1", "/b/1");
    assert_timed_out_at_its_deadline(&impatient);
    assert_eq!(patient.status, 200);
    assert_eq!(
        patient.json(),
        json!({"item": {"path": "/items/1", "user": "-"}, "_meta": {"complete": true}})
    );
    patient.assert_took(650, 1500, "the upstream's 700 ms");
    assert_eq!(service.hit_count(), 1, "the impatient one joined");
    envoy.assert_no_vm_failures();
}

#[test]
fn a_sender_whose_deadline_passes_first_hands_the_request_over() {
    let service = echo(700);
    let envoy = Arc::new(
        Envoy::builder(TWO_DEADLINES)
            .cluster("c", service.port())
            .start(),
    );
    // The impatient one sends, the patient one joins; the first answers at its deadline and its
    // stream ends, so the request is sent again for the one still waiting.
    let (impatient, patient) = one_then_another(&envoy, "/b/2", "/a/2");
    assert_timed_out_at_its_deadline(&impatient);
    assert_eq!(patient.status, 200, "{}", patient.text());
    assert_eq!(
        patient.json(),
        json!({"item": {"path": "/items/2", "user": "-"}, "_meta": {"complete": true}})
    );
    assert_eq!(service.hit_count(), 2, "sent again once");
    envoy.assert_no_vm_failures();
}

#[test]
fn a_sender_whose_client_disconnects_does_not_strand_the_others() {
    let service = echo(500);
    let config = r#"{"routes":[{"name":"r","match":{"path":"/p/{id}"},"calls":[
        {"name":"product","cluster":"c","path":"/products/{path.id}","coalesce":true}]}]}"#;
    let envoy = Arc::new(Envoy::builder(config).cluster("c", service.port()).start());
    // The first client sends, then leaves with a RST while the others wait for its request.
    let mut leaving = TcpStream::connect(("127.0.0.1", envoy.port())).unwrap();
    leaving
        .write_all(b"GET /p/9 HTTP/1.1\r\nhost: gateway\r\n\r\n")
        .unwrap();
    thread::sleep(Duration::from_millis(50));
    assert_eq!(service.hit_count(), 1);
    let waiters: Vec<_> = (0..3)
        .map(|_| {
            let envoy = Arc::clone(&envoy);
            thread::spawn(move || envoy.get("/p/9"))
        })
        .collect();
    thread::sleep(Duration::from_millis(100));
    socket2::SockRef::from(&leaving)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(leaving);
    let responses: Vec<HttpResponse> = waiters.into_iter().map(|w| w.join().unwrap()).collect();
    for response in &responses {
        assert_eq!(response.status, 200, "{}", response.text());
        assert_eq!(
            response.json()["product"],
            json!({"path": "/products/9", "user": "-"})
        );
        response.assert_took(400, 2000, "sent again when the first client left");
    }
    assert_eq!(
        responses.iter().filter(|r| coalesced(r)).count(),
        2,
        "sent again for one of them, shared by the two others"
    );
    assert_eq!(service.hit_count(), 2);
    envoy.assert_no_vm_failures();
}

#[test]
fn unsafe_methods_never_coalesce() {
    let service = echo(300);
    // Inherited from defaults: applied to the GET, not to the POST.
    let config = r#"{"defaults":{"coalesce":true},"routes":[{"name":"r","match":{"path":"/x"},"calls":[
        {"name":"read","cluster":"c","path":"/read"},
        {"name":"write","cluster":"c","method":"POST","path":"/write"}]}]}"#;
    let envoy = Arc::new(Envoy::builder(config).cluster("c", service.port()).start());
    let responses = at_once(&envoy, plain("/x", 4));
    for response in &responses {
        assert_eq!(response.status, 200, "{}", response.text());
        assert_eq!(response.json()["write"]["path"], "/write");
    }
    let hits = service.hits();
    let count = |method: &str| hits.iter().filter(|h| h.method == method).count();
    assert_eq!((count("GET"), count("POST")), (1, 4));
    envoy.assert_no_vm_failures();
}

#[test]
fn a_credential_without_vary_is_refused_at_configure_time() {
    let config = r#"{"routes":[{"name":"r","match":{"path":"/me"},"calls":[
        {"name":"me","cluster":"c","path":"/me","forward_headers":["authorization"],"coalesce":true}]}]}"#;
    let log = match Envoy::builder(config)
        .cluster("c", closed_port())
        .try_start()
    {
        Ok(envoy) => panic!("started:\n{}", envoy.log()),
        Err(log) => log,
    };
    let line = log
        .lines()
        .find(|l| l.contains("configuration rejected"))
        .unwrap_or_else(|| panic!("no rejection line:\n{log}"));
    assert!(
        line.contains(r#"route "r" call "me" key "coalesce": the call sends "authorization""#),
        "{line}"
    );
}

#[test]
fn calls_that_depend_on_a_shared_answer_go_out_for_every_waiter() {
    let service = echo(300);
    // The shared answer reaches each waiter in the callback of the stream it was sent from;
    // what the waiters send next goes out from the timer (answered to the root context) or
    // joins what is already in flight.
    let config = r#"{"routes":[{"name":"r","match":{"path":"/p/{id}"},"calls":[
        {"name":"product","cluster":"c","path":"/products/{path.id}","coalesce":true},
        {"name":"seller","cluster":"c","path":"/sellers/{calls.product.path}","coalesce":true},
        {"name":"stock","cluster":"c","path":"/stock/{calls.product.user}"}]}]}"#;
    let envoy = Arc::new(Envoy::builder(config).cluster("c", service.port()).start());
    let responses = at_once(&envoy, plain("/p/5", 4));
    for response in &responses {
        assert_eq!(response.status, 200, "{}", response.text());
        let body = response.json();
        assert_eq!(body["seller"]["path"], "/sellers/%2Fproducts%2F5");
        assert_eq!(body["stock"]["path"], "/stock/-");
        assert_eq!(body["_meta"]["complete"], true, "{body}");
    }
    let hits = service.hits();
    let count = |prefix: &str| hits.iter().filter(|h| h.path.starts_with(prefix)).count();
    assert_eq!(
        (count("/products/"), count("/sellers/"), count("/stock/")),
        (1, 1, 4)
    );
    envoy.assert_no_vm_failures();
}
