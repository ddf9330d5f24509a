//! Builds the [`Snapshot`] from an initialized DAC: threads with symbolized stacks, sync
//! blocks, the heap walk and (for the graph) the GC roots.

use std::collections::{HashMap, HashSet};

use crate::core::CoreDump;
use crate::dac::Dac;
use crate::error::{Error, Result};
use crate::heapwalk::HeapWalker;
use crate::model::*;
use crate::timings::PhaseClock;

const TS_UNSTARTED: u32 = 0x400;
const TS_DEAD: u32 = 0x800;
const MAX_FRAMES: usize = 200;
const MAX_THREADS: usize = 100_000;

/// HNDTYPE values (gchandletype.h).
const HND_STRONG: u32 = 2;
const HND_PINNED: u32 = 3;
const HND_REFCOUNTED: u32 = 5;
const HND_ASYNCPINNED: u32 = 7;
const HND_SIZEDREF: u32 = 8;

/// The type of the object a thread's last-thrown-object handle points at, if it points at one.
fn last_thrown_type(dac: &Dac, core: &CoreDump, handle: u64) -> Option<String> {
    let object = core.u64_at(handle).filter(|&o| o != 0)?;
    let mt = core.u64_at(object).filter(|&mt| mt != 0)?;
    dac.method_table_name(mt & !7).ok()
}

/// Extracts everything at `depth`; at [`Depth::Graph`] also the roots and the heap's layout
/// (for the parent's own walk of the object graph, see [`crate::heapwalk`]).
pub fn collect(dac: &Dac, core: &CoreDump, depth: Depth, clock: &mut PhaseClock) -> Result<Snapshot> {
    clock.start("worker: threads, stacks, sync blocks");
    let mut warnings = Vec::new();
    let dac_revision = dac.revision().unwrap_or(0);
    let runtime_version = core.runtime_version()?;

    // Threads.
    let store = dac.thread_store()?;
    let mut threads = Vec::new();
    let mut alloc_contexts = Vec::new();
    let mut addr = store.first_thread;
    let mut seen = HashSet::new();
    while addr != 0 && seen.insert(addr) && threads.len() < MAX_THREADS {
        let t = dac.thread(addr)?;
        let state = t.state as u32;
        let alive = t.os_thread_id != 0 && state & (TS_UNSTARTED | TS_DEAD) == 0;
        if t.alloc_context_ptr != 0 {
            alloc_contexts.push((t.alloc_context_ptr, t.alloc_context_limit));
        }
        threads.push(Thread {
            os_id: t.os_thread_id,
            managed_id: t.cor_thread_id,
            state,
            // 8.0's DAC reports 0xFFFFFFFF for every thread.
            lock_count: (t.lock_count != u32::MAX).then_some(t.lock_count),
            address: addr,
            alive,
            frames: Vec::new(),
            lock_refs: Vec::new(),
            last_exception: last_thrown_type(dac, core, t.last_thrown_object_handle),
        });
        addr = t.next_thread;
    }

    // Sync blocks: index 1 tells the count.
    let mut sync_blocks = Vec::new();
    let by_address: HashMap<u64, (u32, u32)> = threads.iter().map(|t| (t.address, (t.os_id, t.managed_id))).collect();
    match dac.sync_block(1) {
        Ok(first) => {
            let count = first.sync_block_count;
            for i in 1..=count {
                let Ok(sb) = (if i == 1 { Ok(first) } else { dac.sync_block(i) }) else { continue };
                if sb.free != 0 || sb.object == 0 || sb.monitor_held == 0 {
                    continue;
                }
                let held = sb.monitor_held & 1 != 0;
                let owner = if held { by_address.get(&sb.holding_thread).copied() } else { None };
                let object_type = core
                    .u64_at(sb.object)
                    .and_then(|mt| dac.method_table_name(mt & !7).ok())
                    .unwrap_or_else(|| "<unknown>".into());
                sync_blocks.push(SyncBlock {
                    index: i,
                    address: sb.sync_block_pointer,
                    object: sb.object,
                    object_type,
                    held,
                    owner_os_id: owner.map(|o| o.0),
                    owner_managed_id: owner.map(|o| o.1),
                    recursion: sb.recursion,
                    waiters: sb.monitor_held >> 1,
                });
            }
        }
        Err(e) => warnings.push(format!("sync blocks unavailable ({e}); is this a mini dump?")),
    }
    let locked: HashSet<u64> = sync_blocks.iter().filter(|s| s.held).map(|s| s.object).collect();

    // Stacks, stack references to locked objects, and stack roots. The references serve only
    // the graph's roots and the held locks: without either they are not read, since the 3.1
    // DAC walks the heap up to each interior pointer a stack holds to name its object.
    let mut roots = Vec::new();
    let mut names: HashMap<u64, String> = HashMap::new();
    let read_refs = depth == Depth::Graph || !locked.is_empty();
    for t in threads.iter_mut().filter(|t| t.alive) {
        match dac.stack_walk(t.os_id, MAX_FRAMES) {
            Ok(raw) => t.frames = raw.iter().map(|f| symbolize(dac, core, f, &mut names)).collect(),
            Err(e) => warnings.push(format!("stack of thread {}: {e}", t.os_id)),
        }
        if !read_refs {
            continue;
        }
        match dac.stack_refs(t.os_id) {
            Ok(refs) => {
                for r in &refs {
                    if locked.contains(&r.object) {
                        let from_runtime_frame = r.source_type == 1;
                        if !t
                            .lock_refs
                            .iter()
                            .any(|l| l.object == r.object && l.from_runtime_frame == from_runtime_frame)
                        {
                            t.lock_refs.push(LockRef { object: r.object, from_runtime_frame });
                        }
                    }
                    // Interior pointers (flag 1) point inside an object: not a graph node.
                    if depth == Depth::Graph && r.flags & 1 == 0 {
                        roots.push(GcRoot { object: r.object, kind: RootSource::Stack { os_id: t.os_id } });
                    }
                }
            }
            Err(e) => warnings.push(format!("stack references of thread {}: {e}", t.os_id)),
        }
    }

    // Handles, then statics: the static roots hold the same objects as the statics-array
    // handle, but they name the field.
    if depth == Depth::Graph {
        clock.start("worker: roots (statics, finalizer queue, handles)");
        let (statics, failed) = crate::statics::static_roots(dac, core);
        if failed > 0 {
            warnings.push(format!("static fields of {failed} modules could not be read"));
        }
        roots.extend(statics);
        roots.extend(crate::finalizer::ready_for_finalization(dac, core));
        let handles = dac.handles().map_err(|e| Error::NoHeap(format!("handle table unreadable: {e}")))?;
        for h in handles {
            let kind = match h.kind {
                HND_STRONG => RootSource::StrongHandle,
                HND_PINNED | HND_ASYNCPINNED => RootSource::PinnedHandle,
                HND_REFCOUNTED if h.ref_count > 0 => RootSource::OtherHandle,
                HND_SIZEDREF => RootSource::OtherHandle,
                _ => continue,
            };
            if let Some(object) = core.u64_at(h.handle).filter(|&o| o != 0) {
                roots.push(GcRoot { object, kind });
            }
        }
    }

    clock.start("worker: heap walk (histogram)");
    let mut walker = HeapWalker::new(dac, core, alloc_contexts)?;
    walker.walk()?;
    if walker.stats.walked_bytes == 0 {
        return Err(Error::NoHeap("no heap segment is present in the dump".into()));
    }
    if !walker.stats.structures_valid {
        warnings
            .push("the GC was in the middle of a collection when the dump was taken: heap figures may be off".into());
    }
    if walker.stats.resyncs > 0 {
        warnings.push(format!("heap walk resynchronized {} times (damaged or moving heap)", walker.stats.resyncs));
    }
    let finalizer_thread = threads.iter().find(|t| t.address == store.finalizer_thread && t.alive).map(|t| t.os_id);
    let snapshot = Snapshot {
        finalizer_thread,
        runtime_version,
        dac_revision,
        threads,
        sync_blocks,
        heap: walker.stats.clone(),
        types: walker.take_types(),
        layout: (depth == Depth::Graph).then(|| walker.layout()),
        timer_callbacks: if depth == Depth::Graph { walker.timer_callback_methods() } else { Vec::new() },
        roots,
        warnings,
        phases: Vec::new(),
    };
    Ok(snapshot)
}

fn symbolize(dac: &Dac, core: &CoreDump, f: &crate::dac::RawFrame, names: &mut HashMap<u64, String>) -> Frame {
    let method = |md: Option<u64>, names: &mut HashMap<u64, String>| -> Option<String> {
        let md = md?;
        Some(names.entry(md).or_insert_with(|| dac.method_desc_name(md).unwrap_or_else(|_| "!Unknown".into())).clone())
    };
    if f.frame != 0 {
        let frame_name = core.u64_at(f.frame).and_then(|vt| dac.frame_name(vt).ok()).unwrap_or_else(|| "Frame".into());
        let name = match method(dac.method_desc_from_frame(f.frame), names) {
            Some(m) => format!("[{frame_name}] {m}"),
            None => format!("[{frame_name}]"),
        };
        return Frame { ip: f.ip, sp: f.frame, name, runtime: true };
    }
    let name = method(dac.method_desc_from_ip(f.ip), names).unwrap_or_else(|| format!("{:#x}", f.ip));
    Frame { ip: f.ip, sp: f.sp, name, runtime: false }
}
