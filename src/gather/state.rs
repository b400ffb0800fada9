//! Where each call of one request stands. A call runs as *tasks* (one per plain call, one per
//! `for_each` item); a task sends *jobs* (its first attempt, retries, a hedge) until one
//! succeeds or it gives up.

use super::{Event, UpstreamRequest};
use crate::outcome::{judge_answer, Failure, Reason, Success};
use crate::plan::Call;
use serde_json::Value;
use std::rc::Rc;

#[derive(Debug)]
pub enum CallState {
    /// Not fetched: `fields` did not ask for it, nor for anything that needs it.
    Skipped,
    Waiting,
    Running {
        started_us: u64,
        /// Per-item progress of a `for_each` call; `None` for a plain call.
        items: Option<Vec<ItemState>>,
    },
    Done {
        outcome: Outcome,
        /// From the first dispatch to the last answer; `None` if never dispatched.
        duration_us: Option<u64>,
        /// Requests sent for the call: first attempts, retries, hedges.
        attempts: u32,
    },
}

impl CallState {
    /// Finished, or never to run: nothing will change it any more.
    pub fn settled(&self) -> bool {
        matches!(self, CallState::Done { .. } | CallState::Skipped)
    }

    /// Succeeded with fresh data (for `wait_for`).
    pub fn succeeded(&self) -> bool {
        match self {
            CallState::Done { outcome, .. } => match outcome {
                Outcome::Succeeded(success) => success.stale_age_ms.is_none(),
                Outcome::Failed(_) => false,
                Outcome::Fanned(fanned) => fanned
                    .items
                    .iter()
                    .all(|i| matches!(&i.result, Some(Ok(s)) if s.stale_age_ms.is_none())),
            },
            _ => false,
        }
    }
}

#[derive(Debug)]
pub enum Outcome {
    Succeeded(Success),
    Failed(Failure),
    /// A `for_each` call: one result per item.
    Fanned(Fanned),
}

#[derive(Debug)]
pub struct Fanned {
    pub items: Vec<ItemState>,
    /// The items' bodies as one array, for later calls that read this one.
    pub value: Option<Value>,
}

impl Fanned {
    pub fn failures(&self) -> impl Iterator<Item = (&str, &Failure)> {
        self.items.iter().filter_map(|item| match &item.result {
            Some(Err(failure)) => Some((item.key.as_str(), failure)),
            _ => None,
        })
    }

    pub fn stale(&self) -> impl Iterator<Item = (&str, u64)> {
        self.items.iter().filter_map(|item| match &item.result {
            Some(Ok(Success {
                stale_age_ms: Some(age),
                ..
            })) => Some((item.key.as_str(), *age)),
            _ => None,
        })
    }
}

/// One item of a `for_each` call.
#[derive(Debug)]
pub struct ItemState {
    /// The item as `_meta` and error bodies name it (see [`ItemState::all`]).
    pub key: String,
    pub value: Value,
    pub result: Option<Result<Success, Failure>>,
    pub attempts: u32,
}

impl ItemState {
    /// The items of one `for_each` call (distinct scalars, in order), each with its key in
    /// `_meta.errors.<call>.items` and `_meta.stale.<call>.items` (SPEC §4: unique keys): a
    /// string by its text, a number or boolean as JSON writes it (`u1`, `7`, `true`). A string
    /// and a number could print alike (`"7"` and `7`), so when a call's items mix strings with
    /// numbers or booleans, every item of the call is keyed by its JSON text: strings quoted
    /// (`"\"7\""` and `"7"` in the answer's JSON). Distinct items then always have distinct
    /// keys, and the usual case, items of one type, keeps plain ones.
    pub fn all(values: Vec<Value>) -> Vec<ItemState> {
        let strings = values.iter().filter(|v| v.is_string()).count();
        let mixed = strings != 0 && strings != values.len();
        values
            .into_iter()
            .map(|value| ItemState {
                key: match &value {
                    Value::String(s) if !mixed => s.clone(),
                    other => other.to_string(),
                },
                value,
                result: None,
                attempts: 0,
            })
            .collect()
    }
}

/// A rendered request, kept to be sent again by retries and hedges.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub request: Rc<UpstreamRequest>,
    /// The call's own timeout; each attempt also stops at the route deadline.
    pub timeout_ms: u64,
    /// Key in the response cache, when the call caches.
    pub cache_key: Option<String>,
}

/// One logical request of a call.
#[derive(Debug)]
pub struct Task {
    pub call: usize,
    pub item: Option<usize>,
    pub request: Prepared,
    pub started_us: u64,
    /// A cached answer too old to serve, young enough to stand in for a failure, and when
    /// it was stored (ms).
    pub stale: Option<(Vec<u8>, u64)>,
    pub attempts: u32,
    pub open_jobs: u32,
    pub retry_at_us: Option<u64>,
    pub hedge_at_us: Option<u64>,
    pub hedged: bool,
    /// The latest failure, reported if nothing better arrives.
    pub failure: Option<Failure>,
    pub done: bool,
}

/// One request handed to the host.
#[derive(Debug)]
pub struct Job {
    pub task: usize,
    pub since_us: u64,
    pub timeout_ms: u64,
    pub open: bool,
    /// The circuit breaker's one probe.
    pub probe: bool,
}

/// A reset this close to a call's timeout is the timeout: Envoy arms its timers from the
/// event loop's cached clock, so they fire a few milliseconds early by our clock reads.
fn timeout_slack_us(timeout_ms: u64) -> u64 {
    (timeout_ms.saturating_mul(1000) / 20).max(10_000)
}

/// What an event says about its job's answer. `raw` receives the upstream body of a
/// successful answer when the call caches it.
pub fn judge_event(
    event: Event,
    plan: &Call,
    job: &Job,
    duration_us: u64,
    raw: &mut Option<Vec<u8>>,
) -> Result<Success, Failure> {
    match event {
        Event::Answered {
            status,
            body,
            headers,
            ..
        } => {
            if plan.resilience.cache.is_some() && (200..300).contains(&status) {
                *raw = Some(body.clone());
            }
            judge_answer(status, body, plan.format, plan.parses_answers()).map(|mut success| {
                success.headers = headers;
                shaped(plan, success)
            })
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
            if duration_us + timeout_slack_us(job.timeout_ms)
                >= job.timeout_ms.saturating_mul(1000) =>
        {
            Err(Failure::new(Reason::Timeout).with_detail("no complete answer within the timeout"))
        }
        Event::Reset { .. } => Err(Failure::new(Reason::Connect)
            .with_detail("connection reset before the answer completed")),
        Event::Refused { detail, .. } => Err(Failure::new(Reason::Dispatch).with_detail(detail)),
        Event::Unreachable { detail, .. } => Err(Failure::new(Reason::Connect).with_detail(detail)),
    }
}

/// Judges a cached body as if it had just arrived.
pub fn judge_cached(plan: &Call, body: Vec<u8>) -> Result<Success, Failure> {
    judge_answer(200, body, plan.format, plan.parses_answers()).map(|success| shaped(plan, success))
}

/// Applies the call's transforms: the client sees the reshaped body; later calls' templates
/// still read the upstream body.
fn shaped(plan: &Call, mut success: Success) -> Success {
    let Some(shape) = &plan.shape else {
        return success;
    };
    let upstream = if plan.body_needed {
        success.value.clone()
    } else {
        success.value.take()
    };
    let body = upstream
        .or_else(|| crate::json_number::parse(&success.json).ok())
        .unwrap_or(Value::Null);
    if let Ok(json) = serde_json::to_vec(&shape.apply(body)) {
        success.json = json;
    }
    success
}
