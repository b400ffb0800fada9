//! Aggregation end to end: the built .wasm in real Envoy, programmable upstreams on loopback.

mod common;

use common::*;
use serde_json::json;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

#[test]
fn calls_run_in_parallel_and_answer_nested_in_configuration_order() {
    let services: Vec<Upstream> = (0..4)
        .map(|i| Upstream::json_delayed(&format!(r#"{{"service":{i}}}"#), 150))
        .collect();
    let config = r#"{"routes":[{"name":"page","match":{"path":"/api/page/{id}"},"calls":[
        {"name":"d","cluster":"s3","path":"/d/{path.id}"},
        {"name":"a","cluster":"s0","path":"/a/{path.id}"},
        {"name":"c","cluster":"s2","path":"/c/{path.id}"},
        {"name":"b","cluster":"s1","path":"/b/{path.id}"}]}]}"#;
    let mut builder = Envoy::builder(config);
    for (i, service) in services.iter().enumerate() {
        builder = builder.cluster(&format!("s{i}"), service.port());
    }
    let envoy = builder.start();
    envoy.get("/api/page/warm-up");

    let response = envoy.get("/api/page/7");
    assert_eq!(response.status, 200, "{}", response.text());
    response.assert_took(
        150,
        400,
        "4 x 150 ms calls must run in parallel, not in 600 ms",
    );
    assert_eq!(
        response.text(),
        r#"{"d":{"service":3},"a":{"service":0},"c":{"service":2},"b":{"service":1},"_meta":{"complete":true}}"#
    );
    assert_eq!(response.header("content-type"), Some("application/json"));
    assert_eq!(response.header("x-aggregation-complete"), Some("true"));
    assert_eq!(response.header("cache-control"), None);
    let timing = response.header("server-timing").unwrap();
    for name in ["d", "a", "c", "b"] {
        // `name;dur=<ms>.<tenths>`: each call took its 150 ms.
        let entry = timing
            .split(", ")
            .find(|e| e.starts_with(&format!("{name};dur=")))
            .unwrap_or_else(|| panic!("no {name} in server-timing {timing}"));
        let dur = &entry[name.len() + 5..];
        let (whole, tenths) = dur.split_once('.').unwrap_or_else(|| panic!("{entry}"));
        assert!(
            whole
                .parse::<u64>()
                .is_ok_and(|ms| (150..1000).contains(&ms))
                && tenths.len() == 1
                && tenths.parse::<u8>().is_ok(),
            "server-timing entry {entry}"
        );
    }
    assert_eq!(services[0].hits().last().unwrap().path, "/a/7");
    assert_eq!(
        services[0].hits().last().unwrap().header("host"),
        Some("s0")
    );
    envoy.assert_no_vm_failures();
}

#[test]
fn upstream_bodies_are_spliced_byte_for_byte_and_empty_ones_are_null() {
    let spaced = Upstream::json("{ \"keep\" :  [1, 2.50, \"\\u00e9\"] }\n");
    let empty = Upstream::start(|_| Behavior::Reply(Reply::empty(204)));
    let text = Upstream::start(|_| Behavior::Reply(Reply::text(200, "line \"one\"\nline two")));
    let config = r#"{"routes":[{"name":"r","match":{"path":"/x"},"response":{"meta":"status"},"calls":[
        {"name":"spaced","cluster":"spaced","path":"/"},
        {"name":"empty","cluster":"empty","path":"/"},
        {"name":"text","cluster":"text","path":"/","format":"text"}]}]}"#;
    let envoy = Envoy::builder(config)
        .cluster("spaced", spaced.port())
        .cluster("empty", empty.port())
        .cluster("text", text.port())
        .start();
    let response = envoy.get("/x");
    assert_eq!(response.status, 200);
    assert_eq!(
        response.text(),
        "{\"spaced\":{ \"keep\" :  [1, 2.50, \"\\u00e9\"] }\n,\"empty\":null,\"text\":\"line \\\"one\\\"\\nline two\",\"status\":{\"complete\":true}}"
    );
    envoy.assert_no_vm_failures();
}

#[test]
fn meta_can_be_omitted() {
    let service = Upstream::json("[1]");
    let config = r#"{"routes":[{"name":"r","match":{"path":"/x"},"response":{"meta":null},"calls":[{"name":"a","cluster":"a","path":"/"}]}]}"#;
    let envoy = Envoy::builder(config).cluster("a", service.port()).start();
    assert_eq!(envoy.get("/x").text(), r#"{"a":[1]}"#);
}

#[test]
fn dependent_call_uses_an_earlier_answer_while_independent_calls_stay_parallel() {
    let catalog = Upstream::start(|r| {
        Behavior::Reply(
            Reply::json(
                200,
                &format!(
                    r#"{{"id":"{}","seller":{{"id":"s/9"}},"skus":[11,12]}}"#,
                    &r.path[10..]
                ),
            )
            .delay_ms(150),
        )
    });
    let sellers = Upstream::start(|r| {
        Behavior::Reply(Reply::json(200, &format!(r#"{{"seen":"{}"}}"#, r.path)).delay_ms(150))
    });
    let reviews = Upstream::json_delayed(r#"{"stars":4}"#, 250);
    let config = r#"{"routes":[{"name":"r","match":{"path":"/p/{id}"},"calls":[
        {"name":"product","cluster":"catalog","path":"/products/{path.id}"},
        {"name":"seller","cluster":"sellers","path":"/sellers/{calls.product.seller.id}?sku={calls.product.skus.1}"},
        {"name":"reviews","cluster":"reviews","path":"/reviews/{path.id}"}]}]}"#;
    let envoy = Envoy::builder(config)
        .cluster("catalog", catalog.port())
        .cluster("sellers", sellers.port())
        .cluster("reviews", reviews.port())
        .start();
    envoy.get("/p/warm");

    let response = envoy.get("/p/42");
    let body = response.json();
    assert_eq!(body["seller"], json!({"seen": "/sellers/s%2F9?sku=12"}));
    assert_eq!(body["product"]["id"], "42");
    assert_eq!(body["reviews"], json!({"stars": 4}));
    // product (150) then seller (150) = 300 ms; reviews (250) runs alongside, not after.
    response.assert_took(290, 500, "seller after product, reviews alongside");
    envoy.assert_no_vm_failures();
}

#[test]
fn after_orders_calls_without_reading_values() {
    let first = Upstream::json_delayed("1", 100);
    let second = Upstream::json("2");
    let config = r#"{"routes":[{"name":"r","match":{"path":"/x"},"calls":[
        {"name":"second","cluster":"second","path":"/","after":["first"]},
        {"name":"first","cluster":"first","path":"/"}]}]}"#;
    let envoy = Envoy::builder(config)
        .cluster("first", first.port())
        .cluster("second", second.port())
        .start();
    let response = envoy.get("/x");
    assert_eq!(
        response.text(),
        r#"{"second":2,"first":1,"_meta":{"complete":true}}"#
    );
    response.assert_took(100, 1000, "second waits for first");
}

#[test]
fn failed_dependency_skips_its_dependents_and_says_why() {
    let catalog = Upstream::start(|_| Behavior::Reply(Reply::json(500, r#"{"oops":1}"#)));
    let sellers = Upstream::json("{}");
    let config = r#"{"routes":[{"name":"r","match":{"path":"/p/{id}"},"calls":[
        {"name":"product","cluster":"catalog","path":"/products/{path.id}"},
        {"name":"seller","cluster":"sellers","path":"/sellers/{calls.product.seller}","fallback":{"name":"unknown"}}]}]}"#;
    let envoy = Envoy::builder(config)
        .cluster("catalog", catalog.port())
        .cluster("sellers", sellers.port())
        .start();
    let response = envoy.get("/p/1");
    assert_eq!(response.status, 200);
    assert_eq!(
        response.json(),
        json!({"seller": {"name": "unknown"}, "_meta": {"complete": false,
            "errors": {"product": {"reason": "status", "status": 500},
                       "seller": {"reason": "dependency_failed", "dependency": "product"}},
            "fallback": ["seller"]}})
    );
    assert_eq!(
        sellers.hit_count(),
        0,
        "a dependent of a failed call is not made"
    );
    let timing = response.header("server-timing").unwrap();
    assert!(timing.starts_with("product;dur="), "{timing}");
    assert!(
        timing.ends_with(r#";desc="status", seller;desc="dependency_failed""#),
        "{timing}"
    );
}

#[test]
fn missing_value_from_an_earlier_call_is_missing_input() {
    let catalog = Upstream::json(r#"{"no_seller":true}"#);
    let sellers = Upstream::json("{}");
    let config = r#"{"routes":[{"name":"r","match":{"path":"/p"},"calls":[
        {"name":"product","cluster":"catalog","path":"/"},
        {"name":"seller","cluster":"sellers","path":"/sellers/{calls.product.seller.id}","required":true}]}]}"#;
    let envoy = Envoy::builder(config)
        .cluster("catalog", catalog.port())
        .cluster("sellers", sellers.port())
        .start();
    let response = envoy.get("/p");
    assert_eq!(
        response.status, 502,
        "input from another call is not the client's fault"
    );
    assert_eq!(
        response.json(),
        json!({"error": {"code": "required_call_failed", "call": "seller", "reason": "missing_input", "input": "calls.product.seller.id"}})
    );
    assert_eq!(sellers.hit_count(), 0);
}

#[test]
fn many_concurrent_aggregations_each_get_their_own_data() {
    let echo = |service: &'static str| {
        Upstream::start(move |r| {
            let id = r.path.rsplit('/').next().unwrap().to_string();
            Behavior::Reply(Reply::json(200, &format!(r#"{{"{service}":"{id}"}}"#)).delay_ms(20))
        })
    };
    let (a, b, c, d) = (echo("a"), echo("b"), echo("c"), echo("d"));
    let config = r#"{"routes":[{"name":"r","match":{"path":"/item/{id}"},"calls":[
        {"name":"a","cluster":"a","path":"/a/{path.id}"},{"name":"b","cluster":"b","path":"/b/{path.id}"},
        {"name":"c","cluster":"c","path":"/c/{path.id}"},{"name":"d","cluster":"d","path":"/d/{calls.a.a}"}]}]}"#;
    let envoy = Arc::new(
        Envoy::builder(config)
            .cluster("a", a.port())
            .cluster("b", b.port())
            .cluster("c", c.port())
            .cluster("d", d.port())
            .concurrency(2)
            .start(),
    );
    let started = Instant::now();
    let clients: Vec<_> = (0..240)
        .map(|i| {
            let envoy = Arc::clone(&envoy);
            thread::spawn(move || {
                let response = envoy.get(&format!("/item/n{i}"));
                assert_eq!(response.status, 200, "{}", response.text());
                let id = format!("n{i}");
                assert_eq!(
                    response.json(),
                    json!({"a": {"a": id}, "b": {"b": id}, "c": {"c": id}, "d": {"d": id}, "_meta": {"complete": true}})
                );
            })
        })
        .collect();
    for client in clients {
        client.join().unwrap();
    }
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_eq!(d.hit_count(), 240);
    envoy.assert_no_vm_failures();
}

#[test]
fn clients_that_leave_mid_aggregation_do_not_disturb_later_requests() {
    use std::io::Write;
    use std::net::TcpStream;
    let slow = Upstream::json_delayed(r#"{"late":1}"#, 300);
    let config = r#"{"routes":[{"name":"r","match":{"path":"/x"},"calls":[{"name":"a","cluster":"a","path":"/"}]}]}"#;
    let envoy = Envoy::builder(config).cluster("a", slow.port()).start();
    for _ in 0..20 {
        let mut stream = TcpStream::connect(("127.0.0.1", envoy.port())).unwrap();
        stream
            .write_all(b"GET /x HTTP/1.1\r\nhost: t\r\n\r\n")
            .unwrap();
        drop(stream);
    }
    thread::sleep(Duration::from_millis(500));
    let response = envoy.get("/x");
    assert_eq!(response.status, 200);
    assert_eq!(response.json()["a"]["late"], 1);
    envoy.assert_no_vm_failures();
}
