//! The states of one aggregation, as data: the calls, their requests and the requests'
//! attempts. Every change of state is made in `machine.rs`; this file only describes the states
//! and answers questions about them.

use super::{ItemId, RequestId, UpstreamRequest};
use crate::outcome::{Failure, Success};
use crate::plan::CallId;
use crate::time::Instant;
use serde_json::Value;
use std::rc::Rc;
use std::time::Duration;

/// Where one call of the route stands in this request.
#[derive(Debug)]
pub enum CallState {
    /// Not fetched: `?fields=` did not ask for it, nor for anything that needs it.
    NotFetched,
    /// Waiting for its dependencies to settle.
    Waiting,
    /// Its requests are out.
    Running {
        started: Instant,
        /// Per-item progress of a `for_each` call; `None` for a plain call.
        items: Option<Vec<ItemState>>,
    },
    /// Skipped (SPEC §3.6): its `when` did not hold, or a call it depends on was skipped.
    /// Never dispatched, absent from the answer, neither a success nor a failure.
    Skipped,
    /// Finished, successfully or not.
    Done {
        outcome: Outcome,
        /// From the first dispatch to the last answer; `None` if never dispatched.
        duration: Option<Duration>,
        /// Attempts sent for the call: first attempts, retries, hedges.
        attempts: u32,
    },
}

impl CallState {
    /// Finished, or never to run: nothing will change it any more.
    pub fn settled(&self) -> bool {
        matches!(
            self,
            CallState::Done { .. } | CallState::NotFetched | CallState::Skipped
        )
    }

    /// Counts for `wait_for` (SPEC §6): fetched, and not skipped.
    pub fn counts(&self) -> bool {
        !matches!(self, CallState::NotFetched | CallState::Skipped)
    }

    /// Succeeded with fresh data (for `wait_for`).
    pub fn succeeded(&self) -> bool {
        match self {
            CallState::Done { outcome, .. } => match outcome {
                Outcome::Succeeded(success) => success.stale_age_ms.is_none(),
                Outcome::Failed(_) => false,
                Outcome::Fanned(fanned) => fanned
                    .items
                    .iter()
                    .all(|i| matches!(&i.result, Some(Ok(s)) if s.stale_age_ms.is_none())),
            },
            _ => false,
        }
    }

    /// Failed without a result to show (a `for_each` call is never failed as a whole).
    pub fn failed(&self) -> bool {
        matches!(
            self,
            CallState::Done {
                outcome: Outcome::Failed(_),
                ..
            }
        )
    }
}

/// How a finished call ended.
#[derive(Debug)]
pub enum Outcome {
    Succeeded(Success),
    Failed(Failure),
    /// A `for_each` call: one result per item.
    Fanned(Fanned),
}

/// The results of a `for_each` call, or of a batch join (one per key).
#[derive(Debug)]
pub struct Fanned {
    pub items: Vec<ItemState>,
    /// The items' bodies as one array, for later calls that read this one.
    pub value: Option<Value>,
}

impl Fanned {
    /// The failed items: key and failure.
    pub fn failures(&self) -> impl Iterator<Item = (&str, &Failure)> {
        self.items.iter().filter_map(|item| match &item.result {
            Some(Err(failure)) => Some((item.key.as_str(), failure)),
            _ => None,
        })
    }

    /// The items answered by a stale cache entry: key and age in ms.
    pub fn stale(&self) -> impl Iterator<Item = (&str, u64)> {
        self.items.iter().filter_map(|item| match &item.result {
            Some(Ok(Success {
                stale_age_ms: Some(age),
                ..
            })) => Some((item.key.as_str(), *age)),
            _ => None,
        })
    }
}

/// One item of a `for_each` call, or one key of a batch join.
#[derive(Debug)]
pub struct ItemState {
    /// The item as `_meta` and error bodies name it (see [`ItemState::all`]).
    pub key: String,
    pub value: Value,
    /// `None` while its request runs.
    pub result: Option<Result<Success, Failure>>,
    /// Attempts sent for the item's request. A batch chunk's attempts are counted once, on its
    /// first key, so that the call's attempts add up.
    pub attempts: u32,
}

impl ItemState {
    /// The items of one `for_each` call (distinct scalars, in order), each with its key in
    /// `_meta.errors.<call>.items` and `_meta.stale.<call>.items` (SPEC §4: unique keys): a
    /// string by its text, a number or boolean as JSON writes it (`u1`, `7`, `true`). A string
    /// and a number could print alike (`"7"` and `7`), so when a call's items mix strings with
    /// numbers or booleans, every item of the call is keyed by its JSON text: strings quoted
    /// (`"\"7\""` and `"7"` in the answer's JSON). Distinct items then always have distinct
    /// keys, and the usual case, items of one type, keeps plain ones.
    pub fn all(values: Vec<Value>) -> Vec<ItemState> {
        let strings = values.iter().filter(|v| v.is_string()).count();
        let mixed = strings != 0 && strings != values.len();
        values
            .into_iter()
            .map(|value| ItemState {
                key: match &value {
                    Value::String(s) if !mixed => s.clone(),
                    other => other.to_string(),
                },
                value,
                result: None,
                attempts: 0,
            })
            .collect()
    }
}

/// A rendered request, kept to be sent again by retries and hedges.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub request: Rc<UpstreamRequest>,
    /// The call's own timeout; each attempt also stops at the route deadline.
    pub timeout: Duration,
    /// Key in the response cache, when the call caches.
    pub cache_key: Option<String>,
    /// Key of identical requests in flight, when the call coalesces (SPEC §6).
    pub coalesce_key: Option<Rc<str>>,
}

/// What one request is made for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Serves {
    /// A plain call: the whole call.
    Call,
    /// One item of a `for_each` call.
    Item(ItemId),
    /// One chunk of a batch join: these keys, in order (at most `max_batch`).
    Chunk(Vec<ItemId>),
}

/// One logical upstream request: a plain call's, one `for_each` item's, or one batch chunk's.
#[derive(Debug)]
pub struct Request {
    pub call: CallId,
    /// What its result concludes.
    pub serves: Serves,
    pub prepared: Prepared,
    pub started: Instant,
    /// A cache entry too old to serve but young enough to stand in if every attempt fails.
    pub stale: Option<StaleEntry>,
    /// Attempts sent so far.
    pub attempts: u32,
    pub hedge: Hedge,
    /// The latest failure, reported if nothing better arrives.
    pub last_failure: Option<Failure>,
    /// Attempts that ended with the outcome of an identical request another aggregation sent
    /// (SPEC §6 `coalesce`), for stats.
    pub coalesced: u32,
    pub state: RequestState,
}

/// Where a request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestState {
    /// `open` attempts are out (two while a hedge races its first attempt).
    InFlight { open: u32 },
    /// The last attempt failed; the next goes out at `retry_at`.
    BackingOff { retry_at: Instant },
    /// Its result went to its call; later answers are ignored.
    Done,
}

/// A request's hedge (SPEC §6 `hedge_after_ms`): planned when its first attempt goes out, sent
/// at most once, only while that single attempt is still out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hedge {
    Off,
    Planned(Instant),
    Sent,
}

/// A cached answer that may stand in for a failed request.
#[derive(Debug)]
pub struct StaleEntry {
    pub body: Vec<u8>,
    pub stored: Instant,
}

/// One attempt handed to the host.
#[derive(Debug)]
pub struct Attempt {
    pub request: RequestId,
    pub sent: Instant,
    pub timeout: Duration,
    /// No event about it yet, and its request still wants one.
    pub open: bool,
    /// The circuit breaker's one probe (SPEC §6): its result decides the circuit.
    pub probe: bool,
}
