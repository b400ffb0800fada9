//! The compiled plan: the configuration checked once and turned into what each request needs,
//! immutable and shared by every request of the VM. Nothing is re-parsed per request.

pub mod body;
mod compile;
mod graph;
pub mod matcher;
pub mod template;

use crate::config::{self, ConfigError, Format};
use crate::json_path::JsonPath;
use crate::resilience::breaker::BreakerPolicy;
use crate::resilience::cache::CachePolicy;
pub use crate::resilience::retry::RetryPolicy;
use crate::shape::{CallShape, ResponseShape};
use body::BodyTemplate;
use matcher::{Capture, PathPattern};
use serde_json::Value;
use std::rc::Rc;
use template::{Placeholder, Template};

pub use compile::{MAX_BODY_BYTES, MAX_FAN_OUT, MAX_MS};

/// A call of a route: its place in [`Route::calls`], in configuration order. Calls refer to
/// each other (dependencies, `for_each`, `join`) by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CallId(usize);

impl CallId {
    /// The call at `index` in [`Route::calls`].
    pub const fn new(index: usize) -> CallId {
        CallId(index)
    }

    /// Its place in [`Route::calls`] (and in every per-call list of a request).
    pub const fn index(self) -> usize {
        self.0
    }
}

/// Tests compare ids with plain indexes.
#[cfg(test)]
impl PartialEq<usize> for CallId {
    fn eq(&self, index: &usize) -> bool {
        self.0 == *index
    }
}

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
    pub order: Vec<CallId>,
    /// Query parameters the templates read, by slot.
    pub query_params: Vec<String>,
    /// Request headers this route reads (templates and forwarding), lowercase, by slot.
    pub headers: Vec<String>,
    /// Key of the completeness object, JSON-encoded with its quotes; `None` to omit it.
    pub meta_key: Option<String>,
    /// The same key as text, to keep upstream keys of that name out of the answer (SPEC §4).
    pub meta_name: Option<String>,
    /// Query parameter that selects calls (SPEC §5 selective fetching); `None`: disabled.
    pub fields_param: Option<String>,
    pub client_body: ClientBodyUse,
    pub response: ResponseShape,
    pub wait_for: config::WaitFor,
    /// Most aggregations of this route in flight per worker; more are answered 503.
    pub max_inflight: Option<u64>,
}

/// What the route needs from the client's body (SPEC §3.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientBodyUse {
    /// Some call forwards the body or reads fields of it: wait for it before dispatching.
    pub needed: bool,
    /// Some template reads `request.body.<field>`: parse it as JSON once.
    pub parsed: bool,
    /// Larger bodies are answered with 413.
    pub max_bytes: u64,
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
    /// Calls that must finish first: implied by `{calls.…}` templates, `for_each` and
    /// `join`, or listed in `after`.
    pub dependencies: Vec<CallId>,
    /// A later call reads values from this call's body, so it is parsed, not only validated.
    pub body_needed: bool,
    pub body: Option<BodyTemplate>,
    pub fan_out: Option<FanOut>,
    pub join: Option<Join>,
    /// Retries and hedging (SPEC §6) may send this call more than once: its method is
    /// idempotent, or the configuration says `"unsafe": true`.
    pub may_repeat: bool,
    /// `extract`, `select`, `omit`, `rename`; `None` keeps the upstream bytes as they are.
    pub shape: Option<CallShape>,
    /// The key the client sees: `as`, or the call's name.
    pub output_key: String,
    /// The call sets `as` (in the `merge` layout its body then goes under that key).
    pub keyed: bool,
    /// Upstream response headers copied to the client's response (`headers_from`).
    pub copy_headers: Vec<String>,
    pub resilience: CallResilience,
}

/// SPEC §6 options of one call, after inheritance.
#[derive(Debug, Default)]
pub struct CallResilience {
    pub retries: Option<RetryPolicy>,
    pub hedge_after_ms: Option<u64>,
    pub cache: Option<CacheSpec>,
    pub breaker: Option<BreakerPolicy>,
    /// `coalesce` (SPEC §6): `None` when off, or when the call may not coalesce (a method
    /// other than GET and HEAD, a body).
    pub coalesce: Option<CoalesceSpec>,
}

#[derive(Debug)]
pub struct CacheSpec {
    pub policy: CachePolicy,
    /// Slots in `Route::headers` of the `vary` headers, in order.
    pub vary_slots: Vec<usize>,
}

/// How a coalescing call's requests are keyed (SPEC §6 `coalesce`).
#[derive(Debug)]
pub struct CoalesceSpec {
    /// The `vary` headers of the call's cache (none without a cache), lowercase, each with its
    /// slot in `Route::headers`: their names and the client's values are part of the key.
    pub vary: Vec<(String, usize)>,
}

impl Call {
    /// Every placeholder of the call: path, headers and body.
    pub fn placeholders(&self) -> impl Iterator<Item = &Placeholder> {
        let body = self.body.iter().flat_map(BodyTemplate::placeholders);
        self.path
            .placeholders()
            .chain(self.headers.iter().flat_map(|(_, t)| t.placeholders()))
            .chain(body)
    }

    /// Answers are parsed, not only validated: read by later calls, joined into another, or
    /// reshaped.
    pub fn parses_answers(&self) -> bool {
        self.body_needed || self.join.is_some() || self.shape.is_some()
    }
}

/// `for_each` (SPEC §3.5): one call per distinct value found at `path` in `source`'s body.
#[derive(Debug)]
pub struct FanOut {
    pub source: CallId,
    pub path: JsonPath,
    pub max_items: usize,
}

/// `join`: each element of the array at `into` (in the `for_each` source's body) whose `on`
/// value equals an item gets that item's result under `key`.
#[derive(Debug)]
pub struct Join {
    pub target: CallId,
    pub into: JsonPath,
    pub on: JsonPath,
    pub key: String,
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
    /// The route's place in [`Plan::routes`]: its stats and `max_inflight` count.
    pub index: usize,
    /// Captures of `match.path`, in the route's order.
    pub captures: Vec<Capture>,
}

impl Plan {
    /// Reads and checks a configuration; the error names route, call and key.
    pub fn compile(bytes: &[u8]) -> Result<Plan, ConfigError> {
        Plan::from_config(config::parse(bytes)?)
    }

    pub fn from_config(config: config::Config) -> Result<Plan, ConfigError> {
        compile::plan(&config)
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
        self.routes.iter().enumerate().find_map(|(index, route)| {
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
                index,
                captures,
            })
        })
    }

    /// A cheap first look at a path, before anything else is read: false when no route can
    /// match it, because every route starts with a literal segment the path does not have.
    pub fn may_match(&self, path: &str) -> bool {
        let first = path
            .trim_start_matches('/')
            .split(['/', '?'])
            .next()
            .unwrap_or("");
        self.routes.iter().any(|route| {
            route
                .pattern
                .leading_literal()
                .is_none_or(|literal| literal == first)
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

    pub fn call_index(&self, name: &str) -> Option<CallId> {
        self.calls.iter().position(|c| c.name == name).map(CallId)
    }

    /// The call `id` names.
    pub fn call(&self, id: CallId) -> Option<&Call> {
        self.calls.get(id.0)
    }

    /// Every call with its id, in configuration order.
    pub fn calls(&self) -> impl Iterator<Item = (CallId, &Call)> {
        self.calls.iter().enumerate().map(|(i, c)| (CallId(i), c))
    }

    /// Backoffs, hedges and coalesced waits need the worker's timer, and so does the wait for
    /// the client's body, which the route deadline ends (SPEC §3.4) even when no byte of it
    /// ever comes.
    pub fn needs_timers(&self) -> bool {
        self.client_body.needed
            || self.calls.iter().any(|c| {
                // A coalesced attempt's own timeout is kept by a wake-up, not by Envoy.
                c.resilience.hedge_after_ms.is_some()
                    || c.resilience.coalesce.is_some()
                    || c.resilience
                        .retries
                        .as_ref()
                        .is_some_and(|r| r.backoff_ms > 0)
            })
    }
}

#[cfg(test)]
mod tests;
