//! The object graph's walk in parts, one thread each, cut at the worker's checkpoints.
//!
//! The worker's walk notes an object every [`super::checkpoint_every`] bytes with the number
//! of objects before it. A walk that starts on such an object meets the same objects from
//! there on as the walk from the start (it reads the same bytes with the same rules), so parts
//! between checkpoints can be walked at once, each into the graph positions the counts give
//! it. A part that does not end exactly on its next checkpoint with exactly its count of
//! objects means the checkpoints were not those of this heap (a damaged or hostile worker):
//! the heap is then walked again in one piece.

use std::sync::atomic::{AtomicU64, Ordering};

use analysis::heap::ObjectGraphBuilder;

use super::{GraphWalk, HeapLayout, KnownTypes, Range, Span, WalkCounts, walk_objects};
use crate::core::DumpMemory;
use crate::error::{Error, Result};

/// A walk cut into parts: part `k` walks `spans[k]`, whose objects take the graph positions
/// `starts[k]..starts[k + 1]`.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Plan {
    spans: Vec<Span>,
    starts: Vec<usize>,
}

/// The bytes of `ranges` together.
pub(super) fn range_bytes(ranges: &[Range]) -> u64 {
    ranges.iter().map(|r| r.end.saturating_sub(r.start)).fold(0, u64::saturating_add)
}

/// Cuts the heap of `layout` into at most `threads` parts of about equal bytes at its
/// checkpoints; `None` when fewer than two parts come out, or when the checkpoints cannot be
/// those of a walk of its ranges (not ascending, outside every range, more objects than the
/// dump's bytes can hold).
pub(super) fn plan(layout: &HeapLayout, present_bytes: u64, threads: usize) -> Option<Plan> {
    let total_bytes = range_bytes(&layout.ranges);
    let objects = layout.objects;
    if threads < 2 || objects > total_bytes.min(present_bytes) / 24 || objects >= u64::from(u32::MAX) {
        return None;
    }
    // Where each checkpoint lies in the walk: the bytes of the ranges before it.
    let mut before: Vec<u64> = Vec::with_capacity(layout.checkpoints.len());
    let (mut range, mut passed) = (0usize, 0u64);
    for (i, c) in layout.checkpoints.iter().enumerate() {
        let ascending = i == 0
            || (c.address > layout.checkpoints[i - 1].address
                && c.objects_before > layout.checkpoints[i - 1].objects_before);
        if !ascending || c.objects_before >= objects {
            return None;
        }
        while let Some(r) = layout.ranges.get(range).filter(|r| r.end <= c.address) {
            passed = passed.saturating_add(r.end.saturating_sub(r.start));
            range += 1;
        }
        let r = layout.ranges.get(range).filter(|r| r.start <= c.address)?;
        before.push(passed.saturating_add(c.address - r.start));
    }
    let mut spans = Vec::new();
    let mut starts = vec![0usize];
    let mut from = 0u64;
    let mut next = 0usize;
    for k in 1..threads {
        let target = (u128::from(total_bytes) * k as u128 / threads as u128) as u64;
        let unused = next;
        while before.get(next).is_some_and(|&b| b < target) {
            next += 1;
        }
        // The nearer of the unused checkpoints on either side of the target.
        let pick = match (next.checked_sub(1).filter(|&p| p >= unused), before.get(next)) {
            (Some(p), Some(&b)) if target - before[p] < b - target => p,
            (Some(p), None) => p,
            (_, Some(_)) => next,
            (None, None) => break,
        };
        let c = &layout.checkpoints[pick];
        next = pick + 1;
        // The first object has none before it: a cut there would leave an empty part.
        if c.objects_before == 0 {
            continue;
        }
        spans.push(Span { from, to: c.address });
        starts.push(c.objects_before as usize);
        from = c.address;
    }
    spans.push(Span { from, to: u64::MAX });
    starts.push(objects as usize);
    (spans.len() >= 2).then_some(Plan { spans, starts })
}

/// Why a part was not built.
enum PartError {
    /// It met other objects than the checkpoints announced.
    Mismatch,
    Walk(Error),
}

impl From<Error> for PartError {
    fn from(e: Error) -> Self {
        PartError::Walk(e)
    }
}

/// Walks the parts of `plan` at once into the empty `builder`; `None` (the builder left
/// empty) when a part met other objects than its checkpoints announced.
pub(super) fn walk(
    memory: DumpMemory<'_>,
    layout: &HeapLayout,
    types: &KnownTypes,
    plan: &Plan,
    builder: &mut ObjectGraphBuilder,
) -> Result<Option<GraphWalk>> {
    let cut_references = AtomicU64::new(0);
    let filled = builder.fill_parts(layout.types.len() as u32, &plan.starts, |k, slots| {
        let mut counts = WalkCounts::default();
        let mut cut = 0u64;
        let exact = walk_objects(
            memory,
            &layout.ranges,
            &layout.alloc_contexts,
            &mut &*types,
            &mut counts,
            plan.spans[k],
            |obj, size, info, bytes| {
                slots.push_with(obj, size, u64::from(info.index), |edges| {
                    cut += u64::from(!layout.read_references(info, bytes, edges));
                });
                Ok(())
            },
        )?;
        cut_references.fetch_add(cut, Ordering::Relaxed);
        if exact { Ok(()) } else { Err(PartError::Mismatch) }
    });
    match filled {
        Ok(true) => Ok(Some(GraphWalk {
            objects: layout.objects,
            cut_references: cut_references.into_inner(),
            parts: plan.spans.len() as u32,
        })),
        Ok(false) | Err(PartError::Mismatch) => Ok(None),
        Err(PartError::Walk(e)) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::heapwalk::Checkpoint;

    fn layout(ranges: &[(u64, u64)], objects: u64, checkpoints: &[(u64, u64)]) -> HeapLayout {
        HeapLayout {
            ranges: ranges.iter().map(|&(start, end)| Range { start, end, large: false }).collect(),
            objects,
            checkpoints: checkpoints
                .iter()
                .map(|&(address, objects_before)| Checkpoint { address, objects_before })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn parts_are_cut_at_the_checkpoints_nearest_equal_bytes() {
        // Two ranges of 2,400 bytes, checkpoints every 800.
        let l = layout(
            &[(0x1000, 0x1960), (0x8000, 0x8960)],
            200,
            &[(0x1000, 0), (0x1320, 33), (0x1640, 66), (0x8000, 100), (0x8320, 133), (0x8640, 166)],
        );
        let two = plan(&l, u64::MAX, 2).unwrap();
        assert_eq!(two.starts, [0, 100, 200]);
        assert_eq!(two.spans, [Span { from: 0, to: 0x8000 }, Span { from: 0x8000, to: u64::MAX }]);
        let three = plan(&l, u64::MAX, 3).unwrap();
        assert_eq!(three.starts, [0, 66, 133, 200]);
        assert_eq!(three.spans[1], Span { from: 0x1640, to: 0x8320 });
        // More threads than checkpoints: a part from each checkpoint after the first.
        assert_eq!(plan(&l, u64::MAX, 8).unwrap().starts, [0, 33, 66, 100, 133, 166, 200]);
    }

    #[test]
    fn checkpoints_no_walk_could_have_noted_give_no_parts() {
        let ranges = [(0x1000, 0x1960), (0x8000, 0x8960)];
        let good = [(0x1000, 0), (0x8000, 100)];
        assert!(plan(&layout(&ranges, 200, &good), u64::MAX, 2).is_some());
        for (why, objects, checkpoints) in [
            ("out of order", 200, vec![(0x8000, 100), (0x1000, 0)]),
            ("counts going back", 200, vec![(0x1000, 150), (0x8000, 100)]),
            ("between ranges", 200, vec![(0x1000, 0), (0x4000, 100)]),
            ("past the last range", 200, vec![(0x1000, 0), (0x9000, 100)]),
            ("at or past the object count", 100, vec![(0x1000, 0), (0x8000, 100)]),
            ("more objects than the bytes hold", 201, vec![(0x1000, 0), (0x8000, 100)]),
            ("none", 200, vec![]),
        ] {
            assert_eq!(plan(&layout(&ranges, objects, &checkpoints), u64::MAX, 2), None, "{why}");
        }
        // The dump's own size caps the count too; one thread walks in one piece.
        assert_eq!(plan(&layout(&ranges, 200, &good), 200 * 24 - 1, 2), None);
        assert_eq!(plan(&layout(&ranges, 200, &good), u64::MAX, 1), None);
    }
}
