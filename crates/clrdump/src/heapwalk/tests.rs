//! The parent's walk on hostile input: the seeded run of the fuzz target's builder, and one
//! test per way a dump or layout could make the walk panic, hang or allocate without bound.

use analysis::heap::ObjectGraph;

use super::testing::{GraphWalk, HeapCase, check_heap_case, heap_case, walk_heap_case};
use super::{HeapLayout, Range, TypeLayout};
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
    let mut walked = 0;
    for _ in 0..4000 {
        let len = (next() % 3000) as usize;
        let data: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        check_heap_case(&data);
        walked += u32::from(matches!(walk_heap_case(&heap_case(&data)), Ok(Some((w, _))) if w.objects > 0));
    }
    // Not a vacuous run: a good share of the inputs reach objects.
    assert!(walked > 400, "only {walked} of 4000 cases walked any object");
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
        },
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
