//! The sidecar API's decisions, pure: which policy a pod follows, where its files go, how a
//! capture report becomes a `DumpSnapshot`, who may report findings. The handlers (routes.rs)
//! only fetch inputs and apply these outputs.

use std::collections::BTreeMap;

use api::{Artifact, CaptureKind, DumpSnapshot, DumpSnapshotSpec, DumpSnapshotStatus, FindingsSummary, SnapshotPhase};
use api::{DeadlockCycle, DeadlockedThread, SnapshotVolume, Storage};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::ObjectMeta;
use serde::Deserialize;

use super::ApiError;
use crate::INJECTED_ANNOTATION;
use api::wire::{CaptureReport, FailureReport, FileSize};

/// More files than this in one capture is not a capture the sidecar makes.
pub const MAX_FILES: usize = 32;
/// Label on every snapshot the API creates: the pod it is about (selectable by the sidecar API
/// and by `kubectl get dsnap -l`).
pub const POD_LABEL: &str = "dumpwatch.dev/pod";
/// Label with the capture id, so a retried report finds the snapshot it already created.
pub const CAPTURE_LABEL: &str = "dumpwatch.dev/capture";

/// The policy a pod follows: the one named by the webhook's annotation.
pub fn policy_name(pod: &Pod) -> Option<&str> {
    pod.metadata.annotations.as_ref()?.get(INJECTED_ANNOTATION).map(String::as_str).filter(|n| !n.is_empty())
}

/// A capture id or file name as one path segment: `[A-Za-z0-9._-]`, 1..=128, not `.`/`..`.
pub fn check_segment(what: &str, s: &str) -> Result<(), ApiError> {
    let ok = !s.is_empty()
        && s.len() <= 128
        && s != "."
        && s != ".."
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok { Ok(()) } else { Err(ApiError::bad_request(format!("{what} {s:?} must be 1-128 of [A-Za-z0-9._-]"))) }
}

/// Refuses uploads that cannot be a capture of this policy: too many files, or more bytes than
/// the policy's whole storage budget (`limits.maxBytes`).
pub fn check_upload(files: &[FileSize], max_bytes: u64) -> Result<(), ApiError> {
    if files.is_empty() || files.len() > MAX_FILES {
        return Err(ApiError::bad_request(format!("{} files (1 to {MAX_FILES} per capture)", files.len())));
    }
    for f in files {
        check_segment("file name", &f.name)?;
    }
    if let Some(f) = files.iter().find(|f| f.size > store::s3::MAX_OBJECT_SIZE) {
        return Err(ApiError::too_large(format!("{}: {} bytes is more than an object can hold", f.name, f.size)));
    }
    let total = files.iter().map(|f| f.size).sum::<u64>(); // ≤ 32 × 5 TiB: no overflow
    if total > max_bytes {
        return Err(ApiError::too_large(format!(
            "{total} bytes is more than the policy's limits.maxBytes ({max_bytes})"
        )));
    }
    Ok(())
}

/// Whether artifacts of these kinds go to an analysis Job.
pub fn needs_analysis(artifacts: &[Artifact], analysis_enabled: bool) -> bool {
    analysis_enabled && artifacts.iter().any(|a| matches!(a.kind, CaptureKind::Dump | CaptureKind::Gcdump))
}

/// The name of the snapshot a capture report creates: `<pod>-<capture>`, lower-cased, cut to
/// fit the 63 characters a label value allows (the name goes into the Job's labels too).
pub fn snapshot_name(pod: &str, capture: &str) -> String {
    let raw: String = format!("{pod}-{capture}")
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '-' })
        .collect();
    let trimmed = raw.trim_matches('-');
    if trimmed.len() <= 63 {
        return trimmed.to_string();
    }
    // Keep it unique when cut: the tail is a hash of the whole.
    let digest = ring::digest::digest(&ring::digest::SHA256, raw.as_bytes());
    let hash = store::sigv4::hex(&digest.as_ref()[..4]);
    format!("{}-{hash}", raw[..54].trim_end_matches('-'))
}

/// The capture's id: the manifest's `id`.
pub fn capture_id(report: &CaptureReport) -> Result<String, ApiError> {
    check_segment("manifest id", &report.manifest.id)?;
    Ok(report.manifest.id.clone())
}

/// What a capture report says about the snapshot: its spec (for `pod` in `policy`) and the status
/// it enters. A report with live findings and nothing to analyze is final (`Analyzed`); one
/// with a dump or gcdump to analyze is `Uploaded`, and its live findings are shown until the
/// Job's replace them.
pub fn snapshot_from_report(
    report: &CaptureReport,
    pod: &str,
    policy: &str,
    analysis_enabled: bool,
    volume: Option<SnapshotVolume>,
) -> Result<(DumpSnapshotSpec, DumpSnapshotStatus), ApiError> {
    let m = &report.manifest;
    let trigger = m.trigger.trigger;
    for a in &report.artifacts {
        if a.sha256.len() != 64 || !a.sha256.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(ApiError::bad_request(format!("artifact {}: sha256 must be 64 lowercase hex digits", a.uri)));
        }
    }
    let spec = DumpSnapshotSpec {
        policy: Some(policy.to_string()),
        pod: pod.to_string(),
        container: Some(m.identity.container.clone()),
        pid: Some(m.process.pid),
        runtime_version: m.process.runtime_version.clone(),
        trigger,
        observed: observed(&m.trigger),
        artifacts: report.artifacts.clone(),
        // From the policy's storage (see `snapshot_volume`): analysis and deletion find the
        // files through it even after the policy is gone.
        volume,
        store: None,
    };
    let findings = match &report.findings {
        Some(doc) => Some(live_findings(doc)?),
        None => None,
    };
    let analyze = needs_analysis(&report.artifacts, analysis_enabled);
    let phase = if analyze { SnapshotPhase::Uploaded } else { SnapshotPhase::Analyzed };
    Ok((spec, DumpSnapshotStatus { phase, findings, ..Default::default() }))
}

/// What a snapshot says fired it: a threshold trigger's value; an exception trigger's words
/// (the count, the filter, the last exception: what its Event tells), cut to [`MAX_OBSERVED`].
fn observed(firing: &api::wire::Firing) -> Option<String> {
    if firing.trigger.compares_a_value() {
        return Some(format!("{}", firing.value));
    }
    (firing.trigger == api::TriggerKind::Exception && !firing.detail.is_empty()).then(|| {
        let mut words: String = firing.detail.chars().take(MAX_OBSERVED).collect();
        if words.len() < firing.detail.len() {
            words.push('…');
        }
        words
    })
}

/// The longest `observed` kept: an exception trigger's words carry an app's message.
pub const MAX_OBSERVED: usize = 400;

/// The longest failure reason kept in `status.message` (the Event's note allows 1 kB).
pub const MAX_REASON: usize = 900;

/// What a failure report says about the snapshot: its spec (no artifacts) and the `Failed`
/// status with the reason, for a new snapshot (a trigger's failure) or the one asked for.
pub fn snapshot_from_failure(
    report: &FailureReport,
    pod: &str,
    policy: &str,
) -> Result<(DumpSnapshotSpec, DumpSnapshotStatus), ApiError> {
    check_segment("failure id", &report.id)?;
    let trigger = report.trigger;
    let reason = report.reason.trim();
    if reason.is_empty() {
        return Err(ApiError::bad_request("a failure report needs a reason"));
    }
    let mut message: String = reason.chars().take(MAX_REASON).collect();
    if message.len() < reason.len() {
        message.push('…');
    }
    if !report.process.is_empty() {
        message = format!("{} (pid {}): {message}", report.process, report.pid);
    }
    let spec = DumpSnapshotSpec {
        policy: Some(policy.to_string()),
        pod: pod.to_string(),
        container: report.container.clone(),
        pid: Some(report.pid),
        runtime_version: report.runtime_version.clone(),
        trigger,
        observed: trigger.compares_a_value().then(|| format!("{}", report.value)),
        artifacts: Vec::new(),
        volume: None, // nothing stored
        store: None,
    };
    Ok((spec, DumpSnapshotStatus { phase: SnapshotPhase::Failed, message: Some(message), ..Default::default() }))
}

/// Whether an existing snapshot is the one a retried failure report already created.
pub fn is_same_failure(existing: &DumpSnapshot, pod: &str) -> bool {
    existing.spec.pod == pod && existing.spec.artifacts.is_empty()
}

/// The status section for live findings: a findings document (`schema: dumpwatch.findings`), or
/// the sidecar's live deadlock (`{"kind": "deadlock", "cycle": [...], "victims": [...]}`), or a
/// list of them.
pub fn live_findings(doc: &serde_json::Value) -> Result<FindingsSummary, ApiError> {
    if doc.get("schema").is_some() {
        return FindingsSummary::from_document(doc).map_err(|e| ApiError::bad_request(e.to_string()));
    }
    let items: Vec<&serde_json::Value> = match doc {
        serde_json::Value::Array(list) => list.iter().collect(),
        one => vec![one],
    };
    #[derive(Deserialize)]
    struct Live {
        kind: String,
        #[serde(default)]
        cycle: Vec<LiveEdge>,
        #[serde(default)]
        victims: Vec<serde_json::Value>,
    }
    #[derive(Deserialize)]
    struct LiveEdge {
        thread: u64,
        #[serde(default)]
        waits_for_lock: u64,
        #[serde(default)]
        held_by: u64,
        #[serde(default)]
        stack: Vec<serde_json::Value>,
    }
    let mut summary = FindingsSummary::default();
    let mut threads = 0usize;
    for item in items {
        let live = Live::deserialize(item).map_err(|e| ApiError::bad_request(format!("live finding: {e}")))?;
        if live.kind != "deadlock" {
            continue;
        }
        summary.deadlocks += 1;
        summary.victims += live.victims.len() as u32;
        threads += live.cycle.len();
        if summary.deadlock_cycles.len() < api::MAX_LISTED {
            let threads = live.cycle.iter().take(api::MAX_LISTED).map(|e| DeadlockedThread {
                os_tid: e.thread,
                managed_id: None,
                waits_for_type: String::new(),
                lock_id: e.waits_for_lock,
                held_by_os_tid: e.held_by,
                // Symbolized frames are strings; raw instruction pointers are not worth a status line.
                top_frames: e
                    .stack
                    .iter()
                    .filter_map(|f| f.as_str())
                    .filter(|f| !f.starts_with("0x"))
                    .take(api::MAX_FRAMES)
                    .map(str::to_owned)
                    .collect(),
            });
            summary
                .deadlock_cycles
                .push(DeadlockCycle { threads: threads.collect(), victims: live.victims.len() as u32 });
        }
    }
    if summary.deadlocks > 0 {
        let s = if summary.deadlocks == 1 { "" } else { "s" };
        summary.summary = format!("{} deadlock{s} ({threads} threads)", summary.deadlocks);
    }
    Ok(summary)
}

/// A new snapshot object for a capture report.
pub fn new_snapshot(namespace: &str, name: &str, capture: &str, spec: DumpSnapshotSpec) -> DumpSnapshot {
    let labels = BTreeMap::from([
        (POD_LABEL.to_string(), label_value(&spec.pod)),
        (CAPTURE_LABEL.to_string(), label_value(capture)),
    ]);
    DumpSnapshot {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(namespace.to_string()),
            labels: Some(labels),
            ..Default::default()
        },
        spec,
        status: None,
    }
}

fn label_value(s: &str) -> String {
    let v: String = s.chars().take(63).collect();
    v.trim_matches(|c: char| !c.is_ascii_alphanumeric()).to_string()
}

/// Whether a snapshot is waiting for this pod to capture it.
pub fn is_request_for(s: &DumpSnapshot, pod: &str) -> bool {
    // Snapshots this API creates carry the capture label: a failure's (no artifacts, and no
    // status for a moment after it is created) is never a request.
    let from_a_report = s.metadata.labels.as_ref().is_some_and(|l| l.contains_key(CAPTURE_LABEL));
    s.spec.pod == pod
        && !from_a_report
        && s.spec.artifacts.is_empty()
        && s.status.as_ref().is_none_or(|st| st.phase == SnapshotPhase::Requested)
        && s.metadata.deletion_timestamp.is_none()
}

/// Whether a capture report may fill in this (requested) snapshot.
pub fn check_fill_in(s: &DumpSnapshot, pod: &str) -> Result<(), ApiError> {
    if s.spec.pod != pod {
        return Err(ApiError::forbidden(format!("snapshot {} is for pod {}, not {pod}", name_of(s), s.spec.pod)));
    }
    let phase = s.status.as_ref().map(|st| st.phase).unwrap_or_default();
    if !matches!(phase, SnapshotPhase::Requested | SnapshotPhase::Capturing) {
        return Err(ApiError::conflict(format!("snapshot {} is {phase:?}, not waiting for a capture", name_of(s))));
    }
    Ok(())
}

/// The analysis Job's default name for a snapshot (docs/operator.md: `dsnap-<snapshot>-analyze`);
/// the controller records the real one in `status.job`, which wins.
pub fn default_job_name(snapshot: &str) -> String {
    format!("dsnap-{snapshot}-analyze")
}

/// Whether the caller is a pod of the analysis Job the operator created for `snapshot`, by UIDs
/// only (labels and names can be written by whoever creates a pod): the token's pod (`pod_uid`,
/// from the TokenReview) is `pod`, whose controller is `job`, whose controller is `snapshot`.
/// Findings from anyone else are refused.
pub fn check_job_pod(
    snapshot: &DumpSnapshot,
    job: Option<&Job>,
    pod: &Pod,
    pod_uid: Option<&str>,
) -> Result<(), ApiError> {
    let snap = name_of(snapshot);
    let job_name = snapshot.status.as_ref().and_then(|s| s.job.clone()).unwrap_or_else(|| default_job_name(snap));
    let pod_name = pod.metadata.name.as_deref().unwrap_or("?");
    let refuse =
        |why: String| Err(ApiError::forbidden(format!("pod {pod_name} may not report findings for {snap}: {why}")));
    let Some(token_uid) = pod_uid else {
        return refuse("the API server did not say which pod UID the token is bound to".into());
    };
    if pod.metadata.uid.as_deref() != Some(token_uid) {
        return refuse(format!("the token is bound to pod UID {token_uid}, not to this pod"));
    }
    let Some(job) = job else { return refuse(format!("its analysis Job {job_name} does not exist")) };
    let controller = |refs: &Option<Vec<OwnerReference>>, kind: &str| {
        refs.iter().flatten().find(|o| o.controller == Some(true) && o.kind == kind).map(|o| o.uid.clone())
    };
    if snapshot.metadata.uid.is_none()
        || controller(&job.metadata.owner_references, "DumpSnapshot") != snapshot.metadata.uid
    {
        return refuse(format!("Job {job_name} was not created by the operator for this snapshot"));
    }
    if job.metadata.uid.is_none() || controller(&pod.metadata.owner_references, "Job") != job.metadata.uid {
        return refuse(format!("it is not a pod of the analysis Job {job_name}"));
    }
    let phase = snapshot.status.as_ref().map(|s| s.phase).unwrap_or_default();
    if !matches!(phase, SnapshotPhase::Uploaded | SnapshotPhase::Analyzing) {
        return Err(ApiError::conflict(format!("snapshot {snap} is {phase:?}, not being analyzed")));
    }
    Ok(())
}

/// The name of the Job whose pods may report findings for `snapshot`.
pub fn job_name_of(snapshot: &DumpSnapshot) -> String {
    snapshot.status.as_ref().and_then(|s| s.job.clone()).unwrap_or_else(|| default_job_name(name_of(snapshot)))
}

/// Where a snapshot's `file://` artifacts live when the policy stores on a claim
/// (`storage.volume.claimName`); `None` for S3 and for the pod's own emptyDir.
pub fn snapshot_volume(storage: &Storage) -> Option<SnapshotVolume> {
    let v = storage.volume.as_ref()?;
    let claim = v.claim_name.as_deref().filter(|c| !c.is_empty())?;
    Some(SnapshotVolume { claim_name: claim.to_string(), path: v.path.trim_end_matches('/').to_string() })
}

/// The URI prefix of `pod`'s files on the claim: `file://<path>/<namespace>/<pod>/` (the layout
/// the sidecar writes; the cleanup Job deletes under it).
pub fn claim_prefix(volume: &SnapshotVolume, namespace: &str, pod: &str) -> String {
    format!("file://{}/{namespace}/{pod}/", volume.path.trim_end_matches('/'))
}

/// Artifacts must lie under this pod's own prefix (`s3://…/<ns>/<pod>/` in a bucket,
/// `file://<path>/<ns>/<pod>/` on a claim): a pod cannot claim another's files, and on a claim
/// it cannot reach out with `.` or `..` either.
pub fn check_artifact_owner(uri: &str, own_prefix: &str) -> Result<(), ApiError> {
    if !uri.starts_with("s3://") && !uri.starts_with("file:///") {
        return Err(ApiError::bad_request(format!("{uri}: artifacts are s3:// or file:/// URIs")));
    }
    if own_prefix.starts_with("file://") {
        let inside = uri
            .strip_prefix(own_prefix)
            .filter(|rest| !rest.is_empty() && rest.split('/').all(|seg| !seg.is_empty() && seg != "." && seg != ".."));
        if inside.is_none() {
            return Err(ApiError::forbidden(format!(
                "{uri} is not a file under this pod's {own_prefix} (no . or .. segments)"
            )));
        }
    } else if uri.starts_with("s3://") && !uri.starts_with(own_prefix) {
        return Err(ApiError::forbidden(format!("{uri} is not under this pod's {own_prefix}")));
    }
    Ok(())
}

fn name_of(s: &DumpSnapshot) -> &str {
    s.metadata.name.as_deref().unwrap_or("?")
}
