//! The per-request state machine (SPEC §3.2, §3.5, §4, §6): events in, actions out, no I/O.
//!
//! `Gather::start` dispatches every selected call without pending dependencies. A call runs as
//! tasks (one per plain call, one per `for_each` item); a task sends jobs (first attempt,
//! retries, a hedge), each handed to the host as a `Dispatch`. Events about jobs, and timer
//! wake-ups, may make dependents ready, fail the aggregation (a required call failed), or
//! answer it (everything settled, or `wait_for` satisfied). The host sends the one `Respond`.
//! Shared state (cache, circuit breakers) is read and written through a [`Store`].

mod inputs;
mod output;
mod prepare;
mod selection;
mod state;
mod summary;
mod tasks;

pub use summary::{CallSummary, Summary};

pub use inputs::ClientRequest;

use crate::config::WaitFor;
use crate::outcome::{Failure, Success};
use crate::plan::{Call, FanOut, Route};
use crate::render::{self, Response, Shape};
use crate::resilience::Store;
use inputs::ClientInputs;
use selection::Selection;
use serde_json::Value;
use state::{CallState, Fanned, ItemState, Job, Outcome, Task};
use std::rc::Rc;

/// What the host must do next.
#[derive(Debug, PartialEq)]
pub enum Action {
    Dispatch(Dispatch),
    /// Call `on_timer` at (or soon after) this time, in microseconds.
    WakeAt(u64),
    Respond(Response),
}

/// One upstream request, ready for `dispatch_http_call`.
#[derive(Debug, PartialEq)]
pub struct Dispatch {
    /// Names this request in the events about it.
    pub job: usize,
    /// Shared with the task, so retries and hedges send it again without copying it.
    pub request: Rc<UpstreamRequest>,
    pub timeout_ms: u64,
}

/// A rendered upstream request.
#[derive(Debug, PartialEq)]
pub struct UpstreamRequest {
    pub cluster: String,
    /// `:method`, `:path`, `:authority` first, then the call's headers.
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
}

/// What happened to a dispatched job.
#[derive(Debug)]
pub enum Event {
    /// The upstream (or Envoy on its behalf) answered with a status and a body; `headers`
    /// holds the response headers the call copies (`Gather::headers_to_copy`), every value.
    Answered {
        job: usize,
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// The answer's body is larger than the call's `max_body_bytes`; it was not read.
    TooLarge { job: usize, status: u16 },
    /// The call ended without a response (connection reset after it was dispatched).
    Reset { job: usize },
    /// The host refused to dispatch the call (unknown or not yet warmed cluster).
    Refused { job: usize, detail: String },
    /// Envoy accepted the call but could not start it (no healthy host in the cluster).
    Unreachable { job: usize, detail: String },
}

impl Event {
    fn job(&self) -> usize {
        match self {
            Event::Answered { job, .. }
            | Event::TooLarge { job, .. }
            | Event::Reset { job }
            | Event::Refused { job, .. }
            | Event::Unreachable { job, .. } => *job,
        }
    }
}

#[derive(Debug)]
pub struct Gather {
    route: Rc<Route>,
    client: ClientInputs,
    states: Vec<CallState>,
    tasks: Vec<Task>,
    jobs: Vec<Job>,
    selection: Selection,
    deadline_us: u64,
    answered: bool,
    /// Clusters whose circuit this request's calls opened (for metrics).
    opened_circuits: Vec<String>,
}

impl Gather {
    /// Starts the aggregation of one request whose headers arrived at `received_us` (the
    /// deadline counts from then, even when the body took time to arrive).
    pub fn start(
        route: Rc<Route>,
        request: ClientRequest,
        received_us: u64,
        now_us: u64,
        store: &dyn Store,
    ) -> (Gather, Vec<Action>) {
        let selection = selection::select(&route, &request.query);
        let (selection, early) = match selection {
            Ok(selection) => (selection, None),
            Err(response) => {
                let none = vec![false; route.calls.len()];
                (
                    Selection {
                        fetched: none.clone(),
                        emitted: none,
                    },
                    Some(response),
                )
            }
        };
        let mut gather = Gather {
            states: selection
                .fetched
                .iter()
                .map(|&fetched| {
                    if fetched {
                        CallState::Waiting
                    } else {
                        CallState::Skipped
                    }
                })
                .collect(),
            deadline_us: received_us.saturating_add(route.deadline_ms.saturating_mul(1000)),
            client: ClientInputs::new(&route, request),
            tasks: Vec::new(),
            jobs: Vec::new(),
            selection,
            route,
            answered: false,
            opened_circuits: Vec::new(),
        };
        if let Some(response) = early {
            gather.answered = true;
            return (gather, vec![Action::Respond(response)]);
        }
        let mut actions = Vec::new();
        gather.advance(now_us, store, &mut actions);
        (gather, actions)
    }

    /// The largest answer body the host should read for `job`.
    pub fn body_limit(&self, job: usize) -> u64 {
        self.call_of_job(job).map_or(0, |c| c.max_body_bytes)
    }

    /// The upstream response headers the host should read for `job`.
    pub fn headers_to_copy(&self, job: usize) -> &[String] {
        self.call_of_job(job)
            .map_or(&[], |c| c.copy_headers.as_slice())
    }

    pub fn is_answered(&self) -> bool {
        self.answered
    }

    pub fn on_event(&mut self, event: Event, now_us: u64, store: &dyn Store) -> Vec<Action> {
        let mut actions = Vec::new();
        if self.answered {
            return actions;
        }
        if self.on_job_event(event, now_us, store, &mut actions) && !self.answered {
            self.advance(now_us, store, &mut actions);
        }
        actions
    }

    /// Sends the retries and hedges that are due.
    pub fn on_timer(&mut self, now_us: u64, store: &dyn Store) -> Vec<Action> {
        let mut actions = Vec::new();
        if self.answered {
            return actions;
        }
        if self.fire_timers(now_us, store, &mut actions) && !self.answered {
            self.advance(now_us, store, &mut actions);
        }
        actions
    }

    fn call_of_job(&self, job: usize) -> Option<&Call> {
        let task = self.tasks.get(self.jobs.get(job)?.task)?;
        self.route.calls.get(task.call)
    }

    /// Records a finished call; answers at once if it was a required call that failed.
    fn finish(
        &mut self,
        call: usize,
        outcome: Outcome,
        duration_us: Option<u64>,
        attempts: u32,
    ) -> Option<Response> {
        let route = Rc::clone(&self.route);
        let plan = route.calls.get(call)?;
        let failure = match &outcome {
            Outcome::Failed(failure) => Some(failure.clone()),
            Outcome::Fanned(fanned) => fanned.failures().next().map(|(key, failure)| {
                let mut failure = failure.clone();
                failure.item = Some(key.into());
                failure
            }),
            Outcome::Succeeded(_) => None,
        };
        match &failure {
            Some(f) => log::debug!(
                "route {}: call {} failed: {}",
                route.name,
                plan.name,
                f.reason.as_str()
            ),
            None => log::debug!("route {}: call {} succeeded", route.name, plan.name),
        }
        if let Some(state) = self.states.get_mut(call) {
            *state = CallState::Done {
                outcome,
                duration_us,
                attempts,
            };
        }
        let failure = failure.filter(|_| plan.required)?;
        self.answered = true;
        let views = output::views(&route, &self.states, &self.selection);
        let response = render::required_failure(&views, &plan.output_key, &failure, self.shape());
        log::debug!(
            "route {}: required call {} failed, answering {}",
            route.name,
            plan.name,
            response.status
        );
        Some(response)
    }

    /// Records one item's result; the call finishes with its last item. A required call
    /// fails with its first failed item, without waiting for the others.
    fn finish_item(
        &mut self,
        call: usize,
        item: usize,
        result: Result<Success, Failure>,
        attempts: u32,
        now_us: u64,
    ) -> Option<Response> {
        let required = self.route.calls.get(call).is_some_and(|c| c.required);
        let Some(CallState::Running {
            started_us,
            items: Some(items),
        }) = self.states.get_mut(call)
        else {
            return None;
        };
        let started_us = *started_us;
        let failed = result.is_err();
        if let Some(slot) = items.get_mut(item) {
            slot.result = Some(result);
            slot.attempts = attempts;
        }
        if !(failed && required) && items.iter().any(|i| i.result.is_none()) {
            return None;
        }
        let items = std::mem::take(items);
        let attempts = items.iter().map(|i| i.attempts).sum();
        let outcome = self.fanned(call, items);
        self.finish(
            call,
            outcome,
            Some(now_us.saturating_sub(started_us)),
            attempts,
        )
    }

    /// Starts every waiting call whose dependencies have settled, fails those that cannot run,
    /// and answers when nothing is left to wait for (or `wait_for` is satisfied).
    fn advance(&mut self, now_us: u64, store: &dyn Store, actions: &mut Vec<Action>) {
        let route = Rc::clone(&self.route);
        for &call in &route.order {
            let Some(plan) = route.calls.get(call) else {
                continue;
            };
            if !matches!(self.states.get(call), Some(CallState::Waiting)) {
                continue;
            }
            let ready = plan
                .dependencies
                .iter()
                .all(|d| self.states.get(*d).is_some_and(CallState::settled));
            if !ready {
                continue;
            }
            let response = match &plan.fan_out {
                None => self.start_call(call, plan, now_us, store, actions),
                Some(fan_out) => self.start_fan_out(call, plan, fan_out, now_us, store, actions),
            };
            if let Some(response) = response {
                actions.clear();
                actions.push(Action::Respond(response));
                return;
            }
        }
        if self.states.iter().all(CallState::settled) || self.waited_enough() {
            self.answered = true;
            let views = output::views(&route, &self.states, &self.selection);
            let response = render::aggregate(&views, self.shape());
            log::debug!("route {}: answering {}", route.name, response.status);
            actions.retain(|a| matches!(a, Action::Respond(_)));
            actions.push(Action::Respond(response));
        }
    }

    /// `wait_for` other than `all`: enough calls succeeded, the required ones among them.
    fn waited_enough(&self) -> bool {
        let fetched = self
            .states
            .iter()
            .filter(|s| !matches!(s, CallState::Skipped))
            .count();
        let needed = match self.route.wait_for {
            WaitFor::All => return false,
            WaitFor::Any => 1,
            WaitFor::Quorum => fetched / 2 + 1,
            WaitFor::Count(count) => usize::try_from(count).unwrap_or(usize::MAX).min(fetched),
        };
        let required_done = self
            .route
            .calls
            .iter()
            .zip(&self.states)
            .all(|(plan, state)| {
                !plan.required || matches!(state, CallState::Skipped) || state.succeeded()
            });
        let succeeded = self.states.iter().filter(|s| s.succeeded()).count();
        required_done && succeeded >= needed
    }

    /// Starts a plain call: one task.
    fn start_call(
        &mut self,
        call: usize,
        plan: &Call,
        now_us: u64,
        store: &dyn Store,
        actions: &mut Vec<Action>,
    ) -> Option<Response> {
        let request = match self.prepare(plan, None) {
            Ok(request) => request,
            Err(failure) => return self.finish(call, Outcome::Failed(failure), None, 0),
        };
        if let Some(state) = self.states.get_mut(call) {
            *state = CallState::Running {
                started_us: now_us,
                items: None,
            };
        }
        self.begin_task(call, None, request, now_us, store, actions)
    }

    /// Starts a `for_each` call: one task per distinct item. Items whose templates cannot be
    /// rendered fail at once.
    fn start_fan_out(
        &mut self,
        call: usize,
        plan: &Call,
        fan_out: &FanOut,
        now_us: u64,
        store: &dyn Store,
        actions: &mut Vec<Action>,
    ) -> Option<Response> {
        let values = match self
            .check_dependencies(plan)
            .and_then(|()| self.items(fan_out))
        {
            Ok(values) => values,
            Err(failure) => return self.finish(call, Outcome::Failed(failure), None, 0),
        };
        let mut items = ItemState::all(values);
        let mut requests = Vec::with_capacity(items.len());
        for item in &mut items {
            match self.prepare(plan, Some(&item.value)) {
                Ok(request) => requests.push(Some(request)),
                Err(failure) => {
                    item.result = Some(Err(failure));
                    requests.push(None);
                }
            }
        }
        log::debug!(
            "route {}: {} fans out to {} items",
            self.route.name,
            plan.name,
            items.len()
        );
        if items.iter().all(|i| i.result.is_some()) {
            let outcome = self.fanned(call, items);
            return self.finish(call, outcome, None, 0);
        }
        if let Some(state) = self.states.get_mut(call) {
            *state = CallState::Running {
                started_us: now_us,
                items: Some(items),
            };
        }
        for (index, request) in requests.into_iter().enumerate() {
            if let Some(request) = request {
                if let Some(response) =
                    self.begin_task(call, Some(index), request, now_us, store, actions)
                {
                    return Some(response);
                }
            }
        }
        None
    }

    /// A finished `for_each` call; its items as one array if later calls read it.
    fn fanned(&self, call: usize, items: Vec<ItemState>) -> Outcome {
        let plan = self.route.calls.get(call);
        let value = plan.filter(|p| p.body_needed).map(|p| {
            let fallback = p.fallback.as_ref().map(|f| &f.value);
            Value::Array(
                items
                    .iter()
                    .map(|item| match &item.result {
                        Some(Ok(success)) => success.value.clone().unwrap_or(Value::Null),
                        _ => fallback.cloned().unwrap_or(Value::Null),
                    })
                    .collect(),
            )
        });
        Outcome::Fanned(Fanned { items, value })
    }

    fn shape(&self) -> Shape<'_> {
        Shape {
            meta_key: self.route.meta_key.as_deref(),
            meta_name: self.route.meta_name.as_deref(),
            expose_errors: self.route.expose_errors,
            response: &self.route.response,
        }
    }
}

#[cfg(test)]
mod tests;
