//! Holders: where instances accumulate, read off the dominator tree.
//!
//! An instance's *anchor* is its nearest dominator of another type: the `Customer[]` behind a
//! `List<Customer>`, the invocation list (`Object[]`) of a multicast delegate, the `TimerQueue`
//! at the head of its timers. Runs of the same type are skipped, so the nodes of a linked list
//! or of a chain of timers all share the anchor of the chain's first node, however long the
//! chain. Grouping instances by (anchor, type) puts one type under two holders into two
//! groups, each with what that holder keeps, which grouping by type alone cannot do.
//!
//! Cost: the anchors come with the retained sizes (one sweep in preorder, see
//! [`super::dominators`]); here a `u16` per object for the fan-out counts and two passes over
//! the objects, the second on all cores; what survives the call is the member lists of the
//! groups kept (at most one `u32` per object, and only for objects in groups of at least
//! `min_instances`).

use std::collections::HashMap;

use super::dominators::RetainedSizes;
use super::graph::{NodeIndex, ObjectGraph};

pub(crate) use super::dominators::SEVERAL_ROOTS;
use super::dominators::UNREACHABLE;

/// Instances of one type kept by one anchor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct HolderGroup {
    /// The accumulation point, `None` when several roots hold the instances.
    pub anchor: Option<NodeIndex>,
    /// Type index (see [`ObjectGraph::type_index_of`]) of the instances.
    pub type_index: u32,
    /// Instances under this anchor.
    pub instances: u64,
    /// Their shallow bytes.
    pub shallow_bytes: u64,
    /// Bytes freed if they all went away (a chain's nodes count once, through its head).
    pub retained_bytes: u64,
    /// The instances, lowest address first (what they lead to, such as a delegate's target,
    /// is read from them).
    pub members: Vec<NodeIndex>,
}

/// Every (anchor, type) group with at least `min_instances` instances, most instances first.
/// The anchors come from the retention pass ([`RetainedSizes::anchor`]).
pub(crate) fn holder_groups(graph: &ObjectGraph, retained: &RetainedSizes, min_instances: u64) -> Vec<HolderGroup> {
    let anchor = retained.anchors();
    // Which anchors hold enough objects (of any type) to hold a big group at all; a u16 that
    // saturates is enough to compare with thresholds in the thousands, at 2 bytes an object.
    let mut fan_out = vec![0u16; graph.len()];
    let mut several_roots = vec![0u64; graph.type_names().len()];
    for (v, &a) in anchor.iter().enumerate() {
        match a {
            UNREACHABLE => {}
            SEVERAL_ROOTS => several_roots[graph.type_index_of(v as u32) as usize] += 1,
            a => fan_out[a as usize] = fan_out[a as usize].saturating_add(1),
        }
    }
    let min_fan_out = u16::try_from(min_instances).unwrap_or(u16::MAX);
    let candidate = |v: u32, a: u32| match a {
        UNREACHABLE => false,
        SEVERAL_ROOTS => several_roots[graph.type_index_of(v) as usize] >= min_instances,
        a => fan_out[a as usize] >= min_fan_out,
    };
    // Runs of objects grouped on all cores, then the groups of the same key joined in run
    // order (so that members stay in address order).
    let n = anchor.len();
    let per_run = n.div_ceil(super::threads_for(n)).max(1);
    let runs: Vec<Vec<HolderGroup>> = std::thread::scope(|scope| {
        let runs: Vec<_> = (0..n)
            .step_by(per_run)
            .map(|from| {
                let candidate = &candidate;
                scope.spawn(move || group_run(graph, retained, from..(from + per_run).min(n), candidate))
            })
            .collect();
        runs.into_iter().map(super::joined).collect()
    });
    drop(fan_out);
    let mut groups: Vec<HolderGroup> = Vec::new();
    let mut group_of: HashMap<(Option<NodeIndex>, u32), usize> = HashMap::new();
    for group in runs.into_iter().flatten() {
        match group_of.entry((group.anchor, group.type_index)) {
            std::collections::hash_map::Entry::Occupied(at) => {
                let joined = &mut groups[*at.get()];
                joined.instances += group.instances;
                joined.shallow_bytes += group.shallow_bytes;
                joined.retained_bytes += group.retained_bytes;
                joined.members.extend_from_slice(&group.members);
            }
            std::collections::hash_map::Entry::Vacant(at) => {
                at.insert(groups.len());
                groups.push(group);
            }
        }
    }
    let mut out: Vec<HolderGroup> = groups.into_iter().filter(|g| g.instances >= min_instances).collect();
    out.sort_by(|a, b| {
        b.instances
            .cmp(&a.instances)
            .then(b.retained_bytes.cmp(&a.retained_bytes))
            .then(a.members[0].cmp(&b.members[0]))
    });
    out
}

/// The (anchor, type) groups of the objects `run` whose anchor `candidate` accepts, members in
/// address order.
fn group_run(
    graph: &ObjectGraph,
    retained: &RetainedSizes,
    run: std::ops::Range<usize>,
    candidate: &(impl Fn(u32, u32) -> bool + Sync),
) -> Vec<HolderGroup> {
    let anchor = retained.anchors();
    let mut groups: Vec<HolderGroup> = Vec::new();
    let mut group_of: HashMap<(u32, u32), usize> = HashMap::new();
    // Members of a group mostly come one after the other (the elements of an array, the
    // nodes of a list): the last group found is tried before the map.
    let mut last: Option<((u32, u32), usize)> = None;
    for v in run {
        let (v, a) = (v as u32, anchor[v]);
        if !candidate(v, a) {
            continue;
        }
        let t = graph.type_index_of(v);
        let key = (a, t);
        let g = match last {
            Some((k, g)) if k == key => g,
            _ => {
                let g = *group_of.entry(key).or_insert_with(|| {
                    groups.push(HolderGroup {
                        anchor: (a != SEVERAL_ROOTS).then_some(NodeIndex(a)),
                        type_index: t,
                        instances: 0,
                        shallow_bytes: 0,
                        retained_bytes: 0,
                        members: Vec::new(),
                    });
                    groups.len() - 1
                });
                last = Some((key, g));
                g
            }
        };
        let node = NodeIndex(v);
        let group = &mut groups[g];
        group.instances += 1;
        group.shallow_bytes += graph.size(node);
        // Only a chain's head counts its retained size: it already includes the rest. The head
        // is the member its anchor dominates directly, or only the super-root.
        let chain_head = retained.immediate_dominator(node).is_none_or(|d| d.0 == a);
        if chain_head {
            group.retained_bytes += retained.retained(node).unwrap_or(0);
        }
        group.members.push(node);
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::heap::{ObjectGraphBuilder, RootKind};

    /// `static Holder.A → List → Item[] → n × Item`, `static Holder.B → Bag → Item[] → m × Item`,
    /// and a doubly linked chain of `k` `Node`s under `static Holder.C → LinkedList`.
    fn two_holders_and_a_chain(n: u64, m: u64, k: u64) -> ObjectGraph {
        let mut b = ObjectGraphBuilder::new();
        for (id, name) in [
            (1, "App.List"),
            (2, "App.Item[]"),
            (3, "App.Item"),
            (4, "App.Bag"),
            (5, "App.LinkedList"),
            (6, "App.Node"),
        ] {
            b.add_type(id, name);
        }
        let holder = |b: &mut ObjectGraphBuilder, base: u64, owner_type: u64, count: u64| {
            b.add_node(base, 32, owner_type, 1);
            b.add_edge(base + 0x100);
            b.add_node(base + 0x100, 16 + 8 * count, 2, count);
            for i in 0..count {
                b.add_edge(base + 0x10_000 + i * 32);
            }
            for i in 0..count {
                b.add_node(base + 0x10_000 + i * 32, 32, 3, 0);
            }
        };
        holder(&mut b, 0x100_0000, 1, n);
        holder(&mut b, 0x200_0000, 4, m);
        b.add_node(0x300_0000, 32, 5, 1);
        b.add_edge(0x300_1000);
        for i in 0..k {
            let at = 0x300_1000 + i * 48;
            let next = (i + 1 < k).then_some(at + 48);
            let prev = (i > 0).then(|| at - 48);
            let edges: Vec<u64> = next.into_iter().chain(prev).collect();
            b.add_node(at, 48, 6, edges.len() as u64);
            for e in edges {
                b.add_edge(e);
            }
        }
        for (at, field) in [(0x100_0000, "A"), (0x200_0000, "B"), (0x300_0000, "C")] {
            b.add_static_root(at, 99, field);
        }
        b.add_type(99, "App.Holder");
        b.finish().unwrap()
    }

    #[test]
    fn one_type_under_two_holders_is_two_groups_and_a_chain_is_one() {
        let g = two_holders_and_a_chain(3000, 1500, 2000);
        let r = g.retained_sizes();
        let groups = holder_groups(&g, &r, 1000);
        let summary: Vec<(&str, &str, u64, u64)> = groups
            .iter()
            .map(|h| {
                let anchor = h.anchor.map_or("-", |a| g.type_name(a));
                (anchor, g.type_names()[h.type_index as usize].as_str(), h.instances, h.retained_bytes)
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                ("App.Item[]", "App.Item", 3000, 3000 * 32),
                // The whole chain hangs under the list object, counted once through its head.
                ("App.LinkedList", "App.Node", 2000, 2000 * 48),
                ("App.Item[]", "App.Item", 1500, 1500 * 32),
            ]
        );
        assert_ne!(groups[0].anchor, groups[2].anchor);
    }

    /// Past 65,536 objects the grouping runs on all cores, in runs that cut the second
    /// holder's items in two: each group is still whole, its members in address order.
    #[test]
    fn groups_cut_between_threads_are_joined() {
        let g = two_holders_and_a_chain(40_000, 30_000, 20_000);
        let r = g.retained_sizes();
        let groups = holder_groups(&g, &r, 1000);
        let summary: Vec<(&str, u64, u64, u64)> = groups
            .iter()
            .map(|h| (g.type_names()[h.type_index as usize].as_str(), h.instances, h.shallow_bytes, h.retained_bytes))
            .collect();
        assert_eq!(
            summary,
            vec![
                ("App.Item", 40_000, 40_000 * 32, 40_000 * 32),
                ("App.Item", 30_000, 30_000 * 32, 30_000 * 32),
                ("App.Node", 20_000, 20_000 * 48, 20_000 * 48),
            ]
        );
        for h in &groups {
            assert_eq!(h.members.len() as u64, h.instances);
            assert!(h.members.windows(2).all(|w| w[0] < w[1]), "members in address order");
        }
    }

    #[test]
    fn objects_of_several_roots_group_by_type_and_small_groups_are_dropped() {
        let mut b = ObjectGraphBuilder::new();
        b.add_type(1, "App.Shared");
        for i in 0..1200u64 {
            b.add_node(0x1000 + i * 16, 16, 1, 0);
            b.add_root(0x1000 + i * 16, RootKind::StrongHandle);
        }
        let g = b.finish().unwrap();
        let r = g.retained_sizes();
        let groups = holder_groups(&g, &r, 1000);
        assert_eq!(groups.len(), 1);
        assert_eq!((groups[0].anchor, groups[0].instances), (None, 1200));
        assert!(holder_groups(&g, &r, 2000).is_empty());
    }
}
