//! Every root of one object (`gcroot <addr>`): for each distinct root that reaches the object,
//! its shortest chain of references. Retention paths ([`super::paths`]) answer "what holds this
//! for good" with one path per object; a person drilling into one object wants them all (the
//! static field and the handle and the stack slot that each keep it).
//!
//! One breadth-first search backwards from the object over the reversed references: every
//! object is met at its shortest distance, so each root's path is a shortest one. Linear in the
//! heap, iterative.

use std::collections::HashMap;

use serde::Serialize;

use super::{NodeIndex, ObjectGraph, RootKind};

/// A root and its chain of references to the object, root first, the object last.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RootChain {
    pub root: RootKind,
    pub path: Vec<NodeIndex>,
}

/// The chains from up to `max` roots to `target`, nearest roots first. An unreachable object
/// (garbage not yet collected) has none.
pub fn chains_from_roots(graph: &ObjectGraph, target: NodeIndex, max: usize) -> Vec<RootChain> {
    let n = graph.len();
    if target.index() >= n || max == 0 {
        return Vec::new();
    }
    let mut roots_of: HashMap<u32, Vec<&RootKind>> = HashMap::new();
    for r in graph.roots() {
        let kinds = roots_of.entry(r.node.0).or_default();
        if !kinds.contains(&&r.kind) {
            kinds.push(&r.kind);
        }
    }
    let (offsets, parents) = reversed(graph);
    // toward[v]: the next object from v on its shortest way to the target (v references it).
    const UNSEEN: u32 = u32::MAX;
    let mut toward = vec![UNSEEN; n];
    toward[target.index()] = target.0;
    let mut queue = std::collections::VecDeque::from([target.0]);
    let mut out = Vec::new();
    while let Some(v) = queue.pop_front() {
        for kind in roots_of.get(&v).into_iter().flatten() {
            let mut path = vec![NodeIndex(v)];
            let mut at = v;
            while at != target.0 {
                at = toward[at as usize];
                path.push(NodeIndex(at));
            }
            out.push(RootChain { root: (*kind).clone(), path });
            if out.len() == max {
                return out;
            }
        }
        for &p in &parents[offsets[v as usize] as usize..offsets[v as usize + 1] as usize] {
            if toward[p as usize] == UNSEEN {
                toward[p as usize] = v;
                queue.push_back(p);
            }
        }
    }
    out
}

/// Objects that reference `node` (each once, in address order).
pub fn referrers(graph: &ObjectGraph, node: NodeIndex) -> Vec<NodeIndex> {
    (0..graph.len() as u32).filter(|&i| graph.child_slice(i).contains(&node.0)).map(NodeIndex).collect()
}

/// The references reversed, as offsets and a flat list (compressed rows): node v's referrers are
/// `parents[offsets[v]..offsets[v + 1]]`.
fn reversed(graph: &ObjectGraph) -> (Vec<u32>, Vec<u32>) {
    let n = graph.len();
    let mut offsets = vec![0u32; n + 1];
    for u in 0..n as u32 {
        for &v in graph.child_slice(u) {
            offsets[v as usize + 1] += 1;
        }
    }
    for i in 0..n {
        offsets[i + 1] += offsets[i];
    }
    let mut fill = offsets.clone();
    let mut parents = vec![0u32; graph.edge_count()];
    for u in 0..n as u32 {
        for &v in graph.child_slice(u) {
            parents[fill[v as usize] as usize] = u;
            fill[v as usize] += 1;
        }
    }
    (offsets, parents)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::heap::ObjectGraphBuilder;

    /// Objects at 0x10, 0x20, … with the given references (by position) and roots.
    fn graph(edges: &[(usize, usize)], nodes: usize, roots: &[(usize, RootKind)]) -> ObjectGraph {
        let mut b = ObjectGraphBuilder::new();
        b.add_type(1, "T");
        let at = |i: usize| 0x10 * (i as u64 + 1);
        for i in 0..nodes {
            let out: Vec<u64> = edges.iter().filter(|(f, _)| *f == i).map(|(_, t)| at(*t)).collect();
            b.add_node(at(i), 24, 1, out.len() as u64);
            b.add_edges(out);
        }
        for (i, kind) in roots {
            match kind {
                RootKind::Static { field_name, .. } => b.add_static_root(at(*i), 1, field_name),
                k => b.add_root(at(*i), k.clone()),
            }
        }
        b.finish().unwrap()
    }

    fn positions(c: &RootChain) -> Vec<u32> {
        c.path.iter().map(|n| n.0).collect()
    }

    #[test]
    fn every_root_with_its_shortest_chain_nearest_first() {
        // static → 0 → 1 → 3 (target), handle → 2 → 3, stack → 4 → 0 (longer way), 5 unrooted → 3.
        let g = graph(
            &[(0, 1), (1, 3), (2, 3), (4, 0), (5, 3)],
            6,
            &[
                (0, RootKind::Static { type_name: String::new(), field_name: "Cache".into() }),
                (2, RootKind::StrongHandle),
                (4, RootKind::Stack),
            ],
        );
        let chains = chains_from_roots(&g, NodeIndex(3), 10);
        let got: Vec<(String, Vec<u32>)> = chains.iter().map(|c| (c.root.to_string(), positions(c))).collect();
        assert_eq!(
            got,
            [
                ("[strong handle]".to_string(), vec![2, 3]),
                ("static T.Cache".to_string(), vec![0, 1, 3]),
                ("[local var]".to_string(), vec![4, 0, 1, 3]),
            ]
        );
        assert_eq!(chains_from_roots(&g, NodeIndex(3), 1).len(), 1, "capped");
        assert!(chains_from_roots(&g, NodeIndex(5), 10).is_empty(), "garbage has no root");
        assert!(chains_from_roots(&g, NodeIndex(99), 10).is_empty());
        assert_eq!(referrers(&g, NodeIndex(3)), [NodeIndex(1), NodeIndex(2), NodeIndex(5)]);
    }

    #[test]
    fn cycles_and_a_rooted_target_end() {
        // 0 ↔ 1 cycle, the target 1 is itself rooted; a self-loop on 2.
        let g = graph(&[(0, 1), (1, 0), (2, 2), (2, 1)], 3, &[(1, RootKind::Stack), (0, RootKind::PinnedHandle)]);
        let chains = chains_from_roots(&g, NodeIndex(1), 10);
        let got: Vec<Vec<u32>> = chains.iter().map(positions).collect();
        assert_eq!(got, [vec![1], vec![0, 1]]);
    }

    #[test]
    fn every_chain_follows_references_on_random_graphs() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..200 {
            let n = 1 + (next() % 40) as usize;
            let edges: Vec<(usize, usize)> =
                (0..next() % 80).map(|_| ((next() % n as u64) as usize, (next() % n as u64) as usize)).collect();
            let roots: Vec<(usize, RootKind)> =
                (0..next() % 5).map(|_| ((next() % n as u64) as usize, RootKind::Stack)).collect();
            let g = graph(&edges, n, &roots);
            let target = NodeIndex((next() % n as u64) as u32);
            for c in chains_from_roots(&g, target, 100) {
                assert_eq!(*c.path.last().unwrap(), target);
                assert!(g.roots().iter().any(|r| r.node == c.path[0]));
                for w in c.path.windows(2) {
                    assert!(g.children(w[0]).any(|x| x == w[1]), "{:?} does not reference {:?}", w[0], w[1]);
                }
            }
        }
    }
}
