//! Dominators on heap shapes with a million objects: the shapes a linear algorithm must get
//! through at once and the former "intersect until nothing changes" one did not (a doubly
//! linked list is quadratic for it: 5,000 nodes took 47 s, so 1 M nodes would never end).
//! A regression shows up as this test not finishing, and every figure is checked exactly.

use analysis::heap::{NodeIndex, ObjectGraph, ObjectGraphBuilder, RootKind};

const NODES: u64 = 1_000_000;
const NODE_SIZE: u64 = 48;
const PAYLOAD_SIZE: u64 = 32;
const HEAD: u64 = 0x1000;

fn node_address(i: u64) -> u64 {
    0x10_0000 + i * 128
}

fn payload_address(i: u64) -> u64 {
    node_address(i) + 64
}

/// `static Cache.List → List → node 0 ↔ node 1 ↔ … ↔ node n-1`, each node holding a payload,
/// and the list also pointing at its last node (as `LinkedList<T>` does through `head.prev`).
fn doubly_linked_list(n: u64) -> ObjectGraph {
    let mut b = ObjectGraphBuilder::new();
    b.add_type(1, "Cache.List");
    b.add_type(2, "Cache.Node");
    b.add_type(3, "Cache.Payload");
    b.add_node(HEAD, 40, 1, 2);
    b.add_edge(node_address(0));
    b.add_edge(node_address(n - 1));
    for i in 0..n {
        let links = [i.checked_sub(1), (i + 1 < n).then_some(i + 1)];
        let count = links.iter().flatten().count() as u64 + 1;
        b.add_node(node_address(i), NODE_SIZE, 2, count);
        for j in links.into_iter().flatten() {
            b.add_edge(node_address(j));
        }
        b.add_edge(payload_address(i));
        b.add_node(payload_address(i), PAYLOAD_SIZE, 3, 0);
    }
    b.add_root(HEAD, RootKind::Static { type_name: "Cache".into(), field_name: "List".into() });
    b.finish().unwrap()
}

fn at(g: &ObjectGraph, address: u64) -> NodeIndex {
    g.find(address).unwrap()
}

#[test]
fn a_million_node_doubly_linked_list_is_dominated_link_by_link() {
    let g = doubly_linked_list(NODES);
    let r = g.retained_sizes();
    let per_node = NODE_SIZE + PAYLOAD_SIZE;
    assert_eq!(r.retained(at(&g, HEAD)), Some(40 + NODES * per_node));
    assert_eq!(r.immediate_dominator(at(&g, HEAD)), None, "a root");
    // Reached from both ends, the first and last nodes hang directly off the list object;
    // every node in between is dominated by the list too, since either neighbour can be
    // removed and the other end still reaches it.
    for i in [0, 1, NODES / 2, NODES - 2, NODES - 1] {
        let node = at(&g, node_address(i));
        assert_eq!(r.immediate_dominator(node), Some(at(&g, HEAD)), "node {i}");
        assert_eq!(r.retained(node), Some(per_node), "node {i} keeps only itself and its payload");
        assert_eq!(r.immediate_dominator(at(&g, payload_address(i))), Some(node));
    }
    assert_eq!(r.top_objects(2), vec![(at(&g, HEAD), 40 + NODES * per_node), (at(&g, node_address(0)), per_node)]);
    let rows = r.by_type(&g);
    let row = |name: &str| rows.iter().find(|t| t.type_name == name).unwrap().clone();
    assert_eq!((row("Cache.Node").count, row("Cache.Node").retained_bytes), (NODES, NODES * per_node));
    assert_eq!(row("Cache.Payload").retained_bytes, NODES * PAYLOAD_SIZE);
    assert_eq!(r.unreachable(), 0);
}

/// Without the tail pointer the list is a chain: each node dominates the rest of it, and the
/// depth-first search and the accumulation run a million levels deep without recursion.
#[test]
fn a_million_long_chain_retains_its_suffix() {
    let mut b = ObjectGraphBuilder::new();
    b.add_type(1, "Node");
    for i in 0..NODES {
        let next = i + 1 < NODES;
        b.add_node(node_address(i), NODE_SIZE, 1, u64::from(next));
        if next {
            b.add_edge(node_address(i + 1));
        }
    }
    b.add_root(node_address(0), RootKind::StrongHandle);
    let g = b.finish().unwrap();
    let r = g.retained_sizes();
    for i in [0, 1, NODES / 3, NODES - 1] {
        let node = at(&g, node_address(i));
        assert_eq!(r.retained(node), Some((NODES - i) * NODE_SIZE), "node {i}");
        let expected = i.checked_sub(1).map(|p| at(&g, node_address(p)));
        assert_eq!(r.immediate_dominator(node), expected, "node {i}");
    }
}

/// Paths into the list are up to half a million objects long; grouping the payloads by path
/// must not walk each of them (that was quadratic too). Payloads i and n-1-i sit at the same
/// depth from either end, on paths of the same types: each group holds two.
#[test]
fn a_million_node_list_groups_its_payloads_by_path_in_one_pass() {
    let g = doubly_linked_list(NODES);
    // The best groups only: a group's path is as long as the list is deep there.
    let groups = g.retention_paths().groups_for_type("Cache.Payload", 3);
    assert_eq!(groups.len(), 3);
    assert!(groups.iter().all(|grp| grp.instances == 2 && grp.bytes == 2 * PAYLOAD_SIZE));
    let first = &groups[0].path;
    let types: Vec<&str> = first.steps.iter().map(|s| s.type_name.as_str()).collect();
    assert_eq!(types, ["Cache.List", "Cache.Node", "Cache.Payload"]);
    assert_eq!(first.steps[2].address, payload_address(0));
}
