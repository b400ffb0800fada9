//! What one request did, call by call, for the operator's metrics (SPEC §7).

use super::state::{CallState, Hedge, Outcome};
use super::Gather;
use crate::outcome::{Reason, Success};
use std::time::Duration;

/// Per call, in configuration order.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct CallSummary {
    /// Fetched for this request (not left out by `fields`).
    pub fetched: bool,
    /// Skipped by its `when`, or because a call it depends on was (SPEC §3.6).
    pub skipped: bool,
    /// Finished before the answer (`wait_for` and required failures answer earlier).
    pub finished: bool,
    /// One entry per request the call stood for (one, one per `for_each` item, or one per
    /// key of a batch join): `None` for a success, else the reason of the failure.
    pub results: Vec<Option<Reason>>,
    /// A request failed and the call has a `fallback`, which stood in.
    pub fallback: bool,
    /// A stale cache entry stood in for a failed request (its failure is in `results`).
    pub stale: bool,
    /// Requests answered by a fresh cache entry, nothing sent (stale ones are `stale`).
    pub cache_hits: u32,
    /// Attempts sent: first attempts, retries and hedges.
    pub attempts: u32,
    /// Attempts sent after a failure (`attempts` less first attempts and hedges).
    pub retries: u32,
    /// Hedges sent (at most one per request).
    pub hedges: u32,
    /// Attempts that shared an identical request another aggregation sent (SPEC §6
    /// `coalesce`): `attempts` less these reached the upstream.
    pub coalesced: u32,
    /// From the call's first dispatch to its last answer.
    pub duration: Option<Duration>,
}

/// What one request's calls did, for [`crate::stats::Stats::record`].
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// One per call of the route, in configuration order (indexed by
    /// [`CallId`](crate::plan::CallId)).
    pub calls: Vec<CallSummary>,
    /// Clusters whose circuit breaker this request opened.
    pub opened_circuits: Vec<String>,
}

impl Gather {
    /// What each call did so far (called once the request is answered).
    pub fn summary(&self) -> Summary {
        let mut calls: Vec<CallSummary> = self
            .route
            .calls
            .iter()
            .zip(&self.calls)
            .map(|(call, state)| {
                let mut summary = CallSummary {
                    fetched: !matches!(state, CallState::NotFetched),
                    skipped: matches!(state, CallState::Skipped),
                    ..CallSummary::default()
                };
                if let CallState::Done {
                    outcome, duration, ..
                } = state
                {
                    summary.finished = true;
                    summary.duration = *duration;
                    let mut record = |result: Result<&Success, Reason>| {
                        match result {
                            Ok(success) => {
                                summary.stale |= success.stale_age_ms.is_some();
                                summary.cache_hits += u32::from(success.cached);
                                // A stale answer stands in for a failure: count the failure.
                                summary.results.push(success.failure_replaced);
                            }
                            Err(reason) => {
                                summary.fallback |= call.fallback.is_some();
                                summary.results.push(Some(reason));
                            }
                        };
                    };
                    match outcome {
                        Outcome::Succeeded(success) => record(Ok(success)),
                        Outcome::Failed(failure) => record(Err(failure.reason)),
                        Outcome::Fanned(fanned) => {
                            for item in &fanned.items {
                                match &item.result {
                                    Some(Ok(success)) => record(Ok(success)),
                                    Some(Err(failure)) => record(Err(failure.reason)),
                                    None => {}
                                }
                            }
                        }
                    }
                }
                summary
            })
            .collect();
        for request in &self.requests {
            if let Some(call) = calls.get_mut(request.call.index()) {
                let hedges = u32::from(request.hedge == Hedge::Sent);
                call.attempts += request.attempts;
                call.hedges += hedges;
                call.coalesced += request.coalesced;
                call.retries += request.attempts.saturating_sub(1 + hedges);
            }
        }
        Summary {
            calls,
            opened_circuits: self.opened_circuits.clone(),
        }
    }
}
