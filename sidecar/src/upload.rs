//! After a capture, in operator mode: store its files (zstd) where the policy says, then report
//! the capture to the operator. One report at a time, off the watchers' path: captures queue up
//! to [`QUEUE`] deep and a full queue drops (and counts) a report rather than block a watcher.
//!
//! - S3: upload URLs from the operator, presigned PUTs (multipart when told), then the report;
//!   the local capture is deleted only once the operator confirmed the report.
//! - Volume on a claim (`DUMPWATCH_STORE`): compressed onto the claim ([`crate::claim_store`]),
//!   the local capture deleted once the operator confirmed the report.
//! - Volume without a claim: compressed in place on the volume (`file://` URIs), originals removed as each
//!   compressed file is complete, never passing `limits.maxBytes`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::Error;
use crate::artifacts::{self, Planned};
use crate::metrics::UploadLabels;
use crate::operator_client::{
    ArtifactRef, CaptureReport, CompleteRequest, FailureReport, FileSize, OperatorClient, UploadTarget, UploadsRequest,
    backoff, error_chain,
};
use crate::watcher::Shared;

/// Reports waiting to be stored and sent.
pub const QUEUE: usize = 8;
/// Attempts per report (backoff 2 s doubling to 60 s: about 6 minutes of operator outage).
pub const ATTEMPTS: u32 = 10;

/// One finished capture to store and report.
#[derive(Debug, Clone)]
pub struct Report {
    pub dir: PathBuf,
    pub manifest: serde_json::Value,
    /// The on-demand `DumpSnapshot` this capture answers.
    pub snapshot: Option<String>,
    /// The live finding that caused it (a deadlock).
    pub findings: Option<serde_json::Value>,
}

/// What the queue carries: a capture to store and report, or a capture that failed.
#[derive(Debug, Clone)]
pub enum Queued {
    Capture(Report),
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

/// The watchers' handle on the queue.
#[derive(Clone)]
pub struct Reporter {
    tx: mpsc::Sender<Queued>,
}

pub fn queue() -> (Reporter, mpsc::Receiver<Queued>) {
    let (tx, rx) = mpsc::channel(QUEUE);
    (Reporter { tx }, rx)
}

impl Reporter {
    /// Never waits: a full queue drops the report (the capture stays on disk, within budget).
    pub fn submit(&self, shared: &Shared, r: Report) {
        self.send(shared, Queued::Capture(r));
    }

    /// Never waits either: a failure the queue cannot take stays in the log and the metrics (an
    /// on-demand snapshot then fails at the operator's capture timeout).
    pub fn submit_failure(&self, shared: &Shared, f: FailureReport) {
        self.send(shared, Queued::Failure(f));
    }

    fn send(&self, shared: &Shared, q: Queued) {
        if let Err(e) = self.tx.try_send(q) {
            let q = match e {
                mpsc::error::TrySendError::Full(q) | mpsc::error::TrySendError::Closed(q) => q,
            };
            tracing::warn!(what = %q.describe(), "upload queue full: this is not reported to the operator");
            count(shared, "dropped");
        }
    }
}

fn count(shared: &Shared, result: &str) {
    shared.metrics.uploads.get_or_create(&UploadLabels { result: result.into() }).inc();
}

/// Work through the queue until the sidecar stops.
/// `store`: where the policy's claim is mounted (`DUMPWATCH_STORE`), when it has one.
pub async fn run(
    shared: Arc<Shared>,
    client: Arc<OperatorClient>,
    mut rx: mpsc::Receiver<Queued>,
    store: Option<PathBuf>,
) {
    let storage_http = storage_client();
    let answered: Mutex<HashSet<String>> = Mutex::default();
    while let Some(mut r) = rx.recv().await {
        if answered.lock().expect("poisoned").len() > 1000 {
            answered.lock().expect("poisoned").clear(); // requests are answered within seconds
        }
        // A request for every process is answered by the first capture; the others become
        // snapshots of their own.
        if let Some(s) = r.snapshot_mut().clone()
            && !answered.lock().expect("poisoned").insert(s)
        {
            *r.snapshot_mut() = None;
        }
        let mut attempt = 0;
        loop {
            let sent = match &r {
                Queued::Capture(c) => store_and_report(&shared, &client, &storage_http, c, store.as_deref()).await,
                Queued::Failure(f) => client.report_failure(f).await.map(|a| a.snapshot),
            };
            match sent {
                Ok(snapshot) => {
                    tracing::info!(what = %r.describe(), snapshot = ?snapshot, "reported to the operator");
                    count(&shared, "success");
                    break;
                }
                Err(e) if attempt + 1 < ATTEMPTS && retriable(&e) => {
                    count(&shared, "retry");
                    let wait = backoff(attempt, Duration::from_secs(2), Duration::from_secs(60));
                    tracing::warn!(what = %r.describe(), error = %e, attempt, retry_in = ?wait, "upload failed");
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                Err(e) => {
                    tracing::error!(what = %r.describe(), error = %e, "report failed for good; a capture stays local");
                    count(&shared, "failure");
                    break;
                }
            }
        }
    }
}

/// The client for presigned storage URLs: public roots (S3 is not the operator).
pub fn storage_client() -> reqwest::Client {
    reqwest::Client::builder()
        .use_rustls_tls()
        .connect_timeout(Duration::from_secs(10))
        .read_timeout(Duration::from_secs(60))
        .build()
        .expect("TLS client")
}

/// A missing capture (retention removed it) or a policy refusal does not get better by waiting.
fn retriable(e: &Error) -> bool {
    match e {
        Error::OperatorStatus { status, .. } => *status >= 500 || *status == 401 || *status == 403 || *status == 429,
        Error::Io { source, .. } => source.kind() != std::io::ErrorKind::NotFound,
        _ => true,
    }
}

async fn store_and_report(
    shared: &Shared,
    client: &OperatorClient,
    storage_http: &reqwest::Client,
    r: &Report,
    store: Option<&Path>,
) -> Result<Option<String>, Error> {
    let policy = shared.policy.borrow().clone();
    let planned = artifacts::plan(&r.dir)?;
    let s3 = policy.storage.s3.is_some();
    // Stored elsewhere than the capture dir: the local copy goes once the report is confirmed.
    let moved = s3 || store.is_some();
    let artifacts = if s3 {
        upload_s3(client, storage_http, r, &planned).await?
    } else if let Some(store) = store {
        let id = &shared.identity;
        let dir = crate::claim_store::capture_dir(store, &id.namespace, &id.pod, &capture_id(r));
        let min_free = policy.limits.min_free_disk.value() as u64;
        blocking(move || crate::claim_store::store(&dir, &planned, min_free)).await??
    } else {
        let max = policy.limits.max_bytes.value() as u64;
        let root = shared.storage.root().to_path_buf();
        blocking(move || compress_in_place(&root, &planned, max)).await??
    };
    let capture = capture_id(r);
    let report = CaptureReport {
        manifest: {
            let mut m = r.manifest.clone();
            if m.is_object() {
                m["id"] = capture.clone().into();
            }
            m
        },
        artifacts,
        snapshot: r.snapshot.clone(),
        findings: r.findings.clone(),
    };
    let answer = client.report(&report).await?;
    if moved {
        // Only now is the evidence safe elsewhere.
        std::fs::remove_dir_all(&r.dir).map_err(Error::io(format!("removing the uploaded capture {capture}")))?;
    } else {
        let _ = std::fs::write(r.dir.join(REPORTED), b"");
    }
    Ok(answer.snapshot)
}

/// Marks a capture on the volume as reported (S3 captures are deleted instead).
pub const REPORTED: &str = ".reported";

/// At start: captures a previous run stored but never got to the operator (killed mid-upload,
/// operator away for good), oldest first, as far as the queue takes them.
pub fn resubmit_leftovers(shared: &Shared) {
    let mut stored = shared.storage.stored();
    stored.sort_by(|a, b| b.age_secs.total_cmp(&a.age_secs));
    for s in stored.into_iter().filter(|s| !s.path.join(REPORTED).exists()).take(QUEUE) {
        let Some(manifest) = std::fs::read(s.path.join("manifest.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        else {
            continue;
        };
        tracing::info!(dir = %s.path.display(), "a capture of an earlier run was never reported: reporting it now");
        let findings = manifest.get("finding").cloned();
        if let Some(r) = &shared.reporter {
            r.submit(shared, Report { dir: s.path, manifest, snapshot: None, findings });
        }
    }
}

/// The capture's id as the operator takes it: one path segment of `[A-Za-z0-9._-]`, at most 128
/// characters (it becomes part of an object key). The local id holds the process name, which
/// may not be that tame.
fn capture_id(r: &Report) -> String {
    let raw = r.manifest["id"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| r.dir.file_name().unwrap_or_default().to_string_lossy().into_owned());
    segment(&raw)
}

pub fn segment(raw: &str) -> String {
    let s: String =
        raw.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '-' }).collect();
    let s = s.trim_start_matches('.');
    let s = if s.is_empty() { "capture" } else { s };
    s.chars().take(128).collect()
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, Error> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Io { what: "compressing".into(), source: std::io::Error::other(e) })
}

/// Volume storage: each file becomes `<file>.zst` beside it; `file://` URIs.
fn compress_in_place(root: &Path, planned: &[Planned], max_bytes: u64) -> Result<Vec<ArtifactRef>, Error> {
    let mut out = Vec::new();
    for p in planned {
        let dst = p.source.with_file_name(&p.name);
        let (size, sha256) = if p.source == dst {
            artifacts::sha256_of(&dst)? // compressed by an earlier attempt
        } else {
            let headroom = max_bytes.saturating_sub(crate::storage::dir_size(root));
            let r = artifacts::compress_to_file(&p.source, &dst, headroom)?;
            std::fs::remove_file(&p.source).map_err(Error::io(format!("removing {}", p.source.display())))?;
            r
        };
        let abs = std::path::absolute(&dst).map_err(Error::io("resolving the artifact path"))?;
        out.push(ArtifactRef { kind: p.kind, uri: format!("file://{}", abs.display()), size, sha256 });
    }
    Ok(out)
}

async fn upload_s3(
    client: &OperatorClient,
    http: &reqwest::Client,
    r: &Report,
    planned: &[Planned],
) -> Result<Vec<ArtifactRef>, Error> {
    upload_files(client, http, &capture_id(r), planned).await
}

/// Store `planned` through the operator's upload URLs; the artifacts to report.
pub async fn upload_files(
    client: &OperatorClient,
    http: &reqwest::Client,
    capture: &str,
    planned: &[Planned],
) -> Result<Vec<ArtifactRef>, Error> {
    let mut measured = Vec::new();
    for p in planned {
        let src = p.source.clone();
        measured.push(blocking(move || artifacts::measure(&src)).await??);
    }
    let capture = capture.to_string();
    let files =
        planned.iter().zip(&measured).map(|(p, (size, _))| FileSize { name: p.name.clone(), size: *size }).collect();
    let answer = client.uploads(&UploadsRequest { capture: capture.clone(), files }).await?;
    let mut out = Vec::new();
    for (p, (size, sha256)) in planned.iter().zip(measured) {
        let target = answer
            .files
            .iter()
            .find(|t| t.name == p.name)
            .ok_or_else(|| Error::Operator(format!("no upload URL for {}", p.name)))?;
        put_file(client, http, &capture, &p.source, target, size, &sha256).await?;
        out.push(ArtifactRef { kind: p.kind, uri: target.uri.clone(), size, sha256 });
    }
    Ok(out)
}

/// Compress `src` again straight into the upload (single PUT or parts); the bytes must come
/// out as measured, or the upload is refused.
async fn put_file(
    client: &OperatorClient,
    http: &reqwest::Client,
    capture: &str,
    src: &Path,
    target: &UploadTarget,
    size: u64,
    sha256: &str,
) -> Result<(), Error> {
    let part_size = target.multipart.as_ref().map_or(u64::MAX, |m| m.part_size);
    let (tx, rx) = mpsc::channel::<Bytes>(4);
    let src_owned = src.to_path_buf();
    let producer = tokio::task::spawn_blocking(move || {
        artifacts::compress(&src_owned, artifacts::ChunkSender::new(tx, part_size))
    });
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let sent = async {
        match (&target.url, &target.multipart) {
            (Some(url), None) => put(http, url, rx.clone(), size, &target.name).await.map(|_| ()),
            (_, Some(m)) => {
                let r = upload_parts(client, http, capture, target, m, rx.clone(), size).await;
                if r.is_err() {
                    // Empty ETags abort: S3 would otherwise keep the parts (and bill them).
                    let abort = CompleteRequest {
                        capture: capture.to_string(),
                        name: target.name.clone(),
                        upload_id: m.upload_id.clone(),
                        etags: Vec::new(),
                    };
                    let _ = client.complete(&abort).await;
                }
                r
            }
            (None, None) => {
                Err(Error::Operator(format!("the upload target of {} has neither url nor multipart", target.name)))
            }
        }
    };
    let sent = sent.await;
    // Stop the compressor if the upload gave up early.
    drop(rx);
    let produced =
        producer.await.map_err(|e| Error::Io { what: "compressing".into(), source: std::io::Error::other(e) })?;
    sent?;
    let (_, n, sha) = produced?;
    if n != size || sha != sha256 {
        return Err(Error::Operator(format!(
            "{} changed while it was uploaded ({n} bytes, sha256 {sha})",
            src.display()
        )));
    }
    Ok(())
}

/// The parts of a multipart upload, in order, then `/uploads/complete` with their ETags.
async fn upload_parts(
    client: &OperatorClient,
    http: &reqwest::Client,
    capture: &str,
    target: &UploadTarget,
    m: &crate::operator_client::Multipart,
    rx: Arc<tokio::sync::Mutex<mpsc::Receiver<Bytes>>>,
    size: u64,
) -> Result<(), Error> {
    let mut etags = Vec::new();
    let mut left = size;
    for (i, url) in m.parts.iter().enumerate() {
        if left == 0 {
            break;
        }
        let n = left.min(m.part_size);
        let etag = put(http, url, rx.clone(), n, &format!("{} part {}", target.name, i + 1)).await?;
        etags.push(etag.ok_or_else(|| Error::Operator(format!("part {} of {} has no ETag", i + 1, target.name)))?);
        left -= n;
    }
    if left > 0 {
        return Err(Error::Operator(format!("{} needs more parts than the {} offered", target.name, m.parts.len())));
    }
    let req = CompleteRequest {
        capture: capture.to_string(),
        name: target.name.clone(),
        upload_id: m.upload_id.clone(),
        etags,
    };
    client.complete(&req).await
}

/// PUT exactly `len` bytes from the chunk stream; returns the ETag.
async fn put(
    http: &reqwest::Client,
    url: &str,
    rx: Arc<tokio::sync::Mutex<mpsc::Receiver<Bytes>>>,
    len: u64,
    what: &str,
) -> Result<Option<String>, Error> {
    let body = futures_util::stream::unfold((rx, len), |(rx, left)| async move {
        if left == 0 {
            return None;
        }
        let chunk = rx.lock().await.recv().await;
        match chunk {
            Some(c) => {
                let left = left.saturating_sub(c.len() as u64);
                Some((Ok::<Bytes, std::io::Error>(c), (rx, left)))
            }
            None => Some((Err(std::io::Error::other("the compressor stopped early")), (rx, 0))),
        }
    });
    let resp = http
        .put(url)
        .header(reqwest::header::CONTENT_LENGTH, len)
        .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await
        .map_err(|e| Error::Operator(format!("uploading {what}: {}", error_chain(&e))))?;
    let status = resp.status();
    let etag = resp.headers().get(reqwest::header::ETAG).and_then(|v| v.to_str().ok()).map(str::to_string);
    if !status.is_success() {
        let body: String = resp.text().await.unwrap_or_default().chars().take(300).collect();
        return Err(Error::OperatorStatus { what: format!("uploading {what}"), status: status.as_u16(), body });
    }
    Ok(etag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capture_ids_become_one_tame_path_segment() {
        assert_eq!(segment("20261128T042425Z-Orders-42-onDemand"), "20261128T042425Z-Orders-42-onDemand");
        assert_eq!(segment("20261128T042425Z-Shop+Api/ü-42-cpu"), "20261128T042425Z-Shop-Api---42-cpu");
        assert_eq!(segment("..hidden"), "hidden");
        assert_eq!(segment(""), "capture");
        assert_eq!(segment(&"x".repeat(300)).len(), 128);
    }
}
