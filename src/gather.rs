//! The per-request state machine (SPEC §3.2, §4): events in, actions out, no I/O.
//!
//! `Gather::start` dispatches every call without pending dependencies; each event (a call
//! answered, reset, or refused by the host) may make dependents ready, fail the aggregation
//! (a required call failed), or complete it. The host sends the one `Respond` it gets.

use crate::encoding::query_param;
use crate::outcome::{judge_answer, Failure, Reason, Success};
use crate::plan::matcher::Capture;
use crate::plan::template::{Inputs, RenderError, Target};
use crate::plan::{Call, Route};
use crate::render::{self, CallView, Response, Shape};
use serde_json::Value;
use std::rc::Rc;

/// A reset this close to a call's timeout is the timeout: Envoy arms its timers from the
/// event loop's cached clock, so they fire a few milliseconds early by our clock reads.
fn timeout_slack_us(timeout_ms: u64) -> u64 {
    (timeout_ms.saturating_mul(1000) / 20).max(10_000)
}

/// What the host must do next.
#[derive(Debug, PartialEq)]
pub enum Action {
    Dispatch(Dispatch),
    Respond(Response),
}

/// One upstream call, ready for `dispatch_http_call`.
#[derive(Debug, PartialEq)]
pub struct Dispatch {
    pub call: usize,
    pub cluster: String,
    /// `:method`, `:path`, `:authority` first, then the call's headers.
    pub headers: Vec<(String, String)>,
    pub timeout_ms: u64,
}

/// What happened to a dispatched call.
#[derive(Debug)]
pub enum Event {
    /// The upstream (or Envoy on its behalf) answered with a status and a body.
    Answered {
        call: usize,
        status: u16,
        body: Vec<u8>,
    },
    /// The answer's body is larger than the call's `max_body_bytes`; it was not read.
    TooLarge { call: usize, status: u16 },
    /// The call ended without a response (connection reset after it was dispatched).
    Reset { call: usize },
    /// The host refused to dispatch the call (unknown or not yet warmed cluster).
    Refused { call: usize, detail: String },
    /// Envoy accepted the call but could not start it (no healthy host in the cluster).
    Unreachable { call: usize, detail: String },
}

/// The client's request as the route's templates see it.
#[derive(Debug)]
struct ClientInputs {
    captures: Vec<Capture>,
    queries: Vec<Option<Option<String>>>,
    headers: Vec<Option<String>>,
}

#[derive(Debug)]
enum State {
    Waiting,
    InFlight {
        since_us: u64,
        timeout_ms: u64,
    },
    Succeeded {
        success: Success,
        duration_us: u64,
    },
    Failed {
        failure: Failure,
        duration_us: Option<u64>,
    },
}

impl State {
    fn finished(&self) -> bool {
        matches!(self, State::Succeeded { .. } | State::Failed { .. })
    }
}

#[derive(Debug)]
pub struct Gather {
    route: Rc<Route>,
    client: ClientInputs,
    states: Vec<State>,
    deadline_us: u64,
    answered: bool,
}

impl Gather {
    /// Starts the aggregation of one request. `headers` holds the values of `route.headers`,
    /// in that order; `query` is the raw query string.
    pub fn start(
        route: Rc<Route>,
        captures: Vec<Capture>,
        query: &str,
        headers: Vec<Option<String>>,
        now_us: u64,
    ) -> (Gather, Vec<Action>) {
        let queries = route
            .query_params
            .iter()
            .map(|name| query_param(query, name))
            .collect();
        let mut gather = Gather {
            states: route.calls.iter().map(|_| State::Waiting).collect(),
            deadline_us: now_us.saturating_add(route.deadline_ms.saturating_mul(1000)),
            client: ClientInputs {
                captures,
                queries,
                headers,
            },
            route,
            answered: false,
        };
        let actions = gather.advance(now_us);
        (gather, actions)
    }

    pub fn route(&self) -> &Route {
        &self.route
    }

    /// The largest answer body the host should read for `call`.
    pub fn body_limit(&self, call: usize) -> u64 {
        self.route.calls.get(call).map_or(0, |c| c.max_body_bytes)
    }

    pub fn is_answered(&self) -> bool {
        self.answered
    }

    pub fn on_event(&mut self, event: Event, now_us: u64) -> Vec<Action> {
        if self.answered {
            return Vec::new();
        }
        let call = match &event {
            Event::Answered { call, .. }
            | Event::TooLarge { call, .. }
            | Event::Reset { call }
            | Event::Refused { call, .. }
            | Event::Unreachable { call, .. } => *call,
        };
        let Some(&State::InFlight {
            since_us,
            timeout_ms,
        }) = self.states.get(call)
        else {
            log::debug!(
                "route {}: ignoring an event for call #{call} not in flight",
                self.route.name
            );
            return Vec::new();
        };
        let duration_us = now_us.saturating_sub(since_us);
        let Some(plan) = self.route.calls.get(call) else {
            return Vec::new();
        };
        let result = match event {
            Event::Answered { status, body, .. } => {
                judge_answer(status, body, plan.format, plan.body_needed)
            }
            Event::TooLarge { status, .. } if (200..300).contains(&status) => {
                Err(Failure::new(Reason::TooLarge).with_detail(format!(
                    "body over max_body_bytes ({})",
                    plan.max_body_bytes
                )))
            }
            Event::TooLarge { status, .. } => {
                let mut failure = Failure::new(Reason::Status)
                    .with_detail(format!("HTTP {status} with a body over max_body_bytes"));
                failure.status = Some(status);
                Err(failure)
            }
            // Envoy resets a call whose timeout fires after the answer's headers arrived.
            Event::Reset { .. }
                if duration_us + timeout_slack_us(timeout_ms)
                    >= timeout_ms.saturating_mul(1000) =>
            {
                Err(Failure::new(Reason::Timeout)
                    .with_detail("no complete answer within the timeout"))
            }
            Event::Reset { .. } => Err(Failure::new(Reason::Connect)
                .with_detail("connection reset before the answer completed")),
            Event::Refused { detail, .. } => {
                Err(Failure::new(Reason::Dispatch).with_detail(detail))
            }
            Event::Unreachable { detail, .. } => {
                Err(Failure::new(Reason::Connect).with_detail(detail))
            }
        };
        let state = match result {
            Ok(success) => State::Succeeded {
                success,
                duration_us,
            },
            Err(failure) => State::Failed {
                failure,
                duration_us: Some(duration_us),
            },
        };
        if let Some(response) = self.finish(call, state) {
            return vec![Action::Respond(response)];
        }
        self.advance(now_us)
    }

    /// Records a finished call; answers at once if it was a required call that failed.
    fn finish(&mut self, call: usize, state: State) -> Option<Response> {
        let name = self.route.calls.get(call).map_or("", |c| c.name.as_str());
        match &state {
            State::Failed { failure, .. } => {
                log::debug!(
                    "route {}: call {name} failed: {}",
                    self.route.name,
                    failure.reason.as_str()
                )
            }
            _ => log::debug!("route {}: call {name} succeeded", self.route.name),
        }
        if let Some(slot) = self.states.get_mut(call) {
            *slot = state;
        }
        let required = self.route.calls.get(call).is_some_and(|c| c.required);
        match self.states.get(call) {
            Some(State::Failed { failure, .. }) if required => {
                self.answered = true;
                let response = render::required_failure(&self.views(), name, failure, self.shape());
                log::debug!(
                    "route {}: required call {name} failed, answering {}",
                    self.route.name,
                    response.status
                );
                Some(response)
            }
            _ => None,
        }
    }

    /// Dispatches every waiting call whose dependencies have finished, fails those that cannot
    /// run, and answers when nothing is left in flight.
    fn advance(&mut self, now_us: u64) -> Vec<Action> {
        let route = Rc::clone(&self.route);
        let mut actions = Vec::new();
        for &call in &route.order {
            let Some(plan) = route.calls.get(call) else {
                continue;
            };
            if !matches!(self.states.get(call), Some(State::Waiting)) {
                continue;
            }
            let ready = plan
                .dependencies
                .iter()
                .all(|d| self.states.get(*d).is_some_and(State::finished));
            if !ready {
                continue;
            }
            let next = match self.prepare(call, plan, now_us) {
                Ok(dispatch) => {
                    log::debug!(
                        "route {}: dispatch {} to cluster {} with timeout {} ms",
                        route.name,
                        plan.name,
                        dispatch.cluster,
                        dispatch.timeout_ms
                    );
                    let timeout_ms = dispatch.timeout_ms;
                    actions.push(Action::Dispatch(dispatch));
                    State::InFlight {
                        since_us: now_us,
                        timeout_ms,
                    }
                }
                Err(failure) => State::Failed {
                    failure,
                    duration_us: None,
                },
            };
            if let State::InFlight { .. } = next {
                if let Some(slot) = self.states.get_mut(call) {
                    *slot = next;
                }
                continue;
            }
            if let Some(response) = self.finish(call, next) {
                return vec![Action::Respond(response)];
            }
        }
        if self.states.iter().all(State::finished) {
            self.answered = true;
            let response = render::aggregate(&self.views(), self.shape());
            log::debug!(
                "route {}: all calls finished, answering {}",
                route.name,
                response.status
            );
            actions.push(Action::Respond(response));
        }
        actions
    }

    /// Renders a ready call, or says why it cannot be made.
    fn prepare(&self, call: usize, plan: &Call, now_us: u64) -> Result<Dispatch, Failure> {
        if let Some(failed) = plan.dependencies.iter().find(|d| self.unusable(**d)) {
            let mut failure = Failure::new(Reason::DependencyFailed);
            failure.dependency = self.route.calls.get(*failed).map(|c| c.name.clone());
            return Err(failure);
        }
        let inputs = RequestView {
            client: &self.client,
            states: &self.states,
            route: &self.route,
        };
        let path = plan
            .path
            .render(&inputs, Target::Path)
            .map_err(input_failure)?;
        let mut headers = Vec::with_capacity(3 + plan.headers.len() + plan.forward.len());
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
            if let Some(Some(value)) = self.client.headers.get(*slot) {
                headers.push((name.clone(), value.clone()));
            }
        }
        let remaining_ms = self.deadline_us.saturating_sub(now_us) / 1000;
        if remaining_ms == 0 {
            return Err(Failure::new(Reason::Deadline));
        }
        Ok(Dispatch {
            call,
            cluster: plan.cluster.clone(),
            headers,
            timeout_ms: plan.timeout_ms.min(remaining_ms),
        })
    }

    /// A finished dependency whose body cannot be used: it failed and has no fallback.
    fn unusable(&self, call: usize) -> bool {
        let has_fallback = self
            .route
            .calls
            .get(call)
            .is_some_and(|c| c.fallback.is_some());
        matches!(self.states.get(call), Some(State::Failed { .. })) && !has_fallback
    }

    fn shape(&self) -> Shape<'_> {
        Shape {
            meta_key: self.route.meta_key.as_deref(),
            expose_errors: self.route.expose_errors,
        }
    }

    fn views(&self) -> Vec<CallView<'_>> {
        self.route
            .calls
            .iter()
            .zip(&self.states)
            .map(|(plan, state)| {
                let (outcome, duration_us) = match state {
                    State::Waiting | State::InFlight { .. } => (None, None),
                    State::Succeeded {
                        success,
                        duration_us,
                    } => (Some(Ok(success)), Some(*duration_us)),
                    State::Failed {
                        failure,
                        duration_us,
                    } => (Some(Err(failure)), *duration_us),
                };
                CallView {
                    name: &plan.name,
                    outcome,
                    fallback: plan.fallback.as_ref().map(|f| f.json.as_slice()),
                    duration_us,
                }
            })
            .collect()
    }
}

fn input_failure(error: RenderError) -> Failure {
    let (reason, input, from_client) = match error {
        RenderError::Missing { input, from_client } => (Reason::MissingInput, input, from_client),
        RenderError::Invalid { input, from_client } => (Reason::InvalidInput, input, from_client),
    };
    let mut failure = Failure::new(reason);
    failure.input = Some(input);
    failure.from_client = from_client;
    failure
}

/// The values templates read: client input, and earlier calls' bodies (or fallbacks).
struct RequestView<'a> {
    client: &'a ClientInputs,
    states: &'a [State],
    route: &'a Route,
}

impl Inputs for RequestView<'_> {
    fn capture(&self, slot: usize) -> Option<&Capture> {
        self.client.captures.get(slot)
    }

    fn query(&self, slot: usize) -> Option<Option<&str>> {
        self.client
            .queries
            .get(slot)?
            .as_ref()
            .map(|v| v.as_deref())
    }

    fn header(&self, slot: usize) -> Option<&str> {
        self.client.headers.get(slot)?.as_deref()
    }

    fn call_body(&self, call: usize) -> Option<&Value> {
        match self.states.get(call)? {
            State::Succeeded { success, .. } => success.value.as_ref(),
            State::Failed { .. } => self
                .route
                .calls
                .get(call)?
                .fallback
                .as_ref()
                .map(|f| &f.value),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests;
