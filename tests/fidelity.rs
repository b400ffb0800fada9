//! Faithful data (SPEC §4, issue 12) in real Envoy: a JSON value that passes through the filter
//! keeps its meaning and its spelling on every path — numbers keep the digits the upstream sent
//! (a 30-digit id stays exact, `1.10` stays `1.10`, `1E+2` stays `1E+2`) and objects keep their
//! keys in the order they arrived. The assertions compare the bytes the client (or an
//! upstream) receives, since a parsed comparison would not see a reordered key.

mod common;

use common::*;
use gateway_aggregator::testing::{config, route, RouteJson};
use serde_json::json;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

/// The body of the issue: numbers a float changes, and keys out of alphabetical order.
const NUM: &str = r#"{"data":{"id":123456789012345678901234567890,"snow":9007199254740993,"neg":-9223372036854775809,"price":1.10,"sci":1E+2,"deep":{"n":18446744073709551616},"z":1,"a":2}}"#;
/// `NUM`'s `data`, as the client must see it.
const DATA: &str = r#"{"id":123456789012345678901234567890,"snow":9007199254740993,"neg":-9223372036854775809,"price":1.10,"sci":1E+2,"deep":{"n":18446744073709551616},"z":1,"a":2}"#;

/// A route named `name` at `/<name>`.
fn at(name: &str) -> RouteJson {
    route(name, &format!("/{name}"))
}

#[test]
fn extract_and_merge_answer_the_upstream_numbers_and_key_order() {
    let num = Upstream::json(NUM);
    let extract = r#"{"name":"num","cluster":"num","path":"/n","extract":"data"}"#;
    let envoy = Envoy::builder(&config([
        &at("nested").calls(extract),
        &at("merge")
            .key("response", json!({"layout": "merge"}))
            .calls(&format!(
                r#"{extract},{{"name":"more","cluster":"num","path":"/m","extract":"data.deep"}}"#
            )),
        &at("spliced").calls(r#"{"name":"num","cluster":"num","path":"/n"}"#),
    ]))
    .cluster("num", num.port())
    .start();

    let nested = envoy.get("/nested");
    assert_eq!(nested.status, 200);
    assert_eq!(
        nested.text(),
        format!(r#"{{"num":{DATA},"_meta":{{"complete":true}}}}"#)
    );
    let merged = envoy.get("/merge");
    assert_eq!(
        merged.text(),
        r#"{"id":123456789012345678901234567890,"snow":9007199254740993,"neg":-9223372036854775809,"price":1.10,"sci":1E+2,"deep":{"n":18446744073709551616},"z":1,"a":2,"n":18446744073709551616,"_meta":{"complete":true}}"#,
        "merge keeps arrival order; a later call's new key comes last"
    );
    assert_eq!(
        envoy.get("/spliced").text(),
        format!(r#"{{"num":{NUM},"_meta":{{"complete":true}}}}"#),
        "the splice path, byte for byte"
    );
    envoy.assert_no_vm_failures();
}

#[test]
fn select_omit_rename_and_as_keep_numbers_and_key_order() {
    let num = Upstream::json(NUM);
    let select = at("select").calls(
        r#"{"name":"num","cluster":"num","path":"/n","extract":"data","select":["a","deep.n","sci","id"]}"#,
    );
    let omit = at("omit").calls(
        r#"{"name":"num","cluster":"num","path":"/n","as":"item","omit":["data.snow","data.deep"],"rename":{"data.price":"data.amount","data.a":"first_a"}}"#,
    );
    let envoy = Envoy::builder(&config([&select, &omit]))
        .cluster("num", num.port())
        .start();
    assert_eq!(
        envoy.get("/select").text(),
        r#"{"num":{"id":123456789012345678901234567890,"sci":1E+2,"deep":{"n":18446744073709551616},"a":2},"_meta":{"complete":true}}"#,
        "select keeps the upstream's order, not the order of its paths"
    );
    assert_eq!(
        envoy.get("/omit").text(),
        r#"{"item":{"data":{"id":123456789012345678901234567890,"neg":-9223372036854775809,"amount":1.10,"sci":1E+2,"z":1},"first_a":2},"_meta":{"complete":true}}"#,
        "a rename in the same object keeps the key's place; a move goes last"
    );
    envoy.assert_no_vm_failures();
}

#[test]
fn concat_sorts_big_integers_by_exact_value() {
    // As f64 the first two ids are equal and the last two too: a float sort keeps them as sent.
    let shard_a = Upstream::json(
        r#"[{"id":9007199254740993,"s":"a1"},{"id":123456789012345678901234567891,"s":"a2"},{"id":1.10,"s":"a3"}]"#,
    );
    let shard_b = Upstream::json(
        r#"[{"id":9007199254740992,"s":"b1"},{"id":123456789012345678901234567890,"s":"b2"},{"id":1E+2,"s":"b3"}]"#,
    );
    let envoy = Envoy::builder(
        &at("search")
            .key(
                "response",
                json!({"layout": "concat", "sort_by": "id", "order": "asc", "limit": 5}),
            )
            .calls(
                r#"{"name":"a","cluster":"a","path":"/s"},{"name":"b","cluster":"b","path":"/s"}"#,
            )
            .config(),
    )
    .cluster("a", shard_a.port())
    .cluster("b", shard_b.port())
    .start();
    let response = envoy.get("/search");
    assert_eq!(response.status, 200);
    assert_eq!(
        response.text(),
        r#"[{"id":1.10,"s":"a3"},{"id":1E+2,"s":"b3"},{"id":9007199254740992,"s":"b1"},{"id":9007199254740993,"s":"a1"},{"id":123456789012345678901234567890,"s":"b2"}]"#
    );
    envoy.assert_no_vm_failures();
}

#[test]
fn derived_fields_return_inputs_as_written_and_sum_exactly() {
    let amounts = Upstream::json(
        r#"{"ids":[123456789012345678901234567890,123456789012345678901234567891,7],"cents":[1.10,2,0.05],"huge":[1e600,1e-600],"none":null,"sci":1E+2}"#,
    );
    let derive = json!({"derive": {
        "max_id": {"max": "amounts.ids"}, "min_id": {"min": "amounts.ids"},
        "total_ids": {"sum": "amounts.ids"}, "total_cents": {"sum": "amounts.cents"},
        "first": {"coalesce": ["amounts.none", "amounts.sci"]}, "all": {"concat": ["amounts.ids"]},
        "huge": {"sum": "amounts.huge"}}});
    let envoy = Envoy::builder(
        &at("sums")
            .key("response", derive)
            .calls(r#"{"name":"amounts","cluster":"amounts","path":"/a"}"#)
            .config(),
    )
    .cluster("amounts", amounts.port())
    .start();
    let response = envoy.get("/sums");
    assert_eq!(response.status, 200);
    let text = response.text();
    for expected in [
        r#""max_id":123456789012345678901234567891"#,
        r#""min_id":7"#,
        r#""total_ids":246913578024691357802469135788"#,
        r#""total_cents":3.15"#,
        r#""first":1E+2"#,
        r#""all":[123456789012345678901234567890,123456789012345678901234567891,7]"#,
        r#""huge":null"#,
        r#""_meta":{"complete":true,"derive":{"huge":{"reason":"not_exact"}}}"#,
    ] {
        assert!(text.contains(expected), "{expected} not in {text}");
    }
    envoy.assert_no_vm_failures();
}

#[test]
fn templates_write_the_digits_the_upstream_sent() {
    let num = Upstream::json(NUM);
    let items = Upstream::json(r#"{"ok":true}"#);
    let config = at("dep")
        .calls(
            r#"{"name":"num","cluster":"num","path":"/n"},
               {"name":"item","cluster":"items","method":"POST",
                "path":"/items/{calls.num.data.id}?sci={calls.num.data.sci}&price={calls.num.data.price}",
                "headers":{"x-snow":"{calls.num.data.snow}"},
                "body":{"id":"{calls.num.data.id}","note":"neg {calls.num.data.neg}","deep":"{calls.num.data.deep}","fixed":1E+2}}"#,
        )
        .config();
    let envoy = Envoy::builder(&config)
        .cluster("num", num.port())
        .cluster("items", items.port())
        .start();
    assert_eq!(envoy.get("/dep").status, 200);
    let hit = &items.hits()[0];
    assert_eq!(
        hit.path,
        "/items/123456789012345678901234567890?sci=1E%2B2&price=1.10"
    );
    assert_eq!(hit.header("x-snow"), Some("9007199254740993"));
    assert_eq!(
        String::from_utf8_lossy(&hit.body),
        r#"{"id":123456789012345678901234567890,"note":"neg -9223372036854775809","deep":{"n":18446744073709551616},"fixed":1E+2}"#
    );
    envoy.assert_no_vm_failures();
}

#[test]
fn per_item_calls_and_joins_match_big_ids_exactly() {
    let posts = Upstream::json(
        r#"{"items":[{"author":123456789012345678901234567890},{"author":123456789012345678901234567891},{"author":123456789012345678901234567890},{"author":7},{"author":"7"}]}"#,
    );
    let users = Upstream::start(|r| {
        Behavior::Reply(Reply::json(200, &format!(r#"{{"path":"{}"}}"#, r.path)))
    });
    let config = at("posts")
        .calls(
            r#"{"name":"posts","cluster":"posts","path":"/p"},
               {"name":"authors","cluster":"users","path":"/users/{item}","for_each":"calls.posts.items[*].author",
                "join":{"into":"posts.items","on":"author","as":"who"}}"#,
        )
        .config();
    let envoy = Envoy::builder(&config)
        .cluster("posts", posts.port())
        .cluster("users", users.port())
        .start();
    let response = envoy.get("/posts");
    assert_eq!(response.status, 200);
    let mut paths: Vec<String> = users.hits().into_iter().map(|h| h.path).collect();
    paths.sort();
    assert_eq!(
        paths,
        [
            "/users/123456789012345678901234567890",
            "/users/123456789012345678901234567891",
            "/users/7",
            "/users/7"
        ],
        "ids that differ in the last digit are two items; 7 and \"7\" are two"
    );
    assert_eq!(
        response.text(),
        r#"{"posts":{"items":[{"author":123456789012345678901234567890,"who":{"path":"/users/123456789012345678901234567890"}},{"author":123456789012345678901234567891,"who":{"path":"/users/123456789012345678901234567891"}},{"author":123456789012345678901234567890,"who":{"path":"/users/123456789012345678901234567890"}},{"author":7,"who":{"path":"/users/7"}},{"author":"7","who":{"path":"/users/7"}}]},"_meta":{"complete":true}}"#
    );
    envoy.assert_no_vm_failures();
}

#[test]
fn cached_and_stale_answers_keep_their_numbers_and_order() {
    let healthy = Arc::new(AtomicBool::new(true));
    let switch = Arc::clone(&healthy);
    let num = Upstream::start(move |_| {
        if switch.load(Ordering::SeqCst) {
            Behavior::Reply(Reply::json(200, NUM))
        } else {
            Behavior::Reply(Reply::json(500, "{}"))
        }
    });
    let envoy = Envoy::builder(
        &at("cached")
            .calls(
                r#"{"name":"num","cluster":"num","path":"/n","extract":"data",
                   "cache":{"ttl_ms":300,"stale_if_error_ms":10000}}"#,
            )
            .config(),
    )
    .cluster("num", num.port())
    .start();
    let expected = format!(r#"{{"num":{DATA},"_meta":{{"complete":true}}}}"#);
    assert_eq!(envoy.get("/cached").text(), expected);
    let hit = envoy.get("/cached");
    assert!(hit
        .header("server-timing")
        .unwrap()
        .contains(r#"desc="cache""#));
    assert_eq!(hit.text(), expected, "from the shared cache");
    assert_eq!(num.hit_count(), 1);

    healthy.store(false, Ordering::SeqCst);
    thread::sleep(Duration::from_millis(400));
    let stale = envoy.get("/cached");
    let text = stale.text();
    assert!(
        text.starts_with(&format!(r#"{{"num":{DATA},"_meta":{{"complete":false"#)),
        "the stale entry, exact: {text}"
    );
    assert!(text.contains(r#""stale":{"num":{"age_ms":"#), "{text}");
    envoy.assert_no_vm_failures();
}

#[test]
fn request_body_values_keep_their_digits() {
    let ledger = Upstream::json(r#"{"booked":true}"#);
    let envoy = Envoy::builder(
        r#"{"routes":[{"name":"pay","match":{"path":"/pay","methods":["POST"]},"calls":[
            {"name":"ledger","cluster":"ledger","method":"POST","path":"/l/{request.body.amount}",
             "body":{"amount":"{request.body.amount}","fee":"{request.body.fee}","note":"{request.body.amount} cents","rate":"{request.body.rate}"}}]}]}"#,
    )
    .cluster("ledger", ledger.port())
    .start();
    let response = envoy.request(
        "POST",
        "/pay",
        &[("content-type", "application/json")],
        br#"{"amount":1234567890123456789012345,"fee":0.10,"rate":2.5E-3}"#,
    );
    assert_eq!(response.status, 200, "{}", response.text());
    let hit = &ledger.hits()[0];
    assert_eq!(hit.path, "/l/1234567890123456789012345");
    assert_eq!(
        String::from_utf8_lossy(&hit.body),
        r#"{"amount":1234567890123456789012345,"fee":0.10,"note":"1234567890123456789012345 cents","rate":2.5E-3}"#
    );
    envoy.assert_no_vm_failures();
}

#[test]
fn fallbacks_keep_configuration_order_and_spelling() {
    let config = at("fallback")
        .calls(
            r#"{"name":"down","cluster":"down","path":"/d","fallback":{"z":[],"id":123456789012345678901234567890,"a":1.10,"e":1E+2}}"#,
        )
        .config();
    let envoy = Envoy::builder(&config).closed_cluster("down").start();
    let response = envoy.get("/fallback");
    assert_eq!(response.status, 200);
    assert!(
        response.text().starts_with(
            r#"{"down":{"z":[],"id":123456789012345678901234567890,"a":1.10,"e":1E+2},"_meta":{"complete":false"#
        ),
        "{}",
        response.text()
    );
    envoy.assert_no_vm_failures();
}
