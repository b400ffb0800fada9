//! gateway-aggregator: the Gateway Aggregation (scatter-gather) pattern as a proxy-wasm filter.
//!
//! Everything but `host` is a sans-IO core: plain Rust over plain data, compiled and unit-tested
//! natively. `host` is the thin edge that talks to Envoy through `proxy_wasm`; it exists only in
//! the `.wasm` build.
//!
//! The path of one client request through the core: [`plan::Plan::compile`] once per
//! configuration; per request [`plan::Plan::find`], then a [`gather::Gather`] fed events until
//! it answers with a [`render::Response`], and [`stats`] recorded from its
//! [`gather::Summary`].
//!
//! `SPEC §n` in these docs cites the product contract: §2 configuration, §3 templates, §4 the
//! outcome of a call and of the aggregation, §5 response shaping, §6 resilience, §7
//! operations. The README's configuration reference and response contract are the same
//! contract written for users; its architecture section maps the modules.

// Every public item of the core says what it is: shapes, units, errors, and for entry points
// when to call them and what changes after. `host` is private, and outside the rule.
#![warn(missing_docs)]

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
