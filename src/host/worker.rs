//! What one worker's VM shares between its requests: the wake-ups that drive retries, hedges
//! and body deadlines, which request made each call sent from the timer, the in-flight counts
//! behind `max_inflight`, and the stats. Single-threaded: each field is its own `RefCell`,
//! borrowed briefly. It knows requests by context id only (`registry.rs` finds them).

use super::metrics::EnvoyMetrics;
use crate::stats::Stats;
use crate::time::Instant;
use hashbrown::HashMap;
use std::cell::{Cell, Ref, RefCell};
use std::time::Duration;

#[derive(Default)]
pub struct Worker {
    /// Due time and the context to wake.
    wakeups: RefCell<Vec<(Instant, u32)>>,
    /// Calls dispatched while the root context was active: Envoy answers them to the root,
    /// which hands each to its exchange.
    root_calls: RefCell<HashMap<u32, u32>>,
    /// Aggregations in flight per route index.
    inflight: RefCell<Vec<u64>>,
    stats: RefCell<Stats>,
    last_flush: Cell<Instant>,
    /// The missing `allow_on_headers_stop_iteration` has been logged: once per VM is enough
    /// to name the fix, and a line per request would flood the log.
    body_unavailable_logged: Cell<bool>,
}

/// How often counted stats reach Envoy.
const METRICS_FLUSH: Duration = Duration::from_secs(1);

impl Worker {
    /// Drops a request's wake-ups.
    pub fn forget(&self, context_id: u32) {
        self.wakeups
            .borrow_mut()
            .retain(|(_, id)| *id != context_id);
    }

    pub fn wake_at(&self, due: Instant, context_id: u32) {
        self.wakeups.borrow_mut().push((due, context_id));
    }

    /// The contexts whose wake-up time has come, each once.
    pub fn due(&self, now: Instant) -> Vec<u32> {
        let mut wakeups = self.wakeups.borrow_mut();
        let mut due: Vec<u32> = wakeups
            .iter()
            .filter(|(at, _)| *at <= now)
            .map(|(_, id)| *id)
            .collect();
        wakeups.retain(|(at, _)| *at > now);
        due.sort_unstable();
        due.dedup();
        due
    }

    pub fn note_root_call(&self, token: u32, context_id: u32) {
        self.root_calls.borrow_mut().insert(token, context_id);
    }

    pub fn take_root_call(&self, token: u32) -> Option<u32> {
        self.root_calls.borrow_mut().remove(&token)
    }

    /// Counts an aggregation in, unless the route is at its limit.
    pub fn enter(&self, route: usize, limit: Option<u64>) -> bool {
        let mut inflight = self.inflight.borrow_mut();
        if inflight.len() <= route {
            inflight.resize(route + 1, 0);
        }
        let Some(count) = inflight.get_mut(route) else {
            return false;
        };
        if limit.is_some_and(|limit| *count >= limit) {
            return false;
        }
        *count += 1;
        true
    }

    pub fn set_stats(&self, stats: Stats) {
        *self.stats.borrow_mut() = stats;
    }

    /// The worker's stats, to record an answered request in.
    pub fn stats(&self) -> Ref<'_, Stats> {
        self.stats.borrow()
    }

    /// Hands the counted stats to Envoy, at most once a second.
    pub fn flush_metrics(&self, now: Instant) {
        let due = self.last_flush.get() + METRICS_FLUSH <= now;
        if due {
            self.last_flush.set(now);
            self.stats.borrow().flush(&EnvoyMetrics);
        }
    }

    /// True the first time only: whether to log that Envoy withholds client bodies.
    pub fn first_body_unavailable(&self) -> bool {
        !self.body_unavailable_logged.replace(true)
    }

    pub fn leave(&self, route: usize) {
        if let Some(count) = self.inflight.borrow_mut().get_mut(route) {
            *count = count.saturating_sub(1);
        }
    }
}
