//! Object graph building, retention paths and dominators on small hand-built heaps.

use analysis::heap::{NodeIndex, ObjectGraph, ObjectGraphBuilder, RootKind};
use analysis::{Error, HeapStream};

/// Builds a graph from `(address, type name, size, children addresses)`; type ids are
/// derived from names, so equal names share a MethodTable.
fn build(objects: &[(u64, &str, u64, &[u64])], roots: &[(u64, RootKind)]) -> ObjectGraph {
    let mut b = ObjectGraphBuilder::new();
    let mut names: Vec<&str> = Vec::new();
    for &(address, name, size, children) in objects {
        let type_id = match names.iter().position(|n| *n == name) {
            Some(i) => i as u64 + 0x1000,
            None => {
                names.push(name);
                b.add_type(names.len() as u64 - 1 + 0x1000, name);
                names.len() as u64 - 1 + 0x1000
            }
        };
        b.add_node(address, size, type_id, children.len() as u64);
        for &c in children {
            b.add_edge(c);
        }
    }
    for (address, kind) in roots {
        b.add_root(*address, kind.clone());
    }
    b.finish().expect("consistent streams")
}

fn node(g: &ObjectGraph, address: u64) -> NodeIndex {
    g.find(address).expect("object exists")
}

fn static_root(type_name: &str, field_name: &str) -> RootKind {
    RootKind::Static { type_name: type_name.into(), field_name: field_name.into() }
}

/// `static Processor.Current → Processor → CustomerCache → List<Customer> → Customer[] →
/// Customer (×3) → String`, plus a stack slot that also points at the first Customer.
fn leak() -> ObjectGraph {
    build(
        &[
            (0x100, "Processor", 24, &[0x200]),
            (0x200, "CustomerCache", 24, &[0x300]),
            (0x300, "System.Collections.Generic.List`1[Customer]", 32, &[0x400]),
            (0x400, "Customer[]", 48, &[0x500, 0x510, 0x520]),
            (0x500, "Customer", 40, &[0x600]),
            (0x510, "Customer", 40, &[0x610]),
            (0x520, "Customer", 40, &[0x620]),
            (0x600, "System.String", 30, &[]),
            (0x610, "System.String", 30, &[]),
            (0x620, "System.String", 30, &[]),
            (0x900, "Garbage", 1000, &[0x600]),
        ],
        &[(0x500, RootKind::Stack), (0x100, static_root("Processor", "Current"))],
    )
}

#[test]
fn retention_path_names_the_static_holder_rather_than_a_stack_slot() {
    let g = leak();
    let path = g.retention_path(node(&g, 0x600)).unwrap();
    assert_eq!(
        path.to_string(),
        "static Processor.Current → Processor → CustomerCache → \
         System.Collections.Generic.List<Customer> → Customer[] → Customer → System.String"
    );
    assert_eq!(path.steps[0].address, 0x100);
    assert_eq!(path.steps.last().unwrap().address, 0x600);
    // The first Customer is directly on a stack too, but the static explains it.
    let c = g.retention_path(node(&g, 0x500)).unwrap();
    assert_eq!(c.root, static_root("Processor", "Current"));
    assert_eq!(c.steps.len(), 5);
    // Nothing roots the garbage object.
    assert!(g.retention_path(node(&g, 0x900)).is_none());
}

#[test]
fn paths_by_type_group_instances_held_the_same_way() {
    let g = leak();
    let best = g.shortest_path_by_type("Customer").unwrap();
    assert_eq!(best.steps.last().unwrap().address, 0x500, "lowest address on ties");
    let groups = g.shortest_paths_by_type("Customer", 10);
    assert_eq!(groups.len(), 1);
    assert_eq!(groups[0].instances, 3);
    assert_eq!(groups[0].bytes, 120);
    assert!(g.shortest_path_by_type("NoSuchType").is_none());
    assert!(g.shortest_paths_by_type("Garbage", 10).is_empty());
}

#[test]
fn stack_roots_are_used_when_nothing_better_reaches_the_object() {
    let g = build(&[(0x10, "Request", 16, &[0x20]), (0x20, "Buffer", 64, &[])], &[(0x10, RootKind::Stack)]);
    let path = g.retention_path(node(&g, 0x20)).unwrap();
    assert_eq!(path.to_string(), "[local var] → Request → Buffer");
}

#[test]
fn retained_sizes_of_the_leak() {
    let g = leak();
    let r = g.retained_sizes();
    // Customer 0x500 (and its String) is also on a stack, so the static alone does not
    // retain it: freeing Processor would leave it alive.
    let held_by_static: u64 = 24 + 24 + 32 + 48 + 2 * 40 + 2 * 30;
    assert_eq!(r.retained(node(&g, 0x100)), Some(held_by_static));
    assert_eq!(r.retained(node(&g, 0x400)), Some(48 + 2 * 70));
    assert_eq!(r.retained(node(&g, 0x500)), Some(70));
    assert_eq!(r.retained(node(&g, 0x600)), Some(30));
    assert_eq!(r.retained(node(&g, 0x900)), None);
    assert_eq!(r.unreachable(), 1);
    assert_eq!(r.immediate_dominator(node(&g, 0x500)), None);
    assert_eq!(r.immediate_dominator(node(&g, 0x510)), Some(node(&g, 0x400)));
    assert_eq!(r.immediate_dominator(node(&g, 0x610)), Some(node(&g, 0x510)));
    assert_eq!(r.top_objects(1), vec![(node(&g, 0x100), held_by_static)]);

    let by_type = r.by_type(&g);
    let row = |name: &str| by_type.iter().find(|t| t.type_name == name).unwrap();
    assert_eq!(by_type[0].type_name, "Processor");
    assert_eq!(row("Customer").count, 3);
    assert_eq!(row("Customer").shallow_bytes, 120);
    assert_eq!(row("Customer").retained_bytes, 210);
    assert_eq!(row("System.String").retained_bytes, 90);
    assert!(by_type.iter().all(|t| t.type_name != "Garbage"));
}

#[test]
fn dominators_match_the_lengauer_tarjan_paper_example() {
    // Lengauer & Tarjan (1979), figure 1; the expected idoms are the paper's.
    let names = ["R", "A", "B", "C", "D", "E", "F", "G", "H", "I", "J", "K", "L"];
    let addr = |n: &str| 0x10 * (names.iter().position(|&x| x == n).unwrap() as u64 + 1);
    let edges: &[(&str, &[&str])] = &[
        ("R", &["A", "B", "C"]),
        ("A", &["D"]),
        ("B", &["A", "D", "E"]),
        ("C", &["F", "G"]),
        ("D", &["L"]),
        ("E", &["H"]),
        ("F", &["I"]),
        ("G", &["I", "J"]),
        ("H", &["E", "K"]),
        ("I", &["K"]),
        ("J", &["I"]),
        ("K", &["I", "R"]),
        ("L", &["H"]),
    ];
    let children: Vec<Vec<u64>> = edges.iter().map(|(_, cs)| cs.iter().map(|c| addr(c)).collect()).collect();
    let objects: Vec<(u64, &str, u64, &[u64])> =
        edges.iter().zip(&children).map(|((n, _), cs)| (addr(n), *n, 1, cs.as_slice())).collect();
    let g = build(&objects, &[(addr("R"), RootKind::StrongHandle)]);
    let r = g.retained_sizes();
    let idom = |n: &str| r.immediate_dominator(node(&g, addr(n))).map(|d| g.type_name(d).to_string());
    let expected = [
        ("R", None),
        ("A", Some("R")),
        ("B", Some("R")),
        ("C", Some("R")),
        ("D", Some("R")),
        ("E", Some("R")),
        ("F", Some("C")),
        ("G", Some("C")),
        ("H", Some("R")),
        ("I", Some("R")),
        ("J", Some("G")),
        ("K", Some("R")),
        ("L", Some("D")),
    ];
    for (n, d) in expected {
        assert_eq!(idom(n).as_deref(), d, "idom({n})");
    }
    assert_eq!(r.retained(node(&g, addr("R"))), Some(13));
    assert_eq!(r.retained(node(&g, addr("C"))), Some(4)); // C, F, G, J
    assert_eq!(r.retained(node(&g, addr("D"))), Some(2)); // D, L
}

#[test]
fn object_shared_by_two_roots_is_dominated_by_neither() {
    let g = build(
        &[(0x10, "A", 10, &[0x30]), (0x20, "B", 10, &[0x30]), (0x30, "Shared", 100, &[])],
        &[(0x10, RootKind::StrongHandle), (0x20, RootKind::PinnedHandle)],
    );
    let r = g.retained_sizes();
    assert_eq!(r.immediate_dominator(node(&g, 0x30)), None);
    assert_eq!(r.retained(node(&g, 0x10)), Some(10));
    assert_eq!(r.retained(node(&g, 0x30)), Some(100));
}

#[test]
fn same_type_chains_are_not_double_counted() {
    // A linked list: each Node dominates the rest, but the type retains the list once.
    let g = build(
        &[
            (0x10, "Node", 10, &[0x20]),
            (0x20, "Node", 10, &[0x30]),
            (0x30, "Node", 10, &[0x10]), // back edge: a cycle
        ],
        &[(0x10, static_root("List", "Head"))],
    );
    let r = g.retained_sizes();
    assert_eq!(r.retained(node(&g, 0x10)), Some(30));
    assert_eq!(r.retained(node(&g, 0x20)), Some(20));
    let by_type = r.by_type(&g);
    assert_eq!(by_type.len(), 1);
    assert_eq!(by_type[0].retained_bytes, 30);
    assert_eq!(by_type[0].count, 3);
}

#[test]
fn edges_pair_with_nodes_whatever_the_arrival_order() {
    // Node A (2 edges), B (0), C (1): the flat edge stream is [B, C, A].
    let mut b = ObjectGraphBuilder::new();
    b.add_edge(0x20); // edges may arrive before their nodes' event
    b.add_node(0x30, 8, 1, 1); // nodes out of address order
    b.add_edge(0x30);
    b.add_node(0x10, 8, 1, 2);
    b.add_edge(0x10);
    b.add_node(0x20, 8, 1, 0);
    // Stream: nodes [C(1), A(2), B(0)] own edges [0x20], [0x30, 0x10], [].
    let g = b.finish().unwrap();
    let children = |a: u64| -> Vec<u64> { g.children(node(&g, a)).map(|c| g.address(c)).collect() };
    assert_eq!(children(0x30), vec![0x20]);
    assert_eq!(children(0x10), vec![0x30, 0x10]);
    assert!(children(0x20).is_empty());
    assert_eq!(g.type_name(node(&g, 0x10)), "Type(0x1)", "never announced");
}

#[test]
fn edge_stream_mismatches_are_errors() {
    let mut b = ObjectGraphBuilder::new();
    b.add_node(0x10, 8, 1, 1);
    b.add_edge(0x10);
    b.add_edge(0x10);
    assert_eq!(b.finish().unwrap_err(), Error::EdgesLeftOver { left_over: 1 });

    let mut b = ObjectGraphBuilder::new();
    b.add_node(0x10, 8, 1, 3);
    b.add_edge(0x10);
    assert_eq!(b.finish().unwrap_err(), Error::EdgesMissing { announced: 3, received: 1 });
}

#[test]
fn bulk_event_indexes_must_be_consecutive_per_stream() {
    let mut b = ObjectGraphBuilder::new();
    b.check_event_index(HeapStream::Nodes, 0).unwrap();
    b.check_event_index(HeapStream::Edges, 0).unwrap();
    b.check_event_index(HeapStream::Nodes, 1).unwrap();
    assert_eq!(
        b.check_event_index(HeapStream::Edges, 2).unwrap_err(),
        Error::EventOutOfSequence { stream: HeapStream::Edges, expected: 1, got: 2 }
    );
}

#[test]
fn unknown_targets_roots_and_duplicates_are_dropped_and_counted() {
    let mut b = ObjectGraphBuilder::new();
    b.add_node(0x10, 8, 1, 2);
    b.add_edge(0x20);
    b.add_edge(0xdead); // not an object of the snapshot
    b.add_node(0x20, 8, 2, 0);
    b.add_node(0x10, 99, 1, 1); // duplicate address: keep the first
    b.add_edge(0x20);
    b.add_root(0x10, RootKind::Stack);
    b.add_root(0x10, RootKind::Stack); // many stack slots, one root
    b.add_root(0xbeef, RootKind::StrongHandle);
    b.add_static_root(0x20, 0x77, "Instance");
    b.add_type(0x77, "Shop.Registry`1[System.String]"); // named after its use
    let g = b.finish().unwrap();
    let s = g.stats();
    assert_eq!((s.nodes, s.edges, s.roots), (2, 1, 2));
    assert_eq!(s.dropped_edges, 2);
    assert_eq!(s.dropped_roots, 1);
    assert_eq!(s.duplicate_nodes, 1);
    assert_eq!(g.size(node(&g, 0x10)), 8);
    assert_eq!(g.roots()[0].kind, static_root("Shop.Registry<System.String>", "Instance"), "statics sort first");
}

#[test]
fn gc_root_kinds_map_like_dotnet_gcdump() {
    assert_eq!(RootKind::from_gc_root(0, 0), Some(RootKind::Stack));
    assert_eq!(RootKind::from_gc_root(1, 0), Some(RootKind::Finalizer));
    assert_eq!(RootKind::from_gc_root(2, 0), Some(RootKind::StrongHandle));
    assert_eq!(RootKind::from_gc_root(2, 1), Some(RootKind::PinnedHandle));
    assert_eq!(RootKind::from_gc_root(2, 0x8), Some(RootKind::Other));
    assert_eq!(RootKind::from_gc_root(2, 0x2), None, "weak handles hold nothing");
    assert_eq!(RootKind::from_gc_root(4, 0), Some(RootKind::Other));
}

#[test]
fn histogram_from_graph_and_compact_memory() {
    let g = leak();
    let h = g.histogram();
    assert_eq!(h.total_objects(), 11);
    assert_eq!(h.by_name("Customer").unwrap().bytes, 120);
    // 20 bytes per node (+4 for the trailing offset) and 4 per edge, Vec growth aside.
    assert!(g.memory_bytes() <= 40 * g.len() + 8 * g.edge_count() + 4);
}

#[test]
fn findings_serialize_to_json() {
    let g = leak();
    let path = g.retention_path(node(&g, 0x600)).unwrap();
    let json = serde_json::to_value(&path).unwrap();
    assert_eq!(json["root"]["kind"], "static");
    assert_eq!(json["root"]["field_name"], "Current");
    assert_eq!(json["steps"][5]["type_name"], "System.String");
    let by_type = serde_json::to_value(g.retained_sizes().by_type(&g)).unwrap();
    assert_eq!(by_type[0]["type_name"], "Processor");
}
