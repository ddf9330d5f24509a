//! Heaps built from arbitrary bytes, for the fuzz target `heap_walk` and the seeded test that
//! runs the same builder under `cargo test`: a core file whose memory is mostly objects of the
//! layout's types (so the walk gets past the first word), and a [`HeapLayout`] whose ranges,
//! allocation contexts, sizes and reference layouts are sometimes sane and sometimes absurd, as
//! a damaged dump or a subverted worker could send them.

use analysis::heap::{NodeIndex, ObjectGraph, ObjectGraphBuilder};

pub use super::GraphWalk;
use super::{Checkpoint, HeapLayout, Range, TypeLayout, walk_graph_on};
use crate::core::CoreDump;
use crate::elf::testing::core_file;
use crate::error::Result;
use crate::gcdesc::GcDesc;

/// A core file and the layout to walk it with.
#[derive(Clone, Debug)]
pub struct HeapCase {
    /// The core file's bytes.
    pub core: Vec<u8>,
    /// What the worker would have sent, without checkpoints.
    pub layout: HeapLayout,
    /// The checkpoints a second walk gets, in parts.
    pub cut: Cut,
}

/// Which checkpoints the walk in parts gets ([`check_heap_case`]).
#[derive(Clone, Debug)]
pub enum Cut {
    /// None: only the walk in one piece.
    None,
    /// Every `stride`-th object of the walk in one piece, as the worker notes them; `skew`
    /// then spoils one: 0 leaves them true, 1 moves one's address by 8 bytes, 2 its count by
    /// one, 3 the total count by one.
    Every { stride: usize, threads: usize, skew: u8, which: usize },
    /// Anything, with this total.
    Any { checkpoints: Vec<(u64, u64)>, objects: u64, threads: usize },
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

    let threads = 2 + usize::from(input.below(3));
    let cut = match input.below(4) {
        0 => Cut::None,
        1 => Cut::Any {
            checkpoints: (0..input.below(6)).map(|_| (address(&mut input), u64::from(input.below(64)))).collect(),
            objects: u64::from(input.byte()),
            threads,
        },
        _ => Cut::Every {
            stride: 1 + usize::from(input.below(3)),
            threads,
            skew: if input.below(2) == 0 { 0 } else { input.below(4) },
            which: usize::from(input.byte()),
        },
    };
    let layout = HeapLayout { ranges, alloc_contexts, types, ..Default::default() };
    HeapCase { core: core_file(&loads, &[], false), layout, cut }
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

/// Walks `case` as the parent walks a dump, in one piece, and builds the object graph.
/// `Ok(None)`: the core file is not one (the fuzz target for the core reader covers those).
pub fn walk_heap_case(case: &HeapCase) -> Result<Option<(GraphWalk, ObjectGraph)>> {
    walk_with(case, &case.layout, 1)
}

fn walk_with(case: &HeapCase, layout: &HeapLayout, threads: usize) -> Result<Option<(GraphWalk, ObjectGraph)>> {
    let Ok(core) = CoreDump::from_bytes(case.core.clone()) else { return Ok(None) };
    let mut builder = ObjectGraphBuilder::new();
    let walk = walk_graph_on(&core, layout, &mut builder, threads)?;
    Ok(Some((walk, builder.finish()?)))
}

/// The layout of `case` with the checkpoints its [`Cut`] names, taken from `whole` (its
/// walk in one piece) where they are true ones; and whether they are.
fn cut_layout(case: &HeapCase, whole: &ObjectGraph) -> Option<(HeapLayout, usize, bool)> {
    let mut layout = case.layout.clone();
    match case.cut {
        Cut::None => None,
        Cut::Any { ref checkpoints, objects, threads } => {
            layout.checkpoints =
                checkpoints.iter().map(|&(address, objects_before)| Checkpoint { address, objects_before }).collect();
            layout.objects = objects;
            Some((layout, threads, false))
        }
        Cut::Every { stride, threads, skew, which } => {
            layout.objects = whole.len() as u64;
            layout.checkpoints = (0..whole.len())
                .step_by(stride)
                .map(|i| Checkpoint { address: whole.address(NodeIndex(i as u32)), objects_before: i as u64 })
                .collect();
            let count = layout.checkpoints.len();
            match (skew, layout.checkpoints.get_mut(which % count.max(1))) {
                (1, Some(c)) => c.address = c.address.wrapping_add(8),
                (2, Some(c)) => c.objects_before = c.objects_before.wrapping_add(1),
                (3, _) => layout.objects += 1,
                _ => {}
            }
            Some((layout, threads, skew == 0))
        }
    }
}

/// Builds and walks the case `data` describes and checks what any walk must hold: it ends
/// (the fuzzer's timeout), never panics, and adds no more objects and references than the
/// dump's bytes allow (one object per 24 bytes of a range, one reference per 8 bytes of an
/// object), every object once. Then walks it again in parts with the checkpoints of its
/// [`Cut`]: true or spoiled ones must build the very graph the walk in one piece built (spoiled
/// ones by walking again in one piece), any others at least hold the same bounds. Returns how
/// many parts that walk had (0: none was made).
pub fn check_heap_case(data: &[u8]) -> u32 {
    check_case(&heap_case(data))
}

/// [`check_heap_case`] of a case built otherwise.
pub fn check_case(case: &HeapCase) -> u32 {
    let Ok(Some((walk, graph))) = walk_heap_case(case) else { return 0 };
    let present = CoreDump::from_bytes(case.core.clone()).expect("parsed once already").present_bytes();
    let ranges = case.layout.ranges.len() as u64;
    let bounded = |walk: &GraphWalk, graph: &ObjectGraph| {
        assert!(walk.objects <= present / 24 + ranges, "{} objects from {present} bytes", walk.objects);
        assert_eq!(graph.len() as u64, walk.objects, "every object once, in address order");
        assert_eq!(graph.stats().duplicate_nodes, 0);
        assert!(graph.edge_count() as u64 <= present / 8, "{} references from {present} bytes", graph.edge_count());
    };
    bounded(&walk, &graph);
    let Some((layout, threads, _)) = cut_layout(case, &graph) else { return 0 };
    let in_parts = walk_with(case, &layout, threads);
    let Ok(Some((parts_walk, parts_graph))) = in_parts else { panic!("the walk in one piece worked: {in_parts:?}") };
    bounded(&parts_walk, &parts_graph);
    if !matches!(case.cut, Cut::Any { .. }) {
        assert_eq!(parts_walk.objects, walk.objects);
        assert_eq!(parts_walk.cut_references, walk.cut_references);
        let nodes = |g: &ObjectGraph| -> Vec<(u64, u64, String, Vec<u32>)> {
            (0..g.len() as u32)
                .map(NodeIndex)
                .map(|n| (g.address(n), g.size(n), g.type_name(n).to_string(), g.children(n).map(|c| c.0).collect()))
                .collect()
        };
        assert_eq!(nodes(&parts_graph), nodes(&graph), "{:?} in {} parts", case.cut, parts_walk.parts);
    }
    parts_walk.parts
}
