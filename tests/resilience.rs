//! Resilience (SPEC §6) in real Envoy: retries, hedging, the shared cache with stale fallback,
//! circuit breakers, wait strategies and overload. Sharing across workers is tested with
//! `--concurrency 2`.

mod common;

use common::*;
use serde_json::json;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

/// Fails with 503 for the first `failures` requests, then answers 200 `{"attempt":n}`.
fn flaky(failures: usize) -> Upstream {
    let count = AtomicUsize::new(0);
    Upstream::start(move |_| {
        let n = count.fetch_add(1, Ordering::SeqCst) + 1;
        if n <= failures {
            Behavior::Reply(Reply::json(503, r#"{"busy":true}"#))
        } else {
            Behavior::Reply(Reply::json(200, &format!(r#"{{"attempt":{n}}}"#)))
        }
    })
}

#[test]
fn a_retry_succeeds_on_the_third_attempt() {
    let service = flaky(2);
    let config = r#"{"routes":[{"name":"r","match":{"path":"/x"},"calls":[
        {"name":"a","cluster":"a","path":"/","retries":{"attempts":3,"backoff_ms":20,"on":["5xx"]}}]}]}"#;
    let envoy = Envoy::builder(config).cluster("a", service.port()).start();
    let response = envoy.get("/x");
    assert_eq!(response.status, 200);
    assert_eq!(
        response.json(),
        json!({"a": {"attempt": 3}, "_meta": {"complete": true, "attempts": {"a": 3}}})
    );
    assert_eq!(service.hit_count(), 3, "exactly three upstream requests");
    assert!(response
        .header("server-timing")
        .unwrap()
        .contains("attempts=3"));
    response.assert_took(35, 2000, "two 20 ms backoffs");
    envoy.assert_no_vm_failures();
}

#[test]
fn a_post_is_not_retried_unless_it_says_unsafe() {
    let plain = flaky(1);
    let marked = flaky(1);
    let config = r#"{"defaults":{"retries":{"attempts":3,"backoff_ms":0}},"routes":[{"name":"r","match":{"path":"/x"},"calls":[
        {"name":"post","cluster":"plain","method":"POST","path":"/"},
        {"name":"unsafe","cluster":"marked","method":"POST","path":"/","unsafe":true}]}]}"#;
    let envoy = Envoy::builder(config)
        .cluster("plain", plain.port())
        .cluster("marked", marked.port())
        .start();
    let response = envoy.get("/x");
    assert_eq!(
        response.json()["_meta"]["errors"]["post"],
        json!({"reason": "status", "status": 503})
    );
    assert_eq!(plain.hit_count(), 1, "a POST is sent once");
    assert_eq!(response.json()["unsafe"], json!({"attempt": 2}));
    assert_eq!(marked.hit_count(), 2);
}

#[test]
fn a_hedge_answers_fast_when_the_first_attempt_stalls() {
    let first = Arc::new(AtomicBool::new(true));
    let service = Upstream::start(move |_| {
        if first.swap(false, Ordering::SeqCst) {
            Behavior::Reply(Reply::json(200, r#""stalled""#).delay_ms(2000))
        } else {
            Behavior::Reply(Reply::json(200, r#""hedged""#))
        }
    });
    let config = r#"{"routes":[{"name":"r","match":{"path":"/x"},"calls":[
        {"name":"a","cluster":"a","path":"/","timeout_ms":3000,"hedge_after_ms":80}]}]}"#;
    let envoy = Envoy::builder(config).cluster("a", service.port()).start();
    let response = envoy.get("/x");
    assert_eq!(response.json()["a"], "hedged");
    response.assert_took(70, 800, "the hedge answers long before the stalled attempt");
    assert_eq!(service.hit_count(), 2);
    envoy.assert_no_vm_failures();
}

#[test]
fn hedges_and_backoffs_stay_with_their_own_request_under_concurrency() {
    let seen = std::sync::Mutex::new(std::collections::HashMap::<String, usize>::new());
    let service = Upstream::start(move |r| {
        let id = r.path.trim_start_matches("/item/").to_string();
        let attempt = {
            let mut seen = seen.lock().unwrap();
            let count = seen.entry(id.clone()).or_insert(0);
            *count += 1;
            *count
        };
        // First attempts of ids ending in 0 fail (a retry after backoff answers); first
        // attempts of two-character ids stall (a hedge answers). Every answer carries its id.
        match (attempt, id.ends_with('0'), id.len() == 2) {
            (1, true, _) => Behavior::Reply(Reply::json(503, "{}")),
            (1, false, true) => {
                Behavior::Reply(Reply::json(200, &format!(r#""{id}""#)).delay_ms(3000))
            }
            _ => Behavior::Reply(Reply::json(200, &format!(r#""{id}""#)).delay_ms(5)),
        }
    });
    let config = r#"{"routes":[{"name":"r","match":{"path":"/x/{id}"},"calls":[
        {"name":"a","cluster":"a","path":"/item/{path.id}","timeout_ms":5000,"hedge_after_ms":40,"retries":{"attempts":3,"backoff_ms":10}}]}]}"#;
    let envoy = Arc::new(
        Envoy::builder(config)
            .cluster("a", service.port())
            .concurrency(2)
            .start(),
    );
    let started = std::time::Instant::now();
    let clients: Vec<_> = (0..60)
        .map(|i| {
            let envoy = Arc::clone(&envoy);
            thread::spawn(move || {
                let id = format!("n{i}");
                let response = envoy.get(&format!("/x/{id}"));
                assert_eq!(response.status, 200, "{}", response.text());
                assert_eq!(response.json()["a"], json!(id), "{}", response.text());
            })
        })
        .collect();
    for client in clients {
        client.join().unwrap();
    }
    assert!(
        started.elapsed() < Duration::from_millis(2000),
        "hedges did not beat the 3 s stalls: {:?}",
        started.elapsed()
    );
    envoy.assert_no_vm_failures();
}

#[test]
fn a_fresh_cache_hit_calls_nothing_and_a_stale_entry_stands_in_for_failures() {
    let healthy = Arc::new(AtomicBool::new(true));
    let switch = Arc::clone(&healthy);
    let service = Upstream::start(move |r| {
        if switch.load(Ordering::SeqCst) {
            Behavior::Reply(Reply::json(200, &format!(r#"{{"path":"{}"}}"#, r.path)))
        } else {
            Behavior::Reply(Reply::json(500, "{}"))
        }
    });
    let config = r#"{"routes":[{"name":"r","match":{"path":"/p/{id}"},"calls":[
        {"name":"a","cluster":"a","path":"/p/{path.id}","cache":{"ttl_ms":300,"stale_if_error_ms":10000}}]}]}"#;
    let envoy = Envoy::builder(config).cluster("a", service.port()).start();
    assert_eq!(envoy.get("/p/1").json()["a"]["path"], "/p/1");
    let hit = envoy.get("/p/1");
    assert_eq!(
        hit.json(),
        json!({"a": {"path": "/p/1"}, "_meta": {"complete": true}})
    );
    assert!(hit
        .header("server-timing")
        .unwrap()
        .contains(r#"desc="cache""#));
    assert_eq!(
        service.hit_count(),
        1,
        "the fresh hit made no upstream call"
    );
    assert_eq!(
        envoy.get("/p/2").json()["a"]["path"],
        "/p/2",
        "another path, another entry"
    );
    assert_eq!(service.hit_count(), 2);

    healthy.store(false, Ordering::SeqCst);
    thread::sleep(Duration::from_millis(400));
    let stale = envoy.get("/p/1");
    assert_eq!(stale.status, 200);
    let body = stale.json();
    assert_eq!(body["a"], json!({"path": "/p/1"}));
    assert_eq!(body["_meta"]["complete"], false);
    let age = body["_meta"]["stale"]["a"]["age_ms"].as_u64().unwrap();
    assert!((390..5000).contains(&age), "age {age}");
    assert_eq!(stale.header("x-aggregation-complete"), Some("false"));
    assert_eq!(stale.header("cache-control"), Some("no-store"));
    assert_eq!(
        service.hit_count(),
        3,
        "the stale entry was served after the upstream failed"
    );
}

#[test]
fn stale_entries_stand_in_per_item_of_a_for_each_call() {
    let healthy = Arc::new(AtomicBool::new(true));
    let switch = Arc::clone(&healthy);
    let list = Upstream::json(r#"{"items":[{"id":"1"},{"id":"2"}]}"#);
    let items = Upstream::start(move |r| {
        if r.path == "/i/2" && !switch.load(Ordering::SeqCst) {
            Behavior::Reply(Reply::json(500, "{}"))
        } else {
            Behavior::Reply(Reply::json(200, &format!(r#"{{"path":"{}"}}"#, r.path)))
        }
    });
    let config = r#"{"routes":[{"name":"r","match":{"path":"/list"},"calls":[
        {"name":"a","cluster":"list","path":"/list"},
        {"name":"b","cluster":"items","path":"/i/{item}","for_each":"calls.a.items[*].id",
         "cache":{"ttl_ms":300,"stale_if_error_ms":10000}}]}]}"#;
    let envoy = Envoy::builder(config)
        .cluster("list", list.port())
        .cluster("items", items.port())
        .start();
    let fresh = envoy.get("/list");
    assert_eq!(
        fresh.json()["b"],
        json!([{"path": "/i/1"}, {"path": "/i/2"}])
    );
    assert_eq!(items.hit_count(), 2);

    healthy.store(false, Ordering::SeqCst);
    thread::sleep(Duration::from_millis(400));
    let response = envoy.get("/list");
    assert_eq!(response.status, 200);
    let body = response.json();
    assert_eq!(
        body["b"],
        json!([{"path": "/i/1"}, {"path": "/i/2"}]),
        "item 2 from its stale entry"
    );
    assert_eq!(body["_meta"]["complete"], false);
    let stale = &body["_meta"]["stale"]["b"]["items"];
    let age = stale["2"]["age_ms"]
        .as_u64()
        .unwrap_or_else(|| panic!("{body}"));
    assert!((390..5000).contains(&age), "age {age}");
    assert!(stale.get("1").is_none(), "item 1 was fetched fresh: {body}");
    assert_eq!(items.hit_count(), 4, "both items were asked for again");
    envoy.assert_no_vm_failures();
}

#[test]
fn a_credential_without_vary_is_refused_at_configure_time() {
    let config = r#"{"routes":[{"name":"r","match":{"path":"/me"},"calls":[
        {"name":"me","cluster":"c","path":"/me","forward_headers":["authorization"],"cache":{"ttl_ms":1000}}]}]}"#;
    let line = Envoy::builder(config)
        .cluster("c", closed_port())
        .rejection();
    assert!(
        line.contains(r#"route "r" call "me" key "cache.vary": the call sends "authorization": list it in vary"#),
        "{line}"
    );
}

#[test]
fn cached_answers_never_cross_a_vary_boundary() {
    let service = Upstream::start(|r| {
        Behavior::Reply(Reply::json(
            200,
            &format!(
                r#"{{"user":"{}"}}"#,
                r.header("authorization").unwrap_or("-")
            ),
        ))
    });
    let config = r#"{"routes":[{"name":"r","match":{"path":"/me"},"calls":[
        {"name":"me","cluster":"c","path":"/me","forward_headers":["authorization"],"cache":{"ttl_ms":60000,"vary":["authorization"]}}]}]}"#;
    let envoy = Envoy::builder(config).cluster("c", service.port()).start();
    let as_user = |token: &str| {
        envoy
            .request("GET", "/me", &[("authorization", token)], b"")
            .json()["me"]["user"]
            .clone()
    };
    assert_eq!(as_user("alice"), "alice");
    assert_eq!(as_user("bob"), "bob");
    assert_eq!(as_user("alice"), "alice");
    assert_eq!(
        service.hit_count(),
        2,
        "alice's second request was a hit, bob never got hers"
    );
}

#[test]
fn the_breaker_opens_after_failures_then_probes_and_closes() {
    let healthy = Arc::new(AtomicBool::new(false));
    let switch = Arc::clone(&healthy);
    let service = Upstream::start(move |_| {
        if switch.load(Ordering::SeqCst) {
            Behavior::Reply(Reply::json(200, r#""up""#))
        } else {
            Behavior::Reply(Reply::json(503, "{}"))
        }
    });
    let config = r#"{"routes":[{"name":"r","match":{"path":"/x"},"calls":[
        {"name":"a","cluster":"flaky","path":"/","circuit_breaker":{"failures":3,"open_ms":500},"fallback":"down"}]}]}"#;
    let envoy = Envoy::builder(config)
        .cluster("flaky", service.port())
        .start();
    for _ in 0..3 {
        assert_eq!(
            envoy.get("/x").json()["_meta"]["errors"]["a"]["reason"],
            "status"
        );
    }
    for _ in 0..5 {
        let response = envoy.get("/x");
        assert_eq!(
            response.json()["_meta"]["errors"]["a"]["reason"],
            "circuit_open"
        );
        assert_eq!(response.json()["a"], "down");
    }
    assert_eq!(service.hit_count(), 3, "an open circuit sends nothing");
    assert!(envoy
        .log()
        .contains("circuit for cluster flaky opened after 3 consecutive failures"));

    healthy.store(true, Ordering::SeqCst);
    thread::sleep(Duration::from_millis(600));
    assert_eq!(
        envoy.get("/x").json()["a"],
        "up",
        "the probe goes through and succeeds"
    );
    assert_eq!(envoy.get("/x").json()["a"], "up", "closed again");
    assert_eq!(service.hit_count(), 5);
    assert!(envoy
        .log()
        .contains("circuit for cluster flaky closed: probe succeeded"));
    envoy.assert_no_vm_failures();
}

#[test]
fn cache_and_breaker_state_are_shared_by_both_workers() {
    let service = Upstream::json(r#"{"v":1}"#);
    let broken = Upstream::start(|_| Behavior::Reply(Reply::json(500, "{}")));
    let config = r#"{"routes":[
        {"name":"cached","match":{"path":"/c"},"calls":[{"name":"a","cluster":"a","path":"/","cache":{"ttl_ms":60000}}]},
        {"name":"broken","match":{"path":"/b"},"calls":[{"name":"b","cluster":"b","path":"/","circuit_breaker":{"failures":4,"open_ms":60000}}]}]}"#;
    let envoy = Envoy::builder(config)
        .cluster("a", service.port())
        .cluster("b", broken.port())
        .concurrency(2)
        .start();
    // Each request on a new connection; Envoy spreads connections over both workers.
    for _ in 0..20 {
        assert_eq!(envoy.get("/c").json()["a"], json!({"v": 1}));
    }
    assert_eq!(
        service.hit_count(),
        1,
        "one miss, then hits on both workers"
    );
    for _ in 0..20 {
        envoy.get("/b");
    }
    assert_eq!(
        broken.hit_count(),
        4,
        "the breaker opened for both workers at once"
    );
    let workers_used = envoy
        .log()
        .lines()
        .filter(|l| l.contains("matched route cached"))
        .filter_map(|l| l.split("][").nth(1).map(str::to_string))
        .collect::<std::collections::HashSet<_>>()
        .len();
    assert_eq!(workers_used, 2, "requests really went to both workers");
}

#[test]
fn wait_for_any_answers_with_the_fast_call() {
    let slow = Upstream::json_delayed(r#""slow""#, 1500);
    let fast = Upstream::json_delayed(r#""fast""#, 20);
    let config = r#"{"routes":[{"name":"r","match":{"path":"/x"},"wait_for":"any","calls":[
        {"name":"slow","cluster":"slow","path":"/"},{"name":"fast","cluster":"fast","path":"/"}]}]}"#;
    let envoy = Envoy::builder(config)
        .cluster("slow", slow.port())
        .cluster("fast", fast.port())
        .start();
    let response = envoy.get("/x");
    response.assert_took(15, 600, "does not wait for the slow call");
    assert_eq!(
        response.json(),
        json!({"fast": "fast", "_meta": {"complete": false, "not_waited_for": ["slow"]}})
    );
    thread::sleep(Duration::from_millis(1600));
    assert_eq!(
        envoy.get("/x").status,
        200,
        "the late answer was ignored safely"
    );
    envoy.assert_no_vm_failures();
}

#[test]
fn wait_for_quorum_answers_with_a_majority() {
    let fast = Upstream::json_delayed(r#""fast""#, 20);
    let slow = Upstream::json_delayed(r#""slow""#, 1500);
    let config = r#"{"routes":[{"name":"r","match":{"path":"/x"},"wait_for":"quorum","calls":[
        {"name":"a","cluster":"fast","path":"/"},{"name":"b","cluster":"fast","path":"/"},
        {"name":"c","cluster":"slow","path":"/"}]}]}"#;
    let envoy = Envoy::builder(config)
        .cluster("fast", fast.port())
        .cluster("slow", slow.port())
        .start();
    let response = envoy.get("/x");
    response.assert_took(15, 600, "two of three is a majority");
    assert_eq!(
        response.json(),
        json!({"a": "fast", "b": "fast", "_meta": {"complete": false, "not_waited_for": ["c"]}})
    );
    envoy.assert_no_vm_failures();
}

#[test]
fn wait_for_a_count_still_waits_for_required_calls() {
    let fast = Upstream::json_delayed(r#""fast""#, 20);
    let slow = Upstream::json_delayed(r#""slow""#, 700);
    let never = Upstream::json_delayed(r#""never""#, 2500);
    let config = r#"{"routes":[{"name":"r","match":{"path":"/x"},"wait_for":1,"calls":[
        {"name":"fast","cluster":"fast","path":"/"},
        {"name":"slow","cluster":"slow","path":"/","required":true},
        {"name":"never","cluster":"never","path":"/"}]}]}"#;
    let envoy = Envoy::builder(config)
        .cluster("fast", fast.port())
        .cluster("slow", slow.port())
        .cluster("never", never.port())
        .start();
    let response = envoy.get("/x");
    response.assert_took(
        650,
        2000,
        "one success is enough only once the required call is in",
    );
    assert_eq!(
        response.json(),
        json!({"fast": "fast", "slow": "slow", "_meta": {"complete": false, "not_waited_for": ["never"]}})
    );
    envoy.assert_no_vm_failures();
}

#[test]
fn max_inflight_answers_503_when_too_many_requests_are_in_flight() {
    let slow = Upstream::json_delayed("1", 600);
    let config = r#"{"routes":[{"name":"r","match":{"path":"/x"},"max_inflight":2,"calls":[{"name":"a","cluster":"a","path":"/"}]}]}"#;
    let envoy = Arc::new(Envoy::builder(config).cluster("a", slow.port()).start());
    let clients: Vec<_> = (0..6)
        .map(|_| {
            let envoy = Arc::clone(&envoy);
            thread::spawn(move || envoy.get("/x"))
        })
        .collect();
    let responses: Vec<HttpResponse> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    let ok = responses.iter().filter(|r| r.status == 200).count();
    let overloaded: Vec<&HttpResponse> = responses.iter().filter(|r| r.status == 503).collect();
    assert_eq!(
        (ok, overloaded.len()),
        (2, 4),
        "{:?}",
        responses.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    for response in overloaded {
        assert_eq!(response.header("retry-after"), Some("1"));
        assert_eq!(response.json()["error"]["reason"], "overload");
        response.assert_took(0, 300, "refused at once");
    }
    assert_eq!(
        envoy.get("/x").status,
        200,
        "capacity comes back when requests finish"
    );
}
