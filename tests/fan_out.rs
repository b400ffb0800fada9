//! Per-item calls, array placeholders and selective fetching (SPEC §3.4, §3.5, §5), in real Envoy.

mod common;

use common::*;
use serde_json::json;

const POSTS: &str = r#"{"items":[
    {"id":1,"author":"u1","title":"a"},{"id":2,"author":"u2","title":"b"},
    {"id":3,"author":"u1","title":"c"},{"id":4,"author":"u3","title":"d"}]}"#;

/// `/users/<id>` answers `{"id": <id>, "name": "User <id>"}`; `u3` is missing.
fn users() -> Upstream {
    Upstream::start(|r| {
        let id = r.path.trim_start_matches("/users/");
        if id == "u3" {
            Behavior::Reply(Reply::json(404, r#"{"error":"no such user"}"#))
        } else {
            Behavior::Reply(Reply::json(
                200,
                &format!(r#"{{"id":"{id}","name":"User {id}"}}"#),
            ))
        }
    })
}

#[test]
fn per_item_details_are_joined_into_the_list_with_one_call_per_distinct_value() {
    let posts = Upstream::json(POSTS);
    let users = users();
    let config = r#"{"routes":[{"name":"feed","match":{"path":"/feed"},"calls":[
        {"name":"posts","cluster":"posts","path":"/posts"},
        {"name":"authors","cluster":"users","path":"/users/{item}","for_each":"calls.posts.items[*].author",
         "join":{"into":"posts.items","on":"author","as":"author_detail"}}]}]}"#;
    let envoy = Envoy::builder(config)
        .cluster("posts", posts.port())
        .cluster("users", users.port())
        .start();
    let response = envoy.get("/feed");
    assert_eq!(response.status, 200);
    let u1 = json!({"id": "u1", "name": "User u1"});
    assert_eq!(
        response.json(),
        json!({"posts": {"items": [
            {"id": 1, "author": "u1", "title": "a", "author_detail": u1},
            {"id": 2, "author": "u2", "title": "b", "author_detail": {"id": "u2", "name": "User u2"}},
            {"id": 3, "author": "u1", "title": "c", "author_detail": u1},
            {"id": 4, "author": "u3", "title": "d"}]},
            "_meta": {"complete": false, "errors": {"authors": {"items": {"u3": {"reason": "status", "status": 404}}}}}})
    );
    let mut paths: Vec<String> = users.hits().into_iter().map(|h| h.path).collect();
    paths.sort();
    assert_eq!(
        paths,
        ["/users/u1", "/users/u2", "/users/u3"],
        "one upstream hit per distinct author"
    );
    envoy.assert_no_vm_failures();
}

#[test]
fn per_item_results_as_an_array_keep_first_seen_order_and_respect_the_cap() {
    let posts = Upstream::json(POSTS);
    let users = Upstream::start(|r| {
        // The first item answers last: the array still follows item order.
        let delay = if r.path.ends_with("u1") { 150 } else { 0 };
        let id = r.path.trim_start_matches("/users/").to_string();
        Behavior::Reply(Reply::json(200, &format!(r#""{id}""#)).delay_ms(delay))
    });
    let config = r#"{"routes":[
      {"name":"feed","match":{"path":"/feed"},"calls":[
        {"name":"posts","cluster":"posts","path":"/posts"},
        {"name":"authors","cluster":"users","path":"/users/{item}","for_each":"calls.posts.items[*].author"}]},
      {"name":"capped","match":{"path":"/capped"},"calls":[
        {"name":"posts","cluster":"posts","path":"/posts"},
        {"name":"authors","cluster":"users","path":"/users/{item}","for_each":"calls.posts.items[*].id","max_fan_out":3}]}]}"#;
    let envoy = Envoy::builder(config)
        .cluster("posts", posts.port())
        .cluster("users", users.port())
        .start();
    let response = envoy.get("/feed");
    assert_eq!(response.json()["authors"], json!(["u1", "u2", "u3"]));
    response.assert_took(140, 1000, "items run in parallel; the slow one is awaited");

    users.reset_hits();
    let capped = envoy.get("/capped");
    assert_eq!(capped.status, 200);
    assert_eq!(
        capped.json()["_meta"]["errors"]["authors"],
        json!({"reason": "too_many_items"})
    );
    assert_eq!(users.hit_count(), 0, "over the cap nothing is called");
}

#[test]
fn array_placeholders_become_one_comma_joined_encoded_value() {
    let posts = Upstream::json(r#"{"items":[{"author":"u 1"},{"author":"u,2"},{"author":"u3"}]}"#);
    let users = Upstream::json(r#"[{"id":"u1"}]"#);
    let config = r#"{"routes":[{"name":"feed","match":{"path":"/feed"},"calls":[
        {"name":"posts","cluster":"posts","path":"/posts"},
        {"name":"users","cluster":"users","path":"/users?ids={calls.posts.items[*].author}"}]}]}"#;
    let envoy = Envoy::builder(config)
        .cluster("posts", posts.port())
        .cluster("users", users.port())
        .start();
    assert_eq!(envoy.get("/feed").status, 200);
    assert_eq!(users.hits()[0].path, "/users?ids=u%201,u%2C2,u3");
}

#[test]
fn fields_fetch_dependencies_without_emitting_them_and_skip_the_rest() {
    let catalog = Upstream::json(r#"{"id":"p1","seller":"s9"}"#);
    let sellers = Upstream::json(r#"{"name":"Shop"}"#);
    let reviews = Upstream::json(r#"{"stars":5}"#);
    let config = r#"{"routes":[{"name":"page","match":{"path":"/p/{id}"},"calls":[
        {"name":"product","cluster":"catalog","path":"/products/{path.id}","required":true},
        {"name":"seller","cluster":"sellers","path":"/sellers/{calls.product.seller}"},
        {"name":"reviews","cluster":"reviews","path":"/reviews/{path.id}"}]}]}"#;
    let envoy = Envoy::builder(config)
        .cluster("catalog", catalog.port())
        .cluster("sellers", sellers.port())
        .cluster("reviews", reviews.port())
        .start();
    let response = envoy.get("/p/1?fields=seller");
    assert_eq!(response.status, 200);
    assert_eq!(
        response.json(),
        json!({"seller": {"name": "Shop"}, "_meta": {"complete": true}})
    );
    assert_eq!(response.header("x-aggregation-complete"), Some("true"));
    assert_eq!(catalog.hit_count(), 1, "the dependency is fetched");
    assert_eq!(
        reviews.hit_count(),
        0,
        "what was not asked for is not fetched"
    );

    let unknown = envoy.get("/p/1?fields=seller,price");
    assert_eq!(unknown.status, 400);
    assert_eq!(
        unknown.json(),
        json!({"error": {"code": "unknown_field", "field": "price", "valid": ["product", "seller", "reviews"]}})
    );
    assert_eq!(reviews.hit_count(), 0);
    assert_eq!(
        envoy.get("/p/1").json()["reviews"],
        json!({"stars": 5}),
        "without fields, everything"
    );
}

#[test]
fn fields_param_can_be_renamed_or_disabled() {
    let a = Upstream::json("1");
    let b = Upstream::json("2");
    let config = r#"{"routes":[
        {"name":"renamed","match":{"path":"/r"},"fields_param":"only","calls":[{"name":"a","cluster":"a","path":"/"},{"name":"b","cluster":"b","path":"/"}]},
        {"name":"off","match":{"path":"/off"},"fields_param":null,"calls":[{"name":"a","cluster":"a","path":"/"},{"name":"b","cluster":"b","path":"/"}]}]}"#;
    let envoy = Envoy::builder(config)
        .cluster("a", a.port())
        .cluster("b", b.port())
        .start();
    assert_eq!(
        envoy.get("/r?only=b").json(),
        json!({"b": 2, "_meta": {"complete": true}})
    );
    assert_eq!(
        envoy.get("/r?fields=b").json()["a"],
        1,
        "the default name no longer selects"
    );
    assert_eq!(
        envoy.get("/off?fields=nope").json()["a"],
        1,
        "disabled: ignored"
    );
}
