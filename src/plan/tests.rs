use super::*;
use crate::testing::{self, page_with};
use serde_json::json;

fn compile(json: &str) -> Result<Plan, String> {
    Plan::compile(json.as_bytes()).map_err(|e| e.to_string())
}

const PRODUCT: &str =
    r#"{"name":"product","cluster":"catalog","path":"/products/{path.id}","required":true}"#;

fn no_headers(_: &str) -> Option<String> {
    None
}

#[test]
fn spec_example_compiles() {
    let plan = compile(
        r#"{
      "defaults": {"timeout_ms": 1000, "deadline_ms": 3000, "max_body_bytes": 1048576,
                   "forward_headers": ["x-request-id", "traceparent", "tracestate"]},
      "routes": [{
        "name": "product-page",
        "match": {"path": "/api/products/{id}", "methods": ["GET"]},
        "deadline_ms": 300,
        "calls": [
          {"name": "product", "cluster": "catalog", "path": "/products/{path.id}", "required": true},
          {"name": "inventory", "cluster": "inventory", "path": "/stock/{path.id}", "timeout_ms": 100},
          {"name": "pricing", "cluster": "pricing", "path": "/prices/{path.id}?currency={query.currency|EUR}"},
          {"name": "reviews", "cluster": "reviews", "path": "/reviews?product={path.id}",
           "timeout_ms": 150, "fallback": {"items": [], "average": null}}
        ]}]}"#,
    )
    .unwrap();
    let route = &plan.routes[0];
    assert_eq!(route.deadline_ms, 300);
    assert_eq!(route.order, [0, 1, 2, 3]);
    assert_eq!(route.query_params, ["currency"]);
    assert_eq!(route.headers, ["x-request-id", "traceparent", "tracestate"]);
    assert_eq!(route.calls[1].timeout_ms, 100);
    assert_eq!(route.calls[0].timeout_ms, 1000);
    assert_eq!(&*route.calls[0].authority, "catalog");
    assert_eq!(
        route.calls[3].fallback.as_ref().unwrap().json,
        br#"{"items":[],"average":null}"#,
        "a fallback keeps the keys in configuration order"
    );
    assert_eq!(route.meta_key.as_deref(), Some("\"_meta\""));
}

#[test]
fn first_matching_route_wins_and_methods_and_headers_count() {
    let plan = compile(
        r#"{"routes":[
        {"name":"mobile","match":{"path":"/home","headers":{"X-Client":"mobile"}},"calls":[{"name":"a","cluster":"c","path":"/m"}]},
        {"name":"web","match":{"path":"/home","methods":["get","POST"]},"calls":[{"name":"a","cluster":"c","path":"/w"}]}
    ]}"#,
    )
    .unwrap();
    let find = |method: &str, client: Option<&str>| {
        let mut header = |name: &str| {
            (name == "x-client")
                .then(|| client.map(str::to_string))
                .flatten()
        };
        plan.find(method, "/home?x=1", &mut header)
            .map(|m| m.route.name.clone())
    };
    assert_eq!(find("GET", Some("mobile")).as_deref(), Some("mobile"));
    assert_eq!(find("GET", Some("web")).as_deref(), Some("web"));
    assert_eq!(find("POST", None).as_deref(), Some("web"));
    assert_eq!(find("DELETE", None), None);
    assert!(plan.find("GET", "/other", &mut no_headers).is_none());
}

#[test]
fn dependencies_from_templates_and_after_are_ordered() {
    let plan = compile(&page_with(
        r#"{"name":"reviews","cluster":"r","path":"/r?seller={calls.product.seller.id}"},
           {"name":"audit","cluster":"a","path":"/a","after":["reviews"]},
           {"name":"product","cluster":"catalog","path":"/products/{path.id}"}"#,
    ))
    .unwrap();
    let route = &plan.routes[0];
    assert_eq!(route.calls[0].dependencies, [2]);
    assert_eq!(route.calls[1].dependencies, [0]);
    assert_eq!(route.order, [2, 0, 1]);
    assert!(route.calls[2].body_needed);
    assert!(!route.calls[0].body_needed);
}

#[test]
fn forward_headers_merge_and_credentials_need_the_call_to_ask() {
    let plan = compile(&page_with(
        r#"{"name":"a","cluster":"c","path":"/a","forward_headers":["Authorization","x-tenant"],"headers":{"x-request-id":"fixed"}}"#,
    ))
    .unwrap();
    let names: Vec<&str> = plan.routes[0].calls[0]
        .forward
        .iter()
        .map(|(n, _)| &**n)
        .collect();
    assert_eq!(
        names,
        ["traceparent", "tracestate", "authorization", "x-tenant"]
    );

    let e = compile(r#"{"defaults":{"forward_headers":["cookie"]},"routes":[{"name":"r","match":{"path":"/"},"calls":[{"name":"a","cluster":"c","path":"/"}]}]}"#).unwrap_err();
    assert!(
        e.contains(r#"key "defaults.forward_headers": "cookie" is a credential"#),
        "{e}"
    );
}

#[test]
fn inheritance_goes_defaults_then_route_then_call() {
    let plan = compile(r#"{"defaults":{"timeout_ms":700,"max_body_bytes":10,"expose_errors":true},"routes":[{"name":"r","match":{"path":"/"},"timeout_ms":600,"calls":[
        {"name":"a","cluster":"c","path":"/"},{"name":"b","cluster":"c","path":"/","timeout_ms":50,"max_body_bytes":20}]}]}"#).unwrap();
    let route = &plan.routes[0];
    assert!(route.expose_errors);
    assert_eq!(route.deadline_ms, 3000);
    assert_eq!(
        (route.calls[0].timeout_ms, route.calls[0].max_body_bytes),
        (600, 10)
    );
    assert_eq!(
        (route.calls[1].timeout_ms, route.calls[1].max_body_bytes),
        (50, 20)
    );
}

#[test]
fn invalid_configurations_name_route_call_and_key() {
    let cases: &[(&str, &str)] = &[
        (
            &page_with(r#"{"name":"Bad Name","cluster":"c","path":"/"}"#),
            r#"route "page" call "Bad Name" key "name": "Bad Name" is not a valid name"#,
        ),
        (
            &page_with(&format!("{PRODUCT},{PRODUCT}")),
            r#"route "page" call "product" key "name": another call of this route has the same name"#,
        ),
        (
            &page_with(r#"{"name":"a","cluster":"c","path":"/","after":["ghost"]}"#),
            r#"route "page" call "a" key "after": the route has no call named "ghost""#,
        ),
        (
            &page_with(
                r#"{"name":"a","cluster":"c","path":"/{calls.b.x}"},{"name":"b","cluster":"c","path":"/{calls.a.y}"}"#,
            ),
            r#"route "page" key "calls": dependency cycle: a -> b -> a"#,
        ),
        (
            &page_with(r#"{"name":"a","cluster":"c","path":"/{path.nope}"}"#),
            r#"route "page" call "a" key "path": placeholder "{path.nope}": match.path has no such capture"#,
        ),
        (
            &page_with(r#"{"name":"a","cluster":"c","path":"x"}"#),
            r#"route "page" call "a" key "path": must start with "/""#,
        ),
        (
            &page_with(r#"{"name":"a","cluster":"c","path":"/","timeout_ms":0}"#),
            r#"route "page" call "a" key "timeout_ms": must be between 1"#,
        ),
        (
            &page_with(r#"{"name":"a","cluster":"c","path":"/","required":true,"fallback":1}"#),
            r#"route "page" call "a" key "fallback": a required call never uses a fallback"#,
        ),
        (
            &page_with(r#"{"name":"a","cluster":"c","path":"/","headers":{"host":"x"}}"#),
            r#"route "page" call "a" key "headers.host": header "host" is managed by Envoy"#,
        ),
        (
            &page_with(
                r#"{"name":"a","cluster":"c","path":"/","headers":{"X-Foo":"a","x-foo":"b"}}"#,
            ),
            r#"route "page" call "a" key "headers.x-foo": header "x-foo" is named twice (header names are case-insensitive)"#,
        ),
        (
            r#"{"routes":[{"name":"page","match":{"path":"/p","headers":{"X-A":"1","x-a":"2"}},"calls":[{"name":"a","cluster":"c","path":"/"}]}]}"#,
            r#"route "page" key "match.headers": header "x-a" is named twice"#,
        ),
        (
            r#"{"routes":[{"name":"page","match":{"path":"/p"},"response":{"headers":{"Cache-Control":"no-store","cache-control":"max-age=5"}},"calls":[{"name":"a","cluster":"c","path":"/"}]}]}"#,
            r#"route "page" key "response.headers.cache-control": header "cache-control" is named twice"#,
        ),
        (
            &page_with(r#"{"name":"a","cluster":"c","path":"/","method":"G T"}"#),
            r#"route "page" call "a" key "method": "G T" is not an HTTP method"#,
        ),
        (
            &page_with(r#"{"name":"_meta","cluster":"c","path":"/"}"#),
            r#"route "page" call "_meta" key "name": clashes with the completeness object's key"#,
        ),
        (
            &page_with(r#"{"name":"a","cluster":"c","path":"/","after":["a"]}"#),
            r#"route "page" call "a" key "after": a call cannot read its own response"#,
        ),
        (
            &page_with(""),
            r#"route "page" key "calls": must list at least one call"#,
        ),
        (
            r#"{"routes":[{"name":"r","match":{"path":"/a/{x}/{x}"},"calls":[{"name":"a","cluster":"c","path":"/"}]}]}"#,
            r#"route "r" key "match.path": capture "x" appears twice"#,
        ),
        (
            r#"{"routes":[{"name":"r","match":{"path":"/"},"calls":[{"name":"a","cluster":"c","path":"/"}]},{"name":"r","match":{"path":"/"},"calls":[{"name":"a","cluster":"c","path":"/"}]}]}"#,
            r#"route "r" key "name": another route has the same name"#,
        ),
        (
            r#"{"routes":[]}"#,
            r#"key "routes": must name at least one route"#,
        ),
    ];
    for (json, expected) in cases {
        let e = compile(json).unwrap_err();
        assert!(e.starts_with(expected), "\n got: {e}\nwant: {expected}");
        assert!(!e.contains('\n'), "one line: {e}");
    }
}

#[test]
fn fan_out_join_and_body_are_checked_at_load() {
    let posts = r#"{"name":"posts","cluster":"c","path":"/posts"}"#;
    let cases: &[(String, &str)] = &[
        (page_with(r#"{"name":"a","cluster":"c","path":"/{item}"}"#), r#"call "a" key "path": placeholder "{item}": {item} needs for_each on the call"#),
        (page_with(&format!(r#"{posts},{{"name":"a","cluster":"c","path":"/{{item}}","for_each":"calls.posts.items"}}"#)), r#"call "a" key "for_each": needs [*]"#),
        (page_with(r#"{"name":"a","cluster":"c","path":"/{item}","for_each":"calls.ghost.items[*]"}"#), r#"call "a" key "for_each": the route has no call named "ghost""#),
        (page_with(&format!(r#"{posts},{{"name":"a","cluster":"c","path":"/a","for_each":"calls.posts.items[*]"}}"#)), r#"call "a" key "for_each": the call never uses {item}"#),
        (page_with(&format!(r#"{posts},{{"name":"a","cluster":"c","path":"/a/{{item}}","for_each":"posts.items[*]"}}"#)), r#"call "a" key "for_each": must read an earlier call"#),
        (page_with(&format!(r#"{posts},{{"name":"a","cluster":"c","path":"/a","join":{{"into":"posts.items","on":"id","as":"x"}}}}"#)), r#"call "a" key "join": needs for_each (one request per item), or match for a batch join"#),
        (page_with(&format!(r#"{posts},{{"name":"b","cluster":"c","path":"/b"}},{{"name":"a","cluster":"c","path":"/a/{{item}}","for_each":"calls.posts.items[*].id","join":{{"into":"b.items","on":"id","as":"x"}}}}"#)), r#"call "a" key "join.into": must be in the body of the call for_each reads"#),
        (page_with(&format!(r#"{posts},{{"name":"a","cluster":"c","path":"/a/{{item}}","for_each":"calls.posts.items[*].id","join":{{"into":"posts.items","on":"id","as":"x","extra":1}}}}"#)), r#"call "a" key "join.extra": unknown key; known keys here: into, on, match, as"#),
        (page_with(&format!(r#"{posts},{{"name":"a","cluster":"c","path":"/a/{{item}}","for_each":"calls.posts.items[*].id","max_fan_out":5000}}"#)), r#"call "a" key "max_fan_out": must be between 1 and 1000"#),
        (page_with(r#"{"name":"a","cluster":"c","path":"/a","max_fan_out":5}"#), r#"call "a" key "max_fan_out": only applies to a call with for_each, or to a batch join"#),
        (page_with(r#"{"name":"a","cluster":"c","path":"/a","body":{"whole":"{request.body}"}}"#), r#"call "a" key "body": placeholder "{request.body}": the whole client body can only be a call's entire body"#),
        (page_with(r#"{"name":"a","cluster":"c","path":"/a/{request.id}"}"#), r#"call "a" key "path": placeholder "{request.id}": use request.body.<field>"#),
        (r#"{"routes":[{"name":"r","match":{"path":"/"},"fields_param":"","calls":[{"name":"a","cluster":"c","path":"/"}]}]}"#.to_string(), r#"route "r" key "fields_param": must be a non-empty string, or null"#),
    ];
    for (json, expected) in cases {
        let e = compile(json).unwrap_err();
        assert!(e.contains(expected), "\n got: {e}\nwant: {expected}");
    }
}

#[test]
fn fan_out_and_bodies_compile_into_the_plan() {
    let plan = compile(
        r#"{"routes":[{"name":"r","match":{"path":"/o/{id}","methods":["POST"]},"fields_param":null,"max_body_bytes":100,"calls":[
        {"name":"posts","cluster":"c","path":"/posts"},
        {"name":"authors","cluster":"c","path":"/u/{item}","for_each":"calls.posts.items[*].author","join":{"into":"posts.items","on":"author","as":"detail"}},
        {"name":"create","cluster":"c","method":"POST","path":"/o","body":"{request.body}"},
        {"name":"retryable","cluster":"c","method":"POST","path":"/o","unsafe":true}]}]}"#,
    )
    .unwrap();
    let route = &plan.routes[0];
    assert_eq!(route.fields_param, None);
    assert_eq!(
        route.client_body,
        ClientBodyUse {
            needed: true,
            parsed: false,
            max_bytes: 100
        }
    );
    assert!(route.headers.contains(&"content-type".to_string()));
    let authors = &route.calls[1];
    assert_eq!(authors.dependencies, [0]);
    assert_eq!(
        authors.fan_out.as_ref().map(|f| (f.source, f.max_items)),
        Some((CallId::new(0), 32))
    );
    assert_eq!(
        authors.join.as_ref().map(|j| (j.target, j.key.as_str())),
        Some((CallId::new(0), "detail"))
    );
    assert!(
        route.calls[0].body_needed,
        "for_each and join read the posts body"
    );
    assert!(authors.parses_answers(), "joined answers are parsed");
    assert!(route.calls[0].may_repeat, "GET is idempotent");
    assert!(!route.calls[2].may_repeat, "POST is not");
    assert!(route.calls[3].may_repeat, "unless the call says unsafe");
}

#[test]
fn values_are_checked_where_they_are_written_and_shapes_are_strict() {
    let cases: &[(&str, &str)] = &[
        (
            r#"{"defaults":{"timeout_ms":0},"routes":[{"name":"r","match":{"path":"/"},"calls":[{"name":"a","cluster":"c","path":"/","timeout_ms":5}]}]}"#,
            r#"key "defaults.timeout_ms": must be between 1"#,
        ),
        (
            r#"{"defaults":{"retries":{"attempts":50}},"routes":[{"name":"r","match":{"path":"/"},"calls":[{"name":"a","cluster":"c","method":"POST","path":"/"}]}]}"#,
            r#"key "defaults.retries.attempts": must be between 1 and 10"#,
        ),
        (
            r#"{"routes":[{"name":"r","match":{"path":"/"},"max_fan_out":0,"calls":[{"name":"a","cluster":"c","path":"/"}]}]}"#,
            r#"route "r" key "max_fan_out": must be between 1"#,
        ),
        (
            r#"{"routes":[{"name":"r","match":{"path":"/"},"calls":[{"name":"a","cluster":"c","path":"/","retries":[2,25,["connect"]]}]}]}"#,
            r#"call "a" key "retries": must be a JSON object, or null"#,
        ),
        (
            r#"{"routes":[{"name":"r","match":{"path":"/"},"calls":[{"name":"a","cluster":"c","path":"/","format":{"text":null}}]}]}"#,
            r#"call "a" key "format": invalid type"#,
        ),
        (
            r#"{"routes":[{"name":"r","match":{"path":"/"},"calls":[{"name":"a","cluster":"c","path":"/","format":"xml"}]}]}"#,
            r#"call "a" key "format": unknown value "xml", expected one of: json, text"#,
        ),
        (
            r#"{"routes":[{"name":"r","match":{"path":"/"},"response":{"headers_from":[["a","x"]]},"calls":[{"name":"a","cluster":"c","path":"/"}]}]}"#,
            r#"key "response.headers_from": must be a list of JSON objects"#,
        ),
        (
            r#"{"routes":[{"name":"r","match":{"path":"/"},"calls":[{"name":"a","cluster":"c","path":"/","headers":{"x-a":"{query.q|a\rb}"}}]}]}"#,
            r#"call "a" key "headers.x-a": must not contain CR, LF or NUL"#,
        ),
        (
            r#"{"routes":[{"name":"r","match":{"path":"/"},"calls":[{"name":"a","cluster":"c","path":"/","retries":{"attempts":2,"on":["4xx"]}}]}]}"#,
            r#"unknown value "4xx", expected one of: connect, timeout, 5xx"#,
        ),
    ];
    for (json, expected) in cases {
        let e = compile(json).unwrap_err();
        assert!(e.contains(expected), "\n got: {e}\nwant: {expected}");
    }
}

#[test]
fn a_first_look_rules_out_paths_no_route_can_match() {
    let plan = compile(r#"{"routes":[{"name":"a","match":{"path":"/api/x/{id}"},"calls":[{"name":"c","cluster":"k","path":"/"}]},
        {"name":"b","match":{"path":"/bff"},"calls":[{"name":"c","cluster":"k","path":"/"}]}]}"#).unwrap();
    assert!(plan.may_match("/api/x/1"));
    assert!(plan.may_match("/bff?x=1"));
    assert!(plan.may_match("/api"));
    assert!(!plan.may_match("/static/app.js"));
    assert!(!plan.may_match("/"));
    let open = compile(r#"{"routes":[{"name":"a","match":{"path":"/{tenant}/x"},"calls":[{"name":"c","cluster":"k","path":"/"}]}]}"#).unwrap();
    assert!(
        open.may_match("/anything"),
        "a leading capture matches any first segment"
    );
}

#[test]
fn routes_waiting_for_the_client_body_need_the_timer() {
    let needs = |calls: &str| {
        let json = testing::route("r", "/r")
            .methods(&["POST"])
            .calls(calls)
            .config();
        compile(&json).unwrap().routes[0].needs_timers()
    };
    assert!(!needs(r#"{"name":"a","cluster":"c","path":"/a"}"#));
    assert!(needs(
        r#"{"name":"a","cluster":"c","method":"POST","path":"/a","body":"{request.body}"}"#
    ));
    assert!(needs(
        r#"{"name":"a","cluster":"c","method":"POST","path":"/a","body":{"q":"{request.body.q}"}}"#
    ));
    assert!(needs(
        r#"{"name":"a","cluster":"c","path":"/a","hedge_after_ms":10}"#
    ));
}

/// The object a level writes to set one bounded key (`retries.attempts`) to `value`, with the
/// other keys its object requires.
fn writing(key: &str, value: u64) -> serde_json::Value {
    use serde_json::json;
    match key.split_once('.') {
        None => json!({ key: value }),
        Some((object, field)) => {
            let mut inner = match object {
                "retries" => json!({"attempts": 2}),
                "cache" => json!({"ttl_ms": 5}),
                _ => json!({"failures": 1, "open_ms": 1}),
            };
            inner[field] = json!(value);
            json!({ object: inner })
        }
    }
}

#[test]
fn every_bound_of_the_table_is_checked_at_every_level_that_writes_it() {
    use super::compile::limits::{self, ALL};
    use serde_json::json;
    let call_keys = |limit: &limits::Limit| {
        // A call writes these only with for_each or a batch join (below, and their own tests).
        !["deadline_ms", "max_inflight", "max_fan_out", "max_batch"].contains(&limit.key)
    };
    for limit in ALL {
        for outside in [limit.min.checked_sub(1), limit.max.checked_add(1)]
            .into_iter()
            .flatten()
        {
            let set = writing(limit.key, outside);
            let mut levels = vec![("defaults", format!(r#"key "defaults.{}""#, limit.key))];
            levels.push(("route", format!(r#"route "r" key "{}""#, limit.key)));
            if call_keys(&limit) {
                levels.push(("call", format!(r#"route "r" call "a" key "{}""#, limit.key)));
            }
            for (level, place) in levels {
                let mut config = json!({"routes": [{"name": "r", "match": {"path": "/"},
                    "calls": [{"name": "a", "cluster": "c", "path": "/"}]}]});
                let object = match level {
                    "defaults" => &mut config["defaults"],
                    "route" => &mut config["routes"][0],
                    _ => &mut config["routes"][0]["calls"][0],
                };
                if object.is_null() {
                    *object = json!({});
                }
                for (k, v) in set.as_object().unwrap() {
                    object[k] = v.clone();
                }
                let e = compile(&config.to_string()).unwrap_err();
                let want = format!("{place}: must be between {} and {}", limit.min, limit.max);
                assert_eq!(e, want, "{level} writes {}", limit.key);
            }
        }
    }
}

#[test]
fn the_bounds_table_agrees_with_the_json_schema() {
    use super::compile::limits::ALL;
    use serde_json::Value;
    let schema: Value =
        serde_json::from_str(include_str!("../../schema/config.schema.json")).unwrap();
    let resolve = |node: &Value| -> Value {
        match node.get("$ref").and_then(Value::as_str) {
            Some(reference) => schema.pointer(&reference[1..]).unwrap().clone(),
            None => node.clone(),
        }
    };
    // Every `properties.<name>` of the schema, resolved: name and node.
    fn properties(node: &Value, found: &mut Vec<(String, Value)>) {
        match node {
            Value::Object(map) => {
                if let Some(Value::Object(props)) = map.get("properties") {
                    found.extend(props.iter().map(|(k, v)| (k.clone(), v.clone())));
                }
                map.values().for_each(|child| properties(child, found));
            }
            Value::Array(items) => items.iter().for_each(|child| properties(child, found)),
            _ => {}
        }
    }
    let mut found = Vec::new();
    properties(&schema, &mut found);
    for limit in ALL {
        let name = limit.key.rsplit('.').next().unwrap();
        let bounds: Vec<(Option<u64>, Option<u64>)> = found
            .iter()
            .filter(|(key, _)| key == name)
            .map(|(_, node)| {
                let node = resolve(node);
                let bounded = std::iter::once(node.clone())
                    .chain(node["anyOf"].as_array().cloned().unwrap_or_default())
                    .chain(node["oneOf"].as_array().cloned().unwrap_or_default())
                    .map(|n| resolve(&n))
                    .find(|n| n.get("minimum").is_some())
                    .unwrap_or_else(|| panic!("{}: no minimum in the schema", limit.key));
                (bounded["minimum"].as_u64(), bounded["maximum"].as_u64())
            })
            .collect();
        assert!(!bounds.is_empty(), "{}: not in the schema", limit.key);
        for bound in bounds {
            assert_eq!(
                bound,
                (Some(limit.min), Some(limit.max)),
                "{}: the schema's bounds differ from limits.rs",
                limit.key
            );
        }
    }
}

#[test]
fn an_output_key_may_not_be_the_completeness_object_key_and_unsafe_calls_do_not_repeat() {
    let e = compile(&page_with(
        r#"{"name":"a","cluster":"c","path":"/","as":"_meta"}"#,
    ))
    .unwrap_err();
    assert_eq!(
        e,
        r#"route "page" call "a" key "as": clashes with the completeness object's key (response.meta)"#
    );
    let e = compile(&page_with(
        r#"{"name":"a","cluster":"c","method":"POST","path":"/","hedge_after_ms":5}"#,
    ))
    .unwrap_err();
    assert_eq!(
        e,
        r#"route "page" call "a" key "hedge_after_ms": POST is not idempotent: set "unsafe": true if sending it twice is safe"#
    );
    // Inherited retries are dropped for a POST, kept for a GET and an unsafe POST.
    let plan = compile(
        r#"{"defaults":{"retries":{"attempts":3}},"routes":[{"name":"r","match":{"path":"/"},"calls":[
        {"name":"get","cluster":"c","path":"/"},
        {"name":"post","cluster":"c","method":"POST","path":"/"},
        {"name":"unsafe","cluster":"c","method":"POST","path":"/","unsafe":true}]}]}"#,
    )
    .unwrap();
    let retried: Vec<bool> = plan.routes[0]
        .calls
        .iter()
        .map(|c| c.resilience.retries.is_some())
        .collect();
    assert_eq!(retried, [true, false, true]);
}

#[test]
fn configuration_cannot_write_into_the_completeness_object() {
    let route = |response: Value, calls: &str| {
        testing::route("r", "/")
            .key("response", response)
            .calls(calls)
            .config()
    };
    let call = r#"{"name":"a","cluster":"c","path":"/"}"#;
    let refused = [
        (
            route(json!({"derive":{"_meta":{"count":"a"}}}), call),
            r#"route "r" key "response.derive._meta": writes into "_meta", the completeness object's key (response.meta), which is the filter's own"#,
        ),
        (
            route(
                json!({"layout":"merge","derive":{"_meta.n":{"count":"a"}}}),
                call,
            ),
            r#"route "r" key "response.derive._meta.n": writes into "_meta""#,
        ),
        (
            route(
                json!({"meta":"status","derive":{"status[0]":{"count":"a"}}}),
                call,
            ),
            r#"route "r" key "response.derive.status[0]": writes into "status""#,
        ),
        (
            route(
                json!({"layout":"merge"}),
                r#"{"name":"a","cluster":"c","path":"/","as":"_meta"}"#,
            ),
            r#"route "r" call "a" key "as": clashes with the completeness object's key (response.meta)"#,
        ),
    ];
    for (json, expected) in &refused {
        let e = compile(json).unwrap_err();
        assert!(e.starts_with(expected), "\n got: {e}\nwant: {expected}");
        assert!(!e.contains('\n'), "one line: {e}");
    }
    // Where the meta object is not, or the value stays under a call's key, it is fine; in
    // merge, a body's top-level key of that name is dropped when the answer is assembled.
    for json in [
        route(json!({"meta":null,"derive":{"_meta":{"count":"a"}}}), call),
        route(
            json!({"meta":"status","derive":{"_meta":{"count":"a"}}}),
            call,
        ),
        route(json!({"derive":{"a._meta":{"count":"a"}}}), call),
        route(
            json!({}),
            r#"{"name":"a","cluster":"c","path":"/","rename":{"x":"_meta"},"fallback":{"_meta":1}}"#,
        ),
        route(
            json!({"layout":"merge"}),
            r#"{"name":"a","cluster":"c","path":"/","rename":{"x":"_meta"},"fallback":{"_meta":1}}"#,
        ),
    ] {
        assert!(compile(&json).is_ok(), "{json}: {:?}", compile(&json).err());
    }
}

/// Route `page` with `product` and a call `a` that sets `when`.
fn with_when(when: &str) -> String {
    page_with(&format!(
        r#"{PRODUCT},{{"name":"a","cluster":"c","path":"/a","when":{when}}}"#
    ))
}

#[test]
fn conditions_are_checked_at_load_naming_route_call_and_key() {
    let operators = "present, equals, in, all, any, not";
    let cases: Vec<(String, String)> = vec![
        (
            with_when(r#"{"presnt":"query.x"}"#),
            format!(r#"route "page" call "a" key "when.presnt": unknown key (did you mean "present"?); known keys here: {operators}"#),
        ),
        (
            with_when("{}"),
            format!(r#"route "page" call "a" key "when": must hold exactly one operator (one of: {operators}); combine several with all or any"#),
        ),
        (
            with_when(r#"{"present":"query.x","equals":["query.y","1"]}"#),
            r#"route "page" call "a" key "when": must hold exactly one operator"#.to_string(),
        ),
        (
            with_when(r#"{"all":[{"present":"query.x"},{"not":{}}]}"#),
            r#"route "page" call "a" key "when.all[1].not": must hold exactly one operator"#
                .to_string(),
        ),
        (
            with_when(r#"{"equals":["query.x"]}"#),
            r#"route "page" call "a" key "when.equals": must be ["<source>.<name>", <a string, number or boolean>]"#.to_string(),
        ),
        (
            with_when(r#"{"equals":["query.x",null]}"#),
            r#"route "page" call "a" key "when.equals": must be"#.to_string(),
        ),
        (
            with_when(r#"{"equals":["query.x",{"a":1}]}"#),
            r#"route "page" call "a" key "when.equals": must be"#.to_string(),
        ),
        (
            with_when(r#"{"in":["query.x",[]]}"#),
            r#"route "page" call "a" key "when.in": must be ["<source>.<name>", [<one or more strings, numbers or booleans>]]"#.to_string(),
        ),
        (
            with_when(r#"{"in":["query.x","a"]}"#),
            r#"route "page" call "a" key "when.in": must be"#.to_string(),
        ),
        (
            with_when(r#"{"present":5}"#),
            r#"route "page" call "a" key "when.present": invalid type"#.to_string(),
        ),
        (
            with_when(r#"{"any":[]}"#),
            r#"route "page" call "a" key "when.any": must list at least one condition"#
                .to_string(),
        ),
        (
            with_when(r#"[{"present":"query.x"}]"#),
            r#"route "page" call "a" key "when": must be a JSON object"#.to_string(),
        ),
        (
            with_when(r#"{"any":[{"present":"query.x"},{"not":{"equals":["calls.prodct.kind","x"]}}]}"#),
            r#"route "page" call "a" key "when.any[1].not.equals": reference "calls.prodct.kind": the route has no call named "prodct" (did you mean "product"?)"#.to_string(),
        ),
        (
            with_when(r#"{"present":"calls.a.x"}"#),
            r#"route "page" call "a" key "when.present": reference "calls.a.x": a call cannot read its own response"#.to_string(),
        ),
        (
            with_when(r#"{"present":"heade.x-user"}"#),
            r#"route "page" call "a" key "when.present": reference "heade.x-user": unknown source (did you mean "header."? use path., query., header., calls., request.body. or item)"#.to_string(),
        ),
        (
            with_when(r#"{"present":"item"}"#),
            r#"route "page" call "a" key "when.present": reference "item": when is judged once for the whole call"#.to_string(),
        ),
        (
            with_when(r#"{"present":"{query.x|1}"}"#),
            r#"route "page" call "a" key "when.present": reference "{query.x|1}": write the source alone"#.to_string(),
        ),
        (
            with_when(r#"{"in":["calls.product.items[*].kind",["a"]]}"#),
            r#"route "page" call "a" key "when.in": reference "calls.product.items[*].kind": a condition reads one value: [*] is not allowed"#.to_string(),
        ),
        (
            with_when(r#"{"present":"path.nope"}"#),
            r#"route "page" call "a" key "when.present": reference "path.nope": match.path has no such capture"#.to_string(),
        ),
        (
            page_with(
                r#"{"name":"a","cluster":"c","path":"/a","when":{"present":"calls.b.x"}},
                   {"name":"b","cluster":"c","path":"/b","when":{"not":{"present":"calls.a.y"}}}"#,
            ),
            r#"route "page" key "calls": dependency cycle: a -> b -> a"#.to_string(),
        ),
    ];
    for (json, expected) in &cases {
        let e = compile(json).unwrap_err();
        assert!(
            e.starts_with(expected.as_str()),
            "\n got: {e}\nwant: {expected}"
        );
        assert!(!e.contains('\n'), "one line: {e}");
    }
}

#[test]
fn conditions_compile_into_dependencies_and_inputs() {
    let plan = compile(&page_with(&format!(
        r#"{PRODUCT},
        {{"name":"shipping","cluster":"c","path":"/s/{{path.id}}",
          "when":{{"all":[{{"equals":["calls.product.kind","physical"]}},
                          {{"not":{{"present":"header.X-No-Shipping"}}}},
                          {{"in":["query.include",["shipping","all"]]}}]}}}},
        {{"name":"tips","cluster":"c","path":"/t","when":{{"present":"calls.shipping.eta"}}}}"#
    )))
    .unwrap();
    let route = &plan.routes[0];
    assert_eq!(
        route.calls[1].dependencies,
        [0],
        "a call the condition reads"
    );
    assert_eq!(route.calls[2].dependencies, [1]);
    assert!(route.calls[0].body_needed, "the condition reads its body");
    assert!(route.calls[1].body_needed);
    assert_eq!(route.query_params, ["include"]);
    assert!(route.headers.contains(&"x-no-shipping".to_string()));
    assert_eq!(
        route.calls[1].when.as_ref().map(|w| w.references().len()),
        Some(3)
    );
}

/// Route `page` with `posts` and a batch call `authors` (extra keys appended to it).
fn with_batch(path: &str, extra: &str) -> String {
    page_with(&format!(
        r#"{{"name":"posts","cluster":"c","path":"/posts"}},
           {{"name":"authors","cluster":"u","path":"{path}",
             "join":{{"into":"posts.items","on":"author","match":"id","as":"author_detail"}}{extra}}}"#
    ))
}

#[test]
fn batch_joins_compile_their_keys_placeholder_chunks_and_caps() {
    let plan = compile(&with_batch(
        "/users?ids={calls.posts.items[*].author}",
        r#","max_batch":2"#,
    ))
    .unwrap();
    let authors = &plan.routes[0].calls[1];
    let batch = authors.batch.as_ref().unwrap();
    assert_eq!(
        (batch.source, batch.max_keys, batch.max_requests),
        (CallId::new(0), 2, 32)
    );
    assert_eq!(batch.keys.as_str(), "items[*].author");
    assert_eq!(batch.matches.as_str(), "id");
    assert_eq!(
        authors
            .path
            .placeholders()
            .map(|p| &p.source)
            .collect::<Vec<_>>(),
        [&template::Source::Batch],
        "the keys placeholder sends a chunk's keys"
    );
    assert_eq!(authors.dependencies, [0]);
    assert!(plan.routes[0].calls[0].body_needed);
    assert!(authors.fan_out.is_none());

    // Inherited from the route and defaults; the keys may go in a POST body as well.
    let inherited = compile(
        r#"{"defaults":{"max_batch":7,"max_fan_out":3},"routes":[{"name":"r","match":{"path":"/"},"max_batch":9,"calls":[
        {"name":"posts","cluster":"c","path":"/posts"},
        {"name":"authors","cluster":"u","method":"POST","path":"/users/batch","body":{"ids":"{calls.posts.items[*].author}"},
         "join":{"into":"posts.items","on":"author","match":"user.id","as":"a"}}]}]}"#,
    )
    .unwrap();
    let batch = inherited.routes[0].calls[1].batch.as_ref().unwrap();
    assert_eq!((batch.max_keys, batch.max_requests), (9, 3));
}

#[test]
fn batch_joins_are_checked_at_load() {
    let keys = "/users?ids={calls.posts.items[*].author}";
    let cases: Vec<(String, &str)> = vec![
        (
            with_batch("/users", ""),
            r#"route "page" call "authors" key "join": a batch join sends the keys it joins on: put {calls.posts.items[*].author} in the path (or a header or the body)"#,
        ),
        (
            with_batch("/users?ids={calls.posts.items[*].id}", ""),
            r#"route "page" call "authors" key "join": a batch join sends the keys it joins on"#,
        ),
        (
            with_batch(
                "/users/{item}",
                r#","for_each":"calls.posts.items[*].author""#,
            ),
            r#"route "page" call "authors" key "join.match": a for_each join matches each element with its item"#,
        ),
        (
            with_batch(keys, r#","max_batch":0"#),
            r#"route "page" call "authors" key "max_batch": must be between 1 and 1000"#,
        ),
        (
            with_batch(keys, r#","max_batch":1001"#),
            r#"route "page" call "authors" key "max_batch": must be between 1 and 1000"#,
        ),
        (
            with_batch(keys, r#","format":"text""#),
            r#"route "page" call "authors" key "format": a batch join reads an array of objects"#,
        ),
        (
            with_batch(keys, "").replace(r#""match":"id""#, r#""match":"items[*].id""#),
            r#"route "page" call "authors" key "join.match": must be a non-empty dot path without [*]"#,
        ),
        (
            with_batch(keys, "").replace(r#""into":"posts.items""#, r#""into":"post.items""#),
            r#"route "page" call "authors" key "join.into": the route has no call named "post" (did you mean "posts"?)"#,
        ),
        (
            page_with(r#"{"name":"a","cluster":"c","path":"/a","max_batch":5}"#),
            r#"route "page" call "a" key "max_batch": only applies to a batch join (join with match)"#,
        ),
    ];
    for (json, expected) in &cases {
        let e = compile(json).unwrap_err();
        assert!(e.starts_with(expected), "\n got: {e}\nwant: {expected}");
    }
}
