//! Batch joins (SPEC §3.5) in real Envoy: distinct keys sent `max_batch` at a time, the chunks in
//! parallel, the answers joined back by key; a key missing from the answer reported per item; a
//! failed chunk with and without a fallback; big-integer keys; keys in a POST body and a wrapped
//! answer; too many chunks; a required batch join.

mod common;

use common::*;
use gateway_aggregator::testing::{config, route, RouteJson};
use serde_json::{json, Value};
use std::thread;
use std::time::Duration;

const POSTS: &str = r#"{"items":[
    {"id":1,"author":"u1"},{"id":2,"author":"u2"},{"id":3,"author":"u1"},
    {"id":4,"author":"u3"},{"id":5,"author":"u4"},{"id":6,"author":"u5"}]}"#;

/// The `ids` of a batch request (`/users?ids=a,b`).
fn ids(path: &str) -> Vec<String> {
    path.split_once("ids=")
        .map(|(_, list)| list.split(',').map(str::to_string).collect())
        .unwrap_or_default()
}

/// A batch endpoint: `[{"id": …, "name": "User …"}]` for the ids asked, in reverse order, but
/// `u4` (no such user); `u3` makes it fail with 503 when `down` says so.
fn users(delay_ms: u64, down: bool) -> Upstream {
    Upstream::start(move |r| {
        let asked = ids(&r.path);
        if down && asked.iter().any(|id| id == "u3") {
            return Behavior::Reply(Reply::json(503, "{}"));
        }
        let found: Vec<Value> = asked
            .iter()
            .rev()
            .filter(|id| *id != "u4")
            .map(|id| json!({"id": id, "name": format!("User {id}")}))
            .collect();
        Behavior::Reply(Reply::json(200, &Value::Array(found).to_string()).delay_ms(delay_ms))
    })
}

/// A route `/<name>` with `posts` and a batch join `authors` of its items' `author`, two keys
/// per request; `authors_extra` adds keys to the batch call.
fn feed_route(name: &str, authors_extra: &str) -> RouteJson {
    route(name, &format!("/{name}")).calls(&format!(
        r#"{{"name":"posts","cluster":"posts","path":"/posts"}},
           {{"name":"authors","cluster":"users","path":"/users?ids={{calls.posts.items[*].author}}",
            "join":{{"into":"posts.items","on":"author","match":"id","as":"author_detail"}},
            "max_batch":2{authors_extra}}}"#
    ))
}

fn feed(authors_extra: &str) -> String {
    feed_route("feed", authors_extra).config()
}

fn user(id: &str) -> Value {
    json!({"id": id, "name": format!("User {id}")})
}

#[test]
fn keys_go_out_in_parallel_chunks_and_a_missing_key_is_reported_per_item() {
    let posts = Upstream::json(POSTS);
    let users = users(300, false);
    let envoy = Envoy::builder(&feed(""))
        .cluster("posts", posts.port())
        .cluster("users", users.port())
        .start();
    let response = envoy.get("/feed");
    assert_eq!(response.status, 200);
    assert_eq!(
        response.json(),
        json!({"posts": {"items": [
            {"id": 1, "author": "u1", "author_detail": user("u1")},
            {"id": 2, "author": "u2", "author_detail": user("u2")},
            {"id": 3, "author": "u1", "author_detail": user("u1")},
            {"id": 4, "author": "u3", "author_detail": user("u3")},
            {"id": 5, "author": "u4"},
            {"id": 6, "author": "u5", "author_detail": user("u5")}]},
            "_meta": {"complete": false, "errors": {"authors": {"items": {
                "u4": {"reason": "status", "status": 404}}}}}})
    );
    let mut paths: Vec<String> = users.hits().into_iter().map(|h| h.path).collect();
    paths.sort();
    assert_eq!(
        paths,
        ["/users?ids=u1,u2", "/users?ids=u3,u4", "/users?ids=u5"],
        "distinct keys, at most max_batch per request"
    );
    response.assert_took(290, 850, "three chunks of 300 ms in parallel, not in a row");
    assert!(response
        .header("server-timing")
        .unwrap()
        .contains(r#"authors;dur="#));

    thread::sleep(Duration::from_millis(1300));
    let stat = |name: &str| envoy.filter_stat(&format!("route.feed.call.authors.{name}"));
    assert_eq!(stat("attempts"), 3, "one request per chunk");
    assert_eq!(stat("success"), 4, "one per key answered");
    assert_eq!(stat("failure.status"), 1, "the missing key");
    envoy.assert_no_vm_failures();
}

#[test]
fn a_failed_chunk_fails_its_keys_and_a_fallback_stands_in_for_each() {
    let posts = Upstream::json(POSTS);
    let users = users(0, true);
    let config = config([
        &feed_route("feed", ""),
        &feed_route("kind", r#","fallback":{"name":"unknown"}"#),
    ]);
    let envoy = Envoy::builder(&config)
        .cluster("posts", posts.port())
        .cluster("users", users.port())
        .start();
    let plain = envoy.get("/feed").json();
    let items = &plain["posts"]["items"];
    assert_eq!(items[3], json!({"id": 4, "author": "u3"}));
    assert_eq!(items[4], json!({"id": 5, "author": "u4"}));
    assert_eq!(items[5]["author_detail"], user("u5"));
    assert_eq!(
        plain["_meta"]["errors"]["authors"]["items"],
        json!({"u3": {"reason": "status", "status": 503}, "u4": {"reason": "status", "status": 503}})
    );

    let kind = envoy.get("/kind").json();
    let items = &kind["posts"]["items"];
    assert_eq!(items[0]["author_detail"], user("u1"));
    assert_eq!(items[3]["author_detail"], json!({"name": "unknown"}));
    assert_eq!(items[4]["author_detail"], json!({"name": "unknown"}));
    assert_eq!(kind["_meta"]["fallback"], json!(["authors"]));
}

#[test]
fn big_integer_keys_are_sent_and_matched_exactly() {
    let posts = Upstream::json(
        r#"{"items":[{"author":123456789012345678901234567890},{"author":123456789012345678901234567891}]}"#,
    );
    let users = Upstream::json(
        r#"[{"id":"123456789012345678901234567890","who":"a string, not the number"},
            {"id":123456789012345678901234567891,"who":"b"},
            {"id":123456789012345678901234567890,"who":"a"}]"#,
    );
    let envoy = Envoy::builder(&feed(""))
        .cluster("posts", posts.port())
        .cluster("users", users.port())
        .start();
    let response = envoy.get("/feed");
    assert_eq!(
        users.hits()[0].path,
        "/users?ids=123456789012345678901234567890,123456789012345678901234567891"
    );
    assert!(response
        .text()
        .contains(r#"{"author":123456789012345678901234567890,"author_detail":{"id":123456789012345678901234567890,"who":"a"}}"#),
        "{}", response.text());
    assert_eq!(response.json()["_meta"], json!({"complete": true}));
}

#[test]
fn keys_in_a_post_body_and_a_wrapped_answer_unwrapped_by_extract() {
    let posts = Upstream::json(r#"{"items":[{"author":7},{"author":8},{"author":7}]}"#);
    let users = Upstream::json(r#"{"data":[{"user":{"id":8},"n":"b"},{"user":{"id":7},"n":"a"}]}"#);
    let config = r#"{"routes":[{"name":"feed","match":{"path":"/feed"},"calls":[
        {"name":"posts","cluster":"posts","path":"/posts"},
        {"name":"authors","cluster":"users","method":"POST","path":"/users/batch",
         "body":{"ids":"{calls.posts.items[*].author}"},"extract":"data",
         "join":{"into":"posts.items","on":"author","match":"user.id","as":"by"}}]}]}"#;
    let envoy = Envoy::builder(config)
        .cluster("posts", posts.port())
        .cluster("users", users.port())
        .start();
    let response = envoy.get("/feed");
    assert_eq!(
        response.json(),
        json!({"posts": {"items": [
            {"author": 7, "by": {"user": {"id": 7}, "n": "a"}},
            {"author": 8, "by": {"user": {"id": 8}, "n": "b"}},
            {"author": 7, "by": {"user": {"id": 7}, "n": "a"}}]},
            "_meta": {"complete": true}})
    );
    let hit = &users.hits()[0];
    assert_eq!(
        (hit.method.as_str(), hit.body.as_slice()),
        ("POST", &br#"{"ids":[7,8]}"#[..])
    );
    assert_eq!(hit.header("content-type"), Some("application/json"));
}

#[test]
fn too_many_chunks_send_nothing_and_a_required_batch_join_answers_404_on_a_missing_key() {
    let posts = Upstream::json(POSTS);
    let users = users(0, false);
    let config = r#"{"routes":[
      {"name":"capped","match":{"path":"/capped"},"calls":[
        {"name":"posts","cluster":"posts","path":"/posts"},
        {"name":"authors","cluster":"users","path":"/users?ids={calls.posts.items[*].author}",
         "join":{"into":"posts.items","on":"author","match":"id","as":"a"},"max_batch":2,"max_fan_out":2}]},
      {"name":"capped_fallback","match":{"path":"/capped-fallback"},"calls":[
        {"name":"posts","cluster":"posts","path":"/posts"},
        {"name":"authors","cluster":"users","path":"/users?ids={calls.posts.items[*].author}",
         "join":{"into":"posts.items","on":"author","match":"id","as":"a"},"max_batch":2,"max_fan_out":2,
         "fallback":{"name":"unknown"}}]},
      {"name":"required","match":{"path":"/required"},"calls":[
        {"name":"posts","cluster":"posts","path":"/posts"},
        {"name":"authors","cluster":"users","path":"/users?ids={calls.posts.items[*].author}",
         "join":{"into":"posts.items","on":"author","match":"id","as":"a"},"required":true}]}]}"#;
    let envoy = Envoy::builder(config)
        .cluster("posts", posts.port())
        .cluster("users", users.port())
        .start();
    let capped = envoy.get("/capped");
    assert_eq!(capped.status, 200);
    assert_eq!(
        capped.json()["_meta"]["errors"],
        json!({"authors": {"reason": "too_many_items"}}),
        "five keys need three requests of two, max_fan_out is two"
    );
    let items = capped.json()["posts"]["items"].clone();
    assert!(
        items
            .as_array()
            .unwrap()
            .iter()
            .all(|item| item.get("a").is_none()),
        "{items}"
    );
    // Failed as a whole, the call's fallback stands in for every key, as _meta says.
    let with_fallback = envoy.get("/capped-fallback");
    assert_eq!(with_fallback.status, 200);
    assert_eq!(
        with_fallback.json()["_meta"],
        json!({"complete": false, "errors": {"authors": {"reason": "too_many_items"}},
               "fallback": ["authors"]})
    );
    let items = with_fallback.json()["posts"]["items"].clone();
    assert_eq!(items.as_array().unwrap().len(), 6);
    for item in items.as_array().unwrap() {
        assert_eq!(item["a"], json!({"name": "unknown"}), "{items}");
    }
    assert_eq!(users.hit_count(), 0);

    let required = envoy.get("/required");
    assert_eq!(required.status, 404);
    assert_eq!(
        required.json(),
        json!({"error": {"code": "required_call_failed", "call": "authors",
               "reason": "status", "status": 404, "item": "u4"}})
    );
    assert_eq!(users.hits()[0].path, "/users?ids=u1,u2,u3,u4,u5");
}
