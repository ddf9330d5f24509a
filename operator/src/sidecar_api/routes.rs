//! The handlers: authenticate, fetch, call a decision of decide.rs, apply. Nothing here decides.

use std::time::Instant;

use api::{DumpPolicy, DumpSnapshot, DumpSnapshotStatus, FindingsSummary, SnapshotPhase};
use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Patch, PatchParams, PostParams};
use serde::Deserialize;
use serde_json::json;

use api::wire::{
    CaptureReply, CaptureReport, CaptureRequest, CompleteRequest, FailureReport, FindingsReport, MultipartUpload,
    PolicyReply, RequestsReply, UploadReply, UploadRequest, UploadTarget,
};

use super::auth::{ANALYZER_AUDIENCE, Caller, SIDECAR_AUDIENCE};
use super::decide;
use super::{ApiError, MAX_WAIT, PART_EXPIRY, PUT_EXPIRY, SidecarApi};

type Reply<T> = Result<Json<T>, ApiError>;

impl SidecarApi {
    async fn caller(&self, headers: &HeaderMap, audience: &'static str) -> Result<Caller, ApiError> {
        let authorization = headers.get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        let caller = self.inner.auth.authenticate(authorization, audience).await?;
        if let Err(wait) = self.inner.limiter.take(&caller.namespace, &caller.pod, Instant::now()) {
            tracing::debug!(namespace = %caller.namespace, pod = %caller.pod, "rate limited");
            return Err(ApiError::too_many_requests(format!(
                "pod {}/{} sent more requests than the operator allows per pod: try again in {} ms",
                caller.namespace,
                caller.pod,
                wait.as_millis().max(1)
            )));
        }
        Ok(caller)
    }

    fn snapshots(&self, namespace: &str) -> kube::Api<DumpSnapshot> {
        kube::Api::namespaced(self.inner.client.clone(), namespace)
    }

    async fn pod(&self, c: &Caller) -> Result<Pod, ApiError> {
        let pods: kube::Api<Pod> = kube::Api::namespaced(self.inner.client.clone(), &c.namespace);
        pods.get_opt(&c.pod)
            .await
            .map_err(kube_error)?
            .ok_or_else(|| ApiError::not_found(format!("pod {}/{} does not exist", c.namespace, c.pod)))
    }

    /// The caller's pod's policy.
    async fn policy(&self, c: &Caller) -> Result<DumpPolicy, ApiError> {
        let pod = self.pod(c).await?;
        let name = decide::policy_name(&pod).ok_or_else(|| {
            ApiError::not_found(format!("pod {}/{} was not injected by a DumpPolicy", c.namespace, c.pod))
        })?;
        let policies: kube::Api<DumpPolicy> = kube::Api::namespaced(self.inner.client.clone(), &c.namespace);
        policies
            .get_opt(name)
            .await
            .map_err(kube_error)?
            .ok_or_else(|| ApiError::not_found(format!("DumpPolicy {}/{name} does not exist (any more)", c.namespace)))
    }

    async fn s3_store(&self, policy: &DumpPolicy) -> Result<store::S3Store, ApiError> {
        match self.store_for(&policy.namespace().unwrap_or_default(), &policy.spec).await? {
            store::Store::S3(s3) => Ok(*s3),
            store::Store::Volume(_) => Err(ApiError::conflict(
                "the policy stores on a volume: write the artifacts there and report file:// URIs",
            )),
        }
    }

    async fn set_status(&self, namespace: &str, name: &str, status: &DumpSnapshotStatus) -> Result<(), ApiError> {
        let patch = Patch::Merge(json!({ "status": status }));
        self.snapshots(namespace).patch_status(name, &PatchParams::default(), &patch).await.map_err(kube_error)?;
        Ok(())
    }
}

fn body<T>(b: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    b.map(|Json(t)| t).map_err(|e| match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::too_large(format!("the request body is too large: {}", e.body_text()))
        }
        _ => ApiError::bad_request(e.body_text()),
    })
}

fn kube_error(e: kube::Error) -> ApiError {
    match &e {
        kube::Error::Api(s) if s.code == 404 => ApiError::not_found(s.message.clone()),
        kube::Error::Api(s) if s.code == 409 => ApiError::conflict(s.message.clone()),
        kube::Error::Api(s) if s.code == 422 || s.code == 400 => ApiError::bad_request(s.message.clone()),
        _ => ApiError::unavailable(format!("the API server: {e}")),
    }
}

/// Storage refusals the sidecar caused (a bad upload id, missing parts) are its 400; a refusal
/// of the operator's own access (`AccessDenied`, an unknown key, signature) is `StorageRefused`,
/// which no retry fixes; the rest is the storage failing, worth another try.
fn store_error(e: store::Error) -> ApiError {
    let text = e.to_string();
    match &e {
        store::Error::S3 { status: 401 | 403, .. } => ApiError::storage_refused(text),
        store::Error::S3 { code, .. } if code == "NoSuchBucket" => ApiError::storage_refused(text),
        store::Error::S3 { status, .. } if (400..500).contains(status) && !e.is_transient() => {
            ApiError::bad_request(text)
        }
        store::Error::InvalidRequest(_) | store::Error::TooLarge { .. } => ApiError::bad_request(text),
        _ if e.is_transient() => ApiError::storage_failed(text),
        _ => ApiError::storage_refused(text),
    }
}

pub async fn policy(State(api): State<SidecarApi>, headers: HeaderMap) -> Reply<PolicyReply> {
    let caller = api.caller(&headers, SIDECAR_AUDIENCE).await?;
    let p = api.policy(&caller).await?;
    Ok(Json(PolicyReply {
        name: p.metadata.name.clone().unwrap_or_default(),
        resource_version: p.metadata.resource_version.clone().unwrap_or_default(),
        spec: p.spec,
    }))
}

pub async fn uploads(
    State(api): State<SidecarApi>,
    headers: HeaderMap,
    req: Result<Json<UploadRequest>, JsonRejection>,
) -> Reply<UploadReply> {
    let caller = api.caller(&headers, SIDECAR_AUDIENCE).await?;
    let req = body(req)?;
    decide::check_segment("capture", &req.capture)?;
    let policy = api.policy(&caller).await?;
    decide::check_upload(&req.files, policy.spec.limits.max_bytes.0.max(0.0) as u64)?;
    let s3 = api.s3_store(&policy).await?;
    let mut files = Vec::new();
    for f in &req.files {
        let key = s3.key(&[&caller.namespace, &caller.pod, &req.capture, &f.name]);
        let (url, multipart) = if f.size > s3.part_size() {
            let up = s3.create_multipart(&key, f.size, PART_EXPIRY).await.map_err(store_error)?;
            let up = MultipartUpload { upload_id: up.upload_id, part_size: up.part_size, parts: up.parts };
            (None, Some(up))
        } else {
            (Some(s3.presign_put(&key, f.size, PUT_EXPIRY)), None)
        };
        files.push(UploadTarget { name: f.name.clone(), uri: s3.uri(&key), url, multipart });
    }
    Ok(Json(UploadReply { files }))
}

pub async fn complete(
    State(api): State<SidecarApi>,
    headers: HeaderMap,
    req: Result<Json<CompleteRequest>, JsonRejection>,
) -> Result<StatusCode, ApiError> {
    let caller = api.caller(&headers, SIDECAR_AUDIENCE).await?;
    let req = body(req)?;
    decide::check_segment("capture", &req.capture)?;
    decide::check_segment("file name", &req.name)?;
    let policy = api.policy(&caller).await?;
    let s3 = api.s3_store(&policy).await?;
    // The key is rebuilt from the token's pod: a pod can only complete its own uploads.
    let key = s3.key(&[&caller.namespace, &caller.pod, &req.capture, &req.name]);
    if req.etags.is_empty() {
        s3.abort_multipart(&key, &req.upload_id).await.map_err(store_error)?;
    } else {
        s3.complete_multipart(&key, &req.upload_id, &req.etags).await.map_err(store_error)?;
    }
    Ok(StatusCode::NO_CONTENT)
}

pub async fn captures(
    State(api): State<SidecarApi>,
    headers: HeaderMap,
    req: Result<Json<CaptureReport>, JsonRejection>,
) -> Result<Response, ApiError> {
    let caller = api.caller(&headers, SIDECAR_AUDIENCE).await?;
    let report = body(req)?;
    let capture = decide::capture_id(&report)?;
    let policy = api.policy(&caller).await?;
    let policy_name = policy.metadata.name.clone().unwrap_or_default();
    let volume = decide::snapshot_volume(&policy.spec.storage);
    let (mut spec, status) =
        decide::snapshot_from_report(&report, &caller.pod, &policy_name, policy.spec.analysis.enabled, volume)?;
    // The store is recorded with the artifacts: deletion and analysis use it (and only keys
    // under this pod's prefix in it) even once the policy is gone or names another store.
    spec.store = policy.spec.storage.s3.as_ref().map(|s3| s3.store_ref.clone());
    // On a claim, every file is this pod's (the cleanup Job deletes under the pod's directory).
    if let Some(v) = &spec.volume {
        let own = decide::claim_prefix(v, &caller.namespace, &caller.pod);
        for a in &spec.artifacts {
            decide::check_artifact_owner(&a.uri, &own)?;
        }
    }

    // The operator vouches for what it records: every s3:// artifact is this pod's, exists, and
    // has the reported size.
    let storage = api.store_for(&caller.namespace, &policy.spec).await?;
    if let store::Store::S3(s3) = &storage {
        let own = super::stores::own_prefix(s3, &caller.namespace, &caller.pod);
        for a in &spec.artifacts {
            decide::check_artifact_owner(&a.uri, &own)?;
            let found = storage.head(&a.uri).await.map_err(store_error)?;
            match found {
                Some(o) if o.size == a.size => {}
                Some(o) => {
                    return Err(ApiError::bad_request(format!("{} holds {} bytes, not {}", a.uri, o.size, a.size)));
                }
                None => return Err(ApiError::bad_request(format!("{} was not uploaded", a.uri))),
            }
        }
    }

    let snapshots = api.snapshots(&caller.namespace);
    let name = match &report.snapshot {
        Some(requested) => {
            // The request keeps its trigger (onDemand); the capture fills in the rest.
            let patch = json!({ "spec": {
                "policy": spec.policy, "container": spec.container, "pid": spec.pid,
                "runtimeVersion": spec.runtime_version, "artifacts": spec.artifacts, "volume": spec.volume,
                "store": spec.store,
            }});
            fill_in_request(&snapshots, &caller.namespace, &caller.pod, requested, patch).await?
        }
        None => {
            let name = decide::snapshot_name(&caller.pod, &capture);
            let object = decide::new_snapshot(&caller.namespace, &name, &capture, spec.clone());
            // A retried report: the same capture of the same pod is the same snapshot.
            create_once(&snapshots, object, |existing| {
                existing.spec.pod == caller.pod && existing.spec.artifacts == spec.artifacts
            })
            .await?;
            name
        }
    };
    api.set_status(&caller.namespace, &name, &status).await?;
    tracing::info!(namespace = %caller.namespace, pod = %caller.pod, snapshot = %name, phase = ?status.phase, "capture recorded");
    Ok(Json(CaptureReply { snapshot: name }).into_response())
}

/// A capture that failed in the sidecar: the asked-for snapshot, or a new one, becomes `Failed`
/// with the reason; the controller then publishes `CaptureFailed` on the pod and the policy.
pub async fn failures(
    State(api): State<SidecarApi>,
    headers: HeaderMap,
    req: Result<Json<FailureReport>, JsonRejection>,
) -> Reply<CaptureReply> {
    let caller = api.caller(&headers, SIDECAR_AUDIENCE).await?;
    let report = body(req)?;
    let policy = api.policy(&caller).await?;
    let policy_name = policy.metadata.name.clone().unwrap_or_default();
    let (spec, status) = decide::snapshot_from_failure(&report, &caller.pod, &policy_name)?;
    let snapshots = api.snapshots(&caller.namespace);
    let name = match &report.snapshot {
        Some(requested) => {
            let patch = json!({ "spec": {
                "policy": spec.policy, "container": spec.container, "pid": spec.pid, "runtimeVersion": spec.runtime_version,
            }});
            fill_in_request(&snapshots, &caller.namespace, &caller.pod, requested, patch).await?
        }
        None => {
            let name = decide::snapshot_name(&caller.pod, &report.id);
            let object = decide::new_snapshot(&caller.namespace, &name, &report.id, spec);
            // A retried report: the same failure of the same pod is the same snapshot.
            create_once(&snapshots, object, |existing| decide::is_same_failure(existing, &caller.pod)).await?;
            name
        }
    };
    api.set_status(&caller.namespace, &name, &status).await?;
    tracing::info!(namespace = %caller.namespace, pod = %caller.pod, snapshot = %name, reason = %report.reason,
        "capture failure recorded");
    Ok(Json(CaptureReply { snapshot: name }))
}

/// Fills `patch` into the on-demand request `requested`, which must be the calling pod's and
/// still waiting for a capture; the snapshot's name.
async fn fill_in_request(
    snapshots: &kube::Api<DumpSnapshot>,
    namespace: &str,
    pod: &str,
    requested: &str,
    patch: serde_json::Value,
) -> Result<String, ApiError> {
    let existing = snapshots
        .get_opt(requested)
        .await
        .map_err(kube_error)?
        .ok_or_else(|| ApiError::not_found(format!("DumpSnapshot {namespace}/{requested} does not exist")))?;
    decide::check_fill_in(&existing, pod)?;
    snapshots.patch(requested, &PatchParams::default(), &Patch::Merge(patch)).await.map_err(kube_error)?;
    Ok(requested.to_string())
}

/// Creates `object`; if it exists already, that is fine only when `same` says it is this report's
/// (a retried report), and a conflict otherwise.
async fn create_once(
    snapshots: &kube::Api<DumpSnapshot>,
    object: DumpSnapshot,
    same: impl Fn(&DumpSnapshot) -> bool,
) -> Result<(), ApiError> {
    match snapshots.create(&PostParams::default(), &object).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => {
            let name = object.metadata.name.clone().unwrap_or_default();
            let existing = snapshots.get(&name).await.map_err(kube_error)?;
            if same(&existing) {
                Ok(())
            } else {
                Err(ApiError::conflict(format!("DumpSnapshot {name} exists for another capture")))
            }
        }
        Err(e) => Err(kube_error(e)),
    }
}

#[derive(Deserialize)]
pub struct WaitQuery {
    wait: Option<u64>,
}

pub async fn requests(
    State(api): State<SidecarApi>,
    headers: HeaderMap,
    query: Result<Query<WaitQuery>, axum::extract::rejection::QueryRejection>,
) -> Reply<RequestsReply> {
    let caller = api.caller(&headers, SIDECAR_AUDIENCE).await?;
    let wait = query.map_err(|e| ApiError::bad_request(e.body_text()))?.0.wait.unwrap_or(0);
    let deadline = Instant::now() + std::time::Duration::from_secs(wait).min(MAX_WAIT);
    let snapshots = api.snapshots(&caller.namespace);
    let watch = api.request_watch().await;
    loop {
        // Registered before reading, so a change between the read and the wait still wakes us.
        let mut changed = watch.map(|w| Box::pin(w.changed.notified()));
        if let Some(c) = changed.as_mut() {
            c.as_mut().enable();
        }
        let candidates: Vec<DumpSnapshot> = match watch {
            Some(w) => w
                .cache
                .state()
                .iter()
                .filter(|s| s.metadata.namespace.as_deref() == Some(caller.namespace.as_str()))
                .map(|s| (**s).clone())
                .collect(),
            None => snapshots.list(&Default::default()).await.map_err(kube_error)?.items,
        };
        let mut handed = Vec::new();
        for s in candidates.iter().filter(|s| decide::is_request_for(s, &caller.pod)) {
            let name = s.metadata.name.clone().unwrap_or_default();
            // The resourceVersion makes the move conditional: of two replicas polling at once,
            // one hands the request out, the other gets 409 and skips it (as does a stale cache).
            let patch = json!({
                "metadata": { "resourceVersion": s.metadata.resource_version },
                "status": { "phase": SnapshotPhase::Capturing },
            });
            match snapshots.patch_status(&name, &PatchParams::default(), &Patch::Merge(patch)).await {
                Ok(_) => handed.push(CaptureRequest { snapshot: name, pid: s.spec.pid }),
                Err(kube::Error::Api(e)) if e.code == 409 || e.code == 404 => {}
                Err(e) => return Err(kube_error(e)),
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if !handed.is_empty() || left.is_zero() {
            return Ok(Json(RequestsReply { requests: handed }));
        }
        match changed {
            // A missed event (the watch re-listing) costs at most a few seconds.
            Some(c) => drop(tokio::time::timeout(left.min(WATCH_RECHECK), c).await),
            None => tokio::time::sleep(api.inner.poll_interval.min(left)).await,
        }
    }
}

/// With the watch, waiting polls still look again this often.
const WATCH_RECHECK: std::time::Duration = std::time::Duration::from_secs(5);

impl SidecarApi {
    /// The shared watch, once it has listed; `None` (list per poll) while it cannot.
    async fn request_watch(&self) -> Option<&super::request_watch::RequestWatch> {
        let client = self.inner.client.clone();
        let w =
            self.inner.request_watch.get_or_init(|| async { super::request_watch::RequestWatch::start(client) }).await;
        let ready = tokio::time::timeout(std::time::Duration::from_secs(5), w.cache.wait_until_ready()).await;
        matches!(ready, Ok(Ok(()))).then_some(w)
    }
}

pub async fn findings(
    State(api): State<SidecarApi>,
    headers: HeaderMap,
    req: Result<Json<FindingsReport>, JsonRejection>,
) -> Result<StatusCode, ApiError> {
    let caller = api.caller(&headers, ANALYZER_AUDIENCE).await?;
    let report = body(req)?;
    let snapshot =
        api.snapshots(&caller.namespace).get_opt(&report.snapshot).await.map_err(kube_error)?.ok_or_else(|| {
            ApiError::not_found(format!("DumpSnapshot {}/{} does not exist", caller.namespace, report.snapshot))
        })?;
    let pod = api.pod(&caller).await?;
    let jobs: kube::Api<Job> = kube::Api::namespaced(api.inner.client.clone(), &caller.namespace);
    let job = jobs.get_opt(&decide::job_name_of(&snapshot)).await.map_err(kube_error)?;
    decide::check_job_pod(&snapshot, job.as_ref(), &pod, caller.pod_uid.as_deref())?;
    let summary = FindingsSummary::from_document(&report.findings).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let status = json!({ "status": { "phase": SnapshotPhase::Analyzed, "findings": summary } });
    api.snapshots(&caller.namespace)
        .patch_status(&report.snapshot, &PatchParams::default(), &Patch::Merge(status))
        .await
        .map_err(kube_error)?;
    tracing::info!(namespace = %caller.namespace, snapshot = %report.snapshot, summary = %summary.summary, "findings recorded");
    Ok(StatusCode::NO_CONTENT)
}
