//! Property tests for the findings that read untrusted heaps and stacks: on random inputs the
//! leak patterns, the hang groups and the growth verdict never panic and keep their promises.

use std::collections::HashMap;

use analysis::hangs::{HangKind, HangThresholds, find_hangs, queued_work_items};
use analysis::heap::{
    GrowthThresholds, HeapHistogram, HeapSummary, LeakThresholds, ObjectGraphBuilder, RootKind, TypeStats,
    finalizer_queue, growth_verdicts, leak_suspects,
};
use analysis::monitors::DumpThread;
use proptest::prelude::*;

/// Names that steer the patterns: delegates, invocation lists, closures, timers, the pool.
const TYPES: [&str; 10] = [
    "System.Object[]",
    "System.EventHandler",
    "System.Action",
    "App.Outer+<>c__DisplayClass1_0",
    "System.Threading.TimerQueueTimer",
    "System.Threading.TimerCallback",
    "System.Threading.ThreadPoolWorkQueue",
    "System.Collections.Concurrent.ConcurrentQueueSegment<System.Object>+Slot[]",
    "App.Item",
    "App.Item[]",
];

fn root(kind: usize) -> RootKind {
    match kind {
        0 => RootKind::Static { type_name: "App.Holder".into(), field_name: "Field".into() },
        1 => RootKind::Static { type_name: String::new(), field_name: "Field".into() },
        2 => RootKind::StrongHandle,
        3 => RootKind::Finalizer,
        _ => RootKind::Stack,
    }
}

#[derive(Clone, Debug)]
struct Heap {
    nodes: Vec<(usize, u64, Vec<usize>)>,
    roots: Vec<(usize, usize)>,
}

fn heap() -> impl Strategy<Value = Heap> {
    (1..40usize).prop_flat_map(|n| {
        (
            prop::collection::vec((0..TYPES.len(), 1..5000u64, prop::collection::vec(0..n, 0..5)), n),
            prop::collection::vec((0..n, 0..5usize), 0..6),
        )
            .prop_map(|(nodes, roots)| Heap { nodes, roots })
    })
}

const FRAMES: [&str; 10] = [
    "[HelperMethodFrame_1OBJ] System.Threading.Monitor.ObjWait(Int32, System.Object)",
    "System.Threading.ManualResetEventSlim.Wait()",
    "System.Threading.Tasks.Task`1[[System.Int32, System.Private.CoreLib]].get_Result()",
    "System.Threading.SemaphoreSlim.Wait()",
    "System.Threading.Thread.Join()",
    "App.Service.Get(Int32)",
    "App.Worker.Run()",
    "System.Threading.ThreadPoolWorkQueue.Dispatch()",
    "0x7f0000001234",
    "[GCFrame]",
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn leak_patterns_on_any_heap_keep_their_promises(h in heap()) {
        let mut b = ObjectGraphBuilder::new();
        for (i, name) in TYPES.iter().enumerate() {
            b.add_type(i as u64, name);
        }
        let at = |i: usize| 0x10_000 + 0x100 * i as u64;
        for (i, (t, size, edges)) in h.nodes.iter().enumerate() {
            b.add_node(at(i), *size, *t as u64, edges.len() as u64);
            for &e in edges {
                b.add_edge(at(e));
            }
        }
        for &(node, kind) in &h.roots {
            b.add_root(at(node), root(kind));
        }
        let g = b.finish().unwrap();
        let r = g.retained_sizes();
        let total = g.histogram().total_bytes();
        let t = LeakThresholds { min_instances: 2, min_pattern_bytes: 1, min_retained_bytes: 1, min_heap_share: 0.0, max_suspects: 50 };
        let suspects = leak_suspects(&g, &r, total, &t);
        for w in suspects.windows(2) {
            prop_assert!(w[0].confidence >= w[1].confidence, "surest first");
        }
        for s in &suspects {
            prop_assert!(s.path_instances >= t.min_instances);
            prop_assert!(s.instances >= 1 && s.instances <= s.path_instances);
            prop_assert!(s.retained_bytes <= total);
            prop_assert!(!s.reason.is_empty() && !s.holder.is_empty());
            prop_assert_eq!(s.path.last().map(|p| p.split(" (×").next().unwrap_or(p)), Some(s.type_name.as_str()));
        }
        if let Some(q) = finalizer_queue(&g, &r) {
            let rooted = h.roots.iter().filter(|x| x.1 == 3).map(|x| x.0).collect::<std::collections::HashSet<_>>();
            prop_assert_eq!(q.objects, rooted.len() as u64);
            prop_assert!(q.types.iter().map(|t| t.count).sum::<u64>() <= q.objects);
        }
        if let Some(items) = queued_work_items(&g) {
            prop_assert!(items <= g.edge_count() as u64);
        }
    }

    #[test]
    fn hang_groups_are_identical_stacks_of_enough_threads(
        stacks in prop::collection::vec(prop::collection::vec(0..FRAMES.len(), 0..8), 0..40),
        queued in prop::option::of(0..50u64),
    ) {
        let threads: Vec<DumpThread> = stacks
            .iter()
            .enumerate()
            .map(|(i, s)| DumpThread {
                os_tid: 100 + i as u64,
                managed_id: i as u32,
                stack: s.iter().map(|&f| FRAMES[f].to_string()).collect(),
                lock_refs: Vec::new(),
            })
            .collect();
        let t = HangThresholds::default();
        let found = find_hangs(&threads, queued, &t);
        let by_tid: HashMap<u64, &DumpThread> = threads.iter().map(|th| (th.os_tid, th)).collect();
        let mut seen = std::collections::HashSet::new();
        for h in &found {
            prop_assert!(h.kind == HangKind::ThreadPoolStarvation || h.threads.len() >= t.min_threads);
            for th in &h.threads {
                prop_assert!(seen.insert(th.os_tid), "a thread is in one group");
                prop_assert_eq!(&by_tid[&th.os_tid].stack, &h.stack);
            }
            prop_assert!(h.stack.contains(&h.method));
        }
    }

    #[test]
    fn growth_verdicts_only_name_types_that_rose_every_interval(
        counts in prop::collection::vec(prop::collection::vec(0..50_000u64, 4), 1..8),
        k in 1..5usize,
    ) {
        // counts[type][snapshot]
        let snapshots: Vec<HeapSummary> = (0..4)
            .map(|s| HeapSummary {
                taken_at_seconds: 600.0 * s as f64,
                histogram: HeapHistogram::from_types(
                    counts
                        .iter()
                        .enumerate()
                        .map(|(t, c)| TypeStats { type_name: format!("T{t}"), count: c[s], bytes: c[s] * 1000 })
                        .collect(),
                ),
                holders: Default::default(),
            })
            .collect();
        let v = growth_verdicts(&snapshots, &GrowthThresholds { intervals: k, ..GrowthThresholds::default() });
        for verdict in &v {
            let t: usize = verdict.type_name[1..].parse().unwrap();
            let c = &counts[t];
            prop_assert!(k <= 3);
            prop_assert!(c[4 - k..].windows(2).all(|w| w[1] > w[0]));
            prop_assert!(verdict.intervals >= k);
            prop_assert_eq!(verdict.last_count, c[3]);
        }
    }
}
