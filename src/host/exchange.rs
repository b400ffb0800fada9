//! One client request from match to answer: reads what the route needs (headers, and the body
//! when a call uses it), feeds the gather state machine with what Envoy reports, and carries
//! out its actions. Reached from the stream's own callbacks and, for timers and for calls sent
//! from a timer, through the root context; for the answer of a request it shares with others
//! (SPEC §6 `coalesce`), from the callback of whichever context that answer arrived at.

use super::metrics::EnvoyMetrics;
use super::store::SharedData;
use super::worker::Worker;
use super::{header_value, now};
use crate::client_body::{self, BodyStall};
use crate::gather::{Action, AttemptId, ClientRequest, Dispatch, Event, Gather, UpstreamRequest};
use crate::plan::{split_query, Plan, Route};
use crate::render::{self, Response};
use crate::resilience::coalesce::{self, Sending, Waiter};
use crate::resilience::retry::MIN_ATTEMPT;
use crate::stats::Answered;
use crate::time::Instant;
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
    /// A matched request held until its body has arrived, or the route deadline passes.
    awaiting_body: Option<Pending>,
    /// A route matched: the request never continues to the router, body and trailers
    /// included, whatever happens to it (answered, refused, still waiting).
    matched: bool,
    /// Dispatched attempts still expected: host token and attempt. (Attempts that share a
    /// request are in the worker's book instead.)
    in_flight: Vec<(u32, AttemptId)>,
    /// Attempts to send on the next tick, with the end of their timeout: asked for in another
    /// stream's callback (see [`Via::Foreign`]).
    deferred: Vec<(Dispatch, Instant)>,
    /// The route counted in `max_inflight` until the answer goes out.
    counted_route: Option<usize>,
    /// The matched route, for metrics, until its answer is recorded.
    route_index: Option<usize>,
    received: Instant,
}

struct Pending {
    route: Rc<Route>,
    request: ClientRequest,
    received: Instant,
    /// The end of the wait for the body: the route deadline.
    deadline: Instant,
    /// Body bytes Envoy has handed over so far.
    delivered: usize,
}

/// Where a callback runs, which says where the answer of a call sent now would arrive: the SDK
/// delivers it to the context that was active when it was sent.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// The exchange's own stream.
    Stream,
    /// The root context (the timer, or an answer to a call sent from it): calls sent now are
    /// answered to the root, which hands each back to its exchange.
    Root,
    /// Another stream's callback, delivering the answer of a request it shares with this
    /// exchange. A call sent now would be answered to that stream and lost if it ends first, so
    /// attempts wait for the next tick (joining a shared request needs no call, and is done at
    /// once).
    Foreign,
}

impl Exchange {
    pub fn new(context_id: u32, plan: Rc<Plan>, worker: Rc<Worker>) -> Self {
        Exchange {
            context_id,
            plan,
            worker,
            gather: None,
            awaiting_body: None,
            matched: false,
            in_flight: Vec::new(),
            deferred: Vec::new(),
            counted_route: None,
            route_index: None,
            received: Instant::default(),
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
        self.received = now();
        self.matched = true;
        let index = matched.index;
        self.route_index = Some(index);
        if !self.worker.enter(index, matched.route.max_inflight) {
            log::debug!(
                "gateway-aggregator: route {} is at max_inflight",
                matched.route.name
            );
            self.respond(&render::overload(&matched.route.name), self.received);
            return HostAction::Pause;
        }
        self.counted_route = Some(index);
        let headers = request_headers(&matched.route.headers);
        let (_, query) = split_query(&path);
        let pending = Pending {
            request: ClientRequest {
                captures: matched.captures,
                query: query.to_string(),
                headers,
                body: None,
            },
            deadline: client_body::deadline(self.received, matched.route.deadline_ms),
            route: matched.route,
            received: self.received,
            delivered: 0,
        };
        if pending.route.client_body.needed && !end_of_stream {
            // With allow_on_headers_stop_iteration, Pause holds the headers (nothing reaches the
            // route's upstream) while the body still comes to on_request_body. The deadline
            // bounds the wait: a client may never finish, and without the setting Envoy never
            // hands the body over.
            self.worker.wake_at(pending.deadline, self.context_id);
            self.awaiting_body = Some(pending);
        } else {
            // One clock read per entry into the VM: the headers' arrival is the start.
            self.start(pending, self.received);
        }
        HostAction::Pause
    }

    pub fn on_request_body(&mut self, body_size: usize, end_of_stream: bool) -> HostAction {
        let Some(pending) = self.awaiting_body.as_mut() else {
            return self.hold_if_matched();
        };
        pending.delivered = body_size;
        let limit = pending.route.client_body.max_bytes;
        if u64::try_from(body_size).unwrap_or(u64::MAX) > limit {
            self.give_up_body(&render::request_body_too_large(limit), now());
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
        let (_, attempt) = self.in_flight.swap_remove(position);
        let Some(gather) = self.gather.as_mut() else {
            return;
        };
        let event = call_event(attempt, num_headers, body_size, gather);
        let now = now();
        let actions = gather.on_event(event, now, &SharedData);
        self.run(actions, via, now);
    }

    pub fn on_timer(&mut self, now: Instant) {
        if let Some(pending) = &self.awaiting_body {
            if now >= pending.deadline {
                self.body_deadline_passed(now);
            } else {
                // Not due yet (only a clock stepping back does that): keep the wait bounded.
                self.worker.wake_at(pending.deadline, self.context_id);
            }
            return;
        }
        if self.gather.is_none() {
            return;
        }
        // Attempts asked for in another stream's callback go out now, from the root context.
        for (mut dispatch, until) in std::mem::take(&mut self.deferred) {
            dispatch.timeout = until.saturating_duration_since(now).max(MIN_ATTEMPT);
            if let Err(event) = self.dispatch(dispatch, Via::Root, now) {
                self.take_event(false, event, Via::Root, now);
            }
        }
        // Shared requests this aggregation stops waiting for: its attempts' own timeouts.
        for waiter in self.worker.expired_waits(self.context_id, now) {
            log::debug!(
                "gateway-aggregator: stopped waiting for a shared request at the attempt's timeout"
            );
            let event = Event::TimedOut {
                attempt: AttemptId::nth(waiter.attempt),
            };
            self.take_event(waiter.joined, event, Via::Root, now);
        }
        let Some(gather) = self.gather.as_mut() else {
            return;
        };
        let actions = gather.on_timer(now, &SharedData);
        self.run(actions, Via::Root, now);
    }

    /// The outcome of a request this exchange shared with others (SPEC §6 `coalesce`), or of
    /// one it was waiting for: `joined` when another aggregation's request answered it.
    pub fn take_event(&mut self, joined: bool, event: Event, via: Via, now: Instant) {
        let Some(gather) = self.gather.as_mut() else {
            return;
        };
        let actions = if joined {
            gather.on_coalesced_event(event, now, &SharedData)
        } else {
            gather.on_event(event, now, &SharedData)
        };
        self.run(actions, via, now);
    }

    /// After a local reply (or while answering), Envoy may still hand over body and trailers:
    /// a matched request keeps them from the router, so its upstream never sees the request.
    fn hold_if_matched(&self) -> HostAction {
        if self.matched {
            HostAction::Pause
        } else {
            HostAction::Continue
        }
    }

    fn start(&mut self, pending: Pending, now: Instant) {
        let (gather, actions) = Gather::start(
            pending.route,
            pending.request,
            pending.received,
            now,
            &SharedData,
        );
        self.gather = Some(gather);
        self.run(actions, Via::Stream, now);
    }

    /// The body has arrived (or ended with trailers): read it and start, unless the deadline
    /// passed first (the timer had not come round yet), which is then answered as on the
    /// timer.
    fn body_complete(&mut self, body_size: usize) {
        let now = now();
        if self
            .awaiting_body
            .as_ref()
            .is_some_and(|p| now >= p.deadline)
        {
            self.body_deadline_passed(now);
            return;
        }
        let Some(mut pending) = self.awaiting_body.take() else {
            return;
        };
        let body = hostcalls::get_buffer(BufferType::HttpRequestBody, 0, body_size)
            .ok()
            .flatten()
            .unwrap_or_default();
        pending.request.body = Some(body);
        self.start(pending, now);
    }

    /// The route deadline passed without the whole body: 408 if the client is late, 500 if
    /// Envoy holds the body back (SPEC §3.4). Nothing is dispatched.
    fn body_deadline_passed(&mut self, now: Instant) {
        let Some(pending) = &self.awaiting_body else {
            return;
        };
        let delivered = u64::try_from(pending.delivered).unwrap_or(u64::MAX);
        let stall = BodyStall::at_deadline(delivered, received_body_bytes);
        let route = &pending.route;
        let response = stall.response(route.deadline_ms);
        match stall {
            BodyStall::Timeout => log::debug!(
                "gateway-aggregator: route {}: the client body was not complete within deadline_ms {} ({delivered} bytes of it arrived): 408",
                route.name,
                route.deadline_ms
            ),
            BodyStall::Unavailable if self.worker.first_body_unavailable() => log::warn!(
                "gateway-aggregator: route {} reads the client body, but Envoy holds it back from the filter: set allow_on_headers_stop_iteration: true on the envoy.filters.http.wasm filter (Envoy >= 1.35; in Istio, the EnvoyFilter in envoy/istio/envoyfilter-stop-iteration.yaml). Until then such requests are answered 500 request_body_unavailable at their deadline; this is logged once per VM",
                route.name
            ),
            BodyStall::Unavailable => log::debug!(
                "gateway-aggregator: route {}: Envoy held the client body back (allow_on_headers_stop_iteration is off): 500",
                route.name
            ),
        }
        if let Some(index) = self.route_index {
            self.worker.stats().body_stalled(index, stall);
        }
        self.give_up_body(&response, now);
    }

    /// Answers a request still waiting for its body, and forgets it: the held request, its
    /// wake-ups and its `max_inflight` slot. Later body callbacks are held (`matched`).
    fn give_up_body(&mut self, response: &Response, now: Instant) {
        self.awaiting_body = None;
        self.respond(response, now);
        self.worker.forget(self.context_id);
    }

    /// Carries out actions in order; a call the host refuses becomes an event at once.
    fn run(&mut self, actions: Vec<Action>, via: Via, now: Instant) {
        let mut queue = VecDeque::from(actions);
        while let Some(action) = queue.pop_front() {
            match action {
                Action::Dispatch(dispatch) => {
                    if let Err(event) = self.dispatch(dispatch, via, now) {
                        let more = match self.gather.as_mut() {
                            Some(gather) => gather.on_event(event, now, &SharedData),
                            None => Vec::new(),
                        };
                        queue.extend(more);
                    }
                }
                Action::WakeAt(due) => self.worker.wake_at(due, self.context_id),
                Action::Respond(response) => {
                    self.respond(&response, now);
                    return;
                }
            }
        }
    }

    /// Hands an attempt to Envoy; a refusal comes back as the event it means. An attempt that
    /// may coalesce joins an identical request in flight instead, woken at its own timeout; if
    /// none is in flight, the request it sends is one others may join.
    fn dispatch(&mut self, dispatch: Dispatch, via: Via, now: Instant) -> Result<(), Event> {
        let until = now + dispatch.timeout;
        let mut leader = None;
        if let Some(coalesce) = &dispatch.coalesce {
            match self
                .worker
                .join_shared(&coalesce.key, self.waiter(&dispatch, until))
            {
                Ok(()) => {
                    log::debug!(
                        "gateway-aggregator: call {} joined an identical request in flight",
                        self.call_name(dispatch.attempt)
                    );
                    // Envoy keeps the timeout of the request as it was sent, not this one's.
                    self.worker.wake_at(until, self.context_id);
                    return Ok(());
                }
                Err(waiter) => leader = Some(waiter),
            }
        }
        if via == Via::Foreign {
            self.deferred.push((dispatch, until));
            self.worker.wake_at(now, self.context_id);
            return Ok(());
        }
        // A shared request is sent with the call's own timeout, so that it goes on for the
        // others when this aggregation's deadline, kept by a wake-up, comes first.
        let timeout = match (&dispatch.coalesce, &leader) {
            (Some(coalesce), Some(_)) => coalesce.timeout.max(dispatch.timeout),
            _ => dispatch.timeout,
        };
        match send(&dispatch.request, timeout) {
            Ok(token) => {
                match (&dispatch.coalesce, leader) {
                    (Some(coalesce), Some(waiter)) => {
                        self.worker.wake_at(until, self.context_id);
                        let route = if via == Via::Root {
                            coalesce::Route::Root
                        } else {
                            coalesce::Route::Stream(self.context_id)
                        };
                        let sending = Sending {
                            token,
                            route,
                            at: now,
                            timeout,
                        };
                        let request = Rc::clone(&dispatch.request);
                        let key = Rc::clone(&coalesce.key);
                        self.worker.sent_shared(key, sending, request, waiter);
                    }
                    _ => {
                        self.in_flight.push((token, dispatch.attempt));
                        if via == Via::Root {
                            self.worker.note_root_call(token, self.context_id);
                        }
                    }
                }
                Ok(())
            }
            Err(status) => Err(refusal(status, dispatch.attempt, &dispatch.request.cluster)),
        }
    }

    /// How this exchange waits for a shared request: until its attempt's timeout, reading what
    /// its call reads of the answer.
    fn waiter(&self, dispatch: &Dispatch, until: Instant) -> Waiter {
        let attempt = dispatch.attempt;
        Waiter {
            context: self.context_id,
            attempt: attempt.index(),
            until,
            joined: true,
            body_limit: self.gather.as_ref().map_or(0, |g| g.body_limit(attempt)),
            headers: self
                .gather
                .as_ref()
                .map(|g| g.headers_to_copy(attempt).to_vec())
                .unwrap_or_default(),
        }
    }

    fn call_name(&self, attempt: AttemptId) -> &str {
        self.gather
            .as_ref()
            .and_then(|g| g.call_name(attempt))
            .unwrap_or("?")
    }

    fn respond(&mut self, response: &Response, now: Instant) {
        respond(response);
        self.in_flight.clear();
        self.deferred.clear();
        // Requests sent from this stream still arrive here until it ends, for the others.
        self.worker.stop_waiting(self.context_id);
        self.release();
        if let Some(route) = self.route_index.take() {
            let complete = response.header("x-aggregation-complete") == Some("true");
            let summary = self.gather.as_ref().map(Gather::summary);
            let latency = now.saturating_duration_since(self.received);
            let answered = Answered {
                route,
                status: response.status,
                complete,
                latency,
                summary: summary.as_ref(),
            };
            self.worker.stats().record(&answered, &EnvoyMetrics);
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
        // Its stream has ended: the answers of requests sent from it will never arrive here.
        self.worker.stream_gone(self.context_id);
    }
}

/// Hands `request` to Envoy's async HTTP client with `timeout`: the token its answer will
/// carry, or Envoy's refusal (see [`refusal`]).
pub fn send(request: &UpstreamRequest, timeout: Duration) -> Result<u32, Status> {
    let headers: Vec<(&str, &str)> = request.headers.iter().map(|(n, v)| (&**n, &**v)).collect();
    hostcalls::dispatch_http_call(
        &request.cluster,
        headers,
        request.body.as_deref(),
        Vec::new(),
        timeout,
    )
}

/// The event a refused `dispatch_http_call` means. Envoy starts the call synchronously: with
/// no healthy host it fails at once (`InternalFailure`); an unknown or not yet warmed cluster
/// is a `BadArgument`.
pub fn refusal(status: Status, attempt: AttemptId, cluster: &str) -> Event {
    match status {
        Status::InternalFailure => Event::Unreachable {
            attempt,
            detail: format!("no healthy host in cluster \"{cluster}\""),
        },
        status => Event::Refused {
            attempt,
            detail: format!(
                "Envoy refused the call to cluster \"{cluster}\" ({status:?}): unknown or not yet warmed cluster"
            ),
        },
    }
}

/// Body bytes Envoy has received for this request, counted before it runs any filter, so also
/// bytes it holds back from this one: `request.total_size` less the request header map's size.
/// `None` if Envoy cannot tell. Read only when a deadline passed without any body byte.
fn received_body_bytes() -> Option<u64> {
    let total_size = hostcalls::get_property(vec!["request", "total_size"])
        .ok()
        .flatten()
        .and_then(|bytes| <[u8; 8]>::try_from(bytes.as_slice()).ok())
        .map(i64::from_le_bytes)
        .and_then(|size| u64::try_from(size).ok())?;
    let headers = hostcalls::get_map_bytes(MapType::HttpRequestHeaders).ok()?;
    let header_bytes = client_body::header_map_bytes(
        headers
            .iter()
            .map(|(name, value)| (name.len(), value.len())),
    );
    Some(client_body::received_body_bytes(total_size, header_bytes))
}

/// The values of the headers a route reads, in order, one hostcall each: a header the
/// request lacks costs Envoy a lookup only, while reading the whole map costs copying and
/// parsing every header into the VM (measured: 4 µs more per aggregation with the default
/// `forward_headers`).
fn request_headers(names: &[String]) -> Vec<Option<Rc<str>>> {
    names
        .iter()
        .map(|name| header_value(MapType::HttpRequestHeaders, name).map(Rc::from))
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

/// Reads what Envoy holds for a finished call.
fn call_event(attempt: AttemptId, num_headers: usize, body_size: usize, gather: &Gather) -> Event {
    let Some(status) = call_status(num_headers) else {
        return Event::Reset { attempt };
    };
    if u64::try_from(body_size).unwrap_or(u64::MAX) > gather.body_limit(attempt) {
        return Event::TooLarge { attempt, status };
    }
    let wanted = gather.headers_to_copy(attempt);
    let headers = if wanted.is_empty() {
        Vec::new()
    } else {
        call_headers(|name| wanted.iter().any(|w| w.eq_ignore_ascii_case(name)))
    };
    Event::Answered {
        attempt,
        status,
        headers,
        body: call_body(body_size),
    }
}

/// The `:status` of a finished call, during its callback; `None` for a reset: Envoy reports no
/// headers (then there is no response, and reading them would trap the VM) or no valid status.
pub fn call_status(num_headers: usize) -> Option<u16> {
    if num_headers == 0 {
        return None;
    }
    header_value(MapType::HttpCallResponseHeaders, ":status").and_then(|s| s.parse::<u16>().ok())
}

/// The body of a finished call, `body_size` bytes as Envoy reported, during its callback.
pub fn call_body(body_size: usize) -> Vec<u8> {
    if body_size == 0 {
        return Vec::new();
    }
    hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, body_size)
        .ok()
        .flatten()
        .unwrap_or_default()
}

/// Every value of the finished call's response headers whose name is `wanted` (several
/// `set-cookie`, say), during its callback; only called when some are.
pub fn call_headers(wanted: impl Fn(&str) -> bool) -> Vec<(String, String)> {
    hostcalls::get_map_bytes(MapType::HttpCallResponseHeaders)
        .unwrap_or_default()
        .into_iter()
        .filter(|(name, _)| wanted(name))
        .filter_map(|(name, value)| Some((name, String::from_utf8(value).ok()?)))
        .collect()
}
