//! Text a person reads in seconds. Pure functions from results to strings, so they are tested
//! without a process.

use std::collections::BTreeMap;
use std::fmt::Write;

use analysis::hangs::{HangFinding, HangKind};
use analysis::heap::{HeapHistogram, ObjectGraph};
use analysis::wait_for::Deadlock;
use diag::counters::CounterSample;
use diag::discovery::DotnetProcess;
use diag::dump::DumpResult;
use diag::stacks::ThreadStack;
use diag::symbols::MethodMap;

pub fn process_table(procs: &[DotnetProcess]) -> String {
    let mut out = String::new();
    if procs.is_empty() {
        out.push_str("no .NET process found (dumpwatch sees processes of its own user, or all as root)\n");
        return out;
    }
    let _ = writeln!(out, "{:>8}  {:>8}  {:<10}  {:<4}  COMMAND", "PID", "NS PID", "RUNTIME", "NS");
    for p in procs {
        let ns = if p.foreign_mount_ns || p.ns_pid != p.pid { "own" } else { "-" };
        let _ = writeln!(
            out,
            "{:>8}  {:>8}  {:<10}  {:<4}  {}",
            p.pid,
            p.ns_pid,
            p.runtime_version.as_deref().unwrap_or("?"),
            ns,
            truncate(&p.command_line, 100)
        );
    }
    out
}

pub fn counter_set(pid: u32, set: &BTreeMap<String, CounterSample>) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "pid {pid}: System.Runtime");
    let mut rows: Vec<&CounterSample> = set.values().collect();
    rows.sort_by(|a, b| a.display_name.cmp(&b.display_name));
    for s in rows {
        let unit = if s.is_rate { format!("{} per {:.0} s", s.units, s.interval_sec) } else { s.units.clone() };
        let _ =
            writeln!(out, "  {:<55} {:>16}  {}", truncate(&s.display_name, 55), format_number(s.value), unit.trim());
    }
    out
}

pub fn stacks(process: &DotnetProcess, threads: &[ThreadStack]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "pid {} ({} managed threads)", process.pid, threads.len());
    for t in threads {
        let _ = writeln!(out, "\nthread {} ({}):", t.os_thread_id, t.state);
        for f in &t.frames {
            let _ = writeln!(out, "    {f}");
        }
    }
    out
}

pub fn histogram(process: &DotnetProcess, h: &HeapHistogram, top: usize) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "pid {}: {} objects, {} on the heap after a full GC\n",
        process.pid,
        h.total_objects(),
        format_bytes(h.total_bytes())
    );
    let _ = writeln!(out, "{:>14} {:>12}  TYPE", "BYTES", "COUNT");
    for t in h.top(top) {
        let _ = writeln!(out, "{:>14} {:>12}  {}", t.bytes, t.count, t.type_name);
    }
    let shown = h.top(top).len();
    if h.types().len() > shown {
        let _ = writeln!(out, "... {} more types", h.types().len() - shown);
    }
    out
}

/// A type that keeps memory alive, and how it is reached from a GC root.
#[derive(Debug, serde::Serialize)]
pub struct Retainer {
    pub type_name: String,
    pub count: u64,
    pub retained_bytes: u64,
    /// `static Processor.Current → Processor → CustomerCache → …`
    pub path: Option<String>,
}

/// The `n` types that retain the most memory (dominator tree), each with the path of a
/// representative instance from its root.
pub fn retainers(graph: &ObjectGraph, n: usize) -> Vec<Retainer> {
    let retained = graph.retained_sizes().by_type(graph);
    let paths = graph.retention_paths();
    retained
        .into_iter()
        .take(n)
        .map(|t| Retainer {
            path: paths.groups_for_type(&t.type_name, 1).into_iter().next().map(|g| g.path.to_string()),
            type_name: t.type_name,
            count: t.count,
            retained_bytes: t.retained_bytes,
        })
        .collect()
}

pub fn retainers_text(retainers: &[Retainer]) -> String {
    let mut out = String::new();
    if retainers.is_empty() {
        return out;
    }
    let _ = writeln!(out, "\nlargest retainers (memory freed if every instance went away) and how they are held:");
    for r in retainers {
        let _ = writeln!(out, "{:>14}  {} ({} instances)", format_bytes(r.retained_bytes), r.type_name, r.count);
        if let Some(p) = &r.path {
            let _ = writeln!(out, "                via {p}");
        }
    }
    out
}

/// The live hang report: one paragraph per group of blocked threads.
pub fn hangs(process: &DotnetProcess, threads: usize, queued: Option<u64>, found: &[HangFinding]) -> String {
    let mut out = String::new();
    let queue = queued.map_or_else(|| "unknown".to_string(), |q| q.to_string());
    let _ = writeln!(out, "pid {}: {threads} threads sampled, thread-pool queue length {queue}", process.pid);
    if found.is_empty() {
        out.push_str("HANGS: none (no crowd of threads blocked at one place)\n");
    }
    for h in found {
        let label = match h.kind {
            HangKind::ThreadPoolStarvation => "THREAD-POOL STARVATION",
            HangKind::BlockedThreads => "BLOCKED THREADS",
        };
        let tids: Vec<String> = h.threads.iter().map(|t| t.os_tid.to_string()).collect();
        let _ = writeln!(out, "{label}: {}\n  threads {}", h.reason, tids.join(", "));
        for f in h.stack.iter().take(8) {
            let _ = writeln!(out, "      at {f}");
        }
    }
    out
}

pub fn dump_result(r: &DumpResult) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "wrote {} dump {} ({}) in {:.1} s",
        r.dump_type.name(),
        r.path.display(),
        format_bytes(r.bytes),
        r.seconds
    );
    match &r.dac {
        Some(d) => {
            let _ = writeln!(
                out,
                "DAC for runtime {} copied to {}",
                r.runtime_version.as_deref().unwrap_or("?"),
                d.display()
            );
        }
        None => out.push_str("the runtime's DAC was not found; analysis will need --dac\n"),
    }
    out
}

/// Does the method map name at least one frame of every stack in the deadlock?
pub fn all_symbolized(methods: &MethodMap, d: &Deadlock) -> bool {
    d.cycle.iter().all(|e| e.waiter_stack.iter().any(|ip| methods.lookup(*ip).is_some()))
}

#[derive(Debug, serde::Serialize)]
pub struct DeadlockReport {
    pub kind: &'static str,
    pub pid: u32,
    pub threads: Vec<DeadlockedThread>,
    pub victims: Vec<Victim>,
}

#[derive(Debug, serde::Serialize)]
pub struct DeadlockedThread {
    pub os_thread_id: u64,
    pub waits_for_lock: u64,
    pub lock_object: u64,
    pub lock_owner_os_thread_id: u64,
    pub stack: Vec<String>,
}

#[derive(Debug, serde::Serialize)]
pub struct Victim {
    pub os_thread_id: u64,
    pub waits_for_lock: u64,
    pub stack: Vec<String>,
}

impl DeadlockReport {
    pub fn new(pid: u32, d: &Deadlock, methods: &MethodMap) -> Self {
        Self {
            kind: "deadlock",
            pid,
            threads: d
                .cycle
                .iter()
                .map(|e| DeadlockedThread {
                    os_thread_id: e.waiter_tid,
                    waits_for_lock: e.lock_id,
                    lock_object: e.lock_object,
                    lock_owner_os_thread_id: e.owner_tid,
                    stack: methods.symbolize(&e.waiter_stack),
                })
                .collect(),
            victims: d
                .victims
                .iter()
                .map(|v| Victim { os_thread_id: v.tid, waits_for_lock: v.lock_id, stack: methods.symbolize(&v.stack) })
                .collect(),
        }
    }

    pub fn text(&self) -> String {
        let mut out = String::new();
        let tids: Vec<String> = self.threads.iter().map(|t| t.os_thread_id.to_string()).collect();
        let _ = writeln!(out, "DEADLOCK in pid {}: threads {} wait for each other", self.pid, tids.join(" and "));
        for t in &self.threads {
            let _ = writeln!(
                out,
                "  thread {} waits for lock 0x{:x} (object 0x{:x}) held by thread {}",
                t.os_thread_id, t.waits_for_lock, t.lock_object, t.lock_owner_os_thread_id
            );
            for f in t.stack.iter().take(12) {
                let _ = writeln!(out, "      at {f}");
            }
        }
        if !self.victims.is_empty() {
            let mut tids: Vec<u64> = self.victims.iter().map(|v| v.os_thread_id).collect();
            tids.sort_unstable();
            let list: Vec<String> = tids.iter().map(u64::to_string).collect();
            let _ = writeln!(out, "  {} more threads are blocked behind it: {}", self.victims.len(), list.join(", "));
        }
        out
    }
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n { s.to_string() } else { format!("{}…", s.chars().take(n - 1).collect::<String>()) }
}

pub fn format_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 { format!("{b} B") } else { format!("{v:.1} {}", UNITS[i]) }
}

fn format_number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 { format!("{}", v as i64) } else { format!("{v:.3}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_are_human() {
        assert_eq!(format_bytes(512), "512 B");
        assert_eq!(format_bytes(1536), "1.5 KiB");
        assert_eq!(format_bytes(95 << 20), "95.0 MiB");
    }

    #[test]
    fn numbers_drop_needless_decimals() {
        assert_eq!(format_number(3.0), "3");
        assert_eq!(format_number(0.25), "0.250");
    }

    #[test]
    fn empty_process_list_says_why() {
        assert!(process_table(&[]).contains("no .NET process found"));
    }
}
