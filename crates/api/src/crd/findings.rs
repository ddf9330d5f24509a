//! The snapshot status' findings section, derived from the analysis' findings document
//! (docs/findings-schema.md). Only what a human or an alert needs is kept, and every list is
//! capped: a status lives in etcd (objects ≤ 1.5 MB), the whole document is an artifact.

use serde::Deserialize;

use super::{
    CrashSummary, DeadlockCycle, DeadlockedThread, FindingsSummary, HangSummary, LeakSuspect, MAX_FRAMES, MAX_LISTED,
    MAX_REASON, MAX_TEXT,
};
use crate::Error;

// The document's own shape, only the fields read here; unknown fields are ignored as the schema
// asks of consumers.
#[derive(Deserialize)]
struct Document {
    schema: String,
    version: u32,
    summary: Summary,
    #[serde(default)]
    deadlocks: Vec<Deadlock>,
    #[serde(default)]
    heap: Option<Heap>,
    #[serde(default)]
    leak_suspects: Option<Vec<Suspect>>,
    #[serde(default)]
    hangs: Vec<Hang>,
    #[serde(default)]
    finalization_backlog: Option<Backlog>,
    #[serde(default)]
    crash: Option<Crash>,
}

#[derive(Deserialize)]
struct Crash {
    exception_type: String,
    thread: ThreadRef,
    #[serde(default)]
    stack: Vec<String>,
    #[serde(default)]
    reason: String,
}

#[derive(Deserialize)]
struct Hang {
    kind: String,
    #[serde(default)]
    threads: Vec<serde_json::Value>,
    #[serde(default)]
    reason: String,
}

#[derive(Deserialize)]
struct Backlog {
    #[serde(default)]
    reason: String,
}

#[derive(Deserialize)]
struct Summary {
    deadlocks: u32,
    #[serde(default)]
    deadlocked_threads: u32,
    #[serde(default)]
    victims: u32,
    #[serde(default)]
    leak_suspects: u32,
}

#[derive(Deserialize)]
struct ThreadRef {
    os_tid: u64,
    managed_id: Option<u64>,
}

#[derive(Deserialize)]
struct LockRef {
    lock_id: u64,
    object_type: String,
}

#[derive(Deserialize)]
struct CycleThread {
    thread: ThreadRef,
    waits_for: LockRef,
    held_by: ThreadRef,
    #[serde(default)]
    stack: Vec<String>,
}

#[derive(Deserialize)]
struct Deadlock {
    cycle: Vec<CycleThread>,
    #[serde(default)]
    victims: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
struct Heap {
    #[serde(default)]
    top_types: Vec<TopType>,
}

#[derive(Deserialize)]
struct TopType {
    type_name: String,
}

#[derive(Deserialize)]
struct Suspect {
    type_name: String,
    instances: u64,
    retained_bytes: u64,
    #[serde(default)]
    heap_share: f64,
    #[serde(default)]
    root: String,
    #[serde(default)]
    path: Vec<String>,
    #[serde(default)]
    reason: String,
}

/// The findings document's `schema` field.
pub const FINDINGS_SCHEMA: &str = "dumpwatch.findings";

impl FindingsSummary {
    /// The status section for a findings document (`dumpwatch analyze --json`). Refuses a
    /// document of another schema or of a version newer than 1.
    pub fn from_document(doc: &serde_json::Value) -> Result<Self, Error> {
        let doc = Document::deserialize(doc).map_err(|e| Error::Findings(e.to_string()))?;
        if doc.schema != FINDINGS_SCHEMA || doc.version != 1 {
            return Err(Error::Findings(format!(
                "schema {:?} version {} (expected {FINDINGS_SCHEMA:?} version 1)",
                doc.schema, doc.version
            )));
        }
        let deadlock_cycles = doc.deadlocks.iter().take(MAX_LISTED).map(cycle).collect();
        let suspects: Vec<LeakSuspect> =
            doc.leak_suspects.unwrap_or_default().iter().take(MAX_LISTED).map(suspect).collect();
        let leak_suspects = doc.summary.leak_suspects.max(suspects.len() as u32);
        let hangs: Vec<HangSummary> = doc
            .hangs
            .iter()
            .take(MAX_LISTED)
            .map(|h| HangSummary {
                kind: clip(&h.kind),
                threads: h.threads.len() as u32,
                reason: clip_to(&h.reason, MAX_REASON),
            })
            .collect();
        let mut summary = one_line(doc.summary.deadlocks, doc.summary.deadlocked_threads, leak_suspects);
        let crash = doc.crash.map(|c| CrashSummary {
            exception_type: clip(&c.exception_type),
            os_tid: c.thread.os_tid,
            top_frames: managed_frames(&c.stack),
            reason: clip_to(&c.reason, MAX_REASON),
        });
        if let Some(c) = &crash {
            let crashed = format!("crashed: {}", c.exception_type);
            summary = if summary == NOTHING { crashed } else { format!("{crashed}, {summary}") };
        }
        if !doc.hangs.is_empty() {
            let hangs = plural(doc.hangs.len() as u32, "hang", "hangs");
            summary = if summary == NOTHING { hangs } else { format!("{summary}, {hangs}") };
        }
        Ok(Self {
            deadlocks: doc.summary.deadlocks,
            victims: doc.summary.victims,
            leak_suspects,
            top_type: doc.heap.and_then(|h| h.top_types.into_iter().next()).map(|t| clip(&t.type_name)),
            summary,
            deadlock_cycles,
            suspects,
            hangs,
            finalization_backlog: doc.finalization_backlog.map(|b| clip_to(&b.reason, MAX_REASON)),
            crash,
        })
    }
}

fn cycle(d: &Deadlock) -> DeadlockCycle {
    let threads = d
        .cycle
        .iter()
        .take(MAX_LISTED)
        .map(|t| DeadlockedThread {
            os_tid: t.thread.os_tid,
            managed_id: t.thread.managed_id,
            waits_for_type: clip(&t.waits_for.object_type),
            lock_id: t.waits_for.lock_id,
            held_by_os_tid: t.held_by.os_tid,
            top_frames: managed_frames(&t.stack),
        })
        .collect();
    DeadlockCycle { threads, victims: d.victims.len() as u32 }
}

/// Innermost frames without the runtime's helper frames (`[HelperMethodFrame_1OBJ] ...`,
/// `[GCFrame]`), which say "waiting" but not where.
fn managed_frames(stack: &[String]) -> Vec<String> {
    stack.iter().filter(|f| !f.starts_with('[')).take(MAX_FRAMES).map(|f| clip(f)).collect()
}

fn suspect(s: &Suspect) -> LeakSuspect {
    LeakSuspect {
        type_name: clip(&s.type_name),
        instances: s.instances,
        retained_bytes: s.retained_bytes,
        heap_percent: (s.heap_share * 100.0).round().clamp(0.0, 100.0) as u32,
        root: clip(&s.root),
        // The ends of the path say the most (the holder near the root, the suspect itself).
        path: if s.path.len() <= 2 * MAX_LISTED {
            s.path.iter().map(|p| clip(p)).collect()
        } else {
            let head = s.path.iter().take(MAX_LISTED).map(|p| clip(p));
            let tail = s.path[s.path.len() - MAX_LISTED..].iter().map(|p| clip(p));
            head.chain(std::iter::once("…".to_string())).chain(tail).collect()
        },
        reason: (!s.reason.is_empty()).then(|| clip_to(&s.reason, MAX_REASON)),
    }
}

fn clip(s: &str) -> String {
    clip_to(s, MAX_TEXT)
}

fn clip_to(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max - 1).collect();
    out.push('…');
    out
}

const NOTHING: &str = "nothing found";

fn plural(n: u32, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn one_line(deadlocks: u32, deadlocked_threads: u32, suspects: u32) -> String {
    let mut parts = Vec::new();
    if deadlocks > 0 {
        parts.push(format!(
            "{} ({})",
            plural(deadlocks, "deadlock", "deadlocks"),
            plural(deadlocked_threads, "thread", "threads")
        ));
    }
    if suspects > 0 {
        parts.push(plural(suspects, "leak suspect", "leak suspects"));
    }
    if parts.is_empty() { NOTHING.into() } else { parts.join(", ") }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc() -> serde_json::Value {
        let frames = |f: &str| {
            serde_json::json!([
                "[HelperMethodFrame_1OBJ] System.Threading.Monitor.ReliableEnter(System.Object, Boolean ByRef)",
                "System.Threading.Monitor.Enter(System.Object, Boolean ByRef)",
                f
            ])
        };
        let lock = |id: u64| serde_json::json!({"lock_id": id, "object": 1, "object_type": "System.Object"});
        serde_json::json!({
            "schema": "dumpwatch.findings", "version": 1, "future_field": true,
            "source": {"kind": "core_dump", "path": "core.1", "runtime_version": null, "dac": null, "threads": 11},
            "summary": {"deadlocks": 1, "deadlocked_threads": 2, "victims": 3, "leak_suspects": 1},
            "deadlocks": [{
                "cycle": [
                    {"thread": {"os_tid": 4105, "managed_id": 15}, "waits_for": lock(10), "held_by": {"os_tid": 4104, "managed_id": 14},
                     "stack": frames("DiagScenarios.Deadlocks.DeadlockFunc(System.Object)")},
                    {"thread": {"os_tid": 4104, "managed_id": 14}, "waits_for": lock(20), "held_by": {"os_tid": 4105, "managed_id": 15},
                     "stack": frames("DiagScenarios.Deadlocks.DeadlockFunc(System.Object)")}
                ],
                "victims": [{}, {}, {}]
            }],
            "long_waits": [],
            "heap": {"objects": 5, "bytes": 100, "top_types": [{"type_name": "System.String", "count": 2, "bytes": 60}]},
            "leak_suspects": [{"type_name": "DiagScenarios.Customer", "instances": 201000, "shallow_bytes": 1,
                "retained_bytes": 19296000, "heap_share": 0.81, "root": "static DiagScenarios.Processor.Current",
                "path": (0..14).map(|i| format!("T{i}")).collect::<Vec<_>>(), "path_instances": 1}],
            "warnings": []
        })
    }

    #[test]
    fn keeps_threads_locks_and_managed_frames() {
        let f = FindingsSummary::from_document(&doc()).unwrap();
        assert_eq!((f.deadlocks, f.victims, f.leak_suspects), (1, 3, 1));
        assert_eq!(f.summary, "1 deadlock (2 threads), 1 leak suspect");
        assert_eq!(f.top_type.as_deref(), Some("System.String"));
        let t = &f.deadlock_cycles[0].threads[0];
        assert_eq!((t.os_tid, t.managed_id, t.held_by_os_tid, t.lock_id), (4105, Some(15), 4104, 10));
        assert_eq!(t.waits_for_type, "System.Object");
        assert_eq!(t.top_frames[0], "System.Threading.Monitor.Enter(System.Object, Boolean ByRef)");
        assert_eq!(t.top_frames.len(), 2, "the helper frame is dropped");
        assert_eq!(f.deadlock_cycles[0].victims, 3);
        let s = &f.suspects[0];
        assert_eq!((s.instances, s.retained_bytes, s.heap_percent), (201000, 19296000, 81));
        assert_eq!(s.path.len(), 2 * MAX_LISTED + 1);
        assert_eq!((s.path[0].as_str(), s.path[5].as_str(), s.path[10].as_str()), ("T0", "…", "T13"));
    }

    #[test]
    fn lists_are_capped_so_the_status_stays_small() {
        let mut d = doc();
        let one = d["deadlocks"][0].clone();
        d["deadlocks"] = serde_json::Value::Array(vec![one; 500]);
        d["summary"]["deadlocks"] = 500.into();
        d["deadlocks"][0]["cycle"][0]["stack"] = serde_json::json!(vec!["x".repeat(100_000); 50]);
        let f = FindingsSummary::from_document(&d).unwrap();
        assert_eq!(f.deadlocks, 500);
        assert_eq!(f.deadlock_cycles.len(), MAX_LISTED);
        let frames = &f.deadlock_cycles[0].threads[0].top_frames;
        assert_eq!(frames.len(), MAX_FRAMES);
        assert_eq!(frames[0].chars().count(), MAX_TEXT);
        assert!(serde_json::to_string(&f).unwrap().len() < 64 * 1024);
    }

    #[test]
    fn refuses_other_documents() {
        let mut d = doc();
        d["schema"] = "something.else".into();
        assert!(FindingsSummary::from_document(&d).unwrap_err().to_string().contains("something.else"));
        assert!(FindingsSummary::from_document(&serde_json::json!({"a": 1})).is_err());
        let mut none = doc();
        none["summary"] = serde_json::json!({"deadlocks": 0});
        none["deadlocks"] = serde_json::json!([]);
        none["leak_suspects"] = serde_json::Value::Null;
        assert_eq!(FindingsSummary::from_document(&none).unwrap().summary, "nothing found");
    }

    #[test]
    fn a_crash_leads_the_summary_and_keeps_its_thread_and_frames() {
        let mut d = doc();
        d["crash"] = serde_json::json!({
            "exception_type": "App.BoomException", "thread": {"os_tid": 13105, "managed_id": 6},
            "stack": ["[HelperMethodFrame]", "App.Crash.Throw()", "App.Crash.Run()"], "source": "crash_report",
            "reason": "the process crashed: unhandled App.BoomException on thread 13105 (managed 6) in App.Crash.Throw"
        });
        let f = FindingsSummary::from_document(&d).unwrap();
        let c = f.crash.as_ref().unwrap();
        assert_eq!((c.exception_type.as_str(), c.os_tid), ("App.BoomException", 13105));
        assert_eq!(c.top_frames, ["App.Crash.Throw()", "App.Crash.Run()"]);
        assert!(f.summary.starts_with("crashed: App.BoomException, 1 deadlock"), "{}", f.summary);
        assert_eq!(FindingsSummary::from_document(&doc()).unwrap().crash, None);
    }
}
