//! gateway-aggregator: the Gateway Aggregation (scatter-gather) pattern as a proxy-wasm filter.
//!
//! Everything but `host` is a sans-IO core: plain Rust over plain data, compiled and unit-tested
//! natively. `host` is the thin edge that talks to Envoy through `proxy_wasm`; it exists only in
//! the `.wasm` build.

pub mod client_body;
pub mod config;
pub mod encoding;
pub mod gather;
pub mod json_check;
pub mod json_number;
pub mod json_path;
pub mod outcome;
pub mod plan;
pub mod render;
pub mod resilience;
pub mod shape;
pub mod stats;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod time;

#[cfg(target_arch = "wasm32")]
mod host;
