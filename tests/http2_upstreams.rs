//! HTTP/2 to the services (issue 14 §3). The shipped `envoy/gateway.yaml` gives every cluster the
//! filter calls the same `typed_extension_protocol_options` block (HTTP/2 with prior knowledge,
//! `explicit_http_config`). These tests take that block from the shipped file and run the
//! filter in real Envoy with it:
//!
//! - the calls of an aggregation (parallel ones and a dependent one) go out over HTTP/2 and the
//!   client gets the whole answer. The services are the harness's HTTP/1.1 upstream behind a
//!   second, filterless Envoy whose listener (`codec_type: AUTO`) accepts h2c, as the demo
//!   services in `envoy/upstreams.yaml` do. Proof that HTTP/2 was spoken on the wire: that
//!   Envoy counts every call as an HTTP/2 request and none as HTTP/1.1, and the gateway's
//!   clusters open HTTP/2 connections only, one per cluster, with two calls multiplexed on it;
//! - the caveat the README states: the block on a service that speaks only HTTP/1.1 does not
//!   hang or poison the answer. That call fails at once (Envoy sees a protocol error before any
//!   answer and answers the call 502 itself), and the other calls answer as usual.

mod common;
mod yaml;

use common::*;
use serde_json::{json, Value};

/// The filter's calls: two in parallel on `catalog` (multiplexed on one HTTP/2 connection) and
/// one on `inventory` that waits for the product's sku.
const CONFIG: &str = r#"{"routes":[{"name":"page","match":{"path":"/products/{id}"},"calls":[
    {"name":"product","cluster":"catalog","path":"/products/{path.id}","required":true},
    {"name":"related","cluster":"catalog","path":"/products/{path.id}/related"},
    {"name":"stock","cluster":"inventory","path":"/stock/{calls.product.sku}","timeout_ms":2000}]}]}"#;

const PRODUCT: &str = r#"{"id":"42","sku":"TRS-042"}"#;
const RELATED: &str = r#"{"items":["43","44"]}"#;
const STOCK: &str = r#"{"sku":"TRS-042","available":12}"#;

/// The `typed_extension_protocol_options` of the clusters in `envoy/gateway.yaml`: every
/// cluster has it, all alike, and it asks for HTTP/2 explicitly. `Err` when the file cannot
/// be read, or holds no such clusters.
fn shipped_http2_options() -> Result<Value, String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/envoy/gateway.yaml");
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("read envoy/gateway.yaml: {e}"))?;
    let documents = yaml::documents(&text, yaml::Reading::Yaml12)
        .map_err(|e| format!("envoy/gateway.yaml: {e}"))?;
    let clusters = documents
        .first()
        .and_then(|d| d.pointer("/static_resources/clusters"))
        .and_then(Value::as_array)
        .ok_or("envoy/gateway.yaml: no static_resources.clusters")?;
    let options = clusters
        .first()
        .and_then(|c| c.get("typed_extension_protocol_options"))
        .ok_or("envoy/gateway.yaml: no clusters, or the first without protocol options")?;
    for cluster in clusters {
        assert_eq!(
            cluster.get("typed_extension_protocol_options"),
            Some(options),
            "envoy/gateway.yaml: cluster {} has other protocol options than the first",
            cluster.get("name").unwrap_or(&Value::Null)
        );
    }
    let http = options
        .get("envoy.extensions.upstreams.http.v3.HttpProtocolOptions")
        .unwrap_or(&Value::Null);
    assert_eq!(
        http.get("@type").and_then(Value::as_str),
        Some("type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions")
    );
    assert!(
        http.pointer("/explicit_http_config/http2_protocol_options")
            .is_some_and(Value::is_object),
        "envoy/gateway.yaml: the clusters do not speak HTTP/2: {options}"
    );
    Ok(options.clone())
}

/// A cluster's extra keys: the shipped HTTP/2 protocol options.
fn http2_cluster() -> Result<Value, String> {
    Ok(json!({ "typed_extension_protocol_options": shipped_http2_options()? }))
}

/// The services, over HTTP/1.1; each answer waits 30 ms so that the two catalog calls of one
/// aggregation are in flight together.
fn services() -> Upstream {
    Upstream::start(|request| {
        let body = match request.path.as_str() {
            "/products/42" => PRODUCT,
            "/products/42/related" => RELATED,
            "/stock/TRS-042" => STOCK,
            _ => return Behavior::Reply(Reply::json(404, r#"{"error":"not found"}"#)),
        };
        Behavior::Reply(Reply::json(200, body).delay_ms(30))
    })
}

#[test]
fn the_filter_aggregates_over_the_shipped_http2_clusters() {
    const AGGREGATIONS: u64 = 3;
    let services = services();
    // An h2c-capable front for the HTTP/1.1 services: Envoy without the filter, codec AUTO.
    let h2c = Envoy::builder("{}")
        .without_filter()
        .default_upstream(services.port())
        .start();
    let gateway = Envoy::builder(CONFIG)
        .cluster_with("catalog", h2c.port(), http2_cluster().unwrap())
        .cluster_with("inventory", h2c.port(), http2_cluster().unwrap())
        .start();

    for _ in 0..AGGREGATIONS {
        let response = gateway.get("/products/42");
        assert_eq!(response.status, 200, "{}", response.text());
        assert_eq!(response.header("x-aggregation-complete"), Some("true"));
        assert_eq!(
            response.json(),
            json!({
                "product": serde_json::from_str::<Value>(PRODUCT).unwrap(),
                "related": serde_json::from_str::<Value>(RELATED).unwrap(),
                "stock": serde_json::from_str::<Value>(STOCK).unwrap(),
                "_meta": {"complete": true}
            })
        );
    }

    // Every call reached the services, through the h2c front.
    let mut paths: Vec<String> = services.hits().into_iter().map(|r| r.path).collect();
    paths.sort();
    let mut expected = Vec::new();
    for _ in 0..AGGREGATIONS {
        expected.extend(["/products/42", "/products/42/related", "/stock/TRS-042"]);
    }
    expected.sort();
    assert_eq!(paths, expected);

    // The front received every call as an HTTP/2 request, none as HTTP/1.1.
    assert_eq!(
        h2c.counter("http.ingress.downstream_rq_http2_total"),
        3 * AGGREGATIONS
    );
    assert_eq!(h2c.counter("http.ingress.downstream_rq_http1_total"), 0);
    assert_eq!(h2c.counter("http.ingress.downstream_cx_http1_total"), 0);

    // The gateway spoke HTTP/2 only: one connection per cluster (one worker), which carried
    // every call, the two parallel catalog calls of each aggregation multiplexed on it.
    for (cluster, calls) in [("catalog", 2 * AGGREGATIONS), ("inventory", AGGREGATIONS)] {
        let stat = |name: &str| gateway.counter(&format!("cluster.{cluster}.{name}"));
        assert_eq!(stat("upstream_cx_http1_total"), 0, "{cluster}");
        assert_eq!(stat("upstream_cx_http2_total"), 1, "{cluster}");
        assert_eq!(stat("upstream_cx_total"), 1, "{cluster}");
        assert_eq!(stat("upstream_rq_total"), calls, "{cluster}");
    }
    gateway.assert_no_vm_failures();
}

#[test]
fn the_http2_block_on_a_service_that_speaks_only_http1_fails_its_calls_at_once() {
    let services = services();
    let h2c = Envoy::builder("{}")
        .without_filter()
        .default_upstream(services.port())
        .start();
    // `inventory` is the HTTP/1.1-only service itself, configured as if it spoke HTTP/2.
    let gateway = Envoy::builder(CONFIG)
        .cluster_with("catalog", h2c.port(), http2_cluster().unwrap())
        .cluster_with("inventory", services.port(), http2_cluster().unwrap())
        .start();

    let response = gateway.get("/products/42");
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.header("x-aggregation-complete"), Some("false"));
    // Well inside the stock call's 2 s timeout: the protocol error ends the call at once.
    response.assert_took(0, 1500, "an HTTP/1.1 answer to HTTP/2 is a prompt failure");
    let body = response.json();
    assert_eq!(
        body["product"],
        serde_json::from_str::<Value>(PRODUCT).unwrap()
    );
    assert_eq!(
        body["related"],
        serde_json::from_str::<Value>(RELATED).unwrap()
    );
    assert_eq!(body.get("stock"), None);
    // Envoy answers the call with its own local reply, 502 "upstream connect error or
    // disconnect/reset before headers. reset reason: protocol error": a connection fault, not a
    // 502 the service sent.
    assert_eq!(
        body["_meta"]["errors"]["stock"],
        serde_json::json!({"reason": "connect"}),
        "{body}"
    );
    assert!(
        gateway.counter("cluster.inventory.upstream_cx_protocol_error") >= 1,
        "Envoy counts the mismatch as a protocol error"
    );
    gateway.assert_no_vm_failures();
}
