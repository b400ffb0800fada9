//! Templates (SPEC §3): `{source.name}` placeholders in call paths, header values and body
//! strings, parsed once at configure time and rendered per request with the encoding rules
//! of §3.1.

use super::matcher::Capture;
use super::CallId;
use crate::encoding::percent_encode_into;
use crate::json_path::{Found, JsonPath};
use serde_json::Value;

/// Where a placeholder's value comes from. Client inputs are resolved to slots of the route.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// `{path.<capture>}`: the capture at this place in `match.path`'s captures.
    Path(usize),
    /// `{query.<param>}`: the query parameter in this slot of
    /// [`Route::query_params`](super::Route::query_params).
    Query(usize),
    /// `{header.<name>}`: the client header in this slot of
    /// [`Route::headers`](super::Route::headers).
    Header(usize),
    /// `{calls.<call>.<path>}`: a value from an earlier call's body (or its fallback).
    Call {
        /// The call read; it becomes a dependency.
        call: CallId,
        /// Where in its body (the empty path: the whole body).
        path: JsonPath,
    },
    /// `{item}`: the value a `for_each` call is made for.
    Item,
    /// In a batch join (SPEC §3.5), the placeholder that reads the keys joined on
    /// (`{calls.posts.items[*].author}`): it writes the distinct keys of the request's chunk,
    /// which [`Inputs::item`] holds as an array, instead of every value of the array.
    Batch,
    /// `{request.body.<path>}`: a value from the client's JSON body.
    RequestBody(JsonPath),
}

/// One `{source.name|default}` of a template.
#[derive(Debug, Clone, PartialEq)]
pub struct Placeholder {
    /// Where the value comes from.
    pub source: Source,
    /// The text after `|`, used when the value is absent or empty (`None`: no default).
    pub default: Option<String>,
    /// The reference as written (`query.currency`), for error messages.
    pub text: String,
}

#[derive(Debug, Clone, PartialEq)]
enum Piece {
    Literal(String),
    Value(Placeholder),
}

/// A text with placeholders (SPEC §3): a call's path, a header value, a string in a body.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    pieces: Vec<Piece>,
}

/// Turns source names into slots; implemented by the route compiler.
pub trait Resolve {
    /// The place of the capture `name` in `match.path`; `None` if there is no such capture.
    fn capture(&mut self, name: &str) -> Option<usize>;
    /// The slot of query parameter `name`, added to the route's list if new.
    fn query(&mut self, name: &str) -> usize;
    /// The slot of client header `name` (lowercase), added to the route's list if new.
    fn header(&mut self, name: &str) -> usize;
    /// The call named `name`; an error if the route has no such call, or if it is the call
    /// being compiled.
    fn call(&mut self, name: &str) -> Result<CallId, String>;
    /// Whether `{calls.<call>.<path>}` reads the keys of the call's batch join, so that it
    /// becomes [`Source::Batch`]. Resolvers that compile no batch join keep the default.
    fn batch_keys(&mut self, _call: CallId, _path: &JsonPath) -> bool {
        false
    }
    /// `{item}` is allowed only in calls with `for_each`.
    fn item(&mut self) -> Result<(), String>;
    /// Notes that the route reads fields of the client's JSON body.
    fn request_body_field(&mut self);
}

/// The per-request values a template can read.
pub trait Inputs {
    /// The path capture at this place (see [`Source::Path`]).
    fn capture(&self, slot: usize) -> Option<&Capture>;
    /// The query parameter in this slot, decoded. Outer `None`: absent; inner `None`: present
    /// but not valid UTF-8.
    fn query(&self, slot: usize) -> Option<Option<&str>>;
    /// The client header in this slot; `None` when absent or not UTF-8.
    fn header(&self, slot: usize) -> Option<&str>;
    /// The JSON body of an earlier call (or its fallback).
    fn call_body(&self, call: CallId) -> Option<&Value>;
    /// What the current request is made for: a `for_each` item, or the distinct keys of a
    /// batch join's chunk, as one array.
    fn item(&self) -> Option<&Value>;
    /// The client's body parsed as JSON: `None` without a body, `Some(Err)` if it is not JSON.
    fn request_json(&self) -> Option<Result<&Value, ()>>;
}

/// Why a template could not be rendered; maps to reasons `missing_input` / `invalid_input`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RenderError {
    /// A value is absent (or empty, or `null`) and its placeholder has no default.
    Missing {
        /// The placeholder as written (`query.q`).
        input: String,
        /// It reads the client's request (path, query, header, body), not another call.
        from_client: bool,
    },
    /// A value is present but cannot be used here (see `Reason::InvalidInput`).
    Invalid {
        /// The placeholder as written (`query.q`).
        input: String,
        /// It reads the client's request (path, query, header, body), not another call.
        from_client: bool,
    },
}

/// Where the rendered text goes, which decides how values are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A call's `:path`: every value percent-encoded (SPEC §3.1).
    Path,
    /// A header value: values as they are; CR, LF or NUL make the value invalid.
    Header,
    /// Text inside a JSON string: written as is (JSON escaping comes later).
    JsonText,
}

impl Template {
    /// Parses `text` with its `{source.name|default}` placeholders, resolving each source to
    /// a slot with `resolve`. The error is the reason only (`placeholder "{…}": …`, an
    /// unmatched brace); the caller places it at its key.
    pub fn parse(text: &str, resolve: &mut dyn Resolve) -> Result<Template, String> {
        let mut pieces = Vec::new();
        let mut rest = text;
        while !rest.is_empty() {
            let Some(open) = rest.find(['{', '}']) else {
                pieces.push(Piece::Literal(rest.to_string()));
                break;
            };
            let (literal, from_brace) = rest.split_at(open);
            if from_brace.starts_with('}') {
                return Err("unmatched \"}\"".to_string());
            }
            if !literal.is_empty() {
                pieces.push(Piece::Literal(literal.to_string()));
            }
            let Some(close) = from_brace.find('}') else {
                return Err("unclosed \"{\"".to_string());
            };
            let inner = from_brace.get(1..close).unwrap_or_default();
            pieces.push(Piece::Value(parse_placeholder(inner, resolve)?));
            rest = from_brace.get(close + 1..).unwrap_or_default();
        }
        Ok(Template { pieces })
    }

    /// The placeholders, in order.
    pub fn placeholders(&self) -> impl Iterator<Item = &Placeholder> {
        self.pieces.iter().filter_map(|piece| match piece {
            Piece::Value(p) => Some(p),
            Piece::Literal(_) => None,
        })
    }

    /// The placeholder, when the template is exactly one placeholder and nothing else.
    pub fn as_single_placeholder(&self) -> Option<&Placeholder> {
        match self.pieces.as_slice() {
            [Piece::Value(placeholder)] => Some(placeholder),
            _ => None,
        }
    }

    /// The text between the placeholders, in order.
    pub fn literals(&self) -> impl Iterator<Item = &str> {
        self.pieces.iter().filter_map(|piece| match piece {
            Piece::Literal(text) => Some(text.as_str()),
            Piece::Value(_) => None,
        })
    }

    /// The text for one request: literals as written, values from `inputs` encoded for
    /// `target` (SPEC §3.1). Fails when a value is missing without a default, or unusable.
    pub fn render(&self, inputs: &dyn Inputs, target: Target) -> Result<String, RenderError> {
        let mut out = String::new();
        let mut in_query = false;
        for piece in &self.pieces {
            match piece {
                Piece::Literal(text) => {
                    in_query = in_query || text.contains('?');
                    out.push_str(text);
                }
                Piece::Value(placeholder) => {
                    let value = resolve_value(placeholder, inputs)?;
                    let invalid = || placeholder.invalid();
                    match target {
                        Target::Path => {
                            write_encoded(&value, in_query, &mut out).ok_or_else(invalid)?
                        }
                        Target::Header => write_header(&value, &mut out).ok_or_else(invalid)?,
                        Target::JsonText => write_plain(&value, &mut out),
                    }
                }
            }
        }
        Ok(out)
    }
}

impl Placeholder {
    fn reads_client_input(&self) -> bool {
        !matches!(
            self.source,
            Source::Call { .. } | Source::Item | Source::Batch
        )
    }

    /// The value a condition reads (SPEC §3.6): client input as text, a value of a call's or
    /// the client's JSON body as JSON; `None` when absent. An input a template would refuse
    /// as invalid (not UTF-8 once decoded, a client body that is not JSON) is an error.
    pub fn read<'a>(&self, inputs: &'a dyn Inputs) -> Result<Option<Read<'a>>, RenderError> {
        Ok(match self.lookup(inputs)? {
            Some(Raw::Text(text)) => Some(Read::Text(text.into())),
            Some(Raw::Segments(segments)) => Some(Read::Text(segments.join("/").into())),
            Some(Raw::Json(Found::One(value))) => Some(Read::Json(value)),
            // Conditions read one value: `[*]` is refused when they are compiled.
            Some(Raw::Json(Found::Nothing | Found::Many(_))) | None => None,
        })
    }

    /// The value as JSON, keeping its type (SPEC §3.4: a body leaf that is exactly one
    /// placeholder). Client text stays a string; `null` and empty values are absent.
    pub fn resolve_json(&self, inputs: &dyn Inputs) -> Result<Value, RenderError> {
        let found = match self.lookup(inputs)? {
            Some(Raw::Text(text)) => Some(Value::String(text.to_string())),
            Some(Raw::Segments(segments)) => Some(Value::String(segments.join("/"))),
            Some(Raw::Json(found)) => owned(found),
            None => None,
        };
        let present = found.filter(|v| !is_absent(v));
        match (present, &self.default) {
            (Some(value), _) => Ok(value),
            (None, Some(default)) => Ok(Value::String(default.clone())),
            (None, None) => Err(self.missing()),
        }
    }

    /// What the source holds for this request; an error when it holds something unusable
    /// (not UTF-8 once decoded, or a client body that is not JSON).
    fn lookup<'a>(&self, inputs: &'a dyn Inputs) -> Result<Option<Raw<'a>>, RenderError> {
        Ok(match &self.source {
            Source::Path(slot) => match inputs.capture(*slot) {
                Some(Capture::Segment(s)) => Some(Raw::Text(s)),
                Some(Capture::Rest(segments)) => Some(Raw::Segments(segments)),
                Some(Capture::Invalid) => return Err(self.invalid()),
                None => None,
            },
            Source::Query(slot) => match inputs.query(*slot) {
                Some(Some(s)) => Some(Raw::Text(s)),
                Some(None) => return Err(self.invalid()),
                None => None,
            },
            Source::Header(slot) => inputs.header(*slot).map(Raw::Text),
            Source::Call { call, path } => inputs
                .call_body(*call)
                .map(|body| Raw::Json(path.find(body))),
            Source::Item | Source::Batch => inputs.item().map(|value| Raw::Json(Found::One(value))),
            Source::RequestBody(path) => match inputs.request_json() {
                Some(Ok(body)) => Some(Raw::Json(path.find(body))),
                Some(Err(())) => return Err(self.invalid()),
                None => None,
            },
        })
    }

    fn missing(&self) -> RenderError {
        RenderError::Missing {
            input: self.text.clone(),
            from_client: self.reads_client_input(),
        }
    }

    fn invalid(&self) -> RenderError {
        RenderError::Invalid {
            input: self.text.clone(),
            from_client: self.reads_client_input(),
        }
    }
}

fn parse_placeholder(inner: &str, resolve: &mut dyn Resolve) -> Result<Placeholder, String> {
    let (reference, default) = match inner.split_once('|') {
        Some((reference, default)) => (reference, Some(default.to_string())),
        None => (inner, None),
    };
    let source = parse_source(reference, resolve)
        .map_err(|why| format!("placeholder \"{{{inner}}}\": {why}"))?;
    Ok(Placeholder {
        source,
        default,
        text: reference.to_string(),
    })
}

/// A reference in the source syntax of templates (`query.page`, `calls.product.kind`,
/// without braces or default), as conditions write it (SPEC §3.6). The error says why, for the
/// caller to place.
pub fn parse_reference(reference: &str, resolve: &mut dyn Resolve) -> Result<Placeholder, String> {
    Ok(Placeholder {
        source: parse_source(reference, resolve)?,
        default: None,
        text: reference.to_string(),
    })
}

/// The sources a reference may start with, for did-you-mean hints.
const SOURCES: [&str; 5] = ["path", "query", "header", "calls", "request"];

fn parse_source(reference: &str, resolve: &mut dyn Resolve) -> Result<Source, String> {
    if reference == "item" {
        resolve.item()?;
        return Ok(Source::Item);
    }
    if reference == "request.body" {
        return Err(
            "the whole client body can only be a call's entire body: \"body\": \"{request.body}\""
                .to_string(),
        );
    }
    let Some((kind, name)) = reference.split_once('.') else {
        return Err(
            "expected path.<capture>, query.<param>, header.<name> or calls.<call>.<path>"
                .to_string(),
        );
    };
    if name.is_empty() {
        return Err("the name after the source is empty".to_string());
    }
    Ok(match kind {
        "path" => Source::Path(
            resolve
                .capture(name)
                .ok_or_else(|| "match.path has no such capture".to_string())?,
        ),
        "query" => Source::Query(resolve.query(name)),
        "header" => {
            if !is_header_name(name) {
                return Err("not a valid header name".to_string());
            }
            Source::Header(resolve.header(&name.to_ascii_lowercase()))
        }
        "calls" => {
            let (call, path) = name.split_once('.').unwrap_or((name, ""));
            let call = resolve.call(call)?;
            let path = JsonPath::parse(path)?;
            if resolve.batch_keys(call, &path) {
                Source::Batch
            } else {
                Source::Call { call, path }
            }
        }
        "request" => {
            let Some(path) = name.strip_prefix("body.") else {
                return Err(
                    "use request.body.<field> (or the whole body as a call's body)".to_string(),
                );
            };
            resolve.request_body_field();
            Source::RequestBody(JsonPath::parse(path)?)
        }
        _ => {
            let hint = crate::config::closest(kind, &SOURCES)
                .map(|known| format!("did you mean \"{known}.\"? "))
                .unwrap_or_default();
            return Err(format!(
                "unknown source ({hint}use path., query., header., calls., request.body. or item)"
            ));
        }
    })
}

/// Whether `name` is a valid HTTP header name (an RFC 9110 token).
pub fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// A value ready to be written: one text, or a list (from `[*]` or a JSON array).
enum Resolved<'a> {
    One(std::borrow::Cow<'a, str>),
    Segments(&'a [String]),
    List(Vec<std::borrow::Cow<'a, str>>),
}

/// A value as a condition reads it (SPEC §3.6).
#[derive(Debug, PartialEq)]
pub enum Read<'a> {
    /// Client input (path capture, query parameter, header): text.
    Text(std::borrow::Cow<'a, str>),
    /// A value of an earlier call's (or the client's) JSON body.
    Json(&'a Value),
}

/// What a source holds, before it is written anywhere.
enum Raw<'a> {
    Text(&'a str),
    Segments(&'a [String]),
    Json(Found<'a>),
}

fn resolve_value<'a>(
    placeholder: &'a Placeholder,
    inputs: &'a dyn Inputs,
) -> Result<Resolved<'a>, RenderError> {
    let found = match placeholder.lookup(inputs)? {
        Some(Raw::Text(text)) => Some(Resolved::One(text.into())),
        Some(Raw::Segments(segments)) => Some(Resolved::Segments(segments)),
        Some(Raw::Json(found)) => from_found(Some(found), placeholder)?,
        None => None,
    };
    let present = match found {
        Some(Resolved::One(s)) if s.is_empty() => None,
        other => other,
    };
    match (present, &placeholder.default) {
        (Some(value), _) => Ok(value),
        (None, Some(default)) => Ok(Resolved::One(default.as_str().into())),
        (None, None) => Err(placeholder.missing()),
    }
}

fn from_found<'a>(
    found: Option<Found<'a>>,
    placeholder: &Placeholder,
) -> Result<Option<Resolved<'a>>, RenderError> {
    match found {
        None | Some(Found::Nothing) => Ok(None),
        Some(Found::One(value)) => from_json(value, placeholder),
        Some(Found::Many(values)) => from_json_list(values.into_iter(), placeholder),
    }
}

/// What a path found, as one owned JSON value (`[*]` gives an array).
fn owned(found: Found<'_>) -> Option<Value> {
    match found {
        Found::Nothing => None,
        Found::One(value) => Some(value.clone()),
        Found::Many(values) => Some(Value::Array(values.into_iter().cloned().collect())),
    }
}

/// `null`, an empty string and an empty array count as absent, so defaults apply.
fn is_absent(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Array(items) => items.is_empty(),
        _ => false,
    }
}

/// JSON scalars are written as JSON writes them; null is absent; objects are refused.
fn from_json<'a>(
    value: &'a Value,
    placeholder: &Placeholder,
) -> Result<Option<Resolved<'a>>, RenderError> {
    match value {
        Value::Array(items) => from_json_list(items.iter(), placeholder),
        other => scalar(other, placeholder).map(|s| s.map(Resolved::One)),
    }
}

fn from_json_list<'a>(
    values: impl Iterator<Item = &'a Value>,
    placeholder: &Placeholder,
) -> Result<Option<Resolved<'a>>, RenderError> {
    let mut list = Vec::new();
    for value in values {
        if let Some(text) = scalar(value, placeholder)? {
            list.push(text);
        }
    }
    Ok((!list.is_empty()).then_some(Resolved::List(list)))
}

fn scalar<'a>(
    value: &'a Value,
    placeholder: &Placeholder,
) -> Result<Option<std::borrow::Cow<'a, str>>, RenderError> {
    match value {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s.as_str().into())),
        Value::Bool(b) => Ok(Some(if *b { "true" } else { "false" }.into())),
        Value::Number(n) => Ok(Some(n.to_string().into())),
        Value::Array(_) | Value::Object(_) => Err(placeholder.invalid()),
    }
}

/// Path/query encoding. `None` when a `{rest*}` capture would climb with `.` or `..`.
fn write_encoded(value: &Resolved<'_>, in_query: bool, out: &mut String) -> Option<()> {
    match value {
        Resolved::One(text) => percent_encode_into(text, out),
        Resolved::List(items) => {
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                percent_encode_into(item, out);
            }
        }
        Resolved::Segments(segments) => {
            for (i, segment) in segments.iter().enumerate() {
                if i > 0 {
                    out.push_str(if in_query { "%2F" } else { "/" });
                }
                if !in_query && (segment == "." || segment == "..") {
                    return None;
                }
                percent_encode_into(segment, out);
            }
        }
    }
    Some(())
}

/// Text inside a JSON string: values as they are (JSON escaping happens on serialisation).
fn write_plain(value: &Resolved<'_>, out: &mut String) {
    match value {
        Resolved::One(text) => out.push_str(text),
        Resolved::List(items) => out.push_str(&items.join(",")),
        Resolved::Segments(segments) => out.push_str(&segments.join("/")),
    }
}

/// Header values are written as they are; CR, LF and NUL are refused (SPEC §3.1).
fn write_header(value: &Resolved<'_>, out: &mut String) -> Option<()> {
    let start = out.len();
    match value {
        Resolved::One(text) => out.push_str(text),
        Resolved::List(items) => out.push_str(&items.join(",")),
        Resolved::Segments(segments) => out.push_str(&segments.join("/")),
    }
    let written = out.get(start..).unwrap_or_default();
    (!written.contains(['\r', '\n', '\0'])).then_some(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(Default)]
    struct Names {
        queries: Vec<String>,
        headers: Vec<String>,
    }

    impl Resolve for Names {
        fn capture(&mut self, name: &str) -> Option<usize> {
            ["id", "rest"].iter().position(|n| *n == name)
        }
        fn query(&mut self, name: &str) -> usize {
            intern(&mut self.queries, name)
        }
        fn header(&mut self, name: &str) -> usize {
            intern(&mut self.headers, name)
        }
        fn call(&mut self, name: &str) -> Result<CallId, String> {
            ["product", "user"]
                .iter()
                .position(|n| *n == name)
                .map(CallId::new)
                .ok_or_else(|| format!("no call named \"{name}\""))
        }
        fn item(&mut self) -> Result<(), String> {
            Ok(())
        }
        fn request_body_field(&mut self) {}
    }

    fn intern(list: &mut Vec<String>, name: &str) -> usize {
        list.iter().position(|n| n == name).unwrap_or_else(|| {
            list.push(name.to_string());
            list.len() - 1
        })
    }

    #[derive(Default)]
    struct Values {
        captures: Vec<Capture>,
        queries: Vec<Option<Option<String>>>,
        headers: Vec<Option<String>>,
        bodies: Vec<Option<Value>>,
        item: Option<Value>,
        request: Option<Result<Value, ()>>,
    }

    impl Inputs for Values {
        fn capture(&self, slot: usize) -> Option<&Capture> {
            self.captures.get(slot)
        }
        fn query(&self, slot: usize) -> Option<Option<&str>> {
            self.queries.get(slot)?.as_ref().map(|v| v.as_deref())
        }
        fn header(&self, slot: usize) -> Option<&str> {
            self.headers.get(slot)?.as_deref()
        }
        fn call_body(&self, call: CallId) -> Option<&Value> {
            self.bodies.get(call.index())?.as_ref()
        }
        fn item(&self) -> Option<&Value> {
            self.item.as_ref()
        }
        fn request_json(&self) -> Option<Result<&Value, ()>> {
            self.request.as_ref().map(|r| r.as_ref().map_err(|_| ()))
        }
    }

    fn parse(text: &str) -> Template {
        Template::parse(text, &mut Names::default()).unwrap()
    }

    fn values() -> Values {
        Values {
            captures: vec![
                Capture::Segment("../admin?x=1#f".into()),
                Capture::Rest(vec!["a b".into(), "c".into()]),
            ],
            queries: vec![Some(Some("USD".into()))],
            headers: vec![Some("v1".into())],
            bodies: vec![
                Some(
                    json!({"owner": {"id": 7}, "tags": ["a b", "c"], "flag": true, "obj": {"x": 1}, "items": [{"id": 1}, {"id": 2}]}),
                ),
                None,
            ],
            item: Some(json!("u/1")),
            request: Some(Ok(json!({"user": {"id": 5, "tags": ["x"]}, "note": ""}))),
        }
    }

    #[test]
    fn path_values_are_encoded_so_they_stay_data() {
        let t = parse("/products/{path.id}?currency={query.currency}");
        assert_eq!(
            t.render(&values(), Target::Path).unwrap(),
            "/products/..%2Fadmin%3Fx%3D1%23f?currency=USD"
        );
    }

    #[test]
    fn rest_captures_keep_their_segments_in_a_path_only() {
        let t = parse("/files/{path.rest}?again={path.rest}");
        assert_eq!(
            t.render(&values(), Target::Path).unwrap(),
            "/files/a%20b/c?again=a%20b%2Fc"
        );
        let mut climbing = values();
        climbing.captures[1] = Capture::Rest(vec!["..".into(), "etc".into()]);
        assert!(matches!(
            parse("/files/{path.rest}").render(&climbing, Target::Path),
            Err(RenderError::Invalid {
                from_client: true,
                ..
            })
        ));
    }

    #[test]
    fn defaults_apply_when_absent_or_empty() {
        let t = parse("/p?c={query.missing|EUR}&l={header.accept-language|en gb}");
        assert_eq!(
            t.render(&Values::default(), Target::Path).unwrap(),
            "/p?c=EUR&l=en%20gb"
        );
        let mut empty = values();
        empty.queries = vec![None, Some(Some(String::new()))];
        assert_eq!(
            parse("/{query.b|d}").render(&empty, Target::Path).unwrap(),
            "/d"
        );
    }

    #[test]
    fn missing_client_input_is_reported_by_name() {
        let err = parse("/p/{query.q}")
            .render(&Values::default(), Target::Path)
            .unwrap_err();
        assert_eq!(
            err,
            RenderError::Missing {
                input: "query.q".into(),
                from_client: true
            }
        );
    }

    #[test]
    fn values_from_calls_follow_json_rules() {
        let v = values();
        let render = |t: &str| parse(t).render(&v, Target::Path);
        assert_eq!(render("/u/{calls.product.owner.id}").unwrap(), "/u/7");
        assert_eq!(render("/t?f={calls.product.flag}").unwrap(), "/t?f=true");
        assert_eq!(
            render("/t?tags={calls.product.tags}").unwrap(),
            "/t?tags=a%20b,c"
        );
        assert_eq!(
            render("/t?ids={calls.product.items[*].id}").unwrap(),
            "/t?ids=1,2"
        );
        assert_eq!(
            render("/t/{calls.product.obj}").unwrap_err(),
            RenderError::Invalid {
                input: "calls.product.obj".into(),
                from_client: false
            }
        );
        assert_eq!(
            render("/t/{calls.product.nope}").unwrap_err(),
            RenderError::Missing {
                input: "calls.product.nope".into(),
                from_client: false
            }
        );
        assert_eq!(
            render("/t/{calls.user.id}").unwrap_err(),
            RenderError::Missing {
                input: "calls.user.id".into(),
                from_client: false
            }
        );
    }

    #[test]
    fn header_values_are_raw_but_never_split_lines() {
        let mut v = values();
        assert_eq!(
            parse("Bearer {header.x}")
                .render(&v, Target::Header)
                .unwrap(),
            "Bearer v1"
        );
        v.headers = vec![Some("a\r\nx-evil: 1".into())];
        assert!(matches!(
            parse("{header.x}").render(&v, Target::Header),
            Err(RenderError::Invalid { .. })
        ));
        v.queries = vec![Some(Some("bad\0".into()))];
        assert!(parse("{query.q}").render(&v, Target::Header).is_err());
    }

    #[test]
    fn item_and_client_body_fields_are_sources_too() {
        let v = values();
        let render = |t: &str| parse(t).render(&v, Target::Path);
        assert_eq!(render("/u/{item}").unwrap(), "/u/u%2F1");
        assert_eq!(
            render("/u/{request.body.user.id}?t={request.body.user.tags}").unwrap(),
            "/u/5?t=x"
        );
        assert_eq!(
            render("/n/{request.body.note|none}").unwrap(),
            "/n/none",
            "empty counts as absent"
        );
        let mut not_json = values();
        not_json.request = Some(Err(()));
        assert!(matches!(
            parse("/{request.body.user.id}").render(&not_json, Target::Path),
            Err(RenderError::Invalid {
                from_client: true,
                ..
            })
        ));
        let placeholder = parse("{request.body.user}");
        let exact = placeholder.as_single_placeholder().unwrap();
        assert_eq!(
            exact.resolve_json(&v).unwrap(),
            json!({"id": 5, "tags": ["x"]})
        );
        assert_eq!(
            parse("{item}")
                .as_single_placeholder()
                .unwrap()
                .resolve_json(&v)
                .unwrap(),
            json!("u/1")
        );
        assert_eq!(
            parse("a {item}").render(&v, Target::JsonText).unwrap(),
            "a u/1"
        );
    }

    #[test]
    fn malformed_templates_are_refused() {
        for bad in [
            "/p/{path.nope}",
            "/p/{calls.ghost.id}",
            "/p/{id}",
            "/p/{query.}",
            "/p/{path.id",
            "/p/}",
            "/p/{env.HOME}",
            "/p/{header.bad name}",
            "/p/{calls.product.a..b}",
        ] {
            assert!(
                Template::parse(bad, &mut Names::default()).is_err(),
                "{bad}"
            );
        }
    }
}
