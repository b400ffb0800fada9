//! Call dependencies (SPEC §3.2): checks them once and orders the calls so every call comes
//! after the calls it depends on.

use super::CallId;

/// A dispatch order in which each call follows its dependencies, preferring configuration
/// order; or the names along a cycle. `dependencies` holds each call's, in configuration
/// order; `names` the calls' names, for the error.
pub fn order(dependencies: &[Vec<CallId>], names: &[&str]) -> Result<Vec<CallId>, String> {
    let count = dependencies.len();
    let mut done = vec![false; count];
    let is_done = |done: &[bool], call: CallId| done.get(call.index()).copied().unwrap_or(false);
    let mut order = Vec::with_capacity(count);
    while order.len() < count {
        let ready = (0..count).map(CallId::new).find(|&call| {
            !is_done(&done, call)
                && dependencies
                    .get(call.index())
                    .is_some_and(|deps| deps.iter().all(|d| is_done(&done, *d)))
        });
        match ready {
            Some(call) => {
                if let Some(flag) = done.get_mut(call.index()) {
                    *flag = true;
                }
                order.push(call);
            }
            None => return Err(describe_cycle(dependencies, &done, names)),
        }
    }
    Ok(order)
}

/// Follows unfinished dependencies from an unfinished call until a call repeats.
fn describe_cycle(dependencies: &[Vec<CallId>], done: &[bool], names: &[&str]) -> String {
    let pending = |call: &CallId| !done.get(call.index()).copied().unwrap_or(true);
    let name = |call: CallId| names.get(call.index()).copied().unwrap_or("?");
    let mut path: Vec<CallId> = (0..dependencies.len())
        .map(CallId::new)
        .find(pending)
        .into_iter()
        .collect();
    while let Some(&last) = path.last() {
        let next = dependencies
            .get(last.index())
            .and_then(|deps| deps.iter().copied().find(pending));
        let Some(next) = next else { break };
        if let Some(start) = path.iter().position(|&c| c == next) {
            let mut cycle: Vec<&str> = path.iter().skip(start).map(|&c| name(c)).collect();
            cycle.push(name(next));
            return format!("dependency cycle: {}", cycle.join(" -> "));
        }
        path.push(next);
    }
    "dependency cycle".to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(indices: &[usize]) -> Vec<CallId> {
        indices.iter().copied().map(CallId::new).collect()
    }

    #[test]
    fn independent_calls_keep_configuration_order() {
        assert_eq!(
            order(&[vec![], vec![], vec![]], &["a", "b", "c"]).unwrap(),
            ids(&[0, 1, 2])
        );
    }

    #[test]
    fn dependents_come_after_their_dependencies() {
        let deps = [ids(&[2]), vec![], ids(&[1])];
        assert_eq!(order(&deps, &["a", "b", "c"]).unwrap(), ids(&[1, 2, 0]));
    }

    #[test]
    fn cycles_are_named() {
        let deps = [vec![], ids(&[2]), ids(&[3]), ids(&[1])];
        assert_eq!(
            order(&deps, &["a", "b", "c", "d"]).unwrap_err(),
            "dependency cycle: b -> c -> d -> b"
        );
        assert_eq!(
            order(&[ids(&[0])], &["self"]).unwrap_err(),
            "dependency cycle: self -> self"
        );
    }
}
