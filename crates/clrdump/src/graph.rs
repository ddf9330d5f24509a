//! The object graph of a dump, from the worker's object records and its snapshot: types
//! under readable names, and GC roots as the analysis names them.

use analysis::heap::{ObjectGraph, ObjectGraphBuilder, RootKind};

use crate::error::Result;
use crate::model::{RootSource, Snapshot};
use crate::names::simplify_type_name;

/// Names the types and adds the roots of `snapshot` (the records' type indexes point into
/// its histogram), then resolves the references.
pub(crate) fn finish(mut builder: ObjectGraphBuilder, snapshot: &Snapshot) -> Result<ObjectGraph> {
    for (i, t) in snapshot.types.iter().enumerate() {
        builder.add_type(i as u64, &simplify_type_name(&t.name));
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
    Ok(builder.finish()?)
}
