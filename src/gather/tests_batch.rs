//! Batch joins (SPEC §3.5) on the fake host (`driver.rs`): distinct keys in chunks of
//! `max_batch` sent together, joined by key; a key missing from the answer, failed chunks with
//! and without fallback, big-integer keys, the cap on requests, and what a chunk may answer.

use super::driver::{header, request, route, Driver};
use crate::testing;
use serde_json::json;

/// `posts` and a batch join `authors` over its items' `author`, 2 keys per request.
fn feed(authors_extra: &str) -> String {
    testing::route("feed", "/feed/{id}")
        .calls(&format!(
            r#"{{"name":"posts","cluster":"posts","path":"/posts"}},
               {{"name":"authors","cluster":"users","path":"/users?ids={{calls.posts.items[*].author}}",
                "join":{{"into":"posts.items","on":"author","match":"id","as":"author_detail"}},
                "max_batch":2{authors_extra}}}"#
        ))
        .config()
}

const POSTS: &str = r#"{"items":[{"id":1,"author":"u1"},{"id":2,"author":"u2"},
    {"id":3,"author":"u1"},{"id":4,"author":"u3"},{"id":5,"author":"u4"},{"id":6,"author":null},
    {"id":7,"author":"u5"}]}"#;

fn start(config: &str) -> Driver {
    let route = route(config);
    let request = request(&route, "1", "", None);
    Driver::start(&route, request)
}

#[test]
fn distinct_keys_go_out_in_parallel_chunks_and_a_missing_key_is_reported_per_item() {
    let mut d = start(&feed(""));
    d.ok("posts", POSTS);
    assert_eq!(
        d.open_paths(),
        ["/users?ids=u1,u2", "/users?ids=u3,u4", "/users?ids=u5"],
        "distinct keys, first-seen order, nulls left out, every chunk at once"
    );
    // Answers in any order of elements; u4 is not in its chunk's answer (elements that are not
    // objects answer no key).
    d.ok(
        "authors",
        r#"[{"id":"u2","name":"Bob"},{"id":"u1","name":"Ann"}]"#,
    );
    d.ok(
        "authors",
        r#"[["u4"],{"id":"u3","name":"Cy"},{"id":"u9","name":"stray"},"u4"]"#,
    );
    d.ok("authors", r#"[{"id":"u5","name":"Eve"}]"#);
    let ann = json!({"id": "u1", "name": "Ann"});
    assert_eq!(
        d.body(),
        json!({"posts": {"items": [
            {"id": 1, "author": "u1", "author_detail": ann},
            {"id": 2, "author": "u2", "author_detail": {"id": "u2", "name": "Bob"}},
            {"id": 3, "author": "u1", "author_detail": ann},
            {"id": 4, "author": "u3", "author_detail": {"id": "u3", "name": "Cy"}},
            {"id": 5, "author": "u4"},
            {"id": 6, "author": null},
            {"id": 7, "author": "u5", "author_detail": {"id": "u5", "name": "Eve"}}]},
            "_meta": {"complete": false, "errors": {"authors": {"items": {
                "u4": {"reason": "status", "status": 404}}}}}})
    );
    let timing = d.response().header("server-timing").unwrap();
    assert!(timing.contains(r#"authors;dur="#) && timing.ends_with(r#";desc="status""#));
    let summary = d.gather.summary();
    assert_eq!(summary.calls[1].attempts, 3, "three requests");
    assert_eq!(
        summary.calls[1]
            .results
            .iter()
            .filter(|r| r.is_none())
            .count(),
        4,
        "one success per key answered"
    );
}

#[test]
fn a_failed_chunk_fails_its_keys_and_the_fallback_stands_in_where_there_is_one() {
    let mut d = start(&feed(""));
    d.ok("posts", POSTS);
    d.ok("authors", r#"[{"id":"u1"},{"id":"u2"}]"#);
    d.answer("authors", 503, "{}");
    d.ok("authors", r#"[{"id":"u5"}]"#);
    let body = d.body();
    assert_eq!(body["posts"]["items"][3], json!({"id": 4, "author": "u3"}));
    assert_eq!(
        body["_meta"]["errors"]["authors"]["items"],
        json!({"u3": {"reason": "status", "status": 503},
               "u4": {"reason": "status", "status": 503}})
    );

    let mut d = start(&feed(r#","fallback":{"name":"unknown"}"#));
    d.ok("posts", POSTS);
    d.ok("authors", r#"[{"id":"u1"},{"id":"u2"}]"#);
    d.reset("authors");
    d.ok("authors", r#"[]"#);
    let body = d.body();
    let items = &body["posts"]["items"];
    assert_eq!(items[3]["author_detail"], json!({"name": "unknown"}));
    assert_eq!(items[4]["author_detail"], json!({"name": "unknown"}));
    assert_eq!(
        items[6]["author_detail"],
        json!({"name": "unknown"}),
        "u5 missing"
    );
    assert_eq!(
        body["_meta"],
        json!({"complete": false, "errors": {"authors": {"items": {
                "u3": {"reason": "connect"}, "u4": {"reason": "connect"},
                "u5": {"reason": "status", "status": 404}}}},
               "fallback": ["authors"]})
    );
}

#[test]
fn big_integer_keys_are_sent_and_matched_exactly() {
    let mut d = start(&feed(""));
    d.ok(
        "posts",
        r#"{"items":[{"author":123456789012345678901234567890},{"author":123456789012345678901234567891},
                     {"author":1E+2}]}"#,
    );
    assert_eq!(
        d.open_paths(),
        [
            "/users?ids=123456789012345678901234567890,123456789012345678901234567891",
            "/users?ids=1E%2B2"
        ]
    );
    d.ok(
        "authors",
        r#"[{"id":"123456789012345678901234567890","n":"a string is not the number"},
            {"id":123456789012345678901234567891,"n":1},{"id":123456789012345678901234567890,"n":0}]"#,
    );
    d.ok("authors", r#"[{"id":100,"n":2}]"#);
    let body = d.body();
    let items = &body["posts"]["items"];
    assert_eq!(items[0]["author_detail"]["n"], json!(0));
    assert_eq!(items[1]["author_detail"]["n"], json!(1));
    assert_eq!(items[2]["author_detail"]["n"], json!(2), "1E+2 is 100");
    assert_eq!(body["_meta"], json!({"complete": true}));
    assert!(
        String::from_utf8_lossy(&d.response().body).contains("123456789012345678901234567891"),
        "the digits as the upstream sent them"
    );
}

#[test]
fn more_chunks_than_max_fan_out_fail_the_call_before_anything_is_sent() {
    let mut d = start(&feed(r#","max_fan_out":2"#).replace(r#""max_batch":2"#, r#""max_batch":1"#));
    d.ok("posts", POSTS);
    assert!(d.open.is_empty());
    assert_eq!(
        d.body()["_meta"]["errors"],
        json!({"authors": {"reason": "too_many_items"}})
    );
}

#[test]
fn a_required_batch_join_fails_the_aggregation_on_a_missing_key() {
    let mut d = start(&feed(r#","required":true"#));
    d.ok("posts", POSTS);
    d.ok("authors", r#"[{"id":"u1"}]"#);
    assert_eq!(d.response().status, 404);
    assert_eq!(
        d.body(),
        json!({"error": {"code": "required_call_failed", "call": "authors",
               "reason": "status", "status": 404, "item": "u2"}})
    );
}

#[test]
fn an_answer_that_is_not_an_array_is_invalid_body_for_its_keys() {
    let mut d = start(&feed(""));
    d.ok("posts", r#"{"items":[{"author":"u1"}]}"#);
    d.ok("authors", r#"{"id":"u1"}"#);
    assert_eq!(
        d.body()["_meta"]["errors"]["authors"],
        json!({"items": {"u1": {"reason": "invalid_body"}}})
    );
}

#[test]
fn a_wrapped_answer_is_unwrapped_by_extract_and_keys_may_go_in_a_body() {
    let config = r#"{"routes":[{"name":"feed","match":{"path":"/feed/{id}"},"calls":[
        {"name":"posts","cluster":"posts","path":"/posts"},
        {"name":"authors","cluster":"users","method":"POST","path":"/users/batch",
         "body":{"ids":"{calls.posts.items[*].author}"},"extract":"data",
         "join":{"into":"posts.items","on":"author","match":"user.id","as":"by"}}]}]}"#;
    let mut d = start(config);
    d.ok(
        "posts",
        r#"{"items":[{"author":7},{"author":8},{"author":7}]}"#,
    );
    assert_eq!(d.open.len(), 1, "one request: max_batch is 100 by default");
    assert_eq!(
        d.open[0].request.body.as_deref(),
        Some(&br#"{"ids":[7,8]}"#[..]),
        "the chunk's keys as a JSON array"
    );
    assert_eq!(header(&d.open[0], "content-type"), "application/json");
    d.ok(
        "authors",
        r#"{"data":[{"user":{"id":8},"n":"b"},{"user":{"id":7},"n":"a"}],"next":null}"#,
    );
    assert_eq!(
        d.body()["posts"]["items"],
        json!([{"author": 7, "by": {"user": {"id": 7}, "n": "a"}},
               {"author": 8, "by": {"user": {"id": 8}, "n": "b"}},
               {"author": 7, "by": {"user": {"id": 7}, "n": "a"}}])
    );
}

#[test]
fn no_keys_means_no_request_and_a_skipped_batch_joins_nothing() {
    let mut d = start(&feed(""));
    d.ok("posts", r#"{"items":[{"author":null}],"author_detail":1}"#);
    assert!(d.open.is_empty());
    assert_eq!(
        d.body(),
        json!({"posts": {"items": [{"author": null}], "author_detail": 1},
               "_meta": {"complete": true}})
    );

    let mut d = start(&feed(r#","when":{"present":"query.authors"}"#));
    d.ok(
        "posts",
        r#"{"items":[{"author":"u1","author_detail":"upstream's"}]}"#,
    );
    assert!(d.open.is_empty());
    assert_eq!(
        d.body(),
        json!({"posts": {"items": [{"author": "u1", "author_detail": "upstream's"}]},
               "_meta": {"complete": true, "skipped": ["authors"]}}),
        "elements no result matches keep what the upstream sent"
    );
}
