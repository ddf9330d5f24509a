//! Why a process crashed: the unhandled exception and the thread that threw it, from the
//! runtime's own crash report (`<dump>.crashreport.json`, .NET 6 and later) and the dump's
//! threads (each thread's last-thrown exception, which is all .NET Core 3.1 leaves).
//!
//! The crash report is written by the crashing app's runtime: untrusted input. It is read with
//! bounds (size, frames, text lengths) and a malformed one is an error the caller turns into a
//! warning, never a panic.

use serde::{Deserialize, Serialize};

use crate::findings::ThreadRef;

/// Largest crash report read (a real one is tens of KiB: every thread's native and managed frames).
pub const MAX_REPORT_BYTES: usize = 16 << 20;
/// Frames kept of the crashing thread's stack.
pub const MAX_FRAMES: usize = 64;
/// Longest type or frame name kept.
const MAX_NAME: usize = 1024;

/// Why the process died.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrashFinding {
    /// The unhandled exception's type (`Namespace.Type`).
    pub exception_type: String,
    /// The thread it was thrown on.
    pub thread: ThreadRef,
    /// That thread's managed stack, innermost first (method names only).
    pub stack: Vec<String>,
    /// Where the exception came from: `crash_report` (the runtime said so) or `dump` (the only
    /// thread of the crash dump with a thrown exception; .NET Core 3.1 writes no report).
    pub source: CrashSource,
    /// One sentence for Events and the report.
    pub reason: String,
}

/// What named the exception.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CrashSource {
    CrashReport,
    Dump,
}

/// The crashing thread as the runtime's crash report describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReportedCrash {
    pub exception_type: Option<String>,
    pub os_tid: u64,
    /// Managed frames' method names, innermost first.
    pub managed_frames: Vec<String>,
}

/// A crash report that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CrashReportError {
    #[error("crash report of {0} bytes is larger than the {MAX_REPORT_BYTES} read")]
    TooLarge(usize),
    #[error("crash report is not the runtime's JSON: {0}")]
    Malformed(String),
    #[error("crash report names no crashed thread")]
    NoCrashedThread,
}

// The report's shape (runtime: src/coreclr/debug/createdump/crashreportwriter.cpp): every value
// a string, numbers in hex.
#[derive(Deserialize)]
struct Report {
    payload: Payload,
}

#[derive(Deserialize)]
struct Payload {
    #[serde(default)]
    threads: Vec<ReportThread>,
}

#[derive(Deserialize)]
struct ReportThread {
    #[serde(default)]
    crashed: Option<String>,
    #[serde(default)]
    managed_exception_type: Option<String>,
    #[serde(default)]
    native_thread_id: Option<String>,
    #[serde(default)]
    stack_frames: Vec<ReportFrame>,
}

#[derive(Deserialize)]
struct ReportFrame {
    #[serde(default)]
    is_managed: Option<String>,
    #[serde(default)]
    method_name: Option<String>,
}

/// Reads the crashed thread out of a runtime crash report.
pub fn read_crash_report(bytes: &[u8]) -> Result<ReportedCrash, CrashReportError> {
    if bytes.len() > MAX_REPORT_BYTES {
        return Err(CrashReportError::TooLarge(bytes.len()));
    }
    let report: Report = serde_json::from_slice(bytes).map_err(|e| CrashReportError::Malformed(e.to_string()))?;
    let crashed = report
        .payload
        .threads
        .into_iter()
        .find(|t| t.crashed.as_deref() == Some("true"))
        .ok_or(CrashReportError::NoCrashedThread)?;
    let os_tid = crashed
        .native_thread_id
        .as_deref()
        .and_then(parse_hex)
        .ok_or_else(|| CrashReportError::Malformed("the crashed thread has no native_thread_id".into()))?;
    let managed_frames = crashed
        .stack_frames
        .into_iter()
        .filter(|f| f.is_managed.as_deref() == Some("true"))
        .filter_map(|f| f.method_name)
        .map(|n| clip(&n))
        .take(MAX_FRAMES)
        .collect();
    Ok(ReportedCrash {
        exception_type: crashed.managed_exception_type.filter(|t| !t.is_empty()).map(|t| clip(&t)),
        os_tid,
        managed_frames,
    })
}

fn parse_hex(s: &str) -> Option<u64> {
    u64::from_str_radix(s.trim_start_matches("0x").trim_start_matches("0X"), 16).ok()
}

fn clip(s: &str) -> String {
    if s.len() <= MAX_NAME {
        return s.to_string();
    }
    let mut end = MAX_NAME;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// A thread of the crash dump, as far as the crash finding needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CrashedThreadCandidate {
    pub os_tid: u64,
    pub managed_id: u32,
    /// Managed frames, innermost first.
    pub stack: Vec<String>,
    /// The type of the exception it threw last, if any.
    pub last_exception: Option<String>,
}

/// Names the crash of a dump the runtime wrote while crashing: the report's crashed thread
/// when there is a report, else the one thread of the dump that holds a thrown exception (with
/// several, the crash is not named: any of them may have caught theirs).
pub fn crash_finding(report: Option<&ReportedCrash>, threads: &[CrashedThreadCandidate]) -> Option<CrashFinding> {
    let (exception_type, thread, stack, source) = match report {
        Some(r) => {
            let in_dump = threads.iter().find(|t| t.os_tid == r.os_tid);
            let exception_type = r
                .exception_type
                .clone()
                .or_else(|| in_dump.and_then(|t| t.last_exception.clone()))
                .unwrap_or_else(|| "<not a managed exception>".into());
            // The dump's own walk where it has frames (symbolized like every other stack of the
            // report), else the runtime's list.
            let stack = match in_dump {
                Some(t) if !t.stack.is_empty() => t.stack.clone(),
                _ => r.managed_frames.clone(),
            };
            let thread = ThreadRef { os_tid: r.os_tid, managed_id: in_dump.map(|t| t.managed_id) };
            (exception_type, thread, stack, CrashSource::CrashReport)
        }
        None => {
            let mut with_exception = threads.iter().filter(|t| t.last_exception.is_some());
            let t = with_exception.next()?;
            if with_exception.next().is_some() {
                return None;
            }
            let thread = ThreadRef { os_tid: t.os_tid, managed_id: Some(t.managed_id) };
            (t.last_exception.clone()?, thread, t.stack.clone(), CrashSource::Dump)
        }
    };
    let stack: Vec<String> = stack.into_iter().take(MAX_FRAMES).collect();
    let at = stack.iter().find(|f| !f.starts_with('[')).map(|f| format!(" in {}", method_only(f))).unwrap_or_default();
    let managed = thread.managed_id.map(|m| format!(" (managed {m})")).unwrap_or_default();
    let reason = format!("the process crashed: unhandled {exception_type} on thread {}{managed}{at}", thread.os_tid);
    Some(CrashFinding { exception_type, thread, stack, source, reason })
}

/// `Ns.Type.Method(Args)` without its argument list.
fn method_only(frame: &str) -> &str {
    frame.split('(').next().unwrap_or(frame)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(threads: serde_json::Value) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({"payload": {"protocol_version": "1.0.0", "threads": threads}})).unwrap()
    }

    fn candidate(os_tid: u64, managed_id: u32, stack: &[&str], exception: Option<&str>) -> CrashedThreadCandidate {
        CrashedThreadCandidate {
            os_tid,
            managed_id,
            stack: stack.iter().map(|s| s.to_string()).collect(),
            last_exception: exception.map(str::to_string),
        }
    }

    #[test]
    fn the_report_names_the_crashed_thread_and_its_exception() {
        let bytes = report(serde_json::json!([
            {"is_managed": "true", "crashed": "false", "native_thread_id": "0x10",
             "stack_frames": [{"is_managed": "true", "method_name": "Other.Run()"}]},
            {"is_managed": "true", "crashed": "true", "native_thread_id": "0x3331",
             "managed_exception_type": "App.BoomException",
             "stack_frames": [
                {"is_managed": "false", "unmanaged_name": "wait4"},
                {"is_managed": "true", "method_name": "App.Worker.Throw()"},
                {"is_managed": "true", "method_name": "App.Worker.Run()"}]}
        ]));
        let r = read_crash_report(&bytes).unwrap();
        assert_eq!(r.os_tid, 0x3331);
        assert_eq!(r.exception_type.as_deref(), Some("App.BoomException"));
        assert_eq!(r.managed_frames, ["App.Worker.Throw()", "App.Worker.Run()"]);

        // The dump's thread without frames: the report's frames stand in.
        let f = crash_finding(Some(&r), &[candidate(0x3331, 7, &[], None)]).unwrap();
        assert_eq!(f.thread, ThreadRef { os_tid: 0x3331, managed_id: Some(7) });
        assert_eq!(f.stack, ["App.Worker.Throw()", "App.Worker.Run()"]);
        assert_eq!(f.source, CrashSource::CrashReport);
        assert_eq!(
            f.reason,
            "the process crashed: unhandled App.BoomException on thread 13105 (managed 7) in App.Worker.Throw"
        );
    }

    #[test]
    fn without_a_report_only_a_single_thrower_is_named() {
        let one = [
            candidate(1, 1, &["App.Main()"], None),
            candidate(2, 5, &["[HelperMethodFrame] x", "App.Crash.Throw()"], Some("App.BoomException")),
        ];
        let f = crash_finding(None, &one).unwrap();
        assert_eq!((f.exception_type.as_str(), f.thread.os_tid, f.source), ("App.BoomException", 2, CrashSource::Dump));
        assert!(f.reason.ends_with("in App.Crash.Throw"), "{}", f.reason);

        let two = [candidate(1, 1, &[], Some("System.IO.IOException")), one[1].clone()];
        assert_eq!(crash_finding(None, &two), None, "two throwers: either may have caught its exception");
        assert_eq!(crash_finding(None, &one[..1]), None);
    }

    #[test]
    fn hostile_reports_are_errors_not_panics() {
        assert!(matches!(read_crash_report(b"{"), Err(CrashReportError::Malformed(_))));
        assert!(matches!(read_crash_report(b"[]"), Err(CrashReportError::Malformed(_))));
        assert_eq!(read_crash_report(&report(serde_json::json!([]))), Err(CrashReportError::NoCrashedThread));
        let no_tid = report(serde_json::json!([{"crashed": "true"}]));
        assert!(matches!(read_crash_report(&no_tid), Err(CrashReportError::Malformed(_))));
        let huge_name = "A".repeat(100_000);
        let long = report(serde_json::json!([{"crashed": "true", "native_thread_id": "1",
            "managed_exception_type": huge_name,
            "stack_frames": vec![serde_json::json!({"is_managed": "true", "method_name": "M()"}); 10_000]}]));
        let r = read_crash_report(&long).unwrap();
        assert!(r.exception_type.unwrap().len() <= MAX_NAME + 3);
        assert_eq!(r.managed_frames.len(), MAX_FRAMES);
        assert_eq!(
            read_crash_report(&vec![b' '; MAX_REPORT_BYTES + 1]),
            Err(CrashReportError::TooLarge(MAX_REPORT_BYTES + 1))
        );
    }
}
