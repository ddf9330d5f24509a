//! Retained sizes through the dominator tree.
//!
//! Object `d` dominates `v` when every path from the roots to `v` passes through `d`:
//! freeing `d` would free `v`. An object's retained size is its own size plus that of
//! everything it dominates. Roots are joined under a virtual super-root so that objects
//! reachable from several roots are dominated by it alone.
//!
//! Algorithm: semi-NCA (Georgiadis, Tarjan & Werneck, "Finding Dominators in Practice",
//! 2006), the Lengauer–Tarjan semidominators with path halving followed by a
//! nearest-common-ancestor pass. Unlike the iterative "intersect until nothing changes"
//! algorithm it needs no repeated passes, which went quadratic on long doubly linked
//! chains (an LRU cache's `LinkedList` of 5,000 nodes took 47 s). Everything is iterative
//! (heaps hold million-long chains) and works on `u32` preorder numbers in flat arrays.
//! Objects with no references that one reference reaches (often half a heap: strings, byte
//! arrays, the items of pairs and nodes) are left out of the search, since their referrer
//! dominates them. With `n` objects, `c` searched and `e` references between those, the
//! peak is the larger of 4n + 12c + 12e bytes (predecessor lists) and 16n + 8c (the result:
//! dominators, anchors and retained sizes per object, 16n, is what is kept).

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
    /// on arrays in that order: the predecessor lists are built from the references the search
    /// met (numbered as it met them, not through a lookup per reference), retained sizes add
    /// up in one reverse sweep, and the holders' anchors (see [`super::holders`]) come out of
    /// one forward sweep, since a dominator precedes what it dominates in preorder.
    ///
    /// Objects with no references that exactly one reference reaches (a string, a byte array
    /// or a small object of its owner's, often half of a heap) are left out of all of that:
    /// their owner dominates them, so the search notes the owner and goes on.
    pub fn retained_sizes_observed(&self, phases: &mut dyn Phases) -> RetainedSizes {
        let n = self.len();
        let super_root = n as u32;
        phases.begin("retention: depth-first numbering");
        let mut roots: Vec<u32> = self.roots().iter().map(|r| r.node.0).collect();
        roots.sort_unstable();
        roots.dedup();
        let Preorder { vertex, parent, edges, mut number, elided } = Preorder::of(self, &roots);
        let elided_owner = |entry: u32| if elided { elided_owner(entry) } else { None };
        drop(roots);
        // The arrays after the predecessor lists take over the memory of ones the step before
        // no longer needs: fresh memory costs a page fault and the zeroing of every page (a
        // fifth of the CPU time on big heaps), reused memory one sequential fill.
        phases.begin("retention: predecessors");
        let preds = predecessors(&edges, vertex.len());
        let NumberedEdges { to: spare_a, from: spare_b } = edges;
        phases.begin("retention: dominators (semi-NCA)");
        let (idom_pre, semi, forest) = semi_nca(parent, &preds, spare_a, spare_b);

        phases.begin("retention: retained sizes and anchors");
        // The peak of the analysis is around here, so only what is kept is allocated, in node
        // order, with no arrays in preorder besides: a dominator precedes what it dominates
        // in preorder, so reverse preorder sees every object after everything it dominates,
        // and forward preorder every dominator before what it dominates.
        drop((semi, preds));
        let mut retained = vec![0u64; n];
        // Every object its own size, a left-out leaf's added to its owner's at once. A leaf the
        // search never reached (its one referrer is unreachable) is unreachable.
        for (w, k) in number.iter_mut().enumerate() {
            if *k == SINGLE_REFERRER_LEAF {
                *k = UNDEFINED;
            }
            let k = *k;
            if k == UNDEFINED {
                continue;
            }
            let size = self.size(NodeIndex(w as u32));
            retained[w] += size;
            if let Some(owner) = elided_owner(k) {
                retained[vertex[owner as usize] as usize] += size;
            }
        }
        for i in (1..vertex.len()).rev() {
            let d = idom_pre[i] as usize;
            if d != 0 {
                let r = retained[vertex[i] as usize];
                retained[vertex[d] as usize] += r;
            }
        }
        // An object's anchor is its dominator's when both have the same type. The dominators
        // take over `number`: a numbered object's entry is rewritten as the sweep reaches it,
        // a left-out leaf's (which names its owner's number) after the sweep.
        let mut anchor = refill(forest, n, UNREACHABLE);
        let anchor_under = |anchor: &[u32], v: u32, d: u32| {
            if self.type_index_of(d) != self.type_index_of(v) { d } else { anchor[d as usize] }
        };
        for i in 1..vertex.len() {
            let v = vertex[i];
            let (d, a) = match idom_pre[i] {
                0 => (super_root, SEVERAL_ROOTS),
                d => {
                    let d = vertex[d as usize];
                    (d, anchor_under(&anchor, v, d))
                }
            };
            number[v as usize] = d;
            anchor[v as usize] = a;
        }
        for w in 0..n {
            if let Some(owner) = elided_owner(number[w]) {
                let d = vertex[owner as usize];
                number[w] = d;
                anchor[w] = anchor_under(&anchor, w as u32, d);
            }
        }
        RetainedSizes { idom: number, retained, anchor, super_root }
    }
}

/// Marks a left-out leaf's entry in [`Preorder::number`]: the rest is its owner's number.
const ELIDED: u32 = 1 << 31;

/// The owner's preorder number, if `entry` (of [`Preorder::number`]) is a left-out leaf's.
fn elided_owner(entry: u32) -> Option<u32> {
    (entry & ELIDED != 0 && entry < SINGLE_REFERRER_LEAF).then_some(entry & !ELIDED)
}

/// A depth-first numbering from the virtual super-root (number 0) whose children are the
/// roots, in node order, and the references it met, renumbered that way.
struct Preorder {
    /// Per preorder number: the node (`vertex[0]` is a placeholder for the super-root).
    vertex: Vec<u32>,
    /// Per preorder number: the DFS-tree parent's number (0 for roots and the super-root).
    parent: Vec<u32>,
    /// The references between numbered objects and from the super-root to the roots.
    edges: NumberedEdges,
    /// Per node: its preorder number, `ELIDED | owner's number` for a left-out leaf,
    /// `UNDEFINED` or [`SINGLE_REFERRER_LEAF`] if unreachable.
    number: Vec<u32>,
    /// Whether leaves were left out; if not, `number` holds no marks (and numbers may use
    /// all 32 bits).
    elided: bool,
}

/// References as preorder numbers, in the order the search met them.
struct NumberedEdges {
    to: Vec<u32>,
    from: Vec<u32>,
}

impl Preorder {
    fn of(graph: &ObjectGraph, roots: &[u32]) -> Preorder {
        let n = graph.len();
        let (mut number, elided) = initial_numbers(graph, roots);
        let targets = graph.all_edge_targets();
        let mut vertex = Vec::with_capacity(n + 1);
        let mut parent = Vec::with_capacity(n + 1);
        // The super-root (number 0).
        vertex.push(UNDEFINED);
        parent.push(0);
        let mut edges = NumberedEdges {
            to: Vec::with_capacity(graph.edge_count() + roots.len()),
            from: Vec::with_capacity(graph.edge_count() + roots.len()),
        };
        // (next reference to look at, end of the references, the object's number): the explicit
        // stack replaces recursion.
        let mut stack: Vec<(u32, u32, u32)> = Vec::new();
        let mut visit = |w: u32, from: u32, number: &mut [u32], stack: &mut Vec<(u32, u32, u32)>| {
            let i = vertex.len() as u32;
            number[w as usize] = i;
            vertex.push(w);
            parent.push(from);
            let span = graph.edge_span(w);
            stack.push((span.start as u32, span.end as u32, i));
            i
        };
        for &root in roots {
            let mut i = number[root as usize];
            if i == UNDEFINED {
                i = visit(root, 0, &mut number, &mut stack);
            }
            edges.to.push(i);
            edges.from.push(0);
            while let Some(&mut (ref mut next, end, i)) = stack.last_mut() {
                if *next == end {
                    stack.pop();
                    continue;
                }
                let w = targets[*next as usize];
                *next += 1;
                let k = match number[w as usize] {
                    SINGLE_REFERRER_LEAF => {
                        number[w as usize] = ELIDED | i;
                        continue;
                    }
                    UNDEFINED => visit(w, i, &mut number, &mut stack),
                    k => k,
                };
                edges.to.push(k);
                edges.from.push(i);
            }
        }
        Preorder { vertex, parent, edges, number, elided }
    }
}

/// In [`Preorder::number`] before the search: an object with no references that exactly one
/// reference reaches (roots count as references). Its only referrer dominates it.
const SINGLE_REFERRER_LEAF: u32 = u32::MAX - 1;

/// Below one object in this many being a leaf, none is left out of the search.
const FEW_LEAVES: usize = 16;

/// [`Preorder::number`] before the search: `UNDEFINED`, or [`SINGLE_REFERRER_LEAF`]; and
/// whether any object may be left out.
fn initial_numbers(graph: &ObjectGraph, roots: &[u32]) -> (Vec<u32>, bool) {
    let n = graph.len();
    // Preorder numbers and the mark must fit 31 bits beside the sentinels; a heap of 2^31
    // objects keeps every object in the search.
    if n as u64 >= u64::from(ELIDED) - 4 {
        return (vec![UNDEFINED; n], false);
    }
    // Counting referrers costs a random access per reference: not worth it where there are
    // few leaves to leave out (a graph of nodes referencing each other).
    let leaves = (0..n as u32).filter(|&w| graph.edge_span(w).is_empty()).count();
    if leaves < n / FEW_LEAVES {
        return (vec![UNDEFINED; n], false);
    }
    let mut referrers = vec![0u8; n];
    for &w in graph.all_edge_targets() {
        referrers[w as usize] = referrers[w as usize].saturating_add(1);
    }
    for &r in roots {
        referrers[r as usize] = 2;
    }
    let number = (0..n)
        .map(|w| {
            let single_leaf = referrers[w] == 1 && graph.edge_span(w as u32).is_empty();
            if single_leaf { SINGLE_REFERRER_LEAF } else { UNDEFINED }
        })
        .collect();
    (number, true)
}

/// Predecessor lists by preorder number (`count` numbers), the super-root (0) being every
/// root's.
fn predecessors(edges: &NumberedEdges, count: usize) -> Csr {
    let mut counts = vec![0u32; count];
    for &w in &edges.to {
        counts[w as usize] += 1;
    }
    Csr::from_counts(counts, |lists| {
        for (&w, &v) in edges.to.iter().zip(&edges.from) {
            lists.push(w as usize, v);
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
    for w in (1..count).rev() {
        let mut s = w as u32;
        for &v in preds.of(w) {
            // A predecessor numbered before w is not in the forest yet (vertices join it in
            // decreasing order): its label is itself, no need to look.
            if (v as usize) < w {
                s = s.min(v);
                continue;
            }
            s = s.min(eval(v as usize, &mut forest));
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

/// The smallest label on `v`'s forest path, below the root of its tree (a vertex not in the
/// forest yet), with path halving: each vertex passed points on to its grandparent and takes
/// the smaller of the two labels, so that a vertex's label stays the smallest on the path from
/// it to its ancestor (excluded). One pass and no stack: full compression, which walks the
/// path twice, took as long as the rest of the search on heaps whose references go anywhere.
/// `forest` holds per vertex x its ancestor at `2x + ANCESTOR` and its label at `2x + LABEL`.
fn eval(v: usize, forest: &mut [u32]) -> u32 {
    if forest[2 * v + ANCESTOR] == UNDEFINED {
        return forest[2 * v + LABEL];
    }
    // `x` is in the forest, and the labels of the path below it are in `smallest`.
    let mut x = v;
    let mut smallest = u32::MAX;
    loop {
        let a = forest[2 * x + ANCESTOR] as usize;
        let above = forest[2 * a + ANCESTOR];
        if above == UNDEFINED {
            // `a` is the root.
            return smallest.min(forest[2 * x + LABEL]);
        }
        let label = forest[2 * a + LABEL];
        if label < forest[2 * x + LABEL] {
            forest[2 * x + LABEL] = label;
        }
        forest[2 * x + ANCESTOR] = above;
        smallest = smallest.min(forest[2 * x + LABEL]);
        x = above as usize;
        if forest[2 * x + ANCESTOR] == UNDEFINED {
            // Past `a`, straight to the root.
            return smallest;
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::heap::{ObjectGraphBuilder, RootKind};

    /// A heap of `n` objects of types T0–T2 where most objects are leaves, referenced once,
    /// twice or by a root: the objects the search leaves out, and the ones it must not.
    fn heap() -> impl Strategy<Value = (Vec<u64>, Vec<Vec<usize>>, Vec<usize>)> {
        (1..30usize).prop_flat_map(|n| {
            (
                prop::collection::vec(0..3u64, n),
                // Half the objects reference nothing.
                prop::collection::vec(prop_oneof![Just(Vec::new()), prop::collection::vec(0..n, 1..4)], n),
                prop::collection::vec(0..n, 0..4),
            )
        })
    }

    fn build(types: &[u64], edges: &[Vec<usize>], roots: &[usize]) -> ObjectGraph {
        let mut b = ObjectGraphBuilder::new();
        for t in 0..3 {
            b.add_type(t, &format!("T{t}"));
        }
        for (i, e) in edges.iter().enumerate() {
            b.add_node(0x1000 + 16 * i as u64, 16 + 8 * i as u64, types[i], e.len() as u64);
            b.add_edges(e.iter().map(|&t| 0x1000 + 16 * t as u64));
        }
        for &r in roots {
            b.add_root(0x1000 + 16 * r as u64, RootKind::StrongHandle);
        }
        b.finish().unwrap()
    }

    /// 130,001 objects: a rooted array of pairs, each pair holding an item (every tenth pair
    /// also the next pair's item, which the search then keeps), and unreachable pairs with
    /// items. Retained sizes, dominators and anchors as the shape says.
    #[test]
    fn large_heaps_are_summed_as_their_shape_says() {
        let (pairs, lost) = (60_000u64, 5_000u64);
        let array = 0x1000u64;
        let pair = |i: u64| 0x100_0000 + 64 * i;
        let item = |i: u64| pair(i) + 32;
        let mut b = ObjectGraphBuilder::new();
        for (t, name) in ["Array", "Pair", "Item"].iter().enumerate() {
            b.add_type(t as u64, name);
        }
        b.add_node(array, 16 + 8 * pairs, 0, pairs);
        b.add_edges((0..pairs).map(pair));
        for i in 0..pairs + lost {
            let shared = i % 10 == 0 && i + 1 < pairs;
            b.add_node(pair(i), 24, 1, 1 + u64::from(shared));
            b.add_edge(item(i));
            if shared {
                b.add_edge(item(i + 1));
            }
            b.add_node(item(i), 32, 2, 0);
        }
        b.add_root(array, RootKind::StrongHandle);
        let g = b.finish().unwrap();
        assert_eq!(g.len() as u64, 1 + 2 * (pairs + lost));
        let r = g.retained_sizes();
        let node = |address: u64| g.find(address).unwrap();
        let shared_item = |i: u64| i % 10 == 1;
        assert_eq!(r.retained(node(array)), Some(16 + 8 * pairs + pairs * (24 + 32)));
        for i in 0..pairs {
            let own_item = if shared_item(i) { 0 } else { 32 };
            assert_eq!(r.retained(node(pair(i))), Some(24 + own_item), "pair {i}");
            assert_eq!(r.immediate_dominator(node(pair(i))), Some(node(array)), "pair {i}");
            assert_eq!(r.anchors()[node(pair(i)).index()], node(array).0, "pair {i}");
            let holder = if shared_item(i) { node(array) } else { node(pair(i)) };
            assert_eq!(r.retained(node(item(i))), Some(32), "item {i}");
            assert_eq!(r.immediate_dominator(node(item(i))), Some(holder), "item {i}");
            assert_eq!(r.anchors()[node(item(i)).index()], holder.0, "item {i}");
        }
        for i in pairs..pairs + lost {
            for lost in [pair(i), item(i)] {
                assert_eq!((r.retained(node(lost)), r.anchors()[node(lost).index()]), (None, UNREACHABLE));
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// The anchors and the per-type retained bytes, which the search's left-out leaves
        /// reach only through their owners, against their definitions on the dominator tree
        /// (itself checked against the brute-force definition in `tests/heap_props.rs`).
        #[test]
        fn anchors_and_type_retention_match_their_definitions((types, edges, roots) in heap()) {
            let g = build(&types, &edges, &roots);
            let r = g.retained_sizes();
            let n = g.len();
            let dominators = |v: u32| {
                std::iter::successors(r.immediate_dominator(NodeIndex(v)), |d| r.immediate_dominator(*d))
            };
            for v in 0..n as u32 {
                let expected = if r.retained(NodeIndex(v)).is_none() {
                    UNREACHABLE
                } else {
                    dominators(v)
                        .find(|d| g.type_index_of(d.0) != g.type_index_of(v))
                        .map_or(SEVERAL_ROOTS, |d| d.0)
                };
                prop_assert_eq!(r.anchors()[v as usize], expected, "anchor of {}", v);
            }
            for row in r.by_type(&g) {
                let of_type = |v: u32| g.type_name(NodeIndex(v)) == row.type_name;
                let live: Vec<u32> = (0..n as u32).filter(|&v| r.retained(NodeIndex(v)).is_some()).collect();
                let retained: u64 = live
                    .iter()
                    .filter(|&&v| of_type(v) || dominators(v).any(|d| of_type(d.0)))
                    .map(|&v| g.size(NodeIndex(v)))
                    .sum();
                let count = live.iter().filter(|&&v| of_type(v)).count() as u64;
                prop_assert_eq!((row.count, row.retained_bytes), (count, retained), "{}", row.type_name);
            }
        }
    }
}
