//! The stream context Envoy creates per request: a thin shell around its [`Exchange`], which
//! the worker can also reach for timers and for answers routed through the root context.

use super::exchange::{Exchange, Via};
use super::worker::Worker;
use crate::plan::Plan;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;
use std::cell::RefCell;
use std::rc::Rc;

pub struct Stream {
    context_id: u32,
    exchange: Rc<RefCell<Exchange>>,
    worker: Rc<Worker>,
    /// Known to the worker (for timers and root-context answers): only once matched, so
    /// pass-through requests cost no bookkeeping.
    registered: bool,
}

impl Stream {
    pub fn new(context_id: u32, plan: Rc<Plan>, worker: Rc<Worker>) -> Self {
        let exchange = Rc::new(RefCell::new(Exchange::new(
            context_id,
            plan,
            Rc::clone(&worker),
        )));
        Stream {
            context_id,
            exchange,
            worker,
            registered: false,
        }
    }

    /// Runs `f` on the exchange; callbacks never nest, so the borrow is always free.
    fn with<T>(&self, otherwise: T, f: impl FnOnce(&mut Exchange) -> T) -> T {
        match self.exchange.try_borrow_mut() {
            Ok(mut exchange) => f(&mut exchange),
            Err(_) => otherwise,
        }
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        if self.registered {
            self.worker.forget(self.context_id);
        }
    }
}

impl Context for Stream {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        self.with((), |e| {
            e.on_call_response(token_id, num_headers, body_size, Via::Stream)
        });
    }
}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let action = self.with(Action::Continue, |e| e.on_request_headers(end_of_stream));
        if action == Action::Pause {
            self.worker.register(self.context_id, &self.exchange);
            self.registered = true;
        }
        action
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        self.with(Action::Continue, |e| {
            e.on_request_body(body_size, end_of_stream)
        })
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        self.with(Action::Continue, |e| e.on_request_trailers())
    }
}
