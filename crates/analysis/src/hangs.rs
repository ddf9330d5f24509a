//! Hangs that are not lock cycles, from threads' stacks: thread-pool starvation by
//! sync-over-async, and groups of threads blocked at the same place on `SemaphoreSlim`,
//! `ManualResetEventSlim`, a `Task`, `Thread.Join`, `Monitor.Wait` or a wait handle.
//!
//! A thread is *blocked* when, below the innermost frame of application code, the stack runs
//! through one of the wait APIs listed in [`WAITS`]; the outermost such frame names the wait
//! (`Task.Result` rather than the `ManualResetEventSlim.Wait` it uses inside). Threads entering
//! a `lock` are the deadlock analysis' business ([`crate::monitors`]) and are left out here,
//! as are the runtime's own waiting threads, whose stacks hold no application frame.
//!
//! One dump is one instant, so a group of blocked threads says *where* threads wait, not for
//! how long; groups are reported from [`HangThresholds::min_threads`] threads with identical
//! stacks. Thread-pool starvation is stronger: pool threads blocked on tasks while work items
//! wait in the pool's queue cannot make progress if those tasks need a pool thread.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::findings::ThreadRef;
use crate::heap::{NodeIndex, ObjectGraph, thousands};
use crate::monitors::DumpThread;

/// When blocked threads are a finding. See `docs/findings-schema.md`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HangThresholds {
    /// Fewest threads with an identical blocked stack for a `blocked_threads` finding
    /// (default 5: a few consumers idling on a queue are normal, a crowd at one call is not).
    pub min_threads: usize,
    /// Fewest pool threads blocked on tasks for `thread_pool_starvation` (default 5; the pool
    /// starts with one thread per core and adds about one per second when starved).
    pub min_starved_pool_threads: usize,
}

impl Default for HangThresholds {
    fn default() -> Self {
        HangThresholds { min_threads: 5, min_starved_pool_threads: 5 }
    }
}

/// Which kind of hang.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HangKind {
    /// Pool threads blocked on tasks while work waits in the pool's queue.
    ThreadPoolStarvation,
    /// Threads blocked at the same place (identical stacks).
    BlockedThreads,
}

/// A group of threads blocked at the same place.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HangFinding {
    /// The kind.
    pub kind: HangKind,
    /// The wait API, e.g. `Task.Wait`, `Task.Result`, `SemaphoreSlim.Wait`.
    pub wait: String,
    /// The innermost application frame: where the code waits.
    pub method: String,
    /// The threads, by OS id.
    pub threads: Vec<ThreadRef>,
    /// Their (identical) stack, innermost first.
    pub stack: Vec<String>,
    /// Work items waiting in the pool's global queue, when the object graph was read.
    pub queued_work_items: Option<u64>,
    /// Why, in words.
    pub reason: String,
}

/// The wait APIs (type and method, generic arity removed), the name a finding gives them, and
/// whether blocking on them from a pool thread is sync-over-async. The JIT may inline the
/// public entry points (`Task.Wait()` into its caller), so the task's inner waiting methods
/// stand for them too; the outermost match wins.
pub const WAITS: [(&str, &str, bool); 21] = [
    ("System.Threading.Tasks.Task.SpinThenBlockingWait", "Task.Wait", true),
    ("System.Threading.Tasks.Task.InternalWaitCore", "Task.Wait", true),
    ("System.Threading.Tasks.Task.InternalWait", "Task.Wait", true),
    ("System.Threading.Tasks.Task.GetResultCore", "Task.Result", true),
    (
        "System.Runtime.CompilerServices.TaskAwaiter.HandleNonSuccessAndDebuggerNotification",
        "GetAwaiter().GetResult()",
        true,
    ),
    ("System.Threading.Tasks.Task.Wait", "Task.Wait", true),
    ("System.Threading.Tasks.Task.WaitAll", "Task.WaitAll", true),
    ("System.Threading.Tasks.Task.WaitAny", "Task.WaitAny", true),
    ("System.Threading.Tasks.Task.get_Result", "Task.Result", true),
    ("System.Runtime.CompilerServices.TaskAwaiter.GetResult", "GetAwaiter().GetResult()", true),
    (
        "System.Runtime.CompilerServices.ConfiguredTaskAwaitable+ConfiguredTaskAwaiter.GetResult",
        "GetAwaiter().GetResult()",
        true,
    ),
    ("System.Threading.SemaphoreSlim.Wait", "SemaphoreSlim.Wait", false),
    ("System.Threading.ManualResetEventSlim.Wait", "ManualResetEventSlim.Wait", false),
    ("System.Threading.CountdownEvent.Wait", "CountdownEvent.Wait", false),
    ("System.Threading.Barrier.SignalAndWait", "Barrier.SignalAndWait", false),
    ("System.Threading.Thread.Join", "Thread.Join", false),
    ("System.Threading.Monitor.Wait", "Monitor.Wait", false),
    ("System.Threading.WaitHandle.WaitOne", "WaitHandle.WaitOne", false),
    ("System.Threading.WaitHandle.WaitAny", "WaitHandle.WaitAny", false),
    ("System.Threading.WaitHandle.WaitAll", "WaitHandle.WaitAll", false),
    ("System.Threading.ReaderWriterLockSlim.TryEnterWriteLock", "ReaderWriterLockSlim.EnterWriteLock", false),
];

/// Frames of the thread pool's dispatch loop: a thread with one of them is a pool thread.
const POOL_FRAMES: [&str; 4] = [
    "System.Threading.ThreadPoolWorkQueue.Dispatch",
    "System.Threading.PortableThreadPool+WorkerThread.WorkerThreadStart",
    "System.Threading._ThreadPoolWaitCallback.PerformWaitCallback",
    "System.Threading.ThreadPoolWorkQueue+WorkStealingQueue",
];

/// `[HelperMethodFrame] System.Threading.Tasks.Task`1[[System.Int32, X]].get_Result()` →
/// `System.Threading.Tasks.Task.get_Result`: the frame's type and method, without runtime
/// frame marker, generic arguments, arity or parameters.
pub fn method_key(frame: &str) -> String {
    let frame = match frame.strip_prefix('[') {
        Some(rest) => rest.split_once("] ").map_or("", |(_, m)| m),
        None => frame,
    };
    let head = frame.split('(').next().unwrap_or(frame);
    let mut out = String::with_capacity(head.len());
    let mut depth = 0usize;
    let mut chars = head.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '[' => depth += 1,
            ']' => depth = depth.saturating_sub(1),
            '`' if depth == 0 => while chars.next_if(char::is_ascii_digit).is_some() {},
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}

/// Application code: not the framework, not a runtime frame, not an unresolved address.
fn is_app_frame(frame: &str) -> bool {
    !(frame.starts_with('[')
        || frame.starts_with("System.")
        || frame.starts_with("Microsoft.")
        || frame.starts_with("Internal.")
        || frame.starts_with("0x")
        || frame.contains("!Unknown"))
}

/// `DiagScenarios.Hangs.OrderService.Get(Int32)` → `OrderService.Get`.
fn short_method(frame: &str) -> String {
    let key = method_key(frame);
    let parts: Vec<&str> = key.rsplitn(3, '.').collect();
    match parts.as_slice() {
        [method, ty, ..] => format!("{ty}.{method}"),
        _ => key,
    }
}

/// Where and on what a thread is blocked: (wait name, sync-over-async, app frame index).
fn blocked_at(stack: &[String]) -> Option<(&'static str, bool, usize)> {
    let site = stack.iter().position(|f| is_app_frame(f))?;
    stack[..site].iter().rev().find_map(|f| {
        let key = method_key(f);
        WAITS.iter().find(|(api, _, _)| key == *api).map(|&(_, name, sync)| (name, sync, site))
    })
}

/// Whether a stack (innermost first) belongs to a thread-pool thread: it runs the pool's
/// dispatch loop.
pub fn is_pool_thread(stack: &[String]) -> bool {
    stack.iter().any(|f| {
        let key = method_key(f);
        POOL_FRAMES.iter().any(|p| key.starts_with(p))
    })
}

/// Groups the blocked threads by identical stack and decides which groups are findings.
/// `queued_work_items` is the pool's queue length ([`queued_work_items`]), when known.
pub fn find_hangs(threads: &[DumpThread], queued_work_items: Option<u64>, t: &HangThresholds) -> Vec<HangFinding> {
    struct Group<'a> {
        wait: &'static str,
        sync_over_async: bool,
        pool: bool,
        site: usize,
        stack: &'a [String],
        threads: Vec<ThreadRef>,
    }
    let mut groups: BTreeMap<(&'static str, &[String]), Group<'_>> = BTreeMap::new();
    for th in threads {
        let Some((wait, sync_over_async, site)) = blocked_at(&th.stack) else {
            continue;
        };
        let group = groups.entry((wait, th.stack.as_slice())).or_insert_with(|| Group {
            wait,
            sync_over_async,
            pool: is_pool_thread(&th.stack),
            site,
            stack: &th.stack,
            threads: Vec::new(),
        });
        // Managed thread ids start at 1: 0 is a thread seen without one (a live sample).
        group.threads.push(ThreadRef { os_tid: th.os_tid, managed_id: (th.managed_id != 0).then_some(th.managed_id) });
    }
    let starved_threads: usize = groups.values().filter(|g| g.pool && g.sync_over_async).map(|g| g.threads.len()).sum();
    let starved = starved_threads >= t.min_starved_pool_threads && queued_work_items.is_none_or(|q| q > 0);
    let mut out: Vec<HangFinding> = groups
        .into_values()
        .filter_map(|mut g| {
            let starving = starved && g.pool && g.sync_over_async;
            if !starving && g.threads.len() < t.min_threads {
                return None;
            }
            g.threads.sort_by_key(|r| r.os_tid);
            let n = g.threads.len();
            let site = short_method(&g.stack[g.site]);
            let reason = if starving {
                let queue = match queued_work_items {
                    Some(q) => format!("while {} work items wait in the pool's queue", thousands(q)),
                    None => "(the pool's queue length is unknown without the object graph)".to_string(),
                };
                format!(
                    "{n} thread-pool threads wait in `{site}` → `{}` (sync over async; {starved_threads} pool threads \
                     blocked on tasks in all) {queue}: the pool is starved, and the tasks they wait for may need a pool \
                     thread to finish",
                    g.wait
                )
            } else {
                format!("{n} threads wait in `{site}` → `{}`, all with the same stack", g.wait)
            };
            Some(HangFinding {
                kind: if starving { HangKind::ThreadPoolStarvation } else { HangKind::BlockedThreads },
                wait: g.wait.to_string(),
                method: g.stack[g.site].clone(),
                threads: g.threads,
                stack: g.stack.to_vec(),
                queued_work_items: if starving { queued_work_items } else { None },
                reason,
            })
        })
        .collect();
    out.sort_by(|a, b| {
        (b.kind == HangKind::ThreadPoolStarvation)
            .cmp(&(a.kind == HangKind::ThreadPoolStarvation))
            .then(b.threads.len().cmp(&a.threads.len()))
            .then_with(|| a.method.cmp(&b.method))
    });
    out
}

/// Work items waiting in the thread pool's global queue: the items referenced by the slot
/// arrays of the `ConcurrentQueue` segments under `System.Threading.ThreadPoolWorkQueue`
/// (a dequeued slot is cleared, so what is referenced still waits). Items queued from pool
/// threads to their local queues are not counted. `None` if the graph has no work queue.
pub fn queued_work_items(graph: &ObjectGraph) -> Option<u64> {
    let queues = graph.nodes_of_type("System.Threading.ThreadPoolWorkQueue");
    if queues.is_empty() {
        return None;
    }
    let mut seen = std::collections::HashSet::new();
    let mut stack: Vec<(NodeIndex, u8)> = queues.into_iter().map(|q| (q, 0)).collect();
    let mut items = 0u64;
    while let Some((node, depth)) = stack.pop() {
        if !seen.insert(node) {
            continue;
        }
        let name = graph.type_name(node);
        if depth > 0 && name.starts_with("System.Collections.Concurrent.ConcurrentQueueSegment") && name.ends_with("[]")
        {
            items += graph.children(node).len() as u64;
            continue;
        }
        if depth < 4 {
            for c in graph.children(node) {
                if graph.type_name(c).starts_with("System.Collections.Concurrent.ConcurrentQueue") {
                    stack.push((c, depth + 1));
                }
            }
        }
    }
    Some(items)
}

#[cfg(test)]
#[path = "hangs_tests.rs"]
mod tests;
