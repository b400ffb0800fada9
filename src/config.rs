//! The configuration as the user wrote it (SPEC §2), read strictly.
//!
//! Every object, at every level, is read key by key through `Fields`: each configuration type
//! says which keys it has (`FromFields`), and a key nobody read is an error naming route, call
//! and the key's full path with a did-you-mean hint (a typo must never be silently ignored).
//! Leaf values (numbers, strings, lists of them) are typed by serde from their JSON text
//! (`typed`). Meaning (names, templates, ranges, dependencies) is checked later, when the plan
//! is compiled (`plan::compile`).

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{Map, Value};
use std::fmt;

/// A closed set of names, read only from a JSON string (serde alone would also take
/// `{"name": null}`).
macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
        #[serde(try_from = "String")]
        pub enum $name {
            $(#[doc = concat!("`\"", $text, "\"`")] $variant),+
        }

        impl TryFrom<String> for $name {
            type Error = String;

            fn try_from(text: String) -> Result<Self, String> {
                match text.as_str() {
                    $($text => Ok($name::$variant),)+
                    other => Err(format!(
                        "unknown value \"{other}\", expected one of: {}",
                        [$($text),+].join(", ")
                    )),
                }
            }
        }
    };
}

/// `defaults.timeout_ms` when unset (SPEC §2.1), in milliseconds.
pub const DEFAULT_TIMEOUT_MS: u64 = 1000;
/// `defaults.deadline_ms` when unset (SPEC §2.1), in milliseconds.
pub const DEFAULT_DEADLINE_MS: u64 = 3000;
/// `defaults.max_body_bytes` when unset (SPEC §2.1): 1 MiB.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 1024 * 1024;
/// `defaults.forward_headers` when unset (SPEC §2.1): traces continue through the calls.
pub const DEFAULT_FORWARD_HEADERS: [&str; 3] = ["x-request-id", "traceparent", "tracestate"];
/// `response.meta` when unset (SPEC §5).
pub const DEFAULT_META_KEY: &str = "_meta";
/// A route's `fields_param` when unset (SPEC §5 selective fetching).
pub const DEFAULT_FIELDS_PARAM: &str = "fields";
/// `defaults.max_fan_out` when unset (SPEC §3.5).
pub const DEFAULT_MAX_FAN_OUT: u64 = 32;
/// A batch join's `max_batch` when unset (SPEC §3.5): most keys per request.
pub const DEFAULT_MAX_BATCH: u64 = 100;
/// `retries.backoff_ms` when unset (SPEC §6), in milliseconds.
pub const DEFAULT_BACKOFF_MS: u64 = 25;
/// `cache.max_entries` when unset (SPEC §6).
pub const DEFAULT_MAX_ENTRIES: u64 = 1024;

/// Every configuration error, from reading or compiling (SPEC §2): where it is (route, call,
/// key path such as `retries.attempts`) and why. Its `Display` is one log line,
/// `route "page" call "reviews" key "timout_ms": unknown key (did you mean "timeout_ms"?); …`,
/// with the parts that are unknown left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The route's name (or `routes[i]` before it could be read); `None` outside routes.
    pub route: Option<String>,
    /// The call's name (or `calls[i]`); `None` outside calls.
    pub call: Option<String>,
    /// Dot path of the key from the route or call it belongs to (`defaults.` at the top).
    pub key: Option<String>,
    /// Why, in words; control characters are escaped when displayed.
    pub message: String,
}

impl ConfigError {
    /// An error at `key` from code that does not know its route and call (the compilers of
    /// `shape/`); the caller places it with [`Place::locate`].
    pub fn at(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            route: None,
            call: None,
            key: Some(key.into()),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Names and keys come from the configuration: `{:?}` quotes and escapes them, and the
        // message's control characters are escaped, so the error stays one log line.
        let mut place = Vec::new();
        if let Some(route) = &self.route {
            place.push(format!("route {route:?}"));
        }
        if let Some(call) = &self.call {
            place.push(format!("call {call:?}"));
        }
        if let Some(key) = &self.key {
            place.push(format!("key {key:?}"));
        }
        if !place.is_empty() {
            write!(f, "{}: ", place.join(" "))?;
        }
        for c in self.message.chars() {
            if c.is_control() {
                write!(f, "{}", c.escape_default())?;
            } else {
                write!(f, "{c}")?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Where in the configuration we are, for error messages: the route and call names (or
/// `routes[2]`, `calls[0]` before a name could be read); neither at the top and in `defaults`.
#[derive(Debug, Clone, Default)]
pub struct Place {
    /// The route's name, or `routes[i]`.
    pub route: Option<String>,
    /// The call's name, or `calls[i]`.
    pub call: Option<String>,
}

impl Place {
    /// Inside the route `name`.
    pub fn route(name: &str) -> Self {
        Place {
            route: Some(name.to_string()),
            call: None,
        }
    }

    /// Inside the call `name` of this place's route.
    pub fn call(&self, name: &str) -> Self {
        Place {
            route: self.route.clone(),
            call: Some(name.to_string()),
        }
    }

    /// An error here, at `key` (a dot path from this route or call), or about the place itself.
    pub fn error(&self, key: Option<&str>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            route: self.route.clone(),
            call: self.call.clone(),
            key: key.map(str::to_string),
            message: message.into(),
        }
    }

    /// `error` (made by [`ConfigError::at`]) placed here: this route and call, unless it
    /// already names its own.
    pub fn locate(&self, error: ConfigError) -> ConfigError {
        ConfigError {
            route: error.route.or_else(|| self.route.clone()),
            call: error.call.or_else(|| self.call.clone()),
            ..error
        }
    }
}

/// The configuration (SPEC §2): `{"defaults": {…}, "routes": [{…}, …]}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `defaults`, with the documented default of every key it does not set.
    pub defaults: Defaults,
    /// At least one, tried in order.
    pub routes: Vec<RouteConfig>,
}

/// Values every route and call inherits unless it sets its own (SPEC §2.1). Times are in
/// milliseconds, sizes in bytes; each unset key holds its documented default.
#[derive(Debug, Clone, PartialEq)]
pub struct Defaults {
    /// Per-call timeout, ms.
    pub timeout_ms: u64,
    /// Per-route budget of the whole aggregation, ms.
    pub deadline_ms: u64,
    /// Largest upstream body a call accepts, bytes.
    pub max_body_bytes: u64,
    /// Client request headers copied to every call, as written (checked when compiled).
    pub forward_headers: Vec<String>,
    /// Upstream status lines and bodies in error bodies and `_meta` (debugging).
    pub expose_errors: bool,
    /// Most items of a `for_each` call, and most requests of a batch join.
    pub max_fan_out: u64,
    /// Most keys in one request of a batch join.
    pub max_batch: u64,
    /// `retries`, `hedge_after_ms`, `cache`, `circuit_breaker`, `coalesce` of every call
    /// (SPEC §6).
    pub resilience: Resilience,
    /// How many successful calls are enough to answer (SPEC §6).
    pub wait_for: WaitFor,
    /// `None`: no limit.
    pub max_inflight: Option<u64>,
}

impl Default for Defaults {
    fn default() -> Self {
        Defaults {
            timeout_ms: DEFAULT_TIMEOUT_MS,
            deadline_ms: DEFAULT_DEADLINE_MS,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            forward_headers: DEFAULT_FORWARD_HEADERS
                .iter()
                .map(|h| h.to_string())
                .collect(),
            expose_errors: false,
            max_fan_out: DEFAULT_MAX_FAN_OUT,
            max_batch: DEFAULT_MAX_BATCH,
            resilience: Resilience::default(),
            wait_for: WaitFor::All,
            max_inflight: None,
        }
    }
}

/// A setting that a lower level may inherit (key absent), replace (a value) or switch off
/// (`null`), SPEC §6.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Setting<T> {
    /// The key is absent: the parent level's setting applies.
    #[default]
    Inherit,
    /// `null`: off here, whatever the parent says.
    Off,
    /// A value.
    On(T),
}

impl<T> From<Option<T>> for Setting<T> {
    fn from(value: Option<T>) -> Self {
        value.map_or(Setting::Inherit, Setting::On)
    }
}

impl<T: Clone> Setting<T> {
    /// This level's setting over its parent's.
    pub fn over(&self, parent: &Setting<T>) -> Setting<T> {
        match self {
            Setting::Inherit => parent.clone(),
            other => other.clone(),
        }
    }

    /// The value, when this level switches the setting on.
    pub fn value(&self) -> Option<&T> {
        match self {
            Setting::On(value) => Some(value),
            _ => None,
        }
    }
}

/// SPEC §6 per-call options; each level (defaults, route, call) may set them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Resilience {
    /// `retries`.
    pub retries: Setting<RetryConfig>,
    /// Milliseconds without an answer before the same request is sent once more.
    pub hedge_after_ms: Setting<u64>,
    /// `cache`.
    pub cache: Setting<CacheConfig>,
    /// `circuit_breaker`.
    pub circuit_breaker: Setting<BreakerConfig>,
    /// `coalesce`: identical requests in flight on one worker share one upstream request.
    pub coalesce: Setting<bool>,
}

impl Resilience {
    /// This level's options over its parent's, option by option.
    pub fn over(&self, parent: &Resilience) -> Resilience {
        Resilience {
            retries: self.retries.over(&parent.retries),
            hedge_after_ms: self.hedge_after_ms.over(&parent.hedge_after_ms),
            cache: self.cache.over(&parent.cache),
            circuit_breaker: self.circuit_breaker.over(&parent.circuit_breaker),
            coalesce: self.coalesce.over(&parent.coalesce),
        }
    }
}

/// `retries` (SPEC §6): `{"attempts": 3, "backoff_ms": 25, "on": ["connect", "timeout", "5xx"]}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryConfig {
    /// Total attempts, the first included.
    pub attempts: u32,
    /// Wait before each retry, in milliseconds.
    pub backoff_ms: u64,
    /// The failures worth another attempt.
    pub on: Vec<RetryOn>,
}

string_enum!(
    /// A failure `retries.on` may name (SPEC §6).
    RetryOn { Connect = "connect", Timeout = "timeout", ServerError = "5xx" }
);

/// `cache` (SPEC §6): `{"ttl_ms": 5000, "stale_if_error_ms": 60000, "vary": ["authorization"],
/// "max_entries": 1024}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheConfig {
    /// How long an answer is served fresh, in milliseconds.
    pub ttl_ms: u64,
    /// How much longer it may stand in for a failure, in milliseconds.
    pub stale_if_error_ms: u64,
    /// Client request headers that are part of the key, as written.
    pub vary: Vec<String>,
    /// Slots of the call's cache.
    pub max_entries: u64,
}

/// `circuit_breaker` (SPEC §6): `{"failures": 5, "open_ms": 10000}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive failures that open the circuit.
    pub failures: u32,
    /// Milliseconds the circuit stays open before one probe.
    pub open_ms: u64,
}

/// Route `wait_for` (SPEC §6): how many successful calls are enough to answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WaitFor {
    /// `"all"`: every call.
    #[default]
    All,
    /// `"any"`: one success.
    Any,
    /// `"quorum"`: a majority of the calls fetched.
    Quorum,
    /// A number N ≥ 1: that many successes.
    Count(u64),
}

impl<'de> Deserialize<'de> for WaitFor {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match Value::deserialize(deserializer)? {
            Value::String(s) if s == "all" => Ok(WaitFor::All),
            Value::String(s) if s == "any" => Ok(WaitFor::Any),
            Value::String(s) if s == "quorum" => Ok(WaitFor::Quorum),
            Value::Number(n) => match n.as_u64() {
                Some(count) if count >= 1 => Ok(WaitFor::Count(count)),
                _ => Err(serde::de::Error::custom(
                    "a count must be a whole number of at least 1",
                )),
            },
            other => Err(serde::de::Error::custom(format!(
                "expected \"all\", \"any\", \"quorum\" or a count, got {other}"
            ))),
        }
    }
}

/// One route (SPEC §2.2), as written. `None` and empty lists mean "not set here": the value is
/// inherited from `defaults` when the plan is compiled.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteConfig {
    /// Unique, `[a-z0-9_-]{1,64}` (checked when compiled).
    pub name: String,
    /// `match`.
    pub matching: MatchConfig,
    /// Budget of the aggregation, ms.
    pub deadline_ms: Option<u64>,
    /// Per-call timeout for the route's calls, ms.
    pub timeout_ms: Option<u64>,
    /// Largest upstream body of its calls, and largest client body it buffers, bytes.
    pub max_body_bytes: Option<u64>,
    /// Added to `defaults.forward_headers` for every call of the route.
    pub forward_headers: Vec<String>,
    /// See [`Defaults::expose_errors`].
    pub expose_errors: Option<bool>,
    /// See [`Defaults::max_fan_out`].
    pub max_fan_out: Option<u64>,
    /// See [`Defaults::max_batch`].
    pub max_batch: Option<u64>,
    /// SPEC §6 options of the route's calls.
    pub resilience: Resilience,
    /// See [`Defaults::wait_for`].
    pub wait_for: Option<WaitFor>,
    /// Most aggregations of the route in flight per worker; `null` lifts the default's limit.
    pub max_inflight: Setting<u64>,
    /// Query parameter that selects calls; `None` when the user set `"fields_param": null`.
    pub fields_param: Option<String>,
    /// `calls` (SPEC §2.3), in order.
    pub calls: Vec<CallConfig>,
    /// `response` (SPEC §5); the defaults when absent.
    pub response: ResponseConfig,
}

/// A route's `match` (SPEC §2.2): `{"path": "/api/{id}", "methods": ["GET"], "headers": {…}}`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MatchConfig {
    /// The path template, parsed when compiled.
    pub path: String,
    /// As written (upper-cased when compiled); `["GET"]` when unset.
    pub methods: Vec<String>,
    /// Header name and exact value, in the order written.
    pub headers: Vec<(String, String)>,
}

/// A route's `response` (SPEC §5), as written.
#[derive(Debug, Clone, PartialEq)]
pub struct ResponseConfig {
    /// Key of the completeness object; `None` when the user set `"meta": null`.
    pub meta: Option<String>,
    /// `nested` (the default), `merge` or `concat`.
    pub layout: Layout,
    /// `concat` only: dot path inside each element to sort by.
    pub sort_by: Option<String>,
    /// `concat` with `sort_by` only: ascending (the default) or descending.
    pub order: Order,
    /// `concat` only: keep at most this many elements.
    pub limit: Option<u64>,
    /// Output path and operation (`{"count": "reviews.items"}`), checked when compiled.
    pub derive: Vec<(String, Value)>,
    /// Static response headers: name and value, in the order written.
    pub headers: Vec<(String, String)>,
    /// Upstream response headers copied to the client's response.
    pub headers_from: Vec<HeaderFrom>,
}

impl Default for ResponseConfig {
    fn default() -> Self {
        ResponseConfig {
            meta: Some(DEFAULT_META_KEY.to_string()),
            layout: Layout::Nested,
            sort_by: None,
            order: Order::Asc,
            limit: None,
            derive: Vec::new(),
            headers: Vec::new(),
            headers_from: Vec::new(),
        }
    }
}

string_enum!(
    /// How the calls' bodies are put together (SPEC §5).
    Layout { Nested = "nested", Merge = "merge", Concat = "concat" }
);

string_enum!(
    /// `response.order` of a `concat` layout's `sort_by` (SPEC §5).
    Order { Asc = "asc", Desc = "desc" }
);

/// `response.headers_from[]` (SPEC §5): `{"call": "auth", "name": "set-cookie"}` copies every
/// value of an upstream response header to the client's response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderFrom {
    /// The call whose answer has the header.
    pub call: String,
    /// The header's name.
    pub name: String,
}

string_enum!(
    /// A call's `format` (SPEC §2.3): a JSON body, or any UTF-8 body passed on as a JSON string.
    Format { Json = "json", Text = "text" }
);

/// One call (SPEC §2.3), as written. `None` and empty lists mean "not set here".
#[derive(Debug, Clone, PartialEq)]
pub struct CallConfig {
    /// Unique in the route, `[a-z0-9_-]{1,64}` (checked when compiled).
    pub name: String,
    /// The Envoy cluster to call.
    pub cluster: String,
    /// As written (upper-cased when compiled); `GET` when unset.
    pub method: String,
    /// The path template (SPEC §3).
    pub path: String,
    /// Header name and template, in the order written.
    pub headers: Vec<(String, String)>,
    /// Client headers copied to this call besides the inherited ones (credentials only here).
    pub forward_headers: Vec<String>,
    /// `:authority` of the call; the cluster's name when unset.
    pub authority: Option<String>,
    /// Timeout of each attempt, ms.
    pub timeout_ms: Option<u64>,
    /// The aggregation cannot answer without this call (SPEC §4).
    pub required: bool,
    /// Any JSON value, `null` included.
    pub fallback: Option<Value>,
    /// `json` (the default) or `text`.
    pub format: Format,
    /// Largest upstream body accepted, bytes.
    pub max_body_bytes: Option<u64>,
    /// Names of calls that must finish first (SPEC §3.2).
    pub after: Vec<String>,
    /// Template JSON, or the string `{request.body}` (SPEC §3.4).
    pub body: Option<Value>,
    /// `calls.X.path[*].field`: one call per distinct value (SPEC §3.5).
    pub for_each: Option<String>,
    /// See [`Defaults::max_fan_out`]; only with `for_each` or a batch join.
    pub max_fan_out: Option<u64>,
    /// `join`; with `for_each`, or with `join.match` for a batch join (SPEC §3.5).
    pub join: Option<JoinConfig>,
    /// See [`Defaults::max_batch`]; only with a batch join (`join.match`).
    pub max_batch: Option<u64>,
    /// `when`: the call is made only if this holds (SPEC §3.6).
    pub when: Option<ConditionConfig>,
    /// Allows retries and hedging (SPEC §6) of a method that is not idempotent.
    pub unsafe_repeat: bool,
    /// Per-call shaping (SPEC §5), applied in this order.
    pub extract: Option<String>,
    /// Dot paths to keep.
    pub select: Vec<String>,
    /// Dot paths to drop.
    pub omit: Vec<String>,
    /// Old and new dot path, in the order written.
    pub rename: Vec<(String, String)>,
    /// `as`: the output key instead of the call's name.
    pub output_key: Option<String>,
    /// SPEC §6 options the call sets itself.
    pub resilience: Resilience,
}

/// A call's `join` (SPEC §3.5): `{"into": "posts.items", "on": "author", "as": "detail"}` puts
/// each per-item result into the matching elements of an earlier call's array; with `"match":
/// "id"` (a batch join) each element gets the element of the call's array answer whose `id`
/// equals its `author`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinConfig {
    /// `X.path.to.array`, X being the call `for_each` reads (or whose keys a batch sends).
    pub into: String,
    /// Dot path, inside each element, of the value to match against the item (or key).
    pub on: String,
    /// `match`: dot path, inside each element of a batch answer, of the key it answers for.
    /// Set only for a batch join.
    pub matches: Option<String>,
    /// Key under which an element receives its item's result.
    pub key: String,
}

/// A call's `when` (SPEC §3.6), as written: an object with exactly one operator, operands
/// checked for shape here and for meaning (sources, calls) when the plan is compiled.
#[derive(Debug, Clone, PartialEq)]
pub enum ConditionConfig {
    /// `{"present": "header.x-user-id"}`: the value exists and is not null or empty.
    Present(String),
    /// `{"equals": ["calls.product.kind", "physical"]}`: reference and a scalar literal.
    Equals(String, Value),
    /// `{"in": ["query.include", ["reviews", "all"]]}`: reference and one or more scalars.
    In(String, Vec<Value>),
    /// `{"all": [...]}`: every condition holds (one or more).
    All(Vec<ConditionConfig>),
    /// `{"any": [...]}`: some condition holds (one or more).
    Any(Vec<ConditionConfig>),
    /// `{"not": {...}}`: the condition does not hold.
    Not(Box<ConditionConfig>),
}

/// The operators of `when`, in the order the error messages list them.
const CONDITION_OPERATORS: [&str; 6] = ["present", "equals", "in", "all", "any", "not"];

/// Parses the plugin configuration bytes (SPEC §2).
///
/// Errors: not JSON (a key repeated in one object included), a JSON value of the wrong type at any key, a required key missing, an
/// unknown key at any level (with a did-you-mean hint and the keys known there), an empty
/// `routes`. Names, templates, ranges and references are checked by `plan::compile`.
pub fn parse(bytes: &[u8]) -> Result<Config, ConfigError> {
    let top = Place::default();
    let value: Value = crate::json_number::parse_unique(bytes)
        .map_err(|e| top.error(None, format!("not valid JSON: {e}")))?;
    let mut fields = Fields::open(&value, &top, String::new(), "the configuration")?;
    let defaults = fields.object("defaults")?.unwrap_or_default();
    let routes = fields.list("routes", "a list of routes")?;
    // Unknown top-level keys first: a misspelt `routes` explains every error after it.
    fields.finish()?;
    if routes.is_empty() {
        return Err(top.error(Some("routes"), "must name at least one route"));
    }
    let routes = routes
        .iter()
        .enumerate()
        .map(|(index, value)| {
            let place = Place::route(&entry_name(value, "routes", index));
            read_object(value, &place, String::new(), "a route")
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Config { defaults, routes })
}

/// A configuration object whose keys are read by name: `from_fields` takes each key it knows,
/// and [`read_object`] then refuses any other.
trait FromFields: Sized {
    fn from_fields(fields: &mut Fields<'_>) -> Result<Self, ConfigError>;
}

/// Reads the JSON object `value`, at `path` of `place`, as a `T`; `what` names it when it is
/// not an object and there is no key to name.
fn read_object<T: FromFields>(
    value: &Value,
    place: &Place,
    path: String,
    what: &str,
) -> Result<T, ConfigError> {
    let mut fields = Fields::open(value, place, path, what)?;
    let object = T::from_fields(&mut fields)?;
    fields.finish()?;
    Ok(object)
}

/// A name for error messages before the entry itself has been read.
fn entry_name(value: &Value, kind: &str, index: usize) -> String {
    match value.get("name").and_then(Value::as_str) {
        Some(name) => name.to_string(),
        None => format!("{kind}[{index}]"),
    }
}

impl FromFields for Defaults {
    fn from_fields(fields: &mut Fields<'_>) -> Result<Self, ConfigError> {
        let builtin = Defaults::default();
        Ok(Defaults {
            timeout_ms: fields.opt("timeout_ms")?.unwrap_or(builtin.timeout_ms),
            deadline_ms: fields.opt("deadline_ms")?.unwrap_or(builtin.deadline_ms),
            max_body_bytes: fields
                .opt("max_body_bytes")?
                .unwrap_or(builtin.max_body_bytes),
            forward_headers: fields
                .opt("forward_headers")?
                .unwrap_or(builtin.forward_headers),
            expose_errors: fields.opt("expose_errors")?.unwrap_or(false),
            max_fan_out: fields.opt("max_fan_out")?.unwrap_or(builtin.max_fan_out),
            max_batch: fields.opt("max_batch")?.unwrap_or(builtin.max_batch),
            resilience: Resilience::from_fields(fields)?,
            wait_for: fields.opt("wait_for")?.unwrap_or_default(),
            max_inflight: fields.opt("max_inflight")?,
        })
    }
}

/// Not an object of its own: the SPEC §6 keys of defaults, a route or a call.
impl FromFields for Resilience {
    fn from_fields(fields: &mut Fields<'_>) -> Result<Self, ConfigError> {
        Ok(Resilience {
            retries: fields.object_setting("retries")?,
            hedge_after_ms: fields.setting("hedge_after_ms")?,
            cache: fields.object_setting("cache")?,
            circuit_breaker: fields.object_setting("circuit_breaker")?,
            coalesce: fields.setting("coalesce")?,
        })
    }
}

impl FromFields for RetryConfig {
    fn from_fields(fields: &mut Fields<'_>) -> Result<Self, ConfigError> {
        Ok(RetryConfig {
            attempts: fields.req("attempts")?,
            backoff_ms: fields.opt("backoff_ms")?.unwrap_or(DEFAULT_BACKOFF_MS),
            on: fields
                .opt("on")?
                .unwrap_or_else(|| vec![RetryOn::Connect, RetryOn::Timeout, RetryOn::ServerError]),
        })
    }
}

impl FromFields for CacheConfig {
    fn from_fields(fields: &mut Fields<'_>) -> Result<Self, ConfigError> {
        Ok(CacheConfig {
            ttl_ms: fields.req("ttl_ms")?,
            stale_if_error_ms: fields.opt("stale_if_error_ms")?.unwrap_or(0),
            vary: fields.opt("vary")?.unwrap_or_default(),
            max_entries: fields.opt("max_entries")?.unwrap_or(DEFAULT_MAX_ENTRIES),
        })
    }
}

impl FromFields for BreakerConfig {
    fn from_fields(fields: &mut Fields<'_>) -> Result<Self, ConfigError> {
        Ok(BreakerConfig {
            failures: fields.req("failures")?,
            open_ms: fields.req("open_ms")?,
        })
    }
}

impl FromFields for RouteConfig {
    fn from_fields(fields: &mut Fields<'_>) -> Result<Self, ConfigError> {
        let place = fields.place;
        let name = fields.req("name")?;
        let matching = fields.req_object("match", "is required (at least match.path)")?;
        let calls = fields
            .list("calls", "a list of calls")?
            .iter()
            .enumerate()
            .map(|(index, value)| {
                let place = place.call(&entry_name(value, "calls", index));
                read_object(value, &place, String::new(), "a call")
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(RouteConfig {
            name,
            matching,
            response: fields.object("response")?.unwrap_or_default(),
            deadline_ms: fields.opt("deadline_ms")?,
            timeout_ms: fields.opt("timeout_ms")?,
            max_body_bytes: fields.opt("max_body_bytes")?,
            forward_headers: fields.opt("forward_headers")?.unwrap_or_default(),
            expose_errors: fields.opt("expose_errors")?,
            max_fan_out: fields.opt("max_fan_out")?,
            max_batch: fields.opt("max_batch")?,
            resilience: Resilience::from_fields(fields)?,
            wait_for: fields.opt("wait_for")?,
            max_inflight: fields.setting("max_inflight")?,
            fields_param: fields.nullable_string("fields_param", DEFAULT_FIELDS_PARAM)?,
            calls,
        })
    }
}

impl FromFields for MatchConfig {
    fn from_fields(fields: &mut Fields<'_>) -> Result<Self, ConfigError> {
        Ok(MatchConfig {
            path: fields.req("path")?,
            methods: fields
                .opt("methods")?
                .unwrap_or_else(|| vec!["GET".to_string()]),
            headers: fields.string_map("headers")?,
        })
    }
}

impl FromFields for ResponseConfig {
    fn from_fields(fields: &mut Fields<'_>) -> Result<Self, ConfigError> {
        let derive: Map<String, Value> = fields.opt("derive")?.unwrap_or_default();
        Ok(ResponseConfig {
            meta: fields.nullable_string("meta", DEFAULT_META_KEY)?,
            layout: fields.opt("layout")?.unwrap_or(Layout::Nested),
            sort_by: fields.opt("sort_by")?,
            order: fields.opt("order")?.unwrap_or(Order::Asc),
            limit: fields.opt("limit")?,
            derive: derive.into_iter().collect(),
            headers: fields.string_map("headers")?,
            headers_from: fields.list_of_objects("headers_from")?,
        })
    }
}

impl FromFields for HeaderFrom {
    fn from_fields(fields: &mut Fields<'_>) -> Result<Self, ConfigError> {
        Ok(HeaderFrom {
            call: fields.req("call")?,
            name: fields.req("name")?,
        })
    }
}

impl FromFields for CallConfig {
    fn from_fields(fields: &mut Fields<'_>) -> Result<Self, ConfigError> {
        Ok(CallConfig {
            name: fields.req("name")?,
            cluster: fields.req("cluster")?,
            method: fields.opt("method")?.unwrap_or_else(|| "GET".to_string()),
            path: fields.req("path")?,
            headers: fields.string_map("headers")?,
            forward_headers: fields.opt("forward_headers")?.unwrap_or_default(),
            authority: fields.opt("authority")?,
            timeout_ms: fields.opt("timeout_ms")?,
            required: fields.opt("required")?.unwrap_or(false),
            fallback: fields.take("fallback").cloned(),
            format: fields.opt("format")?.unwrap_or(Format::Json),
            max_body_bytes: fields.opt("max_body_bytes")?,
            after: fields.opt("after")?.unwrap_or_default(),
            body: fields.take("body").cloned(),
            for_each: fields.opt("for_each")?,
            max_fan_out: fields.opt("max_fan_out")?,
            join: fields.object("join")?,
            max_batch: fields.opt("max_batch")?,
            when: fields.object("when")?,
            unsafe_repeat: fields.opt("unsafe")?.unwrap_or(false),
            extract: fields.opt("extract")?,
            select: fields.opt("select")?.unwrap_or_default(),
            omit: fields.opt("omit")?.unwrap_or_default(),
            rename: fields.string_map("rename")?,
            output_key: fields.opt("as")?,
            resilience: Resilience::from_fields(fields)?,
        })
    }
}

impl FromFields for JoinConfig {
    fn from_fields(fields: &mut Fields<'_>) -> Result<Self, ConfigError> {
        Ok(JoinConfig {
            into: fields.req("into")?,
            on: fields.req("on")?,
            matches: fields.opt("match")?,
            key: fields.req("as")?,
        })
    }
}

impl FromFields for ConditionConfig {
    /// Exactly one operator; its operands' shape (arity, types) is checked here, the
    /// references they name when the plan is compiled.
    fn from_fields(fields: &mut Fields<'_>) -> Result<Self, ConfigError> {
        let mut found = Vec::new();
        if let Some(reference) = fields.opt::<String>("present")? {
            found.push(ConditionConfig::Present(reference));
        }
        if let Some(operands) = fields.take("equals") {
            let (reference, literal) = match operands.as_array().map(Vec::as_slice) {
                Some([Value::String(reference), literal]) if is_scalar(literal) => {
                    (reference.clone(), literal.clone())
                }
                _ => {
                    return Err(fields.error(
                        "equals",
                        "must be [\"<source>.<name>\", <a string, number or boolean>]",
                    ))
                }
            };
            found.push(ConditionConfig::Equals(reference, literal));
        }
        if let Some(operands) = fields.take("in") {
            let (reference, literals) = match operands.as_array().map(Vec::as_slice) {
                Some([Value::String(reference), Value::Array(literals)])
                    if !literals.is_empty() && literals.iter().all(is_scalar) =>
                {
                    (reference.clone(), literals.clone())
                }
                _ => return Err(fields.error(
                    "in",
                    "must be [\"<source>.<name>\", [<one or more strings, numbers or booleans>]]",
                )),
            };
            found.push(ConditionConfig::In(reference, literals));
        }
        for (key, make) in [
            ("all", ConditionConfig::All as fn(_) -> _),
            ("any", ConditionConfig::Any),
        ] {
            if let Some(list) = fields.opt_list_of_objects(key)? {
                if list.is_empty() {
                    return Err(fields.error(key, "must list at least one condition"));
                }
                found.push(make(list));
            }
        }
        if let Some(inner) = fields.object::<ConditionConfig>("not")? {
            found.push(ConditionConfig::Not(Box::new(inner)));
        }
        if found.len() != 1 {
            // After the unknown keys (`finish`): `{"presnt": …}` is a typo with a hint, not
            // an object without an operator.
            fields.defer(format!(
                "must hold exactly one operator (one of: {}); combine several with all or any",
                CONDITION_OPERATORS.join(", ")
            ));
        }
        // A placeholder when the error is deferred: `finish` never lets it out.
        Ok(found
            .pop()
            .unwrap_or_else(|| ConditionConfig::Present(String::new())))
    }
}

/// A literal a condition may compare with: a string, number or boolean. `null` and absence
/// are what `present` tests; objects and arrays have no equality worth a condition.
fn is_scalar(value: &Value) -> bool {
    matches!(value, Value::String(_) | Value::Number(_) | Value::Bool(_))
}

/// Reads the keys of one JSON object by name and reports the ones nobody asked for.
struct Fields<'a> {
    object: &'a Map<String, Value>,
    place: &'a Place,
    /// Dot path of this object from its route or call (`retries`, `response.headers_from[0]`),
    /// or from the top (`defaults`); empty for a route or call itself.
    path: String,
    read: Vec<&'static str>,
    /// The first required key found absent, and why it is needed: reported by `finish`, after
    /// the unknown keys, so a misspelt required key shows as the typo it is, with its hint.
    missing: Option<(&'static str, String)>,
    /// What is wrong with the object as a whole (`when` without exactly one operator):
    /// reported by `finish` after the unknown keys, for the same reason.
    problem: Option<String>,
}

impl<'a> Fields<'a> {
    /// `value` must be an object; `what` names it when `path` is empty.
    fn open(
        value: &'a Value,
        place: &'a Place,
        path: String,
        what: &str,
    ) -> Result<Self, ConfigError> {
        match value {
            Value::Object(object) => Ok(Fields {
                object,
                place,
                path,
                read: Vec::new(),
                missing: None,
                problem: None,
            }),
            _ if path.is_empty() => Err(place.error(None, format!("{what} must be a JSON object"))),
            _ => Err(place.error(Some(&path), "must be a JSON object")),
        }
    }

    /// The full dot path of one of this object's keys, as errors name it.
    fn key_name(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    fn error(&self, key: &str, message: impl Into<String>) -> ConfigError {
        self.place.error(Some(&self.key_name(key)), message)
    }

    fn take(&mut self, key: &'static str) -> Option<&'a Value> {
        self.read.push(key);
        self.object.get(key)
    }

    fn opt<T: DeserializeOwned>(&mut self, key: &'static str) -> Result<Option<T>, ConfigError> {
        let Some(value) = self.take(key) else {
            return Ok(None);
        };
        typed(value).map(Some).map_err(|e| self.error(key, e))
    }

    /// A key the object must have. When it is absent, reading goes on with a placeholder that
    /// `finish` never lets out (see `missing`).
    fn req<T: DeserializeOwned + Default>(&mut self, key: &'static str) -> Result<T, ConfigError> {
        let value = self.opt(key)?;
        Ok(value.unwrap_or_else(|| {
            self.require(key, "is required");
            T::default()
        }))
    }

    /// An error about the object itself, reported by `finish` after its unknown keys.
    fn defer(&mut self, why: String) {
        if self.problem.is_none() {
            self.problem = Some(why);
        }
    }

    fn require(&mut self, key: &'static str, why: &str) {
        if self.missing.is_none() {
            self.missing = Some((key, why.to_string()));
        }
    }

    /// `object` for a key the object must have.
    fn req_object<T: FromFields + Default>(
        &mut self,
        key: &'static str,
        why: &str,
    ) -> Result<T, ConfigError> {
        let value = self.object(key)?;
        Ok(value.unwrap_or_else(|| {
            self.require(key, why);
            T::default()
        }))
    }

    /// Absent: inherit; `null`: off; a value: on.
    fn setting<T: DeserializeOwned>(
        &mut self,
        key: &'static str,
    ) -> Result<Setting<T>, ConfigError> {
        match self.take(key) {
            None => Ok(Setting::Inherit),
            Some(Value::Null) => Ok(Setting::Off),
            Some(value) => typed(value)
                .map(Setting::On)
                .map_err(|e| self.error(key, e)),
        }
    }

    /// A nested object, read key by key like this one (serde would also fill a struct from an
    /// array, in field order: the walker refuses it).
    fn object<T: FromFields>(&mut self, key: &'static str) -> Result<Option<T>, ConfigError> {
        match self.take(key) {
            None => Ok(None),
            Some(value) => read_object(value, self.place, self.key_name(key), "").map(Some),
        }
    }

    /// `setting` for options whose value is an object.
    fn object_setting<T: FromFields>(
        &mut self,
        key: &'static str,
    ) -> Result<Setting<T>, ConfigError> {
        match self.take(key) {
            None => Ok(Setting::Inherit),
            Some(Value::Null) => Ok(Setting::Off),
            Some(value @ Value::Object(_)) => {
                read_object(value, self.place, self.key_name(key), "").map(Setting::On)
            }
            Some(_) => Err(self.error(key, "must be a JSON object, or null to turn it off")),
        }
    }

    /// A required list (`routes`, `calls`), its entries read by the caller.
    fn list(&mut self, key: &'static str, what: &str) -> Result<&'a [Value], ConfigError> {
        match self.take(key) {
            Some(Value::Array(items)) => Ok(items),
            Some(_) => Err(self.error(key, format!("must be {what}"))),
            None => {
                self.require(key, &format!("is required ({what})"));
                Ok(&[])
            }
        }
    }

    /// A list of JSON objects (absent: empty), each read key by key at `key[index]`.
    fn list_of_objects<T: FromFields>(&mut self, key: &'static str) -> Result<Vec<T>, ConfigError> {
        Ok(self.opt_list_of_objects(key)?.unwrap_or_default())
    }

    /// [`Fields::list_of_objects`], telling an absent key from an empty list.
    fn opt_list_of_objects<T: FromFields>(
        &mut self,
        key: &'static str,
    ) -> Result<Option<Vec<T>>, ConfigError> {
        let Some(items) = self.opt::<Vec<Value>>(key)? else {
            return Ok(None);
        };
        if items.iter().any(|item| !item.is_object()) {
            return Err(self.error(key, "must be a list of JSON objects"));
        }
        let path = self.key_name(key);
        items
            .iter()
            .enumerate()
            .map(|(index, item)| read_object(item, self.place, format!("{path}[{index}]"), ""))
            .collect::<Result<_, _>>()
            .map(Some)
    }

    /// An object of string values (`{"name": "value"}`), in the order written.
    fn string_map(&mut self, key: &'static str) -> Result<Vec<(String, String)>, ConfigError> {
        let map: Map<String, Value> = self.opt(key)?.unwrap_or_default();
        map.into_iter()
            .map(|(name, v)| match v {
                Value::String(s) => Ok((name, s)),
                _ => Err(self.error(key, format!("value of \"{name}\" must be a string"))),
            })
            .collect()
    }

    /// A string key that may be set to `null` to turn its feature off.
    fn nullable_string(
        &mut self,
        key: &'static str,
        default: &str,
    ) -> Result<Option<String>, ConfigError> {
        match self.take(key) {
            None => Ok(Some(default.to_string())),
            Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if !s.is_empty() => Ok(Some(s.clone())),
            Some(_) => Err(self.error(key, "must be a non-empty string, or null to turn it off")),
        }
    }

    /// Refuses the first key nobody read, with the closest known key as a hint, then the first
    /// required key that is absent.
    fn finish(self) -> Result<(), ConfigError> {
        let unknown = self
            .object
            .keys()
            .find(|k| !self.read.contains(&k.as_str()));
        let Some(unknown) = unknown else {
            return match (&self.missing, &self.problem) {
                (Some((key, why)), _) => Err(self.error(key, why.as_str())),
                (None, Some(why)) => Err(self.place.error(Some(&self.path), why.as_str())),
                (None, None) => Ok(()),
            };
        };
        let hint = closest(unknown, &self.read)
            .map(|k| format!(" (did you mean \"{k}\"?)"))
            .unwrap_or_default();
        Err(self.error(
            unknown,
            format!(
                "unknown key{hint}; known keys here: {}",
                self.read.join(", ")
            ),
        ))
    }
}

/// Reads a typed setting from its JSON text, not from the parsed `Value`: with the
/// `arbitrary_precision` numbers that keep upstream data exact (SPEC §4), serde_json refuses a
/// `Value` number of the wrong kind with a bare "invalid number", while from text it says
/// "invalid value: integer `-1`, expected u64" or "invalid type: floating point `1.5`".
/// The error names no position: the text is ours, the key is named by the caller.
fn typed<T: DeserializeOwned>(value: &Value) -> Result<T, String> {
    serde_json::from_str(&value.to_string()).map_err(|e| {
        let text = e.to_string();
        let position = format!(" at line {} column {}", e.line(), e.column());
        text.strip_suffix(&position)
            .map_or(text.clone(), str::to_string)
    })
}

/// The known key (or name) a typo most likely meant, if any is close enough.
pub(crate) fn closest<'k>(typo: &str, known: &[&'k str]) -> Option<&'k str> {
    known
        .iter()
        .map(|k| (edit_distance(typo, k), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitute = previous.get(j).copied().unwrap_or(0) + usize::from(ca != *cb);
            let delete = previous.get(j + 1).copied().unwrap_or(0) + 1;
            let insert = current.get(j).copied().unwrap_or(0) + 1;
            current.push(substitute.min(delete).min(insert));
        }
        previous = current;
    }
    previous.last().copied().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(json: &str) -> String {
        parse(json.as_bytes()).unwrap_err().to_string()
    }

    const MINIMAL: &str = r#"{"routes":[{"name":"r","match":{"path":"/a"},"calls":[{"name":"c","cluster":"k","path":"/x"}]}]}"#;

    #[test]
    fn minimal_config_gets_documented_defaults() {
        let config = parse(MINIMAL.as_bytes()).unwrap();
        assert_eq!(config.defaults, Defaults::default());
        let route = &config.routes[0];
        assert_eq!(route.matching.methods, vec!["GET"]);
        assert_eq!(route.response.meta.as_deref(), Some("_meta"));
        let call = &route.calls[0];
        assert_eq!(call.method, "GET");
        assert!(!call.required);
        assert_eq!(call.format, Format::Json);
    }

    #[test]
    fn unknown_key_names_route_call_and_key_with_a_hint() {
        let e = err(
            r#"{"routes":[{"name":"page","match":{"path":"/a"},"calls":[{"name":"reviews","cluster":"k","path":"/x","timout_ms":5}]}]}"#,
        );
        assert!(e.starts_with(r#"route "page" call "reviews" key "timout_ms": unknown key (did you mean "timeout_ms"?)"#), "{e}");
    }

    #[test]
    fn names_and_keys_with_control_characters_stay_on_one_line() {
        // Found by the config fuzz target: a key holding a newline broke the one-line error.
        let e = err(
            r#"{"routes":[{"name":"pa\"ge\n","match":{"path":"/a"},"calls":[{"name":"c","cluster":"k","path":"/x","time\nout":5}]}]}"#,
        );
        assert!(
            e.starts_with(r#"route "pa\"ge\n" call "c" key "time\nout": unknown key"#),
            "{e}"
        );
        assert!(!e.contains('\n'), "{e}");
    }

    #[test]
    fn wrong_type_names_the_key() {
        let e = err(
            r#"{"routes":[{"name":"page","match":{"path":"/a"},"calls":[{"name":"c","cluster":"k","path":"/x","timeout_ms":"fast"}]}]}"#,
        );
        assert!(
            e.starts_with(r#"route "page" call "c" key "timeout_ms": invalid type"#),
            "{e}"
        );
    }

    #[test]
    fn wrong_numbers_say_what_was_expected() {
        let with = |timeout: &str, attempts: &str| {
            err(&format!(
                r#"{{"routes":[{{"name":"p","match":{{"path":"/a"}},"calls":[{{"name":"c","cluster":"k","path":"/x","timeout_ms":{timeout},"retries":{{"attempts":{attempts}}}}}]}}]}}"#
            ))
        };
        assert_eq!(
            with("-1", "2"),
            r#"route "p" call "c" key "timeout_ms": invalid value: integer `-1`, expected u64"#
        );
        assert_eq!(
            with("1.5", "2"),
            r#"route "p" call "c" key "timeout_ms": invalid type: floating point `1.5`, expected u64"#
        );
        assert_eq!(
            with("5", "-2"),
            r#"route "p" call "c" key "retries.attempts": invalid value: integer `-2`, expected u32"#
        );
    }

    /// Route `page` with one call `c`; `route` and `call` are extra keys of each.
    fn with_keys(route: &str, call: &str) -> String {
        format!(
            r#"{{"routes":[{{"name":"page","match":{{"path":"/a"}},{route}"calls":[{{"name":"c","cluster":"k","path":"/x"{call}}}]}}]}}"#
        )
    }

    #[test]
    fn unknown_keys_in_nested_objects_name_the_full_path_with_a_hint() {
        let cases = [
            (
                with_keys("", r#","retries":{"atempts":2}"#),
                r#"route "page" call "c" key "retries.atempts": unknown key (did you mean "attempts"?); known keys here: attempts, backoff_ms, on"#,
            ),
            (
                with_keys("", r#","cache":{"ttl_ms":5,"max_entrys":1}"#),
                r#"route "page" call "c" key "cache.max_entrys": unknown key (did you mean "max_entries"?); known keys here: ttl_ms, stale_if_error_ms, vary, max_entries"#,
            ),
            (
                with_keys(
                    r#""circuit_breaker":{"failures":1,"open_ms":1,"opens_ms":1},"#,
                    "",
                ),
                r#"route "page" key "circuit_breaker.opens_ms": unknown key (did you mean "open_ms"?); known keys here: failures, open_ms"#,
            ),
            (
                with_keys("", r#","join":{"into":"a.b","on":"id","as":"x","onn":1}"#),
                r#"route "page" call "c" key "join.onn": unknown key (did you mean "on"?); known keys here: into, on, match, as"#,
            ),
            (
                with_keys(
                    r#""response":{"headers_from":[{"call":"c","name":"x-a"},{"call":"c","nam":"x-b"}]},"#,
                    "",
                ),
                r#"route "page" key "response.headers_from[1].nam": unknown key (did you mean "name"?)"#,
            ),
            (
                with_keys(r#""response":{"layouts":"merge"},"#, ""),
                r#"route "page" key "response.layouts": unknown key (did you mean "layout"?)"#,
            ),
            (
                with_keys("", "").replace(r#""path":"/a""#, r#""path":"/a","header":{}"#),
                r#"route "page" key "match.header": unknown key (did you mean "headers"?)"#,
            ),
            (
                r#"{"defaults":{"retries":{"attempts":2,"backof_ms":1}},"routes":[]}"#.to_string(),
                r#"key "defaults.retries.backof_ms": unknown key (did you mean "backoff_ms"?)"#,
            ),
            (
                r#"{"defaults":{"timeot_ms":5},"routes":[]}"#.to_string(),
                r#"key "defaults.timeot_ms": unknown key (did you mean "timeout_ms"?)"#,
            ),
        ];
        for (json, expected) in cases {
            let e = err(&json);
            assert!(e.starts_with(expected), "\n got: {e}\nwant: {expected}");
        }
    }

    #[test]
    fn nested_objects_name_missing_and_wrong_keys_by_their_full_path() {
        assert_eq!(
            err(&with_keys("", r#","retries":{"backoff_ms":5}"#)),
            r#"route "page" call "c" key "retries.attempts": is required"#
        );
        assert_eq!(
            err(&with_keys(
                r#""response":{"headers_from":[{"call":"c"}]},"#,
                ""
            )),
            r#"route "page" key "response.headers_from[0].name": is required"#
        );
        assert_eq!(
            err(&with_keys("", r#","cache":{"ttl_ms":"1s"}"#)),
            r#"route "page" call "c" key "cache.ttl_ms": invalid type: string "1s", expected u64"#
        );
        assert_eq!(
            err(&with_keys("", r#","join":["posts.items","id","x"]"#)),
            r#"route "page" call "c" key "join": must be a JSON object"#
        );
        assert_eq!(
            err(&with_keys("", r#","circuit_breaker":[5,1000]"#)),
            r#"route "page" call "c" key "circuit_breaker": must be a JSON object, or null to turn it off"#
        );
        assert_eq!(
            err(r#"{"defaults":[],"routes":[]}"#),
            r#"key "defaults": must be a JSON object"#
        );
    }

    #[test]
    fn nested_objects_get_their_documented_defaults() {
        let config = parse(
            with_keys(
                "",
                r#","retries":{"attempts":3},"cache":{"ttl_ms":5},"circuit_breaker":null"#,
            )
            .as_bytes(),
        )
        .unwrap();
        let resilience = &config.routes[0].calls[0].resilience;
        assert_eq!(
            resilience.retries,
            Setting::On(RetryConfig {
                attempts: 3,
                backoff_ms: DEFAULT_BACKOFF_MS,
                on: vec![RetryOn::Connect, RetryOn::Timeout, RetryOn::ServerError],
            })
        );
        assert_eq!(
            resilience.cache,
            Setting::On(CacheConfig {
                ttl_ms: 5,
                stale_if_error_ms: 0,
                vary: Vec::new(),
                max_entries: DEFAULT_MAX_ENTRIES,
            })
        );
        assert_eq!(resilience.circuit_breaker, Setting::Off);
        assert_eq!(resilience.hedge_after_ms, Setting::Inherit);
    }

    #[test]
    fn nested_keys_are_named_with_their_parent() {
        let e = err(
            r#"{"routes":[{"name":"page","match":{"path":"/a","method":["GET"]},"calls":[]}]}"#,
        );
        assert!(
            e.starts_with(
                r#"route "page" key "match.method": unknown key (did you mean "methods"?)"#
            ),
            "{e}"
        );
        let e = err(r#"{"defaults":{"deadline":5},"routes":[]}"#);
        assert!(
            e.starts_with(r#"key "defaults.deadline": unknown key"#),
            "{e}"
        );
    }

    #[test]
    fn missing_required_keys_are_reported() {
        assert_eq!(
            err(r#"{}"#),
            r#"key "routes": is required (a list of routes)"#
        );
        let e = err(
            r#"{"routes":[{"name":"page","match":{"path":"/a"},"calls":[{"name":"c","path":"/x"}]}]}"#,
        );
        assert_eq!(e, r#"route "page" call "c" key "cluster": is required"#);
        let e = err(r#"{"routes":[{"match":{"path":"/a"},"calls":[]}]}"#);
        assert_eq!(e, r#"route "routes[0]" key "name": is required"#);
    }

    #[test]
    fn meta_can_be_renamed_or_disabled() {
        let with = |meta: &str| {
            let json = MINIMAL.replace(
                r#""calls""#,
                &format!(r#""response":{{"meta":{meta}}},"calls""#),
            );
            parse(json.as_bytes()).map(|c| c.routes[0].response.meta.clone())
        };
        assert_eq!(with("null").unwrap(), None);
        assert_eq!(with(r#""status""#).unwrap().as_deref(), Some("status"));
        assert!(with("5").is_err());
    }

    #[test]
    fn invalid_json_is_reported() {
        assert!(err("{").starts_with("not valid JSON"));
        assert_eq!(
            err(r#"{"routes":[],"routes":[]}"#),
            r#"not valid JSON: duplicate key "routes" at byte 13"#
        );
        assert_eq!(err("[]"), "the configuration must be a JSON object");
    }

    #[test]
    fn fallback_keeps_any_json_value() {
        let json = MINIMAL.replace(
            r#""path":"/x""#,
            r#""path":"/x","fallback":{"items":[],"n":null}"#,
        );
        let config = parse(json.as_bytes()).unwrap();
        assert_eq!(
            config.routes[0].calls[0].fallback,
            Some(serde_json::json!({"items":[],"n":null}))
        );
    }
}
