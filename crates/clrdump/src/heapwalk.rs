//! The GC heap walk: segments (3.1) or regions (.NET 7+) from the DAC, objects read straight
//! from the mapped dump, sizes from the DAC's MethodTable data, references from the GCDesc
//! stored just below each MethodTable (both cached per type).
//!
//! The DAC worker walks once for the histogram and records, per type, what a walk needs
//! ([`HeapLayout`]); for the object graph the parent walks the mapped dump a second time
//! with that layout and no DAC ([`walk_graph`]), on its side of the process boundary.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use analysis::heap::ObjectGraphBuilder;

use crate::core::{CoreDump, DumpMemory};
use crate::dac::{Dac, GenerationData};
use crate::error::{Error, Result};
use crate::gcdesc::GcDesc;
use crate::model::{HeapStats, HeapType};

mod parts;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

const MIN_OBJECT_SIZE: u64 = 24;

/// The delegate type of timers' callbacks, as the DAC names it.
const TIMER_CALLBACK: &str = "System.Threading.TimerCallback";
/// Where a delegate keeps its code pointers (`System.Delegate._methodPtr`, `_methodPtrAux`):
/// after the MethodTable and its two references `_target` and `_methodBase`, on 3.1 and 8.
const DELEGATE_METHOD_PTR: usize = 24;
const DELEGATE_METHOD_PTR_AUX: usize = 32;

/// One address range of objects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Range {
    start: u64,
    end: u64,
    /// LOH / POH / frozen: allocation contexts never live there.
    large: bool,
}

/// What the walk needs to know about a MethodTable.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TypeInfo {
    /// Position in the histogram.
    index: u32,
    base_size: u32,
    component_size: u32,
    is_string: bool,
    is_free: bool,
    /// `System.Threading.TimerCallback`: the worker notes what each one calls.
    is_timer_callback: bool,
}

/// One type's size rule and reference layout, as the worker found them through the DAC.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct TypeLayout {
    method_table: u64,
    base_size: u32,
    component_size: u32,
    is_string: bool,
    is_free: bool,
    references: Option<GcDesc>,
}

/// Everything a second heap walk needs, without the DAC: the object ranges, the allocation
/// contexts to skip, and per type (in histogram order) its size rule and reference layout.
/// The worker sends it; the parent then walks the mapped dump itself to build the object
/// graph, instead of receiving every object and reference through a pipe (which cost more
/// CPU, on both ends, than the walk).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeapLayout {
    ranges: Vec<Range>,
    alloc_contexts: Vec<(u64, u64)>,
    types: Vec<TypeLayout>,
    /// Objects the worker's walk met.
    #[serde(default)]
    objects: u64,
    /// Objects of the worker's walk about [`checkpoint_every`] bytes apart, where walks of
    /// parts of the heap can start ([`parts`]).
    #[serde(default)]
    checkpoints: Vec<Checkpoint>,
}

/// An object a walk met, and how many objects it met before.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Checkpoint {
    address: u64,
    objects_before: u64,
}

/// How far apart the worker notes [`Checkpoint`]s on a heap of `bytes`: about 500 of them, so
/// that parts can be cut about equal for any number of threads, but none closer than 64 KiB.
fn checkpoint_every(bytes: u64) -> u64 {
    (bytes / 512).max(64 << 10)
}

impl HeapLayout {
    /// Appends the non-null references of an object of type `info` (its `bytes`) to `out`;
    /// `false` when its type's reference layout does not fit it and they were cut short.
    fn read_references(&self, info: TypeInfo, bytes: &[u8], out: &mut Vec<u64>) -> bool {
        self.types[info.index as usize].references.as_ref().is_none_or(|desc| desc.references(bytes, out))
    }

    /// Bounds on what a worker may send: as many type layouts as histogram types, ranges and
    /// allocation contexts in the millions at most, ranges that do not wrap. (Addresses need no
    /// check: the walk reads them through the dump's bounds-checked slices.)
    pub(crate) fn check_counts(&self, types: usize) -> std::result::Result<(), String> {
        if self.types.len() > types {
            return Err(format!("{} type layouts for {types} types", self.types.len()));
        }
        if self.ranges.len() > 1 << 24 || self.alloc_contexts.len() > 1 << 24 || self.checkpoints.len() > 1 << 24 {
            return Err(format!(
                "{} heap ranges, {} allocation contexts, {} checkpoints",
                self.ranges.len(),
                self.alloc_contexts.len(),
                self.checkpoints.len()
            ));
        }
        if let Some(r) = self.ranges.iter().find(|r| r.end < r.start) {
            return Err(format!("a heap range ends ({:#x}) before it starts ({:#x})", r.end, r.start));
        }
        Ok(())
    }
}

/// How the walk finds a MethodTable's [`TypeInfo`].
trait TypeLookup {
    /// `None`: not a MethodTable (the walk resynchronizes).
    fn type_info(&mut self, mt: u64) -> Option<TypeInfo>;
}

/// Counts of one walk.
#[derive(Debug, Default)]
struct WalkCounts {
    walked_bytes: u64,
    resyncs: u64,
    free_objects: u64,
    free_bytes: u64,
}

/// Where a walk starts and stops: from the object at `from` (the first range's start for 0)
/// up to the object at `to`, which it does not visit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Span {
    from: u64,
    to: u64,
}

impl Span {
    /// The whole heap.
    pub(crate) const ALL: Span = Span { from: 0, to: u64::MAX };
}

/// Walks every object of `ranges` in `span` in address order, calling `each(address, size,
/// type, object bytes)` for every object that is not free space. Returns whether the walk
/// started and stopped where `span` says: on an object's first byte at `span.from` (or a
/// range's start) and on one exactly at `span.to` (or at the end, for [`Span::ALL`]). A span
/// cut between two objects of a previous walk of the same ranges always does; a span from
/// elsewhere may not.
///
/// The parent runs this on a dump and a layout it cannot trust (the worker read both from
/// the dump): whatever they say, it must end, in time and memory bounded by the bytes the
/// dump holds. So it works in offsets inside each range's bytes (no address arithmetic that
/// can wrap), every step advances at least 8 bytes, and the ranges must be sorted and
/// disjoint (else the same bytes could be walked any number of times).
fn walk_objects(
    memory: DumpMemory<'_>,
    ranges: &[Range],
    alloc_contexts: &[(u64, u64)],
    types: &mut impl TypeLookup,
    counts: &mut WalkCounts,
    span: Span,
    mut each: impl FnMut(u64, u64, TypeInfo, &[u8]) -> Result<()>,
) -> Result<bool> {
    let alloc_contexts = AllocContexts::new(alloc_contexts);
    // A few types make up most objects, often interleaved (a node and its item): a small
    // direct-mapped cache in front of the lookup saves a hash per object.
    let mut recent: [Option<(u64, TypeInfo)>; 64] = [None; 64];
    let mut previous_end = 0u64;
    let mut started = false;
    for range in ranges {
        let Some(len) = range.end.checked_sub(range.start).filter(|&len| len > 0) else {
            return Err(Error::Heap(format!("object range {:#x}..{:#x} is empty or reversed", range.start, range.end)));
        };
        if range.start < previous_end {
            return Err(Error::Heap(format!(
                "object range {:#x}..{:#x} is out of order or overlaps the one before it",
                range.start, range.end
            )));
        }
        previous_end = range.end;
        if range.end <= span.from {
            continue;
        }
        // Where in this range the span starts: a `from` between ranges is no object.
        let mut off = 0usize;
        if !started {
            started = true;
            if span.from > range.start {
                off = (span.from - range.start) as usize;
            } else if span.from != 0 && span.from != range.start {
                return Ok(false);
            }
        }
        if range.start >= span.to {
            return Ok(range.start == span.to);
        }
        let Some(bytes) = memory.slice(range.start, len) else {
            counts.resyncs += 1;
            continue;
        };
        counts.walked_bytes = counts.walked_bytes.saturating_add(len);
        // Offsets in `bytes`; `range.start + off` cannot wrap since `off <= len`.
        let mut released = off;
        while bytes.len() - off >= 8 {
            let obj = range.start + off as u64;
            if obj >= span.to {
                memory.release(range.start + released as u64, (off - released) as u64);
                return Ok(obj == span.to);
            }
            if (off - released) as u64 >= RELEASE_EVERY {
                memory.release(range.start + released as u64, (off - released) as u64);
                released = off;
            }
            if !range.large
                && let Some(next) = alloc_contexts.skip(obj)
            {
                // `next > obj`: the walk moves on (or leaves the range).
                match next.checked_sub(range.start).and_then(|n| usize::try_from(n).ok()) {
                    Some(n) if n < bytes.len() => off = n,
                    _ => break,
                }
                continue;
            }
            let mt = u64::from_le_bytes(bytes[off..off + 8].try_into().expect("8 bytes")) & !7;
            let slot = (mt >> 3) as usize % recent.len();
            let info = match recent[slot] {
                Some((cached, info)) if cached == mt => Some(info),
                _ if mt == 0 => None,
                _ => types.type_info(mt),
            };
            let Some(info) = info else {
                // Not an object: damaged heap or an allocation gap we did not know about.
                // Resynchronize on the next pointer-aligned word.
                counts.resyncs += 1;
                off += 8;
                continue;
            };
            recent[slot] = Some((mt, info));
            let size = object_size(info, bytes.get(off + 8..off + 12));
            if info.is_free {
                counts.free_objects += 1;
                counts.free_bytes = counts.free_bytes.saturating_add(size);
            } else {
                let end = usize::try_from(size).map_or(bytes.len(), |size| off.saturating_add(size).min(bytes.len()));
                each(obj, size, info, &bytes[off..end])?;
            }
            // Objects are at least 24 bytes: the walk always advances.
            match usize::try_from(size).ok().and_then(|size| off.checked_add(size)) {
                Some(next) if next < bytes.len() => off = next,
                _ => break,
            }
        }
        memory.release(range.start + released as u64, len - released as u64);
    }
    Ok(started && span.to == u64::MAX)
}

/// An object's size in bytes: its type's base size plus, for arrays and strings, the element
/// count (the u32 after the MethodTable, `count_bytes`) times the element size; rounded up to
/// 8 bytes and at least [`MIN_OBJECT_SIZE`]. Saturates instead of wrapping on absurd counts.
fn object_size(info: TypeInfo, count_bytes: Option<&[u8]>) -> u64 {
    let mut size = u64::from(info.base_size);
    if info.component_size != 0 {
        let count = count_bytes.and_then(|b| b.try_into().ok()).map_or(0, u32::from_le_bytes);
        // The DAC reports String's base size minus its terminating char.
        let count = u64::from(count) + u64::from(info.is_string);
        size = size.saturating_add(count.saturating_mul(u64::from(info.component_size)));
    }
    (size.saturating_add(7) & !7).max(MIN_OBJECT_SIZE)
}

/// How much of the dump a walk reads before it lets go of what it has read (see
/// [`CoreDump::release`]): each thread of a walk in parts holds this much at most.
const RELEASE_EVERY: u64 = 16 << 20;

/// The threads' allocation contexts `[ptr, limit)`, merged and sorted: each object looks
/// itself up, so a list scanned per object would make the walk quadratic in a layout that
/// names many.
struct AllocContexts(Vec<(u64, u64)>);

impl AllocContexts {
    fn new(contexts: &[(u64, u64)]) -> Self {
        let mut sorted: Vec<(u64, u64)> = contexts.iter().copied().filter(|&(p, l)| p != 0 && p < l).collect();
        sorted.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(sorted.len());
        for (p, l) in sorted {
            match merged.last_mut() {
                Some(last) if p <= last.1 => last.1 = last.1.max(l),
                _ => merged.push((p, l)),
            }
        }
        AllocContexts(merged)
    }

    /// If `obj` lies in an allocation context, the first address after it (past the gap the
    /// runtime leaves at its limit).
    fn skip(&self, obj: u64) -> Option<u64> {
        let i = self.0.partition_point(|&(p, _)| p <= obj);
        let &(_, limit) = self.0.get(i.checked_sub(1)?)?;
        (obj < limit).then(|| limit.saturating_add(MIN_OBJECT_SIZE))
    }
}

/// Types found through the DAC as the walk meets them.
struct DacTypes<'a> {
    dac: &'a Dac,
    core: &'a CoreDump,
    free_mt: u64,
    string_mt: u64,
    types: HashMap<u64, Option<TypeInfo>>,
    /// Per `TypeInfo::index`.
    layouts: Vec<TypeLayout>,
    /// The histogram, indexed by `TypeInfo::index`.
    out_types: Vec<HeapType>,
}

impl TypeLookup for DacTypes<'_> {
    fn type_info(&mut self, mt: u64) -> Option<TypeInfo> {
        if let Some(t) = self.types.get(&mt) {
            return *t;
        }
        let info = self.dac.method_table(mt).ok().filter(|d| d.base_size >= 12).map(|d| {
            let index = self.out_types.len() as u32;
            let name = if mt == self.free_mt {
                "Free".to_string()
            } else {
                self.dac.method_table_name(mt).unwrap_or_else(|_| format!("<unknown type {mt:#x}>"))
            };
            self.out_types.push(HeapType { method_table: mt, name, count: 0, bytes: 0 });
            let references = if d.contains_pointers != 0 { GcDesc::read(mt, |a| self.core.u64_at(a)) } else { None };
            let info = TypeInfo {
                index,
                base_size: d.base_size,
                component_size: d.component_size,
                is_string: mt == self.string_mt,
                is_free: mt == self.free_mt,
                is_timer_callback: self.out_types[index as usize].name == TIMER_CALLBACK,
            };
            self.layouts.push(TypeLayout {
                method_table: mt,
                base_size: info.base_size,
                component_size: info.component_size,
                is_string: info.is_string,
                is_free: info.is_free,
                references,
            });
            info
        });
        self.types.insert(mt, info);
        info
    }
}

/// Walks every object through the DAC for the histogram, and keeps what a second walk needs
/// ([`HeapWalker::layout`]).
pub struct HeapWalker<'a> {
    types: DacTypes<'a>,
    /// Figures.
    pub stats: HeapStats,
    alloc_contexts: Vec<(u64, u64)>,
    ranges: Vec<Range>,
    /// Every timer callback met: `(address, _methodPtr, _methodPtrAux)`.
    timer_callbacks: Vec<(u64, u64, u64)>,
    checkpoints: Vec<Checkpoint>,
}

impl<'a> HeapWalker<'a> {
    /// Prepares a walk; `alloc_contexts` are the threads' `[ptr, limit)` ranges.
    pub fn new(dac: &'a Dac, core: &'a CoreDump, mut alloc_contexts: Vec<(u64, u64)>) -> Result<Self> {
        let globals = dac.useful_globals()?;
        if let Some(g) = dac.global_alloc_context() {
            alloc_contexts.push(g);
        }
        Ok(HeapWalker {
            types: DacTypes {
                dac,
                core,
                free_mt: globals.free_mt,
                string_mt: globals.string_mt,
                types: HashMap::new(),
                layouts: Vec::new(),
                out_types: Vec::new(),
            },
            stats: HeapStats::default(),
            alloc_contexts,
            ranges: Vec::new(),
            timer_callbacks: Vec::new(),
            checkpoints: Vec::new(),
        })
    }

    /// The object ranges of every heap.
    fn ranges(&mut self) -> Result<Vec<Range>> {
        let dac = self.types.dac;
        let gc = dac.gc_heap_data()?;
        self.stats.server_gc = gc.server_mode != 0;
        self.stats.structures_valid = gc.structures_valid != 0;
        let mut ranges = Vec::new();
        for details in dac.heap_details(gc.server_mode != 0, gc.heap_count)? {
            let heap = (gc.server_mode != 0).then_some(details.heap_addr);
            let gens: Vec<GenerationData> =
                dac.generation_table(heap).unwrap_or_else(|| details.generation_table.to_vec());
            if gens.len() < 4 {
                return Err(Error::Heap(format!("generation table has {} entries", gens.len())));
            }
            let g0 = gens[0];
            if g0.alloc_context_ptr != 0 {
                self.alloc_contexts.push((g0.alloc_context_ptr, g0.alloc_context_limit));
            }
            let regions = gens[0].start_segment != gens[1].start_segment;
            self.stats.regions = regions;
            let order: &[usize] = if regions { &[3, 2, 1, 0, 4] } else { &[3, 2, 4] };
            for &g in order {
                let Some(gen_data) = gens.get(g) else { continue };
                let mut seg = gen_data.start_segment;
                let mut seen = 0;
                while seg != 0 {
                    let data = dac.segment(seg)?;
                    let end =
                        if seg == details.ephemeral_heap_segment { details.alloc_allocated } else { data.allocated };
                    if data.mem != 0 && end > data.mem {
                        ranges.push(Range { start: data.mem, end, large: g >= 3 || data.flags & 1 != 0 });
                    }
                    seen += 1;
                    if seen > 1_000_000 {
                        return Err(Error::Heap("segment list does not end".into()));
                    }
                    seg = data.next;
                }
            }
        }
        ranges.sort_by_key(|r| r.start);
        ranges.dedup_by_key(|r| r.start);
        self.stats.segments = ranges.len() as u64;
        Ok(ranges)
    }

    /// Walks the heap, filling the histogram ([`Self::take_types`]) and [`Self::stats`].
    pub fn walk(&mut self) -> Result<()> {
        let ranges = self.ranges()?;
        let mut counts = WalkCounts::default();
        let core = self.types.core;
        let mut histogram: Vec<(u64, u64)> = Vec::new();
        let (mut objects, mut bytes) = (0u64, 0u64);
        let timer_callbacks = &mut self.timer_callbacks;
        let checkpoints = &mut self.checkpoints;
        let mut next_checkpoint = 0u64;
        let every = checkpoint_every(parts::range_bytes(&ranges));
        let memory = core.memory();
        let types = &mut self.types;
        walk_objects(
            memory,
            &ranges,
            &self.alloc_contexts,
            types,
            &mut counts,
            Span::ALL,
            |obj, size, info, object| {
                if obj >= next_checkpoint {
                    checkpoints.push(Checkpoint { address: obj, objects_before: objects });
                    next_checkpoint = obj.saturating_add(every);
                }
                if info.is_timer_callback {
                    let word =
                        |at: usize| object.get(at..at + 8).map_or(0, |w| u64::from_le_bytes(w.try_into().expect("8")));
                    timer_callbacks.push((obj, word(DELEGATE_METHOD_PTR), word(DELEGATE_METHOD_PTR_AUX)));
                }
                let i = info.index as usize;
                if i >= histogram.len() {
                    histogram.resize(i + 1, (0, 0));
                }
                histogram[i].0 += 1;
                histogram[i].1 += size;
                objects += 1;
                bytes += size;
                Ok(())
            },
        )?;
        for (t, (count, size)) in self.types.out_types.iter_mut().zip(histogram) {
            t.count += count;
            t.bytes += size;
        }
        self.stats.objects += objects;
        self.stats.bytes += bytes;
        self.stats.walked_bytes += counts.walked_bytes;
        self.stats.resyncs += counts.resyncs;
        self.stats.free_objects += counts.free_objects;
        self.stats.free_bytes += counts.free_bytes;
        let readable = ranges.iter().filter(|r| core.slice(r.start, r.end - r.start).is_some());
        self.stats.ranges.extend(readable.map(|r| [r.start, r.end]));
        self.ranges = ranges;
        Ok(())
    }

    /// The per-type histogram of the walk (graph type indexes point into it).
    pub fn take_types(&mut self) -> Vec<HeapType> {
        std::mem::take(&mut self.types.out_types)
    }

    /// What the timer callbacks of the walk call: per method (its full name, as the DAC
    /// names it), the delegates that call it. A closed delegate's `_methodPtr` is the
    /// method's code or its precode; an open or static one's `_methodPtrAux` is.
    pub fn timer_callback_methods(&self) -> Vec<(String, Vec<u64>)> {
        let dac = self.types.dac;
        let mut names: HashMap<u64, Option<String>> = HashMap::new();
        let mut by_method: std::collections::BTreeMap<String, Vec<u64>> = Default::default();
        for &(delegate, ptr, aux) in &self.timer_callbacks {
            let mut name_of = |ip: u64| -> Option<String> {
                if ip == 0 {
                    return None;
                }
                names
                    .entry(ip)
                    .or_insert_with(|| dac.method_desc_from_ip(ip).and_then(|md| dac.method_desc_name(md).ok()))
                    .clone()
            };
            if let Some(method) = name_of(aux).or_else(|| name_of(ptr)) {
                by_method.entry(method).or_default().push(delegate);
            }
        }
        by_method.into_iter().collect()
    }

    /// What [`walk_graph`] needs to walk the same heap again without the DAC.
    pub fn layout(&self) -> HeapLayout {
        HeapLayout {
            ranges: self.ranges.clone(),
            alloc_contexts: self.alloc_contexts.clone(),
            types: self.types.layouts.clone(),
            objects: self.stats.objects,
            checkpoints: self.checkpoints.clone(),
        }
    }
}

/// Types known from a [`HeapLayout`]; a MethodTable the worker did not accept is no object.
struct KnownTypes(HashMap<u64, TypeInfo>);

impl KnownTypes {
    fn of(layout: &HeapLayout) -> Self {
        KnownTypes(
            layout
                .types
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    let info = TypeInfo {
                        index: i as u32,
                        base_size: t.base_size,
                        component_size: t.component_size,
                        is_string: t.is_string,
                        is_free: t.is_free,
                        is_timer_callback: false,
                    };
                    (t.method_table, info)
                })
                .collect(),
        )
    }
}

/// Shared by the threads of a walk in parts: the map is only read.
impl TypeLookup for &KnownTypes {
    fn type_info(&mut self, mt: u64) -> Option<TypeInfo> {
        self.0.get(&mt).copied()
    }
}

/// What a [`walk_graph`] met.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GraphWalk {
    /// Objects added to the graph.
    pub objects: u64,
    /// Objects whose type's reference layout does not fit them (a damaged or hostile
    /// layout): their references were cut short.
    pub cut_references: u64,
    /// Parts walked at once (1: in one piece).
    pub parts: u32,
}

/// Walks the heap of `core` again with the worker's `layout` (no DAC), adding every object
/// and its non-null references to `builder` (an empty one). The walk meets the same objects
/// as the worker's, since it reads the same bytes with the same rules; on several cores it
/// walks parts of the heap at once, cut at the worker's checkpoints ([`parts`]). Neither the
/// dump nor the layout is trusted: the objects and references added are bounded by the bytes
/// the dump holds (at most one object per 24 bytes of a range, one reference per 8 bytes of
/// an object), and parts that do not match the checkpoints are walked again in one piece.
pub(crate) fn walk_graph(core: &CoreDump, layout: &HeapLayout, builder: &mut ObjectGraphBuilder) -> Result<GraphWalk> {
    walk_graph_on(core, layout, builder, analysis::heap::threads())
}

/// [`walk_graph`] on at most `threads` threads.
fn walk_graph_on(
    core: &CoreDump,
    layout: &HeapLayout,
    builder: &mut ObjectGraphBuilder,
    threads: usize,
) -> Result<GraphWalk> {
    if u32::try_from(layout.types.len()).is_err() {
        return Err(Error::Heap(format!("the layout names {} types", layout.types.len())));
    }
    let types = KnownTypes::of(layout);
    if let Some(plan) = parts::plan(layout, core.present_bytes(), threads)
        && let Some(walk) = parts::walk(core.memory(), layout, &types, &plan, builder)?
    {
        return Ok(walk);
    }
    // The worker's count, which no heap can exceed: objects are 24 bytes at least. The
    // worker's figures are not trusted: the dump's own size caps the reservation.
    let expected = layout.objects.min(parts::range_bytes(&layout.ranges) / 24).min(core.present_bytes() / 24);
    builder.reserve_nodes(usize::try_from(expected).unwrap_or(0));
    let mut counts = WalkCounts::default();
    let mut walk = GraphWalk { parts: 1, ..Default::default() };
    let each = |obj, size, info: TypeInfo, bytes: &[u8]| {
        builder.add_node_with(obj, size, u64::from(info.index), |edges| {
            walk.cut_references += u64::from(!layout.read_references(info, bytes, edges));
        });
        walk.objects += 1;
        Ok(())
    };
    walk_objects(core.memory(), &layout.ranges, &layout.alloc_contexts, &mut &types, &mut counts, Span::ALL, each)?;
    Ok(walk)
}

#[cfg(test)]
mod tests;
