//! The per-request state machine (SPEC §3.2, §3.5, §4, §6): events in, actions out, no I/O.
//!
//! The host drives one [`Gather`] per matched client request:
//!
//! 1. [`Gather::start`] when the request (and its body, if the route reads it) is in;
//! 2. [`Gather::on_event`] for every [`Event`] about an attempt it dispatched;
//! 3. [`Gather::on_timer`] at (or soon after) every [`Action::WakeAt`] it asked for.
//!
//! Each call returns the [`Action`]s to carry out, in order: attempts to dispatch, wake-ups to
//! schedule, and at most once in the whole life of the request, the [`Action::Respond`] — always
//! last, and after it every call returns no action. Time comes in with each call, as the host's
//! clock says; shared state (cache, circuit breakers) goes through a [`Store`].
//!
//! The words are the field's: a *call* is one entry of the route's `calls`; a *request* is one
//! logical upstream request (a plain call's, or one `for_each` item's); an *attempt* is one
//! request sent (the first, a retry, or a hedge), as in Envoy's and gRPC's retry vocabulary.
//! How a request moves between those states is in `machine.rs`, which opens with the theory of
//! operation and a state diagram.

#[cfg(test)]
mod driver;
mod inputs;
mod judge;
mod machine;
mod outbox;
mod output;
mod prepare;
mod selection;
mod state;
mod summary;

pub use inputs::ClientRequest;
pub use summary::{CallSummary, Summary};

use crate::plan::{Call, Route};
use crate::render::Response;
use crate::resilience::Store;
use crate::time::Instant;
use inputs::ClientInputs;
use outbox::Outbox;
use selection::Selection;
use state::{Attempt, CallState, Request};
use std::rc::Rc;
use std::time::Duration;

/// One attempt of a request: its place among the attempts of one [`Gather`]. Events name the
/// attempt they are about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AttemptId(usize);

impl AttemptId {
    /// The `n`-th attempt dispatched by a gather, from 0 (attempts are numbered in the order
    /// their [`Dispatch`] actions were returned).
    pub const fn nth(n: usize) -> AttemptId {
        AttemptId(n)
    }

    /// Its place among the gather's attempts, from 0.
    pub const fn index(self) -> usize {
        self.0
    }
}

/// One logical upstream request: a plain call's, or one `for_each` item's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestId(usize);

/// One item of a `for_each` call: its place among the call's distinct items.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ItemId(usize);

/// What the host must do next.
#[derive(Debug, PartialEq)]
pub enum Action {
    /// Send an attempt with `dispatch_http_call`; report its outcome as an [`Event`].
    Dispatch(Dispatch),
    /// Call [`Gather::on_timer`] at (or soon after) this moment.
    WakeAt(Instant),
    /// Answer the client with this local reply. The last action of the request.
    Respond(Response),
}

impl Action {
    /// The attempt to send, if this action is one.
    pub fn dispatch(&self) -> Option<&Dispatch> {
        match self {
            Action::Dispatch(dispatch) => Some(dispatch),
            Action::WakeAt(_) | Action::Respond(_) => None,
        }
    }
}

/// One attempt, ready for `dispatch_http_call`.
#[derive(Debug, PartialEq)]
pub struct Dispatch {
    /// Names the attempt in the [`Event`] about it.
    pub attempt: AttemptId,
    /// Shared with its request, so retries and hedges send it again without copying it.
    pub request: Rc<UpstreamRequest>,
    /// The call's `timeout_ms`, cut to what is left of the route deadline (at least 1 ms).
    pub timeout: Duration,
    /// Set when the attempt may share an identical request of another aggregation (SPEC §6
    /// `coalesce`): its call coalesces, and it is neither a hedge nor the circuit breaker's
    /// probe, which must reach the upstream themselves.
    pub coalesce: Option<Coalesce>,
}

/// How an attempt may be shared (SPEC §6 `coalesce`). The host joins it to the request in
/// flight under `key` (its outcome is then reported with [`Gather::on_coalesced_event`]), or
/// sends it for others to join. Either way the attempt waits at most its own `timeout`, which
/// the host keeps with a wake-up ([`Event::TimedOut`]): the request itself is sent with the
/// call's `timeout`, so that it outlives the deadline of the aggregation that happened to send
/// it, for the others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Coalesce {
    /// Names identical requests: cluster, method, authority, rendered path and call headers,
    /// and the `vary` headers' client values.
    pub key: Rc<str>,
    /// The call's `timeout_ms`, not cut to any aggregation's deadline.
    pub timeout: Duration,
}

/// A rendered upstream request.
#[derive(Debug, PartialEq)]
pub struct UpstreamRequest {
    /// The Envoy cluster to send it to.
    pub cluster: Rc<str>,
    /// `:method`, `:path`, `:authority` first, then the call's headers, lowercase names.
    pub headers: Vec<(Text, Text)>,
    /// The body, if the call has one (SPEC §3.4).
    pub body: Option<Vec<u8>>,
}

/// A header name or value of an [`UpstreamRequest`], as a `&str` (`Deref`). Only what a
/// template rendered for this request is copied: the filter's own names are static, and the
/// plan's names and fixed values and the client's forwarded values are shared, so a request
/// allocates for its path and rendered values alone (issue 14: allocations per aggregation).
#[derive(Debug, Clone)]
pub enum Text {
    /// The filter's own text (`:method`, `:path`, `:authority`, `content-type` and its
    /// `application/json`).
    Static(&'static str),
    /// The plan's or the client's text, shared.
    Shared(Rc<str>),
    /// Rendered for this request.
    Rendered(String),
}

impl std::ops::Deref for Text {
    type Target = str;

    fn deref(&self) -> &str {
        match self {
            Text::Static(text) => text,
            Text::Shared(text) => text,
            Text::Rendered(text) => text,
        }
    }
}

/// Equal when the text is, however it is held.
impl PartialEq for Text {
    fn eq(&self, other: &Text) -> bool {
        **self == **other
    }
}

impl Eq for Text {}

impl PartialEq<str> for Text {
    fn eq(&self, other: &str) -> bool {
        **self == *other
    }
}

impl PartialEq<&str> for Text {
    fn eq(&self, other: &&str) -> bool {
        **self == **other
    }
}

impl std::fmt::Display for Text {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self)
    }
}

/// What happened to a dispatched attempt, as the host saw it: exactly one event per
/// [`Dispatch`], passed to [`Gather::on_event`]. Each names its attempt.
#[derive(Debug)]
pub enum Event {
    /// The upstream (or Envoy on its behalf) answered with a status and a body.
    Answered {
        /// The attempt answered.
        attempt: AttemptId,
        /// The `:status` of the answer.
        status: u16,
        /// The response headers the call copies ([`Gather::headers_to_copy`]), every value;
        /// empty when the call copies none.
        headers: Vec<(String, String)>,
        /// The whole body, at most [`Gather::body_limit`] bytes.
        body: Vec<u8>,
    },
    /// The answer's body is larger than the call's `max_body_bytes`
    /// ([`Gather::body_limit`]); it was not read.
    TooLarge {
        /// The attempt answered.
        attempt: AttemptId,
        /// The `:status` of the answer.
        status: u16,
    },
    /// The attempt ended without a response: the connection was reset after it was
    /// dispatched (Envoy reports no headers, or no valid `:status`).
    Reset {
        /// The attempt that ended.
        attempt: AttemptId,
    },
    /// The host refused to dispatch the attempt (unknown or not yet warmed cluster).
    Refused {
        /// The attempt refused.
        attempt: AttemptId,
        /// What the host said, for `expose_errors`.
        detail: String,
    },
    /// Envoy accepted the attempt but could not start it (no healthy host in the cluster).
    Unreachable {
        /// The attempt that could not start.
        attempt: AttemptId,
        /// What the host said, for `expose_errors`.
        detail: String,
    },
    /// A shared attempt (SPEC §6 `coalesce`, [`Dispatch::coalesce`]) ran out of time: the host
    /// stopped waiting at the attempt's own timeout (Envoy keeps the shared request's, which
    /// may be longer), or the shared request itself timed out. Judged `timeout`.
    TimedOut {
        /// The attempt that stopped waiting.
        attempt: AttemptId,
    },
}

impl Event {
    /// The attempt the event is about.
    pub fn attempt(&self) -> AttemptId {
        match self {
            Event::Answered { attempt, .. }
            | Event::TooLarge { attempt, .. }
            | Event::Reset { attempt }
            | Event::Refused { attempt, .. }
            | Event::Unreachable { attempt, .. }
            | Event::TimedOut { attempt } => *attempt,
        }
    }
}

/// The aggregation of one client request: every call's state, its requests and their attempts.
#[derive(Debug)]
pub struct Gather {
    route: Rc<Route>,
    client: ClientInputs,
    /// Per call, indexed by [`crate::plan::CallId`].
    calls: Vec<CallState>,
    /// Indexed by [`RequestId`].
    requests: Vec<Request>,
    /// Indexed by [`AttemptId`].
    attempts: Vec<Attempt>,
    selection: Selection,
    /// The route deadline: the request headers' arrival plus `deadline_ms`.
    deadline: Instant,
    outbox: Outbox,
    /// Clusters whose circuit this request's calls opened (for stats).
    opened_circuits: Vec<String>,
}

impl Gather {
    /// Starts the aggregation of a request whose headers arrived at `received` (the deadline
    /// counts from then, even when the body took time to arrive), at `now`: answers a
    /// `?fields=` naming no call at once (400), else dispatches every fetched call without
    /// pending dependencies (and answers if none can run).
    pub fn start(
        route: Rc<Route>,
        request: ClientRequest,
        received: Instant,
        now: Instant,
        store: &dyn Store,
    ) -> (Gather, Vec<Action>) {
        machine::start(route, request, received, now, store)
    }

    /// Takes in what happened to an attempt, at `now`. An event about an attempt that is no
    /// longer open (the slower of a hedged pair, or one after the answer) changes nothing.
    pub fn on_event(&mut self, event: Event, now: Instant, store: &dyn Store) -> Vec<Action> {
        self.step(now, |gather| gather.attempt_ended(event, now, store, false))
    }

    /// Takes in what happened to an attempt that joined an identical request another
    /// aggregation sent (SPEC §6 `coalesce`), at `now`: judged as [`Gather::on_event`] judges,
    /// its success marked coalesced. That request's outcome is recorded once, by the
    /// aggregation it was sent for: a coalesced event neither fills the cache nor counts for the
    /// circuit breaker.
    pub fn on_coalesced_event(
        &mut self,
        event: Event,
        now: Instant,
        store: &dyn Store,
    ) -> Vec<Action> {
        self.step(now, |gather| gather.attempt_ended(event, now, store, true))
    }

    /// Sends the retries and hedges due by `now`. Safe to call early or more than once.
    pub fn on_timer(&mut self, now: Instant, store: &dyn Store) -> Vec<Action> {
        self.step(now, |gather| gather.timers_fired(now, store))
    }

    /// The client has its answer; nothing more will be asked of the host.
    pub fn is_answered(&self) -> bool {
        self.outbox.answered()
    }

    /// The largest answer body the host should read for `attempt`, in bytes (0 for an
    /// attempt this gather does not know).
    pub fn body_limit(&self, attempt: AttemptId) -> u64 {
        self.call_of(attempt).map_or(0, |c| c.max_body_bytes)
    }

    /// The upstream response headers the host should read for `attempt` (`headers_from`).
    pub fn headers_to_copy(&self, attempt: AttemptId) -> &[String] {
        self.call_of(attempt)
            .map_or(&[], |c| c.copy_headers.as_slice())
    }

    /// The name of the call `attempt` belongs to, for logs and tests.
    pub fn call_name(&self, attempt: AttemptId) -> Option<&str> {
        self.call_of(attempt).map(|c| c.name.as_str())
    }

    fn call_of(&self, attempt: AttemptId) -> Option<&Call> {
        let request = self.requests.get(self.attempts.get(attempt.0)?.request.0)?;
        self.route.call(request.call)
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_batch;
#[cfg(test)]
mod tests_coalesce;
#[cfg(test)]
mod tests_when;

#[cfg(test)]
mod text_tests {
    use super::Text;
    use std::rc::Rc;

    #[test]
    fn text_compares_by_content_whichever_way_it_is_held() {
        let shared = Text::Shared(Rc::from("x-request-id"));
        assert_eq!(shared, Text::Static("x-request-id"));
        assert_eq!(shared, Text::Rendered("x-request-id".to_string()));
        assert_ne!(shared, Text::Static("traceparent"));
        assert_eq!(shared, "x-request-id");
        assert_eq!(&*shared, "x-request-id");
        assert_eq!(shared.to_string(), "x-request-id");
    }
}
