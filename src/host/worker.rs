//! What one worker's VM shares between its contexts: the timer that drives retries and hedges,
//! the routing of answers to calls made from that timer, and the in-flight counts behind
//! `max_inflight`. Single-threaded: each field is its own `RefCell`, borrowed briefly.

use super::exchange::Exchange;
use super::metrics::Metrics;
use std::cell::{Cell, Ref, RefCell};
use std::collections::HashMap;
use std::rc::{Rc, Weak};

#[derive(Default)]
pub struct Worker {
    /// Due time (µs) and the context to wake.
    wakeups: RefCell<Vec<(u64, u32)>>,
    /// Exchanges that may be woken or receive answers through the root context.
    exchanges: RefCell<HashMap<u32, Weak<RefCell<Exchange>>>>,
    /// Calls dispatched while the root context was active: Envoy answers them to the root,
    /// which hands each to its exchange.
    root_calls: RefCell<HashMap<u32, u32>>,
    /// Aggregations in flight per route index.
    inflight: RefCell<Vec<u64>>,
    metrics: RefCell<Metrics>,
    last_flush_us: Cell<u64>,
    /// The missing `allow_on_headers_stop_iteration` has been logged: once per VM is enough
    /// to name the fix, and a line per request would flood the log.
    body_unavailable_logged: Cell<bool>,
}

/// How often counted stats reach Envoy.
const METRICS_FLUSH_US: u64 = 1_000_000;

impl Worker {
    pub fn register(&self, context_id: u32, exchange: &Rc<RefCell<Exchange>>) {
        self.exchanges
            .borrow_mut()
            .insert(context_id, Rc::downgrade(exchange));
    }

    pub fn forget(&self, context_id: u32) {
        self.exchanges.borrow_mut().remove(&context_id);
        self.wakeups
            .borrow_mut()
            .retain(|(_, id)| *id != context_id);
    }

    pub fn wake_at(&self, due_us: u64, context_id: u32) {
        self.wakeups.borrow_mut().push((due_us, context_id));
    }

    /// The contexts whose wake-up time has come, each once.
    pub fn due(&self, now_us: u64) -> Vec<u32> {
        let mut wakeups = self.wakeups.borrow_mut();
        let mut due: Vec<u32> = wakeups
            .iter()
            .filter(|(at, _)| *at <= now_us)
            .map(|(_, id)| *id)
            .collect();
        wakeups.retain(|(at, _)| *at > now_us);
        due.sort_unstable();
        due.dedup();
        due
    }

    /// Runs `f` on a live exchange, made the host's effective context first so its hostcalls
    /// (a local reply, say) act on its own stream.
    pub fn with_exchange(&self, context_id: u32, f: impl FnOnce(&mut Exchange)) {
        let Some(exchange) = self
            .exchanges
            .borrow()
            .get(&context_id)
            .and_then(Weak::upgrade)
        else {
            return;
        };
        if proxy_wasm::hostcalls::set_effective_context(context_id).is_err() {
            return;
        }
        let borrowed = exchange.try_borrow_mut();
        if let Ok(mut exchange) = borrowed {
            f(&mut exchange);
        }
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

    pub fn set_metrics(&self, metrics: Metrics) {
        *self.metrics.borrow_mut() = metrics;
    }

    /// The worker's stats, to record an answered request in.
    pub fn metrics(&self) -> Ref<'_, Metrics> {
        self.metrics.borrow()
    }

    /// Hands the counted stats to Envoy, at most once a second.
    pub fn flush_metrics(&self, now_us: u64) {
        let due = self.last_flush_us.get().saturating_add(METRICS_FLUSH_US) <= now_us;
        if due {
            self.last_flush_us.set(now_us);
            self.metrics.borrow().flush();
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
