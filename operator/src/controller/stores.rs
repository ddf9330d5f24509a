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
//! What no reconcile reads is dropped before an object is cached ([`slim`], [`slim_pod`]):
//! `managedFields`, annotations other than dumpwatch's, and of an injected pod everything but its
//! containers' names and its phase. Whole pods (the webhook's sidecar with its env, volumes,
//! probes) were half of the operator's heap at 5,000 pods (heaptrack: 110 of 224 MiB).

use std::sync::Arc;

use api::{DumpPolicy, DumpSnapshot, DumpStore, StorageTarget};
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec, PodStatus};
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
    /// The `DumpStore`s S3 policies name (cluster scoped, few).
    pub dump_stores: Store<DumpStore>,
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
        self.dump_stores.wait_until_ready().await.map_err(not_ready)?;
        Ok(())
    }

    /// The pods `policy` selects, as [`policy_status`](super::policy_status()) reads them; those
    /// known only by their metadata are running (the watch's field selector) and have no spec.
    /// Injected pods are the cached objects themselves, not copies: every policy of a namespace
    /// copying its pods, in concurrent reconciles, made the peak memory grow with pods × policies.
    pub fn pods_selected_by(&self, policy: &DumpPolicy) -> Vec<Arc<Pod>> {
        let mut pods: Vec<Arc<Pod>> =
            self.injected_pods.state().into_iter().filter(|p| policy_status::selects(policy, p)).collect();
        pods.extend(self.other_pods.state().iter().filter(|p| policy_status::selects_meta(policy, &p.metadata)).map(
            |p| {
                let running = PodStatus { phase: Some("Running".into()), ..Default::default() };
                Arc::new(Pod { metadata: p.metadata.clone(), spec: None, status: Some(running) })
            },
        ));
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

    /// The `DumpStore` `name`, as the cache has it.
    pub fn dump_store(&self, name: &str) -> Option<Arc<DumpStore>> {
        self.dump_stores.get(&ObjectRef::new(name))
    }

    /// The policies naming the `DumpStore` `name` (a change of the store can change their Ready
    /// condition).
    pub fn policies_naming(&self, store: &str) -> Vec<ObjectRef<DumpPolicy>> {
        let names = |p: &DumpPolicy| matches!(p.spec.storage.target(), StorageTarget::S3(s3) if s3.store_ref == store);
        self.policies.state().into_iter().filter(|p| names(p)).map(|p| ObjectRef::from_obj(&*p)).collect()
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
        self.policies
            .state()
            .into_iter()
            .filter(|p| policy_status::selects_meta(p, meta))
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

/// [`slim`] for a pod's metadata: of its annotations only dumpwatch's are read (injected, the
/// sidecar's user); others (`kubectl.kubernetes.io/last-applied-configuration` alone can hold the
/// whole pod again) are dropped.
pub fn slim_pod_meta(meta: &mut kube::api::ObjectMeta) {
    slim(meta);
    if let Some(annotations) = &mut meta.annotations {
        annotations.retain(|k, _| k.starts_with(OUR_PREFIX));
    }
}

/// What the policy status reads of an injected pod: its metadata ([`slim_pod_meta`]), its
/// containers' names (the sidecar's name says it is injected) and its phase. The rest of the spec
/// (the sidecar's env, mounts and probes, the volumes the webhook adds) and of the status made
/// the cached pods half of the operator's heap at 5,000 pods (~22 KB a pod).
pub fn slim_pod(pod: &mut Pod) {
    slim_pod_meta(&mut pod.metadata);
    if let Some(spec) = &mut pod.spec {
        let names = |cs: Vec<Container>| -> Vec<Container> {
            cs.into_iter().map(|c| Container { name: c.name, ..Default::default() }).collect()
        };
        *spec = PodSpec {
            containers: names(std::mem::take(&mut spec.containers)),
            init_containers: spec.init_containers.take().map(names),
            ..Default::default()
        };
    }
    if let Some(status) = &mut pod.status {
        *status = PodStatus { phase: status.phase.take(), ..Default::default() };
    }
}

/// The prefix of dumpwatch's annotations and labels.
const OUR_PREFIX: &str = "dumpwatch.dev/";
