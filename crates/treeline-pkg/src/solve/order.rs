//! Install order: dependencies before dependents, Pre-Depends strictly before, cycles
//! broken deterministically (by name).

use std::collections::HashMap;

use super::universe::Universe;

/// A dependency edge inside the selected set.
#[derive(Clone, Copy)]
struct Edge {
    to: usize,
    strict: bool,
}

/// Orders `selected` (package ids) for installation.
pub(crate) fn install_order(universe: &Universe, selected: &[usize]) -> Vec<usize> {
    let mut nodes: Vec<usize> = selected.to_vec();
    nodes.sort_by(|&a, &b| key(universe, a).cmp(&key(universe, b)));
    nodes.dedup();
    // carriers: name -> selected positions carrying it (own name or provided).
    let mut carriers: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, &id) in nodes.iter().enumerate() {
        if let Some(meta) = universe.package(id) {
            carriers.entry(meta.name.as_str()).or_default().push(i);
            for provide in &meta.provides {
                carriers.entry(provide.name.as_str()).or_default().push(i);
            }
        }
    }
    let edges: Vec<Vec<Edge>> = nodes
        .iter()
        .map(|&id| {
            let Some(meta) = universe.package(id) else {
                return Vec::new();
            };
            let strict = meta.pre_depends.iter().map(|d| (d, true));
            let normal = meta.depends.iter().map(|d| (d, false));
            let mut out: Vec<Edge> = Vec::new();
            for (dependency, is_strict) in strict.chain(normal) {
                for atom in &dependency.alternatives {
                    for &to in carriers
                        .get(atom.name.as_str())
                        .map(Vec::as_slice)
                        .unwrap_or(&[])
                    {
                        let Some(&target) = nodes.get(to) else {
                            continue;
                        };
                        if target != id && universe.satisfies(target, atom) {
                            match out.iter_mut().find(|e| e.to == to) {
                                Some(edge) => edge.strict |= is_strict,
                                None => out.push(Edge {
                                    to,
                                    strict: is_strict,
                                }),
                            }
                        }
                    }
                }
            }
            out
        })
        .collect();
    let mut order = Vec::with_capacity(nodes.len());
    for component in strongly_connected(&edges) {
        if component.len() == 1 {
            order.extend(component);
        } else {
            order.extend(order_cycle(&component, &edges));
        }
    }
    order
        .into_iter()
        .filter_map(|i| nodes.get(i).copied())
        .collect()
}

/// Sort key: name, then id (for identical names in odd inputs).
fn key(universe: &Universe, id: usize) -> (&str, usize) {
    (
        universe.package(id).map(|m| m.name.as_str()).unwrap_or(""),
        id,
    )
}

/// Tarjan's algorithm, iterative; components come out dependencies first.
fn strongly_connected(edges: &[Vec<Edge>]) -> Vec<Vec<usize>> {
    let count = edges.len();
    let mut index = vec![usize::MAX; count];
    let mut low = vec![0usize; count];
    let mut on_stack = vec![false; count];
    let mut stack: Vec<usize> = Vec::new();
    let mut components = Vec::new();
    let mut next_index = 0;
    for root in 0..count {
        if index.get(root).copied() != Some(usize::MAX) {
            continue;
        }
        // (node, next edge to look at)
        let mut work: Vec<(usize, usize)> = vec![(root, 0)];
        while let Some(&mut (node, ref mut edge_at)) = work.last_mut() {
            if *edge_at == 0 && index[node] == usize::MAX {
                index[node] = next_index;
                low[node] = next_index;
                next_index += 1;
                stack.push(node);
                on_stack[node] = true;
            }
            let node_edges = edges.get(node).map(Vec::as_slice).unwrap_or(&[]);
            if let Some(edge) = node_edges.get(*edge_at) {
                *edge_at += 1;
                let to = edge.to;
                if index[to] == usize::MAX {
                    work.push((to, 0));
                } else if on_stack[to] {
                    low[node] = low[node].min(index[to]);
                }
                continue;
            }
            work.pop();
            if let Some(&(parent, _)) = work.last() {
                low[parent] = low[parent].min(low[node]);
            }
            if low[node] == index[node] {
                let mut component = Vec::new();
                while let Some(member) = stack.pop() {
                    on_stack[member] = false;
                    component.push(member);
                    if member == node {
                        break;
                    }
                }
                component.sort_unstable();
                components.push(component);
            }
        }
    }
    components
}

/// Orders one cycle: a member goes once everything it depends on inside the cycle has
/// gone; when none can, the first (by name) whose Pre-Depends are met goes, breaking a
/// plain Depends edge; a Pre-Depends cycle is broken at the first member by name.
fn order_cycle(component: &[usize], edges: &[Vec<Edge>]) -> Vec<usize> {
    let mut left: Vec<usize> = component.to_vec();
    let mut done: Vec<usize> = Vec::with_capacity(component.len());
    let inside = |from: usize, strict_only: bool, done: &[usize]| {
        edges
            .get(from)
            .map(Vec::as_slice)
            .unwrap_or(&[])
            .iter()
            .all(|edge| {
                !component.contains(&edge.to)
                    || done.contains(&edge.to)
                    || edge.to == from
                    || (strict_only && !edge.strict)
            })
    };
    while !left.is_empty() {
        let pick = left
            .iter()
            .position(|&n| inside(n, false, &done))
            .or_else(|| left.iter().position(|&n| inside(n, true, &done)))
            .unwrap_or(0);
        let node = left.remove(pick);
        done.push(node);
    }
    done
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edges(list: &[&[(usize, bool)]]) -> Vec<Vec<Edge>> {
        list.iter()
            .map(|out| {
                out.iter()
                    .map(|&(to, strict)| Edge { to, strict })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn components_come_out_dependencies_first() {
        // 0 -> 1 -> 2 <-> 3
        let graph = edges(&[&[(1, false)], &[(2, false)], &[(3, false)], &[(2, false)]]);
        assert_eq!(
            strongly_connected(&graph),
            vec![vec![2, 3], vec![1], vec![0]]
        );
    }

    #[test]
    fn cycle_follows_strict_edges_then_name_order() {
        // 0 pre-depends on 1, 1 depends on 0: 1 must go first.
        let graph = edges(&[&[(1, true)], &[(0, false)]]);
        assert_eq!(order_cycle(&[0, 1], &graph), vec![1, 0]);
        // Plain cycle: first by position (name order).
        let graph = edges(&[&[(1, false)], &[(0, false)]]);
        assert_eq!(order_cycle(&[0, 1], &graph), vec![0, 1]);
    }
}
