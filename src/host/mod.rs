//! The thin edge between Envoy and the sans-IO core: the only module that touches `proxy_wasm`.
//! Only `Result`-returning hostcalls are used, and call-response headers are never read when
//! Envoy reports no headers, so nothing here can trap the VM.

mod coalesce;
mod exchange;
mod http;
mod metrics;
mod registry;
mod root;
mod store;
mod worker;

use crate::time::Instant;
use proxy_wasm::hostcalls;
use proxy_wasm::types::{LogLevel, MapType};
use std::time::UNIX_EPOCH;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| Box::new(root::Root::default()));
}}

/// Follows Envoy's `wasm` log level, so debug lines cost nothing unless they are wanted.
fn follow_host_log_level() {
    if let Ok(level) = hostcalls::get_log_level() {
        proxy_wasm::set_log_level(level);
    }
}

/// Now, by Envoy's clock; the epoch if the host cannot tell.
fn now() -> Instant {
    let micros = hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
    Instant::from_micros(micros)
}

/// A header value as UTF-8 text; values that are not UTF-8 count as absent.
fn header_value(map: MapType, name: &str) -> Option<String> {
    let bytes = hostcalls::get_map_value_bytes(map, name).ok()??;
    String::from_utf8(bytes).ok()
}
