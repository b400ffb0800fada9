//! Templates and forwarding (SPEC §3, §3.1, §2.1): client values are always data, and only the
//! headers a call asks for reach it.

mod common;

use common::*;

fn echo() -> Upstream {
    Upstream::json(r#"{"ok":true}"#)
}

#[test]
fn captured_values_cannot_add_path_segments_or_query_parameters() {
    let service = echo();
    let config = r#"{"routes":[{"name":"r","match":{"path":"/api/users/{id}"},"calls":[
        {"name":"user","cluster":"users","path":"/users/{path.id}?view={query.view|full}"}]}]}"#;
    let envoy = Envoy::builder(config)
        .cluster("users", service.port())
        .start();
    let cases = [
        (
            "/api/users/..%2F..%2Fadmin",
            "/users/..%2F..%2Fadmin?view=full",
        ),
        (
            "/api/users/1%3Fadmin%3Dtrue%23x",
            "/users/1%3Fadmin%3Dtrue%23x?view=full",
        ),
        ("/api/users/%252F", "/users/%252F?view=full"),
        ("/api/users/caf%C3%A9", "/users/caf%C3%A9?view=full"),
        (
            "/api/users/7?view=a%26admin%3D1",
            "/users/7?view=a%26admin%3D1",
        ),
        ("/api/users/7?view=x+y&view=second", "/users/7?view=x%20y"),
        ("/api/users/7?view=%0D%0Aevil", "/users/7?view=%0D%0Aevil"),
    ];
    for (client, upstream) in cases {
        service.reset_hits();
        let response = envoy.get(client);
        assert_eq!(response.status, 200, "{client}: {}", response.text());
        assert_eq!(service.hits()[0].path, upstream, "client sent {client}");
    }
}

#[test]
fn rest_captures_keep_their_segments_but_cannot_climb() {
    let service = echo();
    let config = r#"{"routes":[{"name":"r","match":{"path":"/files/{path*}"},"calls":[
        {"name":"file","cluster":"files","path":"/store/{path.path}","required":true}]}]}"#;
    let envoy = Envoy::builder(config)
        .cluster("files", service.port())
        .start();
    assert_eq!(envoy.get("/files/a/b%20c/d.txt").status, 200);
    assert_eq!(service.hits()[0].path, "/store/a/b%20c/d.txt");
    let climbing = envoy.get("/files/a/%2E%2E/%2E%2E/etc");
    assert_eq!(climbing.status, 400, "{}", climbing.text());
    assert_eq!(climbing.json()["error"]["reason"], "invalid_input");
    assert_eq!(service.hit_count(), 1);
}

#[test]
fn header_templates_refuse_control_characters_from_client_input() {
    let service = echo();
    let config = r#"{"routes":[{"name":"r","match":{"path":"/x"},"calls":[
        {"name":"a","cluster":"a","path":"/","headers":{"x-user":"user {query.u}"},"required":true}]}]}"#;
    let envoy = Envoy::builder(config).cluster("a", service.port()).start();
    let response = envoy.get("/x?u=bob%0D%0Ax-admin:%20true");
    assert_eq!(response.status, 400);
    assert_eq!(response.json()["error"]["reason"], "invalid_input");
    assert_eq!(response.json()["error"]["input"], "query.u");
    assert_eq!(service.hit_count(), 0);
    assert_eq!(envoy.get("/x?u=bob").status, 200);
    assert_eq!(service.hits()[0].header("x-user"), Some("user bob"));
}

#[test]
fn trace_headers_are_forwarded_by_default_and_credentials_only_on_request() {
    let plain = echo();
    let authed = echo();
    let config = r#"{"defaults":{"forward_headers":["x-request-id","traceparent","x-tenant"]},"routes":[{"name":"r","match":{"path":"/x"},"calls":[
        {"name":"plain","cluster":"plain","path":"/"},
        {"name":"authed","cluster":"authed","path":"/","forward_headers":["authorization"],"headers":{"x-from":"gateway","x-lang":"{header.accept-language|en}"}}]}]}"#;
    let envoy = Envoy::builder(config)
        .cluster("plain", plain.port())
        .cluster("authed", authed.port())
        .start();
    let response = envoy.request(
        "GET",
        "/x",
        &[
            ("x-request-id", "rid-1"),
            (
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            ),
            ("x-tenant", "acme"),
            ("authorization", "Bearer secret"),
            ("cookie", "session=1"),
            ("x-other", "not forwarded"),
            ("accept-language", "fr"),
        ],
        b"",
    );
    assert_eq!(response.status, 200);
    let plain_hit = &plain.hits()[0];
    assert_eq!(plain_hit.header("x-request-id"), Some("rid-1"));
    assert_eq!(
        plain_hit.header("traceparent"),
        Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
    );
    assert_eq!(plain_hit.header("x-tenant"), Some("acme"));
    for absent in [
        "authorization",
        "cookie",
        "x-other",
        "accept-language",
        "x-from",
    ] {
        assert_eq!(
            plain_hit.header(absent),
            None,
            "{absent} must not be forwarded"
        );
    }
    let authed_hit = &authed.hits()[0];
    assert_eq!(authed_hit.header("authorization"), Some("Bearer secret"));
    assert_eq!(authed_hit.header("cookie"), None);
    assert_eq!(authed_hit.header("x-from"), Some("gateway"));
    assert_eq!(authed_hit.header("x-lang"), Some("fr"));
    assert_eq!(authed_hit.header("x-tenant"), Some("acme"));
}

#[test]
fn envoy_generated_request_id_reaches_every_call() {
    let a = echo();
    let b = echo();
    let config = r#"{"routes":[{"name":"r","match":{"path":"/x"},"calls":[{"name":"a","cluster":"a","path":"/"},{"name":"b","cluster":"b","path":"/"}]}]}"#;
    let envoy = Envoy::builder(config)
        .cluster("a", a.port())
        .cluster("b", b.port())
        .start();
    envoy.get("/x");
    let id = a.hits()[0].header("x-request-id").map(str::to_string);
    assert!(id.is_some(), "Envoy's x-request-id is forwarded");
    assert_eq!(b.hits()[0].header("x-request-id").map(str::to_string), id);
}

#[test]
fn call_method_and_authority_are_configurable() {
    let service = echo();
    let config = r#"{"routes":[{"name":"r","match":{"path":"/x"},"calls":[
        {"name":"a","cluster":"svc","path":"/q","method":"HEAD","authority":"api.internal:8080"}]}]}"#;
    let envoy = Envoy::builder(config)
        .cluster("svc", service.port())
        .start();
    envoy.get("/x");
    let hit = &service.hits()[0];
    assert_eq!(hit.method, "HEAD");
    assert_eq!(hit.header("host"), Some("api.internal:8080"));
}
