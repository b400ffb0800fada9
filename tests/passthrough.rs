//! Requests no route matches continue to their Envoy route untouched (SPEC §1).

mod common;

use common::*;

type Headers<'a> = &'a [(&'a str, &'a str)];

const CONFIG: &str = r#"{"routes":[
    {"name":"mobile","match":{"path":"/api/home","headers":{"x-client":"mobile"}},"calls":[{"name":"a","cluster":"svc","path":"/m"}]},
    {"name":"page","match":{"path":"/api/page/{id}","methods":["GET"]},"calls":[{"name":"a","cluster":"svc","path":"/a/{path.id}"}]}]}"#;

fn backend() -> Upstream {
    Upstream::start(|r| {
        Behavior::Reply(
            Reply::json(
                201,
                &format!(
                    r#"{{"backend":"{} {}","len":{}}}"#,
                    r.method,
                    r.path,
                    r.body.len()
                ),
            )
            .header("x-backend", "yes")
            .header("set-cookie", "a=1"),
        )
    })
}

#[test]
fn unmatched_paths_methods_and_headers_reach_the_envoy_route_unchanged() {
    let svc = Upstream::json(r#"{"aggregated":true}"#);
    let origin = backend();
    let envoy = Envoy::builder(CONFIG)
        .cluster("svc", svc.port())
        .default_upstream(origin.port())
        .start();

    let cases: [(&str, &str, Headers); 5] = [
        ("GET", "/api/other?x=1", &[]),
        ("GET", "/api/page/7/extra", &[]),
        ("DELETE", "/api/page/7", &[]),
        ("GET", "/api/home", &[("x-client", "web")]),
        ("GET", "/api/page", &[]),
    ];
    for (method, path, headers) in cases {
        let response = envoy.request(method, path, headers, b"");
        assert_eq!(response.status, 201, "{method} {path}");
        assert_eq!(response.header("x-backend"), Some("yes"));
        assert_eq!(response.header("set-cookie"), Some("a=1"));
        assert_eq!(response.header("x-aggregation-complete"), None);
        assert_eq!(response.json()["backend"], format!("{method} {path}"));
    }
    assert_eq!(
        svc.hit_count(),
        0,
        "no aggregation call for unmatched requests"
    );

    assert_eq!(
        envoy
            .request("GET", "/api/home", &[("x-client", "mobile")], b"")
            .json()["a"]["aggregated"],
        true
    );
    assert_eq!(
        envoy.get("/api/page/7/").json()["a"]["aggregated"],
        true,
        "trailing slash is not significant"
    );
    envoy.assert_no_vm_failures();
}

#[test]
fn request_bodies_of_unmatched_requests_stream_through_byte_for_byte() {
    let svc = Upstream::json("{}");
    let origin = backend();
    let envoy = Envoy::builder(CONFIG)
        .cluster("svc", svc.port())
        .default_upstream(origin.port())
        .start();
    let body: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let response = envoy.request(
        "POST",
        "/upload?x=%2F",
        &[
            ("content-type", "application/octet-stream"),
            ("x-custom", "kept"),
        ],
        &body,
    );
    assert_eq!(response.status, 201);
    let hit = &origin.hits()[0];
    assert_eq!(hit.body, body);
    assert_eq!(hit.path, "/upload?x=%2F");
    assert_eq!(hit.header("x-custom"), Some("kept"));

    let chunked = b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
    let response = envoy.request(
        "PUT",
        "/chunked",
        &[("transfer-encoding", "chunked")],
        chunked,
    );
    assert_eq!(response.status, 201);
    assert_eq!(origin.hits()[1].body, b"hello world");
}

#[test]
fn filter_enabled_only_on_chosen_envoy_routes_keeps_other_traffic_out_of_the_vm() {
    let svc = Upstream::json(r#"{"aggregated":true}"#);
    let origin = backend();
    let envoy = Envoy::builder(CONFIG)
        .cluster("svc", svc.port())
        .default_upstream(origin.port())
        .filter_disabled_by_default(&["/api/page/"])
        .start();
    assert_eq!(envoy.get("/api/page/3").json()["a"]["aggregated"], true);
    // /api/home matches a filter route, but its Envoy route does not enable the filter.
    let response = envoy.request("GET", "/api/home", &[("x-client", "mobile")], b"");
    assert_eq!(response.status, 201);
    assert_eq!(svc.hit_count(), 1);
}

#[test]
fn authority_in_match_headers_selects_by_host() {
    let config = r#"{"routes":[
        {"name":"shop","match":{"path":"/api/home","headers":{":authority":"shop.example"}},
         "calls":[{"name":"a","cluster":"svc","path":"/m"}]}]}"#;
    let svc = Upstream::json(r#"{"aggregated":true}"#);
    let origin = backend();
    let envoy = Envoy::builder(config)
        .cluster("svc", svc.port())
        .default_upstream(origin.port())
        .start();

    let shop = envoy.request("GET", "/api/home", &[("host", "shop.example")], b"");
    assert_eq!(shop.status, 200);
    assert_eq!(shop.json()["a"]["aggregated"], true);

    let other = envoy.request("GET", "/api/home", &[("host", "other.example")], b"");
    assert_eq!(other.status, 201, "another host passes through");
    assert_eq!(other.json()["backend"], "GET /api/home");
    assert_eq!(svc.hit_count(), 1);
    envoy.assert_no_vm_failures();
}
