//! Time as the host tells it. The core never reads a clock: the host passes the time of every
//! event in (Envoy's clock in the filter, a virtual one in tests), as an [`Instant`]; intervals
//! are [`std::time::Duration`]s.

use std::ops::Add;
use std::time::Duration;

/// A moment by the host's clock: microseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Instant(u64);

impl Instant {
    /// The moment `micros` microseconds after the Unix epoch.
    pub const fn from_micros(micros: u64) -> Instant {
        Instant(micros)
    }

    /// Microseconds since the Unix epoch.
    pub const fn as_micros(self) -> u64 {
        self.0
    }

    /// Milliseconds since the Unix epoch: the timestamps of state shared between workers
    /// (cache entries, circuit breakers).
    pub const fn as_millis(self) -> u64 {
        self.0 / 1000
    }

    /// The time from `earlier` to this moment; zero if `earlier` is later (clocks can step).
    pub fn saturating_duration_since(self, earlier: Instant) -> Duration {
        Duration::from_micros(self.0.saturating_sub(earlier.0))
    }

    /// This moment less `duration`, or the epoch.
    pub fn saturating_sub(self, duration: Duration) -> Instant {
        Instant(self.0.saturating_sub(micros(duration)))
    }
}

impl Add<Duration> for Instant {
    type Output = Instant;

    /// Saturates at the end of time rather than overflowing.
    fn add(self, duration: Duration) -> Instant {
        Instant(self.0.saturating_add(micros(duration)))
    }
}

/// A duration in whole microseconds, saturating.
fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

/// Whole milliseconds of a duration, saturating: what Envoy's timeouts and `_meta` ages use.
pub fn whole_millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_move_by_durations_and_saturate() {
        let t = Instant::from_micros(1_500_000);
        assert_eq!((t + Duration::from_millis(250)).as_micros(), 1_750_000);
        assert_eq!(t.as_millis(), 1500);
        assert_eq!(
            (t + Duration::from_millis(1)).saturating_duration_since(t),
            Duration::from_millis(1)
        );
        assert_eq!(
            t.saturating_duration_since(t + Duration::from_secs(1)),
            Duration::ZERO
        );
        assert_eq!(
            Instant::from_micros(u64::MAX) + Duration::from_secs(1),
            Instant::from_micros(u64::MAX)
        );
        assert_eq!(t.saturating_sub(Duration::from_secs(9)), Instant::default());
        assert_eq!(whole_millis(Duration::from_micros(2_999)), 2);
    }
}
