//! `dumpwatch analyze` of a saved heap snapshot (`heap.nettrace`, what `gcdump -o` and the
//! sidecar's gcdump captures keep): the histogram and the leak suspects with their root paths,
//! in the same findings document as a core dump's (no threads, so no deadlocks).

use std::path::Path;

use analysis::findings::{self, Findings, FindingsInput, Source};
use analysis::heap::{LeakThresholds, leak_suspects};
use analysis::monitors::analyze_monitors;
use anyhow::{Context, Result};
use diag::heap::HeapSnapshotCollector;
use nettrace::{Event, Reader, Step};

/// Whether `path` names a heap snapshot rather than a core dump.
pub fn is_heap_snapshot(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "nettrace")
}

pub fn findings_for(path: &Path, display: &str, top: usize, histogram_only: bool) -> Result<Findings> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut collector = HeapSnapshotCollector::new(!histogram_only);
    read(file, &mut collector).with_context(|| format!("reading the heap snapshot {display}"))?;
    let snap = collector.finish().with_context(|| format!("{display}: not a complete heap snapshot"))?;
    let suspects = snap.graph.as_ref().map(|g| {
        let retained = g.retained_sizes();
        leak_suspects(g, &retained, snap.histogram.total_bytes(), &LeakThresholds::default())
    });
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
        leak_suspects: suspects,
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
