//! The operator's stats (SPEC §7): which stats exist, what they are named, and what one
//! answered request adds to them. The policy lives here, in the core, tested natively against a
//! fake; Envoy's stats are one [`MetricsBackend`] (`host/metrics.rs`), which only translates.
//!
//! Names: `gateway_aggregator.route.<route>.<stat>`,
//! `gateway_aggregator.route.<route>.call.<call>.<stat>` and
//! `gateway_aggregator.cluster.<cluster>.circuit_opened`. Envoy's tag extraction turns the route,
//! call and cluster into Prometheus labels (README, Metrics).

use crate::client_body::BodyStall;
use crate::gather::Summary;
use crate::outcome::Reason;
use crate::plan::Plan;
use crate::time::whole_millis;
use std::cell::RefCell;
use std::time::Duration;

/// The prefix of every stat the filter defines.
pub const PREFIX: &str = "gateway_aggregator";

/// The two kinds of stats the filter uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// Only grows; the filter adds increments to it.
    Counter,
    /// Samples (milliseconds, for the latency histograms).
    Histogram,
}

/// Where stats go: Envoy's stats in the filter (`host/metrics.rs`), a fake in tests.
pub trait MetricsBackend {
    /// Defines the stat `name` once, at configure time; the id names it afterwards.
    ///
    /// # Errors
    /// Why the host refused the name, for the configure-time log line.
    fn define(&self, kind: MetricKind, name: &str) -> Result<u32, String>;
    /// Adds `by` to a counter.
    fn increment(&self, id: u32, by: u64);
    /// Records one sample of a histogram.
    fn record(&self, id: u32, value: u64);
}

/// A counter's place in [`Stats::pending`]: counting is an index, not a hash lookup.
#[derive(Debug, Clone, Copy)]
struct Slot(usize);

#[derive(Debug)]
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

#[derive(Debug)]
struct CallStats {
    success: Slot,
    /// One counter per [`Reason`], indexed by [`Reason::index`].
    failures: Vec<Slot>,
    fallback: Slot,
    /// Skipped by `when` (SPEC §3.6).
    skipped: Slot,
    stale: Slot,
    cache_hits: Slot,
    attempts: Slot,
    retries: Slot,
    hedges: Slot,
    /// Attempts that shared another aggregation's identical request (SPEC §6 `coalesce`).
    coalesced: Slot,
    latency_ms: u32,
}

/// Every stat of a plan, defined once per VM. Counter increments add up here and reach the
/// backend once a second ([`Stats::flush`]), so a request costs no counter hostcall; histogram
/// samples go at once.
#[derive(Debug, Default)]
pub struct Stats {
    routes: Vec<RouteStats>,
    /// Cluster name and its `circuit_opened` counter, for clusters with a breaker.
    circuits_opened: Vec<(String, Slot)>,
    /// The backend's id of each counter, by slot.
    counter_ids: Vec<u32>,
    /// Increments not yet handed to the backend, by slot.
    pending: RefCell<Vec<u64>>,
}

/// One answered request, as the stats see it.
#[derive(Debug, Clone, Copy)]
pub struct Answered<'a> {
    /// The route's index in [`Plan::routes`].
    pub route: usize,
    /// The HTTP status the client got.
    pub status: u16,
    /// `x-aggregation-complete: true`.
    pub complete: bool,
    /// From the request headers to the answer.
    pub latency: Duration,
    /// What the calls did; `None` when the request was answered before any call (413, 408, …).
    pub summary: Option<&'a Summary>,
}

impl Stats {
    /// Defines every stat of `plan` with `backend`.
    ///
    /// # Errors
    /// The first name the backend refused, as the backend worded it.
    pub fn define(plan: &Plan, backend: &dyn MetricsBackend) -> Result<Stats, String> {
        let mut counter_ids = Vec::new();
        let mut counter = |name: String| {
            counter_ids.push(backend.define(MetricKind::Counter, &name)?);
            Ok::<_, String>(Slot(counter_ids.len() - 1))
        };
        let histogram = |name: String| backend.define(MetricKind::Histogram, &name);
        let mut stats = Stats::default();
        for route in &plan.routes {
            let base = format!("{PREFIX}.route.{}", route.name);
            let mut calls = Vec::with_capacity(route.calls.len());
            for call in &route.calls {
                let call_base = format!("{base}.call.{}", call.name);
                calls.push(CallStats {
                    success: counter(format!("{call_base}.success"))?,
                    failures: Reason::ALL
                        .iter()
                        .map(|reason| counter(format!("{call_base}.failure.{}", reason.as_str())))
                        .collect::<Result<_, _>>()?,
                    fallback: counter(format!("{call_base}.fallback"))?,
                    skipped: counter(format!("{call_base}.skipped"))?,
                    stale: counter(format!("{call_base}.stale"))?,
                    cache_hits: counter(format!("{call_base}.cache_hit"))?,
                    attempts: counter(format!("{call_base}.attempts"))?,
                    retries: counter(format!("{call_base}.retries"))?,
                    hedges: counter(format!("{call_base}.hedges"))?,
                    coalesced: counter(format!("{call_base}.coalesced"))?,
                    latency_ms: histogram(format!("{call_base}.latency_ms"))?,
                });
                let known = stats
                    .circuits_opened
                    .iter()
                    .any(|(c, _)| **c == *call.cluster);
                if call.resilience.breaker.is_some() && !known {
                    let slot =
                        counter(format!("{PREFIX}.cluster.{}.circuit_opened", call.cluster))?;
                    stats.circuits_opened.push((call.cluster.to_string(), slot));
                }
            }
            stats.routes.push(RouteStats {
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
        stats.pending = RefCell::new(vec![0; counter_ids.len()]);
        stats.counter_ids = counter_ids;
        Ok(stats)
    }

    /// Counts one answered request: the route's request and status class (2xx complete or
    /// partial, 4xx, 5xx), its latency, and per call each result (a success, or one failure
    /// per reason: a stale answer counts the failure it stood in for), skipped calls, fallbacks,
    /// stale answers, cache hits, attempts, retries, hedges, coalesced attempts and the call's
    /// latency; and the circuits it opened.
    pub fn record(&self, answered: &Answered<'_>, backend: &dyn MetricsBackend) {
        let Some(stats) = self.routes.get(answered.route) else {
            return;
        };
        self.count(stats.requests, 1);
        match answered.status {
            200..=299 if answered.complete => self.count(stats.complete, 1),
            200..=299 => self.count(stats.partial, 1),
            400..=499 => self.count(stats.failed_4xx, 1),
            _ => self.count(stats.failed_5xx, 1),
        }
        backend.record(stats.latency_ms, whole_millis(answered.latency));
        let Some(summary) = answered.summary else {
            return;
        };
        for (call, stats) in summary.calls.iter().zip(&stats.calls) {
            for result in &call.results {
                match result {
                    None => self.count(stats.success, 1),
                    Some(reason) => {
                        if let Some(slot) = stats.failures.get(reason.index()) {
                            self.count(*slot, 1);
                        }
                    }
                }
            }
            if call.fallback {
                self.count(stats.fallback, 1);
            }
            if call.skipped {
                self.count(stats.skipped, 1);
            }
            if call.stale {
                self.count(stats.stale, 1);
            }
            self.count(stats.cache_hits, call.cache_hits);
            self.count(stats.attempts, call.attempts);
            self.count(stats.retries, call.retries);
            self.count(stats.hedges, call.hedges);
            self.count(stats.coalesced, call.coalesced);
            if let (true, Some(duration)) = (call.finished, call.duration) {
                backend.record(stats.latency_ms, whole_millis(duration));
            }
        }
        for cluster in &summary.opened_circuits {
            if let Some((_, slot)) = self.circuits_opened.iter().find(|(c, _)| c == cluster) {
                self.count(*slot, 1);
            }
        }
    }

    /// One request of `route` answered without its client body at the deadline (SPEC §3.4),
    /// by why; [`Stats::record`] counts the answer itself (a request, a 4xx or 5xx).
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

    /// Hands the increments counted since the last flush to the backend.
    pub fn flush(&self, backend: &dyn MetricsBackend) {
        let mut pending = self.pending.borrow_mut();
        for (by, id) in pending.iter_mut().zip(&self.counter_ids) {
            if *by > 0 {
                backend.increment(*id, *by);
                *by = 0;
            }
        }
    }

    fn count(&self, slot: Slot, by: u32) {
        if let Some(pending) = self.pending.borrow_mut().get_mut(slot.0) {
            *pending += u64::from(by);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gather::CallSummary;
    use std::cell::RefCell;
    use std::collections::BTreeMap;

    /// Stats by name: counters add up, histograms keep their samples.
    #[derive(Default)]
    struct Fake {
        names: RefCell<Vec<(MetricKind, String)>>,
        counters: RefCell<BTreeMap<String, u64>>,
        samples: RefCell<BTreeMap<String, Vec<u64>>>,
    }

    impl Fake {
        fn name(&self, id: u32) -> String {
            self.names.borrow()[id as usize].1.clone()
        }

        fn counter(&self, name: &str) -> u64 {
            let full = format!("{PREFIX}.{name}");
            assert!(
                self.names.borrow().iter().any(|(_, n)| *n == full),
                "{full} is not defined"
            );
            self.counters.borrow().get(&full).copied().unwrap_or(0)
        }
    }

    impl MetricsBackend for Fake {
        fn define(&self, kind: MetricKind, name: &str) -> Result<u32, String> {
            let mut names = self.names.borrow_mut();
            names.push((kind, name.to_string()));
            Ok(u32::try_from(names.len() - 1).unwrap())
        }
        fn increment(&self, id: u32, by: u64) {
            *self.counters.borrow_mut().entry(self.name(id)).or_default() += by;
        }
        fn record(&self, id: u32, value: u64) {
            self.samples
                .borrow_mut()
                .entry(self.name(id))
                .or_default()
                .push(value);
        }
    }

    fn plan() -> Plan {
        Plan::compile(
            br#"{"routes":[{"name":"page","match":{"path":"/p"},"calls":[
                {"name":"a","cluster":"ca","path":"/a","circuit_breaker":{"failures":2,"open_ms":100}},
                {"name":"b","cluster":"cb","path":"/b"}]}]}"#,
        )
        .unwrap()
    }

    #[test]
    fn every_reason_has_a_failure_counter_per_call() {
        let fake = Fake::default();
        Stats::define(&plan(), &fake).unwrap();
        for reason in Reason::ALL {
            for call in ["a", "b"] {
                fake.counter(&format!(
                    "route.page.call.{call}.failure.{}",
                    reason.as_str()
                ));
            }
        }
        fake.counter("cluster.ca.circuit_opened");
        assert!(!fake
            .names
            .borrow()
            .iter()
            .any(|(_, n)| n.contains("cluster.cb")));
    }

    #[test]
    fn an_answer_counts_its_status_its_calls_and_reaches_the_backend_on_flush() {
        let fake = Fake::default();
        let stats = Stats::define(&plan(), &fake).unwrap();
        let summary = Summary {
            calls: vec![
                CallSummary {
                    fetched: true,
                    finished: true,
                    results: vec![Some(Reason::Timeout)],
                    fallback: true,
                    attempts: 3,
                    retries: 1,
                    hedges: 1,
                    duration: Some(Duration::from_micros(12_500)),
                    ..CallSummary::default()
                },
                CallSummary {
                    fetched: true,
                    finished: true,
                    results: vec![None, Some(Reason::CircuitOpen), None],
                    cache_hits: 1,
                    attempts: 2,
                    coalesced: 1,
                    stale: true,
                    duration: Some(Duration::from_millis(3)),
                    ..CallSummary::default()
                },
            ],
            opened_circuits: vec!["ca".to_string()],
        };
        let answered = Answered {
            route: 0,
            status: 200,
            complete: false,
            latency: Duration::from_millis(15),
            summary: Some(&summary),
        };
        stats.record(&answered, &fake);
        stats.record(
            &Answered {
                status: 408,
                summary: None,
                ..answered
            },
            &fake,
        );
        stats.body_stalled(0, BodyStall::Timeout);
        stats.record(
            &Answered {
                status: 502,
                summary: None,
                ..answered
            },
            &fake,
        );
        assert_eq!(fake.counter("route.page.requests"), 0, "not before a flush");
        stats.flush(&fake);
        for (name, count) in [
            ("route.page.requests", 3),
            ("route.page.partial", 1),
            ("route.page.complete", 0),
            ("route.page.failed_4xx", 1),
            ("route.page.failed_5xx", 1),
            ("route.page.request_body_timeout", 1),
            ("route.page.request_body_unavailable", 0),
            ("route.page.call.a.failure.timeout", 1),
            ("route.page.call.a.fallback", 1),
            ("route.page.call.a.attempts", 3),
            ("route.page.call.a.retries", 1),
            ("route.page.call.a.hedges", 1),
            ("route.page.call.b.success", 2),
            ("route.page.call.b.failure.circuit_open", 1),
            ("route.page.call.b.cache_hit", 1),
            ("route.page.call.b.stale", 1),
            ("route.page.call.b.attempts", 2),
            ("route.page.call.b.coalesced", 1),
            ("route.page.call.a.coalesced", 0),
            ("cluster.ca.circuit_opened", 1),
        ] {
            assert_eq!(fake.counter(name), count, "{name}");
        }
        let samples = fake.samples.borrow();
        assert_eq!(
            samples[&format!("{PREFIX}.route.page.latency_ms")],
            [15, 15, 15]
        );
        assert_eq!(
            samples[&format!("{PREFIX}.route.page.call.a.latency_ms")],
            [12]
        );
        stats.flush(&fake);
        assert_eq!(
            fake.counter("route.page.requests"),
            3,
            "a flush sends each increment once"
        );
    }

    #[test]
    fn a_skipped_call_counts_as_skipped_and_nothing_else() {
        let fake = Fake::default();
        let stats = Stats::define(&plan(), &fake).unwrap();
        let summary = Summary {
            calls: vec![
                CallSummary {
                    fetched: true,
                    finished: true,
                    results: vec![None],
                    ..CallSummary::default()
                },
                CallSummary {
                    fetched: true,
                    skipped: true,
                    ..CallSummary::default()
                },
            ],
            opened_circuits: Vec::new(),
        };
        let answered = Answered {
            route: 0,
            status: 200,
            complete: true,
            latency: Duration::from_millis(1),
            summary: Some(&summary),
        };
        stats.record(&answered, &fake);
        stats.flush(&fake);
        assert_eq!(fake.counter("route.page.call.b.skipped"), 1);
        assert_eq!(fake.counter("route.page.call.a.skipped"), 0);
        assert_eq!(fake.counter("route.page.call.b.success"), 0);
        assert_eq!(fake.counter("route.page.call.b.attempts"), 0);
        assert_eq!(fake.counter("route.page.complete"), 1);
        assert!(!fake
            .samples
            .borrow()
            .contains_key(&format!("{PREFIX}.route.page.call.b.latency_ms")));
    }
}
