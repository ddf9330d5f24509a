//! The Events a snapshot's outcome deserves, as text a human reads in `kubectl describe pod`:
//! which threads deadlock on what and where, which type leaks and what holds it, or why the
//! capture or analysis failed. Each is published on the pod and on the policy.

use api::{DeadlockCycle, DumpSnapshot, FindingsSummary, LeakSuspect, MAX_LISTED, SnapshotPhase};
use kube::ResourceExt;

pub const DEADLOCK_DETECTED: &str = "DeadlockDetected";
pub const MEMORY_LEAK_SUSPECTED: &str = "MemoryLeakSuspected";
pub const THREAD_POOL_STARVATION: &str = "ThreadPoolStarvation";
pub const THREADS_BLOCKED: &str = "ThreadsBlocked";
pub const FINALIZATION_BACKLOG: &str = "FinalizationBacklog";
pub const PROCESS_CRASHED: &str = "ProcessCrashed";
pub const EXCEPTIONS_THROWN: &str = "ExceptionsThrown";
pub const CAPTURE_FAILED: &str = "CaptureFailed";
pub const ANALYSIS_FAILED: &str = "AnalysisFailed";

/// events.k8s.io limits `note` to 1 kB.
const MAX_NOTE: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub warning: bool,
    pub reason: &'static str,
    pub note: String,
}

/// The Events for a snapshot in `Analyzed` or `Failed`; none for other phases.
pub fn outcome_events(snapshot: &DumpSnapshot) -> Vec<Notice> {
    let status = snapshot.status.clone().unwrap_or_default();
    let name = snapshot.name_any();
    match status.phase {
        SnapshotPhase::Failed => {
            // A Job was started: the capture itself had worked.
            let reason = if status.job.is_some() { ANALYSIS_FAILED } else { CAPTURE_FAILED };
            let why = status.message.unwrap_or_else(|| "no reason recorded".into());
            vec![Notice { warning: true, reason, note: clip(format!("{why} (DumpSnapshot {name})")) }]
        }
        SnapshotPhase::Analyzed => {
            let mut out: Vec<Notice> = exception_event(snapshot, &name).into_iter().collect();
            out.extend(status.findings.map(|f| finding_events(&f, &name)).unwrap_or_default());
            out
        }
        _ => Vec::new(),
    }
}

/// An exception trigger's snapshot says what was thrown (the sidecar's words, kept in
/// `observed`): nothing analyzes it afterwards, so this is the one Event it gets.
fn exception_event(snapshot: &DumpSnapshot, name: &str) -> Option<Notice> {
    if snapshot.spec.trigger != api::TriggerKind::Exception {
        return None;
    }
    let what = snapshot.spec.observed.as_deref().unwrap_or("an exception trigger fired");
    let listed = snapshot.spec.artifacts.iter().any(|a| a.kind == api::CaptureKind::Exceptions);
    let more = if listed { "; exceptions.json lists the last ones with their stacks" } else { "" };
    Some(Notice { warning: true, reason: EXCEPTIONS_THROWN, note: clip(format!("{what}{more} (DumpSnapshot {name})")) })
}

fn finding_events(f: &FindingsSummary, snapshot: &str) -> Vec<Notice> {
    // First: a crash is what happened to the pod; what the dump shows besides comes after.
    let crashed = f.crash.iter().map(|c| {
        let at = if c.top_frames.is_empty() { String::new() } else { format!("; at {}", c.top_frames.join(" ← ")) };
        Notice {
            warning: true,
            reason: PROCESS_CRASHED,
            note: clip(format!("{}{at} (DumpSnapshot {snapshot})", c.reason)),
        }
    });
    let mut out: Vec<Notice> = crashed.collect();
    out.extend(f.deadlock_cycles.iter().map(|c| Notice {
        warning: true,
        reason: DEADLOCK_DETECTED,
        note: clip(format!("{} (DumpSnapshot {snapshot})", deadlock_sentence(c))),
    }));
    if f.deadlocks as usize > f.deadlock_cycles.len() && !f.deadlock_cycles.is_empty() {
        let more = f.deadlocks as usize - f.deadlock_cycles.len();
        if let Some(last) = out.last_mut() {
            last.note = clip(format!("{}; {more} more deadlocks in the snapshot", last.note));
        }
    } else if f.deadlocks > 0 && f.deadlock_cycles.is_empty() {
        out.push(Notice {
            warning: true,
            reason: DEADLOCK_DETECTED,
            note: clip(format!("{}: {} (DumpSnapshot {snapshot})", f.summary, plural(f.deadlocks, "deadlock"))),
        });
    }
    out.extend(f.suspects.iter().take(MAX_LISTED).map(|s| Notice {
        warning: true,
        reason: MEMORY_LEAK_SUSPECTED,
        note: clip(format!("{} (DumpSnapshot {snapshot})", leak_sentence(s))),
    }));
    // The analysis words hangs and backlogs itself; the Event carries its sentence.
    out.extend(f.hangs.iter().take(MAX_LISTED).map(|h| Notice {
        warning: true,
        reason: if h.kind == "thread_pool_starvation" { THREAD_POOL_STARVATION } else { THREADS_BLOCKED },
        note: clip(format!("{} (DumpSnapshot {snapshot})", h.reason)),
    }));
    out.extend(f.finalization_backlog.iter().map(|reason| Notice {
        warning: true,
        reason: FINALIZATION_BACKLOG,
        note: clip(format!("{reason} (DumpSnapshot {snapshot})")),
    }));
    out
}

/// "threads 14 and 15 deadlock on two System.Object locks in DeadlockFunc; 3 threads wait
/// behind them (OS threads 4105, 4106)".
pub fn deadlock_sentence(c: &DeadlockCycle) -> String {
    // Managed ids are what a .NET developer sees in a debugger; a live finding may only know
    // the OS ids, and then says so instead of mixing the two.
    let managed: Option<Vec<String>> = c.threads.iter().map(|t| t.managed_id.map(|m| m.to_string())).collect();
    let tids: Vec<String> = c.threads.iter().map(|t| t.os_tid.to_string()).collect();
    let who = match &managed {
        Some(ids) => format!("threads {}", and_list(ids)),
        None => format!("OS threads {}", and_list(&tids)),
    };
    let mut types: Vec<&str> = c.threads.iter().map(|t| t.waits_for_type.as_str()).filter(|t| !t.is_empty()).collect();
    types.sort_unstable();
    types.dedup();
    let locks = match types.as_slice() {
        [] => format!("{} locks", number(c.threads.len())),
        [one] => format!("{} {one} locks", number(c.threads.len())),
        many => format!("locks of {}", and_list(&many.iter().map(|t| t.to_string()).collect::<Vec<_>>())),
    };
    let place = c
        .threads
        .iter()
        .flat_map(|t| t.top_frames.iter())
        .find(|f| !f.starts_with("System.Threading."))
        .map(|f| format!(" in {}", method_name(f)))
        .unwrap_or_default();
    let victims = match c.victims {
        0 => String::new(),
        1 => "; 1 thread waits behind them".into(),
        n => format!("; {n} threads wait behind them"),
    };
    let os = if managed.is_some() { format!(" (OS threads {})", tids.join(", ")) } else { String::new() };
    format!("{who} deadlock on {locks}{place}{victims}{os}")
}

/// "201000 DiagScenarios.Customer objects retain 18.4 MiB (81% of the heap), held by static
/// DiagScenarios.Processor.Current → DiagScenarios.CustomerCache → DiagScenarios.Customer".
/// Suspects from analyses that word their reason (naming the holder: the event, the timer
/// queue, the static field) read as that reason.
pub fn leak_sentence(s: &LeakSuspect) -> String {
    if let Some(reason) = s.reason.as_ref().filter(|r| !r.is_empty()) {
        return reason.clone();
    }
    let path = if s.path.is_empty() { String::new() } else { format!(" → {}", s.path.join(" → ")) };
    format!(
        "{} {} objects retain {} ({}% of the heap), held by {}{path}",
        s.instances,
        s.type_name,
        mib(s.retained_bytes),
        s.heap_percent,
        if s.root.is_empty() { "an unnamed root" } else { &s.root }
    )
}

/// `DiagScenarios.Deadlocks.DeadlockFunc(System.Object)` → `DeadlockFunc`.
fn method_name(frame: &str) -> &str {
    let head = frame.split('(').next().unwrap_or(frame);
    head.rsplit('.').next().unwrap_or(head)
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn number(n: usize) -> String {
    ["zero", "one", "two", "three", "four", "five"].get(n).map_or_else(|| n.to_string(), |w| w.to_string())
}

fn plural(n: u32, word: &str) -> String {
    if n == 1 { format!("1 {word}") } else { format!("{n} {word}s") }
}

fn and_list(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

fn clip(mut s: String) -> String {
    if s.len() > MAX_NOTE {
        let mut cut = MAX_NOTE - 3;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::testing::{deadlock_document, snapshot};

    fn analyzed() -> DumpSnapshot {
        let mut s = snapshot("orders-1", "Analyzed");
        s.status.as_mut().unwrap().findings = Some(FindingsSummary::from_document(&deadlock_document()).unwrap());
        s
    }

    #[test]
    fn an_exception_trigger_says_what_was_thrown() {
        let mut s = snapshot("orders-2", "Analyzed");
        s.spec.trigger = api::TriggerKind::Exception;
        s.spec.observed = Some(
            "3 exceptions matching \"System.*Timeout*\" within 60s, the last \"System.TimeoutException\" \
             (\"took too long\") on thread 4105"
                .into(),
        );
        s.spec.artifacts[0].kind = api::CaptureKind::Exceptions;
        let events = outcome_events(&s);
        assert_eq!(events.len(), 1);
        assert_eq!((events[0].reason, events[0].warning), (EXCEPTIONS_THROWN, true));
        assert_eq!(
            events[0].note,
            "3 exceptions matching \"System.*Timeout*\" within 60s, the last \"System.TimeoutException\" \
             (\"took too long\") on thread 4105; exceptions.json lists the last ones with their stacks \
             (DumpSnapshot orders-2)"
        );
        s.spec.trigger = api::TriggerKind::Deadlock;
        assert!(outcome_events(&s).is_empty(), "other triggers: only their findings speak");
    }

    #[test]
    fn a_deadlock_reads_as_a_sentence() {
        let events = outcome_events(&analyzed());
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].reason, DEADLOCK_DETECTED);
        assert!(events[0].warning);
        assert_eq!(
            events[0].note,
            "threads 14 and 15 deadlock on two System.Object locks in DeadlockFunc; 3 threads wait behind them \
             (OS threads 4105, 4106) (DumpSnapshot orders-1)"
        );
    }

    #[test]
    fn a_crash_comes_first_with_the_exception_and_where_it_was_thrown() {
        let mut doc = deadlock_document();
        doc["crash"] = serde_json::json!({
            "exception_type": "App.BoomException", "thread": {"os_tid": 13105, "managed_id": 6},
            "stack": ["[HelperMethodFrame]", "App.Crash.Throw()", "App.Crash.Run()"], "source": "crash_report",
            "reason": "the process crashed: unhandled App.BoomException on thread 13105 (managed 6) in App.Crash.Throw"
        });
        let mut s = snapshot("orders-9", "Analyzed");
        s.status.as_mut().unwrap().findings = Some(FindingsSummary::from_document(&doc).unwrap());
        let events = outcome_events(&s);
        assert_eq!(events[0].reason, PROCESS_CRASHED);
        assert_eq!(
            events[0].note,
            "the process crashed: unhandled App.BoomException on thread 13105 (managed 6) in App.Crash.Throw; at \
             App.Crash.Throw() ← App.Crash.Run() (DumpSnapshot orders-9)"
        );
        assert_eq!(events[1].reason, DEADLOCK_DETECTED, "the rest of the findings follow");
    }

    #[test]
    fn a_live_deadlock_with_only_os_ids_and_no_lock_types_still_reads_well() {
        let mut f = analyzed().status.unwrap().findings.unwrap();
        let cycle = &mut f.deadlock_cycles[0];
        for t in &mut cycle.threads {
            t.managed_id = None;
            t.waits_for_type.clear();
            t.top_frames.clear();
        }
        assert_eq!(
            deadlock_sentence(cycle),
            "OS threads 4105 and 4106 deadlock on two locks; 3 threads wait behind them"
        );
    }

    #[test]
    fn a_leak_names_the_type_the_bytes_and_what_holds_it() {
        let events = outcome_events(&analyzed());
        assert_eq!(events[1].reason, MEMORY_LEAK_SUSPECTED);
        assert_eq!(
            events[1].note,
            "201000 DiagScenarios.Customer objects retain 18.4 MiB (81% of the heap), held by static \
             DiagScenarios.Processor.Current → DiagScenarios.Processor → DiagScenarios.CustomerCache → \
             DiagScenarios.Customer (DumpSnapshot orders-1)"
        );
    }

    #[test]
    fn worded_findings_read_as_the_analysis_words_them() {
        let mut doc = crate::controller::testing::deadlock_document();
        doc["leak_suspects"][0]["reason"] = "30,000 `App.Observer` objects are reachable only through the invocation \
            list of static event App.Catalog.Changed (30,000 handlers of type `System.EventHandler`): handlers added \
            and never removed"
            .into();
        doc["hangs"] = serde_json::json!([
            {"kind": "thread_pool_starvation", "threads": [{"os_tid": 1}, {"os_tid": 2}],
             "reason": "2 thread-pool threads wait in `OrderService.Get` → `Task.Result` (sync over async)"},
            {"kind": "blocked_threads", "threads": [], "reason": "6 threads wait in `Inventory.Reserve` → `SemaphoreSlim.Wait`"}
        ]);
        doc["finalization_backlog"] = serde_json::json!({"reason": "5,000 objects wait in the finalizer queue"});
        let mut s = snapshot("orders-3", "Analyzed");
        s.status.as_mut().unwrap().findings = Some(FindingsSummary::from_document(&doc).unwrap());
        let events: Vec<(&str, String)> = outcome_events(&s).into_iter().skip(1).map(|e| (e.reason, e.note)).collect();
        assert_eq!(
            events,
            [
                (
                    MEMORY_LEAK_SUSPECTED,
                    "30,000 `App.Observer` objects are reachable only through the invocation list of static event \
                     App.Catalog.Changed (30,000 handlers of type `System.EventHandler`): handlers added and never \
                     removed (DumpSnapshot orders-3)"
                        .to_string()
                ),
                (
                    THREAD_POOL_STARVATION,
                    "2 thread-pool threads wait in `OrderService.Get` → `Task.Result` (sync over async) (DumpSnapshot \
                     orders-3)"
                        .to_string()
                ),
                (
                    THREADS_BLOCKED,
                    "6 threads wait in `Inventory.Reserve` → `SemaphoreSlim.Wait` (DumpSnapshot orders-3)".to_string()
                ),
                (FINALIZATION_BACKLOG, "5,000 objects wait in the finalizer queue (DumpSnapshot orders-3)".to_string()),
            ]
        );
        assert_eq!(s.status.unwrap().findings.unwrap().summary, "1 deadlock (2 threads), 1 leak suspect, 2 hangs");
    }

    #[test]
    fn failures_say_which_step_failed_and_why() {
        let mut capture = snapshot("orders-2", "Failed");
        capture.status.as_mut().unwrap().message = Some("the runtime refused the dump three times".into());
        let e = outcome_events(&capture);
        assert_eq!(
            (e[0].reason, e[0].note.as_str()),
            (CAPTURE_FAILED, "the runtime refused the dump three times (DumpSnapshot orders-2)")
        );
        let mut analysis = capture.clone();
        analysis.status.as_mut().unwrap().job = Some("dsnap-orders-2-analyze".into());
        assert_eq!(outcome_events(&analysis)[0].reason, ANALYSIS_FAILED);
    }

    #[test]
    fn nothing_found_and_unfinished_snapshots_make_no_events() {
        assert!(outcome_events(&snapshot("a", "Analyzed")).is_empty());
        assert!(outcome_events(&snapshot("a", "Analyzing")).is_empty());
    }

    #[test]
    fn notes_fit_the_events_api() {
        let mut s = snapshot("orders-1", "Failed");
        s.status.as_mut().unwrap().message = Some("é".repeat(2000));
        assert!(outcome_events(&s)[0].note.len() <= MAX_NOTE);
    }
}
