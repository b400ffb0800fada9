//! Conditional calls (`when`, SPEC §3.6) in real Envoy: skipped calls never reach their
//! upstream, are absent (their fallback unused) and reported in `_meta.skipped`,
//! `server-timing` and the stats; their dependents are skipped too; a skipped required call
//! fails nothing; a condition reading a failed dependency follows SPEC §3.2; the equality rules;
//! `wait_for` counts only calls not skipped; wrong conditions are refused at load.

mod common;

use common::*;
use gateway_aggregator::testing::page_with;
use serde_json::json;
use std::thread;
use std::time::Duration;

/// `/products/1` is digital, `/products/2` physical, `/products/3` is down.
fn catalog() -> Upstream {
    Upstream::start(|r| match r.path.as_str() {
        "/products/1" => Behavior::Reply(Reply::json(200, r#"{"id":1,"kind":"digital"}"#)),
        "/products/2" => Behavior::Reply(Reply::json(200, r#"{"id":2,"kind":"physical"}"#)),
        _ => Behavior::Reply(Reply::json(503, "{}")),
    })
}

/// The calls of the route `page` at `/p/{id}`.
const CALLS: &str = r#"
    {"name":"product","cluster":"catalog","path":"/products/{path.id}","required":true},
    {"name":"shipping","cluster":"shipping","path":"/shipping/{path.id}","fallback":{"eta":null},
     "when":{"equals":["calls.product.kind","physical"]}},
    {"name":"carrier","cluster":"shipping","path":"/carriers/{calls.shipping.carrier}"},
    {"name":"profile","cluster":"users","path":"/users/{header.x-user-id}","required":true,
     "when":{"present":"header.x-user-id"}},
    {"name":"reviews","cluster":"reviews","path":"/reviews/{path.id}",
     "when":{"in":["query.include",["reviews","all"]]}}"#;

#[test]
fn skipped_calls_and_their_dependents_never_reach_upstreams_and_are_reported() {
    let catalog = catalog();
    let shipping = Upstream::start(|r| {
        let body = if r.path.starts_with("/shipping/") {
            r#"{"carrier":"dhl"}"#
        } else {
            r#"{"name":"DHL"}"#
        };
        Behavior::Reply(Reply::json(200, body))
    });
    let users = Upstream::json(r#"{"name":"Ann"}"#);
    let reviews = Upstream::json(r#"{"stars":5}"#);
    let envoy = Envoy::builder(&page_with(CALLS))
        .cluster("catalog", catalog.port())
        .cluster("shipping", shipping.port())
        .cluster("users", users.port())
        .cluster("reviews", reviews.port())
        .start();

    let digital = envoy.get("/p/1?include=price");
    assert_eq!(digital.status, 200, "a skipped required call fails nothing");
    assert_eq!(
        digital.json(),
        json!({"product": {"id": 1, "kind": "digital"},
               "_meta": {"complete": true, "skipped": ["shipping", "carrier", "profile", "reviews"]}}),
        "absent, the fallback unused, listed in configuration order"
    );
    assert_eq!(digital.header("x-aggregation-complete"), Some("true"));
    assert_eq!(digital.header("cache-control"), None);
    let timing = digital.header("server-timing").unwrap();
    for call in ["shipping", "carrier", "profile", "reviews"] {
        assert!(
            timing.contains(&format!(r#"{call};desc="skipped""#)),
            "{timing}"
        );
    }
    assert_eq!(shipping.hit_count(), 0, "the dependent is skipped too");
    assert_eq!(users.hit_count() + reviews.hit_count(), 0);

    let physical = envoy.request("GET", "/p/2?include=all", &[("x-user-id", "u7")], b"");
    assert_eq!(
        physical.json(),
        json!({"product": {"id": 2, "kind": "physical"}, "shipping": {"carrier": "dhl"},
               "carrier": {"name": "DHL"}, "profile": {"name": "Ann"}, "reviews": {"stars": 5},
               "_meta": {"complete": true}})
    );
    assert_eq!(users.hits()[0].path, "/users/u7");

    // Counters reach Envoy once a second.
    thread::sleep(Duration::from_millis(1300));
    for (name, count) in [
        ("route.page.complete", 2),
        ("route.page.call.shipping.skipped", 1),
        ("route.page.call.shipping.success", 1),
        ("route.page.call.shipping.fallback", 0),
        ("route.page.call.carrier.skipped", 1),
        ("route.page.call.profile.skipped", 1),
        ("route.page.call.reviews.skipped", 1),
        ("route.page.call.product.skipped", 0),
    ] {
        assert_eq!(envoy.filter_stat(name), count, "{name}");
    }
    envoy.assert_no_vm_failures();
}

#[test]
fn a_condition_reading_a_failed_dependency_fails_or_reads_its_fallback() {
    let catalog = catalog();
    let shipping = Upstream::json(r#"{"carrier":"dhl"}"#);
    let config = r#"{"routes":[
      {"name":"plain","match":{"path":"/plain/{id}"},"calls":[
        {"name":"product","cluster":"catalog","path":"/products/{path.id}"},
        {"name":"shipping","cluster":"shipping","path":"/shipping/{path.id}",
         "when":{"equals":["calls.product.kind","physical"]}}]},
      {"name":"fallback","match":{"path":"/fallback/{id}"},"calls":[
        {"name":"product","cluster":"catalog","path":"/products/{path.id}","fallback":{"kind":"physical"}},
        {"name":"shipping","cluster":"shipping","path":"/shipping/{path.id}",
         "when":{"equals":["calls.product.kind","physical"]}}]}]}"#;
    let envoy = Envoy::builder(config)
        .cluster("catalog", catalog.port())
        .cluster("shipping", shipping.port())
        .start();
    let failed = envoy.get("/plain/3");
    assert_eq!(failed.status, 200);
    assert_eq!(
        failed.json(),
        json!({"_meta": {"complete": false, "errors": {
            "product": {"reason": "status", "status": 503},
            "shipping": {"reason": "dependency_failed", "dependency": "product"}}}})
    );
    assert_eq!(shipping.hit_count(), 0);
    let fell_back = envoy.get("/fallback/3");
    assert_eq!(
        fell_back.json(),
        json!({"product": {"kind": "physical"}, "shipping": {"carrier": "dhl"},
               "_meta": {"complete": false,
                         "errors": {"product": {"reason": "status", "status": 503}},
                         "fallback": ["product"]}}),
        "the condition reads the fallback"
    );
    assert_eq!(shipping.hit_count(), 1);
}

#[test]
fn client_input_compares_as_text_and_call_values_by_exact_json_equality() {
    let catalog = Upstream::json(r#"{"id":123456789012345678901234567890,"code":7}"#);
    let svc = Upstream::json("true");
    let config = r#"{"routes":[{"name":"q","match":{"path":"/q"},"calls":[
        {"name":"product","cluster":"catalog","path":"/p"},
        {"name":"paged","cluster":"svc","path":"/paged","when":{"equals":["query.page",2]}},
        {"name":"exact","cluster":"svc","path":"/exact",
         "when":{"equals":["calls.product.id",123456789012345678901234567890]}},
        {"name":"near","cluster":"svc","path":"/near",
         "when":{"equals":["calls.product.id",123456789012345678901234567891]}},
        {"name":"text","cluster":"svc","path":"/text","when":{"equals":["calls.product.code","7"]}},
        {"name":"number","cluster":"svc","path":"/number","when":{"equals":["calls.product.code",7.0]}}]}]}"#;
    let envoy = Envoy::builder(config)
        .cluster("catalog", catalog.port())
        .cluster("svc", svc.port())
        .start();
    let ran = |query: &str| -> Vec<String> {
        let body = envoy.get(&format!("/q{query}")).json();
        let object = body.as_object().unwrap();
        object
            .keys()
            .filter(|k| *k != "product" && *k != "_meta")
            .cloned()
            .collect()
    };
    assert_eq!(
        ran("?page=2"),
        ["paged", "exact", "number"],
        "a number literal matches the query by its JSON text; call values by exact value"
    );
    assert_eq!(ran("?page=02"), ["exact", "number"]);
    assert_eq!(ran("?page=2.0"), ["exact", "number"]);
    let mut paths: Vec<String> = svc.hits().into_iter().map(|h| h.path).collect();
    paths.sort();
    paths.dedup();
    assert_eq!(paths, ["/exact", "/number", "/paged"], "7 is not \"7\"");
}

#[test]
fn wait_for_counts_only_the_calls_not_skipped() {
    let fast = Upstream::json("1");
    let slow = Upstream::json_delayed("2", 1500);
    let config = r#"{"routes":[{"name":"page","match":{"path":"/p"},"wait_for":"quorum","calls":[
        {"name":"a","cluster":"fast","path":"/a","when":{"present":"query.a"}},
        {"name":"b","cluster":"fast","path":"/b","required":true,"when":{"present":"query.b"}},
        {"name":"c","cluster":"fast","path":"/c"},
        {"name":"d","cluster":"fast","path":"/d"},
        {"name":"e","cluster":"slow","path":"/e"}]}]}"#;
    let envoy = Envoy::builder(config)
        .cluster("fast", fast.port())
        .cluster("slow", slow.port())
        .start();
    let response = envoy.get("/p");
    assert_eq!(
        response.json(),
        json!({"c": 1, "d": 1, "_meta": {"complete": false, "skipped": ["a", "b"],
               "not_waited_for": ["e"]}}),
        "a quorum of the three calls not skipped is two"
    );
    response.assert_took(0, 1000, "the slow call is not waited for");
}

#[test]
fn a_wrong_condition_is_refused_at_load_in_one_line() {
    for (when, expected) in [
        (
            r#"{"equals":["calls.prodct.kind","physical"]}"#,
            r#"route "page" call "shipping" key "when.equals": reference "calls.prodct.kind": the route has no call named "prodct" (did you mean "product"?)"#,
        ),
        (
            r#"{"all":[{"presnt":"header.x-user-id"}]}"#,
            r#"route "page" call "shipping" key "when.all[0].presnt": unknown key (did you mean "present"?)"#,
        ),
    ] {
        let config = page_with(&format!(
            r#"{{"name":"product","cluster":"c","path":"/products/{{path.id}}"}},
               {{"name":"shipping","cluster":"c","path":"/s","when":{when}}}"#
        ));
        let line = Envoy::builder(&config)
            .cluster("c", closed_port())
            .rejection();
        assert!(line.contains(expected), "{line}\nexpected: {expected}");
    }
}
