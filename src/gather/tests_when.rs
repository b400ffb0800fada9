//! Conditional calls (SPEC §3.6) on the fake host (`driver.rs`): skipped calls and their
//! dependents, required calls skipped, conditions reading failed dependencies, the equality
//! rules, and `wait_for` counting only calls not skipped.

use super::driver::{request_with_headers, route, Driver};
use crate::testing::page_with;
use serde_json::json;

/// `product` (required) and three conditional calls: `reviews` for physical products (with a
/// fallback that must not stand in when skipped), `authors` reading `reviews` (skipped with
/// it), and `profile` only for signed-in users.
const PAGE: &str = r#"{"routes":[{"name":"page","match":{"path":"/p/{id}"},"deadline_ms":300,"calls":[
    {"name":"product","cluster":"catalog","path":"/products/{path.id}","required":true},
    {"name":"reviews","cluster":"reviews","path":"/reviews/{path.id}","fallback":{"items":[]},
     "when":{"equals":["calls.product.kind","physical"]}},
    {"name":"authors","cluster":"users","path":"/users/{calls.reviews.top}"},
    {"name":"profile","cluster":"users","path":"/me","required":true,
     "when":{"present":"header.x-user-id"}}]}]}"#;

fn start(config: &str, query: &str, headers: &[(&str, &str)]) -> Driver {
    let route = route(config);
    let request = request_with_headers(&route, "42", query, headers, None);
    Driver::start(&route, request)
}

#[test]
fn a_false_condition_skips_the_call_and_every_call_that_depends_on_it() {
    let mut d = start(PAGE, "", &[]);
    assert_eq!(
        d.open_paths(),
        ["/products/42"],
        "profile is skipped at once: no x-user-id"
    );
    d.ok("product", r#"{"kind":"digital"}"#);
    assert!(
        d.open.is_empty(),
        "reviews and authors are never dispatched"
    );
    assert_eq!(
        d.response().status,
        200,
        "a skipped required call fails nothing"
    );
    assert_eq!(
        d.body(),
        json!({"product": {"kind": "digital"},
               "_meta": {"complete": true, "skipped": ["reviews", "authors", "profile"]}}),
        "absent, fallback unused, listed in configuration order"
    );
    assert_eq!(d.response().header("x-aggregation-complete"), Some("true"));
    let timing = d.response().header("server-timing").unwrap();
    assert!(
        timing.ends_with(
            r#", reviews;desc="skipped", authors;desc="skipped", profile;desc="skipped""#
        ),
        "{timing}"
    );
    let summary = d.gather.summary();
    let skipped: Vec<bool> = summary.calls.iter().map(|c| c.skipped).collect();
    assert_eq!(skipped, [false, true, true, true]);
    assert!(summary
        .calls
        .iter()
        .all(|c| c.results.is_empty() || !c.skipped));
}

#[test]
fn a_true_condition_lets_the_call_run_as_usual() {
    let mut d = start(PAGE, "", &[("x-user-id", "u7")]);
    assert_eq!(d.open_paths(), ["/products/42", "/me"]);
    d.ok("profile", r#"{"name":"Ann"}"#);
    d.ok("product", r#"{"kind":"physical"}"#);
    assert_eq!(d.open_paths(), ["/reviews/42"]);
    d.ok("reviews", r#"{"top":"u1"}"#);
    d.ok("authors", r#"{"id":"u1"}"#);
    assert_eq!(
        d.body(),
        json!({"product": {"kind": "physical"}, "reviews": {"top": "u1"},
               "authors": {"id": "u1"}, "profile": {"name": "Ann"},
               "_meta": {"complete": true}})
    );
}

#[test]
fn a_condition_reading_a_failed_dependency_fails_with_dependency_failed() {
    let config = r#"{"routes":[{"name":"page","match":{"path":"/p/{id}"},"calls":[
        {"name":"product","cluster":"catalog","path":"/products/{path.id}"},
        {"name":"reviews","cluster":"reviews","path":"/reviews/{path.id}",
         "when":{"equals":["calls.product.kind","physical"]}}]}]}"#;
    let mut d = start(config, "", &[]);
    d.answer("product", 503, "{}");
    assert!(d.open.is_empty());
    assert_eq!(
        d.body()["_meta"],
        json!({"complete": false, "errors": {
            "product": {"reason": "status", "status": 503},
            "reviews": {"reason": "dependency_failed", "dependency": "product"}}})
    );

    // With a fallback, the condition reads the fallback (SPEC §3.2).
    let with_fallback = config.replace(
        r#""path":"/products/{path.id}""#,
        r#""path":"/products/{path.id}","fallback":{"kind":"physical"}"#,
    );
    let mut d = start(&with_fallback, "", &[]);
    d.answer("product", 503, "{}");
    assert_eq!(d.open_paths(), ["/reviews/42"], "the fallback is physical");
    d.ok("reviews", "[]");
    assert_eq!(
        d.body()["_meta"],
        json!({"complete": false, "errors": {"product": {"reason": "status", "status": 503}},
               "fallback": ["product"]})
    );
}

#[test]
fn a_skipped_dependency_wins_over_a_failed_one() {
    let config = r#"{"routes":[{"name":"page","match":{"path":"/p/{id}"},"calls":[
        {"name":"a","cluster":"c","path":"/a"},
        {"name":"b","cluster":"c","path":"/b","when":{"present":"query.b"}},
        {"name":"c","cluster":"c","path":"/c","required":true,"after":["a","b"]}]}]}"#;
    let mut d = start(config, "", &[]);
    d.answer("a", 500, "{}");
    assert!(d.open.is_empty());
    assert_eq!(d.response().status, 200, "c is skipped, not failed");
    assert_eq!(
        d.body()["_meta"],
        json!({"complete": false, "errors": {"a": {"reason": "status", "status": 500}},
               "skipped": ["b", "c"]})
    );
}

/// One call `c` whose condition is `when`; the rest of the route is `product`.
fn conditional(when: &str) -> String {
    page_with(&format!(
        r#"{{"name":"product","cluster":"catalog","path":"/products/{{path.id}}"}},
           {{"name":"c","cluster":"c","path":"/c","when":{when}}}"#
    ))
}

/// Whether `c` ran, for a request with `query` and `product` answering `body`.
fn runs(when: &str, query: &str, body: &str) -> bool {
    let mut d = start(&conditional(when), query, &[]);
    d.ok("product", body);
    let ran = !d.open_of("c").is_empty();
    if ran {
        d.ok("c", "1");
    }
    assert_eq!(d.response().status, 200);
    ran
}

#[test]
fn client_input_compares_as_text_and_call_values_as_json() {
    let page_is_2 = r#"{"equals":["query.page",2]}"#;
    assert!(
        runs(page_is_2, "page=2", "{}"),
        "a number literal by its JSON text"
    );
    assert!(!runs(page_is_2, "page=02", "{}"));
    assert!(!runs(page_is_2, "page=2.0", "{}"));
    assert!(!runs(page_is_2, "", "{}"), "absent equals nothing");
    assert!(runs(
        r#"{"equals":["query.debug",true]}"#,
        "debug=true",
        "{}"
    ));
    assert!(
        runs(r#"{"equals":["query.q","a b"]}"#, "q=a+b", "{}"),
        "decoded once"
    );

    let big = r#"{"equals":["calls.product.id",123456789012345678901234567890]}"#;
    assert!(runs(big, "", r#"{"id":123456789012345678901234567890}"#));
    assert!(
        !runs(big, "", r#"{"id":123456789012345678901234567891}"#),
        "exact"
    );
    assert!(
        !runs(big, "", r#"{"id":"123456789012345678901234567890"}"#),
        "7 is not \"7\""
    );
    assert!(runs(
        r#"{"equals":["calls.product.n",7]}"#,
        "",
        r#"{"n":7.0}"#
    ));

    let include = r#"{"in":["query.include",["reviews","all"]]}"#;
    assert!(runs(include, "include=all", "{}"));
    assert!(!runs(include, "include=none", "{}"));

    let present = r#"{"present":"calls.product.tags"}"#;
    assert!(runs(present, "", r#"{"tags":["a"]}"#));
    for absent in [r#"{"tags":[]}"#, r#"{"tags":""}"#, r#"{"tags":null}"#, "{}"] {
        assert!(!runs(present, "", absent), "{absent}");
    }
    assert!(
        !runs(r#"{"present":"query.q"}"#, "q=", "{}"),
        "empty is absent"
    );
}

#[test]
fn all_any_and_not_combine_conditions() {
    let when = r#"{"all":[{"present":"query.a"},
                          {"any":[{"equals":["calls.product.kind","x"]},{"not":{"present":"query.b"}}]}]}"#;
    assert!(runs(when, "a=1", "{}"));
    assert!(!runs(when, "a=1&b=1", "{}"));
    assert!(runs(when, "a=1&b=1", r#"{"kind":"x"}"#));
    assert!(!runs(when, "", r#"{"kind":"x"}"#));
}

#[test]
fn a_condition_on_invalid_client_input_fails_the_call_with_invalid_input() {
    let config = conditional(r#"{"present":"query.q"}"#)
        .replace(r#""path":"/c","#, r#""path":"/c","required":true,"#);
    let d = start(&config, "q=%FF", &[]);
    assert_eq!(d.response().status, 400);
    assert_eq!(
        d.body(),
        json!({"error": {"code": "required_call_failed", "call": "c",
               "reason": "invalid_input", "input": "query.q"}})
    );
}

#[test]
fn wait_for_counts_only_calls_not_skipped() {
    // Five calls, two skipped: a quorum is 2 of the 3 left (of 5 it would be 3: all of them).
    let config = r#"{"routes":[{"name":"page","match":{"path":"/p/{id}"},"wait_for":"quorum","calls":[
        {"name":"a","cluster":"c","path":"/a","when":{"present":"query.a"}},
        {"name":"b","cluster":"c","path":"/b","required":true,"when":{"present":"query.b"}},
        {"name":"c","cluster":"c","path":"/c"},
        {"name":"d","cluster":"c","path":"/d"},
        {"name":"e","cluster":"c","path":"/e"}]}]}"#;
    let mut d = start(config, "", &[]);
    assert_eq!(d.open_paths(), ["/c", "/d", "/e"]);
    d.ok("c", "1");
    assert!(!d.gather.is_answered());
    d.ok("d", "2");
    assert_eq!(
        d.body(),
        json!({"c": 1, "d": 2, "_meta": {"complete": false, "skipped": ["a", "b"],
               "not_waited_for": ["e"]}}),
        "a skipped required call is not waited for"
    );
}
