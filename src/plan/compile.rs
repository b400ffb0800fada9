//! Compiling the configuration into the plan (SPEC §2): every check that can be made before the
//! first request is made here, once, and fails with a [`ConfigError`] naming route, call and key.
//!
//! The code follows the configuration's own sections, so each check sits next to the key it
//! checks:
//!
//! | configuration | compiled by |
//! |---|---|
//! | `defaults` (SPEC §2.1) | [`plan`]: its values are checked as written |
//! | `routes[]` (SPEC §2.2) | `Route::compile` (here): `match`, limits, forwarding, calls, bodies needed, `response`, `wait_for`, `max_inflight` |
//! | `routes[].calls[]` (SPEC §2.3) | `Call::compile` (`call.rs`): name, output key (`as`), target, headers and forwarding, limits, fallback and body, fan-out and join, dependencies, shaping |
//! | `retries`, `hedge_after_ms`, `cache`, `circuit_breaker` (SPEC §6) | `CallResilience::compile` (`resilience.rs`) |
//! | `response` (SPEC §5) | `Context::response` (`response.rs`), with `shape::compile_response` |
//! | every bounded number | the one table of `limits.rs` |
//! | names, methods, header names | `checks.rs` |
//!
//! Every part of a route is compiled in one [`Context`]: the levels it inherits from, the
//! route's place for errors, and the client inputs its templates read ([`RouteInputs`]).
//!
//! Errors: every function that knows where it is returns [`ConfigError`]; parsers of a single
//! value (templates, paths, names) return the reason as a `String`, and their caller places it.

mod call;
mod checks;
mod inputs;
pub mod limits;
mod resilience;
mod response;

use super::body::BodyTemplate;
use super::matcher::PathPattern;
use super::template::Source;
use super::{graph, Call, CallId, ClientBodyUse, Plan, Route};
use crate::config::{self, Config, ConfigError, Defaults, MatchConfig, Place, RouteConfig};
use checks::{check_method, check_name, lower_header_list};
use inputs::RouteInputs;
use std::rc::Rc;

pub use limits::{MAX_BATCH, MAX_BODY_BYTES, MAX_FAN_OUT, MAX_MS};

/// Compiles a parsed configuration into the plan (SPEC §2); the error names route, call and key
/// (see [`ConfigError`]).
pub fn plan(config: &Config) -> Result<Plan, ConfigError> {
    let top = Place::default();
    limits::check(&limits::of_defaults(&config.defaults), &top, "defaults.")?;
    resilience::check_written(&config.defaults.resilience, &top, "defaults.")?;
    let mut routes: Vec<Rc<Route>> = Vec::with_capacity(config.routes.len());
    for route in &config.routes {
        let place = Place::route(&route.name);
        check_name(&route.name).map_err(|why| place.error(Some("name"), why))?;
        if routes.iter().any(|r| r.name == route.name) {
            return Err(place.error(Some("name"), "another route has the same name"));
        }
        routes.push(Rc::new(Route::compile(route, &config.defaults)?));
    }
    Ok(Plan { routes })
}

/// What every part of one route is compiled in: the levels it inherits from (defaults → route →
/// call, SPEC §2.1), where errors are, and what its templates read.
struct Context<'c> {
    defaults: &'c Defaults,
    route: &'c RouteConfig,
    /// The route; a call's errors are at `place.call(name)`.
    place: Place,
    inputs: RouteInputs<'c>,
    /// `defaults.forward_headers`, then the route's own: lowercase, checked, each once.
    forward: Vec<String>,
}

/// The context narrowed to one call (`call.rs`, `resilience.rs`).
struct CallCompiler<'a, 'c> {
    config: &'c config::CallConfig,
    /// The call's place in the route (`route.calls[index]`).
    index: usize,
    place: Place,
    cx: &'a mut Context<'c>,
}

impl Route {
    /// Compiles one route (SPEC §2.2) against `defaults` (already checked); the route's name was
    /// checked by [`plan`]. Its values are checked as written, so its calls inherit checked ones.
    fn compile(config: &RouteConfig, defaults: &Defaults) -> Result<Route, ConfigError> {
        let place = Place::route(&config.name);
        let pattern = PathPattern::parse(&config.matching.path)
            .map_err(|why| place.error(Some("match.path"), why))?;
        limits::check(&limits::of_route(config), &place, "")?;
        resilience::check_written(&config.resilience, &place, "")?;
        let (methods, match_headers) = compile_match(&config.matching, &place)?;
        let mut cx = Context::new(config, defaults, place, pattern.capture_names())?;
        let mut calls = cx.calls()?;
        let dependencies: Vec<Vec<CallId>> = calls.iter().map(|c| c.dependencies.clone()).collect();
        let order = graph::order(&dependencies, &cx.inputs.call_names)
            .map_err(|why| cx.place.error(Some("calls"), why))?;
        mark_bodies_needed(&mut calls);
        let response = cx.response(&mut calls)?;
        let wait_for = cx.wait_for()?;
        let client_body = cx.client_body(&calls);
        Ok(Route {
            name: config.name.clone(),
            pattern,
            methods,
            match_headers,
            deadline_ms: config.deadline_ms.unwrap_or(defaults.deadline_ms),
            expose_errors: config.expose_errors.unwrap_or(defaults.expose_errors),
            calls,
            order,
            query_params: cx.inputs.query_params,
            headers: cx.inputs.headers,
            meta_key: meta_key(&config.response, &cx.place)?,
            meta_name: config.response.meta.clone(),
            fields_param: config.fields_param.clone(),
            client_body,
            response,
            wait_for,
            max_inflight: config
                .max_inflight
                .over(&config::Setting::from(defaults.max_inflight))
                .value()
                .copied(),
        })
    }
}

/// `match.methods` (upper-cased, at least one) and `match.headers` (lowercase names;
/// `:authority` allowed for host-based routes).
type MatchRules = (Vec<String>, Vec<(String, String)>);

fn compile_match(matching: &MatchConfig, place: &Place) -> Result<MatchRules, ConfigError> {
    if matching.methods.is_empty() {
        return Err(place.error(Some("match.methods"), "must list at least one method"));
    }
    let methods = matching
        .methods
        .iter()
        .map(|m| check_method(m).map_err(|why| place.error(Some("match.methods"), why)))
        .collect::<Result<Vec<_>, _>>()?;
    let mut seen = Vec::with_capacity(matching.headers.len());
    let headers = matching
        .headers
        .iter()
        .map(|(name, value)| {
            let lower = name.to_ascii_lowercase();
            if lower == ":authority" || super::template::is_header_name(&lower) {
                checks::named_once(&mut seen, &lower)
                    .map_err(|why| place.error(Some("match.headers"), why))?;
                Ok((lower, value.clone()))
            } else {
                Err(place.error(
                    Some("match.headers"),
                    format!("\"{name}\" is not a valid header name"),
                ))
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((methods, headers))
}

/// The key of the completeness object, JSON-encoded once with its quotes for the renderer.
fn meta_key(
    response: &config::ResponseConfig,
    place: &Place,
) -> Result<Option<String>, ConfigError> {
    response
        .meta
        .as_ref()
        .map(|key| {
            serde_json::to_string(key)
                .map_err(|e| place.error(Some("response.meta"), e.to_string()))
        })
        .transpose()
}

/// A call's body is parsed, not only validated, when a later call reads it.
fn mark_bodies_needed(calls: &mut [Call]) {
    for read in 0..calls.len() {
        let needed = calls
            .iter()
            .any(|reader| reads_body_of(reader, CallId::new(read)));
        if let Some(call) = calls.get_mut(read) {
            call.body_needed = needed;
        }
    }
}

/// Whether `reader` needs the parsed body of call `read`.
fn reads_body_of(reader: &Call, read: CallId) -> bool {
    reader
        .references()
        .any(|p| matches!(p.source, Source::Call { call, .. } if call == read))
        || reader.fan_out.as_ref().is_some_and(|f| f.source == read)
        || reader.join.as_ref().is_some_and(|j| j.target == read)
}

impl<'c> Context<'c> {
    fn new(
        route: &'c RouteConfig,
        defaults: &'c Defaults,
        place: Place,
        captures: &[String],
    ) -> Result<Context<'c>, ConfigError> {
        // Credentials are refused at both levels: only a call may ask for them (SPEC §2.1).
        let mut forward = lower_header_list(
            &defaults.forward_headers,
            &place,
            "defaults.forward_headers",
            false,
        )?;
        for name in lower_header_list(&route.forward_headers, &place, "forward_headers", false)? {
            if !forward.contains(&name) {
                forward.push(name);
            }
        }
        let call_names = route.calls.iter().map(|c| c.name.as_str()).collect();
        Ok(Context {
            defaults,
            route,
            place,
            inputs: RouteInputs::new(captures, call_names),
            forward,
        })
    }

    /// The route's calls (at least one), in configuration order.
    fn calls(&mut self) -> Result<Vec<Call>, ConfigError> {
        let route = self.route;
        if route.calls.is_empty() {
            return Err(self
                .place
                .error(Some("calls"), "must list at least one call"));
        }
        route
            .calls
            .iter()
            .enumerate()
            .map(|(index, call)| Call::compile(call, index, self))
            .collect()
    }

    /// `wait_for` (SPEC §6): a count may not exceed the route's calls.
    fn wait_for(&self) -> Result<config::WaitFor, ConfigError> {
        let wait_for = self.route.wait_for.unwrap_or(self.defaults.wait_for);
        let calls = self.route.calls.len();
        if let config::WaitFor::Count(count) = wait_for {
            if count > u64::try_from(calls).unwrap_or(u64::MAX) {
                return Err(self.place.error(
                    Some("wait_for"),
                    format!("waits for {count} calls but the route has {calls}"),
                ));
            }
        }
        Ok(wait_for)
    }

    /// What the route needs from the client's body (SPEC §3.4), once its calls are compiled.
    fn client_body(&self, calls: &[Call]) -> ClientBodyUse {
        let forwards_body = calls
            .iter()
            .any(|c| matches!(c.body, Some(BodyTemplate::Client { .. })));
        ClientBodyUse {
            needed: self.inputs.reads_body_fields || forwards_body,
            parsed: self.inputs.reads_body_fields,
            max_bytes: self
                .route
                .max_body_bytes
                .unwrap_or(self.defaults.max_body_bytes),
        }
    }
}
