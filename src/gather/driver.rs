//! A fake host for the state machine's tests: it keeps the clock, carries out the actions
//! (open attempts are remembered by call name, wake-ups fire when the clock passes them), and
//! answers attempts by call name, so a test reads like what happens to a request.

use super::{Action, ClientRequest, Dispatch, Event, Gather};
use crate::plan::matcher::Capture;
use crate::plan::{Plan, Route};
use crate::render::Response;
use crate::resilience::MemoryStore;
use crate::time::Instant;
use std::rc::Rc;
use std::time::Duration;

/// One request through a [`Gather`], with a virtual clock starting at 0.
pub struct Driver {
    pub gather: Gather,
    pub store: Rc<MemoryStore>,
    pub now: Instant,
    /// Attempts the gather dispatched and the test has not answered yet, oldest first.
    pub open: Vec<Dispatch>,
    /// Every attempt dispatched, in order.
    pub sent: Vec<Rc<super::UpstreamRequest>>,
    wakeups: Vec<Instant>,
    answer: Option<Response>,
}

/// The first route of a configuration.
pub fn route(config: &str) -> Rc<Route> {
    let plan = Plan::compile(config.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    Rc::clone(&plan.routes[0])
}

/// A request on `route` with one path capture, a query and a body, read as the host reads it.
pub fn request(route: &Route, capture: &str, query: &str, body: Option<&str>) -> ClientRequest {
    request_with_headers(route, capture, query, &[], body)
}

/// [`request`] with these client headers too (lowercase names).
pub fn request_with_headers(
    route: &Route,
    capture: &str,
    query: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> ClientRequest {
    ClientRequest {
        captures: vec![Capture::Segment(capture.into())],
        query: query.to_string(),
        headers: route
            .headers
            .iter()
            .map(|h| match h.as_str() {
                "x-request-id" => Some("req-1".into()),
                "content-type" => body.map(|_| "application/json".into()),
                other => headers
                    .iter()
                    .find(|(name, _)| *name == other)
                    .map(|(_, value)| (*value).into()),
            })
            .collect(),
        body: body.map(|b| b.as_bytes().to_vec()),
    }
}

impl Driver {
    /// Starts `request` at time 0, with a store of its own.
    pub fn start(route: &Rc<Route>, request: ClientRequest) -> Driver {
        Driver::start_with(
            route,
            request,
            Rc::new(MemoryStore::default()),
            Instant::default(),
        )
    }

    /// Starts `request` at `now`, sharing `store` (the cache and breakers of earlier requests).
    pub fn start_with(
        route: &Rc<Route>,
        request: ClientRequest,
        store: Rc<MemoryStore>,
        now: Instant,
    ) -> Driver {
        let (gather, actions) = Gather::start(Rc::clone(route), request, now, now, &*store);
        let mut driver = Driver {
            gather,
            store,
            now,
            open: Vec::new(),
            sent: Vec::new(),
            wakeups: Vec::new(),
            answer: None,
        };
        driver.carry_out(actions);
        driver
    }

    fn carry_out(&mut self, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::Dispatch(dispatch) => {
                    self.sent.push(Rc::clone(&dispatch.request));
                    self.open.push(dispatch);
                }
                Action::WakeAt(at) => self.wakeups.push(at),
                Action::Respond(response) => {
                    assert!(self.answer.is_none(), "a second answer: {response:?}");
                    self.answer = Some(response);
                }
            }
        }
    }

    /// The oldest open attempt of `call`, taken out of the open list.
    fn take(&mut self, call: &str) -> Dispatch {
        let position = self
            .open
            .iter()
            .position(|d| self.gather.call_name(d.attempt) == Some(call))
            .unwrap_or_else(|| panic!("no open attempt of call {call}: {:?}", self.open));
        self.open.remove(position)
    }

    /// The open attempts of `call`, oldest first.
    pub fn open_of(&self, call: &str) -> Vec<&Dispatch> {
        self.open
            .iter()
            .filter(|d| self.gather.call_name(d.attempt) == Some(call))
            .collect()
    }

    /// The `:path` of every open attempt, oldest first.
    pub fn open_paths(&self) -> Vec<String> {
        self.open
            .iter()
            .map(|d| header(d, ":path").to_string())
            .collect()
    }

    /// Reports an event about the oldest open attempt of `call`.
    pub fn report(&mut self, call: &str, event: impl FnOnce(super::AttemptId) -> Event) {
        let attempt = self.take(call).attempt;
        let actions = self.gather.on_event(event(attempt), self.now, &*self.store);
        self.carry_out(actions);
    }

    /// `call`'s oldest open attempt is answered with `status` and `body`.
    pub fn answer(&mut self, call: &str, status: u16, body: &str) {
        self.report(call, |attempt| Event::Answered {
            attempt,
            status,
            headers: Vec::new(),
            body: body.as_bytes().to_vec(),
        });
    }

    /// `call`'s oldest open attempt is answered 200 with `body`.
    pub fn ok(&mut self, call: &str, body: &str) {
        self.answer(call, 200, body);
    }

    /// `call`'s oldest open attempt is reset before its answer.
    pub fn reset(&mut self, call: &str) {
        self.report(call, |attempt| Event::Reset { attempt });
    }

    /// Moves the clock on by `ms` and fires the wake-ups now due.
    pub fn advance(&mut self, ms: u64) {
        self.now = self.now + Duration::from_millis(ms);
        let due = self.wakeups.iter().any(|at| *at <= self.now);
        self.wakeups.retain(|at| *at > self.now);
        if due {
            let actions = self.gather.on_timer(self.now, &*self.store);
            self.carry_out(actions);
        }
    }

    /// The answer, once given.
    pub fn response(&self) -> &Response {
        self.answer
            .as_ref()
            .unwrap_or_else(|| panic!("no answer yet; open attempts: {:?}", self.open_paths()))
    }

    /// The answer's body as JSON.
    pub fn body(&self) -> serde_json::Value {
        serde_json::from_slice(&self.response().body).unwrap()
    }
}

/// A header of a dispatched attempt ("" when absent).
pub fn header<'a>(dispatch: &'a Dispatch, name: &str) -> &'a str {
    dispatch
        .request
        .headers
        .iter()
        .find(|(n, _)| n == name)
        .map_or("", |(_, v)| &**v)
}
