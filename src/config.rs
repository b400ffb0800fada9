//! The configuration as the user wrote it (SPEC §2), read strictly.
//!
//! Every key is read by name through [`Fields`], so an error always says which route, call and
//! key is wrong, and a key nobody read is an error (a typo must never be silently ignored).
//! Meaning (names, templates, dependencies) is checked later, when the plan is compiled.

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
            $($variant),+
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

pub const DEFAULT_TIMEOUT_MS: u64 = 1000;
pub const DEFAULT_DEADLINE_MS: u64 = 3000;
pub const DEFAULT_MAX_BODY_BYTES: u64 = 1024 * 1024;
pub const DEFAULT_FORWARD_HEADERS: [&str; 3] = ["x-request-id", "traceparent", "tracestate"];
pub const DEFAULT_META_KEY: &str = "_meta";
pub const DEFAULT_FIELDS_PARAM: &str = "fields";
pub const DEFAULT_MAX_FAN_OUT: u64 = 32;

/// A configuration error: where it is (route, call, key) and why, printed as one log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub route: Option<String>,
    pub call: Option<String>,
    pub key: Option<String>,
    pub message: String,
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

/// Where in the configuration we are, for error messages.
#[derive(Debug, Clone, Default)]
pub struct Place {
    pub route: Option<String>,
    pub call: Option<String>,
}

impl Place {
    pub fn route(name: &str) -> Self {
        Place {
            route: Some(name.to_string()),
            call: None,
        }
    }

    pub fn call(&self, name: &str) -> Self {
        Place {
            route: self.route.clone(),
            call: Some(name.to_string()),
        }
    }

    pub fn error(&self, key: Option<&str>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            route: self.route.clone(),
            call: self.call.clone(),
            key: key.map(str::to_string),
            message: message.into(),
        }
    }
}

/// Values every route and call inherits unless it sets its own (SPEC §2.1).
#[derive(Debug, Clone, PartialEq)]
pub struct Defaults {
    pub timeout_ms: u64,
    pub deadline_ms: u64,
    pub max_body_bytes: u64,
    pub forward_headers: Vec<String>,
    pub expose_errors: bool,
    pub max_fan_out: u64,
    pub resilience: Resilience,
    pub wait_for: WaitFor,
    pub max_inflight: Option<u64>,
}

/// A setting that a lower level may inherit, replace, or switch off with `null`.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Setting<T> {
    #[default]
    Inherit,
    Off,
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
    pub retries: Setting<RetryConfig>,
    pub hedge_after_ms: Setting<u64>,
    pub cache: Setting<CacheConfig>,
    pub circuit_breaker: Setting<BreakerConfig>,
}

impl Resilience {
    pub fn over(&self, parent: &Resilience) -> Resilience {
        Resilience {
            retries: self.retries.over(&parent.retries),
            hedge_after_ms: self.hedge_after_ms.over(&parent.hedge_after_ms),
            cache: self.cache.over(&parent.cache),
            circuit_breaker: self.circuit_breaker.over(&parent.circuit_breaker),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Total attempts, the first included.
    pub attempts: u32,
    #[serde(default = "default_backoff_ms")]
    pub backoff_ms: u64,
    #[serde(default = "default_retry_on")]
    pub on: Vec<RetryOn>,
}

fn default_backoff_ms() -> u64 {
    25
}

fn default_retry_on() -> Vec<RetryOn> {
    vec![RetryOn::Connect, RetryOn::Timeout, RetryOn::ServerError]
}

string_enum!(RetryOn { Connect = "connect", Timeout = "timeout", ServerError = "5xx" });

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    pub ttl_ms: u64,
    #[serde(default)]
    pub stale_if_error_ms: u64,
    #[serde(default)]
    pub vary: Vec<String>,
    #[serde(default = "default_max_entries")]
    pub max_entries: u64,
}

fn default_max_entries() -> u64 {
    1024
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerConfig {
    pub failures: u32,
    pub open_ms: u64,
}

/// Route `wait_for` (SPEC §6): how many successful calls are enough to answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WaitFor {
    #[default]
    All,
    Any,
    Quorum,
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
            resilience: Resilience::default(),
            wait_for: WaitFor::All,
            max_inflight: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub defaults: Defaults,
    pub routes: Vec<RouteConfig>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RouteConfig {
    pub name: String,
    pub path: String,
    pub methods: Vec<String>,
    pub match_headers: Vec<(String, String)>,
    pub deadline_ms: Option<u64>,
    pub timeout_ms: Option<u64>,
    pub max_body_bytes: Option<u64>,
    pub forward_headers: Vec<String>,
    pub expose_errors: Option<bool>,
    pub max_fan_out: Option<u64>,
    pub resilience: Resilience,
    pub wait_for: Option<WaitFor>,
    pub max_inflight: Setting<u64>,
    /// Query parameter that selects calls; `None` when the user set `"fields_param": null`.
    pub fields_param: Option<String>,
    pub calls: Vec<CallConfig>,
    pub response: ResponseConfig,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ResponseConfig {
    /// Key of the completeness object; `None` when the user set `"meta": null`.
    pub meta: Option<String>,
    pub layout: Layout,
    /// `concat` only: dot path inside each element to sort by.
    pub sort_by: Option<String>,
    pub order: Order,
    /// `concat` only: keep at most this many elements.
    pub limit: Option<u64>,
    /// Output path and operation (`{"count": "reviews.items"}`), checked when compiled.
    pub derive: Vec<(String, Value)>,
    pub headers: Vec<(String, String)>,
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

string_enum!(Order { Asc = "asc", Desc = "desc" });

/// Copy every value of an upstream response header to the client's response.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderFrom {
    pub call: String,
    pub name: String,
}

string_enum!(Format { Json = "json", Text = "text" });

#[derive(Debug, Clone, PartialEq)]
pub struct CallConfig {
    pub name: String,
    pub cluster: String,
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub forward_headers: Vec<String>,
    pub authority: Option<String>,
    pub timeout_ms: Option<u64>,
    pub required: bool,
    pub fallback: Option<Value>,
    pub format: Format,
    pub max_body_bytes: Option<u64>,
    pub after: Vec<String>,
    /// Template JSON, or the string `{request.body}` (SPEC §3.4).
    pub body: Option<Value>,
    /// `calls.X.path[*].field`: one call per distinct value (SPEC §3.5).
    pub for_each: Option<String>,
    pub max_fan_out: Option<u64>,
    pub join: Option<JoinConfig>,
    /// Allows retries and hedging (SPEC §6) of a method that is not idempotent.
    pub unsafe_repeat: bool,
    /// Per-call shaping (SPEC §5), applied in this order.
    pub extract: Option<String>,
    pub select: Vec<String>,
    pub omit: Vec<String>,
    pub rename: Vec<(String, String)>,
    /// `as`: the output key instead of the call's name.
    pub output_key: Option<String>,
    pub resilience: Resilience,
}

/// Puts each per-item result into the matching elements of an earlier call's array.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinConfig {
    /// `X.path.to.array`, X being the call `for_each` reads.
    pub into: String,
    /// Dot path, inside each element, of the value to match against the item.
    pub on: String,
    /// Key under which an element receives its item's result.
    #[serde(rename = "as")]
    pub key: String,
}

/// Parses the plugin configuration bytes.
pub fn parse(bytes: &[u8]) -> Result<Config, ConfigError> {
    let top = Place::default();
    let value: Value = crate::json_number::parse(bytes)
        .map_err(|e| top.error(None, format!("not valid JSON: {e}")))?;
    let mut fields = Fields::new(&value, &top, None, "the configuration")?;
    let defaults = match fields.take("defaults") {
        Some(v) => parse_defaults(v)?,
        None => Defaults::default(),
    };
    let routes_value = fields
        .take("routes")
        .ok_or_else(|| top.error(Some("routes"), "is required (a list of routes)"))?;
    fields.finish()?;
    let Value::Array(route_values) = routes_value else {
        return Err(top.error(Some("routes"), "must be a list of routes"));
    };
    if route_values.is_empty() {
        return Err(top.error(Some("routes"), "must name at least one route"));
    }
    let routes = route_values
        .iter()
        .enumerate()
        .map(|(i, v)| parse_route(i, v))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Config { defaults, routes })
}

fn parse_defaults(value: &Value) -> Result<Defaults, ConfigError> {
    let place = Place::default();
    let mut fields = Fields::new(value, &place, Some("defaults"), "defaults")?;
    let builtin = Defaults::default();
    let defaults = Defaults {
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
        resilience: resilience(&mut fields)?,
        wait_for: fields.opt("wait_for")?.unwrap_or_default(),
        max_inflight: fields.opt("max_inflight")?,
    };
    fields.finish()?;
    Ok(defaults)
}

fn resilience(fields: &mut Fields<'_>) -> Result<Resilience, ConfigError> {
    Ok(Resilience {
        retries: fields.object_setting("retries")?,
        hedge_after_ms: fields.setting("hedge_after_ms")?,
        cache: fields.object_setting("cache")?,
        circuit_breaker: fields.object_setting("circuit_breaker")?,
    })
}

/// A name for error messages before the entry itself has been read.
fn entry_name(value: &Value, kind: &str, index: usize) -> String {
    match value.get("name").and_then(Value::as_str) {
        Some(name) => name.to_string(),
        None => format!("{kind}[{index}]"),
    }
}

fn parse_route(index: usize, value: &Value) -> Result<RouteConfig, ConfigError> {
    let place = Place::route(&entry_name(value, "routes", index));
    let mut fields = Fields::new(value, &place, None, "a route")?;
    let name: String = fields.req("name")?;
    let match_value = fields
        .take("match")
        .ok_or_else(|| place.error(Some("match"), "is required (at least match.path)"))?;
    let (path, methods, match_headers) = parse_match(match_value, &place)?;
    let calls_value = fields
        .take("calls")
        .ok_or_else(|| place.error(Some("calls"), "is required (a list of calls)"))?;
    let Value::Array(call_values) = calls_value else {
        return Err(place.error(Some("calls"), "must be a list of calls"));
    };
    let calls = call_values
        .iter()
        .enumerate()
        .map(|(i, v)| parse_call(&place, i, v))
        .collect::<Result<Vec<_>, _>>()?;
    let response = match fields.take("response") {
        Some(v) => parse_response(v, &place)?,
        None => ResponseConfig::default(),
    };
    let route = RouteConfig {
        name,
        path,
        methods,
        match_headers,
        deadline_ms: fields.opt("deadline_ms")?,
        timeout_ms: fields.opt("timeout_ms")?,
        max_body_bytes: fields.opt("max_body_bytes")?,
        forward_headers: fields.opt("forward_headers")?.unwrap_or_default(),
        expose_errors: fields.opt("expose_errors")?,
        max_fan_out: fields.opt("max_fan_out")?,
        resilience: resilience(&mut fields)?,
        wait_for: fields.opt("wait_for")?,
        max_inflight: fields.setting("max_inflight")?,
        fields_param: nullable_string(&mut fields, "fields_param", DEFAULT_FIELDS_PARAM, &place)?,
        calls,
        response,
    };
    fields.finish()?;
    Ok(route)
}

type MatchParts = (String, Vec<String>, Vec<(String, String)>);

fn parse_match(value: &Value, place: &Place) -> Result<MatchParts, ConfigError> {
    let mut fields = Fields::new(value, place, Some("match"), "match")?;
    let path: String = fields.req("path")?;
    let methods: Vec<String> = fields
        .opt("methods")?
        .unwrap_or_else(|| vec!["GET".to_string()]);
    let headers: Map<String, Value> = fields.opt("headers")?.unwrap_or_default();
    fields.finish()?;
    let headers = headers
        .into_iter()
        .map(|(name, v)| match v {
            Value::String(s) => Ok((name, s)),
            _ => Err(place.error(
                Some("match.headers"),
                format!("value of header \"{name}\" must be a string"),
            )),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((path, methods, headers))
}

/// A string key that may be set to `null` to turn its feature off.
fn nullable_string(
    fields: &mut Fields<'_>,
    key: &'static str,
    default: &str,
    place: &Place,
) -> Result<Option<String>, ConfigError> {
    match fields.take(key) {
        None => Ok(Some(default.to_string())),
        Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if !s.is_empty() => Ok(Some(s.clone())),
        Some(_) => Err(place.error(
            Some(&fields.key_name(key)),
            "must be a non-empty string, or null to turn it off",
        )),
    }
}

fn parse_response(value: &Value, place: &Place) -> Result<ResponseConfig, ConfigError> {
    let mut fields = Fields::new(value, place, Some("response"), "response")?;
    let meta = nullable_string(&mut fields, "meta", DEFAULT_META_KEY, place)?;
    let derive: Map<String, Value> = fields.opt("derive")?.unwrap_or_default();
    let response = ResponseConfig {
        meta,
        layout: fields.opt("layout")?.unwrap_or(Layout::Nested),
        sort_by: fields.opt("sort_by")?,
        order: fields.opt("order")?.unwrap_or(Order::Asc),
        limit: fields.opt("limit")?,
        derive: derive.into_iter().collect(),
        headers: string_map(&mut fields, "headers", place)?,
        headers_from: fields.list_of_objects("headers_from")?,
    };
    fields.finish()?;
    Ok(response)
}

/// An object of string values (`{"name": "value"}`), in the order written.
fn string_map(
    fields: &mut Fields<'_>,
    key: &'static str,
    place: &Place,
) -> Result<Vec<(String, String)>, ConfigError> {
    let map: Map<String, Value> = fields.opt(key)?.unwrap_or_default();
    map.into_iter()
        .map(|(name, v)| match v {
            Value::String(s) => Ok((name, s)),
            _ => Err(place.error(
                Some(&fields.key_name(key)),
                format!("value of \"{name}\" must be a string"),
            )),
        })
        .collect()
}

fn parse_call(route: &Place, index: usize, value: &Value) -> Result<CallConfig, ConfigError> {
    let place = route.call(&entry_name(value, "calls", index));
    let mut fields = Fields::new(value, &place, None, "a call")?;
    let headers = string_map(&mut fields, "headers", &place)?;
    let call = CallConfig {
        name: fields.req("name")?,
        cluster: fields.req("cluster")?,
        method: fields.opt("method")?.unwrap_or_else(|| "GET".to_string()),
        path: fields.req("path")?,
        headers,
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
        unsafe_repeat: fields.opt("unsafe")?.unwrap_or(false),
        extract: fields.opt("extract")?,
        select: fields.opt("select")?.unwrap_or_default(),
        omit: fields.opt("omit")?.unwrap_or_default(),
        rename: string_map(&mut fields, "rename", &place)?,
        output_key: fields.opt("as")?,
        resilience: resilience(&mut fields)?,
    };
    fields.finish()?;
    Ok(call)
}

/// Reads the keys of one JSON object by name and reports the ones nobody asked for.
struct Fields<'a> {
    object: &'a Map<String, Value>,
    place: &'a Place,
    prefix: Option<&'static str>,
    read: Vec<&'static str>,
}

impl<'a> Fields<'a> {
    fn new(
        value: &'a Value,
        place: &'a Place,
        prefix: Option<&'static str>,
        what: &str,
    ) -> Result<Self, ConfigError> {
        match value {
            Value::Object(object) => Ok(Fields {
                object,
                place,
                prefix,
                read: Vec::new(),
            }),
            _ => Err(place.error(prefix, format!("{what} must be a JSON object"))),
        }
    }

    fn key_name(&self, key: &str) -> String {
        match self.prefix {
            Some(prefix) => format!("{prefix}.{key}"),
            None => key.to_string(),
        }
    }

    fn take(&mut self, key: &'static str) -> Option<&'a Value> {
        self.read.push(key);
        self.object.get(key)
    }

    fn opt<T: DeserializeOwned>(&mut self, key: &'static str) -> Result<Option<T>, ConfigError> {
        let Some(value) = self.take(key) else {
            return Ok(None);
        };
        typed(value)
            .map(Some)
            .map_err(|e| self.place.error(Some(&self.key_name(key)), e))
    }

    /// Like `opt`, for keys whose value must be a JSON object (serde would also fill a
    /// struct from an array, in field order).
    fn object<T: DeserializeOwned>(&mut self, key: &'static str) -> Result<Option<T>, ConfigError> {
        match self.object.get(key) {
            None | Some(Value::Object(_)) => self.opt(key),
            Some(_) => Err(self
                .place
                .error(Some(&self.key_name(key)), "must be a JSON object")),
        }
    }

    /// `setting` for options whose value is an object.
    fn object_setting<T: DeserializeOwned>(
        &mut self,
        key: &'static str,
    ) -> Result<Setting<T>, ConfigError> {
        match self.object.get(key) {
            None | Some(Value::Null) | Some(Value::Object(_)) => self.setting(key),
            Some(_) => Err(self.place.error(
                Some(&self.key_name(key)),
                "must be a JSON object, or null to turn it off",
            )),
        }
    }

    /// A list of JSON objects (absent: empty).
    fn list_of_objects<T: DeserializeOwned>(
        &mut self,
        key: &'static str,
    ) -> Result<Vec<T>, ConfigError> {
        if let Some(Value::Array(items)) = self.object.get(key) {
            if items.iter().any(|item| !item.is_object()) {
                return Err(self
                    .place
                    .error(Some(&self.key_name(key)), "must be a list of JSON objects"));
            }
        }
        Ok(self.opt(key)?.unwrap_or_default())
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
                .map_err(|e| self.place.error(Some(&self.key_name(key)), e)),
        }
    }

    fn req<T: DeserializeOwned>(&mut self, key: &'static str) -> Result<T, ConfigError> {
        self.opt(key)?
            .ok_or_else(|| self.place.error(Some(&self.key_name(key)), "is required"))
    }

    fn finish(self) -> Result<(), ConfigError> {
        let unknown = self
            .object
            .keys()
            .find(|k| !self.read.contains(&k.as_str()));
        let Some(unknown) = unknown else {
            return Ok(());
        };
        let hint = closest(unknown, &self.read)
            .map(|k| format!(" (did you mean \"{k}\"?)"))
            .unwrap_or_default();
        Err(self.place.error(
            Some(&self.key_name(unknown)),
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

/// The known key a typo most likely meant, if any is close enough.
fn closest<'k>(typo: &str, known: &[&'k str]) -> Option<&'k str> {
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
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
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
        assert_eq!(route.methods, vec!["GET"]);
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
        assert!(
            with("5", "-2").starts_with(
                r#"route "p" call "c" key "retries": invalid value: integer `-2`, expected u32"#
            ),
            "{}",
            with("5", "-2")
        );
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
