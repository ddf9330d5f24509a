//! Monitor deadlocks in a dump: who owns which lock comes from the sync blocks, who waits
//! on which lock from the waiter's stack (a thread blocked in `lock`/`Monitor.Enter` has a
//! stack reference to the object it waits for, reported by the runtime frame of
//! `Monitor.Enter`). The resulting wait-for relation goes through the same
//! [`WaitForGraph`] as live detection, with a zero confirm window: a dump is one instant,
//! so every cycle in it is a deadlock at that instant, queued threads are victims, and a lock
//! held long without a cycle is a long wait, not a deadlock.

use std::collections::HashMap;
use std::time::Duration;

use serde::Serialize;

use crate::wait_for::{ContentionStart, Deadlock, LongWait, Timestamp, WaitForConfig, WaitForGraph};

/// A managed thread as seen in the dump.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DumpThread {
    /// Kernel thread id.
    pub os_tid: u64,
    /// Managed thread id.
    pub managed_id: u32,
    /// Symbolized frames, innermost first.
    pub stack: Vec<String>,
    /// Stack references to objects whose monitor is held.
    pub lock_refs: Vec<StackLockRef>,
}

/// A reference from a thread's stack to a locked object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StackLockRef {
    /// The locked object.
    pub object: u64,
    /// Reported by a runtime frame (the `HelperMethodFrame` of `Monitor.Enter` protects the
    /// object the thread waits for), as opposed to a local variable.
    pub from_runtime_frame: bool,
}

/// A monitor (sync block) as seen in the dump.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DumpMonitor {
    /// The lock's identity (sync block address).
    pub lock_id: u64,
    /// The locked object.
    pub object: u64,
    /// Its type name.
    pub object_type: String,
    /// OS tid of the owner, if held.
    pub owner_tid: Option<u64>,
    /// Threads the runtime counts as waiting to enter.
    pub waiters: u32,
}

/// What the monitors of a dump say.
#[derive(Clone, Debug, Serialize)]
pub struct MonitorAnalysis {
    /// Cycles, with the threads queued behind them as victims. Stacks are frame names.
    pub deadlocks: Vec<Deadlock<Vec<String>>>,
    /// Locks with waiters that are not part of, nor stuck behind, a cycle.
    pub long_waits: Vec<LongWait<Vec<String>>>,
    /// Threads blocked entering a monitor whose lock could not be identified.
    pub unattributed_waiters: Vec<u64>,
    /// Threads taken as waiting although their stack shows no `Monitor.Enter` frame (see
    /// [`analyze_monitors`]): the finding rests on the runtime's waiter counts for them.
    pub inferred_waiters: Vec<u64>,
}

/// How many innermost frames may separate the stack top from `Monitor.Enter` (runtime
/// frames such as `[GCFrame]` and `[HelperMethodFrame_1OBJ]` come first on 3.1).
const ENTER_FRAME_DEPTH: usize = 8;

/// True if `stack` is blocked entering a monitor (not `Monitor.Wait`, which releases it).
pub fn is_entering_monitor(stack: &[String]) -> bool {
    stack.iter().take(ENTER_FRAME_DEPTH).any(|f| {
        f.contains("System.Threading.Monitor.")
            && (f.contains(".Enter(") || f.contains(".ReliableEnter(") || f.contains(".TryEnter"))
    })
}

/// Finds deadlocks among `threads` and `monitors`.
pub fn analyze_monitors(threads: &[DumpThread], monitors: &[DumpMonitor]) -> MonitorAnalysis {
    let by_object: HashMap<u64, &DumpMonitor> =
        monitors.iter().filter(|m| m.owner_tid.is_some()).map(|m| (m.object, m)).collect();
    let config = WaitForConfig {
        confirm_window: Duration::ZERO,
        max_waiters: threads.len() + 1,
        max_locks: threads.len() + monitors.len() + 2,
    };
    let mut graph: WaitForGraph<Vec<String>> = WaitForGraph::new(config).expect("caps are consistent");
    let mut unattributed = Vec::new();
    // Threads whose stack does not show Monitor.Enter but references exactly one lock another
    // thread holds: a dump of .NET Core 3.1 sometimes lacks the blocked threads' runtime frame
    // (every waiter's stack then ends in the method that called `lock`). They count as waiters
    // only where the runtime's own waiter count for that lock covers them all.
    let mut tentative: Vec<(&DumpThread, &DumpMonitor)> = Vec::new();
    let mut attributed: HashMap<u64, u32> = HashMap::new();
    for t in threads {
        let entering = is_entering_monitor(&t.stack);
        // Candidates: locked objects referenced from this stack and owned by someone else.
        let candidates = |runtime_only: bool| -> Vec<&DumpMonitor> {
            let mut v: Vec<&DumpMonitor> = t
                .lock_refs
                .iter()
                .filter(|r| !runtime_only || r.from_runtime_frame)
                .filter_map(|r| by_object.get(&r.object).copied())
                .filter(|m| m.owner_tid != Some(t.os_tid))
                .collect();
            v.sort_by_key(|m| m.lock_id);
            v.dedup_by_key(|m| m.lock_id);
            v
        };
        if !entering {
            if let [only] = candidates(false)[..] {
                tentative.push((t, only));
            }
            continue;
        }
        let preferred = candidates(true);
        let chosen = if preferred.len() == 1 {
            Some(preferred[0])
        } else {
            let all = candidates(false);
            (all.len() == 1).then(|| all[0])
        };
        let Some(m) = chosen else {
            unattributed.push(t.os_tid);
            continue;
        };
        *attributed.entry(m.lock_id).or_default() += 1;
        graph.on_start(start(t, m));
    }
    let mut per_lock: HashMap<u64, u32> = HashMap::new();
    for (_, m) in &tentative {
        *per_lock.entry(m.lock_id).or_default() += 1;
    }
    let mut inferred = Vec::new();
    for (t, m) in tentative {
        let seen = attributed.get(&m.lock_id).copied().unwrap_or(0) + per_lock[&m.lock_id];
        if seen <= m.waiters {
            inferred.push(t.os_tid);
            graph.on_start(start(t, m));
        }
    }
    let now = Timestamp::from_nanos(0);
    MonitorAnalysis {
        deadlocks: graph.deadlocks(now),
        long_waits: graph.long_waits(now, Duration::ZERO),
        unattributed_waiters: unattributed,
        inferred_waiters: inferred,
    }
}

fn start(t: &DumpThread, m: &DumpMonitor) -> ContentionStart<Vec<String>> {
    ContentionStart {
        waiter: t.os_tid,
        lock_id: m.lock_id,
        object: m.object,
        owner: m.owner_tid.unwrap_or(0),
        stack: t.stack.clone(),
        timestamp: Timestamp::from_nanos(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enter() -> Vec<String> {
        vec!["[HelperMethodFrame_1OBJ] System.Threading.Monitor.ReliableEnter(System.Object, Boolean ByRef)".into()]
    }

    fn thread(tid: u64, refs: &[(u64, bool)], stack: Vec<String>) -> DumpThread {
        DumpThread {
            os_tid: tid,
            managed_id: tid as u32,
            stack,
            lock_refs: refs.iter().map(|&(object, f)| StackLockRef { object, from_runtime_frame: f }).collect(),
        }
    }

    fn monitor(id: u64, object: u64, owner: u64, waiters: u32) -> DumpMonitor {
        DumpMonitor { lock_id: id, object, object_type: "System.Object".into(), owner_tid: Some(owner), waiters }
    }

    #[test]
    fn two_thread_cycle_with_queued_victims() {
        // a holds o1 (local ref) and waits for o2 (frame ref); b the reverse; 3 waiters on o1.
        let threads = vec![
            thread(1, &[(0x20, true), (0x20, false), (0x10, false)], enter()),
            thread(2, &[(0x10, true), (0x10, false), (0x20, false)], enter()),
            thread(3, &[(0x10, true)], enter()),
            thread(4, &[(0x10, true)], enter()),
            thread(5, &[(0x10, true)], enter()),
            thread(6, &[], vec!["Idle.Main()".into()]),
        ];
        let monitors = vec![monitor(100, 0x10, 1, 4), monitor(200, 0x20, 2, 1)];
        let a = analyze_monitors(&threads, &monitors);
        assert_eq!(a.deadlocks.len(), 1);
        let d = &a.deadlocks[0];
        let mut members: Vec<u64> = d.cycle.iter().map(|e| e.waiter_tid).collect();
        members.sort_unstable();
        assert_eq!(members, vec![1, 2]);
        assert_eq!(d.victims.iter().map(|v| v.tid).collect::<Vec<_>>(), vec![3, 4, 5]);
        assert!(a.long_waits.is_empty());
        assert!(a.unattributed_waiters.is_empty());
    }

    #[test]
    fn a_long_held_lock_is_not_a_deadlock() {
        let threads = vec![
            thread(1, &[(0x10, false)], vec!["System.Threading.Thread.Sleep(Int32)".into()]),
            thread(2, &[(0x10, true)], enter()),
        ];
        let a = analyze_monitors(&threads, &[monitor(100, 0x10, 1, 1)]);
        assert!(a.deadlocks.is_empty());
        assert_eq!(a.long_waits.len(), 1);
        assert_eq!(a.long_waits[0].owner_tid, Some(1));
    }

    /// Seen in a real .NET Core 3.1 stall dump: no thread's stack shows Monitor.Enter; each
    /// owner references both locks, the queued threads the one they wait for, and the sync
    /// blocks' waiter counts (9 and 1) cover exactly those threads.
    #[test]
    fn waiters_without_their_enter_frame_are_inferred_where_the_runtime_counts_them() {
        let at = |m: &str| vec![format!("DiagScenarios.Deadlocks.{m}(System.Object)")];
        let mut threads = vec![
            thread(12, &[(0x10, false), (0x20, false)], at("DeadlockFunc")),
            thread(13, &[(0x20, false), (0x10, false)], at("DeadlockFunc")),
        ];
        threads.extend((20..27).map(|t| thread(t, &[(0x10, false)], at("RequestFunc"))));
        threads.push(thread(14, &[(0x10, false)], at("WaiterFunc")));
        let monitors = vec![monitor(11, 0x10, 12, 9), monitor(12, 0x20, 13, 1)];
        let a = analyze_monitors(&threads, &monitors);
        assert_eq!(a.deadlocks.len(), 1, "{a:?}");
        let mut members: Vec<u64> = a.deadlocks[0].cycle.iter().map(|e| e.waiter_tid).collect();
        members.sort_unstable();
        assert_eq!(members, [12, 13]);
        assert_eq!(a.deadlocks[0].victims.len(), 8);
        assert_eq!(a.inferred_waiters.len(), 10);

        // Without waiters counted by the runtime nobody is inferred: a running thread that merely
        // references an object someone else locked is not waiting for it.
        let quiet = vec![monitor(11, 0x10, 12, 0), monitor(12, 0x20, 13, 0)];
        let a = analyze_monitors(&threads, &quiet);
        assert!(a.deadlocks.is_empty() && a.inferred_waiters.is_empty(), "{a:?}");
        // More candidates than the runtime counts: none of that lock's are taken.
        let short = vec![monitor(11, 0x10, 12, 3), monitor(12, 0x20, 13, 1)];
        let a = analyze_monitors(&threads, &short);
        assert!(a.deadlocks.is_empty(), "{a:?}");
        assert_eq!(a.inferred_waiters, [12]);
    }

    #[test]
    fn monitor_wait_is_not_entering() {
        assert!(!is_entering_monitor(&["System.Threading.Monitor.ObjWait(Int32, System.Object)".into()]));
        assert!(is_entering_monitor(&[
            "[GCFrame]".into(),
            "[HelperMethodFrame_1OBJ]".into(),
            "System.Threading.Monitor.Enter(System.Object, Boolean ByRef)".into()
        ]));
    }
}
