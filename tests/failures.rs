//! Outcomes of failing calls and the status policy (SPEC §4), in real Envoy.

mod common;

use common::*;
use gateway_aggregator::testing::route;
use serde_json::json;
use std::time::Duration;

#[test]
fn per_call_timeout_uses_the_fallback_and_marks_the_answer_incomplete() {
    let fast = Upstream::json(r#"{"fast":true}"#);
    let slow = Upstream::json_delayed(r#"{"late":true}"#, 2000);
    let config = route("r", "/agg/{id}")
        .calls(
            r#"{"name":"fast","cluster":"fast","path":"/"},
               {"name":"reviews","cluster":"slow","path":"/","timeout_ms":150,"fallback":{"items":[],"average":null}}"#,
        )
        .config();
    let envoy = Envoy::builder(&config)
        .cluster("fast", fast.port())
        .cluster("slow", slow.port())
        .start();
    let response = envoy.get("/agg/1");
    assert_eq!(response.status, 200);
    response.assert_took(140, 900, "the 150 ms timeout cuts the 2 s call");
    assert_eq!(
        response.json(),
        json!({"fast": {"fast": true}, "reviews": {"items": [], "average": null},
               "_meta": {"complete": false, "errors": {"reviews": {"reason": "timeout"}}, "fallback": ["reviews"]}})
    );
    assert_eq!(response.header("x-aggregation-complete"), Some("false"));
    assert_eq!(response.header("cache-control"), Some("no-store"));
    assert!(response
        .header("server-timing")
        .unwrap()
        .contains(r#"reviews;dur="#));
    assert!(response
        .header("server-timing")
        .unwrap()
        .ends_with(r#";desc="timeout""#));
    envoy.assert_no_vm_failures();
}

#[test]
fn route_deadline_bounds_the_whole_aggregation() {
    let slow = Upstream::json_delayed("1", 3000);
    let fast = Upstream::json("2");
    let config = route("r", "/agg")
        .key("deadline_ms", 250)
        .calls(
            r#"{"name":"slow","cluster":"slow","path":"/","timeout_ms":5000},
               {"name":"fast","cluster":"fast","path":"/"}"#,
        )
        .config();
    let envoy = Envoy::builder(&config)
        .cluster("slow", slow.port())
        .cluster("fast", fast.port())
        .start();
    let response = envoy.get("/agg");
    assert_eq!(response.status, 200);
    response.assert_took(240, 900, "the 250 ms deadline cuts the 5 s call timeout");
    assert_eq!(
        response.json(),
        json!({"fast": 2, "_meta": {"complete": false, "errors": {"slow": {"reason": "timeout"}}}})
    );
}

#[test]
fn optional_failures_are_omitted_and_reported_with_their_reason() {
    let ok = Upstream::json(r#"{"ok":1}"#);
    let broken = Upstream::start(|_| {
        Behavior::Reply(Reply::json(503, r#"{"internal":"db at 10.1.2.3 down"}"#))
    });
    let garbage = Upstream::start(|_| Behavior::Reply(Reply::json(200, r#"{"half":"#)));
    let reset = Upstream::start(|_| Behavior::Reset);
    let cut = Upstream::start(|_| {
        Behavior::ResetAfterHeaders(Reply::json(
            200,
            r#"{"long":"aaaaaaaaaaaaaaaaaaaaaaaaaaaaa"}"#,
        ))
    });
    let big = Upstream::json(&format!(r#"{{"blob":"{}"}}"#, "x".repeat(5000)));
    let config = route("r", "/agg/{id}")
        .calls(
            r#"{"name":"ok","cluster":"ok","path":"/"},
               {"name":"broken","cluster":"broken","path":"/"},
               {"name":"garbage","cluster":"garbage","path":"/"},
               {"name":"reset","cluster":"reset","path":"/"},
               {"name":"cut","cluster":"cut","path":"/"},
               {"name":"refused","cluster":"refused","path":"/"},
               {"name":"no_hosts","cluster":"empty","path":"/"},
               {"name":"big","cluster":"big","path":"/","max_body_bytes":1000},
               {"name":"ghost","cluster":"no_such_cluster","path":"/"}"#,
        )
        .config();
    let envoy = Envoy::builder(&config)
        .cluster("ok", ok.port())
        .cluster("broken", broken.port())
        .cluster("garbage", garbage.port())
        .cluster("reset", reset.port())
        .cluster("cut", cut.port())
        .closed_cluster("refused")
        .empty_cluster("empty")
        .cluster("big", big.port())
        .start();
    let response = envoy.get("/agg/1");
    assert_eq!(response.status, 200);
    assert_eq!(
        response.json(),
        json!({"ok": {"ok": 1}, "_meta": {"complete": false, "errors": {
            "broken": {"reason": "status", "status": 503},
            "garbage": {"reason": "invalid_body"},
            "reset": {"reason": "connect"},
            "cut": {"reason": "connect"},
            "refused": {"reason": "connect"},
            "no_hosts": {"reason": "connect"},
            "big": {"reason": "too_large"},
            "ghost": {"reason": "dispatch"}}}})
    );
    assert!(
        !response.text().contains("10.1.2.3"),
        "no upstream internals by default"
    );
    envoy.assert_no_vm_failures();
}

#[test]
fn expose_errors_shows_upstream_details_for_debugging() {
    let broken =
        Upstream::start(|_| Behavior::Reply(Reply::json(503, r#"{"internal":"db down"}"#)));
    let config = route("r", "/agg")
        .key("expose_errors", true)
        .calls(
            r#"{"name":"broken","cluster":"broken","path":"/"},
               {"name":"ghost","cluster":"ghost","path":"/"}"#,
        )
        .config();
    let envoy = Envoy::builder(&config)
        .cluster("broken", broken.port())
        .start();
    let errors = &envoy.get("/agg").json()["_meta"]["errors"];
    assert_eq!(
        errors["broken"]["detail"],
        r#"HTTP 503: {"internal":"db down"}"#
    );
    assert!(errors["ghost"]["detail"]
        .as_str()
        .unwrap()
        .contains("ghost"));
}

#[test]
fn required_5xx_is_502_without_upstream_internals() {
    let catalog = Upstream::start(|_| {
        Behavior::Reply(Reply::json(503, r#"{"trace":"at db.internal:5432"}"#))
    });
    let other = Upstream::json("1");
    let config = route("r", "/agg/{id}")
        .calls(
            r#"{"name":"product","cluster":"catalog","path":"/p/{path.id}","required":true},
               {"name":"other","cluster":"other","path":"/"}"#,
        )
        .config();
    let envoy = Envoy::builder(&config)
        .cluster("catalog", catalog.port())
        .cluster("other", other.port())
        .start();
    let response = envoy.get("/agg/1");
    assert_eq!(response.status, 502);
    assert_eq!(
        response.json(),
        json!({"error": {"code": "required_call_failed", "call": "product", "reason": "status", "status": 503}})
    );
    assert_eq!(response.header("content-type"), Some("application/json"));
    assert_eq!(response.header("x-aggregation-complete"), Some("false"));
    assert_eq!(response.header("cache-control"), Some("no-store"));
    assert!(response
        .header("server-timing")
        .unwrap()
        .contains(r#"product;dur="#));
}

#[test]
fn required_404_is_passed_through_with_the_upstream_json_body() {
    let catalog = Upstream::start(|r| {
        if r.path.ends_with("/missing") {
            Behavior::Reply(Reply::json(404, r#"{"error":"product not found"}"#))
        } else {
            Behavior::Reply(Reply::text(409, "conflict, not json"))
        }
    });
    let config = route("r", "/agg/{id}")
        .calls(r#"{"name":"product","cluster":"catalog","path":"/p/{path.id}","required":true}"#)
        .config();
    let envoy = Envoy::builder(&config)
        .cluster("catalog", catalog.port())
        .start();
    let response = envoy.get("/agg/missing");
    assert_eq!(response.status, 404);
    assert_eq!(response.text(), r#"{"error":"product not found"}"#);
    let response = envoy.get("/agg/other");
    assert_eq!(
        response.status, 409,
        "same status, our error body when the upstream's is not JSON"
    );
    assert_eq!(
        response.json(),
        json!({"error": {"code": "required_call_failed", "call": "product", "reason": "status", "status": 409}})
    );
}

#[test]
fn required_timeout_is_504_and_answers_without_waiting_for_the_rest() {
    let catalog = Upstream::json_delayed("{}", 3000);
    let slow_optional = Upstream::json_delayed("{}", 2000);
    let config = route("r", "/agg/{id}")
        .calls(
            r#"{"name":"product","cluster":"catalog","path":"/","required":true,"timeout_ms":200},
               {"name":"extra","cluster":"extra","path":"/","timeout_ms":1500}"#,
        )
        .config();
    let envoy = Envoy::builder(&config)
        .cluster("catalog", catalog.port())
        .cluster("extra", slow_optional.port())
        .start();
    let response = envoy.get("/agg/1");
    assert_eq!(response.status, 504);
    response.assert_took(190, 1000, "answered when the required call times out");
    assert_eq!(
        response.json(),
        json!({"error": {"code": "required_call_failed", "call": "product", "reason": "timeout"}})
    );
}

#[test]
fn missing_required_client_input_is_400_naming_it_and_calls_nothing() {
    let search = Upstream::json("[]");
    let config = route("r", "/search")
        .calls(
            r#"{"name":"other","cluster":"search","path":"/other"},
               {"name":"results","cluster":"search","path":"/search?q={query.q}&lang={header.accept-language|en}","required":true}"#,
        )
        .config();
    let envoy = Envoy::builder(&config)
        .cluster("search", search.port())
        .start();
    let response = envoy.get("/search?page=2");
    assert_eq!(response.status, 400);
    assert_eq!(
        response.json(),
        json!({"error": {"code": "required_call_failed", "call": "results", "reason": "missing_input", "input": "query.q"}})
    );
    assert_eq!(search.hit_count(), 0);
    let response = envoy.get("/search?q=rust+wasm");
    assert_eq!(response.status, 200);
    assert!(
        search
            .hits()
            .iter()
            .any(|h| h.path == "/search?q=rust%20wasm&lang=en"),
        "{:?}",
        search.hits()
    );
}

#[test]
fn required_call_to_an_unknown_cluster_is_502() {
    let config = route("r", "/agg/{id}")
        .calls(r#"{"name":"product","cluster":"nowhere","path":"/","required":true}"#)
        .config();
    let envoy = Envoy::builder(&config).start();
    let response = envoy.get("/agg/1");
    assert_eq!(response.status, 502);
    assert_eq!(response.json()["error"]["reason"], "dispatch");
    envoy.assert_no_vm_failures();
}

#[test]
fn json_with_invalid_utf8_inside_a_string_is_invalid_body() {
    // Latin-1 bytes in an otherwise well-formed JSON answer: splicing them would hand the
    // client a body its JSON parser refuses.
    let latin1 =
        Upstream::start(|_| Behavior::Reply(Reply::empty(200).body(b"{\"name\":\"caf\xe9\"}")));
    let good = Upstream::json(r#"{"name":"cafe"}"#);
    let config = route("r", "/agg/{id}")
        .key("expose_errors", true)
        .calls(
            r#"{"name":"latin1","cluster":"latin1","path":"/"},
               {"name":"good","cluster":"good","path":"/"}"#,
        )
        .config();
    let envoy = Envoy::builder(&config)
        .cluster("latin1", latin1.port())
        .cluster("good", good.port())
        .start();
    let response = envoy.get("/agg/1");
    assert_eq!(response.status, 200);
    let body = response.json();
    assert_eq!(body["_meta"]["errors"]["latin1"]["reason"], "invalid_body");
    assert_eq!(
        body["_meta"]["errors"]["latin1"]["detail"],
        "body is not JSON: invalid UTF-8 at byte 12"
    );
    assert_eq!(body["latin1"], serde_json::Value::Null);
    assert_eq!(body["good"]["name"], "cafe");
    envoy.assert_no_vm_failures();
}

#[test]
fn hostile_upstreams_never_take_the_vm_down() {
    let hang = Upstream::start(|_| Behavior::Hang);
    let trickle = Upstream::start(|_| Behavior::Trickle {
        reply: Reply::json(200, r#"{"slowly":"arriving body"}"#),
        chunk: 2,
        every: Duration::from_millis(50),
    });
    let deep = Upstream::json(&("[".repeat(50_000) + &"]".repeat(50_000)));
    let nested = Upstream::json(&("[".repeat(100) + &"]".repeat(100)));
    let binary =
        Upstream::start(|_| Behavior::Reply(Reply::empty(200).body(&[0xff, 0xfe, 0x00, 0x7b])));
    let config = route("r", "/agg/{id}")
        .calls(
            r#"{"name":"hang","cluster":"hang","path":"/","timeout_ms":200},
               {"name":"trickle","cluster":"trickle","path":"/","timeout_ms":300},
               {"name":"deep","cluster":"deep","path":"/"},
               {"name":"deep_parsed","cluster":"deep","path":"/"},
               {"name":"needs_deep","cluster":"deep","path":"/{calls.deep_parsed.0}"},
               {"name":"nested","cluster":"nested","path":"/"},
               {"name":"binary","cluster":"binary","path":"/","format":"text"}"#,
        )
        .config();
    let envoy = Envoy::builder(&config)
        .cluster("hang", hang.port())
        .cluster("trickle", trickle.port())
        .cluster("deep", deep.port())
        .cluster("nested", nested.port())
        .cluster("binary", binary.port())
        .start();
    for _ in 0..3 {
        let response = envoy.get("/agg/1");
        assert_eq!(response.status, 200);
        let meta = &response.json()["_meta"]["errors"];
        assert_eq!(meta["hang"]["reason"], "timeout");
        assert_eq!(meta["trickle"]["reason"], "timeout");
        assert_eq!(
            meta["deep"]["reason"], "invalid_body",
            "too deep for clients to parse"
        );
        assert_eq!(meta["deep_parsed"]["reason"], "invalid_body");
        assert_eq!(meta["needs_deep"]["reason"], "dependency_failed");
        assert_eq!(meta["binary"]["reason"], "invalid_body");
        assert!(
            response.json()["nested"].is_array(),
            "JSON within the depth limit is spliced"
        );
    }
    envoy.assert_no_vm_failures();
}
