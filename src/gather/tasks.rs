//! Tasks and their attempts (SPEC §6): the cache in front of a task, the circuit breaker in
//! front of each attempt, retries after failures, a hedge after a silence, and a stale cache
//! entry standing in when everything failed.

use super::state::{judge_cached, judge_event, Job, Outcome, Prepared, Task};
use super::{Action, Dispatch, Event, Gather};
use crate::config::RetryOn;
use crate::outcome::{Failure, Reason, Success};
use crate::resilience::breaker::Gate;
use crate::resilience::cache::Lookup;
use crate::resilience::Store;
use std::rc::Rc;

impl Gather {
    /// Starts a task: a fresh cache entry answers it at once, otherwise its first attempt goes
    /// out. Returns the answer when this settles the whole aggregation.
    pub(super) fn begin_task(
        &mut self,
        call: usize,
        item: Option<usize>,
        request: Prepared,
        now_us: u64,
        store: &dyn Store,
        actions: &mut Vec<Action>,
    ) -> Option<super::Response> {
        let route = Rc::clone(&self.route);
        let plan = route.calls.get(call)?;
        let lookup = match (&plan.resilience.cache, &request.cache_key) {
            (Some(spec), Some(key)) => spec.policy.lookup(store, key, now_us / 1000),
            _ => Lookup::Miss,
        };
        let task = self.tasks.len();
        self.tasks.push(Task {
            call,
            item,
            request,
            started_us: now_us,
            stale: None,
            attempts: 0,
            open_jobs: 0,
            retry_at_us: None,
            hedge_at_us: None,
            hedged: false,
            failure: None,
            done: false,
        });
        match lookup {
            Lookup::Fresh(body) => {
                log::debug!(
                    "route {}: call {} answered from the cache",
                    route.name,
                    plan.name
                );
                let result = judge_cached(plan, body).map(|mut success| {
                    success.cached = true;
                    success
                });
                self.conclude(task, result, now_us, actions);
            }
            Lookup::Stale { body, age_ms } => {
                if let Some(t) = self.tasks.get_mut(task) {
                    t.stale = Some((body, (now_us / 1000).saturating_sub(age_ms)));
                }
                self.attempt(task, now_us, store, actions);
            }
            Lookup::Miss => {
                self.attempt(task, now_us, store, actions);
            }
        }
        take_response(actions)
    }

    /// Sends one attempt of a task, unless the deadline has passed or the circuit is open.
    /// Returns whether the task concluded instead.
    fn attempt(
        &mut self,
        task: usize,
        now_us: u64,
        store: &dyn Store,
        actions: &mut Vec<Action>,
    ) -> bool {
        let route = Rc::clone(&self.route);
        let Some(t) = self.tasks.get(task) else {
            return false;
        };
        let Some(plan) = route.calls.get(t.call) else {
            return false;
        };
        let remaining_ms = self.deadline_us.saturating_sub(now_us) / 1000;
        if remaining_ms == 0 {
            let failure = t
                .failure
                .clone()
                .unwrap_or_else(|| Failure::new(Reason::Deadline));
            self.conclude(task, Err(failure), now_us, actions);
            return true;
        }
        let probe = match plan
            .resilience
            .breaker
            .map(|b| b.admit(store, &t.request.request.cluster, now_us / 1000))
        {
            Some(Gate::Open) => {
                let failure = Failure::new(Reason::CircuitOpen).with_detail(format!(
                    "circuit for cluster {} is open",
                    t.request.request.cluster
                ));
                self.conclude(task, Err(failure), now_us, actions);
                return true;
            }
            Some(Gate::Probe) => true,
            Some(Gate::Closed) | None => false,
        };
        let first = t.attempts == 0;
        self.send_job(task, probe, now_us, actions);
        if let (true, Some(hedge_ms)) = (first && !probe, plan.resilience.hedge_after_ms) {
            let at = now_us.saturating_add(hedge_ms.saturating_mul(1000));
            if at < self.deadline_us {
                if let Some(t) = self.tasks.get_mut(task) {
                    t.hedge_at_us = Some(at);
                }
                actions.push(Action::WakeAt(at));
            }
        }
        false
    }

    /// Opens a job for the task's request and hands it to the host.
    fn send_job(&mut self, task: usize, probe: bool, now_us: u64, actions: &mut Vec<Action>) {
        let remaining_ms = self.deadline_us.saturating_sub(now_us) / 1000;
        let Some(t) = self.tasks.get_mut(task) else {
            return;
        };
        let timeout_ms = t.request.timeout_ms.min(remaining_ms).max(1);
        t.attempts += 1;
        t.open_jobs += 1;
        let job = self.jobs.len();
        self.jobs.push(Job {
            task,
            since_us: now_us,
            timeout_ms,
            open: true,
            probe,
        });
        log::debug!(
            "route {}: dispatch job {job} (attempt {}) to cluster {} with timeout {timeout_ms} ms",
            self.route.name,
            t.attempts,
            t.request.request.cluster
        );
        actions.push(Action::Dispatch(Dispatch {
            job,
            request: Rc::clone(&t.request.request),
            timeout_ms,
        }));
    }

    /// Handles an event about a job. Returns whether a call settled.
    pub(super) fn on_job_event(
        &mut self,
        event: Event,
        now_us: u64,
        store: &dyn Store,
        actions: &mut Vec<Action>,
    ) -> bool {
        let Some(job) = self.jobs.get_mut(event.job()).filter(|j| j.open) else {
            log::debug!(
                "route {}: ignoring an event for a job not in flight",
                self.route.name
            );
            return false;
        };
        job.open = false;
        let (task, probe) = (job.task, job.probe);
        let duration_us = now_us.saturating_sub(job.since_us);
        let route = Rc::clone(&self.route);
        let Some(t) = self.tasks.get_mut(task) else {
            return false;
        };
        t.open_jobs = t.open_jobs.saturating_sub(1);
        if t.done {
            // The slower of a hedged pair, or an answer after the task gave up.
            return false;
        }
        let Some(plan) = route.calls.get(t.call) else {
            return false;
        };
        let mut raw = None;
        let result = match self.jobs.get(event.job()) {
            Some(job) => judge_event(event, plan, job, duration_us, &mut raw),
            None => return false,
        };
        let Some(t) = self.tasks.get_mut(task) else {
            return false;
        };
        if let Some(breaker) = plan.resilience.breaker {
            let failed = result
                .as_ref()
                .err()
                .is_some_and(|f| f.reason.counts_against_upstream(f.status));
            if breaker.record(
                store,
                &t.request.request.cluster,
                now_us / 1000,
                !failed,
                probe,
            ) {
                let cluster = t.request.request.cluster.clone();
                self.opened_circuits.push(cluster);
            }
        }
        match result {
            Ok(success) => {
                if let (Some(spec), Some(key), Some(raw)) =
                    (&plan.resilience.cache, &t.request.cache_key, raw)
                {
                    spec.policy.save(store, key, &raw, now_us / 1000);
                }
                self.conclude(task, Ok(success), now_us, actions);
                true
            }
            Err(failure) => {
                if t.open_jobs > 0 {
                    // A hedge is still out: it may yet succeed.
                    t.failure = Some(failure);
                    return false;
                }
                let retry = self.retry_delay_us(task, &failure, now_us);
                if let Some(t) = self.tasks.get_mut(task) {
                    t.failure = Some(failure.clone());
                }
                match retry {
                    Some(0) => self.attempt(task, now_us, store, actions),
                    Some(delay) => {
                        let at = now_us.saturating_add(delay);
                        if let Some(t) = self.tasks.get_mut(task) {
                            t.retry_at_us = Some(at);
                        }
                        actions.push(Action::WakeAt(at));
                        false
                    }
                    None => {
                        self.conclude(task, Err(failure), now_us, actions);
                        true
                    }
                }
            }
        }
    }

    /// The backoff before the next attempt, if the failure may be retried: the call retries
    /// this reason, attempts remain, and the retry would start before the deadline.
    fn retry_delay_us(&self, task: usize, failure: &Failure, now_us: u64) -> Option<u64> {
        let t = self.tasks.get(task)?;
        let policy = self.route.calls.get(t.call)?.resilience.retries.as_ref()?;
        let wanted = match failure.reason {
            Reason::Connect => policy.on.contains(&RetryOn::Connect),
            Reason::Timeout => policy.on.contains(&RetryOn::Timeout),
            Reason::Status => {
                policy.on.contains(&RetryOn::ServerError)
                    && failure.status.is_some_and(|s| s >= 500)
            }
            _ => false,
        };
        let delay = policy.backoff_ms.saturating_mul(1000);
        // At least a millisecond must be left for the attempt itself.
        let in_time = now_us.saturating_add(delay).saturating_add(1000) < self.deadline_us;
        (wanted && t.attempts < policy.attempts && in_time).then_some(delay)
    }

    /// Sends the retries and hedges that are due. Returns whether a call settled.
    pub(super) fn fire_timers(
        &mut self,
        now_us: u64,
        store: &dyn Store,
        actions: &mut Vec<Action>,
    ) -> bool {
        let mut settled = false;
        for task in 0..self.tasks.len() {
            if self.answered {
                break;
            }
            let Some(t) = self.tasks.get_mut(task).filter(|t| !t.done) else {
                continue;
            };
            if t.retry_at_us.is_some_and(|at| at <= now_us) {
                t.retry_at_us = None;
                settled |= self.attempt(task, now_us, store, actions);
                continue;
            }
            if t.hedge_at_us.is_some_and(|at| at <= now_us) {
                t.hedge_at_us = None;
                if !t.hedged && t.open_jobs == 1 {
                    t.hedged = true;
                    let cluster = t.request.request.cluster.clone();
                    let breaker = self
                        .route
                        .calls
                        .get(t.call)
                        .and_then(|c| c.resilience.breaker);
                    let closed = breaker
                        .is_none_or(|b| b.admit(store, &cluster, now_us / 1000) == Gate::Closed);
                    if closed {
                        self.send_job(task, false, now_us, actions);
                    }
                }
            }
        }
        settled
    }

    /// Ends a task: a stale cache entry stands in for a failure; the result goes to its call.
    fn conclude(
        &mut self,
        task: usize,
        result: Result<Success, Failure>,
        now_us: u64,
        actions: &mut Vec<Action>,
    ) {
        let route = Rc::clone(&self.route);
        let Some(t) = self.tasks.get_mut(task) else {
            return;
        };
        t.done = true;
        t.retry_at_us = None;
        t.hedge_at_us = None;
        let (call, item, attempts, stale) = (t.call, t.item, t.attempts, t.stale.take());
        let duration_us = (attempts > 0).then(|| now_us.saturating_sub(t.started_us));
        for job in self.jobs.iter_mut().filter(|j| j.task == task) {
            job.open = false;
        }
        let Some(plan) = route.calls.get(call) else {
            return;
        };
        let result = match (result, stale) {
            (Err(failure), Some((body, stored_ms))) => {
                let age_ms = (now_us / 1000).saturating_sub(stored_ms);
                log::debug!(
                    "route {}: call {} failed, serving a stale answer",
                    route.name,
                    plan.name
                );
                judge_cached(plan, body)
                    .map(|mut success| {
                        success.stale_age_ms = Some(age_ms);
                        success.failure_replaced = Some(failure.reason);
                        success
                    })
                    .map_err(|_| failure)
            }
            (result, _) => result,
        };
        let duration_us =
            duration_us.or(Some(0).filter(|_| result.as_ref().is_ok_and(|s| s.cached)));
        let response = match item {
            None => {
                let outcome = match result {
                    Ok(success) => Outcome::Succeeded(success),
                    Err(failure) => Outcome::Failed(failure),
                };
                self.finish(call, outcome, duration_us, attempts)
            }
            Some(item) => self.finish_item(call, item, result, attempts, now_us),
        };
        if let Some(response) = response {
            actions.clear();
            actions.push(Action::Respond(response));
        }
    }
}

/// The answer among the actions, if the aggregation was just answered.
fn take_response(actions: &mut Vec<Action>) -> Option<super::Response> {
    let position = actions
        .iter()
        .position(|a| matches!(a, Action::Respond(_)))?;
    match actions.remove(position) {
        Action::Respond(response) => Some(response),
        _ => None,
    }
}
