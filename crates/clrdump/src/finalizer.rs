//! The finalizer queue's ready part: objects the GC found dead whose finalizer has not run
//! yet. They are GC roots until the finalizer thread gets to them (`!finalizequeue`'s "Ready
//! for finalization"), and a long list of them means the finalizer thread is stuck.
//!
//! Each heap's `CFinalize` keeps one array cut into segments by fill pointers: one segment per
//! generation (oldest first), then the critical and the normal ready-for-finalization
//! segments. With `n` fill pointers the ready objects are `[fill[n-3], fill[n-1])`. .NET 5+
//! gives the pointers through ISOSDacInterface8; before, the heap details hold them for the
//! four generations of the time (so `n` = 6).

use crate::core::CoreDump;
use crate::dac::Dac;
use crate::model::{GcRoot, RootSource};

/// A ready list longer than this is not a queue but garbage read as pointers.
const MAX_READY: u64 = 50_000_000;

/// The objects ready for finalization, on every heap; empty if the queue cannot be read.
pub fn ready_for_finalization(dac: &Dac, core: &CoreDump) -> Vec<GcRoot> {
    let Ok(gc) = dac.gc_heap_data() else { return Vec::new() };
    let server = gc.server_mode != 0;
    let Ok(heaps) = dac.heap_details(server, gc.heap_count) else { return Vec::new() };
    let mut roots = Vec::new();
    for details in heaps {
        let heap = server.then_some(details.heap_addr);
        let fill =
            dac.finalization_fill_pointers(heap).unwrap_or_else(|| details.finalization_fill_pointers[..6].to_vec());
        let n = fill.len();
        if n < 3 {
            continue;
        }
        let (start, end) = (fill[n - 3], fill[n - 1]);
        if start == 0 || end < start || (end - start) % 8 != 0 || (end - start) / 8 > MAX_READY {
            continue;
        }
        for slot in (start..end).step_by(8) {
            if let Some(object) = core.u64_at(slot).filter(|&o| o != 0) {
                roots.push(GcRoot { object, kind: RootSource::Finalizer });
            }
        }
    }
    roots
}
