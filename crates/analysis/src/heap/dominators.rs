//! Retained sizes through the dominator tree.
//!
//! Object `d` dominates `v` when every path from the roots to `v` passes through `d`:
//! freeing `d` would free `v`. An object's retained size is its own size plus that of
//! everything it dominates. Roots are joined under a virtual super-root so that objects
//! reachable from several roots are dominated by it alone.
//!
//! Algorithm: semi-NCA (Georgiadis, Tarjan & Werneck, "Finding Dominators in Practice",
//! 2006), the Lengauer–Tarjan semidominators with path compression followed by a
//! nearest-common-ancestor pass. Unlike the iterative "intersect until nothing changes"
//! algorithm it needs no repeated passes, which went quadratic on long doubly linked
//! chains (an LRU cache's `LinkedList` of 5,000 nodes took 47 s). Everything is iterative
//! (heaps hold million-long chains) and works on `u32` preorder numbers in flat arrays:
//! about 28 bytes per reachable object and 4 per reference at the peak, freed on return.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use serde::Serialize;

use super::graph::{NodeIndex, ObjectGraph};
use crate::phases::Phases;

const UNDEFINED: u32 = u32::MAX;
/// The anchor of objects that only the virtual super-root dominates: they are reachable
/// from several roots, so no single object holds them.
pub(crate) const SEVERAL_ROOTS: u32 = u32::MAX - 1;
/// The anchor of objects no root reaches.
pub(crate) const UNREACHABLE: u32 = u32::MAX;

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
    /// Per node: its anchor (see [`super::holders`]), [`SEVERAL_ROOTS`] or [`UNREACHABLE`].
    anchor: Vec<u32>,
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

    /// Per node: the nearest dominator of another type (see [`super::holders`]), a node,
    /// [`SEVERAL_ROOTS`] or [`UNREACHABLE`].
    pub(crate) fn anchors(&self) -> &[u32] {
        &self.anchor
    }

    /// The `n` objects with the largest retained size, largest first.
    pub fn top_objects(&self, n: usize) -> Vec<(NodeIndex, u64)> {
        // A bounded min-heap of the best so far: sorting every object would allocate 16
        // bytes per object for a handful of answers.
        let mut best: BinaryHeap<Reverse<(u64, Reverse<u32>)>> = BinaryHeap::with_capacity(n + 1);
        for (i, (&d, &r)) in self.idom.iter().zip(&self.retained).enumerate() {
            if d == UNDEFINED || n == 0 {
                continue;
            }
            let entry = Reverse((r, Reverse(i as u32)));
            if best.len() < n {
                best.push(entry);
            } else if best.peek().is_some_and(|worst| entry < *worst) {
                best.pop();
                best.push(entry);
            }
        }
        best.into_sorted_vec().into_iter().map(|Reverse((r, Reverse(i)))| (NodeIndex(i), r)).collect()
    }

    /// Retained bytes per type name, largest first.
    pub fn by_type(&self, graph: &ObjectGraph) -> Vec<TypeRetained> {
        let n = self.idom.len();
        // Children lists of the dominator tree, super-root last.
        let mut counts = vec![0u32; n + 1];
        for &d in &self.idom {
            if d != UNDEFINED {
                counts[d as usize] += 1;
            }
        }
        let children = Csr::from_counts(counts, |lists| {
            for (v, &d) in self.idom.iter().enumerate() {
                if d != UNDEFINED {
                    lists.push(d as usize, v as u32);
                }
            }
        });

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
        let mut stack: Vec<(u32, u32)> = vec![(self.super_root, 0)];
        while let Some(&mut (v, ref mut next)) = stack.last_mut() {
            if let Some(&child) = children.of(v as usize).get(*next as usize) {
                *next += 1;
                let t = group(child);
                count[t] += 1;
                shallow[t] += graph.size(NodeIndex(child));
                if open_of_type[t] == 0 {
                    retained[t] += self.retained[child as usize];
                }
                open_of_type[t] += 1;
                stack.push((child, 0));
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
        self.retained_sizes_observed(&mut ())
    }

    /// [`retained_sizes`](Self::retained_sizes), telling `phases` as each step begins.
    ///
    /// The depth-first search renumbers the graph in preorder once, and every later pass works
    /// on arrays in that order: the predecessor lists are built from the renumbered references
    /// (read in sequence, not through a lookup per reference), retained sizes add up in one
    /// reverse sweep, and the holders' anchors (see [`super::holders`]) come out of one forward
    /// sweep, since a dominator precedes what it dominates in preorder.
    pub fn retained_sizes_observed(&self, phases: &mut dyn Phases) -> RetainedSizes {
        let n = self.len();
        let super_root = n as u32;
        phases.begin("retention: depth-first numbering");
        let mut roots: Vec<u32> = self.roots().iter().map(|r| r.node.0).collect();
        roots.sort_unstable();
        roots.dedup();
        let Preorder { vertex, parent, successors, root_numbers, number } = Preorder::of(self, &roots);
        drop(roots);
        // Each array below takes over the memory of one the previous step no longer needs:
        // fresh memory costs a page fault and the zeroing of every page (a fifth of the CPU
        // time on big heaps), reused memory one sequential fill.
        phases.begin("retention: predecessors");
        let preds = predecessors(&successors, &root_numbers, number);
        drop(root_numbers);
        let Csr { offsets: spare_a, targets: spare_b } = successors;
        phases.begin("retention: dominators (semi-NCA)");
        let (idom_pre, semi, forest) = semi_nca(parent, &preds, spare_a, spare_b);
        let Csr { offsets: spare_c, targets: spare_d } = preds;

        phases.begin("retention: retained sizes and anchors");
        // The peak of the analysis is around here, so only what is kept is allocated, in node
        // order, with no arrays in preorder besides: a dominator precedes what it dominates
        // in preorder, so reverse preorder sees every object after everything it dominates,
        // and forward preorder every dominator before what it dominates.
        drop((semi, spare_c));
        let mut retained = vec![0u64; n];
        for &v in &vertex[1..] {
            retained[v as usize] = self.size(NodeIndex(v));
        }
        for i in (1..vertex.len()).rev() {
            let d = idom_pre[i] as usize;
            if d != 0 {
                let r = retained[vertex[i] as usize];
                retained[vertex[d] as usize] += r;
            }
        }
        // An object's anchor is its dominator's when both have the same type.
        let mut idom = refill(forest, n, UNDEFINED);
        let mut anchor = refill(spare_d, n, UNREACHABLE);
        for i in 1..vertex.len() {
            let v = vertex[i] as usize;
            let (d, a) = match idom_pre[i] {
                0 => (super_root, SEVERAL_ROOTS),
                d => {
                    let d = vertex[d as usize];
                    let a = if self.type_index_of(d) != self.type_index_of(v as u32) { d } else { anchor[d as usize] };
                    (d, a)
                }
            };
            idom[v] = d;
            anchor[v] = a;
        }
        RetainedSizes { idom, retained, anchor, super_root }
    }
}

/// A depth-first numbering from the virtual super-root (number 0) whose children are the
/// roots, in node order, and the graph renumbered that way.
struct Preorder {
    /// Per preorder number: the node (`vertex[0]` is a placeholder for the super-root).
    vertex: Vec<u32>,
    /// Per preorder number: the DFS-tree parent's number (0 for roots and the super-root).
    parent: Vec<u32>,
    /// Per preorder number: the references, as preorder numbers.
    successors: Csr,
    /// The roots' preorder numbers.
    root_numbers: Vec<u32>,
    /// Per node: its preorder number, `UNDEFINED` if unreachable.
    number: Vec<u32>,
}

impl Preorder {
    fn of(graph: &ObjectGraph, roots: &[u32]) -> Preorder {
        let n = graph.len();
        let mut dfs = Dfs {
            graph,
            number: vec![UNDEFINED; n],
            vertex: Vec::with_capacity(n + 1),
            parent: Vec::with_capacity(n + 1),
            // The super-root (number 0) has no references of its own.
            offsets: Vec::with_capacity(n + 2),
            written: 0,
        };
        dfs.vertex.push(UNDEFINED);
        dfs.parent.push(0);
        dfs.offsets.push(0);
        // Each object's references are written as the search reads them, into the run its
        // number gets.
        let mut targets = vec![0u32; graph.edge_count()];
        // (node, its number, next child to look at): the explicit stack replaces recursion.
        let mut stack: Vec<(u32, u32, u32)> = Vec::new();
        for &root in roots {
            if dfs.number[root as usize] != UNDEFINED {
                continue;
            }
            let i = dfs.visit(root, 0);
            stack.push((root, i, 0));
            while let Some(&mut (v, i, ref mut next)) = stack.last_mut() {
                let children = graph.child_slice(v);
                if let Some(&w) = children.get(*next as usize) {
                    let slot = dfs.offsets[i as usize] + *next;
                    *next += 1;
                    let mut k = dfs.number[w as usize];
                    if k == UNDEFINED {
                        k = dfs.visit(w, i);
                        stack.push((w, k, 0));
                    }
                    targets[slot as usize] = k;
                } else {
                    stack.pop();
                }
            }
        }
        let Dfs { number, vertex, parent, mut offsets, written, .. } = dfs;
        offsets.push(written);
        targets.truncate(written as usize);
        let root_numbers = roots.iter().map(|&r| number[r as usize]).collect();
        Preorder { vertex, parent, successors: Csr { offsets, targets }, root_numbers, number }
    }
}

/// The state of [`Preorder::of`]'s search.
struct Dfs<'g> {
    graph: &'g ObjectGraph,
    /// Per node: its preorder number, `UNDEFINED` until reached.
    number: Vec<u32>,
    vertex: Vec<u32>,
    parent: Vec<u32>,
    /// Per number: where its references start in the renumbered graph.
    offsets: Vec<u32>,
    /// References of the numbered objects so far.
    written: u32,
}

impl Dfs<'_> {
    /// Numbers `w`, reached from number `from`; returns its number.
    fn visit(&mut self, w: u32, from: u32) -> u32 {
        let i = self.vertex.len() as u32;
        self.number[w as usize] = i;
        self.vertex.push(w);
        self.parent.push(from);
        self.offsets.push(self.written);
        self.written += self.graph.child_slice(w).len() as u32;
        i
    }
}

/// Predecessor lists in preorder numbers, the super-root (0) being every root's: also of
/// roots the search reached from another root first. `spare` is memory to reuse.
fn predecessors(successors: &Csr, root_numbers: &[u32], spare: Vec<u32>) -> Csr {
    let count = successors.offsets.len() - 1;
    let mut counts = refill(spare, count, 0);
    for &r in root_numbers {
        counts[r as usize] += 1;
    }
    for &w in &successors.targets {
        counts[w as usize] += 1;
    }
    Csr::from_counts(counts, |lists| {
        for &r in root_numbers {
            lists.push(r as usize, 0);
        }
        for i in 1..count {
            for &w in successors.of(i) {
                lists.push(w as usize, i as u32);
            }
        }
    })
}

/// Lists of `u32` per index: `targets[offsets[i]..offsets[i + 1]]`.
struct Csr {
    offsets: Vec<u32>,
    targets: Vec<u32>,
}

impl Csr {
    /// Lists of the lengths `counts`, filled by `fill`, which must push exactly that many
    /// `(index, value)` pairs. The offsets are filled from the back, so no second cursor
    /// array is needed.
    fn from_counts(counts: Vec<u32>, fill: impl FnOnce(&mut CsrFiller<'_>)) -> Csr {
        let mut offsets = counts;
        let mut end = 0u32;
        for o in &mut offsets {
            end += *o;
            *o = end;
        }
        offsets.push(end);
        let mut targets = vec![0u32; end as usize];
        fill(&mut CsrFiller { offsets: &mut offsets, targets: &mut targets });
        Csr { offsets, targets }
    }

    fn of(&self, i: usize) -> &[u32] {
        &self.targets[self.offsets[i] as usize..self.offsets[i + 1] as usize]
    }
}

/// Puts values into a [`Csr`] under construction.
struct CsrFiller<'a> {
    /// `offsets[i]` is the end of list i until its values arrive, then its start.
    offsets: &'a mut [u32],
    targets: &'a mut [u32],
}

impl CsrFiller<'_> {
    fn push(&mut self, i: usize, value: u32) {
        self.offsets[i] -= 1;
        self.targets[self.offsets[i] as usize] = value;
    }
}

/// Immediate dominators by preorder number (0 = the super-root), given the DFS-tree
/// `parent` and the predecessor lists of a graph numbered in preorder. `spare_semi` and
/// `spare_forest` are memory to reuse; they come back, with other contents, for the caller
/// to reuse in turn.
fn semi_nca(
    parent: Vec<u32>,
    preds: &Csr,
    spare_semi: Vec<u32>,
    spare_forest: Vec<u32>,
) -> (Vec<u32>, Vec<u32>, Vec<u32>) {
    let count = parent.len();
    // semi[w]: w's semidominator. Per vertex, side by side (one cache line for both):
    // [ancestor in the forest, the smallest semi on its compressed forest path].
    let mut semi = refill(spare_semi, count, 0);
    let mut forest = refill(spare_forest, 2 * count, UNDEFINED);
    for v in 0..count {
        forest[2 * v + LABEL] = v as u32;
    }
    let mut path: Vec<usize> = Vec::new();
    for w in (1..count).rev() {
        let mut s = w as u32;
        for &v in preds.of(w) {
            // A predecessor numbered before w is not in the forest yet (vertices join it in
            // decreasing order): its label is itself, no need to look.
            if (v as usize) < w {
                s = s.min(v);
                continue;
            }
            let v = v as usize;
            if forest[2 * v + ANCESTOR] != UNDEFINED {
                compress(v, &mut forest, &mut path);
            }
            s = s.min(forest[2 * v + LABEL]);
        }
        semi[w] = s;
        forest[2 * w + ANCESTOR] = parent[w];
        forest[2 * w + LABEL] = s;
    }

    // The immediate dominator is the nearest ancestor of the parent at or above the
    // semidominator; dominators of smaller numbers are final by the time they are read.
    let mut idom = parent;
    for w in 1..count {
        let mut d = idom[w];
        while d > semi[w] {
            d = idom[d as usize];
        }
        idom[w] = d;
    }
    (idom, semi, forest)
}

/// `buffer`'s memory holding `len` copies of `value` (and no more than a quarter spare).
fn refill<T: Copy>(mut buffer: Vec<T>, len: usize, value: T) -> Vec<T> {
    buffer.clear();
    if buffer.capacity() > len + len / 4 {
        buffer.shrink_to(len);
    }
    buffer.resize(len, value);
    buffer
}

const ANCESTOR: usize = 0;
const LABEL: usize = 1;

/// Path compression of `v`'s forest path, iteratively: every vertex on it gets the smallest
/// label above it and points straight at the tree's root. `forest` holds per vertex x
/// its ancestor at `2x + ANCESTOR` and its label at `2x + LABEL`.
fn compress(v: usize, forest: &mut [u32], path: &mut Vec<usize>) {
    let ancestor = |forest: &[u32], x: usize| forest[2 * x + ANCESTOR] as usize;
    path.clear();
    let mut x = v;
    while forest[2 * ancestor(forest, x) + ANCESTOR] != UNDEFINED {
        path.push(x);
        x = ancestor(forest, x);
    }
    // Top-down, as the recursive version would unwind.
    for &x in path.iter().rev() {
        let a = ancestor(forest, x);
        let (above_label, above_ancestor) = (forest[2 * a + LABEL], forest[2 * a + ANCESTOR]);
        if above_label < forest[2 * x + LABEL] {
            forest[2 * x + LABEL] = above_label;
        }
        forest[2 * x + ANCESTOR] = above_ancestor;
    }
}
