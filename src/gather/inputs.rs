//! The values templates read during one request: the client's request, and the bodies (or
//! fallbacks) of calls that already finished.

use super::state::{CallState, Outcome};
use crate::encoding::query_param;
use crate::plan::matcher::Capture;
use crate::plan::template::Inputs;
use crate::plan::{CallId, Route};
use serde_json::Value;
use std::rc::Rc;

/// The client's request as the host read it: only what the route needs.
#[derive(Debug, Default)]
pub struct ClientRequest {
    /// Captures of `match.path`, in the route's order.
    pub captures: Vec<Capture>,
    /// The raw query string (without `?`).
    pub query: String,
    /// Values of [`Route::headers`], in that order: `None` when absent or not UTF-8. Shared
    /// with every call that forwards them.
    pub headers: Vec<Option<Rc<str>>>,
    /// The buffered body, when the route needs it.
    pub body: Option<Vec<u8>>,
}

/// The client's request, decoded once for the route's templates.
#[derive(Debug)]
pub struct ClientInputs {
    pub request: ClientRequest,
    queries: Vec<Option<Option<String>>>,
    /// The body parsed as JSON, when templates read its fields.
    json: Option<Result<Value, ()>>,
}

impl ClientInputs {
    pub fn new(route: &Route, request: ClientRequest) -> ClientInputs {
        let queries = route
            .query_params
            .iter()
            .map(|name| query_param(&request.query, name))
            .collect();
        let json = match (&request.body, route.client_body.parsed) {
            // Unique keys: the filter must read the value the client's service would.
            (Some(body), true) => Some(crate::json_number::parse_unique(body).map_err(|_| ())),
            _ => None,
        };
        ClientInputs {
            request,
            queries,
            json,
        }
    }

    pub fn header(&self, slot: usize) -> Option<&str> {
        self.request.headers.get(slot)?.as_deref()
    }

    /// The value of a header, shared (for forwarding: no copy per call).
    pub fn shared_header(&self, slot: usize) -> Option<Rc<str>> {
        self.request.headers.get(slot)?.clone()
    }
}

/// Everything a call's templates can read at the moment it is prepared.
pub struct TemplateInputs<'a> {
    pub client: &'a ClientInputs,
    pub states: &'a [CallState],
    pub route: &'a Route,
    pub item: Option<&'a Value>,
}

impl Inputs for TemplateInputs<'_> {
    fn capture(&self, slot: usize) -> Option<&Capture> {
        self.client.request.captures.get(slot)
    }

    fn query(&self, slot: usize) -> Option<Option<&str>> {
        self.client
            .queries
            .get(slot)?
            .as_ref()
            .map(|v| v.as_deref())
    }

    fn header(&self, slot: usize) -> Option<&str> {
        self.client.header(slot)
    }

    fn call_body(&self, call: CallId) -> Option<&Value> {
        let fallback = || self.route.call(call)?.fallback.as_ref().map(|f| &f.value);
        match self.states.get(call.index())? {
            CallState::Done { outcome, .. } => match outcome {
                Outcome::Succeeded(success) => success.value.as_ref(),
                Outcome::Failed(_) => fallback(),
                Outcome::Fanned(fanned) => fanned.value.as_ref(),
            },
            _ => None,
        }
    }

    fn item(&self) -> Option<&Value> {
        self.item
    }

    fn request_json(&self) -> Option<Result<&Value, ()>> {
        self.client
            .json
            .as_ref()
            .map(|json| json.as_ref().map_err(|_| ()))
    }
}
