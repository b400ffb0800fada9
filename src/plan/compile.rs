//! Compiling the configuration into the plan: every check that can be made before the first
//! request is made here, once, and fails with an error naming route, call and key.

use super::body::BodyTemplate;
use super::matcher::PathPattern;
use super::template::{self, Resolve, Source, Template};
use super::{
    graph, CacheSpec, Call, CallResilience, ClientBodyUse, Fallback, FanOut, Join, Plan,
    RetryPolicy, Route,
};
use crate::config::{self, CallConfig, Config, ConfigError, JoinConfig, Place, RouteConfig};
use crate::json_path::JsonPath;
use crate::resilience::breaker::BreakerPolicy;
use crate::resilience::cache::CachePolicy;
use crate::shape::{self, CallShape};
use std::rc::Rc;

/// Upper bound of every `*_ms` setting: Envoy's call timeout is a 32-bit millisecond count.
pub const MAX_MS: u64 = 86_400_000;
pub const MAX_BODY_BYTES: u64 = 1 << 30;
/// Upper bound of `max_fan_out`: a safety net against configurations that could flood a cluster.
pub const MAX_FAN_OUT: u64 = 1000;
const MAX_INFLIGHT: u64 = 1_000_000;
const MAX_NAME_LEN: usize = 64;
/// Headers a call may neither set nor forward: Envoy owns them or they would break framing.
const RESERVED_HEADERS: [&str; 9] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "upgrade",
    "expect",
];
const CREDENTIAL_HEADERS: [&str; 2] = ["authorization", "cookie"];
/// Methods that may be sent twice with the same effect (RFC 9110 §9.2.2).
const IDEMPOTENT_METHODS: [&str; 6] = ["GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"];

pub fn plan(config: &Config) -> Result<Plan, ConfigError> {
    check_defaults(&config.defaults)?;
    let mut routes: Vec<Rc<Route>> = Vec::with_capacity(config.routes.len());
    for route in &config.routes {
        let place = Place::route(&route.name);
        check_name(&route.name).map_err(|why| place.error(Some("name"), why))?;
        if routes.iter().any(|r| r.name == route.name) {
            return Err(place.error(Some("name"), "another route has the same name"));
        }
        routes.push(Rc::new(compile_route(route, &config.defaults, &place)?));
    }
    Ok(Plan { routes })
}

/// Every value of `defaults` as written, whether or not a route ends up using it.
fn check_defaults(defaults: &config::Defaults) -> Result<(), ConfigError> {
    let place = Place::default();
    check_range(
        defaults.timeout_ms,
        1..=MAX_MS,
        &place,
        "defaults.timeout_ms",
    )?;
    check_range(
        defaults.deadline_ms,
        1..=MAX_MS,
        &place,
        "defaults.deadline_ms",
    )?;
    check_range(
        defaults.max_body_bytes,
        1..=MAX_BODY_BYTES,
        &place,
        "defaults.max_body_bytes",
    )?;
    check_range(
        defaults.max_fan_out,
        1..=MAX_FAN_OUT,
        &place,
        "defaults.max_fan_out",
    )?;
    if let Some(limit) = defaults.max_inflight {
        check_range(limit, 1..=MAX_INFLIGHT, &place, "defaults.max_inflight")?;
    }
    check_resilience(&defaults.resilience, &place, "defaults.")
}

/// The route-level values as written (calls may override them all).
fn check_route_values(route: &RouteConfig, place: &Place) -> Result<(), ConfigError> {
    let optional = [
        (route.timeout_ms, 1..=MAX_MS, "timeout_ms"),
        (route.max_body_bytes, 1..=MAX_BODY_BYTES, "max_body_bytes"),
        (route.max_fan_out, 1..=MAX_FAN_OUT, "max_fan_out"),
        (route.deadline_ms, 1..=MAX_MS, "deadline_ms"),
        (
            route.max_inflight.value().copied(),
            1..=MAX_INFLIGHT,
            "max_inflight",
        ),
    ];
    for (value, range, key) in optional {
        if let Some(value) = value {
            check_range(value, range, place, key)?;
        }
    }
    check_resilience(&route.resilience, place, "")
}

/// Every SPEC §6 value as written at one level, whether or not a call ends up using it.
fn check_resilience(
    resilience: &config::Resilience,
    place: &Place,
    prefix: &str,
) -> Result<(), ConfigError> {
    let key = |name: &str| format!("{prefix}{name}");
    if let Some(retries) = resilience.retries.value() {
        check_range(
            u64::from(retries.attempts),
            1..=10,
            place,
            &key("retries.attempts"),
        )?;
        check_range(
            retries.backoff_ms,
            0..=MAX_MS,
            place,
            &key("retries.backoff_ms"),
        )?;
        if retries.on.is_empty() {
            return Err(place.error(
                Some(&key("retries.on")),
                "must list at least one of connect, timeout, 5xx",
            ));
        }
    }
    if let Some(ms) = resilience.hedge_after_ms.value() {
        check_range(*ms, 1..=MAX_MS, place, &key("hedge_after_ms"))?;
    }
    if let Some(cache) = resilience.cache.value() {
        check_range(cache.ttl_ms, 1..=MAX_MS, place, &key("cache.ttl_ms"))?;
        check_range(
            cache.stale_if_error_ms,
            0..=MAX_MS,
            place,
            &key("cache.stale_if_error_ms"),
        )?;
        check_range(
            cache.max_entries,
            1..=100_000,
            place,
            &key("cache.max_entries"),
        )?;
        lower_header_list(&cache.vary, place, &key("cache.vary"), true)?;
    }
    if let Some(breaker) = resilience.circuit_breaker.value() {
        check_range(
            u64::from(breaker.failures),
            1..=1000,
            place,
            &key("circuit_breaker.failures"),
        )?;
        check_range(
            breaker.open_ms,
            1..=MAX_MS,
            place,
            &key("circuit_breaker.open_ms"),
        )?;
    }
    Ok(())
}

fn check_name(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "\"{name}\" is not a valid name: use 1 to {MAX_NAME_LEN} of [a-z0-9_-]"
        ))
    }
}

fn check_range(
    value: u64,
    range: std::ops::RangeInclusive<u64>,
    place: &Place,
    key: &str,
) -> Result<u64, ConfigError> {
    if range.contains(&value) {
        Ok(value)
    } else {
        Err(place.error(
            Some(key),
            format!("must be between {} and {}", range.start(), range.end()),
        ))
    }
}

fn check_method(method: &str) -> Result<String, String> {
    let upper = method.to_ascii_uppercase();
    if !upper.is_empty() && upper.bytes().all(|b| b.is_ascii_uppercase() || b == b'-') {
        Ok(upper)
    } else {
        Err(format!("\"{method}\" is not an HTTP method"))
    }
}

/// Normalises a header name for forwarding or setting; refuses pseudo and reserved headers.
fn check_header_name(name: &str) -> Result<String, String> {
    let lower = name.to_ascii_lowercase();
    if !template::is_header_name(&lower) {
        return Err(format!("\"{name}\" is not a valid header name"));
    }
    if RESERVED_HEADERS.contains(&lower.as_str()) {
        return Err(format!(
            "header \"{name}\" is managed by Envoy and cannot be set or forwarded"
        ));
    }
    Ok(lower)
}

fn lower_header_list(
    names: &[String],
    place: &Place,
    key: &str,
    credentials_allowed: bool,
) -> Result<Vec<String>, ConfigError> {
    names
        .iter()
        .map(|name| {
            let lower = check_header_name(name).map_err(|why| place.error(Some(key), why))?;
            if !credentials_allowed && CREDENTIAL_HEADERS.contains(&lower.as_str()) {
                return Err(place.error(
                    Some(key),
                    format!(
                        "\"{lower}\" is a credential: list it in the forward_headers of each call that needs it"
                    ),
                ));
            }
            Ok(lower)
        })
        .collect()
}

/// Slots of the client inputs a route's templates read, and the names of its calls.
struct RouteInputs<'a> {
    captures: Vec<String>,
    query_params: Vec<String>,
    headers: Vec<String>,
    call_names: Vec<&'a str>,
    current_call: usize,
    /// The call being compiled has `for_each`, so `{item}` is allowed.
    item_allowed: bool,
    reads_body_fields: bool,
}

fn intern(list: &mut Vec<String>, name: &str) -> usize {
    match list.iter().position(|n| n == name) {
        Some(slot) => slot,
        None => {
            list.push(name.to_string());
            list.len() - 1
        }
    }
}

impl Resolve for RouteInputs<'_> {
    fn capture(&mut self, name: &str) -> Option<usize> {
        self.captures.iter().position(|n| n == name)
    }

    fn query(&mut self, name: &str) -> usize {
        intern(&mut self.query_params, name)
    }

    fn header(&mut self, name: &str) -> usize {
        intern(&mut self.headers, name)
    }

    fn call(&mut self, name: &str) -> Result<usize, String> {
        match self.call_names.iter().position(|n| *n == name) {
            Some(call) if call == self.current_call => {
                Err("a call cannot read its own response".to_string())
            }
            Some(call) => Ok(call),
            None => Err(format!("the route has no call named \"{name}\"")),
        }
    }

    fn item(&mut self) -> Result<(), String> {
        if self.item_allowed {
            Ok(())
        } else {
            Err("{item} needs for_each on the call".to_string())
        }
    }

    fn request_body_field(&mut self) {
        self.reads_body_fields = true;
    }
}

fn compile_route(
    route: &RouteConfig,
    defaults: &config::Defaults,
    place: &Place,
) -> Result<Route, ConfigError> {
    let pattern =
        PathPattern::parse(&route.path).map_err(|why| place.error(Some("match.path"), why))?;
    check_route_values(route, place)?;
    let methods = if route.methods.is_empty() {
        return Err(place.error(Some("match.methods"), "must list at least one method"));
    } else {
        route
            .methods
            .iter()
            .map(|m| check_method(m).map_err(|why| place.error(Some("match.methods"), why)))
            .collect::<Result<Vec<_>, _>>()?
    };
    let match_headers = route
        .match_headers
        .iter()
        .map(|(name, value)| {
            let lower = name.to_ascii_lowercase();
            let valid = lower == ":authority" || template::is_header_name(&lower);
            if valid {
                Ok((lower, value.clone()))
            } else {
                Err(place.error(
                    Some("match.headers"),
                    format!("\"{name}\" is not a valid header name"),
                ))
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    let deadline_ms = check_range(
        route.deadline_ms.unwrap_or(defaults.deadline_ms),
        1..=MAX_MS,
        place,
        "deadline_ms",
    )?;
    if route.calls.is_empty() {
        return Err(place.error(Some("calls"), "must list at least one call"));
    }
    let meta_key = match &route.response.meta {
        Some(key) if key.is_empty() => {
            return Err(place.error(
                Some("response.meta"),
                "must not be empty (use null to omit)",
            ))
        }
        Some(key) => Some(
            serde_json::to_string(key)
                .map_err(|e| place.error(Some("response.meta"), e.to_string()))?,
        ),
        None => None,
    };

    let mut inherited_forward = lower_header_list(
        &defaults.forward_headers,
        place,
        "defaults.forward_headers",
        false,
    )?;
    for name in lower_header_list(&route.forward_headers, place, "forward_headers", false)? {
        if !inherited_forward.contains(&name) {
            inherited_forward.push(name);
        }
    }

    let call_names: Vec<&str> = route.calls.iter().map(|c| c.name.as_str()).collect();
    let mut inputs = RouteInputs {
        captures: pattern.capture_names().to_vec(),
        query_params: Vec::new(),
        headers: Vec::new(),
        call_names: call_names.clone(),
        current_call: 0,
        item_allowed: false,
        reads_body_fields: false,
    };
    let mut calls = Vec::with_capacity(route.calls.len());
    for (index, call) in route.calls.iter().enumerate() {
        let call_place = place.call(&call.name);
        check_name(&call.name).map_err(|why| call_place.error(Some("name"), why))?;
        if call_names
            .get(..index)
            .is_some_and(|earlier| earlier.contains(&call.name.as_str()))
        {
            return Err(
                call_place.error(Some("name"), "another call of this route has the same name")
            );
        }
        if meta_key.as_deref() == serde_json::to_string(&call.name).ok().as_deref() {
            return Err(call_place.error(
                Some("name"),
                "clashes with the completeness object's key (response.meta)",
            ));
        }
        inputs.current_call = index;
        inputs.item_allowed = call.for_each.is_some();
        calls.push(compile_call(
            call,
            route,
            defaults,
            &inherited_forward,
            &mut inputs,
            &call_place,
        )?);
    }

    let dependencies: Vec<Vec<usize>> = calls.iter().map(|c| c.dependencies.clone()).collect();
    let order =
        graph::order(&dependencies, &call_names).map_err(|why| place.error(Some("calls"), why))?;
    for call in 0..calls.len() {
        let needed = calls.iter().any(|c| reads_body_of(c, call));
        if let Some(c) = calls.get_mut(call) {
            c.body_needed = needed;
        }
    }
    let response = compile_response_shape(route, &mut calls, place)?;
    let client_body = ClientBodyUse {
        needed: inputs.reads_body_fields
            || calls
                .iter()
                .any(|c| matches!(c.body, Some(BodyTemplate::Client { .. }))),
        parsed: inputs.reads_body_fields,
        max_bytes: check_range(
            route.max_body_bytes.unwrap_or(defaults.max_body_bytes),
            1..=MAX_BODY_BYTES,
            place,
            "max_body_bytes",
        )?,
    };

    Ok(Route {
        name: route.name.clone(),
        pattern,
        methods,
        match_headers,
        deadline_ms,
        expose_errors: route.expose_errors.unwrap_or(defaults.expose_errors),
        calls,
        order,
        query_params: inputs.query_params,
        headers: inputs.headers,
        meta_key,
        meta_name: route.response.meta.clone(),
        fields_param: route.fields_param.clone(),
        client_body,
        response,
        wait_for: compile_wait_for(route, defaults, place)?,
        max_inflight: match route
            .max_inflight
            .over(&config::Setting::from(defaults.max_inflight))
        {
            config::Setting::On(limit) => {
                Some(check_range(limit, 1..=1_000_000, place, "max_inflight")?)
            }
            _ => None,
        },
    })
}

fn compile_wait_for(
    route: &RouteConfig,
    defaults: &config::Defaults,
    place: &Place,
) -> Result<config::WaitFor, ConfigError> {
    let wait_for = route.wait_for.unwrap_or(defaults.wait_for);
    if let config::WaitFor::Count(count) = wait_for {
        if count > u64::try_from(route.calls.len()).unwrap_or(u64::MAX) {
            return Err(place.error(
                Some("wait_for"),
                format!(
                    "waits for {count} calls but the route has {}",
                    route.calls.len()
                ),
            ));
        }
    }
    Ok(wait_for)
}

/// The route's `response` block, and what it implies for the calls: output keys that must be
/// unique, and the upstream headers each call must copy.
fn compile_response_shape(
    route: &RouteConfig,
    calls: &mut [Call],
    place: &Place,
) -> Result<shape::ResponseShape, ConfigError> {
    let response = shape::compile_response(&route.response)
        .map_err(|(key, why)| place.error(Some(&key), why))?;
    let meta_key = route.response.meta.as_deref();
    check_meta_stays_the_filters(route, &response, place)?;
    for (index, call) in calls.iter().enumerate() {
        let call_place = place.call(&call.name);
        let valid_key = (1..=MAX_NAME_LEN).contains(&call.output_key.len())
            && call
                .output_key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !valid_key {
            return Err(call_place.error(
                Some("as"),
                format!(
                    "\"{}\" is not a valid key: use 1 to {MAX_NAME_LEN} of [A-Za-z0-9_-]",
                    call.output_key
                ),
            ));
        }
        if call.keyed {
            if call.join.is_some() {
                return Err(call_place.error(
                    Some("as"),
                    "a joined call shows inside its target: as has no effect",
                ));
            }
            if response.layout == config::Layout::Concat {
                return Err(call_place.error(
                    Some("as"),
                    "the concat layout has no keys: as has no effect",
                ));
            }
        }
        if meta_key == Some(call.output_key.as_str()) {
            return Err(call_place.error(
                Some("as"),
                "clashes with the completeness object's key (response.meta)",
            ));
        }
        let clash = calls.iter().take(index).find(|earlier| {
            earlier.output_key == call.output_key
                || earlier.name == call.output_key
                || earlier.output_key == call.name
        });
        if let Some(earlier) = clash {
            return Err(call_place.error(
                Some("as"),
                format!(
                    "output key \"{}\" is already used by call \"{}\"",
                    call.output_key, earlier.name
                ),
            ));
        }
    }
    for (name, value) in &response.headers {
        let key = format!("response.headers.{name}");
        check_response_header(name).map_err(|why| place.error(Some(&key), why))?;
        if value.contains(['\r', '\n', '\0']) {
            return Err(place.error(Some(&key), "must not contain CR, LF or NUL"));
        }
    }
    for from in &route.response.headers_from {
        let key = "response.headers_from";
        let name = check_response_header(&from.name).map_err(|why| place.error(Some(key), why))?;
        let call = calls
            .iter_mut()
            .find(|c| c.name == from.call)
            .ok_or_else(|| {
                place.error(
                    Some(key),
                    format!("the route has no call named \"{}\"", from.call),
                )
            })?;
        if !call.copy_headers.contains(&name) {
            call.copy_headers.push(name);
        }
    }
    Ok(response)
}

/// The completeness object's key belongs to the filter (SPEC §4): a derived field written
/// there could never show, so it is refused. (Call names and `as` are checked with the output
/// keys; `join.as` writes inside an array, never at the top; in `merge`, a body's top-level
/// key of that name, from upstream, a `rename` or a `fallback`, is dropped with a debug log.)
fn check_meta_stays_the_filters(
    route: &RouteConfig,
    response: &shape::ResponseShape,
    place: &Place,
) -> Result<(), ConfigError> {
    let Some(meta) = route.response.meta.as_deref() else {
        return Ok(());
    };
    let clash = format!(
        "writes into \"{meta}\", the completeness object's key (response.meta), which is the filter's own"
    );
    for ((out, _), derived) in route.response.derive.iter().zip(&response.derive) {
        if top_key(&derived.out).as_deref() == Some(meta) {
            return Err(place.error(Some(&format!("response.derive.{out}")), clash));
        }
    }
    Ok(())
}

/// The key a path writes at the top of an object, if it writes into one.
fn top_key(path: &JsonPath) -> Option<String> {
    let mut probe = serde_json::Value::Object(serde_json::Map::new());
    path.insert(&mut probe, serde_json::Value::Null);
    probe.as_object()?.keys().next().cloned()
}

/// A header the configuration may add to the client's response.
fn check_response_header(name: &str) -> Result<String, String> {
    let lower = check_header_name(name)?;
    if shape::CONTRACT_HEADERS.contains(&lower.as_str()) {
        return Err(format!("\"{lower}\" is set by the filter itself"));
    }
    Ok(lower)
}

/// Whether `reader` needs the parsed body of call `read`.
fn reads_body_of(reader: &Call, read: usize) -> bool {
    reader
        .placeholders()
        .any(|p| matches!(p.source, Source::Call { call, .. } if call == read))
        || reader.fan_out.as_ref().is_some_and(|f| f.source == read)
        || reader.join.as_ref().is_some_and(|j| j.target == read)
}

fn compile_call(
    call: &CallConfig,
    route: &RouteConfig,
    defaults: &config::Defaults,
    inherited_forward: &[String],
    inputs: &mut RouteInputs<'_>,
    place: &Place,
) -> Result<Call, ConfigError> {
    if call.cluster.is_empty() || call.cluster.chars().any(char::is_control) {
        return Err(place.error(Some("cluster"), "must be the name of an Envoy cluster"));
    }
    let method = check_method(&call.method).map_err(|why| place.error(Some("method"), why))?;
    if !call.path.starts_with('/') {
        return Err(place.error(Some("path"), "must start with \"/\""));
    }
    let path = Template::parse(&call.path, inputs).map_err(|why| place.error(Some("path"), why))?;
    if path
        .literals()
        .any(|text| text.contains('#') || text.chars().any(|c| c.is_whitespace() || c.is_control()))
    {
        return Err(place.error(
            Some("path"),
            "must not contain whitespace, control characters or '#'",
        ));
    }

    let mut headers = Vec::with_capacity(call.headers.len());
    for (name, value) in &call.headers {
        let key = format!("headers.{name}");
        let lower = check_header_name(name).map_err(|why| place.error(Some(&key), why))?;
        let template =
            Template::parse(value, inputs).map_err(|why| place.error(Some(&key), why))?;
        let defaults = template.placeholders().filter_map(|p| p.default.as_deref());
        if template
            .literals()
            .chain(defaults)
            .any(|t| t.contains(['\r', '\n', '\0']))
        {
            return Err(place.error(Some(&key), "must not contain CR, LF or NUL"));
        }
        headers.push((lower, template));
    }

    let mut forward_names = inherited_forward.to_vec();
    for name in lower_header_list(&call.forward_headers, place, "forward_headers", true)? {
        if !forward_names.contains(&name) {
            forward_names.push(name);
        }
    }
    let forward: Vec<(String, usize)> = forward_names
        .into_iter()
        .filter(|name| !headers.iter().any(|(set, _)| set == name))
        .map(|name| {
            let slot = inputs.header(&name);
            (name, slot)
        })
        .collect();

    let authority = call
        .authority
        .clone()
        .unwrap_or_else(|| call.cluster.clone());
    if authority.is_empty()
        || authority
            .chars()
            .any(|c| c.is_control() || c.is_whitespace())
    {
        return Err(place.error(
            Some("authority"),
            "must be a host name (optionally with a port)",
        ));
    }
    let timeout_ms = check_range(
        call.timeout_ms
            .or(route.timeout_ms)
            .unwrap_or(defaults.timeout_ms),
        1..=MAX_MS,
        place,
        "timeout_ms",
    )?;
    let max_body_bytes = check_range(
        call.max_body_bytes
            .or(route.max_body_bytes)
            .unwrap_or(defaults.max_body_bytes),
        1..=MAX_BODY_BYTES,
        place,
        "max_body_bytes",
    )?;
    if call.required && call.fallback.is_some() {
        return Err(place.error(
            Some("fallback"),
            "a required call never uses a fallback: remove one of the two",
        ));
    }
    let fallback = match &call.fallback {
        Some(value) => Some(Fallback {
            json: serde_json::to_vec(value)
                .map_err(|e| place.error(Some("fallback"), e.to_string()))?,
            value: value.clone(),
        }),
        None => None,
    };

    let body = match &call.body {
        Some(value) => Some(
            BodyTemplate::compile(value, inputs).map_err(|why| place.error(Some("body"), why))?,
        ),
        None => None,
    };
    let fan_out = match &call.for_each {
        Some(text) => Some(compile_fan_out(text, call, route, defaults, inputs, place)?),
        None => {
            if call.max_fan_out.is_some() {
                return Err(
                    place.error(Some("max_fan_out"), "only applies to a call with for_each")
                );
            }
            None
        }
    };
    let join = match (&call.join, &fan_out) {
        (Some(join), Some(fan_out)) => Some(compile_join(join, fan_out, inputs, place)?),
        (Some(_), None) => {
            return Err(place.error(Some("join"), "only applies to a call with for_each"))
        }
        (None, _) => None,
    };

    let mut dependencies = Vec::new();
    for name in &call.after {
        let dependency = inputs
            .call(name)
            .map_err(|why| place.error(Some("after"), why))?;
        if !dependencies.contains(&dependency) {
            dependencies.push(dependency);
        }
    }
    let resilience = compile_resilience(
        call, route, defaults, &method, &headers, &forward, inputs, place,
    )?;
    let mut compiled = Call {
        name: call.name.clone(),
        cluster: call.cluster.clone(),
        authority,
        path,
        headers,
        forward,
        timeout_ms,
        required: call.required,
        fallback,
        format: call.format,
        max_body_bytes,
        dependencies,
        body_needed: false,
        body,
        may_repeat: call.unsafe_repeat || IDEMPOTENT_METHODS.contains(&method.as_str()),
        shape: CallShape::compile(call).map_err(|(key, why)| place.error(Some(&key), why))?,
        resilience,
        output_key: call.output_key.clone().unwrap_or_else(|| call.name.clone()),
        keyed: call.output_key.is_some(),
        copy_headers: Vec::new(),
        method,
        fan_out,
        join,
    };
    let implied: Vec<usize> = compiled
        .placeholders()
        .filter_map(|p| match p.source {
            Source::Call { call, .. } => Some(call),
            _ => None,
        })
        .chain(compiled.fan_out.as_ref().map(|f| f.source))
        .collect();
    for dependency in implied {
        if !compiled.dependencies.contains(&dependency) {
            compiled.dependencies.push(dependency);
        }
    }
    if compiled.fan_out.is_some() && !compiled.placeholders().any(|p| p.source == Source::Item) {
        return Err(place.error(
            Some("for_each"),
            "the call never uses {item}, so every item would make the same call",
        ));
    }
    Ok(compiled)
}

/// The call's SPEC §6 options after inheritance. Options a call sets itself must make sense
/// for it; inherited ones that do not apply (retrying a POST, caching a POST) are dropped.
#[allow(clippy::too_many_arguments)]
fn compile_resilience(
    call: &CallConfig,
    route: &RouteConfig,
    defaults: &config::Defaults,
    method: &str,
    headers: &[(String, Template)],
    forward: &[(String, usize)],
    inputs: &mut RouteInputs<'_>,
    place: &Place,
) -> Result<CallResilience, ConfigError> {
    let own = &call.resilience;
    let merged = own.over(&route.resilience.over(&defaults.resilience));
    let repeatable = call.unsafe_repeat || IDEMPOTENT_METHODS.contains(&method);
    let explicit = |setting: &config::Setting<_>| matches!(setting, config::Setting::On(_));
    let not_repeatable = |key: &str| {
        place.error(
            Some(key),
            format!("{method} is not idempotent: set \"unsafe\": true if sending it twice is safe"),
        )
    };
    if !repeatable && explicit(&own.retries) {
        return Err(not_repeatable("retries"));
    }
    if !repeatable && matches!(own.hedge_after_ms, config::Setting::On(_)) {
        return Err(not_repeatable("hedge_after_ms"));
    }
    // Values were range-checked at the level that set them (check_resilience).
    check_resilience(own, place, "")?;
    let retries = merged
        .retries
        .value()
        .filter(|_| repeatable)
        .map(|retries| RetryPolicy {
            attempts: retries.attempts,
            backoff_ms: retries.backoff_ms,
            on: retries.on.clone(),
        });
    let hedge_after_ms = merged
        .hedge_after_ms
        .value()
        .filter(|_| repeatable)
        .copied();
    let cacheable = matches!(method, "GET" | "HEAD");
    if !cacheable && matches!(own.cache, config::Setting::On(_)) {
        return Err(place.error(
            Some("cache"),
            format!("only GET and HEAD answers are cached, not {method}"),
        ));
    }
    let cache = match merged.cache.value().filter(|_| cacheable) {
        Some(cache) => Some(compile_cache(
            cache, call, route, headers, forward, inputs, place,
        )?),
        None => None,
    };
    let breaker = merged.circuit_breaker.value().map(|breaker| BreakerPolicy {
        failures: breaker.failures,
        open_ms: breaker.open_ms,
    });
    Ok(CallResilience {
        retries,
        hedge_after_ms,
        cache,
        breaker,
    })
}

/// The cache of one call. A credential the call sends must be part of the key, or one user's
/// answer could be served to another.
fn compile_cache(
    cache: &config::CacheConfig,
    call: &CallConfig,
    route: &RouteConfig,
    headers: &[(String, Template)],
    forward: &[(String, usize)],
    inputs: &mut RouteInputs<'_>,
    place: &Place,
) -> Result<CacheSpec, ConfigError> {
    let max_entries = cache.max_entries;
    let vary = lower_header_list(&cache.vary, place, "cache.vary", true)?;
    let credential_names: Vec<&str> = forward
        .iter()
        .map(|(name, _)| name.as_str())
        .chain(headers.iter().map(|(name, _)| name.as_str()))
        .chain(
            headers
                .iter()
                .flat_map(|(_, t)| t.placeholders())
                .filter_map(|p| match p.source {
                    Source::Header(slot) => inputs.headers.get(slot).map(String::as_str),
                    _ => None,
                }),
        )
        .filter(|name| CREDENTIAL_HEADERS.contains(name))
        .collect();
    if let Some(missing) = credential_names
        .iter()
        .find(|name| !vary.iter().any(|v| v == *name))
    {
        return Err(place.error(
            Some("cache.vary"),
            format!("the call sends \"{missing}\": list it in vary, or cached answers would cross users"),
        ));
    }
    Ok(CacheSpec {
        policy: CachePolicy {
            ttl_ms: cache.ttl_ms,
            stale_if_error_ms: cache.stale_if_error_ms,
            max_entries,
            namespace: format!("ga/cache/{}/{}/", route.name, call.name),
        },
        vary_slots: vary.iter().map(|name| inputs.header(name)).collect(),
    })
}

/// `for_each: "calls.X.path[*].field"`.
fn compile_fan_out(
    text: &str,
    call: &CallConfig,
    route: &RouteConfig,
    defaults: &config::Defaults,
    inputs: &mut RouteInputs<'_>,
    place: &Place,
) -> Result<FanOut, ConfigError> {
    let key = Some("for_each");
    let Some(reference) = text.strip_prefix("calls.") else {
        return Err(place.error(
            key,
            "must read an earlier call: \"calls.<call>.<path>[*].<field>\"",
        ));
    };
    let (name, path) = reference.split_once('.').unwrap_or((reference, ""));
    let source = inputs.call(name).map_err(|why| place.error(key, why))?;
    let path = JsonPath::parse(path).map_err(|why| place.error(key, why))?;
    if !path.has_wildcard() {
        return Err(place.error(key, "needs [*] to say which array to take the items from"));
    }
    let max_items = check_range(
        call.max_fan_out
            .or(route.max_fan_out)
            .unwrap_or(defaults.max_fan_out),
        1..=MAX_FAN_OUT,
        place,
        "max_fan_out",
    )?;
    Ok(FanOut {
        source,
        path,
        max_items: usize::try_from(max_items).unwrap_or(usize::MAX),
    })
}

fn compile_join(
    join: &JoinConfig,
    fan_out: &FanOut,
    inputs: &mut RouteInputs<'_>,
    place: &Place,
) -> Result<Join, ConfigError> {
    let (target_name, into) = join
        .into
        .split_once('.')
        .unwrap_or((join.into.as_str(), ""));
    let target = inputs
        .call(target_name)
        .map_err(|why| place.error(Some("join.into"), why))?;
    if target != fan_out.source {
        return Err(place.error(
            Some("join.into"),
            "must be in the body of the call for_each reads (\"<that call>.<path to array>\")",
        ));
    }
    let plain_path = |text: &str, key: &str| -> Result<JsonPath, ConfigError> {
        let path = JsonPath::parse(text).map_err(|why| place.error(Some(key), why))?;
        if path.has_wildcard() || text.is_empty() {
            return Err(place.error(Some(key), "must be a non-empty dot path without [*]"));
        }
        Ok(path)
    };
    if join.key.is_empty() {
        return Err(place.error(Some("join.as"), "must be a non-empty key"));
    }
    Ok(Join {
        target,
        into: plain_path(into, "join.into")?,
        on: plain_path(&join.on, "join.on")?,
        key: join.key.clone(),
    })
}
