//! A call's resilience (SPEC §6): `retries`, `hedge_after_ms`, `cache`, `circuit_breaker`,
//! `coalesce`, inherited defaults → route → call. The policies themselves live in
//! `crate::resilience`.

use super::checks::{lower_header_list, CREDENTIAL_HEADERS};
use super::limits;
use super::CallCompiler;
use crate::config::{self, CacheConfig, ConfigError, Place, Setting};
use crate::plan::template::{Resolve, Source};
use crate::plan::{CacheSpec, Call, CallResilience, CoalesceSpec, RetryPolicy};
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
    /// without `"unsafe": true`, caching or coalescing anything but GET and HEAD, coalescing a
    /// call with a body are errors); inherited ones that do not apply are dropped.
    pub(super) fn compile(call: &Call, c: &mut CallCompiler<'_, '_>) -> Result<Self, ConfigError> {
        let own = &c.config.resilience;
        let merged = own.over(&c.cx.route.resilience.over(&c.cx.defaults.resilience));
        let method = &*call.method;
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
        // Only requests that are safe to answer from someone else's are shared: GET and HEAD
        // (as for the cache) without a body, which would make each request different.
        if matches!(own.coalesce, Setting::On(true)) {
            if !cacheable {
                return Err(c.place.error(
                    Some("coalesce"),
                    format!("only GET and HEAD requests are coalesced, not {method}"),
                ));
            }
            if call.body.is_some() {
                return Err(c
                    .place
                    .error(Some("coalesce"), "a call with a body is never coalesced"));
            }
        }
        let coalesce = match merged.coalesce.value() {
            Some(true) if cacheable && call.body.is_none() => {
                Some(c.coalesce(call, cache.as_ref())?)
            }
            _ => None,
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
            coalesce,
        })
    }
}

impl CallCompiler<'_, '_> {
    /// The cache of one call. A credential the call sends (forwarded, set, or read into a
    /// header) must be part of the key, or one user's answer could be served to another.
    fn cache(&mut self, cache: &CacheConfig, call: &Call) -> Result<CacheSpec, ConfigError> {
        let vary = lower_header_list(&cache.vary, &self.place, "cache.vary", true)?;
        let sent = self.credentials_sent(call);
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

    /// How a coalescing call's requests are keyed (SPEC §6 `coalesce`). The `vary` headers are
    /// the call's cache's (none without a cache), and as for the cache, a credential the call
    /// sends must be among them: requests of different users never share an answer.
    fn coalesce(
        &mut self,
        call: &Call,
        cache: Option<&CacheSpec>,
    ) -> Result<CoalesceSpec, ConfigError> {
        let vary: Vec<(String, usize)> = match cache {
            Some(spec) => spec
                .vary_slots
                .iter()
                .filter_map(|&slot| Some((self.cx.inputs.headers.get(slot)?.clone(), slot)))
                .collect(),
            None => Vec::new(),
        };
        let sent = self.credentials_sent(call);
        if let Some(missing) = sent
            .iter()
            .find(|name| !vary.iter().any(|(v, _)| v == *name))
        {
            let fix = if cache.is_some() {
                "list it in cache.vary"
            } else {
                "give the call a cache whose vary lists it"
            };
            return Err(self.place.error(
                Some("coalesce"),
                format!("the call sends \"{missing}\": {fix} (the key of shared requests), or set coalesce to false, or requests of different users would share one answer"),
            ));
        }
        Ok(CoalesceSpec { vary })
    }

    /// The credential headers (`authorization`, `cookie`) the call sends: forwarded, set, or
    /// read from the client into one of its headers.
    fn credentials_sent<'c>(&'c self, call: &'c Call) -> Vec<&'c str> {
        let inputs = &self.cx.inputs;
        let read_into_headers = call
            .headers
            .iter()
            .flat_map(|(_, t)| t.placeholders())
            .filter_map(|p| match p.source {
                Source::Header(slot) => inputs.headers.get(slot).map(String::as_str),
                _ => None,
            });
        call.forward
            .iter()
            .map(|(name, _)| &**name)
            .chain(call.headers.iter().map(|(name, _)| &**name))
            .chain(read_into_headers)
            .filter(|name| CREDENTIAL_HEADERS.contains(name))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use crate::plan::Plan;

    fn compile(defaults: &str, route: &str, calls: &str) -> Result<Plan, String> {
        let json = format!(
            r#"{{"defaults":{{{defaults}}},"routes":[{{"name":"r","match":{{"path":"/p"}}{route},"calls":[{calls}]}}]}}"#
        );
        Plan::compile(json.as_bytes()).map_err(|e| e.to_string())
    }

    fn coalescing(plan: &Plan) -> Vec<bool> {
        plan.routes[0]
            .calls
            .iter()
            .map(|c| c.resilience.coalesce.is_some())
            .collect()
    }

    #[test]
    fn coalesce_is_inherited_and_switched_off_with_null_or_false() {
        let plan = compile(
            r#""coalesce":true"#,
            "",
            r#"{"name":"a","cluster":"c","path":"/a"},
               {"name":"b","cluster":"c","path":"/b","coalesce":null},
               {"name":"c","cluster":"c","path":"/c","coalesce":false}"#,
        )
        .unwrap();
        assert_eq!(coalescing(&plan), [true, false, false]);
        assert!(plan.routes[0].needs_timers(), "waits are kept by the timer");
        let plan = compile(
            r#""coalesce":true"#,
            r#","coalesce":null"#,
            r#"{"name":"a","cluster":"c","path":"/a"},{"name":"b","cluster":"c","path":"/b","coalesce":true}"#,
        )
        .unwrap();
        assert_eq!(coalescing(&plan), [false, true]);
        let plan = compile("", "", r#"{"name":"a","cluster":"c","path":"/a"}"#).unwrap();
        assert_eq!(coalescing(&plan), [false], "off by default");
        assert!(!plan.routes[0].needs_timers());
    }

    #[test]
    fn unsafe_methods_and_bodies_never_coalesce() {
        let e = compile(
            "",
            "",
            r#"{"name":"a","cluster":"c","method":"POST","path":"/a","coalesce":true}"#,
        )
        .unwrap_err();
        assert_eq!(
            e,
            r#"route "r" call "a" key "coalesce": only GET and HEAD requests are coalesced, not POST"#
        );
        let e = compile(
            "",
            "",
            r#"{"name":"a","cluster":"c","method":"DELETE","path":"/a","coalesce":true,"unsafe":true}"#,
        )
        .unwrap_err();
        assert!(e.ends_with("not DELETE"), "{e}");
        let e = compile(
            "",
            "",
            r#"{"name":"a","cluster":"c","path":"/a","body":{"q":1},"coalesce":true}"#,
        )
        .unwrap_err();
        assert_eq!(
            e,
            r#"route "r" call "a" key "coalesce": a call with a body is never coalesced"#
        );
        // Inherited, it is simply not applied to them.
        let plan = compile(
            r#""coalesce":true"#,
            "",
            r#"{"name":"a","cluster":"c","method":"POST","path":"/a"},
               {"name":"b","cluster":"c","path":"/b","body":{"q":1}},
               {"name":"h","cluster":"c","method":"HEAD","path":"/h"}"#,
        )
        .unwrap();
        assert_eq!(coalescing(&plan), [false, false, true]);
    }

    #[test]
    fn credentials_coalesce_only_when_they_are_part_of_the_key() {
        let e = compile(
            "",
            "",
            r#"{"name":"me","cluster":"c","path":"/me","forward_headers":["authorization"],"coalesce":true}"#,
        )
        .unwrap_err();
        assert_eq!(
            e,
            r#"route "r" call "me" key "coalesce": the call sends "authorization": give the call a cache whose vary lists it (the key of shared requests), or set coalesce to false, or requests of different users would share one answer"#
        );
        // Inherited coalescing is held to the same rule, as an inherited cache is.
        let e = compile(
            r#""coalesce":true"#,
            "",
            r#"{"name":"me","cluster":"c","path":"/me","headers":{"x-user":"{header.cookie}"}}"#,
        )
        .unwrap_err();
        assert!(e.contains(r#"the call sends "cookie""#), "{e}");
        // The cache's own check speaks first when the cache's vary lacks it.
        let e = compile(
            "",
            "",
            r#"{"name":"me","cluster":"c","path":"/me","forward_headers":["authorization"],"coalesce":true,"cache":{"ttl_ms":5}}"#,
        )
        .unwrap_err();
        assert!(e.contains(r#"key "cache.vary""#), "{e}");
        let plan = compile(
            "",
            "",
            r#"{"name":"me","cluster":"c","path":"/me","forward_headers":["authorization"],"coalesce":true,
                "cache":{"ttl_ms":5,"vary":["Authorization","accept-language"]}}"#,
        )
        .unwrap();
        let spec = plan.routes[0].calls[0]
            .resilience
            .coalesce
            .as_ref()
            .unwrap();
        let names: Vec<&str> = spec.vary.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["authorization", "accept-language"]);
        let headers = &plan.routes[0].headers;
        for (name, slot) in &spec.vary {
            assert_eq!(&headers[*slot], name, "slots name the client headers read");
        }
    }

    #[test]
    fn coalesce_must_be_a_boolean() {
        let e = compile(
            "",
            "",
            r#"{"name":"a","cluster":"c","path":"/a","coalesce":"yes"}"#,
        )
        .unwrap_err();
        assert!(
            e.starts_with(r#"route "r" call "a" key "coalesce": invalid type: string "yes", expected a boolean"#),
            "{e}"
        );
    }
}
