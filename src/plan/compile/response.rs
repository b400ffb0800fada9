//! A route's `response` (SPEC §5): the shape (`shape::compile_response`), the static headers,
//! and `headers_from`, which tells each named call which upstream headers to copy. Output keys
//! (`as`) are checked with their call (`call.rs`).

use super::checks::{check_response_header, named_once};
use super::Context;
use crate::config::ConfigError;
use crate::json_path::JsonPath;
use crate::plan::Call;
use crate::shape::{self, ResponseShape};

impl Context<'_> {
    /// The route's response shape; each `headers_from` entry is added to its call's
    /// `copy_headers`.
    pub(super) fn response(&self, calls: &mut [Call]) -> Result<ResponseShape, ConfigError> {
        let config = &self.route.response;
        let place = &self.place;
        let response = shape::compile_response(config).map_err(|e| place.locate(e))?;
        self.check_meta_stays_the_filters(&response)?;
        let mut seen = Vec::with_capacity(response.headers.len());
        for (name, value) in &response.headers {
            let key = format!("response.headers.{name}");
            let lower = check_response_header(name).map_err(|why| place.error(Some(&key), why))?;
            named_once(&mut seen, &lower).map_err(|why| place.error(Some(&key), why))?;
            if value.contains(['\r', '\n', '\0']) {
                return Err(place.error(Some(&key), "must not contain CR, LF or NUL"));
            }
        }
        for from in &config.headers_from {
            let key = Some("response.headers_from");
            let name = check_response_header(&from.name).map_err(|why| place.error(key, why))?;
            let call = calls
                .iter_mut()
                .find(|c| c.name == from.call)
                .ok_or_else(|| {
                    place.error(
                        key,
                        format!("the route has no call named \"{}\"", from.call),
                    )
                })?;
            if !call.copy_headers.contains(&name) {
                call.copy_headers.push(name);
            }
        }
        Ok(response)
    }

    /// The completeness object's key belongs to the filter (SPEC §4): a derived field
    /// written there could never show, so it is refused. (Call names and `as` are checked
    /// with the output keys; `join.as` writes inside an array, never at the top; in `merge`,
    /// a body's top-level key of that name, from upstream, a `rename` or a `fallback`, is
    /// dropped with a debug log.)
    fn check_meta_stays_the_filters(&self, response: &ResponseShape) -> Result<(), ConfigError> {
        let Some(meta) = self.route.response.meta.as_deref() else {
            return Ok(());
        };
        for ((out, _), derived) in self.route.response.derive.iter().zip(&response.derive) {
            if top_key(&derived.out).as_deref() == Some(meta) {
                return Err(self.place.error(
                    Some(&format!("response.derive.{out}")),
                    format!(
                        "writes into \"{meta}\", the completeness object's key (response.meta), which is the filter's own"
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// The key a path writes at the top of an object, if it writes into one.
fn top_key(path: &JsonPath) -> Option<String> {
    let mut probe = serde_json::Value::Object(serde_json::Map::new());
    path.insert(&mut probe, serde_json::Value::Null);
    probe.as_object()?.keys().next().cloned()
}
