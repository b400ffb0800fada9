//! Every change of state of an aggregation, in one file.
//!
//! # Theory of operation
//!
//! An aggregation answers one client request from the calls of its route (SPEC §2.3). Each
//! call is *not fetched* (`?fields=` left it out), *waiting* for its dependencies, *skipped*,
//! *running*, or *done*. When its dependencies have settled, a waiting call is *admitted*
//! (SPEC §3.2, §3.6): it is skipped if a call it depends on was skipped, fails with
//! `dependency_failed` if one failed without a fallback, and is skipped if its `when` does not
//! hold — a skipped call is never dispatched, shows nowhere in the body, and is neither a
//! success nor a failure. An admitted call runs. A running call has *requests*: one for a plain
//! call, one per distinct item of a `for_each` call, one per *chunk* of at most `max_batch`
//! distinct keys of a batch join (SPEC §3.5). A request sends *attempts*: its first, retries
//! after a failure (after a backoff), and at most one hedge while its first is slow (SPEC §6).
//! The first successful attempt concludes the request; when every attempt it may send has
//! failed, its last failure does (a stale cache entry may stand in). A concluded chunk gives
//! each of its keys a result: the element of its answer that matches the key, `status` 404 when
//! none does, or the chunk's failure. When all of a call's requests are concluded, the call is
//! done.
//!
//! An attempt of a call that coalesces (SPEC §6) carries a key on its [`Dispatch`]: the host
//! may let it share an identical request already in flight instead of sending it. Its outcome
//! then comes through [`Gather::on_coalesced_event`] (or as [`Event::TimedOut`] when the host
//! stopped waiting at the attempt's timeout) and moves the request exactly as any attempt's
//! outcome does; only the success is marked coalesced, and the cache and the circuit breaker
//! are left to the aggregation the request was sent for, so one upstream answer is stored and
//! counted once. Hedges and the breaker's probe carry no key: they exist to send a request.
//!
//! ```text
//!  call:     NotFetched (never changes)
//!            Waiting ──dependencies settled, admitted──► Running ──requests concluded──► Done
//!               │  └───────cannot be rendered (missing input, failed dependency)───────┘
//!               └──a dependency skipped, or `when` false──► Skipped (never changes)
//!
//!  request:  InFlight{open: 0} ──attempt──► InFlight{open: n} ──success──────────► Done
//!              │  (a fresh cache entry)          │    │  └─failure, an attempt still out─┐
//!              └─────────────────────────────► Done   │                  InFlight{n-1} ◄─┘
//!                                                      ├─failure, retry due later──► BackingOff
//!                                                      └─failure, no retry left────► Done
//!            BackingOff{retry_at} ──timer──► InFlight{1} (or Done: deadline, circuit open)
//!
//!  hedge:    Off ──first attempt sent──► Planned(at) ──timer, that attempt alone out──► Sent
//!                                             └──timer, otherwise────────────────────► Off
//!
//!  gather:   Gathering ──every call settled, wait_for met, or a required call failed──► Answered
//! ```
//!
//! Each entry point ([`Gather::on_event`], [`Gather::on_timer`], [`start`]) is one *step*: it
//! changes state, then lets [`Gather::advance`] start every call whose dependencies have
//! settled and answer when nothing is left to wait for. Actions leave through the
//! [`Outbox`](super::outbox::Outbox) only; the answer is pushed once and drops whatever the step
//! had queued, so nothing follows it. A state that contradicts another (an attempt of an unknown
//! request, say) is a bug: the step logs it once and answers 500 rather than stall the request.

use super::inputs::ClientInputs;
use super::judge;
use super::output;
use super::prepare::Admission;
use super::selection::{self, Selection};
use super::state::{
    Attempt, CallState, Fanned, Hedge, ItemState, Outcome, Prepared, Request, RequestState, Serves,
    StaleEntry,
};
use super::{
    Action, AttemptId, ClientRequest, Coalesce, Dispatch, Event, Gather, ItemId, RequestId,
};
use crate::config::WaitFor;
use crate::outcome::{Failure, Reason, Success};
use crate::plan::{Batch, Call, CallId, FanOut, Route};
use crate::render::{self, Shape};
use crate::resilience::breaker::Gate;
use crate::resilience::cache::Lookup;
use crate::resilience::retry::{self, MIN_ATTEMPT};
use crate::resilience::Store;
use crate::time::{whole_millis, Instant};
use serde_json::Value;
use std::fmt;
use std::rc::Rc;
use std::time::Duration;

/// A contradiction between states: a bug, reported and answered with 500.
#[derive(Debug)]
pub(super) struct Broken(pub(super) &'static str);

impl fmt::Display for Broken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

type Step = Result<(), Broken>;

/// [`Gather::start`]: the selection, then the first step.
pub(super) fn start(
    route: Rc<Route>,
    request: ClientRequest,
    received: Instant,
    now: Instant,
    store: &dyn Store,
) -> (Gather, Vec<Action>) {
    let (selection, refused) = match selection::select(&route, &request.query) {
        Ok(selection) => (selection, None),
        Err(response) => (Selection::none(route.calls.len()), Some(response)),
    };
    let mut gather = Gather {
        calls: selection
            .fetched
            .iter()
            .map(|&fetched| {
                if fetched {
                    CallState::Waiting
                } else {
                    CallState::NotFetched
                }
            })
            .collect(),
        deadline: received + Duration::from_millis(route.deadline_ms),
        client: ClientInputs::new(&route, request),
        requests: Vec::new(),
        attempts: Vec::new(),
        selection,
        route,
        outbox: Default::default(),
        opened_circuits: Vec::new(),
    };
    if let Some(response) = refused {
        gather.outbox.respond(response);
        let actions = gather.outbox.take();
        return (gather, actions);
    }
    let actions = gather.step(now, |gather| gather.advance(now, store));
    (gather, actions)
}

impl Gather {
    /// One step: `change` moves states and pushes actions; a broken state ends the request.
    pub(super) fn step(
        &mut self,
        now: Instant,
        change: impl FnOnce(&mut Gather) -> Step,
    ) -> Vec<Action> {
        if self.outbox.answered() {
            return Vec::new();
        }
        if let Err(broken) = change(self) {
            log::error!(
                "route {}: broken state ({broken}) at {} µs: answering 500",
                self.route.name,
                now.as_micros()
            );
            self.outbox.respond(render::internal_error());
        }
        self.outbox.take()
    }

    // ---------------------------------------------------------------------------------------
    // Events and timers

    /// An attempt ended: its request concludes, waits for another of its attempts, or tries
    /// again (now or after a backoff). A `coalesced` attempt shared another aggregation's
    /// request: its success is marked so, and the cache and the breaker are left to that
    /// aggregation, so one upstream answer is stored and counted once.
    pub(super) fn attempt_ended(
        &mut self,
        event: Event,
        now: Instant,
        store: &dyn Store,
        coalesced: bool,
    ) -> Step {
        let id = event.attempt();
        let Some(attempt) = self.attempts.get_mut(id.0).filter(|a| a.open) else {
            log::debug!(
                "route {}: ignoring an event for an attempt not in flight",
                self.route.name
            );
            return Ok(());
        };
        attempt.open = false;
        let (request_id, probe, timeout) = (attempt.request, attempt.probe, attempt.timeout);
        let elapsed = now.saturating_duration_since(attempt.sent);
        let route = Rc::clone(&self.route);
        let request = self.request_mut(request_id)?;
        let open = match request.state {
            RequestState::InFlight { open } => open.saturating_sub(1),
            // The slower of a hedged pair, or an answer after the request gave up.
            RequestState::Done => return Ok(()),
            RequestState::BackingOff { .. } => {
                return Err(Broken("an attempt ended while its request was backing off"))
            }
        };
        request.state = RequestState::InFlight { open };
        request.coalesced += u32::from(coalesced);
        let call = route
            .call(request.call)
            .ok_or(Broken("a request of no call"))?;
        let cluster = request.prepared.request.cluster.clone();
        let cache_key = request.prepared.cache_key.clone();
        let (mut result, raw) = judge::event(event, call, timeout, elapsed);
        let (breaker, raw) = if coalesced {
            if let Ok(success) = &mut result {
                success.coalesced = true;
            }
            (None, None)
        } else {
            (call.resilience.breaker, raw)
        };
        if let Some(breaker) = breaker {
            let failed = result
                .as_ref()
                .err()
                .is_some_and(|f| f.reason.counts_against_upstream(f.status));
            if breaker.record(store, &cluster, now.as_millis(), !failed, probe) {
                self.opened_circuits.push(cluster.to_string());
            }
        }
        match result {
            Ok(success) => {
                if let (Some(spec), Some(key), Some(raw)) =
                    (&call.resilience.cache, &cache_key, raw)
                {
                    spec.policy.save(store, key, &raw, now.as_millis());
                }
                self.conclude(request_id, Ok(success), now)?;
            }
            // A hedge is still out: it may yet succeed.
            Err(failure) if open > 0 => self.request_mut(request_id)?.last_failure = Some(failure),
            Err(failure) => {
                let retry = self.retry_delay(call, request_id, &failure, now)?;
                self.request_mut(request_id)?.last_failure = Some(failure.clone());
                match retry {
                    Some(Duration::ZERO) => self.attempt(request_id, now, store)?,
                    Some(delay) => {
                        let retry_at = now + delay;
                        self.request_mut(request_id)?.state = RequestState::BackingOff { retry_at };
                        self.outbox.wake_at(retry_at);
                    }
                    None => self.conclude(request_id, Err(failure), now)?,
                }
            }
        }
        self.advance(now, store)
    }

    /// The timer: sends the retries and hedges due by `now`.
    pub(super) fn timers_fired(&mut self, now: Instant, store: &dyn Store) -> Step {
        for index in 0..self.requests.len() {
            if self.outbox.answered() {
                return Ok(());
            }
            let id = RequestId(index);
            let request = self.request_mut(id)?;
            match request.state {
                RequestState::Done => continue,
                RequestState::BackingOff { retry_at } if retry_at <= now => {
                    self.attempt(id, now, store)?;
                    continue;
                }
                _ => {}
            }
            let Hedge::Planned(at) = request.hedge else {
                continue;
            };
            if at > now {
                continue;
            }
            request.hedge = Hedge::Off;
            // Hedge only the first attempt while it is alone and slow, and never through a
            // circuit that is not closed (a probe is the breaker's one attempt).
            if request.state == (RequestState::InFlight { open: 1 })
                && self.circuit_closed(id, now, store)?
            {
                self.request_mut(id)?.hedge = Hedge::Sent;
                self.dispatch(id, false, true, now)?;
            }
        }
        self.advance(now, store)
    }

    // ---------------------------------------------------------------------------------------
    // Calls

    /// Starts every waiting call whose dependencies have settled and that is admitted (a call
    /// that cannot be rendered fails at once, one whose condition fails is skipped), and
    /// answers when nothing is left to wait for or `wait_for` is met.
    pub(super) fn advance(&mut self, now: Instant, store: &dyn Store) -> Step {
        let route = Rc::clone(&self.route);
        for &id in &route.order {
            if self.outbox.answered() {
                return Ok(());
            }
            if !matches!(self.call_state(id)?, CallState::Waiting) {
                continue;
            }
            let call = route
                .call(id)
                .ok_or(Broken("an order entry names no call"))?;
            let ready = call
                .dependencies
                .iter()
                .all(|d| self.calls.get(d.index()).is_some_and(CallState::settled));
            if !ready {
                continue;
            }
            match self.admit(call) {
                Admission::Skip(why) => {
                    log::debug!("route {}: call {} skipped: {why}", route.name, call.name);
                    *self.call_state_mut(id)? = CallState::Skipped;
                    continue;
                }
                Admission::Fail(failure) => {
                    self.finish_call(id, Outcome::Failed(failure), None, 0)?;
                    continue;
                }
                Admission::Run => {}
            }
            match (&call.fan_out, &call.batch) {
                (Some(fan_out), _) => self.start_fan_out(id, call, fan_out, now, store)?,
                (None, Some(batch)) => self.start_batch(id, call, batch, now, store)?,
                (None, None) => self.start_call(id, call, now, store)?,
            }
        }
        if self.outbox.answered() {
            return Ok(());
        }
        if self.calls.iter().all(CallState::settled) || self.waited_enough() {
            let views = output::views(&route, &self.calls, &self.selection);
            let response = render::aggregate(&views, self.settings());
            log::debug!("route {}: answering {}", route.name, response.status);
            self.outbox.respond(response);
        }
        Ok(())
    }

    /// A plain call: one request.
    fn start_call(&mut self, id: CallId, call: &Call, now: Instant, store: &dyn Store) -> Step {
        let prepared = match self.prepare(call, None) {
            Ok(prepared) => prepared,
            Err(failure) => return self.finish_call(id, Outcome::Failed(failure), None, 0),
        };
        *self.call_state_mut(id)? = CallState::Running {
            started: now,
            items: None,
        };
        self.begin_request(id, Serves::Call, prepared, now, store)
    }

    /// A `for_each` call: one request per distinct item. Items whose templates cannot be
    /// rendered fail at once.
    fn start_fan_out(
        &mut self,
        id: CallId,
        call: &Call,
        fan_out: &FanOut,
        now: Instant,
        store: &dyn Store,
    ) -> Step {
        let values = match self.items("for_each", fan_out.source, &fan_out.path) {
            Ok(values) if values.len() > fan_out.max_items => {
                let failure = Failure::new(Reason::TooManyItems).with_detail(format!(
                    "{} items, max_fan_out is {}",
                    values.len(),
                    fan_out.max_items
                ));
                return self.finish_call(id, Outcome::Failed(failure), None, 0);
            }
            Ok(values) => values,
            Err(failure) => return self.finish_call(id, Outcome::Failed(failure), None, 0),
        };
        let mut items = ItemState::all(values);
        let mut prepared = Vec::with_capacity(items.len());
        for item in &mut items {
            match self.prepare(call, Some(&item.value)) {
                Ok(request) => prepared.push(Some(request)),
                Err(failure) => {
                    item.result = Some(Err(failure));
                    prepared.push(None);
                }
            }
        }
        log::debug!(
            "route {}: {} fans out to {} items",
            self.route.name,
            call.name,
            items.len()
        );
        let requests = prepared
            .into_iter()
            .enumerate()
            .filter_map(|(index, prepared)| Some((Serves::Item(ItemId(index)), prepared?)))
            .collect();
        self.run_items(id, call, items, requests, now, store)
    }

    /// A batch join (SPEC §3.5): the distinct keys, `max_batch` at a time, one request per
    /// chunk, all at once; at most `max_fan_out` chunks. A chunk whose templates cannot be
    /// rendered fails its keys at once.
    fn start_batch(
        &mut self,
        id: CallId,
        call: &Call,
        batch: &Batch,
        now: Instant,
        store: &dyn Store,
    ) -> Step {
        let values = match self.items("join", batch.source, &batch.keys) {
            Ok(values) => values,
            Err(failure) => return self.finish_call(id, Outcome::Failed(failure), None, 0),
        };
        let ids: Vec<ItemId> = (0..values.len()).map(ItemId).collect();
        let chunks: Vec<&[ItemId]> = ids.chunks(batch.max_keys.max(1)).collect();
        if chunks.len() > batch.max_requests {
            let failure = Failure::new(Reason::TooManyItems).with_detail(format!(
                "{} keys need {} requests of at most max_batch {}, max_fan_out is {}",
                values.len(),
                chunks.len(),
                batch.max_keys,
                batch.max_requests
            ));
            return self.finish_call(id, Outcome::Failed(failure), None, 0);
        }
        let mut items = ItemState::all(values);
        let mut requests = Vec::with_capacity(chunks.len());
        for chunk in chunks {
            let keys = Value::Array(
                chunk
                    .iter()
                    .filter_map(|item| items.get(item.0).map(|i| i.value.clone()))
                    .collect(),
            );
            match self.prepare(call, Some(&keys)) {
                Ok(prepared) => requests.push((Serves::Chunk(chunk.to_vec()), prepared)),
                Err(failure) => {
                    for item in chunk {
                        if let Some(item) = items.get_mut(item.0) {
                            item.result = Some(Err(failure.clone()));
                        }
                    }
                }
            }
        }
        log::debug!(
            "route {}: {} sends {} keys in {} requests",
            self.route.name,
            call.name,
            items.len(),
            requests.len()
        );
        self.run_items(id, call, items, requests, now, store)
    }

    /// Runs the requests of a call made of items (`for_each` items or batch keys); done at
    /// once when every item already has its result (none, or none could be rendered).
    fn run_items(
        &mut self,
        id: CallId,
        call: &Call,
        items: Vec<ItemState>,
        requests: Vec<(Serves, Prepared)>,
        now: Instant,
        store: &dyn Store,
    ) -> Step {
        if items.iter().all(|i| i.result.is_some()) {
            let outcome = self.fanned(call, items);
            return self.finish_call(id, outcome, None, 0);
        }
        *self.call_state_mut(id)? = CallState::Running {
            started: now,
            items: Some(items),
        };
        for (serves, prepared) in requests {
            if self.outbox.answered() {
                break;
            }
            self.begin_request(id, serves, prepared, now, store)?;
        }
        Ok(())
    }

    /// A call is done; a required call that failed answers the client at once (SPEC §4).
    fn finish_call(
        &mut self,
        id: CallId,
        outcome: Outcome,
        duration: Option<Duration>,
        attempts: u32,
    ) -> Step {
        let route = Rc::clone(&self.route);
        let call = route
            .call(id)
            .ok_or(Broken("a finished call does not exist"))?;
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
                call.name,
                f.reason.as_str()
            ),
            None => log::debug!("route {}: call {} succeeded", route.name, call.name),
        }
        *self.call_state_mut(id)? = CallState::Done {
            outcome,
            duration,
            attempts,
        };
        if let Some(failure) = failure.filter(|_| call.required) {
            let views = output::views(&route, &self.calls, &self.selection);
            let response =
                render::required_failure(&views, &call.output_key, &failure, self.settings());
            log::debug!(
                "route {}: required call {} failed, answering {}",
                route.name,
                call.name,
                response.status
            );
            self.outbox.respond(response);
        }
        Ok(())
    }

    /// Items' requests concluded (one `for_each` item, or the keys of one batch chunk, with
    /// the attempts counted on the first); the call is done with its last item, or with its
    /// first failed item when it is required.
    fn finish_items(
        &mut self,
        id: CallId,
        results: Vec<(ItemId, Result<Success, Failure>)>,
        attempts: u32,
        now: Instant,
    ) -> Step {
        let route = Rc::clone(&self.route);
        let call = route.call(id).ok_or(Broken("an item of no call"))?;
        let CallState::Running {
            started,
            items: Some(items),
        } = self.call_state_mut(id)?
        else {
            return Err(Broken("an item finished for a call not running items"));
        };
        let started = *started;
        let failed = results.iter().any(|(_, result)| result.is_err());
        for (n, (item, result)) in results.into_iter().enumerate() {
            let slot = items
                .get_mut(item.0)
                .ok_or(Broken("an item of no item list"))?;
            slot.result = Some(result);
            slot.attempts = if n == 0 { attempts } else { 0 };
        }
        if !(failed && call.required) && items.iter().any(|i| i.result.is_none()) {
            return Ok(());
        }
        let items = std::mem::take(items);
        let attempts = items.iter().map(|i| i.attempts).sum();
        let outcome = self.fanned(call, items);
        self.finish_call(
            id,
            outcome,
            Some(now.saturating_duration_since(started)),
            attempts,
        )
    }

    /// A finished `for_each` call or batch join; its items as one array if later calls read
    /// it.
    fn fanned(&self, call: &Call, items: Vec<ItemState>) -> Outcome {
        let value = call.body_needed.then(|| {
            let fallback = call.fallback.as_ref().map(|f| &f.value);
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

    /// `wait_for` other than `all` (SPEC §6): enough calls succeeded, the required ones among
    /// them. Skipped calls count neither way (SPEC §3.6): `quorum` is a majority of the calls
    /// fetched and not skipped, a count is capped at their number, and a skipped required call
    /// is not waited for.
    fn waited_enough(&self) -> bool {
        let fetched = self.calls.iter().filter(|s| s.counts()).count();
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
            .zip(&self.calls)
            .all(|(call, state)| !call.required || !state.counts() || state.succeeded());
        let succeeded = self.calls.iter().filter(|s| s.succeeded()).count();
        required_done && succeeded >= needed
    }

    // ---------------------------------------------------------------------------------------
    // Requests

    /// A new request: a fresh cache entry answers it at once; otherwise its first attempt goes
    /// out (a stale entry is kept to stand in if every attempt fails).
    fn begin_request(
        &mut self,
        call_id: CallId,
        serves: Serves,
        prepared: Prepared,
        now: Instant,
        store: &dyn Store,
    ) -> Step {
        let route = Rc::clone(&self.route);
        let call = route.call(call_id).ok_or(Broken("a request of no call"))?;
        let lookup = match (&call.resilience.cache, &prepared.cache_key) {
            (Some(spec), Some(key)) => spec.policy.lookup(store, key, now.as_millis()),
            _ => Lookup::Miss,
        };
        let id = RequestId(self.requests.len());
        self.requests.push(Request {
            call: call_id,
            serves,
            prepared,
            started: now,
            stale: None,
            attempts: 0,
            hedge: Hedge::Off,
            last_failure: None,
            coalesced: 0,
            state: RequestState::InFlight { open: 0 },
        });
        match lookup {
            Lookup::Fresh(body) => {
                log::debug!(
                    "route {}: call {} answered from the cache",
                    route.name,
                    call.name
                );
                let result = judge::cached(call, body).map(|mut success| {
                    success.cached = true;
                    success
                });
                self.conclude(id, result, now)
            }
            Lookup::Stale { body, age_ms } => {
                let stored = now.saturating_sub(Duration::from_millis(age_ms));
                self.request_mut(id)?.stale = Some(StaleEntry { body, stored });
                self.attempt(id, now, store)
            }
            Lookup::Miss => self.attempt(id, now, store),
        }
    }

    /// The request's next attempt, unless the deadline has passed (it concludes with its last
    /// failure, or `deadline`) or its circuit is open (`circuit_open`). The first attempt plans
    /// the hedge.
    fn attempt(&mut self, id: RequestId, now: Instant, store: &dyn Store) -> Step {
        let route = Rc::clone(&self.route);
        let request = self.request(id)?;
        let call = route
            .call(request.call)
            .ok_or(Broken("a request of no call"))?;
        if self.deadline.saturating_duration_since(now) < MIN_ATTEMPT {
            let failure = request
                .last_failure
                .clone()
                .unwrap_or_else(|| Failure::new(Reason::Deadline));
            return self.conclude(id, Err(failure), now);
        }
        let first = request.attempts == 0;
        let cluster = &request.prepared.request.cluster;
        let probe = match call
            .resilience
            .breaker
            .map(|b| b.admit(store, cluster, now.as_millis()))
        {
            Some(Gate::Open) => {
                let failure = Failure::new(Reason::CircuitOpen)
                    .with_detail(format!("circuit for cluster {cluster} is open"));
                return self.conclude(id, Err(failure), now);
            }
            Some(Gate::Probe) => true,
            Some(Gate::Closed) | None => false,
        };
        self.dispatch(id, probe, false, now)?;
        let hedge = call
            .resilience
            .hedge_after_ms
            .filter(|_| first && !probe)
            .and_then(|ms| retry::hedge_at(Duration::from_millis(ms), now, self.deadline));
        if let Some(at) = hedge {
            self.request_mut(id)?.hedge = Hedge::Planned(at);
            self.outbox.wake_at(at);
        }
        Ok(())
    }

    /// Hands one attempt of the request to the host, with the call's timeout cut to what is
    /// left of the deadline. A coalescing call's attempt may share an identical request in
    /// flight, unless it is the breaker's probe or a hedge: both exist to send a request.
    fn dispatch(&mut self, id: RequestId, probe: bool, hedge: bool, now: Instant) -> Step {
        let left =
            Duration::from_millis(whole_millis(self.deadline.saturating_duration_since(now)));
        let attempt = AttemptId(self.attempts.len());
        let request = self.request_mut(id)?;
        let timeout = request.prepared.timeout.min(left).max(MIN_ATTEMPT);
        request.attempts += 1;
        request.state = match request.state {
            RequestState::InFlight { open } => RequestState::InFlight { open: open + 1 },
            RequestState::BackingOff { .. } | RequestState::Done => {
                RequestState::InFlight { open: 1 }
            }
        };
        let number = request.attempts;
        let dispatch = Dispatch {
            attempt,
            request: Rc::clone(&request.prepared.request),
            timeout,
            coalesce: request
                .prepared
                .coalesce_key
                .clone()
                .filter(|_| !probe && !hedge)
                .map(|key| Coalesce {
                    key,
                    timeout: request.prepared.timeout,
                }),
        };
        log::debug!(
            "route {}: dispatch attempt {number} of request {} to cluster {} with timeout {} ms",
            self.route.name,
            id.0,
            dispatch.request.cluster,
            whole_millis(timeout)
        );
        self.attempts.push(Attempt {
            request: id,
            sent: now,
            timeout,
            open: true,
            probe,
        });
        self.outbox.dispatch(dispatch);
        Ok(())
    }

    /// The backoff before the request's next attempt after `failure`, if its call retries.
    fn retry_delay(
        &self,
        call: &Call,
        id: RequestId,
        failure: &Failure,
        now: Instant,
    ) -> Result<Option<Duration>, Broken> {
        let sent = self.request(id)?.attempts;
        Ok(call
            .resilience
            .retries
            .as_ref()
            .and_then(|policy| policy.backoff(failure, sent, now, self.deadline)))
    }

    /// Ends a request with its result (a stale cache entry stands in for a failure) and hands
    /// the result to its call.
    fn conclude(&mut self, id: RequestId, result: Result<Success, Failure>, now: Instant) -> Step {
        let route = Rc::clone(&self.route);
        let request = self.request_mut(id)?;
        request.state = RequestState::Done;
        let (call_id, serves, attempts, stale) = (
            request.call,
            request.serves.clone(),
            request.attempts,
            request.stale.take(),
        );
        let duration = (attempts > 0).then(|| now.saturating_duration_since(request.started));
        for attempt in self.attempts.iter_mut().filter(|a| a.request == id) {
            attempt.open = false;
        }
        let call = route.call(call_id).ok_or(Broken("a request of no call"))?;
        let result = match (result, stale) {
            (Err(failure), Some(entry)) => {
                log::debug!(
                    "route {}: call {} failed, serving a stale answer",
                    route.name,
                    call.name
                );
                let age = now.saturating_duration_since(entry.stored);
                judge::cached(call, entry.body)
                    .map(|mut success| {
                        success.stale_age_ms = Some(whole_millis(age));
                        success.failure_replaced = Some(failure.reason);
                        success
                    })
                    .map_err(|_| failure)
            }
            (result, _) => result,
        };
        // A fresh cache hit took no time; a call never sent has no duration.
        let duration =
            duration.or(Some(Duration::ZERO).filter(|_| result.as_ref().is_ok_and(|s| s.cached)));
        match serves {
            Serves::Call => {
                let outcome = match result {
                    Ok(success) => Outcome::Succeeded(success),
                    Err(failure) => Outcome::Failed(failure),
                };
                self.finish_call(call_id, outcome, duration, attempts)
            }
            Serves::Item(item) => self.finish_items(call_id, vec![(item, result)], attempts, now),
            Serves::Chunk(chunk) => {
                let batch = call
                    .batch
                    .as_ref()
                    .ok_or(Broken("a chunk of a call without batch"))?;
                let keys: Vec<&Value> = match self.call_state(call_id)? {
                    CallState::Running {
                        items: Some(items), ..
                    } => chunk
                        .iter()
                        .filter_map(|item| items.get(item.0).map(|i| &i.value))
                        .collect(),
                    _ => return Err(Broken("a chunk of a call not running items")),
                };
                let results = judge::chunk(call, batch, &keys, result);
                self.finish_items(
                    call_id,
                    chunk.into_iter().zip(results).collect(),
                    attempts,
                    now,
                )
            }
        }
    }

    /// Whether the request's circuit lets a hedge through (closed, not probing).
    fn circuit_closed(
        &self,
        id: RequestId,
        now: Instant,
        store: &dyn Store,
    ) -> Result<bool, Broken> {
        let request = self.request(id)?;
        let call = self
            .route
            .call(request.call)
            .ok_or(Broken("a request of no call"))?;
        let cluster = &request.prepared.request.cluster;
        Ok(call
            .resilience
            .breaker
            .is_none_or(|b| b.admit(store, cluster, now.as_millis()) == Gate::Closed))
    }

    // ---------------------------------------------------------------------------------------
    // Lookups: a missing entry is a broken state, not a reason to stall.

    fn request(&self, id: RequestId) -> Result<&Request, Broken> {
        self.requests
            .get(id.0)
            .ok_or(Broken("a request that does not exist"))
    }

    fn request_mut(&mut self, id: RequestId) -> Result<&mut Request, Broken> {
        self.requests
            .get_mut(id.0)
            .ok_or(Broken("a request that does not exist"))
    }

    fn call_state(&self, id: CallId) -> Result<&CallState, Broken> {
        self.calls
            .get(id.index())
            .ok_or(Broken("a call without state"))
    }

    fn call_state_mut(&mut self, id: CallId) -> Result<&mut CallState, Broken> {
        self.calls
            .get_mut(id.index())
            .ok_or(Broken("a call without state"))
    }

    /// The route's settings for its answers.
    fn settings(&self) -> Shape<'_> {
        Shape {
            meta_key: self.route.meta_key.as_deref(),
            meta_name: self.route.meta_name.as_deref(),
            expose_errors: self.route.expose_errors,
            response: &self.route.response,
        }
    }
}
