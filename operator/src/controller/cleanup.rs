//! Deleting a snapshot's `file://` artifacts on its claim, as pure functions: the cleanup Job
//! (one pod that mounts the claim read-write and runs `dumpwatch delete-artifacts`) and what
//! the finalizer does next given that Job (docs/operator.md, "Deletion").
//!
//! The operator itself mounts no claim: claims live in the users' namespaces, so the files are
//! deleted from a pod there. The Job has no ownerReference to the snapshot: the snapshot is
//! being deleted, and a foreground deletion (or the garbage collector once the finalizer is
//! gone) would take the Job with it while it runs. The finalizer deletes it once it succeeded;
//! `ttlSecondsAfterFinished` collects one an operator left behind.

use std::collections::BTreeMap;
use std::time::Duration;

use api::{DumpSnapshot, SnapshotVolume};
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, PersistentVolumeClaimVolumeSource, PodSpec, PodTemplateSpec, ResourceRequirements,
    SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;

use super::job::{AnalysisSettings, JobOutcome, analyzer_pod_security, job_outcome, suffixed_name};

/// Label on the cleanup Job and its pod: the snapshot whose files it deletes.
pub const CLEANUP_LABEL: &str = "dumpwatch.dev/cleanup-of";
/// A cleanup that takes longer than this is stuck (a claim that does not attach): the Job fails
/// and is retried.
pub const CLEANUP_DEADLINE: Duration = Duration::from_secs(300);
/// How often a running cleanup Job is looked at (it is not owned, so its changes wake nobody).
pub const CLEANUP_POLL: Duration = Duration::from_secs(3);

/// `dsnap-<snapshot>-cleanup`, cut and hashed like the analysis Job's name.
pub fn cleanup_job_name(snapshot: &str) -> String {
    suffixed_name(snapshot, "cleanup")
}

/// The directory all of `snapshot`'s files are under on the claim: `<path>/<namespace>/<pod>`
/// (the sidecar API accepted nothing else).
pub fn pod_dir(snapshot: &DumpSnapshot, volume: &SnapshotVolume) -> String {
    format!("{}/{}/{}", volume.path.trim_end_matches('/'), snapshot.namespace().unwrap_or_default(), snapshot.spec.pod)
}

/// The `file://` URIs a cleanup Job must delete: those of a snapshot on a claim. Without
/// `spec.volume` they are in the pod's emptyDir and went (or go) with the pod.
pub fn files_on_claim(snapshot: &DumpSnapshot) -> Option<(&SnapshotVolume, Vec<String>)> {
    let volume = snapshot.spec.volume.as_ref()?;
    let uris: Vec<String> =
        snapshot.spec.artifacts.iter().filter(|a| a.uri.starts_with("file://")).map(|a| a.uri.clone()).collect();
    (!uris.is_empty()).then_some((volume, uris))
}

/// The Job that deletes `uris` from `volume`, in the snapshot's namespace.
pub fn cleanup_job(
    snapshot: &DumpSnapshot,
    volume: &SnapshotVolume,
    uris: &[String],
    settings: &AnalysisSettings,
) -> Job {
    let name = snapshot.name_any();
    let labels = BTreeMap::from([
        (CLEANUP_LABEL.to_string(), name.clone()),
        ("app.kubernetes.io/managed-by".to_string(), "dumpwatch-operator".to_string()),
        ("app.kubernetes.io/component".to_string(), "cleanup".to_string()),
    ]);
    let mut args = vec!["delete-artifacts".to_string(), "--under".to_string(), pod_dir(snapshot, volume)];
    args.extend(uris.iter().cloned());
    // Kubernetes expands `$(VAR)` in args; `$$` is a literal `$`.
    let args = args.into_iter().map(|a| a.replace('$', "$$")).collect();
    let container = Container {
        name: "delete-artifacts".into(),
        image: Some(settings.image.clone()),
        args: Some(args),
        resources: Some(ResourceRequirements {
            limits: Some(BTreeMap::from([("memory".into(), Quantity("64Mi".into()))])),
            requests: Some(BTreeMap::from([
                ("memory".into(), Quantity("32Mi".into())),
                ("cpu".into(), Quantity("10m".into())),
            ])),
            ..Default::default()
        }),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities { drop: Some(vec!["ALL".into()]), ..Default::default() }),
            ..Default::default()
        }),
        volume_mounts: Some(vec![VolumeMount {
            name: "artifacts".into(),
            mount_path: volume.path.clone(),
            ..Default::default()
        }]),
        ..Default::default()
    };
    Job {
        metadata: ObjectMeta {
            name: Some(cleanup_job_name(&name)),
            namespace: snapshot.namespace(),
            labels: Some(labels.clone()),
            ..Default::default()
        },
        spec: Some(JobSpec {
            active_deadline_seconds: Some(CLEANUP_DEADLINE.as_secs() as i64),
            backoff_limit: Some(2),
            ttl_seconds_after_finished: Some(settings.ttl_after_finished_secs),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta { labels: Some(labels), ..Default::default() }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".into()),
                    // Deleting files needs no Kubernetes API.
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    security_context: Some(analyzer_pod_security()),
                    containers: vec![container],
                    volumes: Some(vec![Volume {
                        name: "artifacts".into(),
                        persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                            claim_name: volume.claim_name.clone(),
                            read_only: Some(false),
                        }),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        status: None,
    }
}

/// What the finalizer does for the files on the claim.
#[derive(Debug, Clone, PartialEq)]
pub enum CleanupStep<'a> {
    /// No files on a claim (S3, or the pod's emptyDir): go on with the rest of the cleanup.
    Nothing,
    /// Create the cleanup Job for these files on this claim.
    Create { volume: &'a SnapshotVolume, uris: Vec<String> },
    /// The Job runs (or is being deleted): look again later; the finalizer stays.
    Wait,
    /// The Job succeeded: delete it, then remove the finalizer.
    Done,
    /// The Job failed: report this, delete it, and retry (with the reconcile's backoff).
    Retry(String),
}

pub fn cleanup_step<'a>(snapshot: &'a DumpSnapshot, job: Option<&Job>) -> CleanupStep<'a> {
    let Some((volume, uris)) = files_on_claim(snapshot) else {
        return CleanupStep::Nothing;
    };
    match job {
        None => CleanupStep::Create { volume, uris },
        Some(j) if j.metadata.deletion_timestamp.is_some() => CleanupStep::Wait,
        Some(j) => match job_outcome(j) {
            JobOutcome::Running => CleanupStep::Wait,
            JobOutcome::Succeeded(_) => CleanupStep::Done,
            JobOutcome::Failed(why) => CleanupStep::Retry(format!(
                "cleanup Job {} failed: {why} (its pod's log says which file; retrying)",
                j.name_any()
            )),
        },
    }
}

#[cfg(test)]
#[path = "cleanup_tests.rs"]
mod tests;
