//! The one capture commit, for trigger, on-demand and crash captures alike: one capture at a time
//! in the whole sidecar (the capture lock), within `limits.maxBytes` before and after, the files
//! hashed off the event loop, the manifest written last and the directory published with one
//! rename; then counted, reported (operator mode) and retention applied. What a capture *takes*
//! (a dump through the runtime, a crash dump the runtime left) is the caller's closure.

use std::future::Future;
use std::path::PathBuf;
use std::time::{Instant, SystemTime};

use api::wire::{FailureReport, Firing, Manifest, ProcessEntry};

use crate::Error;
use crate::ids;
use crate::limits::Refusal;
use crate::metrics::{CaptureLabels, Proc};
use crate::report::Report;
use crate::shared::Shared;
use crate::storage::write_json;

/// A capture to take and commit.
#[derive(Debug, Clone)]
pub struct Job {
    pub process: ProcessEntry,
    pub firing: Firing,
    /// The `kind` labels of `dumpwatch_captures_total`: the capture kinds, or `crash`.
    pub kinds: Vec<&'static str>,
    /// The manifest's `dump_type`.
    pub dump_type: &'static str,
    /// Bytes the capture will add to the store (upper bound), checked against `limits.maxBytes`
    /// before anything is taken.
    pub estimate: u64,
    /// The on-demand `DumpSnapshot` this capture answers.
    pub snapshot: Option<String>,
}

/// What the taking put into the capture directory, beyond its files.
#[derive(Debug, Default)]
pub struct Taken {
    /// Per `kind` label: whether it succeeded.
    pub results: Vec<(&'static str, bool)>,
    /// Kinds that failed, with why (the others are still worth keeping).
    pub failures: Vec<String>,
    /// A live finding behind the capture (written as `finding.json`, reported as `findings`).
    pub finding: Option<serde_json::Value>,
    /// Top types of a heap snapshot (for `dotnet_heap_type_bytes`).
    pub heap_top: Option<Vec<(String, u64)>>,
}

/// A capture on the store.
#[derive(Debug)]
pub struct Committed {
    pub dir: PathBuf,
    pub manifest: Manifest,
}

/// Take `job` with `take` (given the capture's hidden directory) and commit it. Never fails: the
/// outcome is counted, logged and, in operator mode, reported (a capture to store, or a failure).
pub async fn capture<F, Fut>(shared: &Shared, job: Job, take: F) -> Option<Committed>
where
    F: FnOnce(PathBuf) -> Fut,
    Fut: Future<Output = Result<Taken, Error>>,
{
    let _one = shared.capture_lock.lock().await;
    let policy = shared.policy();
    let started = Instant::now();
    let result = commit(shared, &job, policy.limits.max_bytes.value() as u64, take).await;
    shared.metrics.capture_seconds.observe(started.elapsed().as_secs_f64());
    let (pid, process) = (job.process.pid, job.process.name.as_str());
    match result {
        Ok((committed, taken)) => {
            for (kind, ok) in &taken.results {
                count(shared, &[kind], if *ok { "success" } else { "failure" });
            }
            if let Some(top) = &taken.heap_top {
                shared.metrics.set_heap_types(&Proc { pid: pid.to_string(), process: process.to_string() }, top);
            }
            let bytes: u64 = committed.manifest.files.iter().map(|f| f.bytes).sum();
            tracing::info!(pid, process, dir = %committed.dir.display(), bytes, "capture stored");
            if let Some(r) = &shared.reporter {
                r.submit(Report {
                    dir: committed.dir.clone(),
                    manifest: committed.manifest.clone(),
                    snapshot: job.snapshot.clone(),
                    findings: committed.manifest.finding.clone(),
                });
            }
            for gone in shared.storage.apply_retention(&policy.retention) {
                tracing::info!(path = %gone.display(), "retention removed an old capture");
            }
            Some(committed)
        }
        Err(Error::Refused(r)) => {
            tracing::info!(pid, process, reason = %r, "capture refused");
            count(shared, &job.kinds, r.label());
            // A person waits on their DumpSnapshot; a trigger refused by the limits is the
            // limits working, not a failure.
            if job.snapshot.is_some() {
                report_failure(shared, &job, format!("capture refused: {r}"));
            }
            None
        }
        Err(e) => {
            tracing::warn!(pid, process, error = %e, "capture failed");
            count(shared, &job.kinds, "failure");
            report_failure(shared, &job, format!("capture failed: {e}"));
            None
        }
    }
}

async fn commit<F, Fut>(shared: &Shared, job: &Job, max: u64, take: F) -> Result<(Committed, Taken), Error>
where
    F: FnOnce(PathBuf) -> Fut,
    Fut: Future<Output = Result<Taken, Error>>,
{
    let used = shared.storage.used_bytes();
    if used + job.estimate > max {
        return Err(Refusal::Budget { used, estimate: job.estimate, max }.into());
    }
    let started = Instant::now();
    let now = SystemTime::now();
    let id = ids::capture_id(now, &job.process.name, job.process.pid, job.firing.trigger);
    let pending = shared.storage.begin(&id)?;
    let taken = take(pending.dir().to_path_buf()).await?;
    if let Some(f) = &taken.finding {
        write_json(&pending.dir().join("finding.json"), f)?;
    }
    // Hashing a multi-GB dump takes seconds: never on the event loop.
    let files = pending.files_async().await?;
    let manifest = Manifest {
        version: 1,
        id,
        created: ids::rfc3339(now),
        identity: shared.identity.clone(),
        process: job.process.clone(),
        trigger: job.firing.clone(),
        dump_type: job.dump_type.to_string(),
        files,
        failures: taken.failures.clone(),
        finding: taken.finding.clone(),
        seconds: started.elapsed().as_secs_f64(),
    };
    let dir = pending.commit(&manifest)?;
    // The estimate is an estimate: a capture that overshoots is removed rather than kept over
    // budget.
    if shared.storage.used_bytes() > max {
        let _ = std::fs::remove_dir_all(&dir);
        let bytes = manifest.files.iter().map(|f| f.bytes).sum();
        return Err(Refusal::Budget { used, estimate: bytes, max }.into());
    }
    Ok((Committed { dir, manifest }, taken))
}

/// Operator mode: a failed capture becomes a `Failed` DumpSnapshot (the one asked for, or a new
/// one) with `reason`, through the report queue.
pub fn report_failure(shared: &Shared, job: &Job, reason: String) {
    let Some(r) = &shared.reporter else { return };
    let id = ids::capture_id(SystemTime::now(), &job.process.name, job.process.pid, job.firing.trigger);
    r.submit_failure(FailureReport {
        id: ids::segment(&format!("{id}-failed")),
        container: Some(shared.identity.container.clone()).filter(|c| !c.is_empty()),
        pid: job.process.pid,
        process: job.process.name.clone(),
        runtime_version: job.process.runtime_version.clone(),
        trigger: job.firing.trigger,
        value: job.firing.value,
        snapshot: job.snapshot.clone(),
        reason,
    });
}

fn count(shared: &Shared, kinds: &[&str], result: &str) {
    for kind in kinds {
        shared.metrics.captures.get_or_create(&CaptureLabels { kind: kind.to_string(), result: result.into() }).inc();
    }
}
