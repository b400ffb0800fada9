//! Micro-benchmark of the per-request core, natively (no Envoy, no Wasm): `cargo bench --bench core`.
//!
//! A 4-call plan is compiled once. One iteration is what the filter does for one client
//! request: `Plan::find` matches the path, `Gather::start` turns the `ClientRequest` into four
//! dispatches, four `Event::Answered` with ~1 KB JSON bodies come back, and the last one
//! yields `Action::Respond` with the aggregated body. Variants:
//!
//! - `nested`: the default layout, upstream bytes validated and spliced as they are;
//! - `merge`: the bodies deep-merged into one object (every body parsed and re-serialised);
//! - `merge_shaped`: `merge` plus per-call `omit`/`rename` and a derived field;
//! - `find_miss`: a request that matches no filter route (the pass-through cost in the core).
//!
//! Quick by design (small sample, short measurement); criterion's usual flags work, e.g.
//! `cargo bench --bench core -- nested`.

use criterion::{BatchSize, Criterion, Throughput};
use gateway_aggregator::gather::{Action, AttemptId, ClientRequest, Event, Gather};
use gateway_aggregator::plan::Plan;
use gateway_aggregator::resilience::MemoryStore;
use gateway_aggregator::testing::{self, route};
use gateway_aggregator::time::Instant;
use serde_json::{json, Value};
use std::hint::black_box;
use std::rc::Rc;
use std::time::Duration;

const CALLS: [&str; 4] = ["a", "b", "c", "d"];

/// The variants: name, the route's `response` (none: the default layout), keys added to every
/// call.
fn variants() -> [(&'static str, Option<Value>, Value); 3] {
    [
        ("nested", None, json!({})),
        ("merge", Some(json!({"layout": "merge"})), json!({})),
        (
            "merge_shaped",
            Some(json!({"layout": "merge", "derive": {
                "summary.items": {"count": "a_items"},
                "summary.max_price": {"max": "b_items[*].price"}}})),
            json!({"omit": ["internal"], "rename": {"updated_at": "meta.updated"}}),
        ),
    ]
}

/// The filter configuration: a route the requests do not match, then the route `agg` with four
/// calls, `response` on the route and `call_keys` added to every call.
fn config(response: Option<Value>, call_keys: &Value) -> String {
    let other = route("other", "/other/{id}").calls(r#"{"name":"x","cluster":"x","path":"/x"}"#);
    let mut agg = route("agg", "/agg/{id}").key("deadline_ms", 1000);
    if let Some(response) = response {
        agg = agg.key("response", response);
    }
    for c in CALLS {
        let mut call =
            json!({"name": c, "cluster": c, "path": "/items/{path.id}?lang={query.lang|en}"});
        if let (Some(call), Some(keys)) = (call.as_object_mut(), call_keys.as_object()) {
            call.extend(keys.clone());
        }
        agg = agg.call(call);
    }
    testing::config([&other, &agg])
}

/// A ~1 KB JSON object for call `name`; every body shares `common` (merged deeply) and has
/// keys of its own.
fn body(name: &str) -> Vec<u8> {
    let items: Vec<String> = (0..11)
        .map(|i| {
            format!(
                r#"{{"id":"{name}-{i}","title":"Item {i} from service {name}","price":{}.95,"tags":["x","y"]}}"#,
                i * 10 + 9
            )
        })
        .collect();
    let text = format!(
        r#"{{"{name}_id":"42","{name}_items":[{}],"common":{{"{name}_seen":true,"region":"eu-west"}},"internal":{{"trace":"{name}-abc"}},"updated_at":"2025-01-15T09:30:00Z"}}"#,
        items.join(",")
    );
    text.into_bytes()
}

struct Fixture {
    plan: Plan,
    bodies: Vec<Vec<u8>>,
}

impl Fixture {
    fn new(response: Option<Value>, call_keys: &Value) -> Result<Fixture, String> {
        let plan =
            Plan::compile(config(response, call_keys).as_bytes()).map_err(|e| e.to_string())?;
        let bodies = CALLS.iter().map(|c| body(c)).collect();
        Ok(Fixture { plan, bodies })
    }

    /// One client request, from route match to the final response body.
    fn request(&self, store: &MemoryStore, bodies: Vec<Vec<u8>>) -> Result<Vec<u8>, String> {
        let path = "/agg/42?lang=de";
        let matched = self
            .plan
            .find("GET", path, &mut |_| None)
            .ok_or("the route does not match")?;
        let headers = matched
            .route
            .headers
            .iter()
            .map(|h| (h == "x-request-id").then(|| "0f6c2d1e-bench".into()))
            .collect();
        let request = ClientRequest {
            captures: matched.captures,
            query: "lang=de".to_string(),
            headers,
            body: None,
        };
        let (mut gather, actions) = Gather::start(
            Rc::clone(&matched.route),
            request,
            Instant::from_micros(0),
            Instant::from_micros(10),
            store,
        );
        let attempts: Vec<AttemptId> = actions
            .iter()
            .filter_map(Action::dispatch)
            .map(|d| d.attempt)
            .collect();
        if attempts.len() != CALLS.len() {
            return Err(format!("{} dispatches, not four", attempts.len()));
        }
        let mut last = Vec::new();
        for ((attempt, body), now) in attempts.into_iter().zip(bodies).zip(100u64..) {
            let event = Event::Answered {
                attempt,
                status: 200,
                headers: Vec::new(),
                body,
            };
            last = gather.on_event(event, Instant::from_micros(now), store);
        }
        match last.pop() {
            Some(Action::Respond(response)) if response.status == 200 => Ok(response.body),
            other => Err(format!(
                "expected a 200 answer after the last answer, got {other:?}"
            )),
        }
    }
}

fn bench_variant(c: &mut Criterion, name: &str, fixture: &Fixture) -> Result<(), String> {
    let store = MemoryStore::default();
    // Sanity check outside the measurement: the answer carries every call.
    let sample = fixture.request(&store, fixture.bodies.clone())?;
    let text = String::from_utf8(sample).map_err(|e| e.to_string())?;
    if let Some(call) = CALLS
        .iter()
        .find(|call| !text.contains(&format!("\"{call}_id\"")))
    {
        return Err(format!("{name}: answer lacks {call}: {text}"));
    }
    let input_bytes: usize = fixture.bodies.iter().map(Vec::len).sum();
    let mut group = c.benchmark_group("request");
    group.throughput(Throughput::Bytes(input_bytes as u64));
    // The bodies are cloned in the setup, outside the measurement: the host hands the core
    // owned buffers it read from Envoy.
    group.bench_function(name, |b| {
        b.iter_batched(
            || fixture.bodies.clone(),
            |bodies| black_box(fixture.request(&store, bodies)),
            BatchSize::SmallInput,
        )
    });
    group.finish();
    Ok(())
}

fn core(c: &mut Criterion) -> Result<(), String> {
    let sizes: Vec<usize> = CALLS.iter().map(|c| body(c).len()).collect();
    eprintln!("core bench: 4 upstream bodies of {sizes:?} bytes");
    for (name, response, call_keys) in variants() {
        bench_variant(c, name, &Fixture::new(response, &call_keys)?)?;
    }

    // A request no filter route matches: what the core adds to a pass-through request.
    let plan = Fixture::new(None, &json!({}))?.plan;
    c.bench_function("find_miss", |b| {
        b.iter(|| {
            black_box(
                plan.find("GET", black_box("/plain/0ms?x=1"), &mut |_| None)
                    .is_none(),
            )
        })
    });
    Ok(())
}

/// What `criterion_group!` and `criterion_main!` would write, for a `core` that returns errors.
fn benches() -> Result<(), String> {
    let mut c = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    core(&mut c)?;
    c.final_summary();
    Ok(())
}

/// `CORE_COUNT=<variant>:<requests>` runs that many requests of one variant without timing
/// them, for an instruction count that does not depend on how busy the machine is:
/// `valgrind --tool=callgrind` once with N requests and once with 0, and the difference over N
/// is the instructions per request (`scripts/core-instructions.sh` does this for every variant).
fn count(spec: &str) -> Result<(), String> {
    let (variant, requests) = spec
        .split_once(':')
        .ok_or("CORE_COUNT=<variant>:<requests>")?;
    let requests: usize = requests
        .parse()
        .map_err(|_| format!("CORE_COUNT: {requests} is not a number of requests"))?;
    let (_, response, call_keys) = variants()
        .into_iter()
        .find(|(name, _, _)| *name == variant)
        .ok_or_else(|| format!("unknown variant {variant}"))?;
    let fixture = Fixture::new(response, &call_keys)?;
    let store = MemoryStore::default();
    // The bodies are copied before the requests, as in the timed benchmark.
    let inputs: Vec<Vec<Vec<u8>>> = (0..requests).map(|_| fixture.bodies.clone()).collect();
    let mut bytes = 0;
    for bodies in inputs {
        bytes += black_box(fixture.request(&store, bodies)?).len();
    }
    println!("{variant}: {requests} requests, {bytes} bytes answered");
    Ok(())
}

fn main() -> Result<(), String> {
    match std::env::var("CORE_COUNT") {
        Ok(spec) => count(&spec),
        Err(_) => benches(),
    }
}
