//! Envoy stats (SPEC §7), defined once at configure time, named after routes and calls:
//! `gateway_aggregator.route.<route>.<stat>` and `gateway_aggregator.route.<route>.call.<call>.<stat>`.
//! Envoy lists them in `/stats` and `/stats/prometheus`; every worker adds to the same stats.

use crate::client_body::BodyStall;
use crate::gather::Summary;
use crate::outcome::Reason;
use crate::plan::Plan;
use proxy_wasm::hostcalls;
use proxy_wasm::types::MetricType;
use std::cell::RefCell;
use std::collections::HashMap;

/// A counter's place in [`Metrics::pending`]: counting is an index, not a hash lookup.
#[derive(Clone, Copy)]
struct Slot(usize);

pub const PREFIX: &str = "gateway_aggregator";

/// Every reason a call can fail with, in the order of SPEC §4.
const REASONS: [Reason; 13] = [
    Reason::Timeout,
    Reason::Status,
    Reason::Connect,
    Reason::InvalidBody,
    Reason::TooLarge,
    Reason::MissingInput,
    Reason::InvalidInput,
    Reason::DependencyFailed,
    Reason::Deadline,
    Reason::Dispatch,
    Reason::CircuitOpen,
    Reason::TooManyItems,
    Reason::Overload,
];

struct RouteStats {
    requests: Slot,
    complete: Slot,
    partial: Slot,
    failed_4xx: Slot,
    failed_5xx: Slot,
    /// Answered 408 / 500 because the client body was not there by the deadline.
    body_timeout: Slot,
    body_unavailable: Slot,
    latency_ms: u32,
    calls: Vec<CallStats>,
}

struct CallStats {
    success: Slot,
    failures: Vec<Slot>,
    fallback: Slot,
    stale: Slot,
    cache_hits: Slot,
    attempts: Slot,
    retries: Slot,
    hedges: Slot,
    latency_ms: u32,
}

/// Counter increments are added up here and handed to Envoy once a second (`flush`), so a
/// request costs no counter hostcall; histogram samples go to Envoy at once.
#[derive(Default)]
pub struct Metrics {
    routes: Vec<RouteStats>,
    circuits_opened: HashMap<String, Slot>,
    /// Envoy's id of each counter, by slot.
    counter_ids: Vec<u32>,
    /// Increments not yet handed to Envoy, by slot.
    pending: RefCell<Vec<u64>>,
}

fn define(kind: MetricType, name: &str) -> Result<u32, String> {
    hostcalls::define_metric(kind, name)
        .map_err(|status| format!("cannot define metric {name}: {status:?}"))
}

impl Metrics {
    pub fn define(plan: &Plan) -> Result<Metrics, String> {
        let mut counter_ids = Vec::new();
        let mut counter = |name: String| {
            counter_ids.push(define(MetricType::Counter, &name)?);
            Ok::<_, String>(Slot(counter_ids.len() - 1))
        };
        let histogram = |name: String| define(MetricType::Histogram, &name);
        let mut metrics = Metrics::default();
        for route in &plan.routes {
            let base = format!("{PREFIX}.route.{}", route.name);
            let mut calls = Vec::with_capacity(route.calls.len());
            for call in &route.calls {
                let call_base = format!("{base}.call.{}", call.name);
                calls.push(CallStats {
                    success: counter(format!("{call_base}.success"))?,
                    failures: REASONS
                        .iter()
                        .map(|reason| counter(format!("{call_base}.failure.{}", reason.as_str())))
                        .collect::<Result<_, _>>()?,
                    fallback: counter(format!("{call_base}.fallback"))?,
                    stale: counter(format!("{call_base}.stale"))?,
                    cache_hits: counter(format!("{call_base}.cache_hit"))?,
                    attempts: counter(format!("{call_base}.attempts"))?,
                    retries: counter(format!("{call_base}.retries"))?,
                    hedges: counter(format!("{call_base}.hedges"))?,
                    latency_ms: histogram(format!("{call_base}.latency_ms"))?,
                });
                if call.resilience.breaker.is_some()
                    && !metrics.circuits_opened.contains_key(&call.cluster)
                {
                    let id = counter(format!("{PREFIX}.cluster.{}.circuit_opened", call.cluster))?;
                    metrics.circuits_opened.insert(call.cluster.clone(), id);
                }
            }
            metrics.routes.push(RouteStats {
                requests: counter(format!("{base}.requests"))?,
                complete: counter(format!("{base}.complete"))?,
                partial: counter(format!("{base}.partial"))?,
                failed_4xx: counter(format!("{base}.failed_4xx"))?,
                failed_5xx: counter(format!("{base}.failed_5xx"))?,
                body_timeout: counter(format!("{base}.request_body_timeout"))?,
                body_unavailable: counter(format!("{base}.request_body_unavailable"))?,
                latency_ms: histogram(format!("{base}.latency_ms"))?,
                calls,
            });
        }
        metrics.pending = RefCell::new(vec![0; counter_ids.len()]);
        metrics.counter_ids = counter_ids;
        Ok(metrics)
    }

    /// One answered request of `route`: its status, completeness and what its calls did.
    pub fn record(
        &self,
        route: usize,
        status: u16,
        complete: bool,
        latency_us: u64,
        summary: Option<&Summary>,
    ) {
        let Some(stats) = self.routes.get(route) else {
            return;
        };
        self.count(stats.requests, 1);
        match status {
            200..=299 if complete => self.count(stats.complete, 1),
            200..=299 => self.count(stats.partial, 1),
            400..=499 => self.count(stats.failed_4xx, 1),
            _ => self.count(stats.failed_5xx, 1),
        }
        observe(stats.latency_ms, latency_us / 1000);
        let Some(summary) = summary else { return };
        for (call, stats) in summary.calls.iter().zip(&stats.calls) {
            for result in &call.results {
                match result {
                    None => self.count(stats.success, 1),
                    Some(reason) => {
                        let index = REASONS.iter().position(|r| r == reason);
                        if let Some(id) = index.and_then(|i| stats.failures.get(i)) {
                            self.count(*id, 1);
                        }
                    }
                }
            }
            if call.fallback {
                self.count(stats.fallback, 1);
            }
            if call.stale {
                self.count(stats.stale, 1);
            }
            self.count(stats.cache_hits, call.cache_hits);
            self.count(stats.attempts, call.attempts);
            self.count(stats.retries, call.retries);
            self.count(stats.hedges, call.hedges);
            if let (true, Some(us)) = (call.finished, call.duration_us) {
                observe(stats.latency_ms, us / 1000);
            }
        }
        for cluster in &summary.opened_circuits {
            if let Some(id) = self.circuits_opened.get(cluster) {
                self.count(*id, 1);
            }
        }
    }

    /// One request of `route` answered without its body at the deadline (SPEC §3.4), by why;
    /// `record` counts the answer itself (request, 4xx or 5xx).
    pub fn body_stalled(&self, route: usize, stall: BodyStall) {
        let Some(stats) = self.routes.get(route) else {
            return;
        };
        let slot = match stall {
            BodyStall::Timeout => stats.body_timeout,
            BodyStall::Unavailable => stats.body_unavailable,
        };
        self.count(slot, 1);
    }
}

impl Metrics {
    fn count(&self, slot: Slot, by: u32) {
        if let Some(pending) = self.pending.borrow_mut().get_mut(slot.0) {
            *pending += u64::from(by);
        }
    }

    /// Hands the counted increments to Envoy.
    pub fn flush(&self) {
        let mut pending = self.pending.borrow_mut();
        for (by, id) in pending.iter_mut().zip(&self.counter_ids) {
            if *by > 0 {
                // A refused update is not worth failing over.
                let _ = hostcalls::increment_metric(*id, i64::try_from(*by).unwrap_or(i64::MAX));
                *by = 0;
            }
        }
    }
}

fn observe(id: u32, value: u64) {
    let _ = hostcalls::record_metric(id, value);
}
