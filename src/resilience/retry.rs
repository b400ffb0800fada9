//! Retries (SPEC §6 `retries`) and hedging (`hedge_after_ms`): when a request tries again.
//! The policies decide; the state machine (`gather/machine.rs`) asks them after a failed
//! attempt and after its first attempt goes out, and keeps the timers.

use crate::config::RetryOn;
use crate::outcome::{Failure, Reason};
use crate::time::Instant;
use std::time::Duration;

/// The shortest attempt worth sending: less than this left of the deadline is no time at all.
pub const MIN_ATTEMPT: Duration = Duration::from_millis(1);

/// A call's `retries`, after inheritance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total attempts, the first included.
    pub attempts: u32,
    /// The wait before each retry, in milliseconds.
    pub backoff_ms: u64,
    /// The failures worth another attempt.
    pub on: Vec<RetryOn>,
}

impl RetryPolicy {
    /// The backoff before the next attempt after `failure`, if there is one: the policy
    /// retries this reason (`connect`, `timeout`, or a 5xx `status`), fewer than `attempts`
    /// were sent (`sent`), and the retry would start before `deadline` with time to run.
    pub fn backoff(
        &self,
        failure: &Failure,
        sent: u32,
        now: Instant,
        deadline: Instant,
    ) -> Option<Duration> {
        let wanted = match failure.reason {
            Reason::Connect => self.on.contains(&RetryOn::Connect),
            Reason::Timeout => self.on.contains(&RetryOn::Timeout),
            Reason::Status => {
                self.on.contains(&RetryOn::ServerError) && failure.status.is_some_and(|s| s >= 500)
            }
            _ => false,
        };
        let delay = Duration::from_millis(self.backoff_ms);
        let in_time = now + delay + MIN_ATTEMPT < deadline;
        (wanted && sent < self.attempts && in_time).then_some(delay)
    }
}

/// When a request's hedge goes out (`hedge_after_ms`): `after` its first attempt was sent,
/// if that is still before `deadline`.
pub fn hedge_at(after: Duration, first_sent: Instant, deadline: Instant) -> Option<Instant> {
    let at = first_sent + after;
    (at < deadline).then_some(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            attempts: 3,
            backoff_ms: 10,
            on: vec![RetryOn::Connect, RetryOn::ServerError],
        }
    }

    fn at(ms: u64) -> Instant {
        Instant::from_micros(ms * 1000)
    }

    #[test]
    fn retries_the_reasons_it_names_while_attempts_and_time_remain() {
        let mut status = Failure::new(Reason::Status);
        status.status = Some(503);
        let connect = Failure::new(Reason::Connect);
        let p = policy();
        assert_eq!(
            p.backoff(&connect, 1, at(0), at(100)),
            Some(Duration::from_millis(10))
        );
        assert_eq!(
            p.backoff(&status, 2, at(0), at(100)),
            Some(Duration::from_millis(10))
        );
        assert_eq!(
            p.backoff(&status, 3, at(0), at(100)),
            None,
            "attempts used up"
        );
        assert_eq!(
            p.backoff(&connect, 1, at(95), at(100)),
            None,
            "past the deadline"
        );
        status.status = Some(404);
        assert_eq!(
            p.backoff(&status, 1, at(0), at(100)),
            None,
            "a 4xx is an answer"
        );
        assert_eq!(
            p.backoff(&Failure::new(Reason::Timeout), 1, at(0), at(100)),
            None
        );
    }

    #[test]
    fn a_hedge_goes_out_only_before_the_deadline() {
        let after = Duration::from_millis(40);
        assert_eq!(hedge_at(after, at(10), at(100)), Some(at(50)));
        assert_eq!(hedge_at(after, at(70), at(100)), None);
    }
}
