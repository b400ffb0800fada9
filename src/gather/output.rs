//! What the client sees of each call: its bytes under its key (spliced as received when
//! possible), its status for `_meta`, and `join` results (per item, or per key of a batch)
//! merged into their target call.

use super::selection::Selection;
use super::state::{CallState, Fanned, Outcome};
use crate::json_number;
use crate::plan::{Call, CallId, Join, Route};
use crate::render::{CallStatus, CallView};
use serde_json::Value;
use std::borrow::Cow;

/// Every call of the route as the renderer sees it, in configuration order.
pub fn views<'a>(
    route: &'a Route,
    states: &'a [CallState],
    selection: &Selection,
) -> Vec<CallView<'a>> {
    route
        .calls()
        .zip(states)
        .map(|((id, call), state)| {
            let emitted = selection.emitted.get(id.index()).copied().unwrap_or(false);
            let (status, fell_back) = status(call, state);
            let mut view = CallView {
                name: &call.output_key,
                output: if emitted {
                    output(route, states, id)
                } else {
                    None
                },
                status,
                fell_back,
                duration: None,
                keyed: call.keyed,
                headers: &[],
                attempts: 0,
                retried: false,
                cached: false,
                coalesced: false,
                stale: Vec::new(),
            };
            if let CallState::Done {
                outcome,
                duration,
                attempts,
            } = state
            {
                view.duration = *duration;
                view.attempts = *attempts;
                finished(&mut view, outcome, *attempts);
            }
            view
        })
        .collect()
}

/// What `_meta` and `server-timing` say about a call, and whether a fallback stands in.
fn status<'a>(call: &Call, state: &'a CallState) -> (CallStatus<'a>, bool) {
    let has_fallback = call.fallback.is_some();
    match state {
        CallState::NotFetched => (CallStatus::NotFetched, false),
        // Absent, and its fallback does not stand in (SPEC §3.6).
        CallState::Skipped => (CallStatus::Skipped, false),
        CallState::Waiting | CallState::Running { .. } => (CallStatus::Unfinished, false),
        CallState::Done { outcome, .. } => match outcome {
            Outcome::Succeeded(_) => (CallStatus::Succeeded, false),
            Outcome::Failed(failure) => (CallStatus::Failed(failure), has_fallback),
            Outcome::Fanned(fanned) => {
                let failures: Vec<_> = fanned.failures().collect();
                let fell_back = has_fallback && !failures.is_empty();
                if failures.is_empty() {
                    (CallStatus::Succeeded, fell_back)
                } else {
                    (CallStatus::ItemsFailed(failures), fell_back)
                }
            }
        },
    }
}

/// What a finished call adds to its view: copied headers, retries, cache hits, stale entries,
/// coalesced answers.
fn finished<'a>(view: &mut CallView<'a>, outcome: &'a Outcome, attempts: u32) {
    match outcome {
        Outcome::Succeeded(success) => {
            view.headers = success.headers.as_slice();
            view.retried = attempts > 1;
            view.cached = success.cached;
            view.coalesced = success.coalesced;
            view.stale = success
                .stale_age_ms
                .map(|age| vec![(None, age)])
                .unwrap_or_default();
        }
        Outcome::Fanned(fanned) => {
            view.retried = fanned.items.iter().any(|i| i.attempts > 1);
            view.coalesced = fanned
                .items
                .iter()
                .any(|i| matches!(&i.result, Some(Ok(s)) if s.coalesced));
            view.stale = fanned.stale().map(|(key, age)| (Some(key), age)).collect();
        }
        Outcome::Failed(_) => view.retried = attempts > 1,
    }
}

/// The JSON under a call's key, or `None` when the key is left out.
fn output<'a>(route: &'a Route, states: &'a [CallState], id: CallId) -> Option<Cow<'a, [u8]>> {
    let plan = route.call(id)?;
    let CallState::Done { outcome, .. } = states.get(id.index())? else {
        return None;
    };
    let fallback = plan.fallback.as_ref();
    let joins: Vec<(&Join, Joined, Option<&Value>)> = joins_into(route, states, id).collect();
    if !joins.is_empty() {
        // Joins go into the body as the client sees it, after the call's own transforms.
        let mut base = match outcome {
            Outcome::Succeeded(success) => json_number::parse(&success.json).ok()?,
            Outcome::Failed(_) => fallback?.value.clone(),
            Outcome::Fanned(_) => return None,
        };
        for (join, joined, item_fallback) in joins {
            apply_join(&mut base, join, joined, item_fallback);
        }
        return serde_json::to_vec(&base).ok().map(Cow::Owned);
    }
    match outcome {
        Outcome::Succeeded(success) => Some(Cow::Borrowed(&success.json)),
        Outcome::Failed(_) => fallback.map(|f| Cow::Borrowed(f.json.as_slice())),
        Outcome::Fanned(fanned) => Some(Cow::Owned(item_array(
            fanned,
            fallback.map(|f| f.json.as_slice()),
        ))),
    }
}

/// What a joining call has for the elements it joins into.
#[derive(Clone, Copy)]
enum Joined<'a> {
    /// Its items' results, by key.
    Items(&'a Fanned),
    /// Nothing: it failed as a whole (`too_many_items`, say), so every element's key failed.
    Failed,
}

/// The finished `for_each` calls and batch joins that join into `target`, in configuration
/// order. A skipped one joins nothing: the target's elements keep what the upstream sent.
fn joins_into<'a>(
    route: &'a Route,
    states: &'a [CallState],
    target: CallId,
) -> impl Iterator<Item = (&'a Join, Joined<'a>, Option<&'a Value>)> {
    route
        .calls
        .iter()
        .zip(states)
        .filter_map(move |(plan, state)| {
            let join = plan.join.as_ref().filter(|j| j.target == target)?;
            let joined = match state {
                CallState::Done {
                    outcome: Outcome::Fanned(fanned),
                    ..
                } => Joined::Items(fanned),
                CallState::Done {
                    outcome: Outcome::Failed(_),
                    ..
                } => Joined::Failed,
                _ => return None,
            };
            Some((join, joined, plan.fallback.as_ref().map(|f| &f.value)))
        })
}

/// Each element of the array at `join.into` whose `join.on` equals an item gets that item's
/// result (or the call's fallback) under `join.key`, replacing an upstream value of that key;
/// for a failed item without fallback the key is removed, so an upstream value never passes
/// for the joined result. A call that failed as a whole fails every element that has a key.
fn apply_join(base: &mut Value, join: &Join, joined: Joined<'_>, fallback: Option<&Value>) {
    let Some(Value::Array(elements)) = join.into.find_mut(base) else {
        return;
    };
    for element in elements {
        let Some(on) = single(join.on.find(element)) else {
            continue;
        };
        let detail = match joined {
            Joined::Failed => fallback.cloned(),
            Joined::Items(fanned) => {
                let Some(item) = fanned
                    .items
                    .iter()
                    .find(|item| json_number::same_value(&item.value, on))
                else {
                    continue;
                };
                match &item.result {
                    Some(Ok(success)) => json_number::parse(&success.json).ok(),
                    Some(Err(_)) => fallback.cloned(),
                    None => None,
                }
            }
        };
        if let Value::Object(map) = element {
            match detail {
                Some(detail) => {
                    map.insert(join.key.clone(), detail);
                }
                // `retain`, not `remove`: with serde_json's `preserve_order`, `remove` moves
                // the last key into the gap.
                None if map.contains_key(&join.key) => map.retain(|key, _| *key != join.key),
                None => {}
            }
        }
    }
}

fn single(found: crate::json_path::Found<'_>) -> Option<&Value> {
    match found {
        crate::json_path::Found::One(value) => Some(value),
        _ => None,
    }
}

/// `[item results...]` in item order: a failed item is its fallback, or `null`.
fn item_array(fanned: &Fanned, fallback: Option<&[u8]>) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + fanned.items.len() * 64);
    out.push(b'[');
    for (i, item) in fanned.items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        match &item.result {
            Some(Ok(success)) => out.extend_from_slice(&success.json),
            _ => out.extend_from_slice(fallback.unwrap_or(b"null")),
        }
    }
    out.push(b']');
    out
}
