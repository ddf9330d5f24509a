//! The operator's controllers: `DumpPolicy` status and retention, the `DumpSnapshot` lifecycle
//! with its analysis Jobs and Events, plus `/metrics` and leader election.
//!
//! Decisions are pure functions of Kubernetes objects ([`policy_status`], [`next_step`],
//! [`analysis_job`], [`outcome_events`], [`expired`], [`lease_decision`]); the reconcilers only
//! read their inputs, call them, and write the result.

pub mod cleanup;
pub mod events;
pub mod job;
pub mod leader;
pub mod lifecycle;
pub mod metrics;
pub mod policy_reconciler;
pub mod policy_status;
pub mod retention;
pub mod snapshot_reconciler;
pub mod storage;
pub mod stores;
#[cfg(test)]
mod testing;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use api::{DumpPolicy, DumpSnapshot, DumpStore};
use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};

pub use events::outcome_events;
pub use job::{AnalysisInputs, AnalysisSettings, analysis_job, job_name};
pub use leader::{LeaderElector, LeaseDecision, lease_decision};
pub use lifecycle::{Step, next_step};
pub use metrics::Metrics;
pub use policy_status::policy_status;
pub use retention::expired;
pub use storage::{ARTIFACTS_FINALIZER, ArtifactDeleter, ArtifactUrls, Deleters, NoObjectStorage};
pub use stores::Stores;

use crate::Error;

/// What the reconcilers share.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Metrics,
    pub analysis: AnalysisSettings,
    pub deleter: Arc<dyn ArtifactDeleter>,
    pub urls: Arc<dyn ArtifactUrls>,
    /// The serving certificate's source: its CA (reloaded in cert-manager mode) is the one each
    /// new analysis Job is told to trust, not the one read at start.
    pub certs: Option<crate::webhook::CertSource>,
    /// Where the webhook mounts the sidecar's capture dir (a policy's claim path must not collide).
    pub sidecar_mount_path: String,
    backoffs: Backoffs,
    /// The caches of the controllers running now (set by [`run`] while it runs).
    stores: std::sync::RwLock<Option<Stores>>,
    /// When each policy's status was last written ([`policy_reconciler::STATUS_INTERVAL`]).
    status_writes: Mutex<HashMap<String, std::time::Instant>>,
}

/// Exponential backoff per object after failed reconciles: 1 s, 2 s, 4 s, ... up to 5 min;
/// forgotten after a success.
#[derive(Default)]
pub struct Backoffs(Mutex<HashMap<String, u32>>);

impl Backoffs {
    pub fn failed(&self, key: String) -> Duration {
        let mut failures = self.0.lock().expect("backoff lock");
        let n = failures.entry(key).or_insert(0);
        *n = (*n + 1).min(16);
        Duration::from_secs(1u64 << (*n - 1).min(9)).min(Duration::from_secs(300))
    }

    pub fn succeeded(&self, key: &str) {
        self.0.lock().expect("backoff lock").remove(key);
    }
}

impl Context {
    pub fn new(
        client: Client,
        metrics: Metrics,
        analysis: AnalysisSettings,
        deleter: Arc<dyn ArtifactDeleter>,
        urls: Arc<dyn ArtifactUrls>,
        instance: Option<String>,
    ) -> Self {
        let reporter = Reporter { controller: "dumpwatch-operator".into(), instance };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics,
            analysis,
            deleter,
            urls,
            certs: None,
            sidecar_mount_path: crate::inject::SidecarSettings::default().mount_path,
            backoffs: Backoffs::default(),
            stores: Default::default(),
            status_writes: Default::default(),
        }
    }

    /// The caches of the running controllers ([`run`] starts them once each has its first
    /// full list).
    pub async fn stores(&self) -> Result<Stores, Error> {
        self.stores.read().expect("stores lock").clone().ok_or(Error::Cache)
    }

    fn last_status_write(&self, policy: &str) -> Option<std::time::Instant> {
        self.status_writes.lock().expect("status lock").get(policy).copied()
    }

    fn status_written(&self, policy: String) {
        let mut writes = self.status_writes.lock().expect("status lock");
        // Entries older than the interval say nothing any more: the map stays as small as a burst.
        writes.retain(|_, t| t.elapsed() < policy_reconciler::STATUS_INTERVAL);
        writes.insert(policy, std::time::Instant::now());
    }

    /// The settings for a Job created now: the CA the operator serves under at this moment.
    pub fn analysis_settings(&self) -> AnalysisSettings {
        with_current_ca(&self.analysis, self.certs.as_ref())
    }
}

/// `settings` with the CA `certs` holds now, when it holds one.
pub fn with_current_ca(settings: &AnalysisSettings, certs: Option<&crate::webhook::CertSource>) -> AnalysisSettings {
    let mut settings = settings.clone();
    if let Some(pem) = certs.map(|c| c.ca_pem()).filter(|pem| !pem.trim().is_empty()) {
        settings.operator_ca_pem = Some(pem);
    }
    settings
}

fn key<K: kube::Resource<DynamicType = ()>>(obj: &K) -> String {
    format!(
        "{}/{}/{}",
        K::kind(&Default::default()),
        obj.meta().namespace.as_deref().unwrap_or(""),
        obj.meta().name.as_deref().unwrap_or("")
    )
}

fn error_policy<K: kube::Resource<DynamicType = ()>>(
    controller: &'static str,
) -> impl Fn(Arc<K>, &Error, Arc<Context>) -> Action {
    move |obj, error, ctx| {
        let wait = ctx.backoffs.failed(key(&*obj));
        tracing::warn!(controller, object = %key(&*obj), %error, retry_in = ?wait, "reconcile failed");
        ctx.metrics.reconcile_failed(controller, error.metric_label());
        Action::requeue(wait)
    }
}

/// Runs both controllers (all namespaces) until `stop` resolves. Call only on the leader.
///
/// One reflector per kind feeds both controllers ([`stores`]): the policy controller is
/// triggered by its policies, and by pod and snapshot events mapped to the policies they concern
/// (`reconcile_on`); the snapshot controller by its snapshots and their Jobs.
pub async fn run(ctx: Arc<Context>, stop: impl Future<Output = ()> + Send + Sync + 'static) {
    let client = ctx.client.clone();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };

    // Plain stores, each fed by one watch whose events this function fans out to the controllers
    // (kube's shared-store subscription drops deletions and can stall a subscriber when an
    // object is gone from the store before it is read).
    let (policies, policy_writer) = reflector::store::<DumpPolicy>();
    let (snapshots, snapshot_writer) = reflector::store::<DumpSnapshot>();
    let (injected_pods, injected_writer) = reflector::store::<Pod>();
    let (other_pods, other_writer) = reflector::store();
    let (dump_stores, dump_store_writer) = reflector::store::<DumpStore>();
    let caches =
        Stores { policies: policies.clone(), snapshots: snapshots.clone(), injected_pods, other_pods, dump_stores };
    *ctx.stores.write().expect("stores lock") = Some(caches.clone());
    type Objects<K> = futures::channel::mpsc::UnboundedSender<Result<K, watcher::Error>>;
    let (policy_tx, policy_events) = futures::channel::mpsc::unbounded();
    let (snapshot_tx, snapshot_events) = futures::channel::mpsc::unbounded();
    fn applied<K: Clone>(event: &watcher::Result<watcher::Event<K>>, to: &Objects<K>) {
        match event {
            Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => {
                let _ = to.unbounded_send(Ok(o.clone()));
            }
            Err(_) => logged(event),
            _ => {}
        }
    }
    fn logged<K>(event: &watcher::Result<watcher::Event<K>>) {
        if let Err(err) = event {
            tracing::warn!(%err, kind = std::any::type_name::<K>(), "watch failed (retried with backoff)");
        }
    }

    // Pod and snapshot events, as the policies they concern.
    let (touch, touched) = futures::channel::mpsc::unbounded::<ObjectRef<DumpPolicy>>();
    let touch_policies = |refs: Vec<ObjectRef<DumpPolicy>>, touch: &futures::channel::mpsc::UnboundedSender<_>| {
        for r in refs {
            let _ = touch.unbounded_send(r);
        }
    };

    let policy_feed = watcher(Api::<DumpPolicy>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .modify(|p| stores::slim(&mut p.metadata))
        .reflect(policy_writer)
        .take_until(stopped())
        .for_each(move |e| {
            applied(&e, &policy_tx);
            async {}
        });
    let snapshot_feed = {
        let touch = touch.clone();
        watcher(Api::<DumpSnapshot>::all(client.clone()), watcher::Config::default())
            .default_backoff()
            .modify(|s| stores::slim(&mut s.metadata))
            .reflect(snapshot_writer)
            .take_until(stopped())
            .for_each(move |e| {
                applied(&e, &snapshot_tx);
                if let Ok(watcher::Event::Apply(s) | watcher::Event::InitApply(s) | watcher::Event::Delete(s)) = &e {
                    touch_policies(stores::policy_of(s).into_iter().collect(), &touch);
                }
                async {}
            })
    };
    let injected_feed = {
        let (touch, caches) = (touch.clone(), caches.clone());
        let config = watcher::Config::default().labels(&stores::injected_selector());
        let pods = watcher(Api::<Pod>::all(client.clone()), config).default_backoff().modify(stores::slim_pod);
        reflector::reflector(injected_writer, pods).take_until(stopped()).for_each(move |e| {
            logged(&e);
            if let Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p) | watcher::Event::Delete(p)) = &e {
                touch_policies(caches.policies_selecting(&p.metadata), &touch);
            }
            async {}
        })
    };
    let other_feed = {
        let (touch, caches) = (touch.clone(), caches.clone());
        let config = watcher::Config::default().labels(&stores::other_selector()).fields(stores::RUNNING);
        // Metadata-only requests (the API server sends PartialObjectMetadata).
        let pods = watcher(Api::<PartialObjectMeta<Pod>>::all(client.clone()), config)
            .default_backoff()
            .modify(|p| stores::slim_pod_meta(&mut p.metadata));
        reflector::reflector(other_writer, pods).take_until(stopped()).for_each(move |e| {
            logged(&e);
            if let Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p) | watcher::Event::Delete(p)) = &e {
                touch_policies(caches.policies_selecting(&p.metadata), &touch);
            }
            async {}
        })
    };
    // A store's change can change the Ready condition of the policies naming it.
    let store_feed = {
        let (touch, caches) = (touch.clone(), caches.clone());
        watcher(Api::<DumpStore>::all(client.clone()), watcher::Config::default())
            .default_backoff()
            .modify(|s| stores::slim(&mut s.metadata))
            .reflect(dump_store_writer)
            .take_until(stopped())
            .for_each(move |e| {
                logged(&e);
                if let Ok(watcher::Event::Apply(s) | watcher::Event::InitApply(s) | watcher::Event::Delete(s)) = &e {
                    touch_policies(caches.policies_naming(&s.name_any()), &touch);
                }
                async {}
            })
    };
    drop(touch);

    let policy_controller = Controller::for_stream(policy_events, policies)
        .reconcile_on(touched)
        .graceful_shutdown_on(stopped())
        .run(policy_reconciler::reconcile, error_policy::<DumpPolicy>(policy_reconciler::CONTROLLER), ctx.clone())
        .for_each(|r| {
            let ctx = ctx.clone();
            async move {
                if let Ok((obj, _)) = r {
                    ctx.backoffs.succeeded(&format!(
                        "DumpPolicy/{}/{}",
                        obj.namespace.as_deref().unwrap_or(""),
                        obj.name
                    ));
                }
            }
        });

    let snapshot_store = snapshots.clone();
    let phase_ctx = ctx.clone();
    let snapshot_controller = Controller::for_stream(snapshot_events, snapshots)
        .owns(Api::<Job>::all(client.clone()), watcher::Config::default().labels(job::SNAPSHOT_LABEL))
        .graceful_shutdown_on(stopped())
        .run(snapshot_reconciler::reconcile, error_policy::<DumpSnapshot>(snapshot_reconciler::CONTROLLER), ctx.clone())
        .for_each(move |r| {
            let ctx = phase_ctx.clone();
            let store = snapshot_store.clone();
            async move {
                if let Ok((obj, _)) = r {
                    ctx.backoffs.succeeded(&format!(
                        "DumpSnapshot/{}/{}",
                        obj.namespace.as_deref().unwrap_or(""),
                        obj.name
                    ));
                }
                let phases: Vec<(api::SnapshotPhase, i64)> = store
                    .state()
                    .iter()
                    .map(|s| (s.status.as_ref().map(|st| st.phase).unwrap_or_default(), 1))
                    .collect();
                ctx.metrics.set_snapshot_phases(&phases);
            }
        });

    let watch_stop = async move {
        stop.await;
        let _ = stop_tx.send(true);
    };
    // The controllers start once every cache has had its full list (a status computed before
    // would count pods that are only not loaded yet as gone); events meanwhile wait in the channels.
    let controllers = async {
        if caches.ready().await.is_ok() {
            tokio::join!(policy_controller, snapshot_controller);
        }
    };
    tokio::join!(policy_feed, snapshot_feed, injected_feed, other_feed, store_feed, controllers, watch_stop);
    *ctx.stores.write().expect("stores lock") = None;
}

/// Campaigns with `elector` and runs the controllers whenever this replica leads, until
/// `shutdown` turns true. Losing the Lease stops the controllers (they start again if it is
/// won back); the HTTPS server is not affected.
pub async fn run_when_leading(
    ctx: Arc<Context>,
    elector: LeaderElector,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let (leading_tx, mut leading) = tokio::sync::watch::channel(false);
    let mut on_shutdown = shutdown.clone();
    let campaign = tokio::spawn(elector.run(leading_tx, async move {
        let _ = on_shutdown.wait_for(|s| *s).await;
    }));
    loop {
        tokio::select! {
            r = leading.wait_for(|l| *l) => if r.is_err() { break },
            _ = shutdown.wait_for(|s| *s) => break,
        }
        tracing::info!("leading: controllers start");
        ctx.metrics.leader.set(1);
        let mut lost = leading.clone();
        let mut down = shutdown.clone();
        run(ctx.clone(), async move {
            tokio::select! {
                _ = lost.wait_for(|l| !*l) => {}
                _ = down.wait_for(|s| *s) => {}
            }
        })
        .await;
        ctx.metrics.leader.set(0);
        tracing::info!("controllers stopped");
        if *shutdown.borrow() {
            break;
        }
    }
    let _ = campaign.await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_per_object_up_to_five_minutes_and_resets() {
        let b = Backoffs::default();
        let waits: Vec<u64> = (0..12).map(|_| b.failed("DumpSnapshot/ns/a".into()).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
        assert_eq!(b.failed("DumpSnapshot/ns/b".into()).as_secs(), 1, "per object");
        b.succeeded("DumpSnapshot/ns/a");
        assert_eq!(b.failed("DumpSnapshot/ns/a".into()).as_secs(), 1);
    }
}
