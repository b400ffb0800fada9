//! Requests shared by identical calls of different aggregations on this worker (SPEC §6
//! `coalesce`): the answer of a shared request, read once and handed to every aggregation still
//! waiting for it, and the handover of requests whose sending stream ended. Who waits for what
//! is decided in `crate::resilience::coalesce`; the book lives in the worker.
//!
//! The SDK delivers an answer to the context that was active when the call was sent, and drops
//! it when that stream has ended. So the request is sent from the first aggregation's stream
//! (no delay for the common case) and, when that stream ends (its client left, or it was
//! answered) while others still wait, it is sent again on the next tick from the root context,
//! which never ends, for the first of them; the others keep waiting, each until its own
//! timeout. The alternative, failing the waiters, would turn one client's disconnect into
//! errors (or retries) for every other client of the same hot path.

use super::exchange::{self, Exchange, Via};
use super::now;
use super::registry::Exchanges;
use super::worker::Worker;
use crate::gather::{AttemptId, Event};
use crate::resilience::coalesce::{Route, Waiter};
use crate::time::Instant;

/// The answer to `token` arrived at `at`: if it is a shared request's, hands it to everyone
/// waiting for it and returns true; false for any other call.
pub fn deliver(
    token: u32,
    num_headers: usize,
    body_size: usize,
    at: Route,
    worker: &Worker,
    exchanges: &Exchanges,
) -> bool {
    let Some(shared) = worker.shared_answered(token) else {
        return false;
    };
    let now = now();
    let answer = Answer::read(num_headers, body_size, &shared.waiters);
    let timed_out = matches!(answer, Answer::Reset) && shared.reset_is_timeout(now);
    log::debug!(
        "gateway-aggregator: a shared request answered; {} aggregations were waiting",
        shared.waiters.len()
    );
    for waiter in &shared.waiters {
        let event = answer.event(waiter, timed_out);
        let via = match at {
            Route::Root => Via::Root,
            Route::Stream(context) if context == waiter.context => Via::Stream,
            Route::Stream(_) => Via::Foreign,
        };
        exchanges.with(waiter.context, |e| {
            e.take_event(waiter.joined, event, via, now)
        });
    }
    true
}

/// From the root context's tick: sends again every shared request whose stream ended while
/// others waited, for the first of them, with what is left of its timeout. A refused send is
/// each waiter's failure, by the usual rules (retries, fallbacks).
pub fn hand_over(now: Instant, worker: &Worker, exchanges: &Exchanges) {
    for handover in worker.handovers(now) {
        let request = &handover.request;
        let sent = exchange::send(request, handover.timeout);
        match sent {
            Ok(token) => {
                log::debug!(
                    "gateway-aggregator: a shared request's stream ended; sent again to cluster {} for the others",
                    request.cluster
                );
                worker.resent(&handover.key, token, now, handover.timeout);
            }
            Err(status) => {
                let Some(shared) = worker.abandon(&handover.key) else {
                    continue;
                };
                for waiter in &shared.waiters {
                    let event = exchange::refusal(status, attempt(waiter), &request.cluster);
                    exchanges.with(waiter.context, |e: &mut Exchange| {
                        e.take_event(waiter.joined, event, Via::Root, now)
                    });
                }
            }
        }
    }
}

fn attempt(waiter: &Waiter) -> AttemptId {
    AttemptId::nth(waiter.attempt)
}

/// A shared request's answer, read once for all its waiters.
enum Answer {
    /// No response: Envoy reported no headers (a reset), or no readable `:status`.
    Reset,
    Response {
        status: u16,
        /// The body's size, as Envoy reported it.
        size: u64,
        /// Read when some waiter accepts a body of that size.
        body: Vec<u8>,
        /// Every value of the headers some waiter copies.
        headers: Vec<(String, String)>,
    },
}

impl Answer {
    /// Reads what Envoy holds for the call, during its callback (it is gone afterwards).
    /// Headers are read only when Envoy says there are some: without them there is no
    /// response, and reading would trap the VM.
    fn read(num_headers: usize, body_size: usize, waiters: &[Waiter]) -> Answer {
        let Some(status) = exchange::call_status(num_headers) else {
            return Answer::Reset;
        };
        let size = u64::try_from(body_size).unwrap_or(u64::MAX);
        let body = if waiters.iter().any(|w| size <= w.body_limit) {
            exchange::call_body(body_size)
        } else {
            Vec::new()
        };
        let headers = if waiters.iter().any(|w| !w.headers.is_empty()) {
            exchange::call_headers(|name| {
                waiters
                    .iter()
                    .any(|w| w.headers.iter().any(|h| h.eq_ignore_ascii_case(name)))
            })
        } else {
            Vec::new()
        };
        Answer::Response {
            status,
            size,
            body,
            headers,
        }
    }

    /// What the answer is for one waiter: its own body limit and copied headers apply. A reset
    /// at the shared request's timeout is a timeout for every waiter: their attempts started
    /// later, or with another timeout, so their gathers would not see it as one.
    fn event(&self, waiter: &Waiter, timed_out: bool) -> Event {
        let attempt = attempt(waiter);
        match self {
            Answer::Reset if timed_out => Event::TimedOut { attempt },
            Answer::Reset => Event::Reset { attempt },
            Answer::Response { status, size, .. } if *size > waiter.body_limit => Event::TooLarge {
                attempt,
                status: *status,
            },
            Answer::Response {
                status,
                body,
                headers,
                ..
            } => Event::Answered {
                attempt,
                status: *status,
                headers: headers
                    .iter()
                    .filter(|(name, _)| waiter.headers.iter().any(|h| h.eq_ignore_ascii_case(name)))
                    .cloned()
                    .collect(),
                body: body.clone(),
            },
        }
    }
}
