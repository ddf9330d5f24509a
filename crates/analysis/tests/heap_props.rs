//! Property tests: on random small heaps, dominators, retained sizes and retention paths
//! agree with their definitions computed the slow way (remove `d`: is `v` still reachable?).
//!
//! The heaps have cycles, self-loops (an edge `i → i` is as likely as any other), unreachable
//! parts, several roots (also several on one object), and, in [`chain_heap`], long doubly
//! linked chains with random extra references: the shape that made the former iterative
//! dominator algorithm quadratic.

use std::collections::{HashMap, VecDeque};

use analysis::heap::{NodeIndex, ObjectGraph, ObjectGraphBuilder, RootKind};
use proptest::prelude::*;

const KINDS: [RootKind; 3] = [RootKind::StrongHandle, RootKind::Other, RootKind::Stack];

#[derive(Clone, Debug)]
struct Heap {
    sizes: Vec<u64>,
    edges: Vec<Vec<usize>>,
    /// (node, index into KINDS)
    roots: Vec<(usize, usize)>,
}

fn heap() -> impl Strategy<Value = Heap> {
    (1..24usize).prop_flat_map(|n| {
        (
            prop::collection::vec(1..100u64, n),
            prop::collection::vec(prop::collection::vec(0..n, 0..4), n),
            prop::collection::vec((0..n, 0..KINDS.len()), 0..5),
        )
            .prop_map(|(sizes, edges, roots)| Heap { sizes, edges, roots })
    })
}

/// A doubly linked chain `0 ↔ 1 ↔ … ↔ n-1` rooted at 0, with a few random references
/// added (shortcuts forward, back into the chain, self-loops) and sometimes more roots.
fn chain_heap() -> impl Strategy<Value = Heap> {
    (20..160usize).prop_flat_map(|n| {
        (
            prop::collection::vec(1..100u64, n),
            prop::collection::vec((0..n, 0..n), 0..6),
            prop::collection::vec((0..n, 0..KINDS.len()), 0..3),
        )
            .prop_map(move |(sizes, extra, more_roots)| {
                let mut edges: Vec<Vec<usize>> = (0..n)
                    .map(|i| {
                        let mut e = Vec::new();
                        if i + 1 < n {
                            e.push(i + 1);
                        }
                        if i > 0 {
                            e.push(i - 1);
                        }
                        e
                    })
                    .collect();
                for (from, to) in extra {
                    edges[from].push(to);
                }
                let mut roots = vec![(0, 0)];
                roots.extend(more_roots);
                Heap { sizes, edges, roots }
            })
    })
}

/// Node i gets address 0x1000 - 8 i, so the builder must sort.
fn address(i: usize) -> u64 {
    0x1000 - 8 * i as u64
}

fn build(h: &Heap) -> ObjectGraph {
    build_typed(h, &[])
}

/// Node i gets type `T{types[i]}` (type 0 past the end of `types`).
fn build_typed(h: &Heap, types: &[u64]) -> ObjectGraph {
    let mut b = ObjectGraphBuilder::new();
    for t in 0..3 {
        b.add_type(t, &format!("T{t}"));
    }
    for (i, size) in h.sizes.iter().enumerate() {
        b.add_node(address(i), *size, types.get(i).copied().unwrap_or(0), h.edges[i].len() as u64);
        for &t in &h.edges[i] {
            b.add_edge(address(t));
        }
    }
    for &(node, kind) in &h.roots {
        b.add_root(address(node), KINDS[kind].clone());
    }
    b.finish().unwrap()
}

/// Nodes reachable from `sources` when `removed` is deleted.
fn reachable(h: &Heap, sources: &[usize], removed: Option<usize>) -> Vec<Option<u32>> {
    let mut dist = vec![None; h.sizes.len()];
    let mut queue = VecDeque::new();
    for &s in sources {
        if Some(s) != removed && dist[s].is_none() {
            dist[s] = Some(0);
            queue.push_back(s);
        }
    }
    while let Some(v) = queue.pop_front() {
        for &w in &h.edges[v] {
            if Some(w) != removed && dist[w].is_none() {
                dist[w] = Some(dist[v].unwrap() + 1);
                queue.push_back(w);
            }
        }
    }
    dist
}

fn idx(g: &ObjectGraph, i: usize) -> NodeIndex {
    g.find(address(i)).unwrap()
}

/// Dominators, retained sizes and the per-type total against the brute-force definition.
fn check_dominators(h: &Heap) -> Result<(), TestCaseError> {
    let g = build(h);
    let r = g.retained_sizes();
    let n = h.sizes.len();
    let root_nodes: Vec<usize> = h.roots.iter().map(|r| r.0).collect();
    let live = reachable(h, &root_nodes, None);
    // dominated[d][v]: removing d makes v unreachable (d dominates itself).
    let dominated: Vec<Vec<bool>> = (0..n)
        .map(|d| {
            let without = reachable(h, &root_nodes, Some(d));
            (0..n).map(|v| live[v].is_some() && (v == d || without[v].is_none())).collect()
        })
        .collect();
    for v in 0..n {
        if live[v].is_none() {
            prop_assert_eq!(r.retained(idx(&g, v)), None);
            continue;
        }
        let expected: u64 = (0..n).filter(|&w| dominated[v][w]).map(|w| h.sizes[w]).sum();
        prop_assert_eq!(r.retained(idx(&g, v)), Some(expected));
        // The immediate dominator is the strict dominator dominating the fewest nodes.
        let idom =
            (0..n).filter(|&d| d != v && dominated[d][v]).min_by_key(|&d| dominated[d].iter().filter(|&&x| x).count());
        prop_assert_eq!(r.immediate_dominator(idx(&g, v)), idom.map(|d| idx(&g, d)));
    }
    let type_row = r.by_type(&g);
    let live_bytes: u64 = (0..n).filter(|&v| live[v].is_some()).map(|v| h.sizes[v]).sum();
    if live_bytes > 0 {
        // One type: its top-level instances retain everything reachable.
        prop_assert_eq!(type_row[0].retained_bytes, live_bytes);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn dominators_and_retained_sizes_match_their_definition(h in heap()) {
        check_dominators(&h)?;
    }

    #[test]
    fn retention_paths_are_real_best_tier_shortest_paths(h in heap()) {
        let g = build(&h);
        let paths = g.retention_paths();
        let root_nodes: Vec<usize> = h.roots.iter().map(|r| r.0).collect();
        let live = reachable(&h, &root_nodes, None);
        for (v, distance) in live.iter().enumerate() {
            let path = paths.path_to(idx(&g, v));
            prop_assert_eq!(path.is_some(), distance.is_some());
            let Some(path) = path else { continue };
            // Best tier: the best-ranked root kind that reaches v at all.
            let tier = (0..KINDS.len())
                .find(|&k| {
                    let sources: Vec<usize> =
                        h.roots.iter().filter(|r| r.1 == k).map(|r| r.0).collect();
                    reachable(&h, &sources, None)[v].is_some()
                })
                .unwrap();
            prop_assert_eq!(&path.root, &KINDS[tier]);
            let sources: Vec<usize> = h.roots.iter().filter(|r| r.1 == tier).map(|r| r.0).collect();
            prop_assert!(sources.iter().any(|&s| address(s) == path.steps[0].address));
            prop_assert_eq!(
                Some(path.steps.len() as u32 - 1),
                reachable(&h, &sources, None)[v],
                "shortest within its tier"
            );
            prop_assert_eq!(path.steps.last().unwrap().address, address(v));
            for pair in path.steps.windows(2) {
                let from = pair[0].node;
                prop_assert!(g.children(from).any(|c| c == pair[1].node), "steps are edges");
            }
        }
    }

    #[test]
    fn a_search_that_stops_at_its_targets_gives_their_full_search_paths(
        h in heap(),
        picks in prop::collection::vec(any::<prop::sample::Index>(), 0..4),
    ) {
        let g = build(&h);
        let full = g.retention_paths();
        let targets: Vec<_> = picks.iter().map(|p| idx(&g, p.index(h.sizes.len()))).collect();
        let partial = g.retention_paths_to(&targets);
        for &t in &targets {
            prop_assert_eq!(partial.path_to(t), full.path_to(t));
            prop_assert_eq!(partial.is_reachable(t), full.is_reachable(t));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn dominators_of_long_doubly_linked_chains_match_their_definition(h in chain_heap()) {
        check_dominators(&h)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Instances of a type are grouped exactly by their root's kind and the types along their
    /// path, each group represented by its lowest object.
    #[test]
    fn path_groups_partition_instances_by_root_kind_and_path_types(
        h in heap(),
        types in prop::collection::vec(0..3u64, 24),
    ) {
        let g = build_typed(&h, &types);
        let paths = g.retention_paths();
        for t in 0..3 {
            let name = format!("T{t}");
            let mut expected: HashMap<(RootKind, Vec<String>), (u64, u64, NodeIndex)> = HashMap::new();
            for node in g.nodes_of_type(&name) {
                let Some(path) = paths.path_to(node) else { continue };
                let key = (path.root.clone(), path.steps.iter().map(|s| s.type_name.clone()).collect());
                let e = expected.entry(key).or_insert((0, 0, node));
                e.0 += 1;
                e.1 += g.size(node);
                e.2 = e.2.min(node);
            }
            let groups = paths.groups_for_type(&name, usize::MAX);
            prop_assert_eq!(groups.len(), expected.len());
            for group in groups {
                let key = (group.path.root.clone(), group.path.steps.iter().map(|s| s.type_name.clone()).collect());
                let (instances, bytes, best) = expected[&key];
                prop_assert_eq!((group.instances, group.bytes), (instances, bytes));
                prop_assert_eq!(group.path.steps.last().unwrap().node, best);
            }
        }
    }
}
