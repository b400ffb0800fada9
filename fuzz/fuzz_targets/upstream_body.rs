//! Any upstream body through every handling path: validation and splicing, parsing for later
//! calls, per-call shaping, the merge and concat layouts, derived fields, joins (per item and
//! batch) and conditions. The
//! answer is always valid JSON with unique keys at every level (SPEC §4).
#![no_main]

#[path = "../../tests/common/unique_keys.rs"]
mod unique_keys;

use gateway_aggregator::gather::{Action, ClientRequest, Event, Gather, AttemptId};
use gateway_aggregator::time::Instant;
use gateway_aggregator::plan::Plan;
use gateway_aggregator::resilience::MemoryStore;
use gateway_aggregator::testing::route;
use libfuzzer_sys::fuzz_target;
use serde_json::json;
use std::rc::Rc;

/// The routes a body goes through; the first fuzz byte picks one.
fn configs() -> [String; 5] {
    [
        route("r", "/")
            .calls(
                r#"{"name":"a","cluster":"c","path":"/a"},
                   {"name":"b","cluster":"c","path":"/b/{calls.a.id|x}","format":"text"}"#,
            )
            .config(),
        route("r", "/")
            .key(
                "response",
                json!({"layout": "merge", "derive": {"n": {"count": "items"}, "s": {"sum": "items[*].v"}}}),
            )
            .calls(
                r#"{"name":"a","cluster":"c","path":"/a","extract":"data","select":["items","name","x.y"],"omit":["items[*].secret"],"rename":{"name":"title.text"}},
                   {"name":"b","cluster":"c","path":"/b","as":"bee"}"#,
            )
            .config(),
        route("r", "/")
            .key(
                "response",
                json!({"layout": "concat", "sort_by": "score", "order": "desc", "limit": 5}),
            )
            .calls(
                r#"{"name":"a","cluster":"c","path":"/a"},{"name":"b","cluster":"c","path":"/b"}"#,
            )
            .config(),
        route("r", "/")
            .calls(
                r#"{"name":"a","cluster":"c","path":"/a"},
                   {"name":"b","cluster":"c","path":"/u/{item}","for_each":"calls.a.items[*].id","max_fan_out":4,
                    "join":{"into":"a.items","on":"id","as":"detail"},"fallback":{}}"#,
            )
            .config(),
        // A batch join (its chunks' answers matched by key) behind a condition on the same body.
        route("r", "/")
            .calls(
                r#"{"name":"a","cluster":"c","path":"/a"},
                   {"name":"b","cluster":"c","path":"/u?ids={calls.a.items[*].id}","max_batch":2,"max_fan_out":4,
                    "join":{"into":"a.items","on":"id","match":"id","as":"detail"},"fallback":{},
                    "when":{"not":{"equals":["calls.a.skip",true]}}}"#,
            )
            .config(),
    ]
}

thread_local! {
    static PLANS: Vec<Plan> = configs()
        .iter()
        .map(|c| Plan::compile(c.as_bytes()).unwrap_or_else(|e| panic!("{e}")))
        .collect();
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let route =
        PLANS.with(|plans| Rc::clone(&plans[usize::from(selector) % plans.len()].routes[0]));
    let store = MemoryStore::default();
    let request = ClientRequest {
        headers: route.headers.iter().map(|_| None).collect(),
        ..ClientRequest::default()
    };
    let (mut gather, mut actions) = Gather::start(route, request, Instant::from_micros(0), Instant::from_micros(0), &store);
    let status = if selector & 0x80 == 0 { 200 } else { 404 };
    for round in 0..8u64 {
        let attempts: Vec<AttemptId> = actions
            .iter()
            .filter_map(Action::dispatch)
            .map(|d| d.attempt)
            .collect();
        if let Some(Action::Respond(response)) =
            actions.iter().find(|a| matches!(a, Action::Respond(_)))
        {
            if !response.body.is_empty() {
                // Numbers beyond an f64's range are valid JSON and spliced as written;
                // serde_json's Value alone refuses them.
                let parsed = unique_keys::parse_unique_keys(&response.body);
                assert!(
                    parsed.is_ok()
                        || parsed.is_err_and(|e| e.to_string().starts_with("number out of range")),
                    "not JSON with unique keys: {:?}",
                    String::from_utf8_lossy(&response.body)
                );
            }
            return;
        }
        let mut next = Vec::new();
        for attempt in attempts {
            let event = Event::Answered {
                attempt,
                status,
                headers: Vec::new(),
                body: body.to_vec(),
            };
            next.extend(gather.on_event(event, Instant::from_micros(1000 * (round + 1)), &store));
        }
        if next.is_empty() {
            return;
        }
        actions = next;
    }
});
