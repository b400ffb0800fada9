//! The bounds of every number of the configuration (SPEC §2, §3.5, §6), in one table, and the
//! one check of the values a level writes.
//!
//! Each value is checked at the level that writes it (`defaults.timeout_ms` at the top, a
//! route's `timeout_ms` in the route, a call's in the call), whether or not anything ends up
//! using it, so a value a call inherits has already been checked.

use crate::config::{self, ConfigError, Defaults, Place, RouteConfig};

/// Upper bound of every `*_ms` setting: a day (Envoy's call timeout is a 32-bit millisecond
/// count).
pub const MAX_MS: u64 = 86_400_000;
/// Upper bound of every `max_body_bytes`: 1 GiB.
pub const MAX_BODY_BYTES: u64 = 1 << 30;
/// Upper bound of `max_fan_out`: a safety net against configurations that could flood a cluster.
pub const MAX_FAN_OUT: u64 = 1000;
/// Upper bound of `max_batch`, keys in one request of a batch join: as many as `max_fan_out`
/// allows requests, so a chunk never carries more keys than a fan-out could make calls.
pub const MAX_BATCH: u64 = 1000;
/// Upper bound of `max_inflight`, aggregations per worker.
pub const MAX_INFLIGHT: u64 = 1_000_000;
/// Upper bound of `retries.attempts`, the first attempt included.
pub const MAX_ATTEMPTS: u64 = 10;
/// Upper bound of `cache.max_entries`: each entry is a slot of Envoy shared data.
pub const MAX_CACHE_ENTRIES: u64 = 100_000;
/// Upper bound of `circuit_breaker.failures`.
pub const MAX_BREAKER_FAILURES: u64 = 1000;

/// A bounded key: its path below the level that writes it, and its inclusive range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub key: &'static str,
    pub min: u64,
    pub max: u64,
}

const fn limit(key: &'static str, min: u64, max: u64) -> Limit {
    Limit { key, min, max }
}

// The table: every bounded key of the configuration.
pub const TIMEOUT_MS: Limit = limit("timeout_ms", 1, MAX_MS);
pub const DEADLINE_MS: Limit = limit("deadline_ms", 1, MAX_MS);
pub const MAX_BODY: Limit = limit("max_body_bytes", 1, MAX_BODY_BYTES);
pub const FAN_OUT: Limit = limit("max_fan_out", 1, MAX_FAN_OUT);
pub const BATCH: Limit = limit("max_batch", 1, MAX_BATCH);
pub const INFLIGHT: Limit = limit("max_inflight", 1, MAX_INFLIGHT);
pub const HEDGE_AFTER_MS: Limit = limit("hedge_after_ms", 1, MAX_MS);
pub const RETRY_ATTEMPTS: Limit = limit("retries.attempts", 1, MAX_ATTEMPTS);
pub const RETRY_BACKOFF_MS: Limit = limit("retries.backoff_ms", 0, MAX_MS);
pub const CACHE_TTL_MS: Limit = limit("cache.ttl_ms", 1, MAX_MS);
pub const CACHE_STALE_MS: Limit = limit("cache.stale_if_error_ms", 0, MAX_MS);
pub const CACHE_ENTRIES: Limit = limit("cache.max_entries", 1, MAX_CACHE_ENTRIES);
pub const BREAKER_FAILURES: Limit = limit("circuit_breaker.failures", 1, MAX_BREAKER_FAILURES);
pub const BREAKER_OPEN_MS: Limit = limit("circuit_breaker.open_ms", 1, MAX_MS);

/// The whole table, for tests that hold it against the JSON Schema and the levels.
#[cfg(test)]
pub const ALL: [Limit; 14] = [
    TIMEOUT_MS,
    DEADLINE_MS,
    MAX_BODY,
    FAN_OUT,
    BATCH,
    INFLIGHT,
    HEDGE_AFTER_MS,
    RETRY_ATTEMPTS,
    RETRY_BACKOFF_MS,
    CACHE_TTL_MS,
    CACHE_STALE_MS,
    CACHE_ENTRIES,
    BREAKER_FAILURES,
    BREAKER_OPEN_MS,
];

/// A value as written at one level (`None`: not written there) and its bound.
pub type Written = (Limit, Option<u64>);

/// Checks every value one level writes; `prefix` is `defaults.` at the top, empty in a route or
/// a call. The error: `key "<prefix><key>": must be between <min> and <max>`.
pub fn check(written: &[Written], place: &Place, prefix: &str) -> Result<(), ConfigError> {
    for (limit, value) in written {
        let Some(value) = *value else { continue };
        if !(limit.min..=limit.max).contains(&value) {
            return Err(place.error(
                Some(&format!("{prefix}{}", limit.key)),
                format!("must be between {} and {}", limit.min, limit.max),
            ));
        }
    }
    Ok(())
}

/// The bounded values of `defaults` (SPEC §2.1), all written (or defaulted).
pub fn of_defaults(defaults: &Defaults) -> [Written; 6] {
    [
        (TIMEOUT_MS, Some(defaults.timeout_ms)),
        (DEADLINE_MS, Some(defaults.deadline_ms)),
        (MAX_BODY, Some(defaults.max_body_bytes)),
        (FAN_OUT, Some(defaults.max_fan_out)),
        (BATCH, Some(defaults.max_batch)),
        (INFLIGHT, defaults.max_inflight),
    ]
}

/// The bounded values a route writes for itself and its calls (SPEC §2.2).
pub fn of_route(route: &RouteConfig) -> [Written; 6] {
    [
        (TIMEOUT_MS, route.timeout_ms),
        (MAX_BODY, route.max_body_bytes),
        (FAN_OUT, route.max_fan_out),
        (BATCH, route.max_batch),
        (DEADLINE_MS, route.deadline_ms),
        (INFLIGHT, route.max_inflight.value().copied()),
    ]
}

/// The bounded SPEC §6 values one level writes.
pub fn of_resilience(resilience: &config::Resilience) -> [Written; 8] {
    let retries = resilience.retries.value();
    let cache = resilience.cache.value();
    let breaker = resilience.circuit_breaker.value();
    [
        (RETRY_ATTEMPTS, retries.map(|r| u64::from(r.attempts))),
        (RETRY_BACKOFF_MS, retries.map(|r| r.backoff_ms)),
        (HEDGE_AFTER_MS, resilience.hedge_after_ms.value().copied()),
        (CACHE_TTL_MS, cache.map(|c| c.ttl_ms)),
        (CACHE_STALE_MS, cache.map(|c| c.stale_if_error_ms)),
        (CACHE_ENTRIES, cache.map(|c| c.max_entries)),
        (BREAKER_FAILURES, breaker.map(|b| u64::from(b.failures))),
        (BREAKER_OPEN_MS, breaker.map(|b| b.open_ms)),
    ]
}
