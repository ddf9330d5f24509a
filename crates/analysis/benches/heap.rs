//! Heap analysis at realistic scale: 2,000,000 objects shaped like the classic leak
//! `static Processor.Current → Processor → CustomerCache → List<Customer> → Customer[] →
//! Customer (×1M) → String (×1M)`.
//!
//! Run with `cargo bench -p analysis --bench heap`. Prints wall time per phase and heap
//! bytes measured by a counting global allocator (stats_alloc), so the figures are what
//! the code really allocates, not estimates.

use std::alloc::System;
use std::hint::black_box;
use std::time::Instant;

use analysis::heap::{HeapHistogramBuilder, LeakThresholds, ObjectGraphBuilder, RootKind, leak_suspects};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const CUSTOMER_SIZE: u64 = 40;
const STRING_SIZE: u64 = 48;

const PROCESSOR: u64 = 0x10;
const CACHE: u64 = 0x11;
const LIST: u64 = 0x12;
const ARRAY: u64 = 0x13;
const CUSTOMER: u64 = 0x14;
const STRING: u64 = 0x15;

/// One GCBulkNode value plus the targets its edges point at.
struct Object {
    address: u64,
    size: u64,
    type_id: u64,
    edges: Vec<u64>,
}

/// The heap in GC walk (address) order: the four holders, then each Customer followed by
/// its String, as an allocation loop would lay them out.
fn objects(customers: u64) -> impl Iterator<Item = Object> {
    let base = 0x7f00_0000_0000u64;
    let customer_at = move |i: u64| base + 0x1000 + i * (CUSTOMER_SIZE + STRING_SIZE);
    let holders = [
        (PROCESSOR, 24, vec![base + 0x100]),
        (CACHE, 24, vec![base + 0x200]),
        (LIST, 32, vec![base + 0x300]),
        (ARRAY, 24 + 8 * customers, (0..customers).map(customer_at).collect()),
    ];
    let holders = holders.into_iter().enumerate().map(move |(i, (type_id, size, edges))| Object {
        address: base + 0x100 * i as u64,
        size,
        type_id,
        edges,
    });
    let leak = (0..customers).flat_map(move |i| {
        let customer = customer_at(i);
        [
            Object { address: customer, size: CUSTOMER_SIZE, type_id: CUSTOMER, edges: vec![customer + CUSTOMER_SIZE] },
            Object { address: customer + CUSTOMER_SIZE, size: STRING_SIZE, type_id: STRING, edges: Vec::new() },
        ]
    });
    holders.chain(leak)
}

fn live_bytes(region: &Region<'_, System>) -> i64 {
    let s = region.change();
    // stats_alloc already books realloc growth/shrink into allocated/deallocated.
    s.bytes_allocated as i64 - s.bytes_deallocated as i64
}

fn allocated_bytes(region: &Region<'_, System>) -> u64 {
    region.change().bytes_allocated as u64
}

fn mib(bytes: impl Into<f64>) -> f64 {
    bytes.into() / (1024.0 * 1024.0)
}

fn histogram(objects: u64) {
    println!("== HeapHistogramBuilder ==");
    // Same number of types, 1,000x more objects: the builder must not grow.
    for (objects, types) in [(objects / 1000, 4u64), (objects, 4), (objects, 10_000)] {
        let region = Region::new(GLOBAL);
        let started = Instant::now();
        let mut builder = HeapHistogramBuilder::new();
        for t in 0..types {
            builder.add_type(t, &format!("Shop.Type`1[System.Int32]{t}"));
        }
        for i in 0..objects {
            builder.add_object(i % types, 32 + i % 64);
        }
        let builder_bytes = live_bytes(&region);
        let histogram = builder.finish();
        let elapsed = started.elapsed();
        println!(
            "{objects:>9} objects, {types:>6} types: {:>7.1} ms, builder {:>9} B ({:.0} B/type), \
             histogram {:>9} B, top {} = {} B",
            elapsed.as_secs_f64() * 1e3,
            builder_bytes,
            builder_bytes as f64 / types as f64,
            live_bytes(&region),
            histogram.top(1)[0].type_name,
            histogram.top(1)[0].bytes,
        );
        black_box(histogram);
    }
}

fn object_graph(customers: u64) {
    let input: Vec<Object> = objects(customers).collect();
    let edges: usize = input.iter().map(|o| o.edges.len()).sum();
    println!("== ObjectGraph: {} objects, {edges} references ==", input.len());

    let region = Region::new(GLOBAL);
    let started = Instant::now();
    let mut builder = ObjectGraphBuilder::new();
    for (id, name) in [
        (PROCESSOR, "Shop.Processor"),
        (CACHE, "Shop.CustomerCache"),
        (LIST, "System.Collections.Generic.List`1[Shop.Customer]"),
        (ARRAY, "Shop.Customer[]"),
        (CUSTOMER, "Shop.Customer"),
        (STRING, "System.String"),
    ] {
        builder.add_type(id, name);
    }
    // Two independent streams: all nodes, then all edges (the builder must not care).
    for o in &input {
        builder.add_node(o.address, o.size, o.type_id, o.edges.len() as u64);
    }
    for o in &input {
        for &e in &o.edges {
            builder.add_edge(e);
        }
    }
    builder.add_static_root(input[0].address, PROCESSOR, "Current");
    builder.add_root(input[10].address, RootKind::Stack);
    let fed = started.elapsed();
    let builder_bytes = live_bytes(&region);
    let before_finish = allocated_bytes(&region);
    let graph = builder.finish().expect("consistent synthetic streams");
    let built = started.elapsed();
    let finish_allocated = allocated_bytes(&region) - before_finish;
    let graph_bytes = live_bytes(&region);
    let (n, e) = (graph.len() as f64, graph.edge_count() as f64);
    println!(
        "build: {:.0} ms ({:.0} ms feeding, {:.0} ms finish)",
        built.as_secs_f64() * 1e3,
        fed.as_secs_f64() * 1e3,
        (built - fed).as_secs_f64() * 1e3
    );
    println!(
        "builder before finish: {:.1} MiB ({:.1} B/object incl. its edges)",
        mib(builder_bytes as f64),
        builder_bytes as f64 / n
    );
    println!(
        "graph: {:.1} MiB live = {:.1} B/object + {:.1} B/edge by layout (24 + 4); \
         peak during finish <= {:.1} MiB",
        mib(graph_bytes as f64),
        (graph.memory_bytes() as f64 - 4.0 * e) / n,
        4.0,
        mib((builder_bytes as u64 + finish_allocated) as f64)
    );

    let started = Instant::now();
    let region = Region::new(GLOBAL);
    let groups = graph.shortest_paths_by_type("Shop.Customer", 5);
    println!(
        "paths by type: {:.0} ms, allocated {:.1} MiB; {} Customers via {}",
        started.elapsed().as_secs_f64() * 1e3,
        mib(allocated_bytes(&region) as f64),
        groups[0].instances,
        groups[0].path
    );

    let started = Instant::now();
    let region = Region::new(GLOBAL);
    let retained = graph.retained_sizes();
    let dominators_ms = started.elapsed().as_secs_f64() * 1e3;
    let dominators_allocated = allocated_bytes(&region);
    let by_type = retained.by_type(&graph);
    println!(
        "retained sizes: {:.0} ms (dominators) + {:.0} ms (per type), allocated {:.1} MiB \
         ({:.1} B/object) for dominators; top: {} retains {:.1} MiB",
        dominators_ms,
        started.elapsed().as_secs_f64() * 1e3 - dominators_ms,
        mib(dominators_allocated as f64),
        dominators_allocated as f64 / n,
        by_type[0].type_name,
        mib(by_type[0].retained_bytes as f64)
    );

    // What the leak analysis adds on top of the dominators (anchors, holder groups, patterns),
    // as a ratio to them measured in the same run.
    let heap_bytes = graph.histogram().total_bytes();
    let started = Instant::now();
    let region = Region::new(GLOBAL);
    let suspects = leak_suspects(&graph, &retained, heap_bytes, &LeakThresholds::default());
    let suspects_ms = started.elapsed().as_secs_f64() * 1e3;
    println!(
        "leak suspects: {:.0} ms = {:.2}x the dominators, allocated {:.1} MiB ({:.1} B/object); {}",
        suspects_ms,
        suspects_ms / dominators_ms,
        mib(allocated_bytes(&region) as f64),
        allocated_bytes(&region) as f64 / n,
        suspects.first().map_or("none", |s| s.reason.as_str())
    );
    black_box((graph, retained, by_type, suspects));
}

fn main() {
    // `cargo bench` passes `--bench`. Under `cargo test --all-targets` (debug build) run
    // a 100x smaller heap so the code is exercised without the wait.
    let customers = if std::env::args().any(|a| a == "--bench") { 1_000_000 } else { 10_000 };
    histogram(2 * customers);
    object_graph(customers);
}
