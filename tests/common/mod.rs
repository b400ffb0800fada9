//! Integration-test harness: a programmable HTTP/1.1 upstream, an Envoy launcher that loads the
//! built filter, and a small HTTP/1.1 client. Std only, plus `socket2` for SO_LINGER (resets).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    dead_code
)]

mod unique_keys;

pub use unique_keys::parse_unique_keys;

use serde_json::{json, Value};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// The HttpFilter name of the wasm filter in the generated Envoy config.
pub const FILTER_NAME: &str = "gateway_aggregator";
const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);
const ENVOY_READY_TIMEOUT: Duration = Duration::from_secs(15);
const HANG_LIMIT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// Paths

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The release `.wasm` built by `make build`.
pub fn wasm_path() -> PathBuf {
    let path = manifest_dir().join("target/wasm32-wasip1/release/gateway_aggregator.wasm");
    assert!(
        path.exists(),
        "{} is missing: run `make build` first",
        path.display()
    );
    path
}

/// `$ENVOY_BIN`, else the virtualenv binary installed by `make setup`.
pub fn envoy_bin() -> PathBuf {
    let path = std::env::var_os("ENVOY_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest_dir().join(".venv/bin/envoy"));
    assert!(
        path.exists(),
        "{} is missing: run `make setup`",
        path.display()
    );
    path
}

// ---------------------------------------------------------------------------------------------
// HTTP/1.1 wire helpers shared by the upstream (requests) and the client (responses)

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

fn eof() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "connection closed mid-message",
    )
}

/// One line without its CRLF; `None` on EOF before any byte.
fn read_line(reader: &mut impl BufRead) -> io::Result<Option<String>> {
    let mut line = Vec::new();
    if reader.read_until(b'\n', &mut line)? == 0 {
        return Ok(None);
    }
    if line.last() != Some(&b'\n') {
        return Err(eof());
    }
    while matches!(line.last(), Some(b'\n' | b'\r')) {
        line.pop();
    }
    String::from_utf8(line)
        .map(Some)
        .map_err(|_| invalid("non-UTF-8 line"))
}

type Headers = Vec<(String, String)>;

/// Start line and headers (names lowercased); `None` on EOF before the message starts.
fn read_head(reader: &mut impl BufRead) -> io::Result<Option<(String, Headers)>> {
    let start = loop {
        match read_line(reader)? {
            None => return Ok(None),
            Some(line) if line.is_empty() => continue, // stray CRLF between messages
            Some(line) => break line,
        }
    };
    let mut headers = Vec::new();
    loop {
        let line = read_line(reader)?.ok_or_else(eof)?;
        if line.is_empty() {
            return Ok(Some((start, headers)));
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| invalid(format!("bad header line {line:?}")))?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
}

fn find_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn is_chunked(headers: &[(String, String)]) -> bool {
    find_header(headers, "transfer-encoding")
        .is_some_and(|te| te.to_ascii_lowercase().contains("chunked"))
}

fn content_length(headers: &[(String, String)]) -> io::Result<Option<usize>> {
    find_header(headers, "content-length")
        .map(|v| {
            v.parse()
                .map_err(|_| invalid(format!("bad content-length {v:?}")))
        })
        .transpose()
}

fn read_chunked(reader: &mut impl BufRead) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line = read_line(reader)?.ok_or_else(eof)?;
        let size_hex = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_hex, 16)
            .map_err(|_| invalid(format!("bad chunk size {line:?}")))?;
        if size == 0 {
            // Trailers, up to the empty line.
            while !read_line(reader)?.ok_or_else(eof)?.is_empty() {}
            return Ok(body);
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader.read_exact(&mut body[start..])?;
        read_line(reader)?.ok_or_else(eof)?; // CRLF after the chunk data
    }
}

fn read_exact_body(reader: &mut impl Read, len: usize) -> io::Result<Vec<u8>> {
    let mut body = vec![0; len];
    reader.read_exact(&mut body)?;
    Ok(body)
}

// ---------------------------------------------------------------------------------------------
// Programmable upstream

/// A request as the upstream received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// The raw request-target, exactly as received.
    pub path: String,
    /// Names lowercased, in arrival order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }
}

/// A complete answer. `Content-Length` is always added by the upstream.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Waited before anything is written (only this connection waits).
    pub delay: Duration,
}

impl Reply {
    pub fn json(status: u16, body: &str) -> Reply {
        Reply::empty(status)
            .header("content-type", "application/json")
            .body(body.as_bytes())
    }

    pub fn text(status: u16, body: &str) -> Reply {
        Reply::empty(status)
            .header("content-type", "text/plain")
            .body(body.as_bytes())
    }

    pub fn empty(status: u16) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            delay: Duration::ZERO,
        }
    }

    pub fn delay_ms(mut self, ms: u64) -> Reply {
        self.delay = Duration::from_millis(ms);
        self
    }

    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    pub fn body(mut self, body: &[u8]) -> Reply {
        self.body = body.to_vec();
        self
    }

    /// Status line and headers, announcing `content_length` body bytes.
    fn head(&self, content_length: usize) -> Vec<u8> {
        let mut head = format!("HTTP/1.1 {} {}\r\n", self.status, reason(self.status));
        for (name, value) in &self.headers {
            if !name.eq_ignore_ascii_case("content-length") {
                head.push_str(&format!("{name}: {value}\r\n"));
            }
        }
        head.push_str(&format!("content-length: {content_length}\r\n\r\n"));
        head.into_bytes()
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        400 => "Bad Request",
        404 => "Not Found",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

/// What the upstream does with one request.
#[derive(Debug, Clone)]
pub enum Behavior {
    Reply(Reply),
    /// Read the request, then close with SO_LINGER 0: the peer sees a TCP RST.
    Reset,
    /// Send the head announcing the whole body, send only the first half of it, then RST.
    ResetAfterHeaders(Reply),
    /// Never answer; hold the socket until the peer closes it (or 60 s).
    Hang,
    /// Send the head at once (after the reply's delay), then `chunk` body bytes every `every`.
    Trickle {
        reply: Reply,
        chunk: usize,
        every: Duration,
    },
}

type Handler = dyn Fn(&Recorded) -> Behavior + Send + Sync + 'static;

/// A threaded HTTP/1.1 server on 127.0.0.1 (one thread per connection, keep-alive).
/// Dropping it leaks the listener thread, which does not keep the process alive.
pub struct Upstream {
    port: u16,
    hits: Arc<Mutex<Vec<Recorded>>>,
}

impl Upstream {
    pub fn start(handler: impl Fn(&Recorded) -> Behavior + Send + Sync + 'static) -> Upstream {
        let listener = bind_loopback(1024).expect("bind upstream");
        let port = listener.local_addr().expect("upstream addr").port();
        let hits = Arc::new(Mutex::new(Vec::new()));
        let handler: Arc<Handler> = Arc::new(handler);
        let shared_hits = Arc::clone(&hits);
        thread::Builder::new()
            .name(format!("upstream-{port}"))
            .spawn(move || accept_loop(listener, handler, shared_hits))
            .expect("spawn upstream");
        Upstream { port, hits }
    }

    /// Always 200 with this JSON body.
    pub fn json(body: &str) -> Upstream {
        let body = body.to_string();
        Upstream::start(move |_| Behavior::Reply(Reply::json(200, &body)))
    }

    /// Always 200 with this JSON body, after `ms` milliseconds.
    pub fn json_delayed(body: &str, ms: u64) -> Upstream {
        let body = body.to_string();
        Upstream::start(move |_| Behavior::Reply(Reply::json(200, &body).delay_ms(ms)))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Every request received so far, in arrival order.
    pub fn hits(&self) -> Vec<Recorded> {
        self.hits.lock().unwrap().clone()
    }

    pub fn hit_count(&self) -> usize {
        self.hits.lock().unwrap().len()
    }

    pub fn reset_hits(&self) {
        self.hits.lock().unwrap().clear();
    }
}

/// A listener on 127.0.0.1:0 with a deep accept backlog (bursts of ~1000 connections).
fn bind_loopback(backlog: i32) -> io::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into())?;
    socket.listen(backlog)?;
    Ok(socket.into())
}

fn accept_loop(listener: TcpListener, handler: Arc<Handler>, hits: Arc<Mutex<Vec<Recorded>>>) {
    for stream in listener.incoming() {
        let Ok(stream) = stream else {
            thread::sleep(Duration::from_millis(10)); // e.g. out of file descriptors
            continue;
        };
        let handler = Arc::clone(&handler);
        let hits = Arc::clone(&hits);
        // Failing to spawn drops (closes) the connection, which the test will notice.
        let _ = thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || serve_connection(stream, &*handler, &hits));
    }
}

fn serve_connection(stream: TcpStream, handler: &Handler, hits: &Mutex<Vec<Recorded>>) {
    let _ = stream.set_nodelay(true);
    let mut reader = BufReader::new(stream);
    // Any I/O error ends the connection; the peer sees it closed.
    while let Ok(Some(request)) = read_request(&mut reader) {
        hits.lock().unwrap().push(request.clone());
        let wants_close = request
            .header("connection")
            .is_some_and(|c| c.eq_ignore_ascii_case("close"));
        let mut stream = reader.get_ref();
        let keep_going = match handler(&request) {
            Behavior::Reply(reply) => {
                thread::sleep(reply.delay);
                let mut bytes = reply.head(reply.body.len());
                bytes.extend_from_slice(&reply.body);
                stream.write_all(&bytes).is_ok()
            }
            Behavior::Reset => return reset(stream),
            Behavior::ResetAfterHeaders(reply) => {
                thread::sleep(reply.delay);
                let announced = reply.body.len().max(2);
                let mut bytes = reply.head(announced);
                bytes.extend_from_slice(&reply.body[..reply.body.len() / 2]);
                let _ = stream.write_all(&bytes);
                thread::sleep(Duration::from_millis(20)); // let the partial body leave first
                return reset(stream);
            }
            Behavior::Hang => {
                hang(stream);
                false
            }
            Behavior::Trickle {
                reply,
                chunk,
                every,
            } => {
                thread::sleep(reply.delay);
                let mut ok = stream.write_all(&reply.head(reply.body.len())).is_ok();
                for piece in reply.body.chunks(chunk.max(1)) {
                    if !ok {
                        break;
                    }
                    thread::sleep(every);
                    ok = stream.write_all(piece).is_ok();
                }
                ok
            }
        };
        if !keep_going || wants_close {
            let _ = stream.shutdown(Shutdown::Write);
            return;
        }
    }
}

fn read_request(reader: &mut impl BufRead) -> io::Result<Option<Recorded>> {
    let Some((start, headers)) = read_head(reader)? else {
        return Ok(None);
    };
    let mut parts = start.split(' ');
    let (Some(method), Some(path)) = (parts.next(), parts.next()) else {
        return Err(invalid(format!("bad request line {start:?}")));
    };
    let body = if is_chunked(&headers) {
        read_chunked(reader)?
    } else {
        read_exact_body(reader, content_length(&headers)?.unwrap_or(0))?
    };
    Ok(Some(Recorded {
        method: method.to_string(),
        path: path.to_string(),
        headers,
        body,
    }))
}

/// Arm SO_LINGER with a zero timeout, so that closing the socket (the caller returns and drops
/// it, without a shutdown first) sends a RST instead of a FIN.
fn reset(stream: &TcpStream) {
    let _ = socket2::SockRef::from(stream).set_linger(Some(Duration::ZERO));
}

/// Read and discard until the peer closes, an error, or the 60 s limit.
fn hang(mut stream: &TcpStream) {
    let until = Instant::now() + HANG_LIMIT;
    let mut sink = [0u8; 4096];
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            return;
        }
        match stream.read(&mut sink) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP client

/// A response as the client received it.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    /// Names lowercased, in arrival order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// From connect to the last body byte.
    pub elapsed: Duration,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// Asserts the answer took between `min_ms` (inclusive) and `max_ms` (exclusive).
    pub fn assert_took(&self, min_ms: u64, max_ms: u64, why: &str) {
        let (min, max) = (Duration::from_millis(min_ms), Duration::from_millis(max_ms));
        assert!(
            self.elapsed >= min && self.elapsed < max,
            "took {:?}, expected {min:?}..{max:?}: {why}",
            self.elapsed
        );
    }

    /// The body as JSON; panics (showing the body) if it is not JSON, or if some object in it
    /// repeats a key (SPEC §4), which a plain `Value` parse would hide.
    pub fn json(&self) -> Value {
        parse_unique_keys(&self.body).unwrap_or_else(|e| {
            panic!(
                "response body is not JSON with unique keys ({e}); status {}, body: {}",
                self.status,
                self.text()
            )
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One HTTP/1.1 request with `Connection: close` to 127.0.0.1:`port`; panics on I/O errors.
/// `path` is sent verbatim. `Host` and `Content-Length` are added unless given in `headers`.
pub fn request_to(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpResponse {
    try_request_to(port, method, path, headers, body)
        .unwrap_or_else(|e| panic!("{method} {path} to 127.0.0.1:{port} failed: {e}"))
}

/// Like [`request_to`], but returns I/O errors (e.g. `ConnectionReset`) instead of panicking.
pub fn try_request_to(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> io::Result<HttpResponse> {
    let started = Instant::now();
    let stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    stream.set_write_timeout(Some(CLIENT_TIMEOUT))?;
    stream.set_nodelay(true)?;
    (&stream).write_all(&encode_request(port, method, path, headers, body))?;
    let mut reader = BufReader::new(stream);
    let mut response = read_response(&mut reader, method)?;
    response.elapsed = started.elapsed();
    Ok(response)
}

/// The bytes of one request; see [`request_to`] for the defaults added.
/// Sends bytes exactly as given (for malformed or non-UTF-8 requests) and reads the answer.
pub fn raw_request(port: u16, request: &[u8]) -> io::Result<HttpResponse> {
    let started = Instant::now();
    let stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    stream.set_write_timeout(Some(CLIENT_TIMEOUT))?;
    (&stream).write_all(request)?;
    let mut response = read_response(&mut BufReader::new(&stream), "GET")?;
    response.elapsed = started.elapsed();
    Ok(response)
}

/// A raw TCP connection to a loopback port, reads timing out after 10 s.
pub fn connect(port: u16) -> TcpStream {
    let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("set the read timeout");
    stream
}

/// Everything the peer sends until it closes, and how the connection ended (`None`: closed
/// cleanly; else the error, e.g. `ConnectionReset`).
pub fn read_until_closed(mut stream: &TcpStream) -> (Vec<u8>, Option<io::ErrorKind>) {
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return (received, None),
            Ok(n) => received.extend_from_slice(&buf[..n]),
            Err(e) => return (received, Some(e.kind())),
        }
    }
}

/// A slow client: sends `head` (start line and headers, e.g. from [`encode_request`] with an
/// empty body and the `content-length` to announce), then each of `pieces` after waiting
/// `every`, while it reads the answer to `method` on the same connection. `elapsed` counts from
/// the head being sent. The writer gives up at the first failed write (the server closed).
/// Returns once the answer is in and the writer has sent or given up on every piece (whatever
/// the client still sends after the answer has reached the server by then); panics without an
/// answer.
pub fn slow_request(
    port: u16,
    method: &str,
    head: &[u8],
    pieces: Vec<Vec<u8>>,
    every: Duration,
) -> HttpResponse {
    let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream.set_read_timeout(Some(CLIENT_TIMEOUT)).unwrap();
    stream.set_nodelay(true).unwrap();
    let started = Instant::now();
    (&stream).write_all(head).expect("send the request head");
    let writer = stream.try_clone().expect("clone the client socket");
    let pieces_sent = thread::spawn(move || {
        for piece in pieces {
            thread::sleep(every);
            if (&writer).write_all(&piece).is_err() {
                return;
            }
        }
    });
    let mut response = read_response(&mut BufReader::new(&stream), method).expect("an answer");
    response.elapsed = started.elapsed();
    pieces_sent.join().expect("the slow writer");
    response
}

pub fn encode_request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Vec<u8> {
    let given = |name: &str| headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
    let mut head = format!("{method} {path} HTTP/1.1\r\n");
    if !given("host") {
        head.push_str(&format!("host: 127.0.0.1:{port}\r\n"));
    }
    if !given("connection") {
        head.push_str("connection: close\r\n");
    }
    let body_carrying = !body.is_empty() || matches!(method, "POST" | "PUT" | "PATCH");
    if body_carrying && !given("content-length") && !given("transfer-encoding") {
        head.push_str(&format!("content-length: {}\r\n", body.len()));
    }
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// Reads one response (skipping 1xx interim ones) to a request made with `method`.
/// `elapsed` is left zero.
pub fn read_response(reader: &mut impl BufRead, method: &str) -> io::Result<HttpResponse> {
    loop {
        let (start, headers) = read_head(reader)?.ok_or_else(eof)?;
        let status: u16 = start
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| invalid(format!("bad status line {start:?}")))?;
        if (100..200).contains(&status) {
            continue;
        }
        let body = if method == "HEAD" || status == 204 || status == 304 {
            Vec::new()
        } else if is_chunked(&headers) {
            read_chunked(reader)?
        } else if let Some(len) = content_length(&headers)? {
            read_exact_body(reader, len)?
        } else {
            let mut body = Vec::new();
            reader.read_to_end(&mut body)?;
            body
        };
        return Ok(HttpResponse {
            status,
            headers,
            body,
            elapsed: Duration::ZERO,
        });
    }
}

// ---------------------------------------------------------------------------------------------
// Envoy launcher

/// Builds the Envoy configuration around the filter; see [`Envoy::builder`].
pub struct EnvoyBuilder {
    filter_config: String,
    with_filter: bool,
    clusters: Vec<(String, u16)>,
    /// Fields added to a cluster's generated config, by cluster name (see `cluster_with`).
    cluster_fields: Vec<(String, Value)>,
    default_upstream: Option<u16>,
    concurrency: usize,
    /// `Some(prefixes)`: the filter is disabled except on routes with these path prefixes.
    filter_only_on: Option<Vec<String>>,
    /// `allow_on_headers_stop_iteration` on the Wasm filter (default true, as shipped).
    hold_headers: bool,
}

impl EnvoyBuilder {
    /// A STATIC cluster at 127.0.0.1:`port` (HTTP/1.1, connect_timeout 1 s).
    pub fn cluster(mut self, name: &str, port: u16) -> Self {
        self.clusters.push((name.to_string(), port));
        self
    }

    /// A cluster as `cluster` makes it, with these fields added to (or replacing) its own, e.g.
    /// `typed_extension_protocol_options` for HTTP/2 to the upstream.
    pub fn cluster_with(mut self, name: &str, port: u16, fields: Value) -> Self {
        self.cluster_fields.push((name.to_string(), fields));
        self.cluster(name, port)
    }

    /// A cluster pointing at a loopback port where nothing listens (connections are refused).
    pub fn closed_cluster(self, name: &str) -> Self {
        self.cluster(name, closed_port())
    }

    /// A cluster with no endpoints at all (Envoy answers "no healthy upstream").
    pub fn empty_cluster(self, name: &str) -> Self {
        self.cluster(name, 0)
    }

    /// Requests Envoy routes (prefix "/") go to cluster `passthrough` at this port;
    /// without it they get a direct 404 "no envoy route".
    pub fn default_upstream(mut self, port: u16) -> Self {
        self.default_upstream = Some(port);
        self
    }

    /// Worker threads (default 1).
    pub fn concurrency(mut self, workers: usize) -> Self {
        self.concurrency = workers;
        self
    }

    /// The wasm filter is `disabled: true` and only routes with these path prefixes enable it.
    pub fn filter_disabled_by_default(mut self, prefixes: &[&str]) -> Self {
        self.filter_only_on = Some(prefixes.iter().map(|p| p.to_string()).collect());
        self
    }

    /// No wasm filter at all: plain Envoy (launcher checks, baselines).
    /// Leaves Envoy's default `allow_on_headers_stop_iteration: false`, to show what happens
    /// to routes that read the client body without it.
    pub fn without_header_hold(mut self) -> Self {
        self.hold_headers = false;
        self
    }

    pub fn without_filter(mut self) -> Self {
        self.with_filter = false;
        self
    }

    /// Starts Envoy; panics with the tail of its log if it is not ready within 15 s.
    pub fn start(self) -> Envoy {
        self.try_start().unwrap_or_else(|log| {
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(60)..].join("\n");
            panic!("Envoy did not start; last lines of its log:\n{tail}")
        })
    }

    /// Starts Envoy expecting the filter to refuse its configuration; returns the log line
    /// that says why (`… configuration rejected: route "…" call "…" key "…": …`). Panics if
    /// Envoy starts, or if its log has no such line.
    pub fn rejection(self) -> String {
        let log = match self.try_start() {
            Ok(envoy) => panic!(
                "Envoy started with an invalid configuration:\n{}",
                envoy.log()
            ),
            Err(log) => log,
        };
        log.lines()
            .find(|l| l.contains("configuration rejected"))
            .unwrap_or_else(|| panic!("no rejection line in the log:\n{log}"))
            .to_string()
    }

    /// Starts Envoy; `Err(full log)` if it exits (e.g. the filter rejects its configuration)
    /// or is not ready within 15 s.
    pub fn try_start(self) -> Result<Envoy, String> {
        // Everything that can panic on a missing build or binary comes before the temp dir.
        // JSON is valid YAML and needs no quoting care.
        let config = serde_json::to_string_pretty(&self.config()).expect("config to JSON");
        let envoy_bin = envoy_bin();
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "ga-test-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create envoy temp dir");
        let config_path = dir.join("envoy.yaml");
        std::fs::write(&config_path, config).expect("write envoy config");
        let log_file = std::fs::File::create(dir.join("envoy.log")).expect("create envoy.log");

        let child = Command::new(envoy_bin)
            .arg("-c")
            .arg(&config_path)
            .args(["--concurrency", &self.concurrency.to_string()])
            .args(["--disable-hot-restart", "--use-dynamic-base-id"])
            .args(["-l", "info", "--component-log-level", "wasm:debug"])
            .arg("--admin-address-path")
            .arg(dir.join("admin-address"))
            // Not `--log-path`: that file is flushed only every 10 s (--file-flush-interval-msec)
            // and loses its tail on SIGKILL; stderr is written line by line.
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("log file"))
            .stderr(log_file)
            .spawn()
            .expect("spawn envoy");
        let mut envoy = Envoy {
            child,
            dir,
            port: 0,
            admin_port: 0,
        };
        match envoy.wait_ready() {
            Ok(()) => Ok(envoy),
            Err(why) => {
                let _ = envoy.child.kill();
                let _ = envoy.child.wait();
                Err(format!("{}\n[harness] {why}", envoy.log()))
            }
        }
    }

    fn config(&self) -> Value {
        let target = |route_match: Value| match self.default_upstream {
            Some(_) => json!({ "match": route_match, "route": { "cluster": "passthrough" } }),
            None => json!({
                "match": route_match,
                "direct_response": { "status": 404, "body": { "inline_string": "no envoy route" } }
            }),
        };
        let mut routes = Vec::new();
        for prefix in self.filter_only_on.iter().flatten() {
            let mut route = target(json!({ "prefix": prefix }));
            route["typed_per_filter_config"] = json!({
                FILTER_NAME: {
                    "@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig",
                    "disabled": false,
                    // Envoy 1.40 rejects a FilterConfig without `config`; an empty one enables.
                    "config": {}
                }
            });
            routes.push(route);
        }
        routes.push(target(json!({ "prefix": "/" })));

        let mut http_filters = Vec::new();
        if self.with_filter {
            let mut filter = self.wasm_filter();
            if self.filter_only_on.is_some() {
                filter["disabled"] = json!(true);
            }
            http_filters.push(filter);
        }
        http_filters.push(json!({
            "name": "envoy.filters.http.router",
            "typed_config": { "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router" }
        }));

        let mut clusters: Vec<Value> = self
            .clusters
            .iter()
            .map(|(name, port)| {
                let mut cluster = static_cluster(name, *port);
                for (_, fields) in self.cluster_fields.iter().filter(|(n, _)| n == name) {
                    for (key, value) in fields.as_object().expect("cluster fields: an object") {
                        cluster[key] = value.clone();
                    }
                }
                cluster
            })
            .collect();
        if let Some(port) = self.default_upstream {
            clusters.push(static_cluster("passthrough", port));
        }

        json!({
            "admin": { "address": loopback(0) },
            // Histograms reach /stats on each flush: flush often so tests can read them.
            "stats_flush_interval": "0.1s",
            "stats_config": { "stats_tags": stats_tags() },
            "static_resources": {
                "listeners": [{
                    "name": "ingress",
                    "address": loopback(0),
                    "filter_chains": [{ "filters": [{
                        "name": "envoy.filters.network.http_connection_manager",
                        "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                            "stat_prefix": "ingress",
                            "codec_type": "AUTO",
                            "route_config": {
                                "name": "local",
                                "virtual_hosts": [{ "name": "all", "domains": ["*"], "routes": routes }]
                            },
                            "http_filters": http_filters
                        }
                    }]}]
                }],
                "clusters": clusters
            }
        })
    }

    fn wasm_filter(&self) -> Value {
        json!({
            "name": FILTER_NAME,
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
                "config": {
                    "name": FILTER_NAME,
                    "root_id": FILTER_NAME,
                    "failure_policy": "FAIL_CLOSED",
                    "allow_on_headers_stop_iteration": self.hold_headers,
                    "vm_config": {
                        "vm_id": FILTER_NAME,
                        "runtime": "envoy.wasm.runtime.v8",
                        "code": { "local": { "filename": wasm_path() } }
                    },
                    "configuration": {
                        "@type": "type.googleapis.com/google.protobuf.StringValue",
                        "value": self.filter_config
                    }
                }
            }
        })
    }
}

/// A loopback port where nothing listens: bound to find a free one, then released.
pub fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("free port addr").port()
}

fn loopback(port: u16) -> Value {
    json!({ "socket_address": { "address": "127.0.0.1", "port_value": port } })
}

/// Circuit breakers are raised far above Envoy's 1024 defaults so that fan-out tests measure
/// the filter, not Envoy's overflow protection.
/// The tag extraction shipped in envoy/gateway.yaml: route and call names become Prometheus
/// labels of the filter's stats.
pub fn stats_tags() -> Value {
    json!([
        { "tag_name": "ga_reason", "regex": "^wasmcustom\\.gateway_aggregator\\..*\\.failure(\\.([^.]+))$" },
        { "tag_name": "ga_call", "regex": "^wasmcustom\\.gateway_aggregator\\.route\\.[^.]+\\.call\\.(([^.]+)\\.)" },
        { "tag_name": "ga_route", "regex": "^wasmcustom\\.gateway_aggregator\\.(route\\.([^.]+)\\.)" },
        { "tag_name": "ga_cluster", "regex": "^wasmcustom\\.gateway_aggregator\\.cluster\\.(([^.]+)\\.)" }
    ])
}

/// Port 0 means a cluster without endpoints.
fn static_cluster(name: &str, port: u16) -> Value {
    let endpoints = if port == 0 {
        json!([])
    } else {
        json!([{ "lb_endpoints": [{ "endpoint": { "address": loopback(port) } }] }])
    };
    json!({
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "circuit_breakers": { "thresholds": [{
            "max_connections": 100000, "max_pending_requests": 100000, "max_requests": 100000
        }]},
        "load_assignment": {
            "cluster_name": name,
            "endpoints": endpoints
        }
    })
}

/// A running Envoy; killed (and its temp dir removed unless `KEEP_ENVOY` is set) on drop.
pub struct Envoy {
    child: Child,
    dir: PathBuf,
    port: u16,
    admin_port: u16,
}

impl Envoy {
    /// `filter_config_json` is given to the filter verbatim (StringValue configuration).
    pub fn builder(filter_config_json: &str) -> EnvoyBuilder {
        EnvoyBuilder {
            filter_config: filter_config_json.to_string(),
            with_filter: true,
            clusters: Vec::new(),
            cluster_fields: Vec::new(),
            default_upstream: None,
            concurrency: 1,
            filter_only_on: None,
            hold_headers: true,
        }
    }

    /// The listener port.
    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn admin_port(&self) -> u16 {
        self.admin_port
    }

    /// The directory holding the config and logs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Everything Envoy has logged so far (its stdout and stderr).
    pub fn log(&self) -> String {
        let bytes = std::fs::read(self.dir.join("envoy.log")).unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// `GET /stats` from the admin endpoint (plain text, one `name: value` per line).
    pub fn stats(&self) -> String {
        request_to(self.admin_port, "GET", "/stats", &[], b"").text()
    }

    /// The value of one counter or gauge from `/stats`, if it exists.
    pub fn stat(&self, name: &str) -> Option<u64> {
        stat_in(&self.stats(), name)
    }

    /// The value of one counter or gauge from `/stats`; panics if it does not exist.
    pub fn counter(&self, name: &str) -> u64 {
        self.stat(name)
            .unwrap_or_else(|| panic!("no stat {name} in /stats"))
    }

    /// The value of the filter's own counter or gauge `name` (below [`FILTER_STATS`]);
    /// panics if it does not exist.
    pub fn filter_stat(&self, name: &str) -> u64 {
        filter_stat(&self.stats(), name)
    }

    pub fn get(&self, path: &str) -> HttpResponse {
        request_to(self.port, "GET", path, &[], b"")
    }

    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> HttpResponse {
        request_to(self.port, method, path, headers, body)
    }

    /// Panics if the filter's VM crashed or failed: a Rust panic, a wasm trap, a failed VM
    /// or plugin, a critical wasm log line, or a non-zero wasm failure stat.
    pub fn assert_no_vm_failures(&self) {
        let log = self.log();
        let bad: Vec<&str> = log.lines().filter(|line| is_vm_failure(line)).collect();
        assert!(
            bad.is_empty(),
            "wasm VM failure in Envoy's log:\n{}",
            bad.join("\n")
        );
        let failing: Vec<String> = self
            .stats()
            .lines()
            .filter(|line| is_failure_stat(line))
            .map(str::to_string)
            .collect();
        assert!(
            failing.is_empty(),
            "wasm failure stats:\n{}",
            failing.join("\n")
        );
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + ENVOY_READY_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().map_err(|e| e.to_string())? {
                return Err(format!("envoy exited with {status}"));
            }
            if self.admin_port == 0 {
                self.admin_port = self.read_admin_port().unwrap_or(0);
            }
            if self.admin_port != 0 && self.port == 0 && self.admin_ok("/ready") {
                self.port = self.listener_port().unwrap_or(0);
            }
            if self.port != 0 {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("not ready after {ENVOY_READY_TIMEOUT:?}"));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn read_admin_port(&self) -> Option<u16> {
        let address = std::fs::read_to_string(self.dir.join("admin-address")).ok()?;
        address.trim().rsplit(':').next()?.parse().ok()
    }

    fn admin_ok(&self, path: &str) -> bool {
        try_request_to(self.admin_port, "GET", path, &[], b"").is_ok_and(|r| r.status == 200)
    }

    /// The bound port of the (only) listener, from `GET /listeners?format=json`.
    fn listener_port(&self) -> Option<u16> {
        let response =
            try_request_to(self.admin_port, "GET", "/listeners?format=json", &[], b"").ok()?;
        let listeners: Value = serde_json::from_slice(&response.body).ok()?;
        let port = listeners["listener_statuses"][0]["local_address"]["socket_address"]
            ["port_value"]
            .as_u64()?;
        u16::try_from(port).ok().filter(|p| *p != 0)
    }
}

/// The prefix of the filter's own stats in Envoy's `/stats`.
pub const FILTER_STATS: &str = "wasmcustom.gateway_aggregator.";

/// The value of counter or gauge `name` in a `/stats` text ([`Envoy::stats`]), if it is there.
pub fn stat_in(stats: &str, name: &str) -> Option<u64> {
    stats.lines().find_map(|line| {
        let (n, v) = line.split_once(": ")?;
        (n == name).then(|| v.trim().parse().ok()).flatten()
    })
}

/// The value of the filter's counter or gauge `name` (below [`FILTER_STATS`]) in a `/stats`
/// text read once ([`Envoy::stats`]); panics if it is absent.
pub fn filter_stat(stats: &str, name: &str) -> u64 {
    stat_in(stats, &format!("{FILTER_STATS}{name}"))
        .unwrap_or_else(|| panic!("no stat {FILTER_STATS}{name} in /stats"))
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::env::var_os("KEEP_ENVOY").is_some() {
            eprintln!("KEEP_ENVOY: Envoy files kept in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A log line that means the VM or the plugin failed. What Envoy 1.40 prints:
/// - a Rust panic: `[critical][wasm] ... wasm log <plugin> ...: panicked at src/...`,
///   then `[error][wasm] ... Function: proxy_on_... failed: Uncaught RuntimeError: unreachable`;
/// - a rejected configuration: `[error][wasm] ... Wasm VM failed Failed to configure base Wasm
///   plugin`, `[critical][wasm] ... Plugin <name> failed to load`.
///
/// The plugin's own `log::error!` lines (`[error][wasm] ... wasm log ...`) are not failures.
fn is_vm_failure(line: &str) -> bool {
    let envoy_wasm_error = line.contains("[error][wasm]") && !line.contains("] wasm log ");
    line.contains("[critical]") || envoy_wasm_error || line.contains("panicked")
}

/// A non-zero wasm failure or VM reload counter. Envoy 1.40 counts no runtime errors under
/// FAIL_CLOSED (the failed VM just answers 503); it has `wasm.<plugin>.vm_reload{,_backoff,
/// _failure,_success}` (FAIL_RELOAD) and `wasm.remote_load_fetch_failures`.
fn is_failure_stat(line: &str) -> bool {
    let Some((name, value)) = line.split_once(": ") else {
        return false;
    };
    let failure_name =
        name.starts_with("wasm.") && (name.contains("fail") || name.contains("reload"));
    failure_name && value.trim().parse::<u64>().is_ok_and(|v| v > 0)
}
