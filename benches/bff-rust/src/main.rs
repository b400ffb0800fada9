//! A compiled BFF, the strongest kind of peer (`make bench`, benches/run.py): the aggregation
//! of benches/node/bff.js in Rust, hyper 1 + tokio, a current-thread runtime (one thread, like
//! the one Envoy worker and the one Node process it is compared with).
//!
//!   GET /agg, /agg/delay, /agg/timeout -> 4 calls to a..d at once (`tokio::join!`) over a
//!   keep-alive connection pool (hyper-util's client), each with its own total timeout (1000
//!   ms, and 200 ms for d in /agg/timeout). The answer is the bodies concatenated into one
//!   object, `{"a":<body>,...,"_meta":{"complete":true}}`, with `x-aggregation-complete`; a
//!   failed call (timeout, error, non-2xx, empty body) is left out and `complete` is false, as
//!   in the Node BFF. Unlike the Node BFF (JSON.parse + JSON.stringify) the bodies are not
//!   parsed: the Lua filter and the floor filter do not parse them either.
//!
//!   bench-bff [PORT]    (default 18012; upstream ports from UPSTREAM_PORTS, default
//!                        "18101,18102,18103,18104" for a,b,c,d)

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE, HOST};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

const NAMES: [&str; 4] = ["a", "b", "c", "d"];
type Upstreams = Client<HttpConnector, Empty<Bytes>>;

struct Call {
    name: &'static str,
    host: HeaderValue,
    uri: Uri,
    timeout: Duration,
}

struct Routes {
    agg: [Call; 4],
    delay: [Call; 4],
    timeout: [Call; 4],
}

impl Routes {
    fn new(ports: &[u16; 4]) -> Routes {
        let calls = |path: &str, last_path: &str, last_timeout: u64| {
            std::array::from_fn(|i| {
                let (path, ms) = if i == 3 {
                    (last_path, last_timeout)
                } else {
                    (path, 1000)
                };
                Call {
                    name: NAMES[i],
                    host: HeaderValue::from_static(NAMES[i]),
                    uri: format!("http://127.0.0.1:{}{}", ports[i], path)
                        .parse()
                        .unwrap_or_else(|e| fail(&format!("bad upstream uri: {e}"))),
                    timeout: Duration::from_millis(ms),
                }
            })
        };
        Routes {
            agg: calls("/0ms", "/0ms", 1000),
            delay: calls("/delay", "/delay", 1000),
            timeout: calls("/0ms", "/slow", 200),
        }
    }

    fn find(&self, path: &str) -> Option<&[Call; 4]> {
        match path {
            "/agg" => Some(&self.agg),
            "/agg/delay" => Some(&self.delay),
            "/agg/timeout" => Some(&self.timeout),
            _ => None,
        }
    }
}

fn fail(message: &str) -> ! {
    eprintln!("bench-bff: {message}");
    std::process::exit(2)
}

/// One upstream call: its body, or None when it failed or took longer than its timeout.
async fn fetch(client: &Upstreams, call: &Call) -> Option<Bytes> {
    let mut request = Request::new(Empty::new());
    *request.uri_mut() = call.uri.clone();
    request.headers_mut().insert(HOST, call.host.clone());
    let exchange = async {
        let response = client.request(request).await.ok()?;
        if !response.status().is_success() {
            return None;
        }
        let body = response.into_body().collect().await.ok()?.to_bytes();
        (!body.is_empty()).then_some(body)
    };
    tokio::time::timeout(call.timeout, exchange)
        .await
        .ok()
        .flatten()
}

async fn aggregate(client: &Upstreams, calls: &[Call; 4]) -> Response<Full<Bytes>> {
    let [a, b, c, d] = calls;
    let (ra, rb, rc, rd) = tokio::join!(
        fetch(client, a),
        fetch(client, b),
        fetch(client, c),
        fetch(client, d)
    );
    let bodies = [ra, rb, rc, rd];
    let size: usize = bodies.iter().flatten().map(|b| b.len() + 8).sum();
    let mut out = Vec::with_capacity(size + 32);
    out.push(b'{');
    let mut complete = true;
    for (call, body) in calls.iter().zip(&bodies) {
        match body {
            Some(body) => {
                out.push(b'"');
                out.extend_from_slice(call.name.as_bytes());
                out.extend_from_slice(b"\":");
                out.extend_from_slice(body);
                out.push(b',');
            }
            None => complete = false,
        }
    }
    out.extend_from_slice(if complete {
        b"\"_meta\":{\"complete\":true}}"
    } else {
        b"\"_meta\":{\"complete\":false}}"
    });
    reply(StatusCode::OK, out.into(), complete)
}

fn reply(status: StatusCode, body: Bytes, complete: bool) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(
        "x-aggregation-complete",
        HeaderValue::from_static(if complete { "true" } else { "false" }),
    );
    response
}

fn main() {
    let port: u16 = std::env::args()
        .nth(1)
        .map(|p| {
            p.parse()
                .unwrap_or_else(|_| fail("PORT is not a port number"))
        })
        .unwrap_or(18012);
    let listed =
        std::env::var("UPSTREAM_PORTS").unwrap_or_else(|_| "18101,18102,18103,18104".into());
    let parsed: Vec<u16> = listed
        .split(',')
        .filter_map(|p| p.trim().parse().ok())
        .collect();
    let ports: [u16; 4] = parsed
        .try_into()
        .unwrap_or_else(|_| fail("UPSTREAM_PORTS must list four ports (a,b,c,d)"));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| fail(&format!("tokio runtime: {e}")));
    runtime.block_on(serve(port, ports));
}

async fn serve(port: u16, ports: [u16; 4]) {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Upstreams = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(256)
        .build(connector);
    // Leaked once: every connection's task borrows them for the life of the process.
    let client: &'static Upstreams = Box::leak(Box::new(client));
    let routes: &'static Routes = Box::leak(Box::new(Routes::new(&ports)));

    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let listener = TcpListener::bind(addr)
        .await
        .unwrap_or_else(|e| fail(&format!("cannot listen on {addr}: {e}")));
    println!("bff listening on {addr}");
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<Incoming>| async move {
                let calls = match *request.method() {
                    Method::GET => routes.find(request.uri().path()),
                    _ => None,
                };
                Ok::<_, Infallible>(match calls {
                    Some(calls) => aggregate(client, calls).await,
                    None => reply(
                        StatusCode::NOT_FOUND,
                        Bytes::from_static(b"{\"error\":\"not found\"}"),
                        false,
                    ),
                })
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
