//! Tests of the test harness itself: the upstream's behaviors, the client, the Envoy launcher.

mod common;

use common::*;
use std::io::{BufReader, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

const FILTER_CONFIG: &str = r#"{"routes":[{"name":"r","match":{"path":"/agg/{id}"},"calls":[{"name":"a","cluster":"svc_a","path":"/a/{path.id}"}]}]}"#;

#[test]
fn reply_builders_set_status_headers_body_and_length() {
    let upstream = Upstream::start(|req| {
        Behavior::Reply(match req.path.as_str() {
            "/json" => Reply::json(201, r#"{"a":1}"#).header("x-extra", "yes"),
            "/text" => Reply::text(503, "down"),
            _ => Reply::empty(204),
        })
    });

    let json = request_to(upstream.port(), "GET", "/json", &[], b"");
    assert_eq!(json.status, 201);
    assert_eq!(json.header("content-type"), Some("application/json"));
    assert_eq!(json.header("X-Extra"), Some("yes"));
    assert_eq!(json.header("content-length"), Some("7"));
    assert_eq!(json.json()["a"], 1);

    let text = request_to(upstream.port(), "GET", "/text", &[], b"");
    assert_eq!((text.status, text.text().as_str()), (503, "down"));
    assert_eq!(text.header("content-type"), Some("text/plain"));

    let empty = request_to(upstream.port(), "GET", "/empty", &[], b"");
    assert_eq!(empty.status, 204);
    assert!(empty.body.is_empty());
}

#[test]
fn records_raw_target_lowercased_headers_and_body_in_order() {
    let upstream = Upstream::json(r#"{"ok":true}"#);
    let port = upstream.port();
    request_to(
        port,
        "GET",
        "/a/%2F/../b?x=%20&y",
        &[("X-Mixed-Case", "V")],
        b"",
    );
    request_to(port, "POST", "/second", &[], b"hello body");

    let hits = upstream.hits();
    assert_eq!(upstream.hit_count(), 2);
    assert_eq!(hits[0].method, "GET");
    assert_eq!(hits[0].path, "/a/%2F/../b?x=%20&y");
    assert_eq!(hits[0].header("x-mixed-case"), Some("V"));
    assert!(hits[0].headers.iter().any(|(n, _)| n == "x-mixed-case"));
    assert_eq!(hits[1].method, "POST");
    assert_eq!(hits[1].body, b"hello body");

    upstream.reset_hits();
    assert_eq!(upstream.hit_count(), 0);
}

#[test]
fn chunked_request_body_is_decoded() {
    let upstream = Upstream::json("{}");
    let chunked = b"5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nx-trailer: t\r\n\r\n";
    let response = request_to(
        upstream.port(),
        "POST",
        "/upload",
        &[("transfer-encoding", "chunked")],
        chunked,
    );
    assert_eq!(response.status, 200);
    assert_eq!(upstream.hits()[0].body, b"hello, world");
}

#[test]
fn keep_alive_serves_two_requests_on_one_connection() {
    let upstream = Upstream::start(|req| Behavior::Reply(Reply::text(200, &req.path)));
    let stream = connect(upstream.port());
    let mut reader = BufReader::new(&stream);
    for path in ["/one", "/two"] {
        let request = encode_request(
            upstream.port(),
            "GET",
            path,
            &[("connection", "keep-alive")],
            b"",
        );
        (&stream).write_all(&request).unwrap();
        let response = read_response(&mut reader, "GET").unwrap();
        assert_eq!(response.text(), path);
    }
    assert_eq!(upstream.hit_count(), 2);
}

#[test]
fn delay_holds_only_its_own_connection() {
    let upstream = Upstream::start(|req| {
        let delay = if req.path == "/slow" { 600 } else { 0 };
        Behavior::Reply(Reply::json(200, "{}").delay_ms(delay))
    });
    let port = upstream.port();
    let slow = std::thread::spawn(move || request_to(port, "GET", "/slow", &[], b"").elapsed);
    std::thread::sleep(Duration::from_millis(50));
    let fast = request_to(port, "GET", "/fast", &[], b"").elapsed;
    let slow = slow.join().unwrap();
    assert!(slow >= Duration::from_millis(600), "slow took {slow:?}");
    assert!(fast < Duration::from_millis(300), "fast took {fast:?}");

    let delayed = Upstream::json_delayed(r#"{"late":true}"#, 200);
    let response = request_to(delayed.port(), "GET", "/", &[], b"");
    assert!(response.elapsed >= Duration::from_millis(200));
    assert_eq!(response.json()["late"], true);
}

#[test]
fn reset_sends_a_tcp_rst_after_reading_the_request() {
    let upstream = Upstream::start(|_| Behavior::Reset);
    let error = try_request_to(upstream.port(), "POST", "/r", &[], b"payload").unwrap_err();
    // ECONNRESET only comes from a RST; a FIN would read as a clean end of stream.
    assert_eq!(error.kind(), ErrorKind::ConnectionReset, "{error}");
    assert_eq!(upstream.hits()[0].body, b"payload");

    let stream = connect(upstream.port());
    (&stream)
        .write_all(&encode_request(upstream.port(), "GET", "/", &[], b""))
        .unwrap();
    let (received, ending) = read_until_closed(&stream);
    assert!(received.is_empty());
    assert_eq!(ending, Some(ErrorKind::ConnectionReset));
}

#[test]
fn reset_after_headers_sends_head_and_part_of_the_body_then_rst() {
    let upstream =
        Upstream::start(|_| Behavior::ResetAfterHeaders(Reply::json(200, r#"{"0123456789":1}"#)));
    let stream = connect(upstream.port());
    (&stream)
        .write_all(&encode_request(upstream.port(), "GET", "/", &[], b""))
        .unwrap();
    let (received, ending) = read_until_closed(&stream);
    let received = String::from_utf8(received).unwrap();
    let (head, body) = received.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    assert!(head.contains("content-length: 16"), "{head}");
    assert_eq!(body, r#"{"012345"#); // 8 of 16 bytes
    assert_eq!(ending, Some(ErrorKind::ConnectionReset));

    let error = try_request_to(upstream.port(), "GET", "/", &[], b"").unwrap_err();
    assert_eq!(error.kind(), ErrorKind::ConnectionReset, "{error}");
}

#[test]
fn hang_never_answers_but_keeps_the_connection_open() {
    let upstream = Upstream::start(|_| Behavior::Hang);
    let mut stream = connect(upstream.port());
    stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    stream
        .write_all(&encode_request(upstream.port(), "GET", "/h", &[], b""))
        .unwrap();
    let mut buf = [0u8; 16];
    let error = stream.read(&mut buf).unwrap_err();
    assert!(
        matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
        "{error}"
    );
    assert_eq!(upstream.hits()[0].path, "/h");
}

#[test]
fn trickle_sends_the_head_at_once_and_the_body_slowly() {
    let upstream = Upstream::start(|_| Behavior::Trickle {
        reply: Reply::text(200, "0123456789"),
        chunk: 2,
        every: Duration::from_millis(100),
    });
    let started = Instant::now();
    let stream = connect(upstream.port());
    (&stream)
        .write_all(&encode_request(upstream.port(), "GET", "/", &[], b""))
        .unwrap();
    let mut first = [0u8; 512];
    let n = (&stream).read(&mut first).unwrap();
    let head_after = started.elapsed();
    assert!(first[..n].starts_with(b"HTTP/1.1 200"));
    assert!(
        head_after < Duration::from_millis(90),
        "head after {head_after:?}"
    );

    let response = request_to(upstream.port(), "GET", "/", &[], b"");
    assert_eq!(response.text(), "0123456789");
    assert!(
        response.elapsed >= Duration::from_millis(500),
        "{:?}",
        response.elapsed
    );
}

#[test]
fn closed_port_refuses_connections() {
    let error = TcpStream::connect(("127.0.0.1", closed_port())).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::ConnectionRefused);
}

#[test]
fn serves_1000_concurrent_connections() {
    let upstream = Upstream::json_delayed(r#"{"ok":1}"#, 300);
    let port = upstream.port();
    let started = Instant::now();
    let streams: Vec<TcpStream> = (0..1000)
        .map(|i| {
            let stream = connect(port);
            (&stream)
                .write_all(&encode_request(port, "GET", &format!("/{i}"), &[], b""))
                .unwrap();
            stream
        })
        .collect();
    for stream in &streams {
        let response = read_response(&mut BufReader::new(stream), "GET").unwrap();
        assert_eq!(response.status, 200);
    }
    // Served one after another this would take 300 s.
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
    assert_eq!(upstream.hit_count(), 1000);
}

// ---------------------------------------------------------------------------------------------
// Envoy launcher

#[test]
fn envoy_without_filter_routes_to_default_upstream_or_404() {
    let upstream = Upstream::json(r#"{"from":"upstream"}"#);
    let started = Instant::now();
    let envoy = Envoy::builder("{}")
        .without_filter()
        .default_upstream(upstream.port())
        .start();
    eprintln!("envoy ready in {:?}", started.elapsed());
    assert_ne!(envoy.port(), envoy.admin_port());

    let response = envoy.request("PUT", "/x/y?z=1", &[("x-test", "1")], b"data");
    assert_eq!(response.status, 200);
    assert_eq!(response.json()["from"], "upstream");
    assert_eq!(response.header("server"), Some("envoy"));
    let hit = &upstream.hits()[0];
    assert_eq!(
        (hit.method.as_str(), hit.path.as_str()),
        ("PUT", "/x/y?z=1")
    );
    assert_eq!(hit.body, b"data");
    assert_eq!(hit.header("x-test"), Some("1"));
    assert!(envoy.stats().contains("http.ingress.downstream_rq_total"));
    assert_eq!(envoy.stat("cluster.passthrough.upstream_rq_total"), Some(1));
    envoy.assert_no_vm_failures();

    let bare = Envoy::builder("{}").without_filter().start();
    let response = bare.get("/anything");
    assert_eq!(
        (response.status, response.text().as_str()),
        (404, "no envoy route")
    );
    assert!(bare.log().contains("starting main dispatch loop"));
}

#[test]
fn envoy_try_start_returns_the_log_when_envoy_exits() {
    let log = Envoy::builder("{}")
        .without_filter()
        .cluster("twice", 1)
        .cluster("twice", 2)
        .try_start()
        .err()
        .expect("a duplicate cluster must stop Envoy");
    assert!(log.contains("twice"), "{log}");
}

#[test]
fn envoy_removes_its_temp_dir_on_drop() {
    let envoy = Envoy::builder("{}").without_filter().start();
    let dir = envoy.dir().to_path_buf();
    assert!(dir.join("envoy.log").exists());
    drop(envoy);
    if std::env::var_os("KEEP_ENVOY").is_none() {
        assert!(!dir.exists());
    }
}

// These load the real filter: they need `make build`.

#[test]
fn envoy_with_filter_passes_unmatched_requests_through_unchanged() {
    let svc_a = Upstream::json(r#"{"a":1}"#);
    let passthrough = Upstream::json(r#"{"passed":true}"#);
    let started = Instant::now();
    let envoy = Envoy::builder(FILTER_CONFIG)
        .cluster("svc_a", svc_a.port())
        .closed_cluster("svc_closed")
        .default_upstream(passthrough.port())
        .start();
    eprintln!("envoy with the filter ready in {:?}", started.elapsed());

    let response = envoy.request("POST", "/not/agg?q=%2F", &[("x-k", "v")], b"{\"b\":2}");
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.json()["passed"], true);
    let hit = &passthrough.hits()[0];
    assert_eq!(hit.method, "POST");
    assert_eq!(hit.path, "/not/agg?q=%2F");
    assert_eq!(hit.body, b"{\"b\":2}");
    assert_eq!(hit.header("x-k"), Some("v"));
    assert_eq!(svc_a.hit_count(), 0);
    envoy.assert_no_vm_failures();
}

#[test]
fn envoy_with_filter_enabled_only_on_prefixes_still_passes_others_through() {
    let svc_a = Upstream::json(r#"{"a":1}"#);
    let passthrough = Upstream::json(r#"{"passed":true}"#);
    let envoy = Envoy::builder(FILTER_CONFIG)
        .cluster("svc_a", svc_a.port())
        .default_upstream(passthrough.port())
        .filter_disabled_by_default(&["/agg"])
        .concurrency(2)
        .start();
    // Outside the prefixes the filter is disabled; inside, an unmatched path passes through too.
    for path in ["/other/x", "/agg/1/extra"] {
        let response = envoy.get(path);
        assert_eq!(response.status, 200, "{path}: {}", response.text());
    }
    let paths: Vec<String> = passthrough.hits().into_iter().map(|h| h.path).collect();
    assert_eq!(paths, ["/other/x", "/agg/1/extra"]);
    envoy.assert_no_vm_failures();
}

#[test]
fn the_answer_parser_refuses_repeated_keys_at_any_level() {
    for repeated in [
        r#"{"a":1,"a":2}"#,
        r#"{"a":1,"\u0061":2}"#,
        r#"{"x":[{"k":1},{"k":2,"k":3}]}"#,
        r#"{"_meta":{"complete":true},"x":1,"_meta":{"complete":false}}"#,
    ] {
        let error = parse_unique_keys(repeated.as_bytes()).unwrap_err();
        assert!(
            error.to_string().starts_with("duplicate key"),
            "{repeated}: {error}"
        );
    }
    assert_eq!(
        parse_unique_keys(br#"{"a":}"#).unwrap_err().to_string(),
        "expected value at line 1 column 6",
        "otherwise what serde_json says"
    );
    assert_eq!(
        parse_unique_keys(br#" {"a":{"a":1},"b":[{"a":2},{"a":3}]} "#).unwrap(),
        serde_json::json!({"a": {"a": 1}, "b": [{"a": 2}, {"a": 3}]})
    );
    assert!(parse_unique_keys(b"{} x").is_err());
}
