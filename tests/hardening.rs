//! Hardening: hostile client input and upstream faults under concurrent load. Every answer is
//! well-formed with a SPEC status, nothing waits past the deadline, no VM fails, memory stays
//! steady, and nothing the client sends is ever injected into an upstream request.

mod common;

use common::*;
use gateway_aggregator::testing::{config, route, RouteJson};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// Statuses the filter may answer with (SPEC §4, §3.4, §5, §6), besides what Envoy itself
/// answers to malformed requests (431 headers too large, 400).
const SPEC_STATUSES: [u16; 8] = [200, 400, 404, 413, 431, 502, 503, 504];

fn echo() -> Upstream {
    Upstream::json(r#"{"ok":true}"#)
}

const HOSTILE_CONFIG: &str = r#"{"routes":[
  {"name":"item","match":{"path":"/items/{id}"},"calls":[
    {"name":"a","cluster":"a","path":"/a/{path.id}?q={query.q|none}","required":true,
     "headers":{"x-user":"{header.x-user|anon}"}},
    {"name":"b","cluster":"a","path":"/b"}]},
  {"name":"files","match":{"path":"/files/{rest*}"},"calls":[
    {"name":"f","cluster":"a","path":"/store/{path.rest}","required":true}]}]}"#;

/// Every upstream request: path made only of expected literals and encoded data, no header
/// value with a line break.
fn assert_nothing_injected(hits: &[Recorded]) {
    for hit in hits {
        let (path, query) = hit.path.split_once('?').unwrap_or((&hit.path, ""));
        let segments: Vec<&str> = path.split('/').collect();
        assert!(
            matches!(segments.get(1).copied(), Some("a" | "b" | "store")),
            "unexpected upstream path {}",
            hit.path
        );
        if segments.get(1) == Some(&"a") {
            assert_eq!(
                segments.len(),
                3,
                "a capture added a path segment: {}",
                hit.path
            );
        }
        assert!(
            !segments.iter().any(|s| *s == ".." || *s == "."),
            "{}",
            hit.path
        );
        assert!(
            !query.contains('&'),
            "a value added a query parameter: {}",
            hit.path
        );
        assert!(!hit.path.contains('#'));
        for (name, value) in &hit.headers {
            assert!(!value.contains(['\r', '\n', '\0']), "{name}: {value:?}");
        }
        assert!(hit.header("x-injected").is_none());
    }
}

#[test]
fn hostile_client_input_gets_clear_answers_and_never_reaches_upstreams_as_syntax() {
    let upstream = echo();
    let envoy = Envoy::builder(HOSTILE_CONFIG)
        .cluster("a", upstream.port())
        .start();
    let long = "x".repeat(8000);
    let many_params: String = (0..3000).map(|i| format!("p{i}=v&")).collect();
    let many_fields = vec!["a"; 3000].join(",");
    let paths = vec![
        format!("/items/{long}"),
        format!("/items/1?{many_params}q=last"),
        format!("/items/1?fields={many_fields}"),
        format!(
            "/items/1?fields={}",
            (0..3000)
                .map(|i| format!("f{i}"))
                .collect::<Vec<_>>()
                .join(",")
        ),
        "/items/%ff%fe".to_string(),
        "/items/%zz%".to_string(),
        "/items/a%2Fb%3Fc%23d%26e%0D%0Ax-injected:%201".to_string(),
        "/items/1?q=%0D%0Ax-injected:%201&q=2".to_string(),
        "/items/1?q=a%26b%3Dc%23d".to_string(),
        "/files/a/%2E%2E/%2E%2E/etc/passwd".to_string(),
        "/files/a/b%2F..%2F..%2Fc".to_string(),
        "/files/./x".to_string(),
        format!("/files/{}", vec!["d"; 2000].join("/")),
    ];
    for path in &paths {
        let response = envoy.get(path);
        assert!(
            SPEC_STATUSES.contains(&response.status),
            "{path}: {}",
            response.status
        );
        if response.header("content-type") == Some("application/json") {
            assert!(parse_unique_keys(&response.body).is_ok(), "{path}");
        }
    }
    assert_eq!(
        envoy.get("/items/%ff").json()["error"]["reason"],
        "invalid_input"
    );
    assert_eq!(envoy.get("/files/a/%2E%2E/etc").status, 400);
    assert_eq!(
        envoy
            .get(&format!("/items/1?fields={}", vec!["a"; 3000].join(",")))
            .status,
        200
    );

    // Header values: control characters from percent-decoding are refused; bytes that are not
    // UTF-8 count as absent; duplicates are sent once, never as an injected line.
    let raw = |bytes: &[u8]| raw_request(envoy.port(), bytes).unwrap();
    let latin1 =
        raw(b"GET /items/1 HTTP/1.1\r\nhost: x\r\nx-user: caf\xe9\r\nconnection: close\r\n\r\n");
    assert_eq!(latin1.status, 200);
    let duplicate = raw(b"GET /items/1 HTTP/1.1\r\nhost: x\r\nx-user: one\r\nx-user: two\r\nconnection: close\r\n\r\n");
    assert_eq!(duplicate.status, 200);
    let tab = raw(b"GET /items/1 HTTP/1.1\r\nhost: x\r\nx-user: a\tb\r\nconnection: close\r\n\r\n");
    assert_eq!(tab.status, 200);
    let users: Vec<String> = upstream
        .hits()
        .iter()
        .filter_map(|h| h.header("x-user").map(str::to_string))
        .collect();
    assert!(
        users.contains(&"anon".to_string()),
        "latin-1 counted as absent: {users:?}"
    );

    assert_nothing_injected(&upstream.hits());
    envoy.assert_no_vm_failures();
}

#[test]
fn credentials_and_upstream_internals_never_leak() {
    let upstream = Upstream::start(|r| {
        if r.path.starts_with("/broken") {
            Behavior::Reply(Reply::json(
                500,
                r#"{"stack":"at db.internal:5432","host":"10.0.3.7"}"#,
            ))
        } else {
            Behavior::Reply(Reply::json(200, r#"{"ok":true}"#))
        }
    });
    let config = r#"{"routes":[{"name":"r","match":{"path":"/x"},"calls":[
        {"name":"plain","cluster":"a","path":"/plain"},
        {"name":"authed","cluster":"a","path":"/authed","forward_headers":["authorization"]},
        {"name":"broken","cluster":"a","path":"/broken"},
        {"name":"req","cluster":"a","path":"/broken/req","required":true}]}]}"#;
    let envoy = Envoy::builder(config).cluster("a", upstream.port()).start();
    let response = envoy.request(
        "GET",
        "/x",
        &[
            ("authorization", "Bearer s3cret"),
            ("cookie", "sid=s3cret"),
            ("proxy-authorization", "Basic s3cret"),
        ],
        b"",
    );
    assert_eq!(response.status, 502);
    assert!(!response.text().contains("10.0.3.7") && !response.text().contains("db.internal"));
    for hit in upstream.hits() {
        let allowed = hit.path == "/authed";
        for (name, value) in &hit.headers {
            assert!(
                !value.contains("s3cret") || (allowed && name == "authorization"),
                "{} got {name}",
                hit.path
            );
        }
    }
}

/// Upstream faults for the load test, one cluster each.
fn faulty_upstreams() -> Vec<(&'static str, Upstream)> {
    let oversized = format!(r#"{{"blob":"{}"}}"#, "x".repeat(300_000));
    let deep = "[".repeat(5000) + &"]".repeat(5000);
    vec![
        ("fast", Upstream::json(r#"{"fast":1}"#)),
        ("hang", Upstream::start(|_| Behavior::Hang)),
        ("reset", Upstream::start(|_| Behavior::Reset)),
        (
            "cut",
            Upstream::start(|_| {
                Behavior::ResetAfterHeaders(Reply::json(
                    200,
                    r#"{"cut":"xxxxxxxxxxxxxxxxxxxxxxxx"}"#,
                ))
            }),
        ),
        (
            "garbage",
            Upstream::start(|_| Behavior::Reply(Reply::json(200, "{\"half\": [1, 2"))),
        ),
        (
            "oversized",
            Upstream::start(move |_| Behavior::Reply(Reply::json(200, &oversized))),
        ),
        (
            "deep",
            Upstream::start(move |_| Behavior::Reply(Reply::json(200, &deep))),
        ),
        (
            "trickle",
            Upstream::start(|_| Behavior::Trickle {
                reply: Reply::json(
                    200,
                    r#"{"slowly":"0123456789012345678901234567890123456789"}"#,
                ),
                chunk: 4,
                every: Duration::from_millis(40),
            }),
        ),
        (
            "error",
            Upstream::start(|_| Behavior::Reply(Reply::json(503, "{}"))),
        ),
    ]
}

/// The reason each faulty call must report (SPEC §4, README).
const EXPECTED_REASONS: [(&str, &str); 8] = [
    ("hang", "timeout"),
    ("reset", "connect"),
    ("cut", "connect"),
    ("garbage", "invalid_body"),
    ("oversized", "too_large"),
    ("deep", "invalid_body"),
    ("trickle", "timeout"),
    ("error", "status"),
];

/// The status a required call's fault gives the client (SPEC §4).
const REQUIRED_STATUS: [(&str, u16); 9] = [
    ("fast", 200),
    ("hang", 504),
    ("reset", 502),
    ("cut", 502),
    ("garbage", 502),
    ("oversized", 502),
    ("deep", 502),
    ("trickle", 504),
    ("error", 502),
];

fn memory_allocated(envoy: &Envoy) -> u64 {
    let memory = request_to(envoy.admin_port(), "GET", "/memory", &[], b"").json();
    memory
        .get("allocated")
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[test]
fn faults_under_concurrent_load_stay_bounded_and_well_reported() {
    let upstreams = faulty_upstreams();
    // One route with every fault as an optional call, and one route per fault where the call
    // is required (so the fault decides the status).
    let mut all = route("all", "/all").key("deadline_ms", 400);
    for (name, _) in &upstreams {
        all = all.call(
            json!({"name": name, "cluster": name, "path": format!("/{name}"),
                   "timeout_ms": 250, "max_body_bytes": 100000}),
        );
    }
    let required_routes: Vec<RouteJson> = upstreams
        .iter()
        .map(|(name, _)| {
            route(&format!("required-{name}"), &format!("/required/{name}"))
                .key("deadline_ms", 400)
                .call(
                    json!({"name": "x", "cluster": name, "path": format!("/{name}"),
                           "required": true, "timeout_ms": 250, "max_body_bytes": 100000}),
                )
        })
        .collect();
    let config = config(std::iter::once(&all).chain(&required_routes));
    let mut builder = Envoy::builder(&config).concurrency(2);
    for (name, upstream) in &upstreams {
        builder = builder.cluster(name, upstream.port());
    }
    let envoy = Arc::new(builder.start());

    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let deadline_margin = Duration::from_millis(400 + 600);
    let mut memory = Vec::new();
    let workers: Vec<_> = (0..8)
        .map(|i| {
            let (envoy, stop, answered) =
                (Arc::clone(&envoy), Arc::clone(&stop), Arc::clone(&answered));
            thread::spawn(move || {
                let mut n = 0;
                while !stop.load(Ordering::SeqCst) {
                    let fault = REQUIRED_STATUS[(i + n) % REQUIRED_STATUS.len()];
                    let path = if (i + n) % 3 == 0 {
                        format!("/required/{}", fault.0)
                    } else {
                        "/all".to_string()
                    };
                    let response = envoy.get(&path);
                    assert!(
                        SPEC_STATUSES.contains(&response.status),
                        "{path}: {}",
                        response.status
                    );
                    assert!(
                        response.elapsed < deadline_margin,
                        "{path} took {:?}",
                        response.elapsed
                    );
                    let body: Value = parse_unique_keys(&response.body).unwrap_or_else(|e| {
                        panic!(
                            "{path}: not JSON with unique keys ({e}): {}",
                            response.text()
                        )
                    });
                    if path == "/all" {
                        assert_eq!(response.status, 200);
                        let errors = &body["_meta"]["errors"];
                        for (call, reason) in EXPECTED_REASONS {
                            assert_eq!(errors[call]["reason"], reason, "{call}: {body}");
                        }
                        assert_eq!(body["fast"], serde_json::json!({"fast": 1}));
                    } else {
                        assert_eq!(response.status, fault.1, "{path}: {body}");
                    }
                    answered.fetch_add(1, Ordering::SeqCst);
                    n += 1;
                }
            })
        })
        .collect();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(20) {
        thread::sleep(Duration::from_secs(2));
        memory.push(memory_allocated(&envoy));
    }
    stop.store(true, Ordering::SeqCst);
    for worker in workers {
        worker.join().unwrap();
    }
    let total = answered.load(Ordering::SeqCst);
    assert!(total > 100, "only {total} answers in 20 s");
    // Steady after warm-up: the last readings stay within 25% of the reading after 6 s.
    let baseline = memory[2].max(1);
    let last = *memory.last().unwrap();
    assert!(
        last <= baseline + baseline / 4,
        "memory grew from {baseline} to {last}: {memory:?}"
    );
    envoy.assert_no_vm_failures();
    let reasons: HashSet<&str> = EXPECTED_REASONS.iter().map(|(_, r)| *r).collect();
    assert_eq!(
        reasons.len(),
        5,
        "every documented fault reason was exercised"
    );
}
