//! `dumpwatch analyze <core>`: read a core dump through the DAC (in an isolated child: this
//! same binary re-run with the hidden [`WORKER_SUBCOMMAND`]), find the deadlocks and the
//! leak suspects, and print the findings document or a report read in 30 seconds.

use std::fmt::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use analysis::crash::{self, CrashFinding, CrashedThreadCandidate};
use analysis::findings::{self, Findings, FindingsInput, Source};
use analysis::hangs::{HangKind, queued_work_items};
use analysis::heap::{
    Confidence, HeapHistogram, LeakThresholds, ObjectGraph, TypeStats, finalizer_queue, leak_suspects_observed,
};
use analysis::monitors::{DumpMonitor, DumpThread, StackLockRef, analyze_monitors};
use anyhow::{Context, Result};
use clrdump::model::Snapshot;
use clrdump::names::simplify_type_name;
use clrdump::timings::{self, PhaseClock};
use clrdump::{Depth, ReadOptions, WorkerCommand};

/// The hidden subcommand that runs the DAC worker.
pub const WORKER_SUBCOMMAND: &str = "__dac-worker";

/// Options of `analyze`.
pub struct AnalyzeArgs {
    pub core: PathBuf,
    /// How the dump is named in the report (its URL without signature, or its path).
    pub display: String,
    pub dac: Option<PathBuf>,
    /// What the person should know about the DAC's choice (findings' warnings).
    pub dac_warnings: Vec<String>,
    /// The runtime version found while looking for the DAC, for dumps that do not hold it.
    pub runtime_version: Option<String>,
    /// Local copies of assemblies absent at their dumped paths (see `symbols::fetch_assemblies`).
    pub replacements: Vec<(String, PathBuf)>,
    pub json: bool,
    pub top: usize,
    pub histogram_only: bool,
    /// Print the phase breakdown (`--timings`) to stderr.
    pub timings: bool,
    /// The runtime wrote the dump as the process crashed: name the unhandled exception.
    pub crashed: bool,
    /// The runtime's crash report for the dump, if it wrote one.
    pub crash_report: Option<PathBuf>,
    /// A drill-down view (and its arguments) to print instead of the report.
    pub view: Option<(crate::views::View, Vec<String>)>,
    /// Confine the DAC worker (`--no-sandbox` clears it: debugging and measuring only).
    pub sandbox: bool,
    pub timeout: u64,
}

/// Runs the analysis and prints it; returns the findings (for `--report-to`).
pub fn analyze(args: AnalyzeArgs) -> Result<Option<Findings>> {
    let started = Instant::now();
    let mut clock = PhaseClock::new();
    if let Some((view, view_args)) = &args.view {
        show(&args, *view, view_args, &mut clock)?;
        return Ok(None);
    }
    let mut findings = if crate::heap_file::is_heap_snapshot(&args.core) {
        crate::heap_file::findings_for(&args.core, &args.display, args.top, args.histogram_only, &mut clock)?
    } else {
        findings_for(&args, &mut clock)?
    };
    findings.source.path = args.display.clone();
    clock.start("report");
    if args.json {
        println!("{}", serde_json::to_string_pretty(&findings)?);
    } else {
        print!("{}", report(&findings));
        eprintln!("(analyzed in {:.2} s)", started.elapsed().as_secs_f64());
    }
    if args.timings {
        eprint!("{}", timings::render(&clock.finish()));
    }
    Ok(Some(findings))
}

/// Prints one drill-down view of the dump (`dumpwatch analyze <core> <view>`).
fn show(args: &AnalyzeArgs, view: crate::views::View, view_args: &[String], clock: &mut PhaseClock) -> Result<()> {
    anyhow::ensure!(
        !crate::heap_file::is_heap_snapshot(&args.core),
        "views read core dumps; a heap snapshot has no threads or locks (analyze it without a view)"
    );
    let depth = if view.needs_graph() { Depth::Graph } else { Depth::Histogram };
    let data = read(args, depth, clock)?;
    let out = crate::views::render(view, view_args, &data.snapshot, data.graph.as_ref()).map_err(anyhow::Error::msg)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&out.json)?);
    } else {
        print!("{}", out.text);
    }
    Ok(())
}

/// Reads the dump through the DAC worker at `depth`.
fn read(args: &AnalyzeArgs, depth: Depth, clock: &mut PhaseClock) -> Result<clrdump::DumpData> {
    let mut opts = ReadOptions::new(WorkerCommand::current_exe(WORKER_SUBCOMMAND)?, depth);
    opts.dac = args.dac.clone();
    opts.replacements = args.replacements.clone();
    opts.timeout = Duration::from_secs(args.timeout);
    opts.sandbox = args.sandbox;
    clrdump::read_dump_timed(&args.core, &opts, clock).with_context(|| format!("analyzing {}", args.core.display()))
}

/// Reads the dump and builds the findings document, recording its phases on `clock`.
pub fn findings_for(args: &AnalyzeArgs, clock: &mut PhaseClock) -> Result<Findings> {
    let depth = if args.histogram_only { Depth::Histogram } else { Depth::Graph };
    let data = read(args, depth, clock)?;
    let s = &data.snapshot;
    // In the Job's log too: what held around the DAC.
    eprintln!("DAC worker sandbox: {}", data.confinement.summary());
    let sandbox_warnings = data.confinement.warnings();
    for w in &sandbox_warnings {
        eprintln!("warning: {w}");
    }
    clock.start("deadlocks, hangs, histogram");

    let threads = dump_threads(s);
    let monitors: Vec<DumpMonitor> = s
        .sync_blocks
        .iter()
        .map(|b| DumpMonitor {
            lock_id: b.address,
            object: b.object,
            object_type: simplify_type_name(&b.object_type),
            owner_tid: b.owner_os_id.map(u64::from),
            waiters: b.waiters,
        })
        .collect();
    let monitor_analysis = analyze_monitors(&threads, &monitors);
    let histogram = histogram(s);

    let heap = data.graph.as_ref().map(|g| GraphFindings::of(g, histogram.total_bytes(), clock)).unwrap_or_default();

    clock.start("findings document");
    let mut warnings = warnings(s);
    if !monitor_analysis.inferred_waiters.is_empty() {
        warnings.push(format!(
            "{} threads were taken as waiting for a lock from their stack references and the runtime's waiter counts: \
             the dump does not show their Monitor.Enter frame",
            monitor_analysis.inferred_waiters.len()
        ));
    }
    let crash = if args.crashed { crash_finding(s, args.crash_report.as_deref(), &mut warnings) } else { None };
    let mut document = findings::build(FindingsInput {
        source: Source {
            kind: "core_dump".into(),
            path: args.core.display().to_string(),
            runtime_version: s.runtime_version.clone().or_else(|| args.runtime_version.clone()),
            dac: Some(data.dac.display().to_string()),
            threads: s.threads.len(),
        },
        threads: &threads,
        monitors: &monitors,
        monitor_analysis: &monitor_analysis,
        histogram: &histogram,
        top_types: args.top,
        leak_suspects: heap.leak_suspects,
        finalizer_queue: heap.finalizer_queue,
        finalizer_tid: s.finalizer_thread.map(u64::from),
        queued_work_items: heap.queued_work_items,
        warnings: args.dac_warnings.iter().cloned().chain(sandbox_warnings).chain(warnings).collect(),
    });
    document.crash = crash;
    Ok(document)
}

/// Why the process crashed: the runtime's crash report (read with bounds: the app's runtime
/// wrote it) joined with the dump's threads. An unreadable report is a warning, and the dump's
/// threads alone may still name the exception.
fn crash_finding(s: &Snapshot, report: Option<&Path>, warnings: &mut Vec<String>) -> Option<CrashFinding> {
    let reported = report.and_then(|path| {
        let read = std::fs::File::open(path).and_then(|f| {
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut std::io::Read::take(f, crash::MAX_REPORT_BYTES as u64 + 1), &mut bytes)
                .map(|_| bytes)
        });
        match read.map_err(|e| e.to_string()).and_then(|b| crash::read_crash_report(&b).map_err(|e| e.to_string())) {
            Ok(r) => Some(r),
            Err(e) => {
                warnings.push(format!("crash report {} not used: {e}", path.display()));
                None
            }
        }
    });
    let candidates: Vec<CrashedThreadCandidate> = s
        .threads
        .iter()
        .map(|t| CrashedThreadCandidate {
            os_tid: u64::from(t.os_id),
            managed_id: t.managed_id,
            stack: t.frames.iter().map(|f| f.name.clone()).collect(),
            last_exception: t.last_exception.as_deref().map(simplify_type_name),
        })
        .collect();
    let found = crash::crash_finding(reported.as_ref(), &candidates);
    if found.is_none() {
        warnings.push(
            "the dump was written as the process crashed, but no single thread holds the unhandled exception \
             (and no crash report names it): the exception is not named"
                .into(),
        );
    }
    found
}

/// What the findings take from the object graph (all `None` without one).
#[derive(Default)]
pub struct GraphFindings {
    pub leak_suspects: Option<Vec<analysis::heap::LeakSuspect>>,
    pub finalizer_queue: Option<analysis::heap::FinalizerQueue>,
    pub queued_work_items: Option<u64>,
}

impl GraphFindings {
    /// Retention, then the leak suspects, the finalizer queue and the pool's queue length.
    pub fn of(graph: &ObjectGraph, heap_bytes: u64, clock: &mut PhaseClock) -> Self {
        let retained = graph.retained_sizes_observed(clock);
        let leak_suspects = leak_suspects_observed(graph, &retained, heap_bytes, &LeakThresholds::default(), clock);
        clock.start("finalizer queue, thread-pool queue");
        GraphFindings {
            leak_suspects: Some(leak_suspects),
            finalizer_queue: finalizer_queue(graph, &retained),
            queued_work_items: queued_work_items(graph),
        }
    }
}

/// The reader's warnings, and one when types have no name: the DAC reads type names from
/// assembly metadata, which heap dumps of .NET Core 3.1 leave out; it then reads them from the
/// assemblies at their dumped paths, absent where the app's files are not (an analysis Job).
/// Locks and leak paths are then unreliable, and the report must not look healthy.
fn warnings(s: &Snapshot) -> Vec<String> {
    let mut out = s.warnings.clone();
    let unnamed = s.types.iter().filter(|t| t.count > 0 && t.name.starts_with("<unknown type")).count();
    if unnamed > 0 {
        out.push(format!(
            "{unnamed} heap types have no name: the dump lacks their assemblies' metadata and the assemblies are not at \
             their dumped paths here; deadlocks and leak paths may be missed. Analyze where the app's and runtime's \
             files are, or take a full dump"
        ));
    }
    out
}

fn dump_threads(s: &Snapshot) -> Vec<DumpThread> {
    s.threads
        .iter()
        .filter(|t| t.alive)
        .map(|t| DumpThread {
            os_tid: u64::from(t.os_id),
            managed_id: t.managed_id,
            stack: t.frames.iter().map(|f| f.name.clone()).collect(),
            lock_refs: t
                .lock_refs
                .iter()
                .map(|r| StackLockRef { object: r.object, from_runtime_frame: r.from_runtime_frame })
                .collect(),
        })
        .collect()
}

/// Per-type totals under readable names (several MethodTables can share one).
pub fn histogram(s: &Snapshot) -> HeapHistogram {
    let mut by_name: std::collections::HashMap<String, (u64, u64)> = std::collections::HashMap::new();
    for t in s.types.iter().filter(|t| t.count > 0) {
        let e = by_name.entry(simplify_type_name(&t.name)).or_default();
        e.0 += t.count;
        e.1 += t.bytes;
    }
    HeapHistogram::from_types(
        by_name.into_iter().map(|(type_name, (count, bytes))| TypeStats { type_name, count, bytes }).collect(),
    )
}

fn confidence(c: Confidence) -> &'static str {
    match c {
        Confidence::High => "high",
        Confidence::Medium => "medium",
        Confidence::Low => "low",
    }
}

fn bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.1} GiB", n as f64 / (1u64 << 30) as f64),
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}

fn thread_label(t: &findings::ThreadRef) -> String {
    match t.managed_id {
        Some(m) => format!("thread {} (managed {m})", t.os_tid),
        None => format!("thread {}", t.os_tid),
    }
}

/// The stack from the frame just inside the one `at` finds (the wait API a method blocks in,
/// then the method and its callers), or all of it.
fn from_frame(stack: &[String], at: impl Fn(&String) -> bool) -> &[String] {
    let start = stack.iter().position(at).map_or(0, |i| i.saturating_sub(1));
    &stack[start..]
}

/// Frames worth reading: runtime frames without a method name say nothing to a .NET engineer.
fn stack_lines(out: &mut String, stack: &[String], max: usize) {
    for f in stack.iter().filter(|f| !(f.starts_with('[') && f.ends_with(']'))).take(max) {
        let _ = writeln!(out, "        {f}");
    }
}

/// The human report.
pub fn report(f: &Findings) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}: runtime build {} · {} managed threads · heap {} in {} objects",
        Path::new(&f.source.path).display(),
        f.source.runtime_version.as_deref().unwrap_or("?"),
        f.source.threads,
        bytes(f.heap.bytes),
        f.heap.objects
    );
    for w in &f.warnings {
        let _ = writeln!(out, "warning: {w}");
    }
    out.push('\n');
    if let Some(c) = &f.crash {
        let _ = writeln!(out, "CRASH: {}", c.reason);
        stack_lines(&mut out, &c.stack, 8);
        out.push('\n');
    }
    if f.deadlocks.is_empty() {
        out.push_str("DEADLOCKS: none\n");
    }
    for (i, d) in f.deadlocks.iter().enumerate() {
        let _ = writeln!(
            out,
            "DEADLOCK {}: {} threads wait for each other; {} more threads are stuck behind them",
            i + 1,
            d.cycle.len(),
            d.victims.len()
        );
        for e in &d.cycle {
            let _ = writeln!(
                out,
                "  {} holds a lock and waits for {} @{:#x}, held by {}",
                thread_label(&e.thread),
                e.waits_for.object_type,
                e.waits_for.object,
                thread_label(&e.held_by)
            );
            stack_lines(&mut out, &e.stack, 6);
        }
        if !d.victims.is_empty() {
            let tids: Vec<String> = d.victims.iter().map(|v| v.thread.os_tid.to_string()).collect();
            let _ = writeln!(out, "  victims ({}): threads {}", d.victims.len(), tids.join(", "));
        }
    }
    for l in &f.long_waits {
        let owner = l.owner.as_ref().map_or_else(|| "an unknown thread".to_string(), thread_label);
        let _ = writeln!(
            out,
            "LONG WAIT (not a deadlock): {} threads wait for {} @{:#x}, held by {owner}, which is running:",
            l.waiters.len(),
            l.lock.object_type,
            l.lock.object
        );
        stack_lines(&mut out, &l.owner_stack, 6);
    }
    for h in &f.hangs {
        let label = match h.kind {
            HangKind::ThreadPoolStarvation => "THREAD-POOL STARVATION",
            HangKind::BlockedThreads => "BLOCKED THREADS",
        };
        let _ = writeln!(out, "{label}: {}", h.reason);
        stack_lines(&mut out, from_frame(&h.stack, |f| *f == h.method), 6);
    }
    if let Some(b) = &f.finalization_backlog {
        let _ = writeln!(out, "FINALIZATION BACKLOG: {}", b.reason);
        stack_lines(&mut out, from_frame(&b.finalizer_stack, |f| f.contains(".Finalize(")), 4);
    }
    out.push('\n');
    let _ = writeln!(out, "TOP HEAP TYPES\n  {:>10}  {:>10}  type", "objects", "bytes");
    for t in &f.heap.top_types {
        let _ = writeln!(out, "  {:>10}  {:>10}  {}", t.count, bytes(t.bytes), t.type_name);
    }
    out.push('\n');
    match &f.leak_suspects {
        None => out.push_str("LEAK SUSPECTS: not computed (--histogram-only)\n"),
        Some(s) if s.is_empty() => out.push_str("LEAK SUSPECTS: none\n"),
        Some(s) => {
            out.push_str("LEAK SUSPECTS (surest first)\n");
            for (i, l) in s.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "  {}. [{}] {} × {} retain {} ({:.0} % of the heap), held by:",
                    i + 1,
                    confidence(l.confidence),
                    l.instances,
                    l.type_name,
                    bytes(l.retained_bytes),
                    l.heap_share * 100.0
                );
                let _ = writeln!(out, "     {} → {}", l.root, l.path.join(" → "));
                let _ = writeln!(out, "     {}", l.reason);
            }
        }
    }
    if f.source.kind == "core_dump" {
        let _ = write!(
            out,
            "\nNEXT: dumpwatch analyze <dump> threads | syncblk | heap-stat | heap-type <type> | obj <addr> | \
             roots <addr> | finalizer-queue | threadpool   (--json for any)\n"
        );
    }
    out
}
