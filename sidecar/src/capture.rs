//! Taking the evidence from a live process: core dump (DAC beside), heap snapshot (raw nettrace
//! and histogram), all-thread stacks, a CPU trace, the exceptions kept before the firing, into a
//! capture directory. The limits were checked before
//! this runs (`watcher`) and [`crate::commit`] publishes what it took; this module only captures.

use std::path::{Path, PathBuf};
use std::time::Duration;

use api::CaptureKind;
use api::wire::ProcessEntry;
use diag::client::DiagnosticsClient;
use diag::discovery::DotnetProcess;
use diag::exceptions::Thrown;
use diag::stacks::ThreadStack;

use crate::Error;
use crate::commit::Taken;
use crate::metrics::Proc;
use crate::storage::write_json;

/// A process we watch, however we reached it.
#[derive(Clone)]
pub struct Target {
    /// The pid in our PID namespace when we share it, else the runtime's own pid.
    pub pid: u32,
    pub ns_pid: u32,
    /// Short name for labels: the entry assembly or executable.
    pub name: String,
    pub command_line: String,
    pub runtime_version: Option<String>,
    /// Present when `/proc` shows the process (connect mode, or listen mode with a shared PID
    /// namespace): enables the dump size estimate and the DAC copy.
    pub process: Option<DotnetProcess>,
    pub client: DiagnosticsClient,
}

impl Target {
    pub fn labels(&self) -> Proc {
        Proc { pid: self.pid.to_string(), process: self.name.clone() }
    }

    /// The process as a manifest describes it.
    pub fn entry(&self) -> ProcessEntry {
        ProcessEntry {
            pid: self.pid,
            ns_pid: self.ns_pid,
            name: self.name.clone(),
            command_line: self.command_line.clone(),
            runtime_version: self.runtime_version.clone(),
        }
    }

    pub fn runtime_major(&self) -> Option<u32> {
        self.runtime_version.as_deref()?.split('.').next()?.parse().ok()
    }

    /// What a dump of this process will take on disk (upper bound).
    pub fn estimate_dump_bytes(&self, dump_type: diag::protocol::DumpType, working_set: Option<f64>) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).unwrap_or_default();
        if self.process.is_some() && status.contains("VmRSS:") {
            diag::dump::estimate_dump_bytes(&status, dump_type)
        } else {
            // No /proc view (listen mode without a shared PID namespace): the runtime's own
            // working-set counter, with the same margin as the /proc estimate.
            let rss = format!("VmRSS: {} kB\n", working_set.unwrap_or(512e6) as u64 / 1024);
            diag::dump::estimate_dump_bytes(&rss, dump_type)
        }
    }
}

/// Short process name from a command line: `dotnet /app/Orders.dll --x` → `Orders`.
pub fn process_name(command_line: &str) -> String {
    let mut words = command_line.split_whitespace();
    let first = words.next().unwrap_or("");
    let base = |w: &str| {
        let f = w.rsplit('/').next().unwrap_or(w);
        f.strip_suffix(".dll").unwrap_or(f).to_string()
    };
    if base(first) == "dotnet"
        && let Some(dll) = words.find(|w| w.ends_with(".dll"))
    {
        return base(dll);
    }
    let b = base(first);
    if b.is_empty() { "unknown".into() } else { b }
}

/// What to take.
#[derive(Debug, Clone)]
pub struct Request {
    pub kinds: Vec<CaptureKind>,
    pub dump_type: api::DumpType,
    /// A live finding behind the capture: a stacks capture names its frames.
    pub finding: Option<serde_json::Value>,
    pub min_free_bytes: u64,
    pub top_types: usize,
    /// How long a `trace` samples.
    pub trace_duration: Duration,
    /// What an `exceptions` capture holds: the latest exceptions before the firing, oldest first.
    pub exceptions: Vec<Thrown>,
    /// Exceptions seen since the sidecar began watching the process.
    pub exceptions_seen: u64,
}

pub fn dump_type(t: api::DumpType) -> diag::protocol::DumpType {
    use diag::protocol::DumpType as D;
    match t {
        api::DumpType::Mini => D::Mini,
        api::DumpType::Heap => D::WithHeap,
        api::DumpType::Triage => D::Triage,
        api::DumpType::Full => D::Full,
    }
}

/// Take every requested kind into `dir`. Fails only when every kind failed (the caller then
/// leaves nothing behind).
pub async fn take(t: &Target, dir: &Path, req: &Request) -> Result<Taken, Error> {
    let mut taken = Taken { finding: req.finding.clone(), ..Default::default() };
    for &kind in &req.kinds {
        let r = match kind {
            CaptureKind::Stacks => stacks(t, &dir.join("stacks.json")).await.map(|threads| {
                if let Some(f) = &mut taken.finding {
                    name_the_frames(f, &threads);
                }
            }),
            CaptureKind::Gcdump => gcdump(t, dir, req.top_types).await.map(|top| taken.heap_top = Some(top)),
            CaptureKind::Dump => dump(t, dir, req).await,
            CaptureKind::Trace => trace(t, dir, req.trace_duration).await,
            CaptureKind::Exceptions => {
                exceptions_json(t, &dir.join("exceptions.json"), &req.exceptions, req.exceptions_seen).await
            }
        };
        if let Err(e) = &r {
            tracing::warn!(pid = t.pid, kind = kind.name(), error = %e, "capture failed");
            taken.failures.push(format!("{}: {e}", kind.name()));
        }
        taken.results.push((kind.name(), r.is_ok()));
    }
    if taken.results.iter().all(|(_, ok)| !ok) {
        return Err(Error::Io {
            what: format!("capturing pid {}", t.pid),
            source: std::io::Error::other(taken.failures.join("; ")),
        });
    }
    Ok(taken)
}

async fn stacks(t: &Target, out: &Path) -> Result<Vec<ThreadStack>, Error> {
    let threads = diag::stacks::capture(&t.client, Duration::from_millis(50), Duration::from_secs(60)).await?;
    write_json(out, &threads)?;
    Ok(threads)
}

/// A live deadlock finding holds the raw instruction pointers of each waiter (ContentionStart's
/// stack), named later if at all. A stacks capture taken for it names every thread's frames:
/// put them in, so that the finding (and the Event built from it) says where the threads are
/// stuck, e.g. `DeadlockFunc`. Threads the capture did not see keep what they had.
pub fn name_the_frames(finding: &mut serde_json::Value, threads: &[ThreadStack]) {
    let unnamed = |stack: &serde_json::Value| {
        stack.as_array().is_none_or(|frames| frames.iter().all(|f| f.as_str().is_none_or(|s| s.starts_with("0x"))))
    };
    for list in ["cycle", "victims"] {
        let Some(entries) = finding.get_mut(list).and_then(|v| v.as_array_mut()) else { continue };
        for e in entries {
            let Some(tid) = e["thread"].as_u64() else { continue };
            let Some(t) = threads.iter().find(|t| t.os_thread_id == tid && !t.frames.is_empty()) else { continue };
            if unnamed(&e["stack"]) {
                e["stack"] = serde_json::json!(t.frames);
            }
        }
    }
}

/// Methods listed in a trace's summary.
const TRACE_TOP_METHODS: usize = 25;

/// A CPU trace: `trace.nettrace` (raw), `trace.speedscope.json`, and `trace-summary.json` (the
/// methods that burned the CPU, by inclusive samples).
async fn trace(t: &Target, dir: &Path, duration: Duration) -> Result<(), Error> {
    let raw_path = dir.join("trace.nettrace");
    let raw = std::fs::File::create(&raw_path).map_err(Error::io("creating trace.nettrace"))?;
    let captured =
        diag::cpu::capture(&t.client, duration, Some(Box::new(std::io::BufWriter::new(raw))), Duration::from_secs(120))
            .await;
    let mut trace = match captured {
        Ok(trace) => trace,
        Err(e) => {
            let _ = std::fs::remove_file(&raw_path);
            return Err(e.into());
        }
    };
    let all = trace.samples.len();
    let samples = trace.named();
    let name = format!("{} (pid {})", t.name, t.ns_pid);
    write_json(&dir.join("trace.speedscope.json"), &diag::cpu::speedscope(&samples, &name))?;
    let summary = serde_json::json!({
        "duration_seconds": duration.as_secs_f64(),
        "samples": all,
        "running_samples": samples.len(),
        "dropped_samples": trace.dropped,
        "top_methods": diag::cpu::top_methods(&samples, TRACE_TOP_METHODS),
    });
    write_json(&dir.join("trace-summary.json"), &summary)
}

async fn gcdump(t: &Target, dir: &Path, top: usize) -> Result<Vec<(String, u64)>, Error> {
    let raw_path = dir.join("heap.nettrace");
    let raw = std::fs::File::create(&raw_path).map_err(Error::io("creating heap.nettrace"))?;
    let snap = diag::heap::capture(
        &t.client,
        false,
        Some(Box::new(std::io::BufWriter::new(raw))),
        Duration::from_secs(300),
        &mut |_| {},
    )
    .await;
    let snap = match snap {
        Ok(s) => s,
        Err(e) => {
            let _ = std::fs::remove_file(&raw_path);
            return Err(e.into());
        }
    };
    let h = &snap.histogram;
    let json = serde_json::json!({
        "total_objects": h.total_objects(),
        "total_bytes": h.total_bytes(),
        "types": h.top(usize::MAX),
    });
    write_json(&dir.join("histogram.json"), &json)?;
    Ok(h.top(top).iter().map(|t| (t.type_name.clone(), t.bytes)).collect())
}

async fn dump(t: &Target, dir: &Path, req: &Request) -> Result<(), Error> {
    // Without a /proc view, describe the process as the runtime sees itself: the dump path is
    // then on the shared volume, which both sides see under the same name in listen mode.
    let process = t.process.clone().unwrap_or_else(|| DotnetProcess {
        pid: t.ns_pid,
        ns_pid: t.ns_pid,
        socket: PathBuf::new(),
        command_line: t.command_line.clone(),
        runtime_dir: None,
        runtime_version: t.runtime_version.clone(),
        tmpdir: "/tmp".into(),
        foreign_mount_ns: false,
    });
    let output = dir.join(format!("core.{}", t.pid));
    let dreq = diag::dump::DumpRequest {
        process: &process,
        output: &output,
        dump_type: dump_type(req.dump_type),
        min_free_bytes: req.min_free_bytes,
        copy_dac: true,
    };
    match diag::dump::write_dump(&t.client, &dreq).await {
        Ok(_) => Ok(()),
        Err(diag::Error::InsufficientDisk { dir, needed, available }) => {
            Err(Error::DiskGuard(disk_guard(&dir, needed, available, req.min_free_bytes)))
        }
        Err(e) => Err(e.into()),
    }
}

/// The disk guard's refusal as a user reads it: what is free, what the dump needs, and the
/// policy setting (`limits.minFreeDisk`) that keeps the rest free.
pub fn disk_guard(dir: &Path, needed: u64, available: u64, min_free: u64) -> String {
    let dir = dir.parent().unwrap_or(dir); // the capture's folder in the storage root
    format!(
        "disk guard: {} free on {}, the dump needs ~{} and limits.minFreeDisk keeps {} free",
        human_bytes(available),
        dir.display(),
        human_bytes(needed.saturating_sub(min_free)),
        human_bytes(min_free)
    )
}

/// Binary units, one decimal: `3.1 GiB`, `1000.0 TiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 { format!("{n} B") } else { format!("{v:.1} {}", UNITS[u]) }
}

/// The `exceptions` capture: `exceptions.json`, the exceptions kept before the firing with
/// their frames named by a rundown of the process (every method jitted so far). If the rundown
/// fails, the frames stay instruction pointers and the file says why.
pub async fn exceptions_json(t: &Target, path: &Path, thrown: &[Thrown], seen: u64) -> Result<(), Error> {
    let named = match diag::stacks::method_map(&t.client, Duration::from_secs(60)).await {
        Ok(methods) => Ok(diag::exceptions::name(thrown, &methods)),
        Err(e) => Err(e.to_string()),
    };
    let exceptions: Vec<serde_json::Value> = match &named {
        Ok(named) => named
            .iter()
            .map(|e| {
                serde_json::json!({
                    "time": rfc3339(e.unix_ns), "type": e.exception_type, "message": e.message,
                    "hresult": e.hresult, "rethrown": e.rethrown, "thread": e.thread, "stack": e.stack,
                })
            })
            .collect(),
        Err(_) => thrown
            .iter()
            .map(|e| {
                serde_json::json!({
                    "time": rfc3339(e.unix_ns), "type": e.exception_type, "message": e.message,
                    "hresult": format!("{:#010x}", e.hresult), "thread": e.thread,
                    "stack": e.stack.iter().map(|ip| format!("{ip:#x}")).collect::<Vec<_>>(),
                })
            })
            .collect(),
    };
    let doc = serde_json::json!({
        "pid": t.pid,
        "process": t.name,
        "runtime_version": t.runtime_version,
        "exceptions_seen": seen,
        "exceptions": exceptions,
        "frames_unnamed_because": named.err(),
    });
    write_json(path, &doc)
}

fn rfc3339(unix_ns: Option<i64>) -> Option<String> {
    jiff::Timestamp::from_nanosecond(i128::from(unix_ns?)).ok().map(|t| t.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stacks_capture_names_the_frames_of_a_live_deadlock() {
        let mut f = serde_json::json!({"kind": "deadlock",
            "cycle": [{"thread": 28, "stack": ["0x7f01", "0x7f02"]}, {"thread": 27, "stack": ["Known.Frame"]}],
            "victims": [{"thread": 30, "stack": []}, {"thread": 31, "stack": ["0x1"]}]});
        let t = |tid: u64, frames: &[&str]| ThreadStack {
            os_thread_id: tid,
            state: "managed",
            frames: frames.iter().map(|s| s.to_string()).collect(),
        };
        let threads = [
            t(
                28,
                &[
                    "System.Threading.Monitor.Enter(System.Object)",
                    "DiagScenarios.Deadlocks.DeadlockFunc(System.Object)",
                ],
            ),
            t(27, &["Other.Frame"]),
            t(30, &["DiagScenarios.Deadlocks.Waiter()"]),
        ];
        name_the_frames(&mut f, &threads);
        assert_eq!(f["cycle"][0]["stack"][1], "DiagScenarios.Deadlocks.DeadlockFunc(System.Object)");
        assert_eq!(f["cycle"][1]["stack"], serde_json::json!(["Known.Frame"]), "already named: kept");
        assert_eq!(f["victims"][0]["stack"][0], "DiagScenarios.Deadlocks.Waiter()");
        assert_eq!(f["victims"][1]["stack"], serde_json::json!(["0x1"]), "not in the capture: kept");
    }

    #[test]
    fn the_disk_guard_says_what_is_free_and_which_limit_keeps_it() {
        let tib = 1u64 << 40;
        let msg = disk_guard(
            std::path::Path::new("/dumpwatch/.pending-x"),
            1000 * tib + (300 << 20),
            3_328_599_654,
            1000 * tib,
        );
        assert_eq!(
            msg,
            "disk guard: 3.1 GiB free on /dumpwatch, the dump needs ~300.0 MiB and limits.minFreeDisk keeps 1000.0 TiB free"
        );
        assert_eq!(human_bytes(512), "512 B");
    }

    #[test]
    fn names_from_command_lines() {
        assert_eq!(process_name("/usr/share/dotnet/dotnet /app/Orders.dll --port 1"), "Orders");
        assert_eq!(process_name("/app/Orders"), "Orders");
        assert_eq!(process_name("dotnet exec /x/DiagScenarios.dll"), "DiagScenarios");
        assert_eq!(process_name(""), "unknown");
    }
}
