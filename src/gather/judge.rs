//! What an event says about an attempt (SPEC §4): a success, with the call's transforms
//! applied (SPEC §5), or a failure with its reason. Pure: the state machine decides what the
//! result means for the request.

use super::Event;
use crate::json_number;
use crate::json_path::Found;
use crate::outcome::{judge_answer, reset_is_timeout, Failure, Reason, Success};
use crate::plan::{Batch, Call};
use serde_json::Value;
use std::time::Duration;

/// What `event` says about an attempt of `call` sent with `timeout`, `elapsed` after it was
/// sent. For a successful answer of a call that caches, the upstream body comes back too, to be
/// stored as it came.
pub fn event(
    event: Event,
    call: &Call,
    timeout: Duration,
    elapsed: Duration,
) -> (Result<Success, Failure>, Option<Vec<u8>>) {
    match event {
        Event::Answered {
            status,
            body,
            headers,
            ..
        } => {
            let cacheable = call.resilience.cache.is_some() && (200..300).contains(&status);
            let raw = cacheable.then(|| body.clone());
            let result = judge_answer(status, body, call.format, call.parses_answers()).map(
                |mut success| {
                    success.headers = headers;
                    shaped(call, success)
                },
            );
            (result, raw)
        }
        other => (Err(failure(other, call, timeout, elapsed)), None),
    }
}

/// The failure an event other than an answer reports.
fn failure(event: Event, call: &Call, timeout: Duration, elapsed: Duration) -> Failure {
    match event {
        Event::TooLarge { status, .. } if (200..300).contains(&status) => {
            Failure::new(Reason::TooLarge).with_detail(format!(
                "body over max_body_bytes ({})",
                call.max_body_bytes
            ))
        }
        Event::TooLarge { status, .. } => {
            let mut failure = Failure::new(Reason::Status)
                .with_detail(format!("HTTP {status} with a body over max_body_bytes"));
            failure.status = Some(status);
            failure
        }
        // Envoy resets an attempt whose timeout fires after the answer's headers arrived.
        Event::Reset { .. } if reset_is_timeout(elapsed, timeout) => {
            Failure::new(Reason::Timeout).with_detail("no complete answer within the timeout")
        }
        Event::Reset { .. } => Failure::new(Reason::Connect)
            .with_detail("connection reset before the answer completed"),
        Event::TimedOut { .. } => Failure::new(Reason::Timeout)
            .with_detail("no answer within the timeout from an identical request in flight"),
        Event::Refused { detail, .. } => Failure::new(Reason::Dispatch).with_detail(detail),
        Event::Unreachable { detail, .. } => Failure::new(Reason::Connect).with_detail(detail),
        // Answers are judged by `event`.
        Event::Answered { status, .. } => {
            let mut failure = Failure::new(Reason::Status);
            failure.status = Some(status);
            failure
        }
    }
}

/// Judges a cached body as if it had just arrived.
pub fn cached(call: &Call, body: Vec<u8>) -> Result<Success, Failure> {
    judge_answer(200, body, call.format, call.parses_answers()).map(|success| shaped(call, success))
}

/// Applies the call's transforms (`extract`, `select`, `omit`, `rename`): the client sees the
/// reshaped body; later calls' templates still read the upstream body.
fn shaped(call: &Call, mut success: Success) -> Success {
    let Some(shape) = &call.shape else {
        return success;
    };
    let upstream = if call.body_needed {
        success.value.clone()
    } else {
        success.value.take()
    };
    if let Some(json) = shape.apply_to_json(upstream, &success.json) {
        success.json = json;
    }
    success
}

/// What one chunk of a batch join (SPEC §3.5) concluded with, for each of its `keys` in order:
/// the first object of the answer (after the call's own transforms: `extract` finds a wrapped
/// array) whose `join.match` value equals the key (JSON equality, numbers by exact value);
/// `status` 404 for a key no element answers, as the per-key request would have been answered;
/// the chunk's failure for every key when it failed, or `invalid_body` when its answer is not an
/// array. Each key's result keeps the chunk's cache facts (fresh hit, stale age).
pub fn chunk(
    call: &Call,
    batch: &Batch,
    keys: &[&Value],
    result: Result<Success, Failure>,
) -> Vec<Result<Success, Failure>> {
    let fail_all = |failure: Failure| keys.iter().map(|_| Err(failure.clone())).collect();
    let mut success = match result {
        Ok(success) => success,
        Err(failure) => return fail_all(failure),
    };
    // The answer as the client would see it: the parsed upstream body when nothing reshapes it,
    // else the reshaped bytes (the parsed value stays the upstream's, for templates).
    let answer = match (call.shape.is_none(), success.value.take()) {
        (true, Some(value)) => Ok(value),
        _ => json_number::parse(&success.json),
    };
    let elements = match answer {
        Ok(Value::Array(elements)) => elements,
        _ => {
            return fail_all(
                Failure::new(Reason::InvalidBody)
                    .with_detail("a batch answer must be a JSON array of objects"),
            )
        }
    };
    // Only objects answer keys: a `match` of digits would otherwise index an array element.
    let matched: Vec<(&Value, &Value)> = elements
        .iter()
        .filter(|element| element.is_object())
        .filter_map(|element| match batch.matches.find(element) {
            Found::One(key) => Some((key, element)),
            _ => None,
        })
        .collect();
    keys.iter()
        .map(|key| {
            let found = matched
                .iter()
                .find(|(answered, _)| json_number::same_value(answered, key));
            match found {
                Some((_, element)) => Ok(Success {
                    json: serde_json::to_vec(element).unwrap_or_default(),
                    value: call.body_needed.then(|| (*element).clone()),
                    headers: Vec::new(),
                    cached: success.cached,
                    stale_age_ms: success.stale_age_ms,
                    coalesced: success.coalesced,
                    failure_replaced: success.failure_replaced,
                }),
                None => {
                    let mut failure =
                        Failure::new(Reason::Status).with_detail("key not in the batch answer");
                    failure.status = Some(404);
                    Err(failure)
                }
            }
        })
        .collect()
}
