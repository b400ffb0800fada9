//! Invalid configurations are refused at configure time: Envoy does not start, and its log
//! names route, call and key in one line (SPEC §2).

mod common;

use common::*;
use gateway_aggregator::testing::page_with;

fn refused_with(config: &str, expected: &str) {
    let line = Envoy::builder(config)
        .cluster("c", closed_port())
        .rejection();
    assert!(
        line.contains(expected),
        "log line:\n{line}\nexpected to contain:\n{expected}"
    );
    assert!(line.contains("[error][wasm]"), "{line}");
}

#[test]
fn unknown_key_is_named_with_a_suggestion() {
    refused_with(
        &page_with(r#"{"name":"reviews","cluster":"c","path":"/r","timout_ms":100}"#),
        r#"route "page" call "reviews" key "timout_ms": unknown key (did you mean "timeout_ms"?)"#,
    );
    // One level down, the same style, with the key's full path.
    refused_with(
        &page_with(r#"{"name":"reviews","cluster":"c","path":"/r","retries":{"atempts":2}}"#),
        r#"route "page" call "reviews" key "retries.atempts": unknown key (did you mean "attempts"?); known keys here: attempts, backoff_ms, on"#,
    );
}

#[test]
fn duplicate_and_badly_named_calls() {
    refused_with(
        &page_with(
            r#"{"name":"a","cluster":"c","path":"/"},{"name":"a","cluster":"c","path":"/"}"#,
        ),
        r#"route "page" call "a" key "name": another call of this route has the same name"#,
    );
    refused_with(
        &page_with(r#"{"name":"Product","cluster":"c","path":"/"}"#),
        r#"route "page" call "Product" key "name": "Product" is not a valid name"#,
    );
}

#[test]
fn a_header_named_twice_in_one_headers_object_is_refused() {
    // Header names are case-insensitive: both values would be sent (a call's headers, the
    // response's) or one of them ignored (match.headers).
    refused_with(
        &page_with(r#"{"name":"a","cluster":"c","path":"/","headers":{"X-Foo":"a","x-foo":"b"}}"#),
        r#"route "page" call "a" key "headers.x-foo": header "x-foo" is named twice"#,
    );
    refused_with(
        r#"{"routes":[{"name":"page","match":{"path":"/p","headers":{"X-A":"1","x-a":"2"}},"calls":[{"name":"a","cluster":"c","path":"/"}]}]}"#,
        r#"route "page" key "match.headers": header "x-a" is named twice"#,
    );
    refused_with(
        r#"{"routes":[{"name":"page","match":{"path":"/p"},"response":{"headers":{"Cache-Control":"no-store","cache-control":"max-age=5"}},"calls":[{"name":"a","cluster":"c","path":"/"}]}]}"#,
        r#"route "page" key "response.headers.cache-control": header "cache-control" is named twice"#,
    );
}

#[test]
fn unknown_references_and_cycles() {
    refused_with(
        &page_with(r#"{"name":"a","cluster":"c","path":"/{calls.ghost.id}"}"#),
        r#"route "page" call "a" key "path": placeholder "{calls.ghost.id}": the route has no call named "ghost""#,
    );
    refused_with(
        &page_with(
            r#"{"name":"a","cluster":"c","path":"/","after":["b"]},{"name":"b","cluster":"c","path":"/{calls.a.x}"}"#,
        ),
        r#"route "page" key "calls": dependency cycle: a -> b -> a"#,
    );
    refused_with(
        &page_with(r#"{"name":"a","cluster":"c","path":"/{path.ident}"}"#),
        r#"route "page" call "a" key "path": placeholder "{path.ident}": match.path has no such capture"#,
    );
}

#[test]
fn wrong_types_and_values() {
    refused_with(
        &page_with(r#"{"name":"a","cluster":"c","path":"/","required":"yes"}"#),
        r#"route "page" call "a" key "required": invalid type: string "yes", expected a boolean"#,
    );
    refused_with(
        r#"{"defaults":{"forward_headers":["authorization"]},"routes":[]}"#,
        r#"key "routes": must name at least one route"#,
    );
    refused_with("{not json", "not valid JSON");
    // Written twice, a key would mean whichever one the reader keeps: refused.
    refused_with(
        &page_with(r#"{"name":"a","cluster":"c","path":"/a","timeout_ms":100,"timeout_ms":900}"#),
        r#"not valid JSON: duplicate key "timeout_ms" at byte"#,
    );
}

#[test]
fn names_holding_control_characters_keep_the_error_on_one_line() {
    // A JSON "\n" inside a call name: the log line must not break (log parsers, alerts).
    let config = page_with(r#"{"name":"evil\nname","cluster":"c","path":"/x"}"#);
    let line = Envoy::builder(&config)
        .cluster("c", closed_port())
        .rejection();
    assert!(
        line.contains(r#"call "evil\nname""#),
        "escaped name in: {line}"
    );
    assert!(
        line.contains("is not a valid name"),
        "the error itself is on the same line: {line}"
    );
}
