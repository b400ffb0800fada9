//! Call bodies (SPEC §3.4): the client's body forwarded unchanged, or a JSON template whose
//! string leaves are templates. A leaf that is exactly one placeholder keeps the JSON type of
//! its value; any other string leaf is rendered as text.

use super::template::{Inputs, Placeholder, RenderError, Resolve, Target, Template};
use serde_json::{Map, Value};

/// The string that forwards the client's body byte for byte.
pub const CLIENT_BODY: &str = "{request.body}";

/// A call's `body` (SPEC §3.4), compiled once.
#[derive(Debug, Clone, PartialEq)]
pub enum BodyTemplate {
    /// `"{request.body}"`: the client's body, sent byte for byte with the client's
    /// content-type (unless the call sets its own).
    Client {
        /// The slot in [`Route::headers`](super::Route::headers) of the client's
        /// `content-type`.
        content_type_slot: usize,
    },
    /// Any other JSON value: rendered per request and sent as `application/json` (unless the
    /// call sets its own content-type).
    Json(JsonTemplate),
}

/// A JSON value whose string leaves may hold placeholders.
#[derive(Debug, Clone, PartialEq)]
pub enum JsonTemplate {
    /// A subtree without placeholders.
    Fixed(Value),
    /// A string that is exactly one placeholder: the value keeps its JSON type.
    Exact(Placeholder),
    /// A string mixing text and placeholders.
    Text(Template),
    /// An array holding some placeholder.
    Array(Vec<JsonTemplate>),
    /// An object holding some placeholder: its members in configuration order.
    Object(Vec<(String, JsonTemplate)>),
}

/// A rendered body: the client's, or new JSON bytes.
#[derive(Debug, Clone, PartialEq)]
pub enum RenderedBody {
    /// Send the client's body as it came.
    Client,
    /// Send these JSON bytes.
    Json(Vec<u8>),
}

impl BodyTemplate {
    /// Compiles a `body` value: the string [`CLIENT_BODY`], or JSON whose string leaves are
    /// templates, their sources resolved to slots by `resolve`. The error is the reason only;
    /// the caller places it at the call's `body` key.
    pub fn compile(value: &Value, resolve: &mut dyn Resolve) -> Result<BodyTemplate, String> {
        if value.as_str() == Some(CLIENT_BODY) {
            return Ok(BodyTemplate::Client {
                content_type_slot: resolve.header("content-type"),
            });
        }
        JsonTemplate::compile(value, resolve).map(BodyTemplate::Json)
    }

    /// Every placeholder of the body, in document order (none for the client's body).
    pub fn placeholders(&self) -> Vec<&Placeholder> {
        let mut found = Vec::new();
        if let BodyTemplate::Json(json) = self {
            json.collect(&mut found);
        }
        found
    }

    /// The body of one request: placeholders filled from `inputs` (a leaf that is exactly one
    /// placeholder keeps its value's JSON type and spelling; other strings are rendered as
    /// text). Fails like a template: a value missing without a default, or unusable.
    pub fn render(&self, inputs: &dyn Inputs) -> Result<RenderedBody, RenderError> {
        match self {
            BodyTemplate::Client { .. } => Ok(RenderedBody::Client),
            BodyTemplate::Json(json) => {
                let value = json.render(inputs)?;
                // Serialising a Value cannot fail; an empty body would be refused upstream anyway.
                Ok(RenderedBody::Json(
                    serde_json::to_vec(&value).unwrap_or_default(),
                ))
            }
        }
    }
}

impl JsonTemplate {
    fn compile(value: &Value, resolve: &mut dyn Resolve) -> Result<JsonTemplate, String> {
        let compiled = match value {
            Value::String(text) => {
                let template = Template::parse(text, resolve)?;
                match template.as_single_placeholder() {
                    Some(placeholder) => JsonTemplate::Exact(placeholder.clone()),
                    None if template.placeholders().next().is_some() => {
                        JsonTemplate::Text(template)
                    }
                    None => JsonTemplate::Fixed(value.clone()),
                }
            }
            Value::Array(items) => JsonTemplate::Array(
                items
                    .iter()
                    .map(|item| JsonTemplate::compile(item, resolve))
                    .collect::<Result<_, _>>()?,
            ),
            Value::Object(map) => JsonTemplate::Object(
                map.iter()
                    .map(|(key, item)| Ok((key.clone(), JsonTemplate::compile(item, resolve)?)))
                    .collect::<Result<_, String>>()?,
            ),
            other => JsonTemplate::Fixed(other.clone()),
        };
        Ok(compiled.fixed_if_constant())
    }

    /// Folds subtrees without placeholders into one fixed value.
    fn fixed_if_constant(self) -> JsonTemplate {
        match self {
            JsonTemplate::Array(items) if items.iter().all(JsonTemplate::is_fixed) => {
                JsonTemplate::Fixed(Value::Array(
                    items
                        .into_iter()
                        .filter_map(JsonTemplate::into_fixed)
                        .collect(),
                ))
            }
            JsonTemplate::Object(entries) if entries.iter().all(|(_, t)| t.is_fixed()) => {
                JsonTemplate::Fixed(Value::Object(
                    entries
                        .into_iter()
                        .filter_map(|(k, t)| t.into_fixed().map(|v| (k, v)))
                        .collect(),
                ))
            }
            other => other,
        }
    }

    fn is_fixed(&self) -> bool {
        matches!(self, JsonTemplate::Fixed(_))
    }

    fn into_fixed(self) -> Option<Value> {
        match self {
            JsonTemplate::Fixed(value) => Some(value),
            _ => None,
        }
    }

    fn collect<'a>(&'a self, found: &mut Vec<&'a Placeholder>) {
        match self {
            JsonTemplate::Fixed(_) => {}
            JsonTemplate::Exact(placeholder) => found.push(placeholder),
            JsonTemplate::Text(template) => found.extend(template.placeholders()),
            JsonTemplate::Array(items) => items.iter().for_each(|item| item.collect(found)),
            JsonTemplate::Object(entries) => {
                entries.iter().for_each(|(_, item)| item.collect(found))
            }
        }
    }

    fn render(&self, inputs: &dyn Inputs) -> Result<Value, RenderError> {
        Ok(match self {
            JsonTemplate::Fixed(value) => value.clone(),
            JsonTemplate::Exact(placeholder) => placeholder.resolve_json(inputs)?,
            JsonTemplate::Text(template) => {
                Value::String(template.render(inputs, Target::JsonText)?)
            }
            JsonTemplate::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|item| item.render(inputs))
                    .collect::<Result<_, _>>()?,
            ),
            JsonTemplate::Object(entries) => {
                let mut map = Map::with_capacity(entries.len());
                for (key, item) in entries {
                    map.insert(key.clone(), item.render(inputs)?);
                }
                Value::Object(map)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::matcher::Capture;
    use crate::plan::CallId;
    use serde_json::json;

    struct Names;

    impl Resolve for Names {
        fn capture(&mut self, name: &str) -> Option<usize> {
            (name == "id").then_some(0)
        }
        fn query(&mut self, _: &str) -> usize {
            0
        }
        fn header(&mut self, name: &str) -> usize {
            usize::from(name == "content-type")
        }
        fn call(&mut self, name: &str) -> Result<CallId, String> {
            (name == "user")
                .then_some(CallId::new(0))
                .ok_or_else(|| "no such call".to_string())
        }
        fn item(&mut self) -> Result<(), String> {
            Ok(())
        }
        fn request_body_field(&mut self) {}
    }

    struct Values;

    impl Inputs for Values {
        fn capture(&self, _: usize) -> Option<&Capture> {
            None
        }
        fn query(&self, _: usize) -> Option<Option<&str>> {
            Some(Some("7"))
        }
        fn header(&self, _: usize) -> Option<&str> {
            None
        }
        fn call_body(&self, _: CallId) -> Option<&Value> {
            static USER: std::sync::OnceLock<Value> = std::sync::OnceLock::new();
            Some(USER.get_or_init(
                || json!({"id": 42, "vip": true, "address": {"city": "Lyon"}, "tags": ["a", "b"]}),
            ))
        }
        fn item(&self) -> Option<&Value> {
            None
        }
        fn request_json(&self) -> Option<Result<&Value, ()>> {
            static BODY: std::sync::OnceLock<Value> = std::sync::OnceLock::new();
            Some(Ok(BODY.get_or_init(|| json!({"qty": 3, "note": "gift"}))))
        }
    }

    fn render(template: Value) -> Value {
        let body = BodyTemplate::compile(&template, &mut Names).unwrap();
        match body.render(&Values).unwrap() {
            RenderedBody::Json(bytes) => serde_json::from_slice(&bytes).unwrap(),
            RenderedBody::Client => Value::Null,
        }
    }

    #[test]
    fn exact_placeholders_keep_their_json_type() {
        let out = render(json!({
            "user": "{calls.user.id}", "vip": "{calls.user.vip}", "address": "{calls.user.address}",
            "tags": "{calls.user.tags}", "qty": "{request.body.qty}", "page": "{query.page}",
            "label": "user {calls.user.id} wants {request.body.qty}", "fixed": [1, {"x": null}],
            "missing": "{calls.user.nope|none}"
        }));
        assert_eq!(
            out,
            json!({"user": 42, "vip": true, "address": {"city": "Lyon"}, "tags": ["a", "b"], "qty": 3,
                   "page": "7", "label": "user 42 wants 3", "fixed": [1, {"x": null}], "missing": "none"})
        );
    }

    #[test]
    fn constant_subtrees_are_folded_once() {
        let body =
            BodyTemplate::compile(&json!({"a": [1, "two"], "b": {"c": true}}), &mut Names).unwrap();
        assert_eq!(
            body,
            BodyTemplate::Json(JsonTemplate::Fixed(
                json!({"a": [1, "two"], "b": {"c": true}})
            ))
        );
        assert!(body.placeholders().is_empty());
    }

    #[test]
    fn the_client_body_is_forwarded_as_is() {
        let body = BodyTemplate::compile(&json!("{request.body}"), &mut Names).unwrap();
        assert_eq!(
            body,
            BodyTemplate::Client {
                content_type_slot: 1
            }
        );
        assert_eq!(body.render(&Values).unwrap(), RenderedBody::Client);
    }

    #[test]
    fn missing_values_fail_the_render() {
        let body = BodyTemplate::compile(&json!({"x": "{calls.user.nope}"}), &mut Names).unwrap();
        assert!(matches!(
            body.render(&Values),
            Err(RenderError::Missing { .. })
        ));
        assert!(BodyTemplate::compile(&json!({"x": "{request.body}"}), &mut Names).is_err());
    }
}
