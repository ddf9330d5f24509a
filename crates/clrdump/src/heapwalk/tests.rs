//! The parent's walk on hostile input: the seeded run of the fuzz target's builder, and one
//! test per way a dump or layout could make the walk panic, hang or allocate without bound.

use analysis::heap::ObjectGraph;

use super::testing::{Cut, GraphWalk, HeapCase, check_case, check_heap_case, heap_case, walk_heap_case};
use super::{Checkpoint, HeapLayout, Range, TypeLayout};
use crate::core::CoreDump;
use crate::elf::testing::core_file;
use crate::error::{Error, Result};
use crate::gcdesc::GcDesc;

/// The fuzz target's builder over a few thousand pseudo-random inputs (xorshift, fixed
/// seed), so `cargo test` covers what `fuzz/fuzz_targets/heap_walk.rs` explores.
#[test]
fn hostile_layouts_and_dumps_never_panic_nor_exceed_the_dump() {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let (mut walked, mut in_parts) = (0, 0);
    for _ in 0..4000 {
        let len = (next() % 3000) as usize;
        let data: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        in_parts += u32::from(check_heap_case(&data) >= 2);
        walked += u32::from(matches!(walk_heap_case(&heap_case(&data)), Ok(Some((w, _))) if w.objects > 0));
    }
    // Not a vacuous run: a good share of the inputs reach objects, and of those many are
    // walked in parts too (and so compared with the walk in one piece).
    assert!(walked > 400, "only {walked} of 4000 cases walked any object");
    assert!(in_parts > 40, "only {in_parts} of 4000 cases walked in parts");
}

const MT: u64 = 0x5000_0000;
/// The highest place a load can end (its end must not wrap).
const TOP: u64 = 0u64.wrapping_sub(0x1000);

fn ty(base_size: u32, component_size: u32, references: Option<GcDesc>) -> TypeLayout {
    TypeLayout { method_table: MT, base_size, component_size, is_string: false, is_free: false, references }
}

fn words(w: &[u64]) -> Vec<u8> {
    w.iter().flat_map(|w| w.to_le_bytes()).collect()
}

/// Walks `memory` at `base` with one type and the given ranges (`None`: one range over it all).
fn walk(
    base: u64,
    memory: &[u64],
    ranges: Option<Vec<(u64, u64)>>,
    alloc_contexts: Vec<(u64, u64)>,
    t: TypeLayout,
) -> Result<(GraphWalk, ObjectGraph)> {
    let end = base + 8 * memory.len() as u64;
    let ranges = ranges.unwrap_or(vec![(base, end)]);
    let case = HeapCase {
        core: core_file(&[(base, words(memory), memory.len() * 8)], &[], false),
        layout: HeapLayout {
            ranges: ranges.into_iter().map(|(start, end)| Range { start, end, large: false }).collect(),
            alloc_contexts,
            types: vec![t],
            ..Default::default()
        },
        cut: Cut::None,
    };
    Ok(walk_heap_case(&case)?.expect("a core"))
}

#[test]
fn reversed_repeated_or_overlapping_ranges_are_errors_not_repeated_walks() {
    let base = 0x7f00_0000_0000;
    let memory = [MT, 0, 0, MT, 0, 0, MT, 0];
    let t = || ty(24, 0, None);
    let (ok, _) = walk(base, &memory, None, vec![], t()).unwrap();
    assert_eq!(ok.objects, 3);
    for ranges in [
        vec![(base + 64, base)],
        vec![(base, base)],
        vec![(base, base + 64), (base, base + 64), (base, base + 64)],
        vec![(base, base + 48), (base + 24, base + 64)],
        vec![(base + 24, base + 64), (base, base + 24)],
    ] {
        let err = walk(base, &memory, Some(ranges.clone()), vec![], t()).map(|(w, _)| w.objects);
        assert!(matches!(err, Err(Error::Heap(_))), "{ranges:x?}: {err:?}");
    }
}

#[test]
fn absurd_sizes_at_the_top_of_the_address_space_end_the_range() {
    // A string-like type of the largest base and element sizes and the largest count: its
    // size is past u64 (rounding it up wrapped), and its end is past the top of memory
    // (adding it to the address wrapped).
    let mut t = ty(u32::MAX, u32::MAX, None);
    t.is_string = true;
    let (w, graph) = walk(TOP - 64, &[MT, u64::from(u32::MAX), 0, 0, MT, 0, 0, 0], None, vec![], t).unwrap();
    assert_eq!(w.objects, 1, "the first object covers the rest of memory");
    assert_eq!(graph.size(analysis::heap::NodeIndex(0)), 0xffff_ffff_ffff_fff8, "its size saturates");
    // An object of 24 bytes right at the top: the next one would start past u64::MAX.
    let (w, _) = walk(TOP - 24, &[MT, 0, 0], None, vec![], ty(24, 0, None)).unwrap();
    assert_eq!(w.objects, 1);
}

#[test]
fn gcdescs_with_wild_offsets_or_endless_runs_are_cut_at_one_reference_per_slot() {
    let base = 0x7f00_0000_0000;
    let memory = [MT, 0x11, 0x22, 0x33];
    // A run from i64::MIN (2^60 steps of 8 before reaching the object) and one to i64::MAX.
    let desc = GcDesc::Series(vec![(i64::MIN, i64::MAX)]);
    let (w, graph) = walk(base, &memory, None, vec![], ty(32, 0, Some(desc))).unwrap();
    assert_eq!((w.objects, w.cut_references), (1, 0));
    assert_eq!(graph.stats().dropped_edges, 4, "every word of the object, none an object");
    // Ten thousand runs over the same slots.
    let desc = GcDesc::Series(vec![(8, 0); 10_000]);
    let (w, graph) = walk(base, &memory, None, vec![], ty(32, 0, Some(desc))).unwrap();
    assert_eq!(w.cut_references, 1);
    assert!(graph.stats().dropped_edges <= 4);
    // Repeating items from i64::MIN, and items that never advance.
    for desc in [
        GcDesc::Repeating { start: i64::MIN, items: vec![(1, 0)] },
        GcDesc::Repeating { start: 8, items: vec![(0, 0); 10_000] },
        GcDesc::Repeating { start: 8, items: vec![(i64::from(u32::MAX), i64::from(u32::MAX)); 3] },
    ] {
        let (w, graph) = walk(base, &memory, None, vec![], ty(32, 0, Some(desc.clone()))).unwrap();
        assert_eq!(w.objects, 1, "{desc:?}");
        assert!(graph.stats().dropped_edges <= 4, "{desc:?}");
    }
}

#[test]
fn overlapping_allocation_contexts_are_skipped_as_their_union() {
    let base = 0x7f00_0000_0000;
    // Objects at 0, 24 | context 48..96 and 64..120 (+24 gap) | object at 144.
    let mut memory = vec![0u64; 21];
    for at in [0, 3, 18] {
        memory[at] = MT;
    }
    memory[6] = MT; // inside the contexts: not an object
    let contexts = vec![(base + 64, base + 120), (base + 48, base + 96), (0, 10), (base + 200, base + 100)];
    let (w, graph) = walk(base, &memory, None, contexts, ty(24, 0, None)).unwrap();
    assert_eq!(w.objects, 3);
    let addresses: Vec<u64> = (0..graph.len()).map(|i| graph.address(analysis::heap::NodeIndex(i as u32))).collect();
    assert_eq!(addresses, [base, base + 24, base + 144]);
    // Many contexts cost a lookup each, not a scan: a million of them over a small heap.
    let many: Vec<(u64, u64)> = (0..1_000_000u64).map(|i| (0x1000 + 64 * i, 0x1000 + 64 * i + 8)).collect();
    let (w, _) = walk(base, &memory, None, many, ty(24, 0, None)).unwrap();
    assert_eq!(w.objects, 4);
}

/// What `heap_walk` found in the walk as it was before these checks (run against it on
/// purpose, each crash fixed there to find the next), kept as inputs of the fuzz target's builder:
/// a reversed range (`end - start` wrapped), the same with the release of walked pages, an
/// object at the top of memory (`address + size` wrapped), and repeated ranges (every object
/// walked, and added to the graph, twice).
#[test]
fn inputs_that_crashed_the_unchecked_walk_stay_fixed() {
    let crashes: [&[u8]; 4] = [
        &[
            0xd2, 0x24, 0x3b, 0x75, 0x05, 0x00, 0x00, 0x00, 0x21, 0x00, 0x00, 0x26, 0x01, 0xc6, 0x00, 0x75, 0x75, 0xd2,
            0x28,
        ],
        &[
            0x01, 0x00, 0x09, 0x00, 0x01, 0x00, 0x01, 0x00, 0x09, 0x01, 0x00, 0x27, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00,
            0x09, 0x00, 0x00, 0x00, 0x3c, 0x3c, 0x3c, 0x27, 0xd2, 0x24, 0x6e, 0x00, 0xff, 0xff, 0x00, 0x27, 0x30, 0x7f,
        ],
        &[
            0x01, 0x00, 0x09, 0x00, 0x01, 0x00, 0x09, 0x00, 0x00, 0x04, 0x64, 0x0c, 0x78, 0x8b, 0xb6, 0xa7, 0x32, 0x1d,
            0x00, 0x10, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x7c, 0x7c, 0x7c, 0x09, 0x6e, 0x00, 0x00, 0x32,
            0x1d, 0x00, 0x7c, 0x7c, 0x7f,
        ],
        &[
            0x68, 0x00, 0xff, 0xff, 0x00, 0xff, 0xff, 0xff, 0xff, 0x05, 0x01, 0x00, 0x01, 0x01, 0x00, 0x28, 0x00, 0x00,
            0x20, 0x0a, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x04, 0x00, 0x27, 0x3d, 0x3d, 0x3d, 0x3d,
            0x3d, 0x3d, 0x33, 0x3d, 0x3d, 0x00, 0x00, 0x20, 0x85, 0x85, 0x85, 0x85, 0x85, 0x85, 0x85, 0x85, 0x85, 0x85,
            0x85, 0x0a, 0x00,
        ],
    ];
    for (i, data) in crashes.iter().enumerate() {
        check_heap_case(data);
        let case = heap_case(data);
        assert!(CoreDump::from_bytes(case.core.clone()).is_ok(), "crash {i} builds a core");
    }
    // The reversed and the repeated ranges are refused as such.
    for data in [crashes[0], crashes[3]] {
        assert!(matches!(walk_heap_case(&heap_case(data)), Err(Error::Heap(_))));
    }
}

/// A heap of every kind of thing a walk meets (objects with and without references, arrays,
/// free space, words that are no object, an allocation context, three ranges) walked in parts
/// cut at every checkpoint stride the worker could have used, on 2 to 5 threads: the graph is
/// the one the walk in one piece builds.
#[test]
fn walks_in_parts_build_what_one_walk_builds() {
    const NODE: u64 = MT;
    const ARRAY: u64 = MT + 0x40;
    const FREE: u64 = MT + 0x80;
    let base = 0x7f00_0000_0000u64;
    let mut heap: Vec<u64> = Vec::new();
    let mut objects: Vec<u64> = Vec::new();
    let mut x = 0x9e37_79b9u64;
    let mut ranges = Vec::new();
    let mut range_start = base;
    for i in 0..3000u64 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let at = base + 8 * heap.len() as u64;
        // Mostly an object met before (or this one), else any word.
        let earlier = |k: u64| match objects.len() as u64 {
            0 => at,
            n if !(x >> (20 + k)).is_multiple_of(8) => objects[((x >> (8 + k)) % n) as usize],
            _ => base + 8 * ((x >> (8 + k)) % (at - base + 8)),
        };
        match x % 10 {
            // A node: MethodTable, a reference, a number.
            0..=5 => heap.extend([NODE, earlier(0), i]),
            // An array of 0-3 references.
            6 | 7 => {
                let n = (x >> 4) % 4;
                heap.extend([ARRAY, n]);
                heap.extend((0..n).map(earlier));
                heap.push(0);
            }
            // Free space of 3-5 words.
            8 => {
                let n = 3 + (x >> 4) % 3;
                heap.extend([FREE, (n - 3) * 8, 0]);
                heap.extend(std::iter::repeat_n(0, (n - 3) as usize));
            }
            // A word that is no object (the walk resynchronizes).
            _ => heap.push(0x1234_5678),
        }
        if x % 10 < 8 {
            objects.push(at);
        }
        if i == 1000 || i == 2000 {
            let end = base + 8 * heap.len() as u64;
            ranges.push(Range { start: range_start, end, large: false });
            heap.extend([0; 64]);
            range_start = base + 8 * heap.len() as u64;
        }
    }
    ranges.push(Range { start: range_start, end: base + 8 * heap.len() as u64, large: false });
    let node = |base_size| TypeLayout {
        method_table: NODE,
        base_size,
        component_size: 0,
        is_string: false,
        is_free: false,
        references: Some(GcDesc::Series(vec![(8, 8 - i64::from(base_size))])),
    };
    let array = TypeLayout {
        method_table: ARRAY,
        base_size: 24,
        component_size: 8,
        is_string: false,
        is_free: false,
        references: Some(GcDesc::Repeating { start: 16, items: vec![(1, 0)] }),
    };
    let free = TypeLayout { method_table: FREE, is_free: true, component_size: 1, ..array.clone() };
    // An allocation context inside the second range.
    let context = ranges[1].start + 800;
    let case = HeapCase {
        core: core_file(&[(base, words(&heap), heap.len() * 8)], &[], false),
        layout: HeapLayout {
            ranges,
            alloc_contexts: vec![(context, context + 400)],
            types: vec![node(24), array, free],
            ..Default::default()
        },
        cut: Cut::None,
    };
    let (whole_walk, whole) = walk_heap_case(&case).unwrap().unwrap();
    assert!(whole.len() > 2000 && whole.edge_count() > 2000, "{} objects", whole.len());
    for stride in [1, 2, 7, 100, 999, 5000] {
        for threads in 2..=5 {
            let parts = check_cut(&case, Cut::Every { stride, threads, skew: 0, which: 0 });
            let expected = if stride >= whole.len() { 1 } else { threads.min(whole.len().div_ceil(stride)) };
            assert_eq!(parts as usize, expected, "stride {stride}, {threads} threads");
            // One spoiled checkpoint: the same graph, walked again in one piece.
            for skew in 1..=3 {
                for which in [0, 1, 5] {
                    let parts = check_cut(&case, Cut::Every { stride, threads, skew, which });
                    assert!(parts >= 1, "stride {stride}, {threads} threads, skew {skew}");
                }
            }
        }
    }
    assert_eq!(whole_walk.parts, 1);
}

fn check_cut(case: &HeapCase, cut: Cut) -> u32 {
    check_case(&HeapCase { cut, ..case.clone() })
}

/// A checkpoint inside an object, on a word that looks like a MethodTable, with the count of
/// objects before it right: the part before it ends past it, the part from it meets an object
/// that is none and, by chance, as many objects as there are. Only where the first part ended
/// tells: the heap is walked again in one piece.
#[test]
fn a_part_that_ends_past_its_checkpoint_is_walked_again() {
    let base = 0x7f00_0000_0000u64;
    // A holds a word equal to the MethodTable; the fake object there ends on B's second
    // word, zeros resynchronize the walk on C.
    let heap = [MT, MT, 1, MT, 0, 0, MT, 0, 2];
    let node = ty(24, 0, Some(GcDesc::Series(vec![(8, -16)])));
    let mut layout = HeapLayout {
        ranges: vec![Range { start: base, end: base + 8 * heap.len() as u64, large: false }],
        types: vec![node],
        objects: 3,
        checkpoints: vec![
            Checkpoint { address: base, objects_before: 0 },
            Checkpoint { address: base + 8, objects_before: 1 },
        ],
        ..Default::default()
    };
    let core = CoreDump::from_bytes(core_file(&[(base, words(&heap), heap.len() * 8)], &[], false)).unwrap();
    let walk = |layout: &HeapLayout| {
        let mut builder = analysis::heap::ObjectGraphBuilder::new();
        let walk = super::walk_graph_on(&core, layout, &mut builder, 2).unwrap();
        let graph = builder.finish().unwrap();
        (walk.parts, (0..graph.len() as u32).map(|n| graph.address(analysis::heap::NodeIndex(n))).collect::<Vec<_>>())
    };
    let true_objects = vec![base, base + 24, base + 48];
    assert_eq!(walk(&layout), (1, true_objects.clone()));
    // The true checkpoint of B: two parts.
    layout.checkpoints[1].address = base + 24;
    assert_eq!(walk(&layout), (2, true_objects));
}
