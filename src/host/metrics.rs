//! Envoy's stats as the core's [`MetricsBackend`] (SPEC §7): translation only. Which stats
//! exist and what a request adds to them is decided in `crate::stats`.

use crate::stats::{MetricKind, MetricsBackend};
use proxy_wasm::hostcalls;
use proxy_wasm::types::MetricType;

/// Envoy's stats, shared by every worker; listed in `/stats` and `/stats/prometheus`.
pub struct EnvoyMetrics;

impl MetricsBackend for EnvoyMetrics {
    fn define(&self, kind: MetricKind, name: &str) -> Result<u32, String> {
        let kind = match kind {
            MetricKind::Counter => MetricType::Counter,
            MetricKind::Histogram => MetricType::Histogram,
        };
        hostcalls::define_metric(kind, name)
            .map_err(|status| format!("cannot define metric {name}: {status:?}"))
    }

    fn increment(&self, id: u32, by: u64) {
        // A refused update is not worth failing a request over.
        let _ = hostcalls::increment_metric(id, i64::try_from(by).unwrap_or(i64::MAX));
    }

    fn record(&self, id: u32, value: u64) {
        let _ = hostcalls::record_metric(id, value);
    }
}
