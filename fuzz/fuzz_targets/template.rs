//! Hostile client input rendered into a call's path, query and headers: values are always
//! encoded data in a path, and never split a header line.
#![no_main]

use gateway_aggregator::time::Instant;
use gateway_aggregator::gather::{Action, ClientRequest, Gather};
use gateway_aggregator::plan::Plan;
use gateway_aggregator::resilience::MemoryStore;
use libfuzzer_sys::fuzz_target;

const CONFIG: &str = r#"{"routes":[{"name":"r","match":{"path":"/items/{id}/{rest*}"},"calls":[
  {"name":"a","cluster":"c","path":"/v1/{path.id}/{path.rest}?q={query.q|none}&h={header.x-h|none}",
   "headers":{"x-user":"u {query.u|anon} {header.x-h|-}"},"body":{"q":"{query.q}","id":"{path.id}"}}]}]}"#;

thread_local! {
    static PLAN: Plan = Plan::compile(CONFIG.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
}

/// Characters a substituted value may leave in a path or query: unreserved, and `%` escapes.
fn encoded(value: &str) -> bool {
    value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-._~%,".contains(&b))
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(3, '\u{1}');
    let path = parts.next().unwrap_or("");
    let query = parts.next().unwrap_or("");
    let header = parts.next().unwrap_or("");
    let mut read = |_: &str| None;
    let found = PLAN.with(|plan| plan.find("GET", &format!("/items/{path}?{query}"), &mut read));
    let Some(matched) = found else {
        return;
    };
    let request = ClientRequest {
        captures: matched.captures,
        query: query.to_string(),
        headers: matched
            .route
            .headers
            .iter()
            .map(|name| (name == "x-h").then(|| header.into()))
            .collect(),
        body: None,
    };
    let (_, actions) = Gather::start(matched.route, request, Instant::from_micros(0), Instant::from_micros(0), &MemoryStore::default());
    for dispatch in actions.iter().filter_map(Action::dispatch) {
        for (name, value) in &dispatch.request.headers {
            assert!(!value.contains(['\r', '\n', '\0']), "{name}: {value:?}");
            if name == ":path" {
                let rest = value
                    .strip_prefix("/v1/")
                    .unwrap_or_else(|| panic!("{value}"));
                let (segments, query) = rest.split_once("?q=").unwrap_or_else(|| panic!("{value}"));
                let (id, rest_segments) = segments
                    .split_once('/')
                    .unwrap_or_else(|| panic!("{value}"));
                assert!(encoded(id), "id injected: {value}");
                assert!(
                    rest_segments
                        .split('/')
                        .all(|s| encoded(s) && s != ".." && s != "."),
                    "{value}"
                );
                let (q, h) = query.split_once("&h=").unwrap_or_else(|| panic!("{value}"));
                assert!(encoded(q) && encoded(h), "query injected: {value}");
            }
        }
        if let Some(body) = &dispatch.request.body {
            assert!(serde_json::from_slice::<serde_json::Value>(&body).is_ok());
        }
    }
});
