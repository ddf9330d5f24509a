//! Retained sizes through the dominator tree.
//!
//! Object `d` dominates `v` when every path from the roots to `v` passes through `d`:
//! freeing `d` would free `v`. An object's retained size is its own size plus that of
//! everything it dominates. Roots are joined under a virtual super-root so that objects
//! reachable from several roots are dominated by it alone.
//!
//! Algorithm: Cooper, Harvey & Kennedy, "A Simple, Fast Dominance Algorithm" (2001):
//! iterate `idom(v) = intersect(idom(p) for reachable predecessors p)` in reverse
//! postorder until nothing changes. It needs only a few arrays of `u32` per object and
//! converges in two or three passes on heap-shaped graphs.

use std::collections::HashMap;

use serde::Serialize;

use super::graph::{NodeIndex, ObjectGraph};

const UNDEFINED: u32 = u32::MAX;

/// Retained bytes of one type, without double counting: an instance dominated by another
/// instance of the same type counts only within that one (like Eclipse MAT's retained
/// heap of a class).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TypeRetained {
    /// Cleaned type name.
    pub type_name: String,
    /// Reachable instances.
    pub count: u64,
    /// Their shallow bytes.
    pub shallow_bytes: u64,
    /// Bytes that would be freed if every instance became unreachable.
    pub retained_bytes: u64,
}

/// Immediate dominators and retained sizes of every object.
#[derive(Clone, Debug)]
pub struct RetainedSizes {
    /// Per node; `super_root` for nodes only the super-root dominates, `UNDEFINED` for
    /// unreachable nodes.
    idom: Vec<u32>,
    /// Per node, 0 for unreachable nodes.
    retained: Vec<u64>,
    super_root: u32,
}

impl RetainedSizes {
    /// Retained bytes of an object, `None` if no root reaches it.
    pub fn retained(&self, node: NodeIndex) -> Option<u64> {
        (self.idom[node.index()] != UNDEFINED).then(|| self.retained[node.index()])
    }

    /// The object that immediately dominates `node`; `None` if only the super-root does
    /// (it is a root, or reachable from several roots) or if it is unreachable.
    pub fn immediate_dominator(&self, node: NodeIndex) -> Option<NodeIndex> {
        let d = self.idom[node.index()];
        (d != UNDEFINED && d != self.super_root).then_some(NodeIndex(d))
    }

    /// Objects no root reaches (garbage the GC had not yet collected, or missing roots).
    pub fn unreachable(&self) -> usize {
        self.idom.iter().filter(|&&d| d == UNDEFINED).count()
    }

    /// The `n` objects with the largest retained size, largest first.
    pub fn top_objects(&self, n: usize) -> Vec<(NodeIndex, u64)> {
        let mut all: Vec<(NodeIndex, u64)> = (0..self.idom.len() as u32)
            .filter(|&i| self.idom[i as usize] != UNDEFINED)
            .map(|i| (NodeIndex(i), self.retained[i as usize]))
            .collect();
        all.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        all.truncate(n);
        all
    }

    /// Retained bytes per type name, largest first.
    pub fn by_type(&self, graph: &ObjectGraph) -> Vec<TypeRetained> {
        let n = self.idom.len();
        // Children lists of the dominator tree (CSR), super-root last.
        let mut offsets = vec![0u32; n + 2];
        for &d in &self.idom {
            if d != UNDEFINED {
                offsets[d as usize + 1] += 1;
            }
        }
        for i in 1..offsets.len() {
            offsets[i] += offsets[i - 1];
        }
        let mut fill = offsets.clone();
        let mut children = vec![0u32; offsets[n + 1] as usize];
        for (v, &d) in self.idom.iter().enumerate() {
            if d != UNDEFINED {
                children[fill[d as usize] as usize] = v as u32;
                fill[d as usize] += 1;
            }
        }

        // Several MethodTables can share a cleaned name: count per name.
        let mut name_ids: HashMap<&str, u32> = HashMap::new();
        let mut names: Vec<&str> = Vec::new();
        let group_of: Vec<u32> = graph
            .type_names()
            .iter()
            .map(|name| {
                *name_ids.entry(name).or_insert_with(|| {
                    names.push(name);
                    names.len() as u32 - 1
                })
            })
            .collect();
        let groups = names.len();
        let group = |v: u32| group_of[graph.type_index_of(v) as usize] as usize;

        // Depth-first over the dominator tree, counting per name how many instances are
        // on the current tree path: an instance with none above it is "top-level".
        let mut open_of_type = vec![0u32; groups];
        let mut count = vec![0u64; groups];
        let mut shallow = vec![0u64; groups];
        let mut retained = vec![0u64; groups];
        let mut stack: Vec<(u32, u32)> = vec![(self.super_root, offsets[n])];
        while let Some(&mut (v, ref mut next)) = stack.last_mut() {
            if *next < offsets[v as usize + 1] {
                let child = children[*next as usize];
                *next += 1;
                let t = group(child);
                count[t] += 1;
                shallow[t] += graph.size(NodeIndex(child));
                if open_of_type[t] == 0 {
                    retained[t] += self.retained[child as usize];
                }
                open_of_type[t] += 1;
                stack.push((child, offsets[child as usize]));
            } else {
                stack.pop();
                if v != self.super_root {
                    open_of_type[group(v)] -= 1;
                }
            }
        }

        let mut rows: Vec<TypeRetained> = names
            .iter()
            .enumerate()
            .filter(|&(t, _)| count[t] > 0)
            .map(|(t, name)| TypeRetained {
                type_name: name.to_string(),
                count: count[t],
                shallow_bytes: shallow[t],
                retained_bytes: retained[t],
            })
            .collect();
        rows.sort_by(|a, b| b.retained_bytes.cmp(&a.retained_bytes).then_with(|| a.type_name.cmp(&b.type_name)));
        rows
    }
}

impl ObjectGraph {
    /// Dominators and retained sizes of every object.
    pub fn retained_sizes(&self) -> RetainedSizes {
        let n = self.len();
        let super_root = n as u32;
        let mut is_root = vec![false; n];
        for root in self.roots() {
            is_root[root.node.index()] = true;
        }
        let root_nodes: Vec<u32> = (0..n as u32).filter(|&i| is_root[i as usize]).collect();
        let successors = |v: u32| -> &[u32] { if v == super_root { &root_nodes } else { self.child_slice(v) } };

        // Postorder from the super-root, iteratively (heaps hold million-long chains).
        let mut postorder_number = vec![UNDEFINED; n + 1];
        let mut postorder: Vec<u32> = Vec::with_capacity(n + 1);
        let mut visited = vec![false; n + 1];
        let mut stack: Vec<(u32, u32)> = vec![(super_root, 0)];
        visited[super_root as usize] = true;
        while let Some(&mut (v, ref mut next)) = stack.last_mut() {
            let succ = successors(v);
            if (*next as usize) < succ.len() {
                let w = succ[*next as usize];
                *next += 1;
                if !visited[w as usize] {
                    visited[w as usize] = true;
                    stack.push((w, 0));
                }
            } else {
                postorder_number[v as usize] = postorder.len() as u32;
                postorder.push(v);
                stack.pop();
            }
        }
        drop(visited);

        // Predecessors among reachable nodes (CSR).
        let mut pred_offsets = vec![0u32; n + 2];
        for &v in &postorder {
            if v != super_root {
                for &w in self.child_slice(v) {
                    pred_offsets[w as usize + 1] += 1;
                }
            }
        }
        for i in 1..pred_offsets.len() {
            pred_offsets[i] += pred_offsets[i - 1];
        }
        let mut fill = pred_offsets.clone();
        let mut preds = vec![0u32; pred_offsets[n + 1] as usize];
        for &v in &postorder {
            if v != super_root {
                for &w in self.child_slice(v) {
                    preds[fill[w as usize] as usize] = v;
                    fill[w as usize] += 1;
                }
            }
        }
        drop(fill);

        let mut idom = vec![UNDEFINED; n + 1];
        idom[super_root as usize] = super_root;
        let intersect = |idom: &[u32], mut a: u32, mut b: u32| {
            while a != b {
                while postorder_number[a as usize] < postorder_number[b as usize] {
                    a = idom[a as usize];
                }
                while postorder_number[b as usize] < postorder_number[a as usize] {
                    b = idom[b as usize];
                }
            }
            a
        };
        let mut changed = true;
        while changed {
            changed = false;
            // Reverse postorder, skipping the super-root (last in postorder).
            for &v in postorder.iter().rev().skip(1) {
                let mut new_idom = if is_root[v as usize] { super_root } else { UNDEFINED };
                let (start, end) = (pred_offsets[v as usize], pred_offsets[v as usize + 1]);
                for &p in &preds[start as usize..end as usize] {
                    if idom[p as usize] == UNDEFINED {
                        continue;
                    }
                    new_idom = if new_idom == UNDEFINED { p } else { intersect(&idom, p, new_idom) };
                }
                if idom[v as usize] != new_idom {
                    idom[v as usize] = new_idom;
                    changed = true;
                }
            }
        }

        // A dominator is a DFS ancestor, so postorder visits dominated objects first.
        let mut retained = vec![0u64; n + 1];
        for &v in &postorder {
            if v == super_root {
                continue;
            }
            retained[v as usize] += self.size(NodeIndex(v));
            let d = idom[v as usize];
            retained[d as usize] += retained[v as usize];
        }
        idom.truncate(n);
        retained.truncate(n);
        RetainedSizes { idom, retained, super_root }
    }
}
