//! The HTTPS API for sidecars and analysis Jobs (docs/operator.md, "The HTTPS API"): TokenReview
//! authentication, policy fetch, upload URLs, capture reports, on-demand requests, findings from
//! Jobs. [`router`] is merged into the operator's one HTTPS listener.
//!
//! S3 credentials: the Secret named by the policy's `spec.storage.s3.secretRef`, in the
//! operator's namespace, keys `accessKeyId` and `secretAccessKey` (and `sessionToken` for
//! temporary credentials). They never leave the operator: sidecars get presigned URLs.

mod auth;
pub mod decide;
mod object_storage;
mod request_watch;
mod routes;

use std::sync::Arc;
use std::time::Duration;

use api::wire::{self, ErrorReason};
use api::{DumpPolicySpec, StorageTarget};
use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use k8s_openapi::api::core::v1::Secret;

pub use auth::{ANALYZER_AUDIENCE, CACHE_TTL, Caller, POD_NAME_EXTRA, SIDECAR_AUDIENCE, caller_from_review};
pub use object_storage::{JOB_URL_EXPIRY, ObjectStorage};

/// Keys of the S3 credentials Secret.
pub const ACCESS_KEY_ID: &str = "accessKeyId";
pub const SECRET_ACCESS_KEY: &str = "secretAccessKey";
pub const SESSION_TOKEN: &str = "sessionToken";

/// Presigned PUTs of whole files are short-lived; a part URL must outlive a slow multi-GB upload.
pub const PUT_EXPIRY: Duration = Duration::from_secs(15 * 60);
pub const PART_EXPIRY: Duration = Duration::from_secs(60 * 60);
/// Longest long poll of `/v1/sidecar/requests`.
pub const MAX_WAIT: Duration = Duration::from_secs(60);

/// The API's shared state.
#[derive(Clone)]
pub struct SidecarApi {
    inner: Arc<Inner>,
}

struct Inner {
    client: kube::Client,
    operator_namespace: String,
    auth: auth::Authenticator,
    http: store::HttpClient,
    part_size: u64,
    poll_interval: Duration,
    /// Started by the first long poll.
    request_watch: tokio::sync::OnceCell<request_watch::RequestWatch>,
}

impl SidecarApi {
    /// `client` carries the operator's own credentials; `operator_namespace` holds the storage Secrets.
    pub fn new(client: kube::Client, operator_namespace: impl Into<String>) -> Self {
        Self {
            inner: Arc::new(Inner {
                auth: auth::Authenticator::new(client.clone()),
                client,
                operator_namespace: operator_namespace.into(),
                http: store::HttpClient::new(),
                part_size: store::DEFAULT_PART_SIZE,
                poll_interval: Duration::from_secs(1),
                request_watch: tokio::sync::OnceCell::new(),
            }),
        }
    }

    /// Files above `bytes` are uploaded in parts of `bytes` (default 64 MiB; tests use less).
    pub fn with_part_size(self, bytes: u64) -> Self {
        let mut inner = Arc::into_inner(self.inner).expect("configure before sharing");
        inner.part_size = bytes;
        Self { inner: Arc::new(inner) }
    }

    /// The storage of a policy, with its credentials; also what the controller uses to delete
    /// artifacts ([`crate::controller::ArtifactDeleter`]) and presign GETs for the analysis Job.
    pub async fn store_for(&self, spec: &DumpPolicySpec) -> Result<store::Store, ApiError> {
        store_for_policy(&self.inner.client, &self.inner.operator_namespace, spec, self.inner.part_size).await.map(
            |s| match s {
                store::Store::S3(s3) => store::Store::S3(Box::new(s3.with_http(self.inner.http.clone()))),
                v => v,
            },
        )
    }
}

/// The routes of the sidecar and Job API, to merge into the operator's HTTPS router.
pub fn router(state: SidecarApi) -> Router {
    Router::new()
        .route(wire::POLICY.path, get(routes::policy))
        .route(wire::UPLOADS.path, post(routes::uploads))
        .route(wire::COMPLETE.path, post(routes::complete))
        .route(wire::CAPTURES.path, post(routes::captures))
        .route(wire::FAILURES.path, post(routes::failures))
        .route(wire::REQUESTS.path, get(routes::requests))
        .route(wire::FINDINGS.path, post(routes::findings))
        .with_state(state)
}

/// The storage a policy names: a volume directory, or S3 with the credentials of the Secret
/// `spec.storage.s3.secretRef` in `operator_namespace`.
pub async fn store_for_policy(
    client: &kube::Client,
    operator_namespace: &str,
    spec: &DumpPolicySpec,
    part_size: u64,
) -> Result<store::Store, ApiError> {
    let s3 = match spec.storage.target() {
        StorageTarget::S3(s3) => s3,
        StorageTarget::Volume(v) => return Ok(store::Store::Volume(store::VolumeStore::new(&v.path))),
    };
    let secrets: kube::Api<Secret> = kube::Api::namespaced(client.clone(), operator_namespace);
    let what = format!("Secret {operator_namespace}/{}", s3.secret_ref);
    let secret = secrets
        .get_opt(&s3.secret_ref)
        .await
        .map_err(|e| ApiError::unavailable(format!("reading {what}: {e}")))?
        .ok_or_else(|| ApiError::internal(format!("the storage credentials {what} do not exist")))?;
    let data = secret.data.unwrap_or_default();
    let field =
        |k: &str| data.get(k).map(|v| String::from_utf8_lossy(&v.0).trim().to_string()).filter(|v| !v.is_empty());
    let missing = |k: &str| ApiError::internal(format!("{what} has no {k}"));
    let credentials = store::Credentials {
        access_key_id: field(ACCESS_KEY_ID).ok_or_else(|| missing(ACCESS_KEY_ID))?,
        secret_access_key: field(SECRET_ACCESS_KEY).ok_or_else(|| missing(SECRET_ACCESS_KEY))?,
        session_token: field(SESSION_TOKEN),
    };
    let config = s3_config(s3);
    let store = store::S3Store::new(config, credentials)
        .map_err(|e| ApiError::internal(format!("the policy's S3 storage: {e}")))?
        .with_part_size(part_size);
    Ok(store::Store::S3(Box::new(store)))
}

/// The policy's S3 settings as a store configuration. AWS endpoints get virtual-host addressing,
/// every other server (MinIO, Ceph, moto, ...) path-style, which they all support.
pub fn s3_config(s3: &api::S3Storage) -> store::S3Config {
    let host = s3.endpoint.split("://").nth(1).unwrap_or(&s3.endpoint).split(['/', ':']).next().unwrap_or_default();
    store::S3Config {
        endpoint: s3.endpoint.clone(),
        region: s3.region.clone(),
        bucket: s3.bucket.clone(),
        prefix: s3.prefix.clone(),
        path_style: !host.ends_with(".amazonaws.com"),
    }
}

/// An error reply: `{"error": "<reason>", "message": "..."}` with the reason's HTTP status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub reason: ErrorReason,
    pub message: String,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?} ({}): {}", self.reason, self.reason.status(), self.message)
    }
}

impl std::error::Error for ApiError {}

impl ApiError {
    fn new(reason: ErrorReason, message: impl Into<String>) -> Self {
        Self { reason, message: message.into() }
    }
    pub fn status(&self) -> u16 {
        self.reason.status()
    }
    pub fn bad_request(m: impl Into<String>) -> Self {
        Self::new(ErrorReason::BadRequest, m)
    }
    pub fn unauthorized(m: impl Into<String>) -> Self {
        Self::new(ErrorReason::Unauthorized, m)
    }
    pub fn forbidden(m: impl Into<String>) -> Self {
        Self::new(ErrorReason::Forbidden, m)
    }
    pub fn not_found(m: impl Into<String>) -> Self {
        Self::new(ErrorReason::NotFound, m)
    }
    pub fn conflict(m: impl Into<String>) -> Self {
        Self::new(ErrorReason::Conflict, m)
    }
    pub fn too_large(m: impl Into<String>) -> Self {
        Self::new(ErrorReason::TooLarge, m)
    }
    pub fn internal(m: impl Into<String>) -> Self {
        Self::new(ErrorReason::Internal, m)
    }
    /// The storage failed: worth another try later.
    pub fn storage_failed(m: impl Into<String>) -> Self {
        Self::new(ErrorReason::StorageFailed, m)
    }
    /// The storage refused the operator itself: an administrator must act.
    pub fn storage_refused(m: impl Into<String>) -> Self {
        Self::new(ErrorReason::StorageRefused, m)
    }
    pub fn unavailable(m: impl Into<String>) -> Self {
        Self::new(ErrorReason::Unavailable, m)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = wire::ErrorReply { error: self.reason, message: self.message };
        (status, axum::Json(body)).into_response()
    }
}

#[cfg(test)]
mod tests;
