//! The `DumpPolicy` reconciler: status from the pods and snapshots of its namespace, and
//! retention (expired snapshots are deleted; their finalizer deletes the artifacts).

use std::sync::Arc;
use std::time::Duration;

use api::{DumpPolicy, DumpSnapshot};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use serde_json::json;

use super::Context;
use super::policy_status::{explain_invalid, explain_storage_conflict, policy_status};
use super::retention::expired;
use crate::Error;

pub const CONTROLLER: &str = "dumppolicy";

/// Status is also refreshed this often without any change (pods only move the counts through
/// watch events; age-based retention needs a clock).
pub const RESYNC: Duration = Duration::from_secs(300);

pub async fn reconcile(policy: Arc<DumpPolicy>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = std::time::Instant::now();
    let result = apply(&policy, &ctx).await;
    ctx.metrics.observe_reconcile(CONTROLLER, started.elapsed());
    result
}

async fn apply(policy: &DumpPolicy, ctx: &Context) -> Result<Action, Error> {
    if policy.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = policy.namespace().unwrap_or_default();
    let name = policy.name_any();
    let selector: Vec<String> = policy.spec.selector.match_labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let pods = Api::<Pod>::namespaced(ctx.client.clone(), &ns)
        .list(&ListParams::default().labels(&selector.join(",")))
        .await?
        .items;
    let snapshots: Vec<DumpSnapshot> = Api::<DumpSnapshot>::namespaced(ctx.client.clone(), &ns)
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|s| s.spec.policy.as_deref() == Some(name.as_str()))
        .collect();
    let now = Timestamp::now();

    let problems = crate::sidecar_api::stores::policy_problems(&ctx.client, &ns, &policy.spec)
        .await
        .map_err(|e| Error::Storage(e.to_string()))?;
    let status =
        explain_storage_conflict(policy_status(policy, &pods, &snapshots, now), policy, &ctx.sidecar_mount_path);
    let status = explain_invalid(status, policy, &problems, now);
    if policy.status.as_ref() != Some(&status) {
        Api::<DumpPolicy>::namespaced(ctx.client.clone(), &ns)
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(json!({ "status": status })))
            .await?;
    }

    let snapshots_api = Api::<DumpSnapshot>::namespaced(ctx.client.clone(), &ns);
    for gone in expired(&snapshots, &policy.spec.retention, now) {
        tracing::info!(policy = %name, namespace = %ns, snapshot = %gone, "retention: deleting snapshot");
        match snapshots_api.delete(&gone, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Action::requeue(RESYNC.min(policy.spec.retention.max_age.std()).max(Duration::from_secs(10))))
}
