//! `dumpwatch analyze` of a saved heap snapshot (`heap.nettrace`, what `gcdump -o` and the
//! sidecar's gcdump captures keep): the histogram and the leak suspects with their root paths,
//! in the same findings document as a core dump's (no threads, so no deadlocks).

use std::collections::HashMap;
use std::path::Path;

use analysis::findings::{self, Findings, FindingsInput, Source};
use analysis::monitors::analyze_monitors;
use anyhow::{Context, Result};
use diag::heap::{HeapSnapshot, HeapSnapshotCollector};
use nettrace::{Event, Reader, Step};

use crate::analyze::GraphFindings;
use clrdump::timings::PhaseClock;

/// Whether `path` names a heap snapshot rather than a core dump.
pub fn is_heap_snapshot(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "nettrace")
}

/// Reads a saved heap snapshot: its histogram, and its object graph if `graph`. `known` names
/// types of an earlier snapshot of the same process (see
/// [`HeapSnapshotCollector::assume_type_names`]).
pub fn load(path: &Path, display: &str, graph: bool, known: &HashMap<u64, String>) -> Result<HeapSnapshot> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut collector = HeapSnapshotCollector::new(graph);
    collector.assume_type_names(known);
    read(file, &mut collector).with_context(|| format!("reading the heap snapshot {display}"))?;
    collector.finish().with_context(|| format!("{display}: not a complete heap snapshot"))
}

pub fn findings_for(
    path: &Path,
    display: &str,
    top: usize,
    histogram_only: bool,
    clock: &mut PhaseClock,
) -> Result<Findings> {
    clock.start("read the heap snapshot");
    let snap = load(path, display, !histogram_only, &HashMap::new())?;
    let heap =
        snap.graph.as_ref().map(|g| GraphFindings::of(g, snap.histogram.total_bytes(), clock)).unwrap_or_default();
    clock.start("findings document");
    Ok(findings::build(FindingsInput {
        source: Source {
            kind: "gcdump".into(),
            path: display.to_string(),
            runtime_version: None,
            dac: None,
            threads: 0,
        },
        threads: &[],
        monitors: &[],
        monitor_analysis: &analyze_monitors(&[], &[]),
        histogram: &snap.histogram,
        top_types: top,
        leak_suspects: heap.leak_suspects,
        finalizer_queue: heap.finalizer_queue,
        finalizer_tid: None,
        queued_work_items: heap.queued_work_items,
        warnings: Vec::new(),
    }))
}

fn read(mut r: impl std::io::Read, collector: &mut HeapSnapshotCollector) -> Result<()> {
    let mut reader = Reader::new();
    let mut chunk = vec![0u8; 256 * 1024];
    loop {
        let info = reader.trace_info().cloned();
        let step = match &info {
            Some(info) => reader.next_block(&mut |ev: &Event<'_>| collector.on_event(info, ev))?,
            None => reader.next_block(&mut |_: &Event<'_>| {})?,
        };
        match step {
            Step::Block => {}
            Step::End => return Ok(()),
            Step::NeedData => {
                let n = r.read(&mut chunk)?;
                if n == 0 {
                    reader.finish_input();
                } else {
                    reader.feed(&chunk[..n]);
                }
            }
        }
    }
}
