//! One client request from match to answer: reads what the route needs (headers, and the body
//! when a call uses it), feeds the gather state machine with what Envoy reports, and carries
//! out its actions. Reached from the stream's own callbacks and, for timers and for calls sent
//! from a timer, through the root context.

use super::store::SharedData;
use super::worker::Worker;
use super::{header_value, now_us};
use crate::gather::{Action, ClientRequest, Dispatch, Event, Gather};
use crate::plan::{split_query, Plan, Route};
use crate::render::{self, Response};
use proxy_wasm::hostcalls;
use proxy_wasm::types::{Action as HostAction, BufferType, MapType, Status};
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::Duration;

pub struct Exchange {
    context_id: u32,
    plan: Rc<Plan>,
    worker: Rc<Worker>,
    gather: Option<Gather>,
    /// A matched request held until its body has arrived.
    awaiting_body: Option<Pending>,
    /// Dispatched jobs still expected: host token and job.
    in_flight: Vec<(u32, usize)>,
    /// The route counted in `max_inflight` until the answer goes out.
    counted_route: Option<usize>,
    /// The matched route, for metrics, until its answer is recorded.
    route_index: Option<usize>,
    received_us: u64,
}

struct Pending {
    route: Rc<Route>,
    request: ClientRequest,
    received_us: u64,
}

/// Where a callback runs: calls made from the root context are answered to the root context.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Via {
    Stream,
    Root,
}

impl Exchange {
    pub fn new(context_id: u32, plan: Rc<Plan>, worker: Rc<Worker>) -> Self {
        Exchange {
            context_id,
            plan,
            worker,
            gather: None,
            awaiting_body: None,
            in_flight: Vec::new(),
            counted_route: None,
            route_index: None,
            received_us: 0,
        }
    }

    /// A request whose `path` may match a route (the stream had the first look).
    pub fn on_request_headers(&mut self, path: String, end_of_stream: bool) -> HostAction {
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
        self.received_us = now_us();
        let index = self
            .plan
            .routes
            .iter()
            .position(|r| Rc::ptr_eq(r, &matched.route));
        self.route_index = index;
        if let Some(index) = index {
            if !self.worker.enter(index, matched.route.max_inflight) {
                log::debug!(
                    "gateway-aggregator: route {} is at max_inflight",
                    matched.route.name
                );
                self.respond(&render::overload(&matched.route.name));
                return HostAction::Pause;
            }
            self.counted_route = Some(index);
        }
        let headers = request_headers(&matched.route.headers);
        let (_, query) = split_query(&path);
        let pending = Pending {
            request: ClientRequest {
                captures: matched.captures,
                query: query.to_string(),
                headers,
                body: None,
            },
            route: matched.route,
            received_us: self.received_us,
        };
        if pending.route.client_body.needed && !end_of_stream {
            // With allow_on_headers_stop_iteration, Pause holds the headers (nothing reaches the
            // route's upstream) while the body still comes to on_request_body.
            self.awaiting_body = Some(pending);
        } else {
            self.start(pending);
        }
        HostAction::Pause
    }

    pub fn on_request_body(&mut self, body_size: usize, end_of_stream: bool) -> HostAction {
        let Some(pending) = &self.awaiting_body else {
            // A matched request never continues to the router, body included.
            return self.hold_if_matched();
        };
        let limit = pending.route.client_body.max_bytes;
        if u64::try_from(body_size).unwrap_or(u64::MAX) > limit {
            self.awaiting_body = None;
            let body =
                serde_json::json!({"error": {"code": "request_body_too_large", "limit": limit}});
            self.respond(&render::client_error(413, &body));
            return HostAction::Pause;
        }
        if end_of_stream {
            self.body_complete(body_size);
        }
        // Buffer the body: nothing of it goes on to the router.
        HostAction::Pause
    }

    pub fn on_request_trailers(&mut self) -> HostAction {
        if self.awaiting_body.is_some() {
            let size = hostcalls::get_buffer(BufferType::HttpRequestBody, 0, usize::MAX)
                .ok()
                .flatten()
                .map_or(0, |b| b.len());
            self.body_complete(size);
            return HostAction::Pause;
        }
        self.hold_if_matched()
    }

    pub fn on_call_response(&mut self, token: u32, num_headers: usize, body_size: usize, via: Via) {
        let Some(position) = self.in_flight.iter().position(|(t, _)| *t == token) else {
            return;
        };
        let (_, job) = self.in_flight.swap_remove(position);
        let Some(gather) = self.gather.as_mut() else {
            return;
        };
        let event = call_event(job, num_headers, body_size, gather);
        let actions = gather.on_event(event, now_us(), &SharedData);
        self.run(actions, via);
    }

    pub fn on_timer(&mut self, now_us: u64) {
        let Some(gather) = self.gather.as_mut() else {
            return;
        };
        let actions = gather.on_timer(now_us, &SharedData);
        self.run(actions, Via::Root);
    }

    fn hold_if_matched(&self) -> HostAction {
        if self.gather.is_some() || self.counted_route.is_some() {
            HostAction::Pause
        } else {
            HostAction::Continue
        }
    }

    fn start(&mut self, pending: Pending) {
        let (gather, actions) = Gather::start(
            pending.route,
            pending.request,
            pending.received_us,
            now_us(),
            &SharedData,
        );
        self.gather = Some(gather);
        self.run(actions, Via::Stream);
    }

    /// The body has arrived (or ended with trailers): read it and start.
    fn body_complete(&mut self, body_size: usize) {
        let Some(mut pending) = self.awaiting_body.take() else {
            return;
        };
        let body = hostcalls::get_buffer(BufferType::HttpRequestBody, 0, body_size)
            .ok()
            .flatten()
            .unwrap_or_default();
        pending.request.body = Some(body);
        self.start(pending);
    }

    /// Carries out actions in order; a call the host refuses becomes an event at once.
    fn run(&mut self, actions: Vec<Action>, via: Via) {
        let mut queue = VecDeque::from(actions);
        while let Some(action) = queue.pop_front() {
            match action {
                Action::Dispatch(dispatch) => {
                    if let Err(event) = self.dispatch(&dispatch, via) {
                        let more = match self.gather.as_mut() {
                            Some(gather) => gather.on_event(event, now_us(), &SharedData),
                            None => Vec::new(),
                        };
                        queue.extend(more);
                    }
                }
                Action::WakeAt(due_us) => self.worker.wake_at(due_us, self.context_id),
                Action::Respond(response) => {
                    self.respond(&response);
                    return;
                }
            }
        }
    }

    /// Hands a job to Envoy; a refusal comes back as the event it means.
    fn dispatch(&mut self, dispatch: &Dispatch, via: Via) -> Result<(), Event> {
        let request = &dispatch.request;
        let headers: Vec<(&str, &str)> = request
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        let timeout = Duration::from_millis(dispatch.timeout_ms);
        let body = request.body.as_deref();
        match hostcalls::dispatch_http_call(&request.cluster, headers, body, Vec::new(), timeout) {
            Ok(token) => {
                self.in_flight.push((token, dispatch.job));
                if via == Via::Root {
                    self.worker.note_root_call(token, self.context_id);
                }
                Ok(())
            }
            // Envoy starts the call synchronously: with no healthy host it fails at once.
            Err(Status::InternalFailure) => Err(Event::Unreachable {
                job: dispatch.job,
                detail: format!("no healthy host in cluster \"{}\"", request.cluster),
            }),
            Err(status) => Err(Event::Refused {
                job: dispatch.job,
                detail: format!(
                    "Envoy refused the call to cluster \"{}\" ({status:?}): unknown or not yet warmed cluster",
                    request.cluster
                ),
            }),
        }
    }

    fn respond(&mut self, response: &Response) {
        respond(response);
        self.in_flight.clear();
        self.release();
        if let Some(route) = self.route_index.take() {
            let complete = response.header("x-aggregation-complete") == Some("true");
            let summary = self.gather.as_ref().map(Gather::summary);
            let latency_us = now_us().saturating_sub(self.received_us);
            self.worker.metrics().record(
                route,
                response.status,
                complete,
                latency_us,
                summary.as_ref(),
            );
        }
    }

    /// Counts the aggregation out of `max_inflight`.
    fn release(&mut self) {
        if let Some(route) = self.counted_route.take() {
            self.worker.leave(route);
        }
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        self.release();
    }
}

/// The values of the headers a route reads, in order, one hostcall each: a header the
/// request lacks costs Envoy a lookup only, while reading the whole map costs copying and
/// parsing every header into the VM (measured: 4 µs more per aggregation with the default
/// `forward_headers`).
fn request_headers(names: &[String]) -> Vec<Option<String>> {
    names
        .iter()
        .map(|name| header_value(MapType::HttpRequestHeaders, name))
        .collect()
}

fn respond(response: &Response) {
    let headers: Vec<(&str, &str)> = response
        .headers
        .iter()
        .map(|(n, v)| (n.as_ref(), v.as_str()))
        .collect();
    if let Err(status) =
        hostcalls::send_http_response(u32::from(response.status), headers, Some(&response.body))
    {
        log::warn!("gateway-aggregator: Envoy refused the local reply: {status:?}");
    }
}

/// Reads what Envoy holds for a finished call. Headers are read only when Envoy says there
/// are some: without them there is no response, and reading would trap the VM.
fn call_event(job: usize, num_headers: usize, body_size: usize, gather: &Gather) -> Event {
    if num_headers == 0 {
        return Event::Reset { job };
    }
    let status = header_value(MapType::HttpCallResponseHeaders, ":status")
        .and_then(|s| s.parse::<u16>().ok());
    let Some(status) = status else {
        return Event::Reset { job };
    };
    if u64::try_from(body_size).unwrap_or(u64::MAX) > gather.body_limit(job) {
        return Event::TooLarge { job, status };
    }
    let body = if body_size == 0 {
        Vec::new()
    } else {
        hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, body_size)
            .ok()
            .flatten()
            .unwrap_or_default()
    };
    let headers = copied_headers(gather.headers_to_copy(job));
    Event::Answered {
        job,
        status,
        headers,
        body,
    }
}

/// Every value of the wanted call-response headers (several `set-cookie`, say), read only
/// when the route copies some.
fn copied_headers(wanted: &[String]) -> Vec<(String, String)> {
    if wanted.is_empty() {
        return Vec::new();
    }
    hostcalls::get_map_bytes(MapType::HttpCallResponseHeaders)
        .unwrap_or_default()
        .into_iter()
        .filter(|(name, _)| wanted.iter().any(|w| w.eq_ignore_ascii_case(name)))
        .filter_map(|(name, value)| Some((name, String::from_utf8(value).ok()?)))
        .collect()
}
