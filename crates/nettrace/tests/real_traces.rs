//! Assertions against traces recorded from real .NET 8.0.4 and .NET Core 3.1.23 processes
//! (see tests/data/README.md for how they were made).

mod common;

use std::collections::{BTreeSet, HashMap};

use common::{FIXTURES, OwnedEvent, collect, fixture, parse_chunked};
use nettrace::counters::{CounterKind, CounterPayload, decode_counter};
use nettrace::events::{MethodEventKind, RuntimeEvent, decode_runtime};

/// Number of `DiagScenarios.Customer` objects the workload kept alive in the gcdump runs.
const LEAKED_CUSTOMERS: usize = 12345;

#[test]
fn every_fixture_parses_identically_at_odd_chunk_sizes() {
    for name in FIXTURES {
        let data = fixture(name);
        let (whole, stats) = collect(&data, &[data.len()]).unwrap();
        assert!(stats.events > 0, "{name}: no events");
        assert_eq!(stats.bytes_consumed, data.len() as u64, "{name}");
        assert_eq!(stats.dropped_events, 0, "{name}");
        assert_eq!(stats.unresolved_stacks, 0, "{name}");
        for sizes in [&[1usize][..], &[3, 7, 1, 4093], &[65_537], &[13, 17, 19]] {
            let (chunked, s2) = collect(&data, sizes).unwrap();
            assert_eq!(chunked, whole, "{name} chunked {sizes:?}");
            assert_eq!(s2, stats, "{name} stats chunked {sizes:?}");
        }
    }
}

#[test]
fn every_fixture_truncated_is_an_error_not_a_panic() {
    for name in FIXTURES {
        let data = fixture(name);
        // Several cut points, including inside the header and just before the end tag.
        for cut in [0, 5, 40, data.len() / 3, data.len() / 2, data.len() - 1] {
            let r = collect(&data[..cut], &[977]);
            assert!(matches!(r, Err(nettrace::Error::Truncated { .. })), "{name} cut at {cut}: {r:?}");
        }
    }
}

fn runtime_events(name: &str) -> (Vec<OwnedEvent>, u32) {
    let data = fixture(name);
    let mut out = Vec::new();
    let (_, info) = parse_chunked(&data, &[4096, 3], &mut |e| out.push(OwnedEvent::from_event(e))).unwrap();
    (out, info.unwrap().pointer_size)
}

/// Decode owned events by re-parsing; decoders borrow, so run them inside the callback.
fn for_each_decoded(name: &str, mut f: impl FnMut(&nettrace::Event<'_>, RuntimeEvent<'_>)) {
    let data = fixture(name);
    let mut ptr = 8;
    let mut r = nettrace::Reader::new();
    r.feed(&data);
    r.finish_input();
    loop {
        let mut cb = |e: &nettrace::Event<'_>| {
            let ev = decode_runtime(e, ptr).unwrap_or_else(|err| panic!("{name}: {err} in {:?}", e.metadata));
            f(e, ev);
        };
        match r.next_block(&mut cb).unwrap() {
            nettrace::Step::End => break,
            nettrace::Step::NeedData => unreachable!("whole input was fed"),
            nettrace::Step::Block => ptr = r.trace_info().map_or(8, |t| t.pointer_size),
        }
    }
}

fn counters(name: &str) -> Vec<CounterPayload> {
    let data = fixture(name);
    let mut out = Vec::new();
    parse_chunked(&data, &[333], &mut |e| {
        if let Some(c) = decode_counter(e).unwrap() {
            out.push(c);
        }
    })
    .unwrap();
    out
}

#[test]
fn counters_net8_has_runtime_counters_with_units_and_kinds() {
    let cs = counters("counters-net8");
    let names: BTreeSet<&str> = cs.iter().map(|c| c.name.as_str()).collect();
    for n in [
        "cpu-usage",
        "gc-heap-size",
        "working-set",
        "monitor-lock-contention-count",
        "time-in-gc",
        "gen-0-gc-count",
        "poh-size",
        "total-pause-time-by-gc",
    ] {
        assert!(names.contains(n), "missing {n} in {names:?}");
    }
    let cpu = cs.iter().find(|c| c.name == "cpu-usage").unwrap();
    assert_eq!(cpu.kind, CounterKind::Mean);
    assert_eq!(cpu.display_units, "%");
    assert_eq!(cpu.display_name, "CPU Usage");
    assert!((0.0..=100.0 * 64.0).contains(&cpu.value));
    let heap = cs.iter().find(|c| c.name == "gc-heap-size").unwrap();
    assert_eq!(heap.display_units, "MB");
    assert!(heap.value > 0.0);
    let g0 = cs.iter().find(|c| c.name == "gen-0-gc-count").unwrap();
    assert_eq!(g0.kind, CounterKind::Sum);
    for c in &cs {
        assert_eq!(c.series, "Interval=1000", "{c:?}");
        assert!((0.9..1.2).contains(&c.interval_sec), "{c:?}");
        assert!(c.value.is_finite(), "{c:?}");
    }
    // ~3 s at 1 s intervals: every counter reported two or three times.
    let cpu_samples = cs.iter().filter(|c| c.name == "cpu-usage").count();
    assert!((2..=4).contains(&cpu_samples), "{cpu_samples}");
}

#[test]
fn counters_net31_has_the_nineteen_3x_counters() {
    let cs = counters("counters-net31");
    let names: BTreeSet<&str> = cs.iter().map(|c| c.name.as_str()).collect();
    let expected: BTreeSet<&str> = [
        "cpu-usage",
        "working-set",
        "gc-heap-size",
        "gen-0-gc-count",
        "gen-1-gc-count",
        "gen-2-gc-count",
        "threadpool-thread-count",
        "monitor-lock-contention-count",
        "threadpool-queue-length",
        "threadpool-completed-items-count",
        "alloc-rate",
        "active-timer-count",
        "exception-count",
        "time-in-gc",
        "gen-0-size",
        "gen-1-size",
        "gen-2-size",
        "loh-size",
        "assembly-count",
    ]
    .into_iter()
    .collect();
    assert_eq!(names, expected);
    let alloc = cs.iter().find(|c| c.name == "alloc-rate").unwrap();
    assert_eq!(alloc.kind, CounterKind::Sum);
    assert_eq!(alloc.display_units, "B");
}

struct HeapSummary {
    gc_count: u32,
    type_names: HashMap<u64, String>,
    node_types: Vec<u64>,
    node_events: Vec<u32>,
    edge_events: Vec<u32>,
    edges_announced: u64,
    edges_seen: u64,
    static_fields: Vec<String>,
    roots: usize,
    gc_end_count: Option<u32>,
}

fn heap(name: &str) -> HeapSummary {
    let mut h = HeapSummary {
        gc_count: 0,
        type_names: HashMap::new(),
        node_types: Vec::new(),
        node_events: Vec::new(),
        edge_events: Vec::new(),
        edges_announced: 0,
        edges_seen: 0,
        static_fields: Vec::new(),
        roots: 0,
        gc_end_count: None,
    };
    for_each_decoded(name, |e, ev| match ev {
        RuntimeEvent::GcStart { count, depth, reason, gc_type } => {
            assert_eq!((depth, reason, gc_type), (2, 1, 0), "induced blocking gen2");
            // Stackless events still name a stack id: the runtime interns an empty stack.
            assert!(e.stack.is_empty() && e.stack_id != 0, "GC events carry no stack");
            h.gc_count = count;
        }
        RuntimeEvent::GcEnd { count, .. } => h.gc_end_count = Some(count),
        RuntimeEvent::BulkType(it) => {
            for t in it {
                let t = t.unwrap();
                h.type_names.insert(t.type_id, t.name.to_string_lossy());
            }
        }
        RuntimeEvent::BulkNode(it) => {
            h.node_events.push(it.index);
            let n = it.count as usize;
            let nodes: Vec<_> = it.map(Result::unwrap).collect();
            assert_eq!(nodes.len(), n);
            for node in nodes {
                h.node_types.push(node.type_id);
                h.edges_announced += node.edge_count;
            }
        }
        RuntimeEvent::BulkEdge(it) => {
            h.edge_events.push(it.index);
            for edge in it {
                assert_eq!(edge.unwrap().referencing_field_id, 0);
                h.edges_seen += 1;
            }
        }
        RuntimeEvent::BulkRootStaticVar(it) => {
            for v in it {
                h.static_fields.push(v.unwrap().field_name.to_string_lossy());
            }
        }
        RuntimeEvent::BulkRootEdge(it) => h.roots += it.map(Result::unwrap).count(),
        _ => {}
    });
    h
}

fn check_heap(name: &str) {
    let h = heap(name);
    assert!(h.gc_count >= 1);
    assert_eq!(h.gc_end_count, Some(h.gc_count), "{name}: GCEnd matches the dump GC");
    // Node and edge events are two streams, each numbered 0, 1, 2, ...
    assert_eq!(h.node_events, (0..h.node_events.len() as u32).collect::<Vec<_>>());
    assert_eq!(h.edge_events, (0..h.edge_events.len() as u32).collect::<Vec<_>>());
    assert_eq!(h.edges_announced, h.edges_seen, "{name}: node edge counts match the edge stream");
    let customer = h
        .type_names
        .iter()
        .find(|(_, n)| n.as_str() == "DiagScenarios.Customer")
        .map(|(id, _)| *id)
        .unwrap_or_else(|| panic!("{name}: no DiagScenarios.Customer type"));
    let customers = h.node_types.iter().filter(|&&t| t == customer).count();
    assert_eq!(customers, LEAKED_CUSTOMERS, "{name}");
    // Every node's type resolves to a BulkType.
    let unresolved = h.node_types.iter().filter(|t| !h.type_names.contains_key(t)).count();
    assert_eq!(unresolved, 0, "{name}: node types without BulkType");
    assert!(h.type_names.values().any(|n| n == "System.String"));
    assert!(h.static_fields.iter().any(|f| f == "Leaked"), "{name}: {:?}", h.static_fields);
    assert!(h.roots > 10);
}

#[test]
fn gcdump_net8_counts_the_leaked_customers() {
    check_heap("gcdump-net8");
}

#[test]
fn gcdump_net31_counts_the_leaked_customers() {
    check_heap("gcdump-net31");
}

#[test]
fn contention_net8_shows_a_lock_cycle_with_owner_threads() {
    let mut created = Vec::new();
    let mut waits = Vec::new();
    for_each_decoded("contention-net8", |e, ev| match ev {
        RuntimeEvent::ContentionLockCreated { lock_id, object_id } => {
            assert_eq!(e.payload.len(), 18);
            created.push((lock_id, object_id));
        }
        RuntimeEvent::ContentionStart { flags, lock_id, object_id, owner_thread_id } => {
            assert_eq!(e.metadata.version, 2);
            assert_eq!(e.payload.len(), 27);
            assert_eq!(flags, 0, "managed lock");
            assert!(!e.stack.is_empty(), "ContentionStart carries the waiter's stack");
            waits.push((e.thread_id, lock_id.unwrap(), object_id.unwrap(), owner_thread_id.unwrap()));
        }
        _ => {}
    });
    assert_eq!(waits.len(), 2, "{waits:?}");
    assert_eq!(created.len(), 2);
    let (t1, l1, o1, owner1) = waits[0];
    let (t2, l2, o2, owner2) = waits[1];
    // Each waiter waits for a lock owned by the other: a deadlock cycle.
    assert_eq!(owner1, t2);
    assert_eq!(owner2, t1);
    assert_ne!(l1, l2);
    assert!(created.contains(&(l1, o1)) && created.contains(&(l2, o2)));
}

#[test]
fn contention_net31_has_v1_starts_without_owner() {
    let mut waiters = BTreeSet::new();
    for_each_decoded("contention-net31", |e, ev| {
        if let RuntimeEvent::ContentionStart { lock_id, owner_thread_id, .. } = ev {
            assert_eq!(e.metadata.version, 1);
            assert_eq!((lock_id, owner_thread_id), (None, None));
            assert!(!e.stack.is_empty());
            waiters.insert(e.thread_id);
        }
    });
    assert_eq!(waiters.len(), 2);
}

/// Resolve every sampled thread's stack to method names using the rundown.
fn sampled_stacks(name: &str) -> (HashMap<u64, Vec<String>>, Vec<String>) {
    let mut methods: Vec<(u64, u64, String)> = Vec::new();
    let mut samples: HashMap<u64, Vec<u64>> = HashMap::new();
    for_each_decoded(name, |e, ev| match ev {
        RuntimeEvent::MethodLoad(m) => {
            assert_eq!(m.kind, MethodEventKind::DcEnd);
            methods.push((m.start_address, m.start_address + u64::from(m.size), m.full_name()));
        }
        RuntimeEvent::ThreadSample { kind } => {
            assert!(kind <= 2);
            samples.entry(e.thread_id).or_insert_with(|| e.stack.to_vec());
        }
        _ => {}
    });
    let resolve = |ip: u64| {
        methods.iter().find(|(s, e, _)| (*s..*e).contains(&ip)).map_or_else(|| format!("?{ip:x}"), |m| m.2.clone())
    };
    let stacks = samples.into_iter().map(|(t, ips)| (t, ips.into_iter().map(resolve).collect())).collect();
    (stacks, methods.into_iter().map(|m| m.2).collect())
}

fn check_stacks(name: &str) {
    let (stacks, methods) = sampled_stacks(name);
    assert!(methods.iter().any(|m| m.starts_with("DiagScenarios.Program.DeadlockFunc(")), "{name}");
    assert!(methods.len() > 300, "rundown lists R2R framework methods too");
    let deadlocked: Vec<_> =
        stacks.values().filter(|frames| frames.iter().any(|f| f.contains("DeadlockFunc"))).collect();
    assert_eq!(deadlocked.len(), 2, "{name}: {stacks:#?}");
    for frames in deadlocked {
        // Leaf first: DeadlockFunc (callee) comes before the lambda that called it.
        let callee = frames.iter().position(|f| f.contains("DeadlockFunc")).unwrap();
        let caller = frames.iter().position(|f| f.contains("<Main>")).unwrap_or_else(|| panic!("{frames:?}"));
        assert!(callee < caller, "{name}: {frames:?}");
    }
    // The main thread sits in Console.ReadLine, called (last frame) from Main.
    let main = stacks
        .values()
        .find(|f| f.last().is_some_and(|l| l.starts_with("DiagScenarios.Program.Main(")))
        .unwrap_or_else(|| panic!("{name}: {stacks:#?}"));
    assert_eq!(main[main.len() - 2], "System.Console.ReadLine()", "{main:?}");
    // EventPipe stacks hold managed frames only: every IP resolves through the rundown.
    for frames in stacks.values() {
        assert!(frames.iter().all(|f| !f.starts_with('?')), "{name}: {frames:?}");
    }
}

#[test]
fn stacks_net8_resolve_through_rundown_leaf_first() {
    check_stacks("stacks-net8");
}

#[test]
fn stacks_net31_resolve_through_rundown_leaf_first() {
    check_stacks("stacks-net31");
    // On 3.1 Monitor.Enter is a managed frame above DeadlockFunc (on 8 it is native).
    let (stacks, _) = sampled_stacks("stacks-net31");
    let waiting =
        stacks.values().filter(|f| f[0] == "System.Threading.Monitor.Enter(class System.Object,bool&)").count();
    assert_eq!(waiting, 2);
}

#[test]
fn trace_objects_describe_64_bit_linux_processes() {
    for name in FIXTURES {
        let (events, ptr) = runtime_events(name);
        assert_eq!(ptr, 8);
        // Every session carries one EventPipe ProcessInfo event (a self-describing one),
        // though not necessarily first: events are only ordered per capture thread.
        let infos: Vec<_> = events
            .iter()
            .filter(|e| e.provider == "Microsoft-DotNETCore-EventPipe" && e.event_name == "ProcessInfo")
            .collect();
        assert_eq!(infos.len(), 1, "{name}");
    }
}
