//! What one worker's VM shares between its requests: the wake-ups that drive retries, hedges,
//! coalesced waits and body deadlines, which request made each call sent from the timer, the
//! shared requests in flight (SPEC §6 `coalesce`), the in-flight counts behind `max_inflight`,
//! and the stats. Single-threaded: each field is its own `RefCell`, borrowed briefly (never
//! across a call into an exchange). It knows requests by context id only (`registry.rs` finds
//! them).

use super::metrics::EnvoyMetrics;
use crate::gather::UpstreamRequest;
use crate::resilience::coalesce::{Handover, InFlight, Sending, Shared, Waiter};
use crate::stats::Stats;
use crate::time::Instant;
use hashbrown::HashMap;
use std::cell::{Cell, Ref, RefCell};
use std::rc::Rc;
use std::time::Duration;

/// The worker's shared requests in flight, each kept to be sent again on a handover.
type SharedRequests = InFlight<Rc<UpstreamRequest>>;

#[derive(Default)]
pub struct Worker {
    /// Due time and the context to wake.
    wakeups: RefCell<Vec<(Instant, u32)>>,
    /// Calls dispatched while the root context was active: Envoy answers them to the root,
    /// which hands each to its exchange.
    root_calls: RefCell<HashMap<u32, u32>>,
    /// Aggregations in flight per route index.
    inflight: RefCell<Vec<u64>>,
    /// Identical requests of different aggregations that share one upstream request.
    shared: RefCell<SharedRequests>,
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

    /// Lets `waiter` share the request in flight under `key`, if there is one; otherwise gives
    /// it back, to be sent ([`Worker::sent_shared`]).
    pub fn join_shared(&self, key: &str, waiter: Waiter) -> Result<(), Waiter> {
        self.shared.borrow_mut().join(key, waiter)
    }

    /// A request was sent for `waiter`, for others to share.
    pub fn sent_shared(
        &self,
        key: Rc<str>,
        sending: Sending,
        request: Rc<UpstreamRequest>,
        waiter: Waiter,
    ) {
        self.shared.borrow_mut().sent(key, sending, request, waiter);
    }

    /// The shared request `token` answered, with everyone waiting for it; `None` when the
    /// token is not a shared request's.
    pub fn shared_answered(&self, token: u32) -> Option<Shared<Rc<UpstreamRequest>>> {
        self.shared.borrow_mut().answered(token)
    }

    /// The shared requests `context` stops waiting for at `now`: its attempts' timeouts.
    pub fn expired_waits(&self, context: u32, now: Instant) -> Vec<Waiter> {
        self.shared.borrow_mut().expired(context, now)
    }

    /// `context` was answered: it waits for no shared request any more.
    pub fn stop_waiting(&self, context: u32) {
        self.shared.borrow_mut().leave(context);
    }

    /// The stream of `context` ended: requests sent from it are handed over on the next tick.
    pub fn stream_gone(&self, context: u32) {
        self.shared.borrow_mut().gone(context);
    }

    /// Shared requests to send again, from the root context, for their first waiter.
    pub fn handovers(&self, now: Instant) -> Vec<Handover<Rc<UpstreamRequest>>> {
        self.shared.borrow_mut().handovers(now)
    }

    /// A handed-over request was sent again from the root context.
    pub fn resent(&self, key: &Rc<str>, token: u32, now: Instant, timeout: Duration) {
        self.shared.borrow_mut().resent(key, token, now, timeout);
    }

    /// A handover Envoy refused: the request leaves the book, with its waiters.
    pub fn abandon(&self, key: &str) -> Option<Shared<Rc<UpstreamRequest>>> {
        self.shared.borrow_mut().abandon(key)
    }

    pub fn leave(&self, route: usize) {
        if let Some(count) = self.inflight.borrow_mut().get_mut(route) {
            *count = count.saturating_sub(1);
        }
    }
}
