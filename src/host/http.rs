//! The stream context Envoy creates per request: takes the first look at the path and, only
//! when a route may match, hands the request to its [`Exchange`], which the root context can
//! also reach (through the registry) for timers and for answers to calls sent from the timer.

use super::coalesce;
use super::exchange::{Exchange, Via};
use super::header_value;
use super::registry::Exchanges;
use super::worker::Worker;
use crate::plan::Plan;
use crate::resilience::coalesce::Route;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, MapType};
use std::cell::RefCell;
use std::rc::Rc;

pub struct Stream {
    context_id: u32,
    plan: Rc<Plan>,
    worker: Rc<Worker>,
    exchanges: Rc<Exchanges>,
    /// Created once the path may match a route, so pass-through requests allocate nothing.
    exchange: Option<Rc<RefCell<Exchange>>>,
    /// Known to the registry (for timers and root-context answers): only once matched, so
    /// pass-through requests cost no bookkeeping.
    registered: bool,
}

impl Stream {
    pub fn new(
        context_id: u32,
        plan: Rc<Plan>,
        worker: Rc<Worker>,
        exchanges: Rc<Exchanges>,
    ) -> Self {
        Stream {
            context_id,
            plan,
            worker,
            exchanges,
            exchange: None,
            registered: false,
        }
    }

    /// Runs `f` on the exchange, if there is one; callbacks never nest, so the borrow is
    /// always free.
    fn with<T>(&self, otherwise: T, f: impl FnOnce(&mut Exchange) -> T) -> T {
        match self.exchange.as_ref().map(|e| e.try_borrow_mut()) {
            Some(Ok(mut exchange)) => f(&mut exchange),
            _ => otherwise,
        }
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        if self.registered {
            self.exchanges.forget(self.context_id);
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
        // A shared request's answer is for every request waiting for it, this one included:
        // routed before this stream's own exchange is borrowed.
        let route = Route::Stream(self.context_id);
        if coalesce::deliver(
            token_id,
            num_headers,
            body_size,
            route,
            &self.worker,
            &self.exchanges,
        ) {
            return;
        }
        self.with((), |e| {
            e.on_call_response(token_id, num_headers, body_size, Via::Stream)
        });
    }
}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        // The cheap first look: one hostcall, and nothing else for paths no route can match.
        if self.plan.routes.is_empty() {
            return Action::Continue;
        }
        let Some(path) = header_value(MapType::HttpRequestHeaders, ":path") else {
            return Action::Continue;
        };
        if !self.plan.may_match(&path) {
            return Action::Continue;
        }
        let exchange = Rc::new(RefCell::new(Exchange::new(
            self.context_id,
            Rc::clone(&self.plan),
            Rc::clone(&self.worker),
        )));
        self.exchange = Some(Rc::clone(&exchange));
        let action = self.with(Action::Continue, |e| {
            e.on_request_headers(path, end_of_stream)
        });
        if action == Action::Pause {
            self.exchanges.register(self.context_id, &exchange);
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
