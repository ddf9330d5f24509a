//! The `DumpSnapshot` reconciler: reads the snapshot's Job (from the API server) and policy (from
//! the controllers' cache), asks
//! [`next_step`](super::lifecycle::next_step), and carries the step out. Deletion goes through
//! the finalizer, which deletes the stored artifacts first.

use std::sync::Arc;
use std::time::Duration;

use api::{DumpPolicy, DumpSnapshot, SnapshotPhase};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::{Resource, ResourceExt};
use serde_json::json;

use super::Context;
use super::cleanup::{CLEANUP_POLL, CleanupStep, cleanup_job, cleanup_job_name, cleanup_step, files_on_claim};
use super::events::{DEADLOCK_DETECTED, MEMORY_LEAK_SUSPECTED, outcome_events};
use super::job::{AnalysisInputs, analysis_job, job_name};
use super::lifecycle::{GRACE, PUBLISHED, Step, next_step};
use super::policy_status::{condition, keep_transition_time};
use super::storage::ARTIFACTS_FINALIZER;
use crate::Error;

pub const CONTROLLER: &str = "dumpsnapshot";

pub async fn reconcile(snapshot: Arc<DumpSnapshot>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = std::time::Instant::now();
    let ns = snapshot.namespace().unwrap_or_default();
    let api: Api<DumpSnapshot> = Api::namespaced(ctx.client.clone(), &ns);
    // Files on a claim are deleted by a Job first; the finalizer stays while it runs.
    let deleting = snapshot.metadata.deletion_timestamp.is_some()
        && snapshot.finalizers().iter().any(|f| f == ARTIFACTS_FINALIZER);
    if deleting && let Some(wait) = claim_cleanup(&snapshot, &ctx).await? {
        ctx.metrics.observe_reconcile(CONTROLLER, started.elapsed());
        return Ok(Action::requeue(wait));
    }
    let result = finalizer(&api, ARTIFACTS_FINALIZER, snapshot, |event| async {
        match event {
            Finalizer::Apply(s) => apply(&s, &ctx).await,
            Finalizer::Cleanup(s) => cleanup(&s, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    ctx.metrics.observe_reconcile(CONTROLLER, started.elapsed());
    result
}

async fn apply(snapshot: &DumpSnapshot, ctx: &Context) -> Result<Action, Error> {
    let ns = snapshot.namespace().unwrap_or_default();
    let name = snapshot.name_any();
    let stores = ctx.stores().await?;
    let policy = snapshot.spec.policy.as_ref().and_then(|p| stores.policy(&ns, p)).map(|p| (*p).clone());
    let status = snapshot.status.clone().unwrap_or_default();
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    let job_name = status.job.clone().unwrap_or_else(|| job_name(&name));
    let job = jobs.get_opt(&job_name).await?;
    let now = Timestamp::now();
    let step = next_step(snapshot, job.as_ref(), policy.as_ref(), now);
    tracing::debug!(snapshot = %name, namespace = %ns, ?step, "reconcile");
    match step {
        Step::Nothing => Ok(Action::await_change()),
        Step::Wait(d) => Ok(Action::requeue(d)),
        Step::StartAnalysis => {
            let mut artifacts = Vec::new();
            for a in &snapshot.spec.artifacts {
                let uri = ctx
                    .urls
                    .fetchable(snapshot, policy.as_ref(), &a.uri)
                    .await
                    .map_err(|e| Error::Storage(e.to_string()))?;
                artifacts.push(api::Artifact { uri, ..a.clone() });
            }
            let inputs = AnalysisInputs { artifacts, volume: snapshot.spec.volume.clone() };
            let job = analysis_job(snapshot, policy.as_ref(), &ctx.analysis_settings(), &inputs);
            match jobs.create(&PostParams::default(), &job).await {
                Ok(_) => {
                    tracing::info!(snapshot = %name, namespace = %ns, job = %job.name_any(), "analysis Job created")
                }
                Err(kube::Error::Api(s)) if s.code == 409 => {}
                Err(e) => return Err(e.into()),
            }
            // A Job re-created inside `Analyzing` keeps the original start: the deadline is the snapshot's.
            let started = match status.phase {
                SnapshotPhase::Analyzing => status.analysis_started.clone().unwrap_or(Time(now)),
                _ => Time(now),
            };
            let analyzing = json!({
                "phase": "Analyzing",
                "job": job.name_any(),
                "analysisStarted": started,
                "message": format!("analysis Job {} runs dumpwatch analyze", job.name_any()),
            });
            if !patch_status_unless_changed(ctx, snapshot, analyzing).await? {
                return Ok(Action::requeue(STALE_RETRY));
            }
            let deadline = policy.map(|p| p.spec.analysis.deadline.std()).unwrap_or(Duration::from_secs(900));
            Ok(Action::requeue(deadline + GRACE))
        }
        Step::Hold(message) => {
            if status.message.as_deref() != Some(message.as_str()) {
                tracing::info!(snapshot = %name, namespace = %ns, %message, "snapshot held");
                patch_status(ctx, snapshot, json!({"message": message})).await?;
            }
            Ok(Action::await_change())
        }
        Step::Fail(message) => {
            tracing::info!(snapshot = %name, namespace = %ns, %message, "snapshot failed");
            if !patch_status_unless_changed(ctx, snapshot, json!({"phase": "Failed", "message": message})).await? {
                return Ok(Action::requeue(STALE_RETRY));
            }
            Ok(Action::await_change())
        }
        Step::Publish => {
            publish(snapshot, policy.as_ref(), ctx).await?;
            let mut conditions = status.conditions.clone();
            conditions.retain(|c| c.type_ != PUBLISHED);
            let published = condition(PUBLISHED, true, "EventsSent", "the outcome was published as Events".into());
            conditions.push(keep_transition_time(published, &status.conditions, now));
            patch_status(ctx, snapshot, json!({"conditions": conditions})).await?;
            Ok(Action::await_change())
        }
    }
}

/// The outcome's Events on the pod (when it still exists) and on the policy.
async fn publish(snapshot: &DumpSnapshot, policy: Option<&DumpPolicy>, ctx: &Context) -> Result<(), Error> {
    let ns = snapshot.namespace().unwrap_or_default();
    let notices = outcome_events(snapshot);
    if notices.is_empty() {
        return Ok(());
    }
    let mut targets = Vec::new();
    // Cached unless it stopped running without the injected label (injected by an older
    // operator): then asked for, once per published snapshot.
    let pod = match ctx.stores().await?.pod_ref(&ns, &snapshot.spec.pod) {
        Some(cached) => Some(cached),
        None => Api::<Pod>::namespaced(ctx.client.clone(), &ns)
            .get_opt(&snapshot.spec.pod)
            .await?
            .map(|p| p.object_ref(&())),
    };
    targets.extend(pod);
    if let Some(p) = policy {
        targets.push(p.object_ref(&()));
    }
    for n in &notices {
        let event = Event {
            type_: if n.warning { EventType::Warning } else { EventType::Normal },
            reason: n.reason.into(),
            note: Some(n.note.clone()),
            action: "Analyze".into(),
            secondary: Some(snapshot.object_ref(&())),
        };
        for target in &targets {
            ctx.recorder.publish(&event, target).await?;
        }
    }
    let count = |reason: &str| notices.iter().filter(|n| n.reason == reason).count() as u64;
    if let Some(f) = snapshot.status.as_ref().and_then(|s| s.findings.as_ref()) {
        ctx.metrics.count_findings("deadlock", u64::from(f.deadlocks).max(count(DEADLOCK_DETECTED)));
        ctx.metrics.count_findings("leak_suspect", u64::from(f.leak_suspects).max(count(MEMORY_LEAK_SUSPECTED)));
    }
    Ok(())
}

/// The files of a snapshot on a claim: `Some(wait)` while its cleanup Job runs (look again
/// then), `None` once they are deleted (or there are none). A failed Job is reported as a
/// Warning Event, deleted, and the error retries it with the reconcile's backoff.
async fn claim_cleanup(snapshot: &DumpSnapshot, ctx: &Context) -> Result<Option<Duration>, Error> {
    let ns = snapshot.namespace().unwrap_or_default();
    let name = snapshot.name_any();
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    let job_name = cleanup_job_name(&name);
    let job = match files_on_claim(snapshot) {
        Some(_) => jobs.get_opt(&job_name).await?,
        None => None,
    };
    // The Job's pods go with it (a Job's own default would leave them).
    let delete_job = DeleteParams::background();
    match cleanup_step(snapshot, job.as_ref()) {
        CleanupStep::Nothing => Ok(None),
        CleanupStep::Create { volume, uris } => {
            let job = cleanup_job(snapshot, volume, &uris, &ctx.analysis);
            match jobs.create(&PostParams::default(), &job).await {
                Ok(_) => {
                    tracing::info!(snapshot = %name, namespace = %ns, job = %job_name, files = uris.len(), "cleanup Job created")
                }
                Err(kube::Error::Api(s)) if s.code == 409 => {}
                Err(e) => return Err(e.into()),
            }
            Ok(Some(CLEANUP_POLL))
        }
        CleanupStep::Wait => Ok(Some(CLEANUP_POLL)),
        CleanupStep::Done => {
            match jobs.delete(&job_name, &delete_job).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
            tracing::info!(snapshot = %name, namespace = %ns, job = %job_name, "files on the claim deleted");
            Ok(None)
        }
        CleanupStep::Retry(why) => {
            let event = Event {
                type_: EventType::Warning,
                reason: "ArtifactCleanupFailed".into(),
                note: Some(why.clone()),
                action: "Delete".into(),
                secondary: None,
            };
            ctx.recorder.publish(&event, &snapshot.object_ref(&())).await?;
            match jobs.delete(&job_name, &delete_job).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
            Err(Error::Storage(why))
        }
    }
}

/// Deletion, once the files on a claim are gone: the objects in S3 go too; a failure keeps the
/// finalizer and is retried. `file://` files without a claim were in the pod's emptyDir.
async fn cleanup(snapshot: &DumpSnapshot, ctx: &Context) -> Result<Action, Error> {
    let objects: Vec<&str> =
        snapshot.spec.artifacts.iter().map(|a| a.uri.as_str()).filter(|u| !u.starts_with("file://")).collect();
    let policy = match &snapshot.spec.policy {
        Some(p) if !objects.is_empty() => {
            ctx.stores().await?.policy(&snapshot.namespace().unwrap_or_default(), p).map(|p| (*p).clone())
        }
        _ => None,
    };
    for uri in &objects {
        ctx.deleter.delete(snapshot, policy.as_ref(), uri).await.map_err(|e| Error::Storage(e.to_string()))?;
    }
    tracing::info!(snapshot = %snapshot.name_any(), objects = objects.len(), "artifacts deleted");
    Ok(Action::await_change())
}

/// How soon a reconcile whose snapshot changed under it looks again (the change's own event
/// usually comes first).
const STALE_RETRY: Duration = Duration::from_secs(1);

/// A phase change, written only if the snapshot is still the one the decision was made from (its
/// resourceVersion as a precondition): the cache may lag a write by someone else, such as the
/// findings that made it `Analyzed`, and an older decision must not move it back. `false` when
/// the snapshot had changed (409 Conflict).
async fn patch_status_unless_changed(
    ctx: &Context,
    snapshot: &DumpSnapshot,
    status: serde_json::Value,
) -> Result<bool, Error> {
    let api: Api<DumpSnapshot> = Api::namespaced(ctx.client.clone(), &snapshot.namespace().unwrap_or_default());
    let patch = json!({ "metadata": { "resourceVersion": snapshot.resource_version() }, "status": status });
    match api.patch_status(&snapshot.name_any(), &PatchParams::default(), &Patch::Merge(patch)).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 409 => {
            tracing::debug!(snapshot = %snapshot.name_any(), "snapshot changed since it was read: decided again");
            Ok(false)
        }
        Err(e) => Err(e.into()),
    }
}

async fn patch_status(ctx: &Context, snapshot: &DumpSnapshot, status: serde_json::Value) -> Result<(), Error> {
    let api: Api<DumpSnapshot> = Api::namespaced(ctx.client.clone(), &snapshot.namespace().unwrap_or_default());
    api.patch_status(&snapshot.name_any(), &PatchParams::default(), &Patch::Merge(json!({ "status": status }))).await?;
    Ok(())
}
