//! The object graph of a dump: this process walks the mapped dump with the layouts the
//! worker found ([`crate::heapwalk::walk_graph`]), names the types readably and adds the GC
//! roots as the analysis names them.

use std::path::Path;

use analysis::heap::{ObjectGraph, ObjectGraphBuilder, RootKind};

use crate::core::CoreDump;
use crate::error::Result;
use crate::heapwalk::{HeapLayout, walk_graph};
use crate::model::{RootSource, Snapshot};
use crate::names::simplify_type_name;
use crate::timings::PhaseClock;

/// Walks the heap of the dump at `core_path` with the worker's `layout`, then names the types and adds the
/// roots of `snapshot` (the type indexes point into its histogram) and resolves the
/// references; returns the graph and the number of parts walked at once. Warns in `snapshot`
/// if the walk met other objects than the worker's.
pub(crate) fn build(
    core_path: &Path,
    layout: &HeapLayout,
    snapshot: &mut Snapshot,
    clock: &mut PhaseClock,
) -> Result<(ObjectGraph, u32)> {
    clock.start("graph: walk the heap, read references");
    // Mapped for the walk only: the references resolve without it.
    let core = CoreDump::open(core_path)?;
    let mut builder = ObjectGraphBuilder::new();
    let walk = walk_graph(&core, layout, &mut builder)?;
    clock.rename(format!("graph: walk the heap ({} at once), read references", walk.parts));
    drop(core);
    let objects = walk.objects;
    if walk.cut_references > 0 {
        snapshot.warnings.push(format!(
            "{} objects have a reference layout that does not fit them (a damaged heap or type): their references were cut short",
            walk.cut_references
        ));
    }
    if objects != snapshot.heap.objects {
        snapshot.warnings.push(format!(
            "the object graph has {objects} objects but the heap walk counted {}: retention figures may be off",
            snapshot.heap.objects
        ));
    }
    clock.start("graph: name types, add roots");
    for (i, t) in snapshot.types.iter().enumerate() {
        builder.add_type(i as u64, &simplify_type_name(&t.name));
    }
    for (method, delegates) in &snapshot.timer_callbacks {
        for &d in delegates {
            builder.add_delegate_method(d, method);
        }
    }
    for r in &snapshot.roots {
        let kind = match &r.kind {
            RootSource::Static { type_name, field_name } => {
                RootKind::Static { type_name: simplify_type_name(type_name), field_name: field_name.clone() }
            }
            RootSource::StrongHandle => RootKind::StrongHandle,
            RootSource::PinnedHandle => RootKind::PinnedHandle,
            RootSource::OtherHandle => RootKind::Other,
            RootSource::Stack { .. } => RootKind::Stack,
            RootSource::Finalizer => RootKind::Finalizer,
        };
        builder.add_root(r.object, kind);
    }
    Ok((builder.finish_observed(clock)?, walk.parts))
}
