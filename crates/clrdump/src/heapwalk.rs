//! The GC heap walk: segments (3.1) or regions (.NET 7+) from the DAC, objects read straight
//! from the mapped dump, sizes from the DAC's MethodTable data, references from the GCDesc
//! stored just below each MethodTable (both cached per type).

use std::collections::HashMap;

use crate::core::CoreDump;
use crate::dac::{Dac, GenerationData};
use crate::error::{Error, Result};
use crate::gcdesc::GcDesc;
use crate::model::{HeapStats, HeapType};

const MIN_OBJECT_SIZE: u64 = 24;

/// One address range of objects.
#[derive(Clone, Copy, Debug)]
struct Range {
    start: u64,
    end: u64,
    /// LOH / POH / frozen: allocation contexts never live there.
    large: bool,
}

/// What we need to know about a MethodTable.
#[derive(Clone, Copy, Debug)]
struct TypeInfo {
    index: u32,
    base_size: u32,
    component_size: u32,
    is_string: bool,
}

/// Receives every object of a heap walk, in address order, with its non-null references:
/// the worker streams them to its parent as they are found instead of collecting them.
pub trait ObjectSink {
    /// One object; `type_index` points into the walk's histogram (`HeapWalker::out_types`).
    fn object(&mut self, address: u64, size: u64, type_index: u32, references: &[u64]) -> Result<()>;
}

/// Walks every object; fills the histogram, and feeds a sink with the graph when given one.
pub struct HeapWalker<'a> {
    dac: &'a Dac,
    core: &'a CoreDump,
    free_mt: u64,
    string_mt: u64,
    types: HashMap<u64, Option<TypeInfo>>,
    /// Per `TypeInfo::index`: where its objects hold references.
    layouts: Vec<Option<GcDesc>>,
    /// The histogram, indexed by `TypeInfo::index`.
    pub out_types: Vec<HeapType>,
    /// Figures.
    pub stats: HeapStats,
    alloc_contexts: Vec<(u64, u64)>,
}

impl<'a> HeapWalker<'a> {
    /// Prepares a walk; `alloc_contexts` are the threads' `[ptr, limit)` ranges.
    pub fn new(dac: &'a Dac, core: &'a CoreDump, mut alloc_contexts: Vec<(u64, u64)>) -> Result<Self> {
        let globals = dac.useful_globals()?;
        if let Some(g) = dac.global_alloc_context() {
            alloc_contexts.push(g);
        }
        Ok(HeapWalker {
            dac,
            core,
            free_mt: globals.free_mt,
            string_mt: globals.string_mt,
            types: HashMap::new(),
            layouts: Vec::new(),
            out_types: Vec::new(),
            stats: HeapStats::default(),
            alloc_contexts,
        })
    }

    /// The object ranges of every heap.
    fn ranges(&mut self) -> Result<Vec<Range>> {
        let gc = self.dac.gc_heap_data()?;
        self.stats.server_gc = gc.server_mode != 0;
        self.stats.structures_valid = gc.structures_valid != 0;
        let mut ranges = Vec::new();
        for details in self.dac.heap_details(gc.server_mode != 0, gc.heap_count)? {
            let heap = (gc.server_mode != 0).then_some(details.heap_addr);
            let gens: Vec<GenerationData> =
                self.dac.generation_table(heap).unwrap_or_else(|| details.generation_table.to_vec());
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
                    let data = self.dac.segment(seg)?;
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
            let layout = if d.contains_pointers != 0 { GcDesc::read(mt, |a| self.core.u64_at(a)) } else { None };
            self.layouts.push(layout);
            TypeInfo {
                index,
                base_size: d.base_size,
                component_size: d.component_size,
                is_string: mt == self.string_mt,
            }
        });
        self.types.insert(mt, info);
        info
    }

    /// If `obj` lies in an allocation context, the first address after it.
    fn skip_alloc_context(&self, obj: u64) -> Option<u64> {
        self.alloc_contexts.iter().find(|&&(p, l)| p != 0 && p <= obj && obj < l).map(|&(_, l)| l + MIN_OBJECT_SIZE)
    }

    /// Walks the heap. With a `sink`, hands it each object and its references.
    pub fn walk(&mut self, mut sink: Option<&mut dyn ObjectSink>) -> Result<()> {
        let mut references = Vec::new();
        // A few types make up most objects, often interleaved (a node and its item): a small
        // direct-mapped cache in front of the hash map saves a lookup per object.
        let mut recent: [Option<(u64, TypeInfo)>; 64] = [None; 64];
        for range in self.ranges()? {
            let Some(bytes) = self.core.slice(range.start, range.end - range.start) else {
                self.stats.resyncs += 1;
                continue;
            };
            self.stats.walked_bytes += bytes.len() as u64;
            self.stats.ranges.push([range.start, range.end]);
            let mut obj = range.start;
            while obj + 8 <= range.end {
                if !range.large
                    && let Some(next) = self.skip_alloc_context(obj)
                {
                    obj = next;
                    continue;
                }
                let off = (obj - range.start) as usize;
                let mt = u64::from_le_bytes(bytes[off..off + 8].try_into().expect("8 bytes")) & !7;
                let slot = (mt >> 3) as usize % recent.len();
                let info = match recent[slot] {
                    Some((cached, info)) if cached == mt => Some(info),
                    _ if mt == 0 => None,
                    _ => self.type_info(mt),
                };
                let Some(info) = info else {
                    // Not an object: damaged heap or an allocation gap we did not know about.
                    // Resynchronize on the next pointer-aligned word.
                    self.stats.resyncs += 1;
                    obj += 8;
                    continue;
                };
                recent[slot] = Some((mt, info));
                let mut size = info.base_size as u64;
                if info.component_size != 0 {
                    let count =
                        bytes.get(off + 8..off + 12).map_or(0, |b| u32::from_le_bytes(b.try_into().expect("4")));
                    // The DAC reports String's base size minus its terminating char.
                    let count = count as u64 + info.is_string as u64;
                    size += count * info.component_size as u64;
                }
                let size = ((size + 7) & !7).max(MIN_OBJECT_SIZE);
                if mt == self.free_mt {
                    self.stats.free_objects += 1;
                    self.stats.free_bytes += size;
                } else {
                    let t = &mut self.out_types[info.index as usize];
                    t.count += 1;
                    t.bytes += size;
                    self.stats.objects += 1;
                    self.stats.bytes += size;
                    if let Some(sink) = sink.as_deref_mut() {
                        let end = (off + size as usize).min(bytes.len());
                        references.clear();
                        if let Some(layout) = &self.layouts[info.index as usize] {
                            layout.references(&bytes[off..end], &mut references);
                        }
                        sink.object(obj, size, info.index, &references)?;
                    }
                }
                obj += size;
            }
        }
        Ok(())
    }
}
