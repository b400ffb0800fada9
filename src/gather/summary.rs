//! What one request did, call by call, for the operator's metrics (SPEC §7).

use super::state::{CallState, Outcome};
use super::Gather;
use crate::outcome::{Reason, Success};

/// Per call, in configuration order.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct CallSummary {
    /// Fetched for this request (not skipped by `fields`).
    pub fetched: bool,
    /// Finished before the answer (`wait_for` and required failures answer earlier).
    pub finished: bool,
    /// One entry per request the call stood for (one, or one per `for_each` item): `None`
    /// for a success, else the reason of the failure.
    pub results: Vec<Option<Reason>>,
    pub fallback: bool,
    pub stale: bool,
    pub cache_hits: u32,
    /// Requests sent: first attempts, retries and hedges.
    pub attempts: u32,
    pub retries: u32,
    pub hedges: u32,
    pub duration_us: Option<u64>,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub calls: Vec<CallSummary>,
    /// Clusters whose circuit breaker this request opened.
    pub opened_circuits: Vec<String>,
}

impl Gather {
    pub fn summary(&self) -> Summary {
        let mut calls: Vec<CallSummary> = self
            .route
            .calls
            .iter()
            .zip(&self.states)
            .map(|(plan, state)| {
                let mut summary = CallSummary {
                    fetched: !matches!(state, CallState::Skipped),
                    ..CallSummary::default()
                };
                if let CallState::Done {
                    outcome,
                    duration_us,
                    ..
                } = state
                {
                    summary.finished = true;
                    summary.duration_us = *duration_us;
                    let mut record = |result: Result<&Success, Reason>| {
                        match result {
                            Ok(success) => {
                                summary.stale |= success.stale_age_ms.is_some();
                                summary.cache_hits += u32::from(success.cached);
                                // A stale answer stands in for a failure: count the failure.
                                summary.results.push(success.failure_replaced);
                            }
                            Err(reason) => {
                                summary.fallback |= plan.fallback.is_some();
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
        for task in &self.tasks {
            if let Some(call) = calls.get_mut(task.call) {
                let hedges = u32::from(task.hedged);
                call.attempts += task.attempts;
                call.hedges += hedges;
                call.retries += task.attempts.saturating_sub(1 + hedges);
            }
        }
        Summary {
            calls,
            opened_circuits: self.opened_circuits.clone(),
        }
    }
}
