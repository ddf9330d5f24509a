//! The versioned findings document: one JSON object per analyzed snapshot, which the CLI
//! report, the operator's `DumpSnapshot.status`, Events and metrics are views of. The
//! schema is documented in `docs/findings-schema.md`; bump [`FINDINGS_VERSION`] on any
//! change that removes or re-types a field (adding optional fields keeps the version).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::hangs::{HangFinding, HangThresholds, find_hangs};
use crate::heap::{FinalizerQueue, GrowthVerdict, HeapHistogram, LeakSuspect, TypeStats, human_bytes, thousands};
use crate::monitors::{DumpMonitor, DumpThread, MonitorAnalysis};
use crate::wait_for::BlockedThread;

/// The `schema` field's value.
pub const FINDINGS_SCHEMA: &str = "dumpwatch.findings";
/// The `version` field's value.
pub const FINDINGS_VERSION: u32 = 1;

/// The findings document.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Findings {
    /// Always [`FINDINGS_SCHEMA`].
    pub schema: String,
    /// [`FINDINGS_VERSION`] of the producer.
    pub version: u32,
    /// What was analyzed.
    pub source: Source,
    /// Counts for dashboards and status fields.
    pub summary: Summary,
    /// Monitor deadlocks, each a cycle of threads.
    pub deadlocks: Vec<DeadlockFinding>,
    /// Locks with waiters that are not deadlocked (slow or stuck holder).
    pub long_waits: Vec<LongWaitFinding>,
    /// Heap figures and the biggest types.
    pub heap: HeapFinding,
    /// What piles up under one holder, surest first; `null` when retention was not computed.
    pub leak_suspects: Option<Vec<LeakSuspect>>,
    /// Threads blocked at the same place, and thread-pool starvation (dumps only).
    #[serde(default)]
    pub hangs: Vec<HangFinding>,
    /// Objects piling up in the finalizer queue; `null` when below the threshold or not read.
    #[serde(default)]
    pub finalization_backlog: Option<FinalizationBacklog>,
    /// Problems that make some figures less certain.
    pub warnings: Vec<String>,
    /// Types that grew across periodic heap snapshots (the sidecar's growth verdict, source
    /// kind `heap_snapshots`); absent from the analysis of one snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub growth_verdicts: Option<Vec<GrowthVerdict>>,
    /// Why the process died, for a dump the runtime wrote while crashing; absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crash: Option<crate::crash::CrashFinding>,
}

/// What was analyzed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Source {
    /// `core_dump` (later also `gcdump`, `trace`).
    pub kind: String,
    /// The artifact's path as given.
    pub path: String,
    /// The runtime build, e.g. `8.0.424.16909`.
    pub runtime_version: Option<String>,
    /// The DAC used, for core dumps.
    pub dac: Option<String>,
    /// Managed threads in the snapshot.
    pub threads: usize,
}

/// Counts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// Deadlock cycles.
    pub deadlocks: usize,
    /// Threads on a cycle.
    pub deadlocked_threads: usize,
    /// Threads blocked behind a cycle.
    pub victims: usize,
    /// Leak suspects (0 when not computed).
    pub leak_suspects: usize,
    /// Hang findings.
    #[serde(default)]
    pub hangs: usize,
}

/// A lock as reported.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockRef {
    /// The runtime's lock identity (sync block address).
    pub lock_id: u64,
    /// The locked object's address.
    pub object: u64,
    /// Its type.
    pub object_type: String,
}

/// A thread as reported.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThreadRef {
    /// Kernel thread id.
    pub os_tid: u64,
    /// Managed thread id, if known.
    pub managed_id: Option<u32>,
}

/// One thread of a deadlock cycle.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CycleThread {
    /// The thread.
    pub thread: ThreadRef,
    /// The lock it waits for.
    pub waits_for: LockRef,
    /// Who holds that lock: the next thread of the cycle.
    pub held_by: ThreadRef,
    /// Its stack, innermost first.
    pub stack: Vec<String>,
}

/// A thread blocked on a lock, not part of a cycle.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaitingThread {
    /// The thread.
    pub thread: ThreadRef,
    /// The lock it waits for.
    pub waits_for: LockRef,
    /// Its stack.
    pub stack: Vec<String>,
}

/// A deadlock.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadlockFinding {
    /// The cycle, in wait order.
    pub cycle: Vec<CycleThread>,
    /// Threads queued behind the cycle.
    pub victims: Vec<WaitingThread>,
}

/// Waiters on a lock that is held but not deadlocked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LongWaitFinding {
    /// The lock.
    pub lock: LockRef,
    /// Its holder.
    pub owner: Option<ThreadRef>,
    /// The holder's stack (what it is doing instead of releasing).
    pub owner_stack: Vec<String>,
    /// Who waits.
    pub waiters: Vec<WaitingThread>,
}

/// Heap figures.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeapFinding {
    /// Objects on the heap (reachable or not).
    pub objects: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Biggest types by bytes.
    pub top_types: Vec<TypeStats>,
}

/// Objects waiting in the finalizer queue, and what the finalizer thread is doing instead.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinalizationBacklog {
    /// Objects waiting for their finalizer.
    pub objects: u64,
    /// Bytes they keep alive.
    pub retained_bytes: u64,
    /// The most common types among them.
    pub types: Vec<TypeStats>,
    /// The finalizer thread, when the snapshot has threads (dumps).
    pub finalizer_thread: Option<ThreadRef>,
    /// Its stack, innermost first.
    pub finalizer_stack: Vec<String>,
    /// Why, in words.
    pub reason: String,
}

/// Fewest objects waiting in the finalizer queue for a finding: the finalizer thread empties
/// the queue within milliseconds of a GC, so a thousand still waiting means it is stuck or
/// cannot keep up.
pub const FINALIZATION_BACKLOG_MIN_OBJECTS: u64 = 1_000;

/// Inputs of [`build`].
#[derive(Clone, Debug)]
pub struct FindingsInput<'a> {
    /// What was analyzed.
    pub source: Source,
    /// Threads of the dump.
    pub threads: &'a [DumpThread],
    /// Its monitors.
    pub monitors: &'a [DumpMonitor],
    /// [`crate::monitors::analyze_monitors`] over them.
    pub monitor_analysis: &'a MonitorAnalysis,
    /// The heap histogram.
    pub histogram: &'a HeapHistogram,
    /// How many types to list.
    pub top_types: usize,
    /// Leak suspects, if retention was computed.
    pub leak_suspects: Option<Vec<LeakSuspect>>,
    /// The finalizer queue, if the object graph was read.
    pub finalizer_queue: Option<FinalizerQueue>,
    /// OS id of the runtime's finalizer thread, if known.
    pub finalizer_tid: Option<u64>,
    /// Work items waiting in the thread pool's queue, if the object graph was read.
    pub queued_work_items: Option<u64>,
    /// Warnings from the reader.
    pub warnings: Vec<String>,
}

/// Assembles the document.
pub fn build(input: FindingsInput<'_>) -> Findings {
    let managed: HashMap<u64, u32> = input.threads.iter().map(|t| (t.os_tid, t.managed_id)).collect();
    let stacks: HashMap<u64, &Vec<String>> = input.threads.iter().map(|t| (t.os_tid, &t.stack)).collect();
    let locks: HashMap<u64, &DumpMonitor> = input.monitors.iter().map(|m| (m.lock_id, m)).collect();
    let thread = |tid: u64| ThreadRef { os_tid: tid, managed_id: managed.get(&tid).copied() };
    let lock = |id: u64, object: u64| LockRef {
        lock_id: id,
        object,
        object_type: locks.get(&id).map_or_else(|| "<unknown>".to_string(), |m| m.object_type.clone()),
    };
    let waiting = |b: &BlockedThread<Vec<String>>| WaitingThread {
        thread: thread(b.tid),
        waits_for: lock(b.lock_id, locks.get(&b.lock_id).map_or(0, |m| m.object)),
        stack: b.stack.clone(),
    };
    let deadlocks: Vec<DeadlockFinding> = input
        .monitor_analysis
        .deadlocks
        .iter()
        .map(|d| DeadlockFinding {
            cycle: d
                .cycle
                .iter()
                .map(|e| CycleThread {
                    thread: thread(e.waiter_tid),
                    waits_for: lock(e.lock_id, e.lock_object),
                    held_by: thread(e.owner_tid),
                    stack: e.waiter_stack.clone(),
                })
                .collect(),
            victims: d.victims.iter().map(waiting).collect(),
        })
        .collect();
    let long_waits = input
        .monitor_analysis
        .long_waits
        .iter()
        .map(|l| LongWaitFinding {
            lock: lock(l.lock_id, l.lock_object),
            owner: l.owner_tid.map(thread),
            owner_stack: l.owner_tid.and_then(|t| stacks.get(&t)).map(|s| (*s).clone()).unwrap_or_default(),
            waiters: l.waiters.iter().map(waiting).collect(),
        })
        .collect();
    let hangs = find_hangs(input.threads, input.queued_work_items, &HangThresholds::default());
    let finalization_backlog = input
        .finalizer_queue
        .filter(|q| q.objects >= FINALIZATION_BACKLOG_MIN_OBJECTS)
        .map(|q| backlog(q, input.finalizer_tid.map(&thread), input.finalizer_tid.and_then(|t| stacks.get(&t))));
    let summary = Summary {
        hangs: hangs.len(),
        deadlocks: deadlocks.len(),
        deadlocked_threads: deadlocks.iter().map(|d| d.cycle.len()).sum(),
        victims: deadlocks.iter().map(|d| d.victims.len()).sum(),
        leak_suspects: input.leak_suspects.as_ref().map_or(0, Vec::len),
    };
    Findings {
        schema: FINDINGS_SCHEMA.to_string(),
        version: FINDINGS_VERSION,
        source: input.source,
        summary,
        deadlocks,
        long_waits,
        heap: HeapFinding {
            objects: input.histogram.total_objects(),
            bytes: input.histogram.total_bytes(),
            top_types: input.histogram.top(input.top_types).to_vec(),
        },
        leak_suspects: input.leak_suspects,
        hangs,
        finalization_backlog,
        warnings: input.warnings,
        growth_verdicts: None,
        crash: None,
    }
}

/// The findings document of a growth verdict over periodic heap snapshots: each verdict is a
/// leak suspect (pattern `growth`) and is kept whole in `growth_verdicts`; `last` is the newest
/// snapshot's histogram. `source.kind` is `heap_snapshots`.
pub fn from_growth(source: Source, last: &HeapHistogram, verdicts: Vec<GrowthVerdict>, top_types: usize) -> Findings {
    let suspects: Vec<LeakSuspect> = verdicts.iter().map(|v| v.suspect(last)).collect();
    Findings {
        schema: FINDINGS_SCHEMA.to_string(),
        version: FINDINGS_VERSION,
        source,
        summary: Summary { leak_suspects: suspects.len(), ..Summary::default() },
        deadlocks: Vec::new(),
        long_waits: Vec::new(),
        heap: HeapFinding {
            objects: last.total_objects(),
            bytes: last.total_bytes(),
            top_types: last.top(top_types).to_vec(),
        },
        leak_suspects: Some(suspects),
        hangs: Vec::new(),
        finalization_backlog: None,
        warnings: Vec::new(),
        growth_verdicts: Some(verdicts),
        crash: None,
    }
}

fn backlog(q: FinalizerQueue, thread: Option<ThreadRef>, stack: Option<&&Vec<String>>) -> FinalizationBacklog {
    let stack: Vec<String> = stack.map(|s| (*s).clone()).unwrap_or_default();
    let most =
        q.types.first().map(|t| format!(" (most: {} `{}`)", thousands(t.count), t.type_name)).unwrap_or_default();
    // Where the finalizer thread is: the innermost frame that is code (a finalizer), not the
    // runtime's waiting frames.
    let doing = stack
        .iter()
        .find(|f| f.contains("Finalize") && !f.starts_with('['))
        .or_else(|| stack.iter().find(|f| !f.starts_with('[')))
        .map_or_else(
            || "its stack is not in this snapshot (a heap snapshot has no threads; a dump has)".to_string(),
            |f| format!("the finalizer thread is in `{f}`"),
        );
    let reason = format!(
        "{} objects wait in the finalizer queue{most}, keeping {}; {doing}: while one finalizer blocks, no other \
         runs, and the memory of everything waiting is never freed",
        thousands(q.objects),
        human_bytes(q.retained_bytes),
    );
    FinalizationBacklog {
        objects: q.objects,
        retained_bytes: q.retained_bytes,
        types: q.types,
        finalizer_thread: thread,
        finalizer_stack: stack,
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitors::analyze_monitors;

    fn input<'a>(
        threads: &'a [DumpThread],
        analysis: &'a MonitorAnalysis,
        histogram: &'a HeapHistogram,
        finalizer_tid: Option<u64>,
    ) -> FindingsInput<'a> {
        FindingsInput {
            source: Source {
                kind: "core_dump".into(),
                path: "core".into(),
                runtime_version: None,
                dac: None,
                threads: 1,
            },
            threads,
            monitors: &[],
            monitor_analysis: analysis,
            histogram,
            top_types: 5,
            leak_suspects: None,
            finalizer_queue: Some(FinalizerQueue {
                objects: 5000,
                retained_bytes: 5 << 20,
                types: vec![TypeStats { type_name: "App.TempFile".into(), count: 4990, bytes: 4990 * 32 }],
            }),
            finalizer_tid,
            queued_work_items: None,
            warnings: Vec::new(),
        }
    }

    #[test]
    fn a_finalizer_backlog_says_where_the_finalizer_thread_is_or_that_it_is_not_known() {
        let finalizer = DumpThread {
            os_tid: 7,
            managed_id: 2,
            stack: vec![
                "[HelperMethodFrame_1OBJ] System.Threading.Monitor.ObjWait(Int32, System.Object)".into(),
                "System.Threading.ManualResetEventSlim.Wait()".into(),
                "App.Blocker.Finalize()".into(),
            ],
            lock_refs: Vec::new(),
        };
        let threads = [finalizer];
        let analysis = analyze_monitors(&threads, &[]);
        let histogram = HeapHistogram::default();
        let f = build(input(&threads, &analysis, &histogram, Some(7)));
        let b = f.finalization_backlog.unwrap();
        assert_eq!(b.finalizer_thread, Some(ThreadRef { os_tid: 7, managed_id: Some(2) }));
        assert_eq!(
            b.reason,
            "5,000 objects wait in the finalizer queue (most: 4,990 `App.TempFile`), keeping 5.0 MiB; the finalizer \
             thread is in `App.Blocker.Finalize()`: while one finalizer blocks, no other runs, and the memory of \
             everything waiting is never freed"
        );
        let f = build(input(&[], &analysis, &histogram, None));
        assert!(f.finalization_backlog.unwrap().reason.contains("its stack is not in this snapshot (a heap snapshot"));
        // Below the threshold: no finding.
        let mut few = input(&[], &analysis, &histogram, None);
        few.finalizer_queue.as_mut().unwrap().objects = FINALIZATION_BACKLOG_MIN_OBJECTS - 1;
        assert_eq!(build(few).finalization_backlog, None);
    }
}
