//! SPEC §4 in real Envoy: every answer is JSON with unique keys at every level, and the meta
//! object is always the filter's own. Each test reads the answer with the harness's parser,
//! which refuses a repeated key (`HttpResponse::json`), and some also look at the raw bytes.

mod common;

use common::*;
use serde_json::json;

fn occurrences(body: &[u8], needle: &str) -> usize {
    String::from_utf8_lossy(body).matches(needle).count()
}

#[test]
fn an_upstream_cannot_spoof_the_meta_object_in_merge() {
    let m = Upstream::json(r#"{"_meta":{"complete":true,"page":2},"x":1}"#);
    let down = Upstream::start(|_| Behavior::Reply(Reply::json(404, r#"{"error":"gone"}"#)));
    let config = r#"{"routes":[{"name":"r","match":{"path":"/m"},"response":{"layout":"merge"},"calls":[
        {"name":"m","cluster":"m","path":"/"},{"name":"down","cluster":"down","path":"/"}]}]}"#;
    let envoy = Envoy::builder(config)
        .cluster("m", m.port())
        .cluster("down", down.port())
        .start();
    let response = envoy.get("/m");
    assert_eq!(response.status, 200);
    assert_eq!(
        occurrences(&response.body, "\"_meta\""),
        1,
        "{}",
        response.text()
    );
    assert_eq!(
        response.json(),
        json!({"x": 1, "_meta": {"complete": false,
               "errors": {"down": {"reason": "status", "status": 404}}}})
    );
    assert_eq!(response.header("x-aggregation-complete"), Some("false"));
    envoy.assert_no_vm_failures();
}

#[test]
fn an_upstream_body_with_a_repeated_key_is_invalid_body() {
    let twice = Upstream::json(r#"{"complete":true,"complete":false}"#);
    let escaped = Upstream::json(r#"{"id":1,"nested":{"a":1,"\u0061":2}}"#);
    let fine = Upstream::json(r#"{"ok":true}"#);
    // `reader` parses `escaped` (a later call reads it); `twice` is spliced as it comes.
    let config = r#"{"routes":[{"name":"r","match":{"path":"/d"},"expose_errors":true,"calls":[
        {"name":"twice","cluster":"twice","path":"/"},
        {"name":"escaped","cluster":"escaped","path":"/"},
        {"name":"reader","cluster":"fine","path":"/{calls.escaped.id}"},
        {"name":"fine","cluster":"fine","path":"/"}]}]}"#;
    let envoy = Envoy::builder(config)
        .cluster("twice", twice.port())
        .cluster("escaped", escaped.port())
        .cluster("fine", fine.port())
        .start();
    let response = envoy.get("/d");
    assert_eq!(response.status, 200);
    let body = response.json();
    assert_eq!(
        body["_meta"]["errors"]["twice"],
        json!({"reason": "invalid_body",
               "detail": "body is not JSON: duplicate key \"complete\" at byte 17"})
    );
    assert_eq!(
        body["_meta"]["errors"]["escaped"],
        json!({"reason": "invalid_body",
               "detail": "body is not JSON: duplicate key \"a\" at byte 24"})
    );
    assert_eq!(
        body["_meta"]["errors"]["reader"],
        json!({"reason": "dependency_failed", "dependency": "escaped"})
    );
    assert_eq!(body["fine"], json!({"ok": true}));
    assert!(body.get("twice").is_none() && body.get("escaped").is_none());
    envoy.assert_no_vm_failures();
}

#[test]
fn a_client_error_body_with_a_repeated_key_is_not_passed_through() {
    let product = Upstream::start(|_| {
        Behavior::Reply(Reply::json(404, r#"{"error":"gone","error":"here"}"#))
    });
    let config = r#"{"routes":[{"name":"r","match":{"path":"/p"},"calls":[
        {"name":"product","cluster":"product","path":"/","required":true}]}]}"#;
    let envoy = Envoy::builder(config)
        .cluster("product", product.port())
        .start();
    let response = envoy.get("/p");
    assert_eq!(response.status, 404, "still the upstream's status");
    assert_eq!(
        response.json(),
        json!({"error": {"code": "required_call_failed", "call": "product", "reason": "status", "status": 404}})
    );
}

#[test]
fn for_each_items_that_print_alike_get_distinct_keys() {
    let posts = Upstream::json(
        r#"{"items":[{"id":1,"author":7},{"id":2,"author":"7"},{"id":3,"author":7}]}"#,
    );
    let users = Upstream::start(|_| Behavior::Reply(Reply::json(404, "{}")));
    let config = r#"{"routes":[{"name":"r","match":{"path":"/feed"},"calls":[
        {"name":"posts","cluster":"posts","path":"/posts"},
        {"name":"authors","cluster":"users","path":"/users/{item}","for_each":"calls.posts.items[*].author"}]}]}"#;
    let envoy = Envoy::builder(config)
        .cluster("posts", posts.port())
        .cluster("users", users.port())
        .start();
    let response = envoy.get("/feed");
    assert_eq!(response.status, 200);
    assert_eq!(users.hit_count(), 2, "7 and \"7\" are two items");
    let body = response.json();
    assert_eq!(body["authors"], json!([null, null]));
    assert_eq!(
        body["_meta"]["errors"]["authors"],
        json!({"items": {"7": {"reason": "status", "status": 404},
                         "\"7\"": {"reason": "status", "status": 404}}})
    );
    envoy.assert_no_vm_failures();
}

#[test]
fn colliding_keys_resolve_by_the_documented_precedence() {
    // merge: configuration order, later wins on a scalar; `as` takes part as {"<as>": body};
    // a fallback stands in at its call's place; derive writes last.
    let profile = Upstream::json(r#"{"unread":1,"tier":"gold","tags":["a"],"user":{"id":1}}"#);
    let counts = Upstream::json("7");
    let prefs = Upstream::start(|_| Behavior::Reply(Reply::json(503, "{}")));
    let config = r#"{"routes":[{"name":"me","match":{"path":"/me"},
        "response":{"layout":"merge","derive":{"user.tags":{"count":"tags"}}},"calls":[
        {"name":"profile","cluster":"profile","path":"/"},
        {"name":"counts","cluster":"counts","path":"/","as":"unread"},
        {"name":"prefs","cluster":"prefs","path":"/","fallback":{"tier":"basic","tags":["b"],"user":{"tags":"none"}}}]}]}"#;
    let envoy = Envoy::builder(config)
        .cluster("profile", profile.port())
        .cluster("counts", counts.port())
        .cluster("prefs", prefs.port())
        .start();
    let response = envoy.get("/me");
    assert_eq!(
        response.json(),
        json!({"unread": 7, "tier": "basic", "tags": ["a", "b"], "user": {"id": 1, "tags": 2},
               "_meta": {"complete": false, "errors": {"prefs": {"reason": "status", "status": 503}},
                         "fallback": ["prefs"]}})
    );
    drop(envoy);

    // join.as replaces an element's own key of that name; a failed item without fallback
    // leaves no such key at all, rather than the upstream's value.
    let posts = Upstream::json(
        r#"{"items":[{"author":"u1","detail":"upstream"},{"author":"u2","detail":"upstream"}]}"#,
    );
    let users = Upstream::start(|request| {
        Behavior::Reply(match request.path.as_str() {
            "/users/u1" => Reply::json(200, r#"{"name":"Ann"}"#),
            _ => Reply::json(404, "{}"),
        })
    });
    let config = r#"{"routes":[{"name":"feed","match":{"path":"/feed"},"calls":[
        {"name":"posts","cluster":"posts","path":"/posts"},
        {"name":"authors","cluster":"users","path":"/users/{item}","for_each":"calls.posts.items[*].author",
         "join":{"into":"posts.items","on":"author","as":"detail"}}]}]}"#;
    let envoy = Envoy::builder(config)
        .cluster("posts", posts.port())
        .cluster("users", users.port())
        .start();
    let response = envoy.get("/feed");
    assert_eq!(
        response.json()["posts"],
        json!({"items": [{"author": "u1", "detail": {"name": "Ann"}}, {"author": "u2"}]})
    );
    envoy.assert_no_vm_failures();
}

#[test]
fn a_failed_call_whose_fallback_does_not_fit_is_reported_once() {
    let a = Upstream::json(r#"{"x":1}"#);
    let b = Upstream::start(|_| Behavior::Reply(Reply::json(503, "{}")));
    let config = r#"{"routes":[{"name":"r","match":{"path":"/m"},"response":{"layout":"merge"},"calls":[
        {"name":"a","cluster":"a","path":"/"},{"name":"b","cluster":"b","path":"/","fallback":[]}]}]}"#;
    let envoy = Envoy::builder(config)
        .cluster("a", a.port())
        .cluster("b", b.port())
        .start();
    assert_eq!(
        envoy.get("/m").json(),
        json!({"x": 1, "_meta": {"complete": false,
               "errors": {"b": {"reason": "status", "status": 503}}, "fallback": ["b"]}})
    );
}

#[test]
fn configuration_that_writes_into_the_meta_object_is_refused() {
    let refused = |config: &str, expected: &str| {
        let line = Envoy::builder(config).rejection();
        assert!(line.contains(expected), "expected {expected} in:\n{line}");
    };
    refused(
        r#"{"routes":[{"name":"r","match":{"path":"/"},"response":{"derive":{"_meta.n":{"count":"a"}}},
            "calls":[{"name":"a","cluster":"c","path":"/"}]}]}"#,
        r#"route "r" key "response.derive._meta.n": writes into "_meta", the completeness object's key (response.meta), which is the filter's own"#,
    );
    refused(
        r#"{"routes":[{"name":"r","match":{"path":"/"},"response":{"layout":"merge","meta":"status",
            "derive":{"status":{"count":"a"}}},"calls":[{"name":"a","cluster":"c","path":"/"}]}]}"#,
        r#"route "r" key "response.derive.status": writes into "status""#,
    );
}
