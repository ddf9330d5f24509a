//! The controllers' caches: one reflector per kind, shared by both controllers, so a reconcile
//! reads pods, snapshots and policies from memory and only writes to the API server.
//!
//! Pods are watched in two scoped parts (the operator does not cache every pod of the cluster):
//! - pods the webhook injected ([`INJECTED_LABEL`]): whole objects, as the policy status reads
//!   their spec (which user the sidecar runs as);
//! - *running* pods without that label: metadata only (a `PartialObjectMeta`), since the status
//!   needs only their labels, annotations and creation time to report pods that started without
//!   the sidecar. Pods injected by an operator older than the label are here too (their
//!   annotation still counts them as injected); restarting them gives them the label.
//!
//! `managedFields` are dropped from every cached object: nothing reads them and they are often
//! the larger part of an object's metadata.

use std::sync::Arc;

use api::{DumpPolicy, DumpSnapshot};
use k8s_openapi::api::core::v1::{Pod, PodStatus};
use kube::ResourceExt;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{ObjectRef, Store};

use super::policy_status;
use crate::INJECTED_LABEL;

/// Readers of the operator's caches (cheap to clone).
#[derive(Clone)]
pub struct Stores {
    pub policies: Store<DumpPolicy>,
    pub snapshots: Store<DumpSnapshot>,
    /// Pods carrying [`INJECTED_LABEL`], whole.
    pub injected_pods: Store<Pod>,
    /// Running pods without [`INJECTED_LABEL`], metadata only.
    pub other_pods: Store<PartialObjectMeta<Pod>>,
}

/// The label selector of the injected-pods watch.
pub fn injected_selector() -> String {
    format!("{INJECTED_LABEL}=true")
}

/// The label selector of the other-pods watch (with the field selector [`RUNNING`]).
pub fn other_selector() -> String {
    format!("!{INJECTED_LABEL}")
}

/// Field selector of the other-pods watch: a pod that stops running leaves it (a `DELETED`
/// event), so that cache holds exactly the running ones.
pub const RUNNING: &str = "status.phase=Running";

impl Stores {
    /// Waits until every cache has had its first full list (a status computed before would
    /// count pods that are only not loaded yet as gone).
    pub async fn ready(&self) -> Result<(), crate::Error> {
        let not_ready = |_| crate::Error::Cache;
        self.policies.wait_until_ready().await.map_err(not_ready)?;
        self.snapshots.wait_until_ready().await.map_err(not_ready)?;
        self.injected_pods.wait_until_ready().await.map_err(not_ready)?;
        self.other_pods.wait_until_ready().await.map_err(not_ready)?;
        Ok(())
    }

    /// The pods `policy` selects, as [`policy_status`](super::policy_status()) reads them; those
    /// known only by their metadata are running (the watch's field selector) and have no spec.
    /// Only the selected ones are copied: every policy of a namespace copying all its pods, in
    /// concurrent reconciles, made the peak memory grow with pods × policies.
    pub fn pods_selected_by(&self, policy: &DumpPolicy) -> Vec<Pod> {
        let mut pods: Vec<Pod> = self
            .injected_pods
            .state()
            .iter()
            .filter(|p| policy_status::selects(policy, p))
            .map(|p| (**p).clone())
            .collect();
        pods.extend(self.other_pods.state().iter().filter_map(|p| {
            let pod = Pod {
                metadata: p.metadata.clone(),
                spec: None,
                status: Some(PodStatus { phase: Some("Running".into()), ..Default::default() }),
            };
            policy_status::selects(policy, &pod).then_some(pod)
        }));
        pods
    }

    /// The snapshots of `ns` that name `policy`.
    pub fn snapshots_of(&self, ns: &str, policy: &str) -> Vec<DumpSnapshot> {
        self.snapshots
            .state()
            .iter()
            .filter(|s| s.metadata.namespace.as_deref() == Some(ns) && s.spec.policy.as_deref() == Some(policy))
            .map(|s| (**s).clone())
            .collect()
    }

    pub fn policy(&self, ns: &str, name: &str) -> Option<Arc<DumpPolicy>> {
        self.policies.get(&ObjectRef::new(name).within(ns))
    }

    /// A pod's reference for Events, when the pod is cached.
    pub fn pod_ref(&self, ns: &str, name: &str) -> Option<k8s_openapi::api::core::v1::ObjectReference> {
        use kube::Resource;
        if let Some(p) = self.injected_pods.get(&ObjectRef::new(name).within(ns)) {
            return Some(p.object_ref(&()));
        }
        self.other_pods.get(&ObjectRef::new(name).within(ns)).map(|p| p.object_ref(&()))
    }

    /// The policies a pod event concerns: those of its namespace whose selector matches its
    /// labels. A pod in a namespace without policies concerns none (and costs no API call).
    pub fn policies_selecting(&self, meta: &kube::api::ObjectMeta) -> Vec<ObjectRef<DumpPolicy>> {
        let pod = Pod { metadata: meta.clone(), ..Default::default() };
        self.policies
            .state()
            .into_iter()
            .filter(|p| policy_status::selects(p, &pod))
            .map(|p| ObjectRef::from_obj(&*p))
            .collect()
    }
}

/// The policy a snapshot event concerns (its `spec.policy`).
pub fn policy_of(snapshot: &DumpSnapshot) -> Option<ObjectRef<DumpPolicy>> {
    let ns = snapshot.namespace().unwrap_or_default();
    snapshot.spec.policy.as_ref().map(|p| ObjectRef::new(p).within(&ns))
}

/// Drops what no reconcile reads before an object is cached.
pub fn slim(meta: &mut kube::api::ObjectMeta) {
    meta.managed_fields = None;
}
