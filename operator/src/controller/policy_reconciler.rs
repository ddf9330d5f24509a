//! The `DumpPolicy` reconciler: status from the pods and snapshots of its namespace, and
//! retention (expired snapshots are deleted; their finalizer deletes the artifacts). Pods,
//! snapshots and the policy come from the controllers' caches ([`super::stores`]): a reconcile
//! lists nothing from the API server, it only writes (the status, deletions).

use std::sync::Arc;
use std::time::Duration;

use api::{DumpPolicy, DumpPolicyStatus, DumpSnapshot};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use serde_json::json;

use super::Context;
use super::policy_status::{explain_invalid, explain_storage_conflict, policy_status};
use super::retention::expired;
use crate::Error;
use crate::sidecar_api::stores::policy_problems;

pub const CONTROLLER: &str = "dumppolicy";

/// Status is also refreshed this often without any change (pods only move the counts through
/// watch events; age-based retention needs a clock).
pub const RESYNC: Duration = Duration::from_secs(300);

/// At most one status write per policy this often (see [`status_write`]).
pub const STATUS_INTERVAL: Duration = Duration::from_secs(2);

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
    let stores = ctx.stores().await?;
    let now = Timestamp::now();
    let resync = RESYNC.min(policy.spec.retention.max_age.std()).max(Duration::from_secs(10));

    let problems = policy_problems(&ctx.client, &ns, &policy.spec, |store| stores.dump_store(store))
        .await
        .map_err(|e| Error::Storage(e.to_string()))?;
    let snapshots = stores.snapshots_of(&ns, &name);
    // The pods are the cache's own, read here and dropped before the next await: a reconcile
    // waiting on its status write holds none of them.
    let status = {
        let pods = stores.pods_selected_by(policy);
        let status = policy_status(policy, &pods, &snapshots, now);
        explain_invalid(explain_storage_conflict(status, policy, &ctx.sidecar_mount_path), policy, &problems, now)
    };
    let key = format!("{ns}/{name}");
    let mut next = Action::requeue(resync);
    match status_write(policy.status.as_ref(), &status, ctx.last_status_write(&key), std::time::Instant::now()) {
        StatusWrite::Skip => {}
        StatusWrite::Later(wait) => next = Action::requeue(wait),
        StatusWrite::Now => {
            ctx.status_written(key);
            Api::<DumpPolicy>::namespaced(ctx.client.clone(), &ns)
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(json!({ "status": status })))
                .await?;
        }
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
    Ok(next)
}

/// Whether a policy's status is written now.
#[derive(Debug, PartialEq)]
pub enum StatusWrite {
    /// It is what the policy already shows.
    Skip,
    Now,
    /// It was written less than [`STATUS_INTERVAL`] ago: reconcile again after this long.
    Later(Duration),
}

/// Status writes are skipped when nothing changed and debounced: during a burst of pod events a
/// policy's status is written at most once per [`STATUS_INTERVAL`] (the last state of the burst
/// is written at the end of the interval it falls in).
pub fn status_write(
    current: Option<&DumpPolicyStatus>,
    wanted: &DumpPolicyStatus,
    last_write: Option<std::time::Instant>,
    now: std::time::Instant,
) -> StatusWrite {
    if current == Some(wanted) {
        return StatusWrite::Skip;
    }
    match last_write.map(|t| now.saturating_duration_since(t)) {
        Some(since) if since < STATUS_INTERVAL => StatusWrite::Later(STATUS_INTERVAL - since),
        _ => StatusWrite::Now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn unchanged_status_is_not_written_and_changes_are_written_once_per_interval() {
        let old = DumpPolicyStatus { matched_pods: 1, ..Default::default() };
        let new = DumpPolicyStatus { matched_pods: 2, ..Default::default() };
        let t0 = Instant::now();
        assert_eq!(status_write(Some(&old), &old, None, t0), StatusWrite::Skip);
        assert_eq!(status_write(Some(&old), &old, Some(t0), t0), StatusWrite::Skip, "even inside the interval");
        assert_eq!(status_write(Some(&old), &new, None, t0), StatusWrite::Now);
        assert_eq!(status_write(None, &new, None, t0), StatusWrite::Now);
        let soon = t0 + Duration::from_millis(500);
        assert_eq!(
            status_write(Some(&old), &new, Some(t0), soon),
            StatusWrite::Later(STATUS_INTERVAL - Duration::from_millis(500))
        );
        assert_eq!(status_write(Some(&old), &new, Some(t0), t0 + STATUS_INTERVAL), StatusWrite::Now);
    }
}
