//! One HTTP stream: matches the request, feeds the gather state machine with what Envoy
//! reports, and carries out its actions (dispatch calls, send the one local reply).

use super::{header_value, now_us};
use crate::gather::{Action, Dispatch, Event, Gather};
use crate::plan::{split_query, Plan};
use crate::render::Response;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action as HostAction, BufferType, MapType, Status};
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::Duration;

pub struct Aggregation {
    plan: Rc<Plan>,
    gather: Option<Gather>,
    /// Dispatched calls still expected: host token and call index.
    in_flight: Vec<(u32, usize)>,
}

impl Aggregation {
    pub fn new(plan: Rc<Plan>) -> Self {
        Aggregation {
            plan,
            gather: None,
            in_flight: Vec::new(),
        }
    }

    /// Carries out actions in order; a call the host refuses becomes an event at once.
    fn run(&mut self, actions: Vec<Action>) {
        let mut queue = VecDeque::from(actions);
        while let Some(action) = queue.pop_front() {
            match action {
                Action::Dispatch(dispatch) => {
                    if let Err(event) = self.dispatch(&dispatch) {
                        let more = match self.gather.as_mut() {
                            Some(gather) => gather.on_event(event, now_us()),
                            None => Vec::new(),
                        };
                        queue.extend(more);
                    }
                }
                Action::Respond(response) => {
                    respond(&response);
                    self.in_flight.clear();
                    return;
                }
            }
        }
    }

    /// Hands a call to Envoy; a refusal comes back as the event it means.
    fn dispatch(&mut self, dispatch: &Dispatch) -> Result<(), Event> {
        let headers: Vec<(&str, &str)> = dispatch
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        let timeout = Duration::from_millis(dispatch.timeout_ms);
        match hostcalls::dispatch_http_call(&dispatch.cluster, headers, None, Vec::new(), timeout) {
            Ok(token) => {
                self.in_flight.push((token, dispatch.call));
                Ok(())
            }
            // Envoy starts the call synchronously: with no healthy host it fails at once.
            Err(Status::InternalFailure) => Err(Event::Unreachable {
                call: dispatch.call,
                detail: format!("no healthy host in cluster \"{}\"", dispatch.cluster),
            }),
            Err(status) => Err(Event::Refused {
                call: dispatch.call,
                detail: format!(
                    "Envoy refused the call to cluster \"{}\" ({status:?}): unknown or not yet warmed cluster",
                    dispatch.cluster
                ),
            }),
        }
    }
}

fn respond(response: &Response) {
    let headers: Vec<(&str, &str)> = response
        .headers
        .iter()
        .map(|(n, v)| (*n, v.as_str()))
        .collect();
    if let Err(status) =
        hostcalls::send_http_response(u32::from(response.status), headers, Some(&response.body))
    {
        log::warn!("gateway-aggregator: Envoy refused the local reply: {status:?}");
    }
}

/// Reads what Envoy holds for a finished call. Headers are read only when Envoy says there
/// are some: without them there is no response, and reading would trap the VM.
fn call_event(call: usize, num_headers: usize, body_size: usize, body_limit: u64) -> Event {
    if num_headers == 0 {
        return Event::Reset { call };
    }
    let status = header_value(MapType::HttpCallResponseHeaders, ":status")
        .and_then(|s| s.parse::<u16>().ok());
    let Some(status) = status else {
        return Event::Reset { call };
    };
    if u64::try_from(body_size).unwrap_or(u64::MAX) > body_limit {
        return Event::TooLarge { call, status };
    }
    let body = if body_size == 0 {
        Vec::new()
    } else {
        hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, body_size)
            .ok()
            .flatten()
            .unwrap_or_default()
    };
    Event::Answered { call, status, body }
}

impl Context for Aggregation {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        let Some(position) = self
            .in_flight
            .iter()
            .position(|(token, _)| *token == token_id)
        else {
            return;
        };
        let (_, call) = self.in_flight.swap_remove(position);
        let Some(gather) = self.gather.as_mut() else {
            return;
        };
        let event = call_event(call, num_headers, body_size, gather.body_limit(call));
        let actions = gather.on_event(event, now_us());
        self.run(actions);
    }
}

impl HttpContext for Aggregation {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> HostAction {
        if self.plan.routes.is_empty() {
            return HostAction::Continue;
        }
        let Some(path) = header_value(MapType::HttpRequestHeaders, ":path") else {
            return HostAction::Continue;
        };
        let Some(method) = header_value(MapType::HttpRequestHeaders, ":method") else {
            return HostAction::Continue;
        };
        let mut read_header = |name: &str| header_value(MapType::HttpRequestHeaders, name);
        let Some(matched) = self.plan.find(&method, &path, &mut read_header) else {
            return HostAction::Continue;
        };
        log::debug!(
            "gateway-aggregator: {method} {path} matched route {}",
            matched.route.name
        );
        let headers = matched
            .route
            .headers
            .iter()
            .map(|name| header_value(MapType::HttpRequestHeaders, name))
            .collect();
        let (_, query) = split_query(&path);
        let (gather, actions) =
            Gather::start(matched.route, matched.captures, query, headers, now_us());
        self.gather = Some(gather);
        self.run(actions);
        HostAction::Pause
    }
}
