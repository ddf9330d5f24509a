//! Heaps built from arbitrary bytes, for the fuzz target `heap_walk` and the seeded test that
//! runs the same builder under `cargo test`: a core file whose memory is mostly objects of the
//! layout's types (so the walk gets past the first word), and a [`HeapLayout`] whose ranges,
//! allocation contexts, sizes and reference layouts are sometimes sane and sometimes absurd, as
//! a damaged dump or a subverted worker could send them.

use analysis::heap::{ObjectGraph, ObjectGraphBuilder};

pub use super::GraphWalk;
use super::{HeapLayout, Range, TypeLayout, walk_graph};
use crate::core::CoreDump;
use crate::elf::testing::core_file;
use crate::error::Result;
use crate::gcdesc::GcDesc;

/// A core file and the layout to walk it with.
#[derive(Clone, Debug)]
pub struct HeapCase {
    /// The core file's bytes.
    pub core: Vec<u8>,
    /// What the worker would have sent.
    pub layout: HeapLayout,
}

/// The fuzz input, read front to back; zeros once it runs out, so every input builds a case.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        let Some((&b, rest)) = self.0.split_first() else { return 0 };
        self.0 = rest;
        b
    }

    fn below(&mut self, n: u8) -> u8 {
        self.byte() % n
    }

    fn u64(&mut self) -> u64 {
        (0..8).fold(0, |v, i| v | u64::from(self.byte()) << (8 * i))
    }

    fn u32(&mut self) -> u32 {
        (0..4).fold(0, |v, i| v | u32::from(self.byte()) << (8 * i))
    }

    fn u16(&mut self) -> u16 {
        u16::from(self.byte()) | u16::from(self.byte()) << 8
    }
}

/// Builds the case `data` describes.
pub fn heap_case(data: &[u8]) -> HeapCase {
    let mut input = Input(data);
    // Where the heap lies: an ordinary address, the top of the address space (where address
    // arithmetic wraps), low memory, or anywhere.
    let base = match input.below(4) {
        0 => 0x7f00_0000_0000,
        1 => 0u64.wrapping_sub(0x8000),
        2 => 0x1000,
        _ => input.u64() & !7,
    };

    let type_count = 1 + usize::from(input.below(6));
    let types: Vec<TypeLayout> = (0..type_count).map(|i| type_layout(&mut input, i)).collect();

    // Up to three PT_LOADs, some without data (absent memory), with gaps between them.
    let mut loads: Vec<(u64, Vec<u8>, usize)> = Vec::new();
    let mut at = base;
    for _ in 0..1 + input.below(3) {
        let words = usize::from(input.u16() % 400);
        let words = if input.below(8) == 0 { 0 } else { words };
        let mut bytes = Vec::with_capacity(words * 8);
        for _ in 0..words {
            let word = match input.below(8) {
                0..=2 => types[usize::from(input.byte()) % types.len()].method_table | u64::from(input.below(2)),
                3 => u64::from(input.byte()),
                4 => base.wrapping_add(8 * u64::from(input.u16() % 1024)),
                5 => 0,
                6 => input.u64(),
                _ => u64::from(input.u32()),
            };
            bytes.extend_from_slice(&word.to_le_bytes());
        }
        let memsz = bytes.len() + usize::from(input.below(2)) * 4096;
        let Some(end) = at.checked_add(memsz as u64) else { break };
        loads.push((at, bytes, memsz));
        let gap = match input.below(3) {
            0 => 0,
            1 => 4096,
            _ => u64::from(input.u16()) * 8,
        };
        let Some(next) = end.checked_add(gap) else { break };
        at = next;
    }
    let top = at;

    let address = |input: &mut Input| match input.below(5) {
        0 => base.wrapping_add(8 * u64::from(input.u16() % 2048)),
        1 => base.wrapping_add(u64::from(input.u16() % 16384)),
        2 => top,
        3 => base,
        _ => input.u64(),
    };
    // Mostly ranges as the worker finds them (one per load, maybe cut short), else anything.
    let sane = input.below(3) != 0;
    let mut ranges: Vec<Range> = if sane {
        let mut ranges = Vec::new();
        for (vaddr, bytes, _) in &loads {
            let cut = 8 * u64::from(input.below(4));
            let end = vaddr + (bytes.len() as u64).saturating_sub(cut);
            if end > *vaddr {
                ranges.push(Range { start: *vaddr, end, large: input.below(4) == 0 });
            }
        }
        ranges
    } else {
        (0..input.below(5))
            .map(|_| {
                let start = address(&mut input);
                let end = match input.below(4) {
                    0 => start.wrapping_add(8 * u64::from(input.u16())),
                    1 => top,
                    2 => address(&mut input),
                    _ => start.wrapping_add(u64::from(input.byte())),
                };
                Range { start, end, large: input.below(2) == 0 }
            })
            .collect()
    };
    // The worker sorts its ranges; a hostile one need not.
    if input.below(4) != 0 {
        ranges.sort_by_key(|r| r.start);
    }
    let alloc_contexts = (0..input.below(4))
        .map(|_| {
            let ptr = address(&mut input);
            let limit = match input.below(3) {
                0 => ptr.wrapping_add(8 * u64::from(input.byte())),
                1 => address(&mut input),
                _ => input.u64(),
            };
            (ptr, limit)
        })
        .collect();

    HeapCase { core: core_file(&loads, &[], false), layout: HeapLayout { ranges, alloc_contexts, types } }
}

/// The `i`-th type of a case: its MethodTable is an address no load holds (the parent's walk
/// never reads a MethodTable), its sizes and reference layout anything from real to absurd.
fn type_layout(input: &mut Input, i: usize) -> TypeLayout {
    let method_table = match input.below(8) {
        0 => input.u64() & !7,
        _ => 0x5000_0000 + 0x40 * i as u64,
    };
    let base_size = match input.below(5) {
        0 => 24,
        1 => 12 + 8 * u32::from(input.below(8)),
        2 => 0,
        3 => input.u32(),
        _ => 16,
    };
    let component_size = match input.below(5) {
        0 => 0,
        1 => 2,
        2 => 8,
        3 => 1,
        _ => input.u32(),
    };
    let small = |input: &mut Input| i64::from(input.byte()) * 8 - 64;
    let any = |input: &mut Input| input.u64() as i64;
    let references = match input.below(4) {
        0 => None,
        1 => Some(GcDesc::Series(
            (0..1 + input.below(4))
                .map(|_| match input.below(3) {
                    0 => (8, small(input) - i64::from(base_size)),
                    1 => (small(input), small(input)),
                    _ => (any(input), any(input)),
                })
                .collect(),
        )),
        2 => {
            let start = if input.below(2) == 0 { 16 } else { any(input) };
            let items = (0..input.below(4))
                .map(|_| match input.below(2) {
                    0 => (i64::from(input.below(4)), i64::from(input.below(4)) * 8),
                    _ => (i64::from(input.u32()), i64::from(input.u32())),
                })
                .collect();
            Some(GcDesc::Repeating { start, items })
        }
        _ => Some(GcDesc::Series(vec![(8, -i64::from(base_size) + 8 * i64::from(input.below(4)))])),
    };
    TypeLayout {
        method_table,
        base_size,
        component_size,
        is_string: input.below(8) == 0,
        is_free: input.below(8) == 0,
        references,
    }
}

/// Walks `case` as the parent walks a dump and builds the object graph. `Ok(None)`: the core
/// file is not one (the fuzz target for the core reader covers those).
pub fn walk_heap_case(case: &HeapCase) -> Result<Option<(GraphWalk, ObjectGraph)>> {
    let Ok(core) = CoreDump::from_bytes(case.core.clone()) else { return Ok(None) };
    let mut builder = ObjectGraphBuilder::new();
    let walk = walk_graph(&core, &case.layout, &mut builder)?;
    Ok(Some((walk, builder.finish()?)))
}

/// Builds and walks the case `data` describes and checks what any walk must hold: it ends
/// (the fuzzer's timeout), never panics, and adds no more objects and references than the
/// dump's bytes allow (one object per 24 bytes of a range, one reference per 8 bytes of an
/// object), every object once.
pub fn check_heap_case(data: &[u8]) {
    let case = heap_case(data);
    let Ok(Some((walk, graph))) = walk_heap_case(&case) else { return };
    let present = CoreDump::from_bytes(case.core.clone()).expect("parsed once already").present_bytes();
    let ranges = case.layout.ranges.len() as u64;
    assert!(walk.objects <= present / 24 + ranges, "{} objects from {present} bytes", walk.objects);
    assert_eq!(graph.len() as u64, walk.objects, "every object once, in address order");
    assert_eq!(graph.stats().duplicate_nodes, 0);
    assert!(graph.edge_count() as u64 <= present / 8, "{} references from {present} bytes", graph.edge_count());
}
