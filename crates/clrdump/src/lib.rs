//! Native .NET core-dump reading, no SDK needed.
//!
//! - [`elf`] / [`core`]: the ELF core reader (PT_LOAD memory, NT_PRSTATUS thread registers,
//!   NT_FILE module map, NT_AUXV) over a memory-mapped file.
//! - [`dac`]: the bridge to the runtime's own data-access library `libmscordaccore.so`
//!   (hand-written COM vtables; the only `unsafe` code of the crate).
//! - [`read_dump`]: runs the DAC in an isolated worker process ([`worker_main`]) and returns
//!   threads, stacks, sync blocks, the heap histogram ([`model`]) and optionally the object
//!   graph with its GC roots, which this process builds by walking the mapped dump again with
//!   the types' layouts the worker found.
//!
//! ```no_run
//! use clrdump::{Depth, ReadOptions, WorkerCommand};
//! let opts = ReadOptions::new(WorkerCommand::current_exe("__dac-worker").unwrap(), Depth::Histogram);
//! let dump = clrdump::read_dump(std::path::Path::new("core.1234"), &opts).unwrap();
//! println!("{} threads", dump.snapshot.threads.len());
//! ```

pub mod answer;
pub mod buildid;
mod collect;
pub mod core;
pub mod dac;
pub mod elf;
pub mod error;
mod finalizer;
mod gcdesc;
mod graph;
mod heapwalk;
pub mod locate;
mod mapped;
pub mod memory;
pub mod model;
pub mod names;
pub mod sandbox;
mod statics;
mod stdio;
pub mod timings;
mod worker;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use analysis::heap::ObjectGraph;
pub use error::{Error, Result};
pub use heapwalk::HeapLayout;
/// Heaps built from arbitrary bytes (fuzzing, seeded tests).
#[cfg(any(test, feature = "testing"))]
pub use heapwalk::testing;
pub use model::{Depth, Snapshot};
pub use worker::{WorkerCommand, worker_main};

/// How to read a dump.
#[derive(Clone, Debug)]
pub struct ReadOptions {
    /// An explicit DAC (must match the dump's runtime): the caller vouches for it.
    pub dac: Option<PathBuf>,
    /// A DAC that travelled with the capture but lies elsewhere (fetched artifacts): used only
    /// when `trust.beside_dump`, like one beside the dump.
    pub captured_dac: Option<PathBuf>,
    /// What to extract.
    pub depth: Depth,
    /// How to start the isolated DAC worker.
    pub worker: WorkerCommand,
    /// Kill the worker after this long.
    pub timeout: Duration,
    /// Which sources besides `dac` may provide the DAC ([`locate`]).
    pub trust: locate::Trust,
    /// Confine the DAC worker ([`sandbox`]); off only to debug or to measure its cost.
    pub sandbox: bool,
    /// `(path in the dumped process, local file)`: copies of mapped files that are not at
    /// their dumped path here (assemblies fetched from a symbol server).
    pub replacements: Vec<(String, PathBuf)>,
}

impl ReadOptions {
    /// Defaults: DAC from `dac` or a runtime installed here (never one beside the dump),
    /// 10-minute timeout.
    pub fn new(worker: WorkerCommand, depth: Depth) -> Self {
        ReadOptions {
            dac: None,
            captured_dac: None,
            depth,
            worker,
            timeout: Duration::from_secs(600),
            trust: locate::Trust { local_runtimes: true, ..Default::default() },
            sandbox: true,
            replacements: Vec::new(),
        }
    }
}

/// What [`read_dump`] returns.
#[derive(Clone, Debug)]
pub struct DumpData {
    /// Threads, locks, histogram, roots.
    pub snapshot: Snapshot,
    /// The object graph, at [`Depth::Graph`].
    pub graph: Option<ObjectGraph>,
    /// In how many parts at once the heap was walked for the graph (0: no graph).
    pub graph_parts: u32,
    /// The DAC used.
    pub dac: PathBuf,
    /// Where it came from.
    pub provenance: locate::Provenance,
    /// What the person should know about the DAC's choice (a DAC beside the dump ignored, …).
    pub dac_warnings: Vec<String>,
    /// How the DAC worker was confined.
    pub confinement: sandbox::Confinement,
}

/// Validates the core here (typed errors for truncated or foreign files), picks and checks
/// the DAC, then extracts everything in the worker process.
pub fn read_dump(core_path: &Path, opts: &ReadOptions) -> Result<DumpData> {
    read_dump_timed(core_path, opts, &mut timings::PhaseClock::new())
}

/// [`read_dump`], with the phases of the worker and of the graph's construction recorded on
/// `clock`.
pub fn read_dump_timed(core_path: &Path, opts: &ReadOptions, clock: &mut timings::PhaseClock) -> Result<DumpData> {
    clock.start("open the dump, choose the DAC");
    let core = core::CoreDump::open(core_path)?;
    let runtime_path = core.runtime_path()?.to_string();
    let version = core.runtime_version()?;
    let build_id = core.runtime_build_id().ok();
    let dumped = locate::Dumped {
        runtime_path: Some(&runtime_path),
        version: version.as_deref(),
        build_id: build_id.as_deref(),
    };
    let chosen = locate::choose(opts.dac.as_deref(), opts.captured_dac.as_deref(), core_path, &dumped, &opts.trust)?;
    drop(core);
    let dac = chosen.path;
    clock.start("DAC worker runs");
    let answer = worker::run(&opts.worker, core_path, &dac, opts, opts.timeout)?;
    let mut snapshot = answer.snapshot;
    clock.close();
    clock.extend(std::mem::take(&mut snapshot.phases));
    let (graph, graph_parts) = match (opts.depth, snapshot.layout.take()) {
        (Depth::Graph, Some(layout)) => {
            let (graph, parts) = graph::build(core_path, &layout, &mut snapshot, clock)?;
            (Some(graph), parts)
        }
        (Depth::Graph, None) => return Err(Error::Worker("the worker sent no heap layout".into())),
        (Depth::Histogram, _) => (None, 0),
    };
    clock.close();
    Ok(DumpData {
        snapshot,
        graph,
        graph_parts,
        dac,
        provenance: chosen.provenance,
        dac_warnings: chosen.warnings,
        confinement: answer.confinement,
    })
}
