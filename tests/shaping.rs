//! Response shaping (SPEC §5) in real Envoy: per-call transforms, layouts, derived fields,
//! response headers and client variants.

mod common;

use common::*;
use serde_json::json;

const PRODUCT: &str = r#"{"data":{"id":7,"name":"Lamp","internal":{"cost":3,"supplier":"acme"},
    "price":{"amount":9.5,"currency":"EUR"},"images":[{"url":"a.png","w":100},{"url":"b.png","w":200}]},
    "request_id":"r-1"}"#;

#[test]
fn extract_omit_rename_and_as_apply_in_order() {
    let catalog = Upstream::json(PRODUCT);
    let config = r#"{"routes":[{"name":"r","match":{"path":"/p"},"calls":[
        {"name":"product","cluster":"catalog","path":"/","as":"item",
         "extract":"data","omit":["internal","images[*].w"],"rename":{"price.amount":"price_eur","name":"title"}}]}]}"#;
    let envoy = Envoy::builder(config)
        .cluster("catalog", catalog.port())
        .start();
    let response = envoy.get("/p");
    assert_eq!(response.status, 200);
    assert_eq!(
        response.json(),
        json!({"item": {"id": 7, "title": "Lamp", "price": {"currency": "EUR"}, "price_eur": 9.5,
                        "images": [{"url": "a.png"}, {"url": "b.png"}]},
               "_meta": {"complete": true}})
    );
    envoy.assert_no_vm_failures();
}

#[test]
fn select_keeps_only_the_named_paths_and_their_parents() {
    let catalog = Upstream::json(PRODUCT);
    let config = r#"{"routes":[{"name":"r","match":{"path":"/p"},"calls":[
        {"name":"product","cluster":"catalog","path":"/","select":["data.name","data.price.amount","data.images[*].url","data.nope"]}]}]}"#;
    let envoy = Envoy::builder(config)
        .cluster("catalog", catalog.port())
        .start();
    assert_eq!(
        envoy.get("/p").json()["product"],
        json!({"data": {"name": "Lamp", "price": {"amount": 9.5}, "images": [{"url": "a.png"}, {"url": "b.png"}]}})
    );
}

#[test]
fn merge_deep_merges_in_configuration_order_whatever_answers_first() {
    let profile = Upstream::json_delayed(
        r#"{"user":{"id":1,"name":"Ann"},"tags":["a"],"tier":"silver"}"#,
        120,
    );
    let prefs = Upstream::json(r#"{"user":{"theme":"dark"},"tags":["b","c"],"tier":"gold"}"#);
    let scalar = Upstream::json("42");
    let counts = Upstream::json("7");
    let config = r#"{"routes":[{"name":"me","match":{"path":"/me"},"response":{"layout":"merge"},"calls":[
        {"name":"profile","cluster":"profile","path":"/"},
        {"name":"prefs","cluster":"prefs","path":"/"},
        {"name":"scalar","cluster":"scalar","path":"/"},
        {"name":"counts","cluster":"counts","path":"/","as":"unread"}]}]}"#;
    let envoy = Envoy::builder(config)
        .cluster("profile", profile.port())
        .cluster("prefs", prefs.port())
        .cluster("scalar", scalar.port())
        .cluster("counts", counts.port())
        .start();
    let response = envoy.get("/me");
    assert_eq!(response.status, 200);
    assert_eq!(
        response.json(),
        json!({"user": {"id": 1, "name": "Ann", "theme": "dark"}, "tags": ["a", "b", "c"], "tier": "gold", "unread": 7,
               "_meta": {"complete": false, "errors": {"scalar": {"reason": "invalid_body"}}}})
    );
    assert_eq!(
        response.header("x-aggregation-complete"),
        Some("false"),
        "a body that does not fit is reported"
    );
}

#[test]
fn concat_sorts_and_limits_search_shards() {
    let shard = |hits: &str| Upstream::json(hits);
    let a = shard(r#"[{"id":"a1","score":0.5},{"id":"a2","score":0.9}]"#);
    let b = shard(r#"[{"id":"b1","score":0.7},{"id":"b2"}]"#);
    let c = shard(r#"{"not":"an array"}"#);
    let config = r#"{"routes":[{"name":"search","match":{"path":"/search"},
        "response":{"layout":"concat","sort_by":"score","order":"desc","limit":3},"calls":[
        {"name":"a","cluster":"a","path":"/"},{"name":"b","cluster":"b","path":"/"},{"name":"c","cluster":"c","path":"/"}]}]}"#;
    let envoy = Envoy::builder(config)
        .cluster("a", a.port())
        .cluster("b", b.port())
        .cluster("c", c.port())
        .start();
    let response = envoy.get("/search");
    assert_eq!(response.status, 200);
    assert_eq!(
        response.json(),
        json!([{"id": "a2", "score": 0.9}, {"id": "b1", "score": 0.7}, {"id": "a1", "score": 0.5}])
    );
    assert_eq!(
        response.header("x-aggregation-complete"),
        Some("false"),
        "shard c did not fit"
    );
}

#[test]
fn derived_fields_count_sum_and_max_over_every_element() {
    let reviews = Upstream::json(r#"{"items":[{"stars":4},{"stars":5},{"stars":2}]}"#);
    let config = r#"{"routes":[{"name":"r","match":{"path":"/p"},"response":{"derive":{
        "summary.review_count":{"count":"reviews.items"},
        "summary.stars_total":{"sum":"reviews.items[*].stars"},
        "summary.best":{"max":"reviews.items[*].stars"},
        "summary.missing":{"max":"nope[*].x"}}},"calls":[
        {"name":"reviews","cluster":"reviews","path":"/"}]}]}"#;
    let envoy = Envoy::builder(config)
        .cluster("reviews", reviews.port())
        .start();
    assert_eq!(
        envoy.get("/p").json(),
        json!({"reviews": {"items": [{"stars": 4}, {"stars": 5}, {"stars": 2}]},
               "summary": {"review_count": 3, "stars_total": 11, "best": 5, "missing": null},
               "_meta": {"complete": true}})
    );
}

#[test]
fn every_set_cookie_is_copied_and_nothing_else_leaks() {
    let auth = Upstream::start(|_| {
        Behavior::Reply(
            Reply::json(200, r#"{"user":"ann"}"#)
                .header("set-cookie", "session=abc; HttpOnly")
                .header("set-cookie", "theme=dark")
                .header("x-internal-trace", "node-7")
                .header("server", "secret-app/1.2"),
        )
    });
    let other = Upstream::start(|_| {
        Behavior::Reply(Reply::json(200, "{}").header("set-cookie", "other=1"))
    });
    let config = r#"{"routes":[{"name":"r","match":{"path":"/login"},"response":{
        "headers":{"x-api-version":"2","cache-control":"max-age=60"},
        "headers_from":[{"call":"auth","name":"Set-Cookie"}]},"calls":[
        {"name":"auth","cluster":"auth","path":"/"},{"name":"other","cluster":"other","path":"/"}]}]}"#;
    let envoy = Envoy::builder(config)
        .cluster("auth", auth.port())
        .cluster("other", other.port())
        .start();
    let response = envoy.get("/login");
    assert_eq!(response.status, 200);
    assert_eq!(
        response.header_all("set-cookie"),
        ["session=abc; HttpOnly", "theme=dark"]
    );
    assert_eq!(response.header("x-internal-trace"), None);
    assert_ne!(response.header("server"), Some("secret-app/1.2"));
    assert_eq!(response.header("x-api-version"), Some("2"));
    assert_eq!(response.header("cache-control"), Some("max-age=60"));
}

#[test]
fn an_incomplete_answer_is_never_cacheable() {
    let broken = Upstream::start(|_| Behavior::Reply(Reply::json(500, "{}")));
    let config = r#"{"routes":[{"name":"r","match":{"path":"/x"},"response":{"headers":{"cache-control":"max-age=60"}},
        "calls":[{"name":"a","cluster":"a","path":"/"}]}]}"#;
    let envoy = Envoy::builder(config).cluster("a", broken.port()).start();
    assert_eq!(envoy.get("/x").header_all("cache-control"), ["no-store"]);
}

#[test]
fn mobile_and_web_clients_get_different_shapes_from_the_same_services() {
    let catalog = Upstream::json(PRODUCT);
    let reviews =
        Upstream::json(r#"{"items":[{"stars":4,"text":"ok"},{"stars":5,"text":"great"}]}"#);
    let config = r#"{"routes":[
      {"name":"product-mobile","match":{"path":"/api/products/{id}","headers":{"x-client":"mobile"}},
       "response":{"layout":"merge","derive":{"review_count":{"count":"reviews"}},"meta":null},"calls":[
         {"name":"product","cluster":"catalog","path":"/p/{path.id}","extract":"data","select":["name","price.amount"],"rename":{"price.amount":"price"}},
         {"name":"reviews","cluster":"reviews","path":"/r/{path.id}","extract":"items","as":"reviews"}]},
      {"name":"product-web","match":{"path":"/api/products/{id}"},"calls":[
         {"name":"product","cluster":"catalog","path":"/p/{path.id}","extract":"data"},
         {"name":"reviews","cluster":"reviews","path":"/r/{path.id}"}]}]}"#;
    let envoy = Envoy::builder(config)
        .cluster("catalog", catalog.port())
        .cluster("reviews", reviews.port())
        .start();
    let mobile = envoy.request("GET", "/api/products/7", &[("x-client", "mobile")], b"");
    assert_eq!(
        mobile.json(),
        json!({"name": "Lamp", "price": 9.5, "reviews": [{"stars": 4, "text": "ok"}, {"stars": 5, "text": "great"}], "review_count": 2})
    );
    let web = envoy.get("/api/products/7");
    assert_eq!(web.json()["product"]["internal"]["supplier"], "acme");
    assert_eq!(web.json()["reviews"]["items"][1]["text"], "great");
    assert_eq!(catalog.hit_count(), 2);
}

#[test]
fn shaping_errors_are_refused_at_load() {
    let refused = |config: &str, expected: &str| {
        let line = Envoy::builder(config).rejection();
        assert!(line.contains(expected), "expected {expected} in:\n{line}");
    };
    refused(
        r#"{"routes":[{"name":"r","match":{"path":"/"},"response":{"layout":"merge","sort_by":"x"},"calls":[{"name":"a","cluster":"c","path":"/"}]}]}"#,
        r#"route "r" key "response.sort_by": only applies to the concat layout"#,
    );
    refused(
        r#"{"routes":[{"name":"r","match":{"path":"/"},"calls":[{"name":"a","cluster":"c","path":"/","as":"b"},{"name":"b","cluster":"c","path":"/"}]}]}"#,
        r#"route "r" call "b" key "as": output key "b" is already used by call "a""#,
    );
    refused(
        r#"{"routes":[{"name":"r","match":{"path":"/"},"response":{"derive":{"n":{"avg":"x"}}},"calls":[{"name":"a","cluster":"c","path":"/"}]}]}"#,
        r#"key "response.derive.n": unknown operation "avg""#,
    );
    refused(
        r#"{"routes":[{"name":"r","match":{"path":"/"},"response":{"headers_from":[{"call":"a","name":"content-type"}]},"calls":[{"name":"a","cluster":"c","path":"/"}]}]}"#,
        r#"key "response.headers_from": "content-type" is set by the filter itself"#,
    );
}
