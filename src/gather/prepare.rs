//! Admitting a call whose dependencies have settled (SPEC §3.2, §3.6), rendering its requests
//! from the templates, or saying why they cannot be made.

use super::inputs::TemplateInputs;
use super::state::{CallState, Prepared};
use super::{Gather, Text, UpstreamRequest};
use crate::json_number::same_value;
use crate::json_path::{Found, JsonPath};
use crate::outcome::{Failure, Reason};
use crate::plan::body::{BodyTemplate, RenderedBody};
use crate::plan::template::{Inputs, RenderError, Target};
use crate::plan::{Call, CallId, CoalesceSpec};
use crate::resilience::{cache, coalesce};
use serde_json::Value;
use std::rc::Rc;
use std::time::Duration;

/// Whether a call whose dependencies have settled runs.
#[derive(Debug)]
pub enum Admission {
    /// It runs.
    Run,
    /// It is skipped (SPEC §3.6), for the reason given (for the debug log).
    Skip(&'static str),
    /// It fails without being dispatched: a dependency failed, or its condition read an
    /// invalid input.
    Fail(Failure),
}

impl Gather {
    /// Whether `call` runs, in this order: a skipped dependency skips it (whatever else its
    /// dependencies did: the call's premise is gone); a failed dependency without fallback
    /// fails it (`dependency_failed`, also when only its `when` reads that dependency); then
    /// its `when` decides, reading a failed dependency's fallback where it has one.
    pub(super) fn admit(&self, call: &Call) -> Admission {
        let skipped = call
            .dependencies
            .iter()
            .any(|d| matches!(self.calls.get(d.index()), Some(CallState::Skipped)));
        if skipped {
            return Admission::Skip("a call it depends on was skipped");
        }
        if let Err(failure) = self.check_dependencies(call) {
            return Admission::Fail(failure);
        }
        let Some(when) = &call.when else {
            return Admission::Run;
        };
        match when.holds(&self.inputs(None)) {
            Ok(true) => Admission::Run,
            Ok(false) => Admission::Skip("its condition does not hold"),
            Err(error) => Admission::Fail(input_failure(error)),
        }
    }

    /// A failed dependency without fallback stops the call (SPEC §3.2).
    pub(super) fn check_dependencies(&self, call: &Call) -> Result<(), Failure> {
        let unusable = |d: &&CallId| {
            let has_fallback = self.route.call(**d).is_some_and(|c| c.fallback.is_some());
            let failed = self.calls.get(d.index()).is_some_and(|s| s.failed());
            failed && !has_fallback
        };
        match call.dependencies.iter().find(unusable) {
            Some(failed) => {
                let mut failure = Failure::new(Reason::DependencyFailed);
                failure.dependency = self.route.call(*failed).map(|c| c.name.as_str().into());
                Err(failure)
            }
            None => Ok(()),
        }
    }

    /// Renders one request of a call (for one item, with `for_each`).
    pub(super) fn prepare(&self, call: &Call, item: Option<&Value>) -> Result<Prepared, Failure> {
        self.check_dependencies(call)?;
        let inputs = self.inputs(item);
        let path = call
            .path
            .render(&inputs, Target::Path)
            .map_err(input_failure)?;
        let cache_key = call.resilience.cache.as_ref().map(|spec| {
            let vary: Vec<Option<&str>> = spec
                .vary_slots
                .iter()
                .map(|slot| self.client.header(*slot))
                .collect();
            cache::request_key(&call.cluster, &call.method, &call.authority, &path, &vary)
        });
        let mut headers = Vec::with_capacity(4 + call.headers.len() + call.forward.len());
        headers.push((
            Text::Static(":method"),
            Text::Shared(Rc::clone(&call.method)),
        ));
        headers.push((Text::Static(":path"), Text::Rendered(path)));
        headers.push((
            Text::Static(":authority"),
            Text::Shared(Rc::clone(&call.authority)),
        ));
        for (name, template) in &call.headers {
            let value = template
                .render(&inputs, Target::Header)
                .map_err(input_failure)?;
            headers.push((Text::Shared(Rc::clone(name)), Text::Rendered(value)));
        }
        let coalesce_key = call
            .resilience
            .coalesce
            .as_ref()
            .map(|spec| self.coalesce_key(call, spec, &headers));
        for (name, slot) in &call.forward {
            if let Some(value) = self.client.shared_header(*slot) {
                headers.push((Text::Shared(Rc::clone(name)), Text::Shared(value)));
            }
        }
        let body = match &call.body {
            None => None,
            Some(template) => {
                let (body, content_type) = match template.render(&inputs).map_err(input_failure)? {
                    RenderedBody::Json(json) => {
                        (Some(json), Some(Text::Static("application/json")))
                    }
                    RenderedBody::Client => {
                        let content_type = match template {
                            BodyTemplate::Client { content_type_slot } => self
                                .client
                                .shared_header(*content_type_slot)
                                .map(Text::Shared),
                            BodyTemplate::Json(_) => None,
                        };
                        (self.client.request.body.clone(), content_type)
                    }
                };
                let set_by_call = call
                    .headers
                    .iter()
                    .any(|(name, _)| &**name == "content-type");
                if let (Some(content_type), false) = (content_type, set_by_call) {
                    headers.push((Text::Static("content-type"), content_type));
                }
                body
            }
        };
        Ok(Prepared {
            request: Rc::new(UpstreamRequest {
                cluster: Rc::clone(&call.cluster),
                headers,
                body,
            }),
            timeout: Duration::from_millis(call.timeout_ms),
            cache_key,
            coalesce_key,
        })
    }

    /// The key of identical requests (SPEC §6 `coalesce`): `headers` are the pseudo-headers
    /// and the call's own headers as rendered, before any forwarded one.
    fn coalesce_key(&self, call: &Call, spec: &CoalesceSpec, headers: &[(Text, Text)]) -> Rc<str> {
        let pseudo = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| *n == name)
                .map_or("", |(_, v)| &**v)
        };
        let own: Vec<(&str, &str)> = headers
            .iter()
            .filter(|(name, _)| !name.starts_with(':'))
            .map(|(n, v)| (&**n, &**v))
            .collect();
        let vary: Vec<(&str, Option<&str>)> = spec
            .vary
            .iter()
            .map(|(name, slot)| (name.as_str(), self.client.header(*slot)))
            .collect();
        Rc::from(coalesce::request_key(
            &call.cluster,
            &call.method,
            &call.authority,
            pseudo(":path"),
            &own,
            &vary,
        ))
    }

    /// The distinct values at `path` (which has `[*]`) in `source`'s body, in first-seen order,
    /// `null`s skipped: the items of a `for_each` call, the keys of a batch join. An object or
    /// array among them is `invalid_input`, its input named `<key> <path>` (`for_each`, `join`).
    pub(super) fn items(
        &self,
        key: &str,
        source: CallId,
        path: &JsonPath,
    ) -> Result<Vec<Value>, Failure> {
        let inputs = self.inputs(None);
        let found = match inputs.call_body(source).map(|body| path.find(body)) {
            Some(Found::Many(values)) => values,
            _ => Vec::new(),
        };
        let mut distinct: Vec<Value> = Vec::new();
        for value in found {
            match value {
                Value::Null => continue,
                Value::Array(_) | Value::Object(_) => {
                    let mut failure = Failure::new(Reason::InvalidInput);
                    failure.input = Some(format!("{key} {}", path.as_str()).into());
                    return Err(failure);
                }
                // Numbers by value: a 30-digit id is one item, two ids that differ in the last
                // digit are two; `7` and `"7"` stay two.
                scalar if !distinct.iter().any(|seen| same_value(seen, scalar)) => {
                    distinct.push(scalar.clone())
                }
                _ => {}
            }
        }
        Ok(distinct)
    }

    pub(super) fn inputs<'a>(&'a self, item: Option<&'a Value>) -> TemplateInputs<'a> {
        TemplateInputs {
            client: &self.client,
            states: &self.calls,
            route: &self.route,
            item,
        }
    }
}

fn input_failure(error: RenderError) -> Failure {
    let (reason, input, from_client) = match error {
        RenderError::Missing { input, from_client } => (Reason::MissingInput, input, from_client),
        RenderError::Invalid { input, from_client } => (Reason::InvalidInput, input, from_client),
    };
    let mut failure = Failure::new(reason);
    failure.input = Some(input.into());
    failure.from_client = from_client;
    failure
}
