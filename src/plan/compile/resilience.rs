//! A call's resilience (SPEC §6): `retries`, `hedge_after_ms`, `cache`, `circuit_breaker`,
//! inherited defaults → route → call. The policies themselves live in `crate::resilience`.

use super::checks::{lower_header_list, CREDENTIAL_HEADERS};
use super::limits;
use super::CallCompiler;
use crate::config::{self, CacheConfig, ConfigError, Place, Setting};
use crate::plan::template::{Resolve, Source};
use crate::plan::{CacheSpec, Call, CallResilience, RetryPolicy};
use crate::resilience::breaker::BreakerPolicy;
use crate::resilience::cache::CachePolicy;

/// Checks every SPEC §6 value one level writes (`prefix`: `defaults.` at the top, empty in a
/// route or call), whether or not a call ends up using it: the ranges of `limits.rs`, a
/// non-empty `retries.on`, valid `cache.vary` header names.
pub fn check_written(
    resilience: &config::Resilience,
    place: &Place,
    prefix: &str,
) -> Result<(), ConfigError> {
    limits::check(&limits::of_resilience(resilience), place, prefix)?;
    if resilience.retries.value().is_some_and(|r| r.on.is_empty()) {
        return Err(place.error(
            Some(&format!("{prefix}retries.on")),
            "must list at least one of connect, timeout, 5xx",
        ));
    }
    if let Some(cache) = resilience.cache.value() {
        lower_header_list(&cache.vary, place, &format!("{prefix}cache.vary"), true)?;
    }
    Ok(())
}

impl CallResilience {
    /// The SPEC §6 options of `call` (compiled but for them) after inheritance. Options the call
    /// sets itself must make sense for it (retrying or hedging a method that is not idempotent
    /// without `"unsafe": true`, caching anything but GET and HEAD are errors); inherited ones
    /// that do not apply are dropped.
    pub(super) fn compile(call: &Call, c: &mut CallCompiler<'_, '_>) -> Result<Self, ConfigError> {
        let own = &c.config.resilience;
        let merged = own.over(&c.cx.route.resilience.over(&c.cx.defaults.resilience));
        let method = call.method.as_str();
        let not_repeatable = |key: &str| {
            c.place.error(
                Some(key),
                format!(
                    "{method} is not idempotent: set \"unsafe\": true if sending it twice is safe"
                ),
            )
        };
        if !call.may_repeat && matches!(own.retries, Setting::On(_)) {
            return Err(not_repeatable("retries"));
        }
        if !call.may_repeat && matches!(own.hedge_after_ms, Setting::On(_)) {
            return Err(not_repeatable("hedge_after_ms"));
        }
        check_written(own, &c.place, "")?;
        let cacheable = matches!(method, "GET" | "HEAD");
        if !cacheable && matches!(own.cache, Setting::On(_)) {
            return Err(c.place.error(
                Some("cache"),
                format!("only GET and HEAD answers are cached, not {method}"),
            ));
        }
        let cache = match merged.cache.value().filter(|_| cacheable) {
            Some(cache) => Some(c.cache(cache, call)?),
            None => None,
        };
        Ok(CallResilience {
            retries: merged
                .retries
                .value()
                .filter(|_| call.may_repeat)
                .map(|retries| RetryPolicy {
                    attempts: retries.attempts,
                    backoff_ms: retries.backoff_ms,
                    on: retries.on.clone(),
                }),
            hedge_after_ms: merged
                .hedge_after_ms
                .value()
                .filter(|_| call.may_repeat)
                .copied(),
            cache,
            breaker: merged.circuit_breaker.value().map(|breaker| BreakerPolicy {
                failures: breaker.failures,
                open_ms: breaker.open_ms,
            }),
        })
    }
}

impl CallCompiler<'_, '_> {
    /// The cache of one call. A credential the call sends (forwarded, set, or read into a
    /// header) must be part of the key, or one user's answer could be served to another.
    fn cache(&mut self, cache: &CacheConfig, call: &Call) -> Result<CacheSpec, ConfigError> {
        let vary = lower_header_list(&cache.vary, &self.place, "cache.vary", true)?;
        let inputs = &self.cx.inputs;
        let read_into_headers = call
            .headers
            .iter()
            .flat_map(|(_, t)| t.placeholders())
            .filter_map(|p| match p.source {
                Source::Header(slot) => inputs.headers.get(slot).map(String::as_str),
                _ => None,
            });
        let sent: Vec<&str> = call
            .forward
            .iter()
            .map(|(name, _)| name.as_str())
            .chain(call.headers.iter().map(|(name, _)| name.as_str()))
            .chain(read_into_headers)
            .filter(|name| CREDENTIAL_HEADERS.contains(name))
            .collect();
        if let Some(missing) = sent.iter().find(|name| !vary.iter().any(|v| v == *name)) {
            return Err(self.place.error(
                Some("cache.vary"),
                format!("the call sends \"{missing}\": list it in vary, or cached answers would cross users"),
            ));
        }
        Ok(CacheSpec {
            policy: CachePolicy {
                ttl_ms: cache.ttl_ms,
                stale_if_error_ms: cache.stale_if_error_ms,
                max_entries: cache.max_entries,
                namespace: format!("ga/cache/{}/{}/", self.cx.route.name, call.name),
            },
            vary_slots: vary
                .iter()
                .map(|name| self.cx.inputs.header(name))
                .collect(),
        })
    }
}
