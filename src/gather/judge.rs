//! What an event says about an attempt (SPEC §4): a success, with the call's transforms
//! applied (SPEC §5), or a failure with its reason. Pure: the state machine decides what the
//! result means for the request.

use super::Event;
use crate::outcome::{judge_answer, reset_is_timeout, Failure, Reason, Success};
use crate::plan::Call;
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
