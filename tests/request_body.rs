//! Aggregating requests with bodies (SPEC §3.4): the client body is held until complete, sent
//! on unchanged or through JSON templates, and never reaches the route's own upstream.

mod common;

use common::*;
use serde_json::json;
use std::time::Duration;

const CONFIG: &str = r#"{"routes":[{"name":"checkout","match":{"path":"/checkout/{cart}","methods":["POST","PUT"]},
  "max_body_bytes":2048,"calls":[
    {"name":"order","cluster":"orders","method":"POST","path":"/orders","body":"{request.body}","required":true},
    {"name":"audit","cluster":"audit","method":"POST","path":"/audit/{path.cart}",
     "body":{"cart":"{path.cart}","qty":"{request.body.qty}","gift":"{request.body.gift}",
             "items":"{request.body.items}","note":"{request.body.customer.name} bought {request.body.qty}",
             "source":"gateway"}}]}]}"#;

fn echo_body() -> Upstream {
    Upstream::start(|r| {
        Behavior::Reply(
            Reply::json(201, r#"{"created":true}"#).header("x-len", &r.body.len().to_string()),
        )
    })
}

#[test]
fn the_client_body_is_forwarded_unchanged_and_json_templates_keep_types() {
    let orders = echo_body();
    let audit = echo_body();
    let origin = Upstream::json(r#"{"origin":true}"#);
    let envoy = Envoy::builder(CONFIG)
        .cluster("orders", orders.port())
        .cluster("audit", audit.port())
        .default_upstream(origin.port())
        .start();
    let body = r#"{"qty":2,"gift":true,"items":["tea","café"],"customer":{"name":"Zoë Ünal"}}"#;
    let response = envoy.request(
        "POST",
        "/checkout/c%2F7",
        &[("content-type", "application/json; charset=utf-8")],
        body.as_bytes(),
    );
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.json()["order"], json!({"created": true}));

    let order = &orders.hits()[0];
    assert_eq!(order.method, "POST");
    assert_eq!(
        order.body,
        body.as_bytes(),
        "byte for byte, non-ASCII included"
    );
    assert_eq!(
        order.header("content-type"),
        Some("application/json; charset=utf-8")
    );

    let audit_hit = &audit.hits()[0];
    assert_eq!(audit_hit.path, "/audit/c%2F7");
    assert_eq!(audit_hit.header("content-type"), Some("application/json"));
    let sent: serde_json::Value = serde_json::from_slice(&audit_hit.body).unwrap();
    assert_eq!(
        sent,
        json!({"cart": "c/7", "qty": 2, "gift": true, "items": ["tea", "café"],
               "note": "Zoë Ünal bought 2", "source": "gateway"})
    );
    assert_eq!(
        origin.hit_count(),
        0,
        "the route's own upstream never sees the request"
    );
    envoy.assert_no_vm_failures();
}

#[test]
fn a_large_body_arriving_in_pieces_is_held_until_complete() {
    let orders = echo_body();
    let origin = Upstream::json("{}");
    let config = CONFIG.replace(r#""max_body_bytes":2048"#, r#""max_body_bytes":1048576"#);
    let envoy = Envoy::builder(&config)
        .cluster("orders", orders.port())
        .cluster("audit", closed_port())
        .default_upstream(origin.port())
        .start();
    let body = format!(r#"{{"qty":1,"blob":"{}"}}"#, "x".repeat(200_000));
    let response = envoy.request(
        "PUT",
        "/checkout/1",
        &[("content-type", "application/json")],
        body.as_bytes(),
    );
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(orders.hits()[0].body.len(), body.len());
    assert_eq!(origin.hit_count(), 0);
}

#[test]
fn a_body_over_the_limit_is_413_and_calls_nothing() {
    let orders = echo_body();
    let origin = Upstream::json("{}");
    let envoy = Envoy::builder(CONFIG)
        .cluster("orders", orders.port())
        .cluster("audit", orders.port())
        .default_upstream(origin.port())
        .start();
    let body = format!(r#"{{"qty":1,"pad":"{}"}}"#, "x".repeat(3000));
    let response = envoy.request(
        "POST",
        "/checkout/1",
        &[("content-type", "application/json")],
        body.as_bytes(),
    );
    assert_eq!(response.status, 413);
    assert_eq!(
        response.json(),
        json!({"error": {"code": "request_body_too_large", "limit": 2048}})
    );
    assert_eq!(orders.hit_count(), 0);
    assert_eq!(origin.hit_count(), 0);
}

#[test]
fn a_route_that_does_not_read_the_body_answers_without_forwarding_it() {
    let stock = Upstream::json(r#"{"n":1}"#);
    let origin = Upstream::json("{}");
    let config = r#"{"routes":[{"name":"r","match":{"path":"/x","methods":["POST"]},"calls":[{"name":"stock","cluster":"stock","path":"/s"}]}]}"#;
    let envoy = Envoy::builder(config)
        .cluster("stock", stock.port())
        .default_upstream(origin.port())
        .start();
    let response = envoy.request(
        "POST",
        "/x",
        &[("content-type", "text/plain")],
        &vec![b'z'; 100_000],
    );
    assert_eq!(response.status, 200);
    assert_eq!(response.json()["stock"], json!({"n": 1}));
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(origin.hit_count(), 0);
    assert!(stock.hits()[0].body.is_empty());
}

#[test]
fn missing_body_fields_and_bodies_that_are_not_json_are_400_for_a_required_call() {
    let orders = echo_body();
    let config = r#"{"routes":[{"name":"r","match":{"path":"/x","methods":["POST"]},"calls":[
        {"name":"order","cluster":"orders","method":"POST","path":"/o","body":{"qty":"{request.body.qty}"},"required":true}]}]}"#;
    let envoy = Envoy::builder(config)
        .cluster("orders", orders.port())
        .start();
    let response = envoy.request(
        "POST",
        "/x",
        &[("content-type", "application/json")],
        br#"{"other":1}"#,
    );
    assert_eq!(response.status, 400);
    assert_eq!(response.json()["error"]["input"], "request.body.qty");
    let not_json = envoy.request("POST", "/x", &[("content-type", "text/plain")], b"qty=1");
    assert_eq!(not_json.status, 400);
    assert_eq!(not_json.json()["error"]["reason"], "invalid_input");
    // A key written twice: the filter would read one qty and the client's service maybe the
    // other, so the body is not JSON to the filter.
    let twice = envoy.request(
        "POST",
        "/x",
        &[("content-type", "application/json")],
        br#"{"qty":1,"qty":2E+1}"#,
    );
    assert_eq!(twice.status, 400, "{}", twice.text());
    assert_eq!(twice.json()["error"]["reason"], "invalid_input");
    assert_eq!(twice.json()["error"]["input"], "request.body.qty");
    assert_eq!(orders.hit_count(), 0);
}
