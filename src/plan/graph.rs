//! Call dependencies (SPEC §3.2): checks them once and orders the calls so every call comes
//! after the calls it depends on.

/// A dispatch order in which each call follows its dependencies, preferring configuration
/// order; or the names along a cycle.
pub fn order(dependencies: &[Vec<usize>], names: &[&str]) -> Result<Vec<usize>, String> {
    let count = dependencies.len();
    let mut done = vec![false; count];
    let mut order = Vec::with_capacity(count);
    while order.len() < count {
        let ready = (0..count).find(|&call| {
            !done.get(call).copied().unwrap_or(true)
                && dependencies
                    .get(call)
                    .is_some_and(|deps| deps.iter().all(|d| done.get(*d).copied().unwrap_or(false)))
        });
        match ready {
            Some(call) => {
                if let Some(flag) = done.get_mut(call) {
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
fn describe_cycle(dependencies: &[Vec<usize>], done: &[bool], names: &[&str]) -> String {
    let pending = |call: &usize| !done.get(*call).copied().unwrap_or(true);
    let mut path: Vec<usize> = (0..dependencies.len()).find(pending).into_iter().collect();
    while let Some(&last) = path.last() {
        let next = dependencies
            .get(last)
            .and_then(|deps| deps.iter().copied().find(pending));
        let Some(next) = next else { break };
        if let Some(start) = path.iter().position(|&c| c == next) {
            let mut cycle: Vec<&str> = path
                .iter()
                .skip(start)
                .map(|&c| names.get(c).copied().unwrap_or("?"))
                .collect();
            cycle.push(names.get(next).copied().unwrap_or("?"));
            return format!("dependency cycle: {}", cycle.join(" -> "));
        }
        path.push(next);
    }
    "dependency cycle".to_string()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn independent_calls_keep_configuration_order() {
        assert_eq!(
            order(&[vec![], vec![], vec![]], &["a", "b", "c"]).unwrap(),
            [0, 1, 2]
        );
    }

    #[test]
    fn dependents_come_after_their_dependencies() {
        let deps = [vec![2], vec![], vec![1]];
        assert_eq!(order(&deps, &["a", "b", "c"]).unwrap(), [1, 2, 0]);
    }

    #[test]
    fn cycles_are_named() {
        let deps = [vec![], vec![2], vec![3], vec![1]];
        assert_eq!(
            order(&deps, &["a", "b", "c", "d"]).unwrap_err(),
            "dependency cycle: b -> c -> d -> b"
        );
        assert_eq!(
            order(&[vec![0]], &["self"]).unwrap_err(),
            "dependency cycle: self -> self"
        );
    }
}
