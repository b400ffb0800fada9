//! Circuit breakers (SPEC §6), one per cluster, shared by every worker and route: after
//! `failures` consecutive failures the circuit opens and calls fail at once with
//! `circuit_open`; after `open_ms` one probe is let through; its success closes the circuit,
//! its failure opens it again. Each transition is logged once, by the worker that made it.

use super::Store;

/// `circuit_breaker` (SPEC §6) of a call. Its state is per cluster, in the [`Store`] under
/// [`key`]: calls of every route and worker to that cluster share it, each with its own
/// policy's numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerPolicy {
    /// Consecutive failures (1 to 1000) that open the circuit. Only failures that say the
    /// upstream is unwell count ([`counts_against_upstream`]); any other outcome starts the
    /// count again.
    ///
    /// [`counts_against_upstream`]: crate::outcome::Reason::counts_against_upstream
    pub failures: u32,
    /// Milliseconds the circuit stays open before one probe is let through.
    pub open_ms: u64,
}

/// Whether a call may go out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// The circuit is closed: send as usual.
    Closed,
    /// The circuit was open long enough: this call is the one probe.
    Probe,
    /// The circuit is open: send nothing; the call fails with `circuit_open`.
    Open,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed { failures: u32 },
    Open { since_ms: u64 },
    Probing { since_ms: u64 },
}

/// How many compare-and-swap rounds to try before giving up on an update.
const CAS_ROUNDS: usize = 8;

/// The [`Store`] key of `cluster`'s circuit.
pub fn key(cluster: &str) -> String {
    format!("ga/breaker/{cluster}")
}

impl BreakerPolicy {
    /// Before an attempt to `cluster` at `now_ms` (host clock, ms since the Unix epoch):
    /// whether it may go out. When the circuit has been open for `open_ms`, the first caller
    /// gets [`Gate::Probe`] and the circuit is marked probing, so that the others still see it
    /// open; a probe that never reports is replaced after another `open_ms`.
    pub fn admit(&self, store: &dyn Store, cluster: &str, now_ms: u64) -> Gate {
        let key = key(cluster);
        for _ in 0..CAS_ROUNDS {
            let (state, cas) = read(store, &key);
            let since_ms = match state {
                State::Closed { .. } => return Gate::Closed,
                State::Open { since_ms } | State::Probing { since_ms } => since_ms,
            };
            // A probe that never reported (its request vanished) is replaced after open_ms.
            if now_ms < since_ms.saturating_add(self.open_ms) {
                return Gate::Open;
            }
            if store.set(&key, &encode(State::Probing { since_ms: now_ms }), cas) {
                log::info!("gateway-aggregator: circuit for cluster {cluster} half-open: sending one probe");
                return Gate::Probe;
            }
        }
        Gate::Open
    }

    /// Records a finished call. Only the probe decides while the circuit is not closed.
    /// Returns true when this call opened the circuit.
    pub fn record(
        &self,
        store: &dyn Store,
        cluster: &str,
        now_ms: u64,
        success: bool,
        probe: bool,
    ) -> bool {
        let key = key(cluster);
        for _ in 0..CAS_ROUNDS {
            let (state, cas) = read(store, &key);
            let next = match (state, success, probe) {
                (State::Closed { failures: 0 }, true, _) => return false,
                (State::Closed { .. }, true, _) => State::Closed { failures: 0 },
                (State::Closed { failures }, false, _)
                    if failures.saturating_add(1) >= self.failures =>
                {
                    State::Open { since_ms: now_ms }
                }
                (State::Closed { failures }, false, _) => State::Closed {
                    failures: failures + 1,
                },
                (State::Probing { .. } | State::Open { .. }, true, true) => {
                    State::Closed { failures: 0 }
                }
                (State::Probing { .. } | State::Open { .. }, false, true) => {
                    State::Open { since_ms: now_ms }
                }
                (State::Probing { .. } | State::Open { .. }, _, false) => return false,
            };
            if store.set(&key, &encode(next), cas) {
                log_transition(cluster, state, next, self.failures);
                return matches!(next, State::Open { .. });
            }
        }
        false
    }
}

fn log_transition(cluster: &str, from: State, to: State, threshold: u32) {
    match (from, to) {
        (State::Closed { .. }, State::Open { .. }) => log::warn!(
            "gateway-aggregator: circuit for cluster {cluster} opened after {threshold} consecutive failures"
        ),
        (State::Probing { .. } | State::Open { .. }, State::Open { .. }) => {
            log::warn!("gateway-aggregator: circuit for cluster {cluster} probe failed: open again")
        }
        (State::Probing { .. } | State::Open { .. }, State::Closed { .. }) => {
            log::info!("gateway-aggregator: circuit for cluster {cluster} closed: probe succeeded")
        }
        _ => {}
    }
}

fn read(store: &dyn Store, key: &str) -> (State, Option<u32>) {
    match store.get(key) {
        Some((bytes, cas)) => (
            decode(&bytes).unwrap_or(State::Closed { failures: 0 }),
            Some(cas),
        ),
        None => (State::Closed { failures: 0 }, None),
    }
}

fn encode(state: State) -> Vec<u8> {
    match state {
        State::Closed { failures } => format!("closed {failures}"),
        State::Open { since_ms } => format!("open {since_ms}"),
        State::Probing { since_ms } => format!("probing {since_ms}"),
    }
    .into_bytes()
}

fn decode(bytes: &[u8]) -> Option<State> {
    let text = std::str::from_utf8(bytes).ok()?;
    let (kind, number) = text.split_once(' ')?;
    let number: u64 = number.parse().ok()?;
    match kind {
        "closed" => Some(State::Closed {
            failures: u32::try_from(number).ok()?,
        }),
        "open" => Some(State::Open { since_ms: number }),
        "probing" => Some(State::Probing { since_ms: number }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resilience::MemoryStore;

    const POLICY: BreakerPolicy = BreakerPolicy {
        failures: 3,
        open_ms: 1000,
    };

    #[test]
    fn opens_after_consecutive_failures_then_probes_once_and_closes() {
        let store = MemoryStore::default();
        for _ in 0..2 {
            assert_eq!(POLICY.admit(&store, "c", 0), Gate::Closed);
            POLICY.record(&store, "c", 0, false, false);
        }
        POLICY.record(&store, "c", 0, true, false);
        for _ in 0..3 {
            POLICY.record(&store, "c", 10, false, false);
        }
        assert_eq!(POLICY.admit(&store, "c", 500), Gate::Open);
        assert_eq!(POLICY.admit(&store, "c", 1010), Gate::Probe);
        assert_eq!(
            POLICY.admit(&store, "c", 1020),
            Gate::Open,
            "one probe at a time"
        );
        POLICY.record(&store, "c", 1030, true, false);
        assert_eq!(
            POLICY.admit(&store, "c", 1040),
            Gate::Open,
            "only the probe decides"
        );
        POLICY.record(&store, "c", 1050, true, true);
        assert_eq!(POLICY.admit(&store, "c", 1060), Gate::Closed);
    }

    #[test]
    fn a_failed_probe_opens_the_circuit_again() {
        let store = MemoryStore::default();
        for _ in 0..3 {
            POLICY.record(&store, "c", 0, false, false);
        }
        assert_eq!(POLICY.admit(&store, "c", 1000), Gate::Probe);
        POLICY.record(&store, "c", 1100, false, true);
        assert_eq!(POLICY.admit(&store, "c", 1500), Gate::Open);
        assert_eq!(POLICY.admit(&store, "c", 2100), Gate::Probe);
    }

    #[test]
    fn a_lost_probe_is_replaced_after_open_ms() {
        let store = MemoryStore::default();
        for _ in 0..3 {
            POLICY.record(&store, "c", 0, false, false);
        }
        assert_eq!(POLICY.admit(&store, "c", 1000), Gate::Probe);
        assert_eq!(POLICY.admit(&store, "c", 1999), Gate::Open);
        assert_eq!(POLICY.admit(&store, "c", 2000), Gate::Probe);
    }

    #[test]
    fn clusters_are_independent() {
        let store = MemoryStore::default();
        for _ in 0..3 {
            POLICY.record(&store, "a", 0, false, false);
        }
        assert_eq!(POLICY.admit(&store, "a", 1), Gate::Open);
        assert_eq!(POLICY.admit(&store, "b", 1), Gate::Closed);
    }
}
