//! Operator mode, after a capture: store its files where the policy says, then report it to the
//! operator (docs/operator.md). This module is the queue: one report at a time, off the
//! watchers' path; captures queue up to [`QUEUE`] deep and a full queue drops (and counts) a
//! report rather than block a watcher. A failed attempt is retried only when the error is
//! transient ([`Error::is_transient`]). Where the files go:
//!
//! - S3 ([`s3`]): upload URLs from the operator, presigned PUTs (multipart when told); the local
//!   capture is deleted once the operator confirmed the report.
//! - a volume ([`volume`]): compressed onto the policy's claim (`DUMPWATCH_STORE`), the local
//!   capture deleted once confirmed; or without a claim, compressed in place (`file://` URIs).

pub mod s3;
pub mod volume;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use api::wire::{CaptureReport, FailureReport, Identity, Manifest};
use api::{Artifact, CaptureKind, DumpPolicySpec, StorageTarget};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tokio::sync::{mpsc, watch};

use crate::Error;
use crate::ids::segment;
use crate::metrics::UploadLabels;
use crate::operator_client::{OperatorClient, backoff};

/// Reports waiting to be stored and sent.
pub const QUEUE: usize = 8;
/// Attempts per report (backoff 2 s doubling to 60 s: about 6 minutes of operator outage).
pub const ATTEMPTS: u32 = 10;
/// Marks a capture on the volume as reported (captures stored elsewhere are deleted instead).
pub const REPORTED: &str = ".reported";

/// One finished capture to store and report.
#[derive(Debug, Clone)]
pub struct Report {
    pub dir: PathBuf,
    pub manifest: Manifest,
    /// The on-demand `DumpSnapshot` this capture answers.
    pub snapshot: Option<String>,
    /// The live finding that caused it (a deadlock).
    pub findings: Option<serde_json::Value>,
}

/// What the queue carries: a capture to store and report, or a capture that failed.
#[derive(Debug, Clone)]
pub enum Queued {
    // Boxed: a manifest is several hundred bytes, and the queue holds up to QUEUE of these.
    Capture(Box<Report>),
    Failure(FailureReport),
}

impl Queued {
    fn snapshot_mut(&mut self) -> &mut Option<String> {
        match self {
            Queued::Capture(r) => &mut r.snapshot,
            Queued::Failure(f) => &mut f.snapshot,
        }
    }

    fn describe(&self) -> String {
        match self {
            Queued::Capture(r) => r.dir.display().to_string(),
            Queued::Failure(f) => format!("failure {}", f.id),
        }
    }
}

/// The captures' handle on the queue.
#[derive(Clone)]
pub struct Reporter {
    tx: mpsc::Sender<Queued>,
    uploads: Family<UploadLabels, Counter>,
}

/// A queue whose results are counted in `uploads` (`dumpwatch_uploads_total`).
pub fn queue(uploads: Family<UploadLabels, Counter>) -> (Reporter, mpsc::Receiver<Queued>) {
    let (tx, rx) = mpsc::channel(QUEUE);
    (Reporter { tx, uploads }, rx)
}

impl Reporter {
    /// Never waits: a full queue drops the report (the capture stays on disk, within budget,
    /// and is reported at the next start).
    pub fn submit(&self, r: Report) {
        self.send(Queued::Capture(Box::new(r)));
    }

    /// Never waits either: a failure the queue cannot take stays in the log and the metrics (an
    /// on-demand snapshot then fails at the operator's capture timeout).
    pub fn submit_failure(&self, f: FailureReport) {
        self.send(Queued::Failure(f));
    }

    fn send(&self, q: Queued) {
        if let Err(e) = self.tx.try_send(q) {
            let q = match e {
                mpsc::error::TrySendError::Full(q) | mpsc::error::TrySendError::Closed(q) => q,
            };
            tracing::warn!(what = %q.describe(), "upload queue full: this is not reported to the operator");
            count(&self.uploads, "dropped");
        }
    }
}

fn count(uploads: &Family<UploadLabels, Counter>, result: &str) {
    uploads.get_or_create(&UploadLabels { result: result.into() }).inc();
}

/// What storing and reporting needs, and nothing of the watchers.
pub struct Context {
    pub policy: watch::Receiver<Arc<DumpPolicySpec>>,
    pub identity: Identity,
    /// The capture folder: volume storage without a claim compresses in place there.
    pub captures: PathBuf,
    /// Where the policy's claim is mounted (`DUMPWATCH_STORE`), when it has one.
    pub claim: Option<PathBuf>,
    pub client: Arc<OperatorClient>,
    /// For presigned storage URLs: public roots (S3 is not the operator).
    pub storage_http: store::HttpClient,
    pub uploads: Family<UploadLabels, Counter>,
}

/// Work through the queue until the sidecar stops.
pub async fn run(ctx: Context, mut rx: mpsc::Receiver<Queued>) {
    let mut answered: HashSet<String> = HashSet::new();
    while let Some(mut r) = rx.recv().await {
        if answered.len() > 1000 {
            answered.clear(); // requests are answered within seconds
        }
        // A request for every process is answered by the first capture; the others become
        // snapshots of their own.
        if let Some(s) = r.snapshot_mut().clone()
            && !answered.insert(s)
        {
            *r.snapshot_mut() = None;
        }
        let mut attempt = 0;
        loop {
            let sent = match &r {
                Queued::Capture(c) => store_and_report(&ctx, c).await,
                Queued::Failure(f) => ctx.client.report_failure(f).await.map(|a| a.snapshot),
            };
            match sent {
                Ok(snapshot) => {
                    tracing::info!(what = %r.describe(), snapshot = %snapshot, "reported to the operator");
                    count(&ctx.uploads, "success");
                    break;
                }
                Err(e) if attempt + 1 < ATTEMPTS && e.is_transient() => {
                    count(&ctx.uploads, "retry");
                    let wait = backoff(attempt, Duration::from_secs(2), Duration::from_secs(60));
                    tracing::warn!(what = %r.describe(), error = %e, attempt, retry_in = ?wait, "upload failed");
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                Err(e) => {
                    tracing::error!(what = %r.describe(), error = %e, transient = e.is_transient(),
                        "report failed for good; a capture stays local");
                    count(&ctx.uploads, "failure");
                    break;
                }
            }
        }
    }
}

/// Store the capture's files, report it, and let the local copy go once the operator has it.
async fn store_and_report(ctx: &Context, r: &Report) -> Result<String, Error> {
    let policy = ctx.policy.borrow().clone();
    let planned = plan(&r.dir)?;
    let capture = capture_id(r);
    // Stored elsewhere than the capture dir: the local copy goes once the report is confirmed.
    let (artifacts, moved) = match (policy.storage.target(), &ctx.claim) {
        (StorageTarget::S3(_), _) => {
            (s3::upload_files(&ctx.client, &ctx.storage_http, &capture, &planned).await?, true)
        }
        (StorageTarget::Volume(_), Some(claim)) => {
            let dir = volume::claim_capture_dir(claim, &ctx.identity.namespace, &ctx.identity.pod, &capture);
            let min_free = policy.limits.min_free_disk.value() as u64;
            (blocking(move || volume::store_on_claim(&dir, &planned, min_free)).await??, true)
        }
        (StorageTarget::Volume(_), None) => {
            let max = policy.limits.max_bytes.value() as u64;
            let root = ctx.captures.clone();
            (blocking(move || volume::compress_in_place(&root, &planned, max)).await??, false)
        }
    };
    let mut manifest = r.manifest.clone();
    manifest.id = capture.clone();
    let report = CaptureReport { manifest, artifacts, snapshot: r.snapshot.clone(), findings: r.findings.clone() };
    let answer = ctx.client.report(&report).await?;
    if moved {
        // Only now is the evidence safe elsewhere.
        std::fs::remove_dir_all(&r.dir).map_err(Error::io(format!("removing the uploaded capture {capture}")))?;
    } else {
        let _ = std::fs::write(r.dir.join(REPORTED), b"");
    }
    Ok(answer.snapshot)
}

/// At start: captures a previous run stored but never got to the operator (killed mid-upload,
/// operator away for good), oldest first, as far as the queue takes them.
pub fn resubmit_leftovers(storage: &crate::storage::Storage, reporter: &Reporter) {
    let mut stored = storage.stored();
    stored.sort_by(|a, b| b.age_secs.total_cmp(&a.age_secs));
    for s in stored.into_iter().filter(|s| !s.path.join(REPORTED).exists()).take(QUEUE) {
        let manifest = std::fs::read(s.path.join("manifest.json")).map_err(|e| e.to_string()).and_then(|b| {
            serde_json::from_slice::<Manifest>(&b).map_err(|e| format!("not a manifest this sidecar writes: {e}"))
        });
        let manifest = match manifest {
            Ok(m) => m,
            Err(why) => {
                tracing::warn!(dir = %s.path.display(), %why, "a capture of an earlier run cannot be reported");
                continue;
            }
        };
        tracing::info!(dir = %s.path.display(), "a capture of an earlier run was never reported: reporting it now");
        let findings = manifest.finding.clone();
        reporter.submit(Report { dir: s.path, manifest, snapshot: None, findings });
    }
}

/// The capture's id as the operator takes it (one path segment).
fn capture_id(r: &Report) -> String {
    segment(&r.manifest.id)
}

/// One file of a capture to store.
#[derive(Debug, Clone, PartialEq)]
pub struct Planned {
    pub source: PathBuf,
    /// Stored name: `<file>.zst`.
    pub name: String,
    pub kind: CaptureKind,
}

/// The files of a capture directory worth storing, in name order. `manifest.json` travels in
/// the report body and `finding.json` as its `findings`; hidden files are half-written.
pub fn plan(dir: &Path) -> Result<Vec<Planned>, Error> {
    let mut out = Vec::new();
    let mut entries: Vec<_> =
        std::fs::read_dir(dir).map_err(Error::io(format!("listing {}", dir.display())))?.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let file = e.file_name().to_string_lossy().into_owned();
        if file.starts_with('.') || file == "manifest.json" || file == "finding.json" || !e.path().is_file() {
            continue;
        }
        let name = if file.ends_with(".zst") { file.clone() } else { format!("{file}.zst") };
        out.push(Planned { source: e.path(), name, kind: kind_of(&file) });
    }
    Ok(out)
}

/// Which capture kind a file belongs to, from its name as `capture` writes it.
pub fn kind_of(file: &str) -> CaptureKind {
    if file.starts_with("heap.") || file.starts_with("histogram.") {
        CaptureKind::Gcdump
    } else if file.starts_with("stacks.") {
        CaptureKind::Stacks
    } else if file.starts_with("trace.") || file.starts_with("trace-summary.") {
        CaptureKind::Trace
    } else if file.starts_with("exceptions.") {
        CaptureKind::Exceptions
    } else {
        // core.<pid>, the DAC beside it, a crash report.
        CaptureKind::Dump
    }
}

/// The artifact of a stored file.
fn artifact(p: &Planned, uri: String, stored: &store::Compressed) -> Artifact {
    Artifact { kind: p.kind, uri, size: stored.size, sha256: stored.sha256.clone() }
}

/// Runs blocking work (compressing, hashing) off the event loop.
pub(crate) async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, Error> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Io { what: "compressing".into(), source: std::io::Error::other(e) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_planned_with_their_kind_and_stored_name() {
        let dir = tempfile::tempdir().unwrap();
        for f in [
            "core.42",
            "libmscordaccore.so",
            "heap.nettrace",
            "histogram.json",
            "stacks.json",
            "trace.nettrace",
            "trace-summary.json",
            "exceptions.json",
            "manifest.json",
        ] {
            std::fs::write(dir.path().join(f), b"x").unwrap();
        }
        std::fs::write(dir.path().join("finding.json"), b"{}").unwrap();
        std::fs::write(dir.path().join(".core.1.partial"), b"half").unwrap();
        let p = plan(dir.path()).unwrap();
        let got: Vec<(&str, CaptureKind)> = p.iter().map(|p| (p.name.as_str(), p.kind)).collect();
        assert_eq!(
            got,
            vec![
                ("core.42.zst", CaptureKind::Dump),
                ("exceptions.json.zst", CaptureKind::Exceptions),
                ("heap.nettrace.zst", CaptureKind::Gcdump),
                ("histogram.json.zst", CaptureKind::Gcdump),
                ("libmscordaccore.so.zst", CaptureKind::Dump),
                ("stacks.json.zst", CaptureKind::Stacks),
                ("trace-summary.json.zst", CaptureKind::Trace),
                ("trace.nettrace.zst", CaptureKind::Trace),
            ]
        );
    }
}
