//! Building configurations in tests, benchmarks and fuzz targets: the envelope
//! `{"routes":[{"name":…,"match":{"path":…},…,"calls":[…]}]}` from its parts, so a test
//! writes only what it is about (usually the calls).
//!
//! Compiled for the crate's unit tests and with the `testing` feature, which the integration
//! tests and benchmarks get through the package's dev-dependency on itself and the fuzz
//! targets through `fuzz/Cargo.toml`; never in the filter.
//!
//! ```
//! use gateway_aggregator::testing::route;
//! use serde_json::json;
//!
//! let config = route("page", "/p/{id}")
//!     .key("deadline_ms", 300)
//!     .key("response", json!({"layout": "merge"}))
//!     .calls(r#"{"name":"a","cluster":"c","path":"/a/{path.id}"}"#)
//!     .config();
//! assert_eq!(
//!     config,
//!     r#"{"routes":[{"name":"page","match":{"path":"/p/{id}"},"deadline_ms":300,"response":{"layout":"merge"},"calls":[{"name":"a","cluster":"c","path":"/a/{path.id}"}]}]}"#
//! );
//! ```

use serde_json::Value;

/// A route named `name` whose `match.path` is `path`: add keys and calls, then take its
/// [`config`](RouteJson::config) (or pass several routes to [`config`]).
pub fn route(name: &str, path: &str) -> RouteJson {
    RouteJson {
        name: name.to_string(),
        path: path.to_string(),
        methods: Vec::new(),
        keys: Vec::new(),
        calls: Vec::new(),
    }
}

/// The route most tests use: `page`, matching `/p/{id}`.
pub fn page() -> RouteJson {
    route("page", "/p/{id}")
}

/// The configuration of [`page`] with these calls (JSON text, as [`RouteJson::calls`] takes
/// them): what most tests need.
pub fn page_with(calls: &str) -> String {
    page().calls(calls).config()
}

/// A configuration of these routes, in order: `{"routes":[…]}`.
pub fn config<'a>(routes: impl IntoIterator<Item = &'a RouteJson>) -> String {
    let routes: Vec<String> = routes.into_iter().map(RouteJson::json).collect();
    format!(r#"{{"routes":[{}]}}"#, routes.join(","))
}

/// One route of a configuration being built, written out as JSON text in the order it was
/// given: `name`, `match`, the other keys, `calls`.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteJson {
    name: String,
    path: String,
    /// `match.methods`; empty: not written (the filter's default, GET).
    methods: Vec<String>,
    /// Key and value, as JSON text.
    keys: Vec<(String, String)>,
    /// Each a call object, or several separated by commas, as JSON text.
    calls: Vec<String>,
}

impl RouteJson {
    /// Sets `match.methods`: `.methods(&["POST"])`.
    pub fn methods(mut self, methods: &[&str]) -> RouteJson {
        self.methods = methods.iter().map(|m| m.to_string()).collect();
        self
    }

    /// Adds a key of the route besides `name`, `match` and `calls`: `.key("deadline_ms", 300)`,
    /// `.key("response", json!({"layout": "merge"}))`. Keys are written in the order added.
    pub fn key(mut self, key: &str, value: impl Into<Value>) -> RouteJson {
        self.keys.push((key.to_string(), value.into().to_string()));
        self
    }

    /// Adds calls written as JSON text, as they stand in a `calls` array: one object, or
    /// several separated by commas. Text that is not JSON is kept as it is, for tests of
    /// what the filter refuses.
    pub fn calls(mut self, calls: &str) -> RouteJson {
        if !calls.is_empty() {
            self.calls.push(calls.to_string());
        }
        self
    }

    /// Adds one call given as a JSON value.
    pub fn call(mut self, call: Value) -> RouteJson {
        self.calls.push(call.to_string());
        self
    }

    /// The configuration of this route alone: `{"routes":[…]}`.
    pub fn config(&self) -> String {
        config([self])
    }

    /// The route object as JSON text.
    fn json(&self) -> String {
        let mut out = format!(
            r#"{{"name":{},"match":{{"path":{}"#,
            Value::from(self.name.as_str()),
            Value::from(self.path.as_str())
        );
        if !self.methods.is_empty() {
            out.push_str(&format!(
                r#","methods":{}"#,
                Value::from(self.methods.clone())
            ));
        }
        out.push('}');
        for (key, value) in &self.keys {
            out.push_str(&format!(",{}:{value}", Value::from(key.as_str())));
        }
        out.push_str(&format!(r#","calls":[{}]}}"#, self.calls.join(",")));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn routes_are_written_in_the_order_given_and_escaped() {
        let other = route("other", "/o")
            .methods(&["GET", "POST"])
            .call(json!({"name": "x"}));
        let page_route = page()
            .key("deadline_ms", 300)
            .key("response", json!({"layout": "merge"}))
            .calls(r#"{"name":"a"},{"name":"b"}"#)
            .calls("");
        assert_eq!(
            config([&other, &page_route]),
            concat!(
                r#"{"routes":[{"name":"other","match":{"path":"/o","methods":["GET","POST"]},"calls":[{"name":"x"}]},"#,
                r#"{"name":"page","match":{"path":"/p/{id}"},"deadline_ms":300,"response":{"layout":"merge"},"calls":[{"name":"a"},{"name":"b"}]}]}"#
            )
        );
        assert_eq!(
            route("q\"r", "/").config(),
            r#"{"routes":[{"name":"q\"r","match":{"path":"/"},"calls":[]}]}"#
        );
        assert_eq!(
            page_with(r#"{"name":"a"}"#),
            page().calls(r#"{"name":"a"}"#).config()
        );
    }
}
