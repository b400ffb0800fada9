//! The route deadline bounds the wait for the client's body (SPEC §3.4), in real Envoy: a body
//! not complete by then is 408 `request_body_timeout`; a body Envoy holds back from the filter
//! (no `allow_on_headers_stop_iteration`) is 500 `request_body_unavailable`, with one warning.
//! Nothing is called either way, and the route's own upstream never gets the request.

mod common;

use common::*;
use serde_json::json;
use std::thread;
use std::time::Duration;

const CONFIG: &str = r#"{"routes":[{"name":"checkout","match":{"path":"/checkout/{cart}","methods":["POST"]},
  "deadline_ms":500,"max_inflight":1,"calls":[
    {"name":"order","cluster":"orders","method":"POST","path":"/orders","body":"{request.body}","required":true},
    {"name":"audit","cluster":"audit","method":"POST","path":"/audit","body":{"q":"{request.body.q}"}}]}]}"#;

const BODY: &[u8] = br#"{"q":1}"#;

struct Setup {
    envoy: Envoy,
    orders: Upstream,
    audit: Upstream,
    origin: Upstream,
}

impl Setup {
    fn start(hold_headers: bool) -> Setup {
        let orders = Upstream::json(r#"{"id":7}"#);
        let audit = Upstream::json("{}");
        let origin = Upstream::json(r#"{"origin":true}"#);
        let mut builder = Envoy::builder(CONFIG)
            .cluster("orders", orders.port())
            .cluster("audit", audit.port())
            .default_upstream(origin.port());
        if !hold_headers {
            builder = builder.without_header_hold();
        }
        Setup {
            envoy: builder.start(),
            orders,
            audit,
            origin,
        }
    }

    /// `POST /checkout/1` announcing `BODY`'s length, then `pieces` one every `every`.
    fn post(&self, pieces: Vec<Vec<u8>>, every: Duration) -> HttpResponse {
        let port = self.envoy.port();
        let length = BODY.len().to_string();
        let head = encode_request(
            port,
            "POST",
            "/checkout/1",
            &[
                ("content-type", "application/json"),
                ("content-length", &length),
            ],
            b"",
        );
        // Whatever the client still sends after the answer must not start anything either:
        // it has been sent when this returns.
        slow_request(port, "POST", &head, pieces, every)
    }

    fn assert_nothing_called(&self) {
        thread::sleep(Duration::from_millis(200));
        assert_eq!(
            (
                self.orders.hit_count(),
                self.audit.hit_count(),
                self.origin.hit_count()
            ),
            (0, 0, 0),
            "no call, and the route's own upstream never gets the request"
        );
    }

    fn stat(&self, name: &str) -> u64 {
        self.envoy.filter_stat(&format!("route.checkout.{name}"))
    }
}

fn one_byte_each() -> Vec<Vec<u8>> {
    BODY.iter().map(|b| vec![*b]).collect()
}

#[test]
fn a_client_trickling_its_body_gets_408_at_the_deadline_and_nothing_is_called() {
    let setup = Setup::start(true);
    // One byte every 300 ms: the body would be complete after 2.1 s.
    let response = setup.post(one_byte_each(), Duration::from_millis(300));
    assert_eq!(response.status, 408, "{}", response.text());
    assert_eq!(
        response.json(),
        json!({"error": {"code": "request_body_timeout", "deadline_ms": 500}})
    );
    assert_eq!(response.header("content-type"), Some("application/json"));
    response.assert_took(450, 1000, "the deadline counts from the request headers");
    setup.assert_nothing_called();
    setup.envoy.assert_no_vm_failures();
}

#[test]
fn headers_without_a_body_get_408_at_the_deadline_and_free_the_route() {
    let setup = Setup::start(true);
    let response = setup.post(Vec::new(), Duration::ZERO);
    assert_eq!(response.status, 408, "{}", response.text());
    assert_eq!(response.json()["error"]["code"], "request_body_timeout");
    response.assert_took(450, 1000, "answered at the deadline");
    setup.assert_nothing_called();

    // max_inflight is 1: the late request gave its slot back.
    let response = setup.post(vec![BODY.to_vec()], Duration::ZERO);
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(setup.orders.hits()[0].body, BODY);
    setup.envoy.assert_no_vm_failures();
}

#[test]
fn a_slow_body_complete_before_the_deadline_is_aggregated() {
    let setup = Setup::start(true);
    // Seven bytes, 50 ms apart: complete after 350 ms.
    let response = setup.post(one_byte_each(), Duration::from_millis(50));
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.json()["order"], json!({"id": 7}));
    assert_eq!(setup.orders.hits()[0].body, BODY);
    assert_eq!(setup.audit.hits()[0].body, br#"{"q":1}"#);
    assert_eq!(setup.origin.hit_count(), 0);
    setup.envoy.assert_no_vm_failures();
}

#[test]
fn the_stats_count_late_bodies_as_requests_and_4xx() {
    let setup = Setup::start(true);
    let statuses = [
        setup
            .post(one_byte_each(), Duration::from_millis(300))
            .status,
        setup.post(Vec::new(), Duration::ZERO).status,
        setup.post(vec![BODY.to_vec()], Duration::ZERO).status,
    ];
    assert_eq!(statuses, [408, 408, 200]);
    // Counters reach Envoy once a second.
    thread::sleep(Duration::from_millis(1300));
    assert_eq!(setup.stat("request_body_timeout"), 2);
    assert_eq!(setup.stat("request_body_unavailable"), 0);
    assert_eq!(setup.stat("requests"), 3);
    assert_eq!(setup.stat("complete"), 1);
    assert_eq!(setup.stat("failed_4xx"), 2);
    assert_eq!(setup.stat("failed_5xx"), 0);
    setup.envoy.assert_no_vm_failures();
}

#[test]
fn without_the_envoy_setting_the_client_gets_500_at_the_deadline_and_the_log_says_why() {
    let setup = Setup::start(false);
    for _ in 0..2 {
        // The whole body, at once: Envoy has it, but never hands it to the filter.
        let response = setup.post(vec![BODY.to_vec()], Duration::ZERO);
        assert_eq!(response.status, 500, "{}", response.text());
        assert_eq!(
            response.json(),
            json!({"error": {"code": "request_body_unavailable"}})
        );
        response.assert_took(450, 1000, "answered at the deadline, not left hanging");
    }
    // A client that sends no body is late, whatever the setting.
    let response = setup.post(Vec::new(), Duration::ZERO);
    assert_eq!(response.status, 408, "{}", response.text());
    setup.assert_nothing_called();

    thread::sleep(Duration::from_millis(1100));
    let log = setup.envoy.log();
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("[warning]") && l.contains("allow_on_headers_stop_iteration"))
        .collect();
    assert_eq!(warnings.len(), 1, "one warning per VM: {warnings:#?}");
    assert!(
        warnings[0].contains("wasm log") && warnings[0].contains("envoy.filters.http.wasm"),
        "{}",
        warnings[0]
    );
    assert_eq!(setup.stat("request_body_unavailable"), 2);
    assert_eq!(setup.stat("request_body_timeout"), 1);
    assert_eq!(setup.stat("requests"), 3);
    assert_eq!(setup.stat("failed_5xx"), 2);
    assert_eq!(setup.stat("failed_4xx"), 1);
    setup.envoy.assert_no_vm_failures();
}
