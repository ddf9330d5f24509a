//! Retention on the heap shapes of the `HeapShapes` workload (small sizes; the full sizes are
//! measured by `scripts/bench`), from real dumps of .NET Core 3.1 and .NET 8: the per-type
//! counts equal what the workload built, the object its static field holds is the heap's top
//! retainer, and what it retains equals the brute-force definition on the real graph (the
//! bytes that no root reaches any more once that object is removed). The graphs are walked
//! in parts on several threads, as on a real analysis.

use std::collections::VecDeque;

use clrdump::{Depth, ObjectGraph, ReadOptions};
use support::{dump, worker};
use testbed::{Runtime, Workload};

mod support;

const N: u64 = 10_000;

/// Objects no root reaches once `removed` is gone (and `removed` itself): what it retains.
fn freed_without(graph: &ObjectGraph, removed: u32) -> Vec<bool> {
    let mut seen = vec![false; graph.len()];
    seen[removed as usize] = true;
    let mut queue: VecDeque<u32> = VecDeque::new();
    for root in graph.roots() {
        if !seen[root.node.index()] {
            seen[root.node.index()] = true;
            queue.push_back(root.node.0);
        }
    }
    while let Some(v) = queue.pop_front() {
        for child in graph.children(analysis::heap::NodeIndex(v)) {
            if !seen[child.index()] {
                seen[child.index()] = true;
                queue.push_back(child.0);
            }
        }
    }
    let reachable_before = reachable(graph);
    (0..graph.len()).map(|i| reachable_before[i] && (i == removed as usize || !seen[i])).collect()
}

fn reachable(graph: &ObjectGraph) -> Vec<bool> {
    let mut seen = vec![false; graph.len()];
    let mut stack: Vec<u32> = graph.roots().iter().map(|r| r.node.0).collect();
    for &r in &stack {
        seen[r as usize] = true;
    }
    while let Some(v) = stack.pop() {
        for child in graph.children(analysis::heap::NodeIndex(v)) {
            if !seen[child.index()] {
                seen[child.index()] = true;
                stack.push(child.0);
            }
        }
    }
    seen
}

fn check_shape(w: &Workload, shape: &str) {
    let runtime = w.runtime;
    let truth = w.get(&format!("/{shape}?n={N}"));
    let dir = tempfile::tempdir().unwrap();
    let core = dump(w, dir.path());
    let data = clrdump::read_dump(&core, &ReadOptions::new(worker(), Depth::Graph)).unwrap();
    let graph = data.graph.expect("graph requested");
    let ctx = format!("{shape} on {runtime:?}");
    // On more than one core the graph's walk is cut at the worker's checkpoints: everything
    // below then checks the graph the parts built, against what the workload built.
    if std::thread::available_parallelism().map_or(1, |n| n.get()) > 1 {
        assert!(data.graph_parts >= 2, "{ctx}: the heap was walked in {} part(s)", data.graph_parts);
    }

    let field = truth["holder_field"].as_str().unwrap();
    let holder = graph
        .roots()
        .iter()
        .find(|r| {
            matches!(&r.kind, analysis::heap::RootKind::Static { type_name, field_name }
                if type_name == "HeapShapes.Shapes" && field_name == field)
        })
        .unwrap_or_else(|| panic!("{ctx}: no static root Shapes.{field}"))
        .node;

    let histogram = graph.histogram();
    let counts = truth["counts"].as_object().unwrap();
    for (type_name, count) in counts {
        let row = histogram.by_name(type_name).unwrap_or_else(|| panic!("{ctx}: no {type_name} on the heap"));
        assert_eq!(row.count, count.as_u64().unwrap(), "{ctx}: {type_name}");
    }

    let retained = graph.retained_sizes();
    let freed = freed_without(&graph, holder.0);
    let expected: u64 =
        (0..graph.len() as u32).filter(|&i| freed[i as usize]).map(|i| graph.size(analysis::heap::NodeIndex(i))).sum();
    assert_eq!(retained.retained(holder), Some(expected), "{ctx}: retained by Shapes.{field}");
    if truth["holder_dominates"].as_bool().unwrap() {
        for (type_name, count) in counts {
            let held = graph.nodes_of_type(type_name).into_iter().filter(|n| freed[n.index()]).count() as u64;
            assert_eq!(held, count.as_u64().unwrap(), "{ctx}: {type_name} retained by Shapes.{field}");
        }
        let (top, bytes) = retained.top_objects(1)[0];
        assert_eq!((top, bytes), (holder, expected), "{ctx}: the top retainer is what Shapes.{field} holds");
    }
}

#[test]
fn retention_of_every_heap_shape_matches_the_workload_on_both_runtimes() {
    for runtime in Runtime::ALL {
        // Each shape replaces the previous one in the same process.
        let w = Workload::start(runtime, "HeapShapes", &[]);
        for shape in ["list", "tree", "cycles", "dictionary", "concurrent", "event", "timers", "array", "big"] {
            check_shape(&w, shape);
        }
    }
}
