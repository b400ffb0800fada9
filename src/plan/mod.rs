//! The compiled plan: the configuration checked once and turned into what each request needs,
//! immutable and shared by every request of the VM. Nothing is re-parsed per request.

mod graph;
pub mod matcher;
pub mod template;

use crate::config::{self, CallConfig, Config, ConfigError, Format, Place, RouteConfig};
use matcher::{Capture, PathPattern};
use serde_json::Value;
use std::rc::Rc;
use template::{Resolve, Source, Template};

/// Upper bound of every `*_ms` setting: Envoy's call timeout is a 32-bit millisecond count.
pub const MAX_MS: u64 = 86_400_000;
pub const MAX_BODY_BYTES: u64 = 1 << 30;
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

#[derive(Debug)]
pub struct Plan {
    pub routes: Vec<Rc<Route>>,
}

#[derive(Debug)]
pub struct Route {
    pub name: String,
    pattern: PathPattern,
    methods: Vec<String>,
    match_headers: Vec<(String, String)>,
    pub deadline_ms: u64,
    pub expose_errors: bool,
    pub calls: Vec<Call>,
    /// Calls in an order where each follows its dependencies.
    pub order: Vec<usize>,
    /// Query parameters the templates read, by slot.
    pub query_params: Vec<String>,
    /// Request headers this route reads (templates and forwarding), lowercase, by slot.
    pub headers: Vec<String>,
    /// Key of the completeness object, JSON-encoded with its quotes; `None` to omit it.
    pub meta_key: Option<String>,
}

#[derive(Debug)]
pub struct Call {
    pub name: String,
    pub cluster: String,
    pub method: String,
    pub authority: String,
    pub path: Template,
    pub headers: Vec<(String, Template)>,
    /// Client headers copied to this call: name and slot in `Route::headers`.
    pub forward: Vec<(String, usize)>,
    pub timeout_ms: u64,
    pub required: bool,
    pub fallback: Option<Fallback>,
    pub format: Format,
    pub max_body_bytes: u64,
    pub dependencies: Vec<usize>,
    /// A later call reads values from this call's body, so it is parsed, not only validated.
    pub body_needed: bool,
}

#[derive(Debug)]
pub struct Fallback {
    pub value: Value,
    /// The value serialised once, ready to be spliced into responses.
    pub json: Vec<u8>,
}

/// A route that matched a request, with its captures in the order of the route's pattern.
#[derive(Debug)]
pub struct Matched {
    pub route: Rc<Route>,
    pub captures: Vec<Capture>,
}

impl Plan {
    /// Reads and checks a configuration; the error names route, call and key.
    pub fn compile(bytes: &[u8]) -> Result<Plan, ConfigError> {
        Plan::from_config(config::parse(bytes)?)
    }

    pub fn from_config(config: Config) -> Result<Plan, ConfigError> {
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

    /// The first route matching the request; `header` reads a request header by name and is
    /// only asked for the headers of `match.headers`. `path` may carry a query string.
    pub fn find(
        &self,
        method: &str,
        path: &str,
        header: &mut dyn FnMut(&str) -> Option<String>,
    ) -> Option<Matched> {
        let (path, _) = split_query(path);
        self.routes.iter().find_map(|route| {
            if !route.methods.iter().any(|m| m == method) {
                return None;
            }
            let captures = route.pattern.matches(path)?;
            let headers_match = route
                .match_headers
                .iter()
                .all(|(name, value)| header(name).as_deref() == Some(value.as_str()));
            headers_match.then(|| Matched {
                route: Rc::clone(route),
                captures,
            })
        })
    }

    pub fn call_count(&self) -> usize {
        self.routes.iter().map(|r| r.calls.len()).sum()
    }
}

/// Splits `/path?query` into the path and the query (empty when there is none).
pub fn split_query(path: &str) -> (&str, &str) {
    let path = path.split_once('#').map_or(path, |(p, _)| p);
    path.split_once('?').unwrap_or((path, ""))
}

impl Route {
    /// The match rules, for the log line written at configure time.
    pub fn describe_match(&self) -> String {
        format!("{} {}", self.methods.join(","), self.pattern.text())
    }
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
}

fn compile_route(
    route: &RouteConfig,
    defaults: &config::Defaults,
    place: &Place,
) -> Result<Route, ConfigError> {
    let pattern =
        PathPattern::parse(&route.path).map_err(|why| place.error(Some("match.path"), why))?;
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
        let needed = calls.iter().any(|c| {
            c.path
                .placeholders()
                .chain(c.headers.iter().flat_map(|(_, t)| t.placeholders()))
                .any(|p| matches!(p.source, Source::Call { call: read, .. } if read == call))
        });
        if let Some(c) = calls.get_mut(call) {
            c.body_needed = needed;
        }
    }

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
    })
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
        if template.literals().any(|t| t.contains(['\r', '\n', '\0'])) {
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
    let forward = forward_names
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

    let mut dependencies = Vec::new();
    for name in &call.after {
        let dependency = inputs
            .call(name)
            .map_err(|why| place.error(Some("after"), why))?;
        if !dependencies.contains(&dependency) {
            dependencies.push(dependency);
        }
    }
    for placeholder in path
        .placeholders()
        .chain(headers.iter().flat_map(|(_, t)| t.placeholders()))
    {
        if let Source::Call { call, .. } = placeholder.source {
            if !dependencies.contains(&call) {
                dependencies.push(call);
            }
        }
    }

    Ok(Call {
        name: call.name.clone(),
        cluster: call.cluster.clone(),
        method,
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
    })
}

#[cfg(test)]
mod tests;
