//! The live exchanges of one worker VM, by context id: how a timer wake-up, or the answer to a
//! call made from the timer (which Envoy delivers to the root context), reaches its request.

use super::exchange::Exchange;
use hashbrown::HashMap;
use std::cell::RefCell;
use std::rc::{Rc, Weak};

/// Weak references only: a stream that ends drops its exchange, whatever is registered here.
#[derive(Default)]
pub struct Exchanges {
    by_context: RefCell<HashMap<u32, Weak<RefCell<Exchange>>>>,
}

impl Exchanges {
    /// Makes a matched request reachable from the root context.
    pub fn register(&self, context_id: u32, exchange: &Rc<RefCell<Exchange>>) {
        self.by_context
            .borrow_mut()
            .insert(context_id, Rc::downgrade(exchange));
    }

    pub fn forget(&self, context_id: u32) {
        self.by_context.borrow_mut().remove(&context_id);
    }

    /// Runs `f` on a live exchange, made the host's effective context first so its hostcalls
    /// (a local reply, say) act on its own stream.
    pub fn with(&self, context_id: u32, f: impl FnOnce(&mut Exchange)) {
        let Some(exchange) = self
            .by_context
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
}
