//! Selective fetching (SPEC §5): `?fields=a,b` fetches only the named calls and what they
//! depend on, and emits only the named ones.

use crate::encoding::query_param;
use crate::plan::Route;
use crate::render::{self, Response};

/// Which calls a request fetches and which it shows.
#[derive(Debug, PartialEq, Eq)]
pub struct Selection {
    pub fetched: Vec<bool>,
    pub emitted: Vec<bool>,
}

impl Selection {
    /// Nothing fetched: the selection of a request answered before any call.
    pub fn none(calls: usize) -> Selection {
        Selection {
            fetched: vec![false; calls],
            emitted: vec![false; calls],
        }
    }
}

/// The selection asked for by the query, or the 400 answer to an unknown name.
pub fn select(route: &Route, query: &str) -> Result<Selection, Response> {
    let count = route.calls.len();
    let asked = route
        .fields_param
        .as_deref()
        .and_then(|param| query_param(query, param))
        .flatten()
        .filter(|list| !list.trim().is_empty());
    let Some(list) = asked else {
        return Ok(Selection {
            fetched: vec![true; count],
            emitted: route.calls.iter().map(|c| c.join.is_none()).collect(),
        });
    };
    let mut named = vec![false; count];
    for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        match route
            .calls
            .iter()
            .position(|c| c.output_key == name || c.name == name)
        {
            Some(call) => {
                if let Some(flag) = named.get_mut(call) {
                    *flag = true;
                }
            }
            None => return Err(unknown_field(route, name)),
        }
    }
    let mut emitted = vec![false; count];
    for (id, call) in route.calls() {
        if !named.get(id.index()).copied().unwrap_or(false) {
            continue;
        }
        // A joined call shows up inside the call it joins into.
        let shown = call.join.as_ref().map_or(id, |join| join.target);
        if let Some(flag) = emitted.get_mut(shown.index()) {
            *flag = true;
        }
    }
    Ok(Selection {
        fetched: with_dependencies(route, named),
        emitted,
    })
}

/// Adds every dependency of a fetched call, transitively (`order` lists dependents last).
fn with_dependencies(route: &Route, mut fetched: Vec<bool>) -> Vec<bool> {
    for &id in route.order.iter().rev() {
        if !fetched.get(id.index()).copied().unwrap_or(false) {
            continue;
        }
        for &dependency in route.call(id).map_or(&[][..], |c| &c.dependencies) {
            if let Some(flag) = fetched.get_mut(dependency.index()) {
                *flag = true;
            }
        }
    }
    fetched
}

fn unknown_field(route: &Route, name: &str) -> Response {
    let valid: Vec<&str> = route.calls.iter().map(|c| c.output_key.as_str()).collect();
    render::unknown_field(name, &valid)
}
