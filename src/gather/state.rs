//! Where each call of one request stands, and what each dispatched request (a job) became.

use super::Event;
use crate::outcome::{judge_answer, Failure, Reason, Success};
use crate::plan::Call;
use serde_json::Value;

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
    },
}

impl CallState {
    /// Finished, or never to run: nothing will change it any more.
    pub fn settled(&self) -> bool {
        matches!(self, CallState::Done { .. } | CallState::Skipped)
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
}

/// One item of a `for_each` call.
#[derive(Debug)]
pub struct ItemState {
    /// The item as text, for `_meta` and error bodies.
    pub key: String,
    pub value: Value,
    pub result: Option<Result<Success, Failure>>,
}

impl ItemState {
    pub fn new(value: Value) -> ItemState {
        let key = match &value {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        ItemState {
            key,
            value,
            result: None,
        }
    }
}

/// One request handed to the host.
#[derive(Debug)]
pub struct Job {
    pub call: usize,
    pub item: Option<usize>,
    pub since_us: u64,
    pub timeout_ms: u64,
    pub open: bool,
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
        .or_else(|| serde_json::from_slice(&success.json).ok())
        .unwrap_or(Value::Null);
    if let Ok(json) = serde_json::to_vec(&shape.apply(body)) {
        success.json = json;
    }
    success
}

/// A reset this close to a call's timeout is the timeout: Envoy arms its timers from the
/// event loop's cached clock, so they fire a few milliseconds early by our clock reads.
fn timeout_slack_us(timeout_ms: u64) -> u64 {
    (timeout_ms.saturating_mul(1000) / 20).max(10_000)
}

/// What an event says about its job's answer.
pub fn judge_event(
    event: Event,
    plan: &Call,
    job: &Job,
    duration_us: u64,
) -> Result<Success, Failure> {
    match event {
        Event::Answered {
            status,
            body,
            headers,
            ..
        } => judge_answer(status, body, plan.format, plan.parses_answers()).map(|mut success| {
            success.headers = headers;
            shaped(plan, success)
        }),
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
