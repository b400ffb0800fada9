//! The per-request state machine (SPEC §3.2, §3.5, §4): events in, actions out, no I/O.
//!
//! `Gather::start` dispatches every selected call without pending dependencies. Each request
//! handed to the host is a *job*: one per plain call, one per item of a `for_each` call. Each
//! event about a job (answered, reset, refused) may make dependents ready, fail the
//! aggregation (a required call failed), or complete it. The host sends the one `Respond`.

mod inputs;
mod output;
mod selection;
mod state;

pub use inputs::ClientRequest;

use crate::outcome::{Failure, Reason, Success};
use crate::plan::body::{BodyTemplate, RenderedBody};
use crate::plan::template::{RenderError, Target};
use crate::plan::{Call, FanOut, Route};
use crate::render::{self, Response, Shape};
use inputs::{ClientInputs, TemplateInputs};
use selection::Selection;
use serde_json::Value;
use state::{judge_event, CallState, Fanned, ItemState, Job, Outcome};
use std::rc::Rc;

/// What the host must do next.
#[derive(Debug, PartialEq)]
pub enum Action {
    Dispatch(Dispatch),
    Respond(Response),
}

/// One upstream request, ready for `dispatch_http_call`.
#[derive(Debug, PartialEq)]
pub struct Dispatch {
    /// Names this request in the events about it.
    pub job: usize,
    pub cluster: String,
    /// `:method`, `:path`, `:authority` first, then the call's headers.
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
    pub timeout_ms: u64,
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
    jobs: Vec<Job>,
    selection: Selection,
    deadline_us: u64,
    answered: bool,
}

impl Gather {
    /// Starts the aggregation of one request whose headers arrived at `received_us` (the
    /// deadline counts from then, even when the body took time to arrive).
    pub fn start(
        route: Rc<Route>,
        request: ClientRequest,
        received_us: u64,
        now_us: u64,
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
            jobs: Vec::new(),
            selection,
            route,
            answered: false,
        };
        if let Some(response) = early {
            gather.answered = true;
            return (gather, vec![Action::Respond(response)]);
        }
        let actions = gather.advance(now_us);
        (gather, actions)
    }

    /// The largest answer body the host should read for `job`.
    pub fn body_limit(&self, job: usize) -> u64 {
        self.jobs
            .get(job)
            .and_then(|j| self.route.calls.get(j.call))
            .map_or(0, |c| c.max_body_bytes)
    }

    /// The upstream response headers the host should read for `job`.
    pub fn headers_to_copy(&self, job: usize) -> &[String] {
        self.jobs
            .get(job)
            .and_then(|j| self.route.calls.get(j.call))
            .map_or(&[], |c| c.copy_headers.as_slice())
    }

    pub fn is_answered(&self) -> bool {
        self.answered
    }

    pub fn on_event(&mut self, event: Event, now_us: u64) -> Vec<Action> {
        if self.answered {
            return Vec::new();
        }
        let Some(job) = self.jobs.get_mut(event.job()).filter(|j| j.open) else {
            log::debug!(
                "route {}: ignoring an event for a job not in flight",
                self.route.name
            );
            return Vec::new();
        };
        job.open = false;
        let (call, item) = (job.call, job.item);
        let duration_us = now_us.saturating_sub(job.since_us);
        let Some(plan) = self.route.calls.get(call) else {
            return Vec::new();
        };
        let result = judge_event(event, plan, job, duration_us);
        let response = match item {
            None => {
                let outcome = match result {
                    Ok(success) => Outcome::Succeeded(success),
                    Err(failure) => Outcome::Failed(failure),
                };
                self.finish(call, outcome, Some(duration_us))
            }
            Some(item) => self.finish_item(call, item, result, now_us),
        };
        match response {
            Some(response) => vec![Action::Respond(response)],
            None => self.advance(now_us),
        }
    }

    /// Records a finished call; answers at once if it was a required call that failed.
    fn finish(
        &mut self,
        call: usize,
        outcome: Outcome,
        duration_us: Option<u64>,
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
            };
        }
        let failure = failure.filter(|_| plan.required)?;
        self.answered = true;
        let views = output::views(&route, &self.states, &self.selection);
        let response = render::required_failure(&views, &plan.name, &failure, self.shape());
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
        }
        if !(failed && required) && items.iter().any(|i| i.result.is_none()) {
            return None;
        }
        let items = std::mem::take(items);
        let outcome = self.fanned(call, items);
        self.finish(call, outcome, Some(now_us.saturating_sub(started_us)))
    }

    /// Dispatches every waiting call whose dependencies have finished, fails those that cannot
    /// run, and answers when nothing is left to wait for.
    fn advance(&mut self, now_us: u64) -> Vec<Action> {
        let route = Rc::clone(&self.route);
        let mut actions = Vec::new();
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
            let started = match &plan.fan_out {
                None => self.start_call(call, plan, now_us),
                Some(fan_out) => self.start_fan_out(call, plan, fan_out, now_us),
            };
            let response = match started {
                Ok(dispatches) => {
                    actions.extend(dispatches.into_iter().map(Action::Dispatch));
                    continue;
                }
                Err(outcome) => self.finish(call, outcome, None),
            };
            if let Some(response) = response {
                return vec![Action::Respond(response)];
            }
        }
        if self.states.iter().all(CallState::settled) {
            self.answered = true;
            let views = output::views(&route, &self.states, &self.selection);
            let response = render::aggregate(&views, self.shape());
            log::debug!(
                "route {}: all calls finished, answering {}",
                route.name,
                response.status
            );
            actions.push(Action::Respond(response));
        }
        actions
    }

    /// Prepares a plain call: its one job, or the outcome that replaces it.
    fn start_call(
        &mut self,
        call: usize,
        plan: &Call,
        now_us: u64,
    ) -> Result<Vec<Dispatch>, Outcome> {
        let request = self.prepare(plan, None, now_us).map_err(Outcome::Failed)?;
        let dispatch = self.open_job(call, None, request, now_us);
        if let Some(state) = self.states.get_mut(call) {
            *state = CallState::Running {
                started_us: now_us,
                items: None,
            };
        }
        Ok(vec![dispatch])
    }

    /// Prepares a `for_each` call: one job per distinct item. Items whose templates cannot be
    /// rendered fail at once; with no item left to send, the call finishes here.
    fn start_fan_out(
        &mut self,
        call: usize,
        plan: &Call,
        fan_out: &FanOut,
        now_us: u64,
    ) -> Result<Vec<Dispatch>, Outcome> {
        self.check_dependencies(plan).map_err(Outcome::Failed)?;
        let mut items: Vec<ItemState> = self
            .items(fan_out)?
            .into_iter()
            .map(ItemState::new)
            .collect();
        let mut dispatches = Vec::new();
        for index in 0..items.len() {
            let Some(value) = items.get(index).map(|i| i.value.clone()) else {
                continue;
            };
            match self.prepare(plan, Some(&value), now_us) {
                Ok(request) => dispatches.push(self.open_job(call, Some(index), request, now_us)),
                Err(failure) => {
                    if let Some(item) = items.get_mut(index) {
                        item.result = Some(Err(failure));
                    }
                }
            }
        }
        if dispatches.is_empty() {
            return Err(self.fanned(call, items));
        }
        log::debug!(
            "route {}: {} fans out to {} items",
            self.route.name,
            plan.name,
            items.len()
        );
        if let Some(state) = self.states.get_mut(call) {
            *state = CallState::Running {
                started_us: now_us,
                items: Some(items),
            };
        }
        Ok(dispatches)
    }

    /// The distinct values of a `for_each` path in first-seen order (`null`s skipped).
    fn items(&self, fan_out: &FanOut) -> Result<Vec<Value>, Outcome> {
        let inputs = self.inputs(None);
        let source = crate::plan::template::Inputs::call_body(&inputs, fan_out.source);
        let found = match source.map(|body| fan_out.path.find(body)) {
            Some(crate::json_path::Found::Many(values)) => values,
            _ => Vec::new(),
        };
        let mut distinct: Vec<Value> = Vec::new();
        for value in found {
            match value {
                Value::Null => continue,
                Value::Array(_) | Value::Object(_) => {
                    let mut failure = Failure::new(Reason::InvalidInput);
                    failure.input = Some(format!("for_each {}", fan_out.path.as_str()).into());
                    return Err(Outcome::Failed(failure));
                }
                scalar if !distinct.contains(scalar) => distinct.push(scalar.clone()),
                _ => {}
            }
        }
        if distinct.len() > fan_out.max_items {
            let failure = Failure::new(Reason::TooManyItems).with_detail(format!(
                "{} items, max_fan_out is {}",
                distinct.len(),
                fan_out.max_items
            ));
            return Err(Outcome::Failed(failure));
        }
        Ok(distinct)
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

    fn open_job(
        &mut self,
        call: usize,
        item: Option<usize>,
        request: Prepared,
        now_us: u64,
    ) -> Dispatch {
        let job = self.jobs.len();
        self.jobs.push(Job {
            call,
            item,
            since_us: now_us,
            timeout_ms: request.timeout_ms,
            open: true,
        });
        log::debug!(
            "route {}: dispatch job {job} to cluster {} with timeout {} ms",
            self.route.name,
            request.cluster,
            request.timeout_ms
        );
        Dispatch {
            job,
            cluster: request.cluster,
            headers: request.headers,
            body: request.body,
            timeout_ms: request.timeout_ms,
        }
    }

    /// A failed dependency without fallback stops the call.
    fn check_dependencies(&self, plan: &Call) -> Result<(), Failure> {
        let unusable = |d: &usize| {
            let has_fallback = self
                .route
                .calls
                .get(*d)
                .is_some_and(|c| c.fallback.is_some());
            let failed = matches!(
                self.states.get(*d),
                Some(CallState::Done {
                    outcome: Outcome::Failed(_),
                    ..
                })
            );
            failed && !has_fallback
        };
        match plan.dependencies.iter().find(|d| unusable(d)) {
            Some(failed) => {
                let mut failure = Failure::new(Reason::DependencyFailed);
                failure.dependency = self
                    .route
                    .calls
                    .get(*failed)
                    .map(|c| c.name.as_str().into());
                Err(failure)
            }
            None => Ok(()),
        }
    }

    /// Renders one request of a call (for one item, with `for_each`), or says why it cannot
    /// be made.
    fn prepare(&self, plan: &Call, item: Option<&Value>, now_us: u64) -> Result<Prepared, Failure> {
        self.check_dependencies(plan)?;
        let inputs = self.inputs(item);
        let path = plan
            .path
            .render(&inputs, Target::Path)
            .map_err(input_failure)?;
        let mut headers = Vec::with_capacity(4 + plan.headers.len() + plan.forward.len());
        headers.push((":method".to_string(), plan.method.clone()));
        headers.push((":path".to_string(), path));
        headers.push((":authority".to_string(), plan.authority.clone()));
        for (name, template) in &plan.headers {
            let value = template
                .render(&inputs, Target::Header)
                .map_err(input_failure)?;
            headers.push((name.clone(), value));
        }
        for (name, slot) in &plan.forward {
            if let Some(value) = self.client.header(*slot) {
                headers.push((name.clone(), value.to_string()));
            }
        }
        let body = match &plan.body {
            None => None,
            Some(template) => {
                let (body, content_type) = match template.render(&inputs).map_err(input_failure)? {
                    RenderedBody::Json(json) => (Some(json), Some("application/json")),
                    RenderedBody::Client => {
                        let content_type = match template {
                            BodyTemplate::Client { content_type_slot } => {
                                self.client.header(*content_type_slot)
                            }
                            BodyTemplate::Json(_) => None,
                        };
                        (self.client.request.body.clone(), content_type)
                    }
                };
                let set_by_call = plan.headers.iter().any(|(name, _)| name == "content-type");
                if let (Some(content_type), false) = (content_type, set_by_call) {
                    headers.push(("content-type".to_string(), content_type.to_string()));
                }
                body
            }
        };
        let remaining_ms = self.deadline_us.saturating_sub(now_us) / 1000;
        if remaining_ms == 0 {
            return Err(Failure::new(Reason::Deadline));
        }
        Ok(Prepared {
            cluster: plan.cluster.clone(),
            headers,
            body,
            timeout_ms: plan.timeout_ms.min(remaining_ms),
        })
    }

    fn inputs<'a>(&'a self, item: Option<&'a Value>) -> TemplateInputs<'a> {
        TemplateInputs {
            client: &self.client,
            states: &self.states,
            route: &self.route,
            item,
        }
    }

    fn shape(&self) -> Shape<'_> {
        Shape {
            meta_key: self.route.meta_key.as_deref(),
            expose_errors: self.route.expose_errors,
            response: &self.route.response,
        }
    }
}

/// A rendered request before it becomes a job.
struct Prepared {
    cluster: String,
    headers: Vec<(String, String)>,
    body: Option<Vec<u8>>,
    timeout_ms: u64,
}

fn input_failure(error: RenderError) -> Failure {
    let (reason, input, from_client) = match error {
        RenderError::Missing { input, from_client } => (Reason::MissingInput, input, from_client),
        RenderError::Invalid { input, from_client } => (Reason::InvalidInput, input, from_client),
    };
    let mut failure = Failure::new(reason);
    failure.input = Some(input.into());
    failure.from_client = from_client;
    failure
}

#[cfg(test)]
mod tests;
