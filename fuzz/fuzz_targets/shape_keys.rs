//! SPEC §4 under shaping: every answer is JSON with unique keys at every level, and the meta
//! object is the filter's own. The fuzz bytes choose a route — layout (nested, merge,
//! concat), meta key (default, a custom name, null), `as` names, transforms, derived fields,
//! `for_each` with `join`, fallbacks — from a small vocabulary of keys that collide on purpose
//! (`_meta`, `status`, `a`, `b`, the call names), then the upstream answers (bodies built from
//! the same keys, some repeating a key, some not JSON; statuses; resets). Configurations the
//! filter refuses are skipped. The answer must parse with a parser that refuses repeated keys,
//! and a 200 object answer must carry the filter's meta object, agreeing with
//! `x-aggregation-complete`.
#![no_main]

#[path = "../../tests/common/unique_keys.rs"]
mod unique_keys;

use gateway_aggregator::gather::{Action, ClientRequest, Event, Gather, AttemptId};
use gateway_aggregator::time::Instant;
use gateway_aggregator::json_check;
use gateway_aggregator::plan::Plan;
use gateway_aggregator::resilience::MemoryStore;
use gateway_aggregator::testing;
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Map, Value};
use std::rc::Rc;

/// Keys that collide with each other on purpose: the default and a custom meta key, the call
/// names, a digit (an array index in paths), and one plain key.
const KEYS: [&str; 7] = ["_meta", "status", "a", "b", "c", "x", "0"];
const CALLS: [&str; 3] = ["a", "b", "c"];
/// Dot paths over the same keys, for transforms and derived fields.
const PATHS: [&str; 12] = [
    "_meta",
    "_meta.complete",
    "status",
    "a",
    "b",
    "x",
    "a.b",
    "x.a",
    "a._meta",
    "items",
    "items.0.id",
    "0",
];
const READ_PATHS: [&str; 5] = ["items", "items[*].id", "a", "_meta", "x.a"];

fn key<'a>(u: &mut Unstructured<'_>, list: &[&'a str]) -> Result<&'a str> {
    u.choose(list).copied()
}

/// One call of the route, as configuration JSON.
fn call(u: &mut Unstructured<'_>, index: usize, name: &str) -> Result<Value> {
    let mut call = json!({"name": name, "cluster": "c", "path": format!("/{name}")});
    let fan_out = index > 0 && u.ratio(1, 4)?;
    if fan_out {
        call["path"] = json!(format!("/{name}/{{item}}"));
        call["for_each"] = json!("calls.a.items[*].id");
        if u.ratio(1, 2)? {
            call["join"] = json!({"into": "a.items", "on": "id", "as": key(u, &KEYS)?});
        }
    }
    if u.ratio(1, 3)? {
        call["as"] = json!(key(u, &KEYS)?);
    }
    if u.ratio(1, 4)? {
        call["extract"] = json!(key(u, &PATHS)?);
    }
    if u.ratio(1, 4)? {
        call["select"] = json!([key(u, &PATHS)?, key(u, &PATHS)?]);
    }
    if u.ratio(1, 4)? {
        call["omit"] = json!([key(u, &PATHS)?]);
    }
    if u.ratio(1, 3)? {
        let mut rename = Map::new();
        rename.insert(key(u, &PATHS)?.to_string(), json!(key(u, &PATHS)?));
        call["rename"] = Value::Object(rename);
    }
    if u.ratio(1, 3)? {
        call["fallback"] = fallback(u)?;
    } else if u.ratio(1, 6)? {
        call["required"] = json!(true);
    }
    Ok(call)
}

fn fallback(u: &mut Unstructured<'_>) -> Result<Value> {
    Ok(match u.int_in_range(0..=4)? {
        0 => json!({"_meta": {"complete": true}, "x": 1}),
        1 => json!({"status": "ok", "a": {"b": 2}}),
        2 => json!([]),
        3 => json!(7),
        _ => json!({"items": [{"id": 7}], "x": {"a": null}}),
    })
}

/// The route configuration; its meta key (`None`: no meta object) as a second value.
fn route(u: &mut Unstructured<'_>) -> Result<(String, Option<String>)> {
    let layout = *u.choose(&["nested", "merge", "concat"])?;
    let mut response = json!({"layout": layout});
    let meta = match u.int_in_range(0..=3)? {
        0 => Some("_meta".to_string()),
        1 => {
            response["meta"] = json!("status");
            Some("status".to_string())
        }
        2 => {
            response["meta"] = Value::Null;
            None
        }
        _ => {
            // Clashes with a call name or an `as`, unless nothing uses it.
            let name = key(u, &KEYS)?;
            response["meta"] = json!(name);
            Some(name.to_string())
        }
    };
    if u.ratio(1, 2)? {
        let mut derive = Map::new();
        for _ in 0..u.int_in_range(1..=2)? {
            let op = match u.int_in_range(0..=2)? {
                0 => json!({"count": key(u, &READ_PATHS)?}),
                1 => json!({"coalesce": [key(u, &READ_PATHS)?, key(u, &READ_PATHS)?]}),
                _ => json!({"concat": [key(u, &READ_PATHS)?]}),
            };
            derive.insert(key(u, &PATHS)?.to_string(), op);
        }
        response["derive"] = Value::Object(derive);
    }
    let count = u.int_in_range(1..=3)?;
    let calls = CALLS
        .iter()
        .take(count)
        .enumerate()
        .map(|(index, name)| call(u, index, name))
        .collect::<Result<Vec<_>>>()?;
    let mut route = testing::route("r", "/")
        .key("expose_errors", u.ratio(1, 2)?)
        .key("max_fan_out", 4)
        .key("response", response);
    for call in calls {
        route = route.call(call);
    }
    Ok((route.config(), meta))
}

/// A JSON text from the key vocabulary, as text so that it can repeat a key (at any depth).
fn body(u: &mut Unstructured<'_>, depth: u32) -> Result<String> {
    Ok(match u.int_in_range(0..=if depth > 2 { 3 } else { 6 })? {
        0 => "7".to_string(),
        1 => "\"7\"".to_string(),
        2 => "null".to_string(),
        3 => "true".to_string(),
        4 => format!("[{},{}]", body(u, depth + 1)?, body(u, depth + 1)?),
        5 => {
            let ids = [r#"{"id":7}"#, r#"{"id":"7"}"#, r#"{"id":"u1","_meta":1}"#];
            let items: Vec<&str> = (0..u.int_in_range(0..=3)?)
                .map(|_| u.choose(&ids).copied())
                .collect::<Result<_>>()?;
            format!(r#"{{"items":[{}],"x":{}}}"#, items.join(","), body(u, depth + 1)?)
        }
        _ => {
            let mut members = Vec::new();
            for _ in 0..u.int_in_range(0..=4)? {
                let name = key(u, &KEYS)?;
                // Sometimes escaped: equal to its plain spelling once unescaped.
                let name = match name.strip_prefix('_') {
                    Some(rest) if u.ratio(1, 4)? => format!("\\u005f{rest}"),
                    _ => name.to_string(),
                };
                members.push(format!("\"{name}\":{}", body(u, depth + 1)?));
            }
            format!("{{{}}}", members.join(","))
        }
    })
}

fn event(u: &mut Unstructured<'_>, attempt: AttemptId) -> Result<Event> {
    Ok(match u.int_in_range(0..=9)? {
        0 => Event::Reset { attempt },
        1 => Event::Answered {
            attempt,
            status: *u.choose(&[404, 503])?,
            headers: Vec::new(),
            body: body(u, 0)?.into_bytes(),
        },
        2 => Event::Answered {
            attempt,
            status: 200,
            headers: Vec::new(),
            body: u.arbitrary::<&[u8]>()?.to_vec(),
        },
        _ => Event::Answered {
            attempt,
            status: 200,
            headers: Vec::new(),
            body: body(u, 0)?.into_bytes(),
        },
    })
}

fn run(data: &[u8]) -> Result<()> {
    let mut u = Unstructured::new(data);
    let (config, meta) = route(&mut u)?;
    let Ok(plan) = Plan::compile(config.as_bytes()) else {
        return Ok(());
    };
    let Some(route) = plan.routes.first().map(Rc::clone) else {
        return Ok(());
    };
    let store = MemoryStore::default();
    let request = ClientRequest {
        headers: route.headers.iter().map(|_| None).collect(),
        ..ClientRequest::default()
    };
    let (mut gather, mut actions) = Gather::start(route, request, Instant::from_micros(0), Instant::from_micros(0), &store);
    for round in 1..=8u64 {
        if let Some(Action::Respond(response)) =
            actions.iter().find(|a| matches!(a, Action::Respond(_)))
        {
            check_answer(
                &response.body,
                response.status,
                response.header("x-aggregation-complete"),
                meta.as_deref(),
            );
            return Ok(());
        }
        let attempts: Vec<AttemptId> = actions
            .iter()
            .filter_map(Action::dispatch)
            .map(|d| d.attempt)
            .collect();
        let mut next = Vec::new();
        for attempt in attempts {
            next.extend(gather.on_event(event(&mut u, attempt)?, Instant::from_micros(1000 * round), &store));
        }
        if next.is_empty() {
            // Nothing more to answer: the deadline gives the answer.
            next = gather.on_timer(Instant::from_micros(10_000_000), &store);
        }
        actions = next;
    }
    Ok(())
}

/// Unique keys at every level (two independent checks: serde's parse with a key set per
/// object, and the filter's own validator, which also reads numbers beyond an f64); and on a
/// 200 object answer, the meta object is the filter's.
fn check_answer(body: &[u8], status: u16, complete: Option<&str>, meta: Option<&str>) {
    if body.is_empty() {
        return;
    }
    let text = String::from_utf8_lossy(body);
    let parsed = match unique_keys::parse_unique_keys(body) {
        Ok(value) => Some(value),
        // Valid JSON that serde_json's Value cannot hold (until arbitrary_precision).
        Err(e) if e.to_string().starts_with("number out of range") => None,
        Err(e) => panic!("answer is not JSON with unique keys ({e}): {text}"),
    };
    match json_check::check(body, json_check::DEPTH_CAPACITY) {
        Ok(()) => {}
        Err(e) if matches!(e.problem, json_check::Problem::TooDeep(_)) => {}
        Err(e) => panic!("json_check refuses the answer ({e}): {text}"),
    }
    if let (Some(Value::Object(answer)), Some(meta), 200) = (&parsed, meta, status) {
        let complete = complete.map(|c| Value::Bool(c == "true"));
        assert_eq!(
            answer.get(meta).and_then(|m| m.get("complete")),
            complete.as_ref(),
            "the meta object is the filter's own: {text}"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let _ = run(data);
});
