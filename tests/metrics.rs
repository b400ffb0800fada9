//! Envoy stats (SPEC §7): exact counts per route and call after a known mix of requests, and
//! histogram samples; the shipped tag extraction turns route and call into Prometheus labels.

mod common;

use common::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

/// Answers by `?mode=`: `partial` fails call b, `missing` and `broken` fail the required call c.
fn service() -> Upstream {
    Upstream::start(|r| {
        let mode = r.path.split("mode=").nth(1).unwrap_or("");
        let call = r.path.get(1..2).unwrap_or("");
        match (call, mode) {
            ("b", "partial") => Behavior::Reply(Reply::json(500, "{}")),
            ("c", "missing") => {
                Behavior::Reply(Reply::json(404, r#"{"error":"missing"}"#).delay_ms(50))
            }
            ("c", "broken") => Behavior::Reply(Reply::json(503, "{}").delay_ms(50)),
            ("c", _) => Behavior::Reply(Reply::json(200, "1").delay_ms(50)),
            _ => Behavior::Reply(Reply::json(200, "1")),
        }
    })
}

#[test]
fn stats_count_requests_outcomes_and_calls_exactly() {
    let svc = service();
    let flaky_count = AtomicUsize::new(0);
    let flaky = Upstream::start(move |_| {
        if flaky_count.fetch_add(1, Ordering::SeqCst) == 0 {
            Behavior::Reply(Reply::json(503, "{}"))
        } else {
            Behavior::Reply(Reply::json(200, "2"))
        }
    });
    let config = r#"{"routes":[
      {"name":"page","match":{"path":"/p"},"calls":[
        {"name":"a","cluster":"svc","path":"/a?mode={query.mode}"},
        {"name":"b","cluster":"svc","path":"/b?mode={query.mode}"},
        {"name":"c","cluster":"svc","path":"/c?mode={query.mode}","required":true}]},
      {"name":"resilient","match":{"path":"/r"},"calls":[
        {"name":"cached","cluster":"svc","path":"/k","cache":{"ttl_ms":60000}},
        {"name":"retried","cluster":"flaky","path":"/f","retries":{"attempts":2,"backoff_ms":0}},
        {"name":"down","cluster":"closed","path":"/d","fallback":[]}]}]}"#;
    let envoy = Envoy::builder(config)
        .cluster("svc", svc.port())
        .cluster("flaky", flaky.port())
        .closed_cluster("closed")
        .start();
    let modes = ["ok", "ok", "ok", "partial", "partial", "missing", "broken"];
    let statuses: Vec<u16> = modes
        .iter()
        .map(|m| envoy.get(&format!("/p?mode={m}")).status)
        .collect();
    assert_eq!(statuses, [200, 200, 200, 200, 200, 404, 502]);
    for _ in 0..3 {
        assert_eq!(envoy.get("/r").status, 200);
    }
    // Counters reach Envoy once a second (the filter adds them up between flushes).
    thread::sleep(Duration::from_millis(1300));
    let stats = envoy.stats();

    assert_eq!(filter_stat(&stats, "route.page.requests"), 7);
    assert_eq!(filter_stat(&stats, "route.page.complete"), 3);
    assert_eq!(filter_stat(&stats, "route.page.partial"), 2);
    assert_eq!(filter_stat(&stats, "route.page.failed_4xx"), 1);
    assert_eq!(filter_stat(&stats, "route.page.failed_5xx"), 1);
    assert_eq!(filter_stat(&stats, "route.page.call.a.success"), 7);
    assert_eq!(filter_stat(&stats, "route.page.call.b.success"), 5);
    assert_eq!(filter_stat(&stats, "route.page.call.b.failure.status"), 2);
    assert_eq!(filter_stat(&stats, "route.page.call.c.success"), 5);
    assert_eq!(filter_stat(&stats, "route.page.call.c.failure.status"), 2);
    assert_eq!(filter_stat(&stats, "route.page.call.c.failure.timeout"), 0);

    assert_eq!(filter_stat(&stats, "route.resilient.requests"), 3);
    assert_eq!(filter_stat(&stats, "route.resilient.partial"), 3);
    assert_eq!(
        filter_stat(&stats, "route.resilient.call.cached.cache_hit"),
        2
    );
    assert_eq!(
        filter_stat(&stats, "route.resilient.call.cached.attempts"),
        1
    );
    assert_eq!(
        filter_stat(&stats, "route.resilient.call.retried.retries"),
        1
    );
    assert_eq!(
        filter_stat(&stats, "route.resilient.call.retried.attempts"),
        4
    );
    assert_eq!(
        filter_stat(&stats, "route.resilient.call.retried.success"),
        3
    );
    assert_eq!(filter_stat(&stats, "route.resilient.call.down.fallback"), 3);
    assert_eq!(
        filter_stat(&stats, "route.resilient.call.down.failure.connect"),
        3
    );

    let histogram = |name: &str| {
        let key = format!("{FILTER_STATS}{name}: ");
        stats
            .lines()
            .find_map(|l| l.strip_prefix(&key).map(str::to_string))
            .unwrap()
    };
    assert!(
        histogram("route.page.latency_ms").starts_with("P0("),
        "{}",
        histogram("route.page.latency_ms")
    );
    assert!(histogram("route.page.call.c.latency_ms").contains("P100("));

    let prometheus = request_to(envoy.admin_port(), "GET", "/stats/prometheus", &[], b"").text();
    let line = |prefix: &str| {
        prometheus
            .lines()
            .find(|l| l.starts_with(prefix))
            .map(str::to_string)
    };
    assert_eq!(
        line(r#"gateway_aggregator_requests{ga_route="page"}"#).as_deref(),
        Some(r#"gateway_aggregator_requests{ga_route="page"} 7"#)
    );
    assert!(
        line(
            r#"gateway_aggregator_call_failure{ga_reason="status",ga_call="b",ga_route="page"} 2"#
        )
        .is_some(),
        "{prometheus}"
    );
    let samples = line(r#"gateway_aggregator_latency_ms_count{ga_route="page"}"#).unwrap();
    assert!(samples.ends_with(" 7"), "{samples}");
    envoy.assert_no_vm_failures();
}

#[test]
fn circuit_openings_are_counted_per_cluster() {
    let broken = Upstream::start(|_| Behavior::Reply(Reply::json(500, "{}")));
    let config = r#"{"routes":[{"name":"r","match":{"path":"/x"},"calls":[
        {"name":"a","cluster":"broken","path":"/","circuit_breaker":{"failures":2,"open_ms":60000}}]}]}"#;
    let envoy = Envoy::builder(config)
        .cluster("broken", broken.port())
        .start();
    for _ in 0..5 {
        envoy.get("/x");
    }
    thread::sleep(Duration::from_millis(1300));
    let stats = envoy.stats();
    assert_eq!(filter_stat(&stats, "cluster.broken.circuit_opened"), 1);
    assert_eq!(
        filter_stat(&stats, "route.r.call.a.failure.circuit_open"),
        3
    );
}

#[test]
fn logs_one_info_line_at_configure_time_and_nothing_per_request_above_debug() {
    let svc = service();
    let config = r#"{"routes":[{"name":"page","match":{"path":"/p"},"calls":[
        {"name":"a","cluster":"svc","path":"/a?mode={query.mode}"},
        {"name":"c","cluster":"svc","path":"/c?mode={query.mode}"}]}]}"#;
    let envoy = Envoy::builder(config).cluster("svc", svc.port()).start();
    for mode in ["ok", "partial", "broken"] {
        envoy.get(&format!("/p?mode={mode}"));
    }
    let log = envoy.log();
    let wasm_lines: Vec<&str> = log.lines().filter(|l| l.contains("wasm log")).collect();
    let above_debug: Vec<&&str> = wasm_lines
        .iter()
        .filter(|l| l.contains("[info]") || l.contains("[warning]") || l.contains("[error]"))
        .collect();
    assert!(!above_debug.is_empty());
    assert!(
        above_debug.iter().all(|l| l
            .contains("gateway-aggregator: loaded 1 route and 2 calls: page (GET /p, 2 calls)")),
        "only the configure-time line is above debug: {above_debug:#?}"
    );
    assert!(
        wasm_lines
            .iter()
            .any(|l| l.contains("[debug]") && l.contains("matched route page")),
        "decisions are logged at debug"
    );
}
