//! The compiled plan: the configuration checked once and turned into what each request needs,
//! immutable and shared by every request of the VM. Nothing is re-parsed per request.

pub mod body;
mod compile;
pub mod condition;
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
use condition::Condition;
use matcher::{Capture, PathPattern};
use serde_json::Value;
use std::rc::Rc;
use template::{Placeholder, Template};

pub use compile::{MAX_BATCH, MAX_BODY_BYTES, MAX_FAN_OUT, MAX_MS};

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

/// A checked configuration (SPEC §2): its routes, each compiled once.
///
/// Made by [`Plan::compile`] when the filter is configured, then shared read-only by every
/// request of the VM: [`Plan::may_match`] and [`Plan::find`] pick a request's route, and the
/// route drives a [`Gather`](crate::gather::Gather).
#[derive(Debug)]
pub struct Plan {
    /// In configuration order, the order [`Plan::find`] tries them in; at least one, with
    /// distinct names.
    pub routes: Vec<Rc<Route>>,
}

/// One route (SPEC §2.2): which client requests it takes, and the calls that answer them.
#[derive(Debug)]
pub struct Route {
    /// `name`: 1 to 64 of `[a-z0-9_-]`, unique in the plan; names the route in stats, logs
    /// and errors.
    pub name: String,
    pattern: PathPattern,
    methods: Vec<String>,
    match_headers: Vec<(String, String)>,
    /// The route deadline in milliseconds (1 to [`MAX_MS`]): the whole aggregation, from the
    /// client request's headers to the answer, including the wait for the client's body. No
    /// attempt outlives it; a call not dispatched by then fails with `deadline`.
    pub deadline_ms: u64,
    /// Show upstream and Envoy text (`detail`) in `_meta.errors` and error bodies (SPEC §4);
    /// off by default.
    pub expose_errors: bool,
    /// The calls, in configuration order (at least one): a [`CallId`] is an index into this
    /// list, and the answer shows the calls in this order.
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
    /// What the route needs from the client's body (SPEC §3.4).
    pub client_body: ClientBodyUse,
    /// Route-level shaping of the answer (SPEC §5).
    pub response: ResponseShape,
    /// How many successes answer the request before every call is done (SPEC §6 `wait_for`).
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

/// One upstream call of a route (SPEC §2.3), with every inherited setting resolved (defaults
/// → route → call, SPEC §2.1).
#[derive(Debug)]
pub struct Call {
    /// `name`: 1 to 64 of `[a-z0-9_-]`, unique in the route; names the call in `_meta`, stats,
    /// templates (`{calls.<name>.…}`) and errors.
    pub name: String,
    /// The Envoy cluster the call is sent to (not checked at configure time: an unknown
    /// cluster fails the call with `dispatch`). Shared with every request of the call, as are
    /// `method`, `authority` and the header names below: a request copies none of them.
    pub cluster: Rc<str>,
    /// The HTTP method, upper-case (`GET` by default).
    pub method: Rc<str>,
    /// `:authority` of the call: `authority`, or the cluster's name.
    pub authority: Rc<str>,
    /// `:path` of the call, starting with `/`: a template rendered per request (SPEC §3.1).
    pub path: Template,
    /// Headers the call sets: lowercase name, and a value template (SPEC §3.1; never CR, LF or
    /// NUL). Never a header Envoy manages (`host`, `content-length`, …).
    pub headers: Vec<(Rc<str>, Template)>,
    /// Client headers copied to this call: lowercase name and slot in [`Route::headers`]
    /// (inherited `forward_headers`, then the call's own, less the headers the call sets).
    pub forward: Vec<(Rc<str>, usize)>,
    /// The timeout of each attempt in milliseconds (1 to [`MAX_MS`]), cut to what is left of
    /// the route deadline when the attempt is sent; running out fails the attempt with
    /// `timeout`.
    pub timeout_ms: u64,
    /// A failure answers the client at once with an error (SPEC §4) instead of leaving the
    /// call out of a partial answer.
    pub required: bool,
    /// What stands in for the body of this optional call when it fails.
    pub fallback: Option<Fallback>,
    /// How the upstream body is read: JSON, or UTF-8 text turned into a JSON string.
    pub format: Format,
    /// The largest upstream body accepted, in bytes (1 to [`MAX_BODY_BYTES`]); a larger one
    /// fails the attempt with `too_large`, unread.
    pub max_body_bytes: u64,
    /// Calls that must settle first (ids into [`Route::calls`]), each once: implied by
    /// `{calls.…}` templates, `when`, `for_each` and `join`, or listed in `after`.
    pub dependencies: Vec<CallId>,
    /// A later call reads values from this call's body, so it is parsed, not only validated.
    pub body_needed: bool,
    /// The request body the call sends, if any (SPEC §3.4).
    pub body: Option<BodyTemplate>,
    /// `for_each`: one request per item instead of one (SPEC §3.5).
    pub fan_out: Option<FanOut>,
    /// A batch join (SPEC §3.5): the keys go out in chunks, the answers are joined by key.
    pub batch: Option<Batch>,
    /// `join` (SPEC §3.5), with `fan_out` or `batch`: where the results go, into the source's
    /// body instead of under the call's own key.
    pub join: Option<Join>,
    /// `when` (SPEC §3.6): the call is made only if this holds; otherwise it is skipped.
    pub when: Option<Condition>,
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
    /// Retries, hedging, cache and circuit breaker (SPEC §6).
    pub resilience: CallResilience,
}

/// SPEC §6 options of one call, after inheritance. Retries and hedging are `None` for a call
/// that may not be sent twice ([`Call::may_repeat`]), caching for anything but `GET` and
/// `HEAD`.
#[derive(Debug, Default)]
pub struct CallResilience {
    /// Send a failed request again; `None`: one attempt (and perhaps a hedge).
    pub retries: Option<RetryPolicy>,
    /// Milliseconds after a request's first attempt went out before a second, identical one
    /// is sent while the first is still out (at most one hedge; the first success wins).
    pub hedge_after_ms: Option<u64>,
    /// Answers served from, and saved to, the shared response cache.
    pub cache: Option<CacheSpec>,
    /// The circuit breaker of the call's cluster, shared by every route and worker.
    pub breaker: Option<BreakerPolicy>,
    /// `coalesce` (SPEC §6): `None` when off, or when the call may not coalesce (a method
    /// other than GET and HEAD, a body).
    pub coalesce: Option<CoalesceSpec>,
}

/// `cache` (SPEC §6) of one call.
#[derive(Debug)]
pub struct CacheSpec {
    /// Freshness, staleness, size and the call's key space.
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

    /// Everything the call reads for this request: its placeholders, then the references of
    /// its `when`. A `{calls.X…}` among them makes X a dependency.
    pub fn references(&self) -> impl Iterator<Item = &Placeholder> {
        let when = self.when.iter().flat_map(Condition::references);
        self.placeholders().chain(when)
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
    /// The earlier call whose body holds the items.
    pub source: CallId,
    /// Where the items are in that body: a path with `[*]`; items are its distinct scalars.
    pub path: JsonPath,
    /// The most distinct items the call may have (1 to [`MAX_FAN_OUT`]); more fail the call
    /// with `too_many_items`, nothing sent.
    pub max_items: usize,
}

/// A batch join (SPEC §3.5): the distinct keys found at `keys` in `source`'s body (the join's
/// target) are sent `max_keys` at a time through the call's [`template::Source::Batch`]
/// placeholder, in at most `max_requests` parallel requests; each key's result is the element
/// of its chunk's answer (an array, after the call's own transforms) whose `matches` value
/// equals it.
#[derive(Debug)]
pub struct Batch {
    /// The call whose array the keys come from: the join's target.
    pub source: CallId,
    /// `<join.into>[*].<join.on>`: where the keys are in the source's body.
    pub keys: JsonPath,
    /// `join.match`: the key of an element of the answer.
    pub matches: JsonPath,
    /// `max_batch`: most keys in one request.
    pub max_keys: usize,
    /// `max_fan_out`: most requests (chunks) of one call; more keys fail it with
    /// `too_many_items`.
    pub max_requests: usize,
}

/// `join`: each element of the array at `into` (in the `for_each` source's body, or the batch
/// source's) whose `on` value equals an item (or key) gets that item's result under `key`.
#[derive(Debug)]
pub struct Join {
    /// The call whose body receives the results: the `for_each` (or batch) source.
    pub target: CallId,
    /// The array in that body whose elements receive them (a path without `[*]`).
    pub into: JsonPath,
    /// The value, in each element, that is compared with the items (a path without `[*]`).
    pub on: JsonPath,
    /// The key each matching element gets the item's result under (`join.as`).
    pub key: String,
}

/// `fallback` (SPEC §4): any JSON value, `null` included, shown in place of an optional call's
/// body when the call fails, and read by later calls' templates as if the call had answered
/// it. The answer still reports the failure (`_meta.fallback`, `_meta.errors`).
#[derive(Debug)]
pub struct Fallback {
    /// The value as configured.
    pub value: Value,
    /// The value serialised once, ready to be spliced into responses.
    pub json: Vec<u8>,
}

/// A route that matched a request, with its captures in the order of the route's pattern.
#[derive(Debug)]
pub struct Matched {
    /// The route, shared with the plan.
    pub route: Rc<Route>,
    /// The route's place in [`Plan::routes`]: its stats and `max_inflight` count.
    pub index: usize,
    /// Captures of `match.path`, in the route's order.
    pub captures: Vec<Capture>,
}

impl Plan {
    /// Reads and checks a configuration (the filter's JSON, SPEC §2): call once when the
    /// filter is configured. Nothing in it is re-read per request afterwards.
    ///
    /// Errors: the first problem found, as one [`ConfigError`] line naming route, call and
    /// key (`route "page" call "reviews" key "timout_ms": unknown key (did you mean
    /// "timeout_ms"?)`); the host then refuses the configuration.
    pub fn compile(bytes: &[u8]) -> Result<Plan, ConfigError> {
        Plan::from_config(config::parse(bytes)?)
    }

    /// Checks an already parsed configuration (what [`Plan::compile`] does after
    /// [`config::parse`]); the error names route, call and key.
    pub fn from_config(config: config::Config) -> Result<Plan, ConfigError> {
        compile::plan(&config)
    }

    /// The first route matching the request, in configuration order: its method is one of
    /// `match.methods` (`method` upper-case, as HTTP sends it), its path matches `match.path`
    /// (`path` may carry a query string and fragment, which are ignored), and every header of
    /// `match.headers` has the value written. `header` reads a request header by lowercase
    /// name (`:authority` included) and is only asked for those headers. `None`: the filter
    /// lets the request pass.
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

    /// The number of calls of every route together (for the configure-time log line).
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

    /// The id of the call named `name`, if the route has one.
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
