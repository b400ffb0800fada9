//! The floor: the least a proxy-wasm filter can do for a 4-call aggregation in Envoy.
//!
//! Per request: four `dispatch_http_call`s (clusters a..d, `GET <path>`, 1 s timeout), then,
//! per answer, one `:status` read and one body read, and after the last answer one local
//! reply, `{"a":<body>,"b":<body>,...}` in the order the answers came (`null` for a call that
//! failed or did not answer 200). No route matching, no header forwarding, no JSON checks, no
//! stats: a reference, not a product.
//!
//! The upstream path comes from the plugin configuration, read once per plugin
//! (`"/delay"`, or anything else for `"/0ms"`), so a request costs no header read.
//! Built by `make bench` for wasm32-wasip1, its unused exports removed by
//! `scripts/strip-exports.py` as the filter's are.

use std::time::Duration;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, MapType};

const CALLS: [&str; 4] = ["a", "b", "c", "d"];
const TIMEOUT: Duration = Duration::from_millis(1000);

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| Box::new(Floor { path: "/0ms" }));
}}

struct Floor {
    path: &'static str,
}

impl Context for Floor {}

impl RootContext for Floor {
    fn on_configure(&mut self, _size: usize) -> bool {
        let config = hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX);
        self.path = match config {
            Ok(Some(bytes)) if bytes.trim_ascii() == b"/delay" => "/delay",
            _ => "/0ms",
        };
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Aggregation {
            path: self.path,
            tokens: [0; 4],
            pending: 0,
            body: Vec::with_capacity(1600),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Aggregation {
    path: &'static str,
    tokens: [u32; 4],
    pending: usize,
    body: Vec<u8>,
}

impl HttpContext for Aggregation {
    fn on_http_request_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        for (slot, cluster) in CALLS.iter().enumerate() {
            let headers = vec![
                (":method", "GET"),
                (":path", self.path),
                (":authority", *cluster),
            ];
            if let Ok(token) =
                hostcalls::dispatch_http_call(cluster, headers, None, vec![], TIMEOUT)
            {
                self.tokens[slot] = token;
                self.pending += 1;
            }
        }
        if self.pending == 0 {
            let _ = hostcalls::send_http_response(502, vec![], None);
        }
        Action::Pause
    }
}

impl Context for Aggregation {
    fn on_http_call_response(&mut self, token: u32, headers: usize, size: usize, _trailers: usize) {
        let Some(slot) = self.tokens.iter().position(|&t| t == token) else {
            return;
        };
        self.body
            .push(if self.body.is_empty() { b'{' } else { b',' });
        self.body.push(b'"');
        self.body.extend_from_slice(CALLS[slot].as_bytes());
        self.body.extend_from_slice(b"\":");
        let ok = headers > 0
            && matches!(
                hostcalls::get_map_value_bytes(MapType::HttpCallResponseHeaders, ":status"),
                Ok(Some(status)) if status == b"200"
            );
        let body = match ok {
            true => hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, size),
            false => Ok(None),
        };
        match body {
            Ok(Some(bytes)) if !bytes.is_empty() => self.body.extend_from_slice(&bytes),
            _ => self.body.extend_from_slice(b"null"),
        }
        self.pending -= 1;
        if self.pending == 0 {
            self.body.push(b'}');
            let _ = hostcalls::send_http_response(
                200,
                vec![("content-type", "application/json")],
                Some(&self.body),
            );
        }
    }
}
