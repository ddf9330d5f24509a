//! The HTTPS API for sidecars and analysis Jobs (docs/operator.md, "The HTTPS API"): TokenReview
//! authentication, policy fetch, upload URLs, capture reports, on-demand requests, findings from
//! Jobs. [`router`] is merged into the operator's one HTTPS listener.
//!
//! S3 credentials: the Secret named by the `DumpStore` the policy names (`spec.storage.s3.storeRef`),
//! in the operator's namespace, keys `accessKeyId` and `secretAccessKey` (and `sessionToken` for
//! temporary credentials). They never leave the operator: sidecars get presigned URLs.

mod auth;
pub mod decide;
pub mod limit;
mod object_storage;
mod request_watch;
mod routes;
pub mod stores;

use std::sync::Arc;
use std::time::Duration;

use api::wire::{self, ErrorReason};
use api::{DumpPolicySpec, StorageTarget};
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

pub use auth::{ANALYZER_AUDIENCE, CACHE_TTL, Caller, POD_NAME_EXTRA, SIDECAR_AUDIENCE, caller_from_review};
pub use object_storage::{JOB_URL_EXPIRY, ObjectStorage};

/// Keys of the S3 credentials Secret.
pub const ACCESS_KEY_ID: &str = "accessKeyId";
pub const SECRET_ACCESS_KEY: &str = "secretAccessKey";
pub const SESSION_TOKEN: &str = "sessionToken";

/// Presigned PUTs of whole files are short-lived; a part URL must outlive a slow multi-GB upload.
pub const PUT_EXPIRY: Duration = Duration::from_secs(15 * 60);
pub const PART_EXPIRY: Duration = Duration::from_secs(60 * 60);
/// Largest request body of the routes, but findings: reports and upload plans are small (a
/// capture's live findings at most a few hundred kB).
pub const MAX_BODY: usize = 4 << 20;
/// Largest findings report of an analysis Job (the whole findings document).
pub const MAX_FINDINGS_BODY: usize = 32 << 20;
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
    limiter: limit::Limiter,
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
                limiter: limit::Limiter::new(limit::Rate::default()),
            }),
        }
    }

    /// Requests per pod: `rate` instead of [`limit::Rate::default`].
    pub fn with_rate(self, rate: limit::Rate) -> Self {
        let mut inner = Arc::into_inner(self.inner).expect("configure before sharing");
        inner.limiter = limit::Limiter::new(rate);
        Self { inner: Arc::new(inner) }
    }

    /// Files above `bytes` are uploaded in parts of `bytes` (default 64 MiB; tests use less).
    pub fn with_part_size(self, bytes: u64) -> Self {
        let mut inner = Arc::into_inner(self.inner).expect("configure before sharing");
        inner.part_size = bytes;
        Self { inner: Arc::new(inner) }
    }

    /// The storage of a policy in `namespace`, with its store's credentials (the store must allow
    /// the namespace).
    pub async fn store_for(&self, namespace: &str, spec: &DumpPolicySpec) -> Result<store::Store, ApiError> {
        match spec.storage.target() {
            StorageTarget::Volume(v) => Ok(store::Store::Volume(store::VolumeStore::new(&v.path))),
            StorageTarget::S3(s3) => {
                Ok(store::Store::S3(Box::new(self.store_named(&s3.store_ref, namespace, true).await?)))
            }
        }
    }

    /// The `DumpStore` `name` with its credentials, checked for `namespace` when `check_namespace`;
    /// also what the controller deletes artifacts ([`crate::controller::ArtifactDeleter`]) and
    /// presigns GETs for the analysis Job with.
    pub async fn store_named(
        &self,
        name: &str,
        namespace: &str,
        check_namespace: bool,
    ) -> Result<store::S3Store, ApiError> {
        let store = stores::resolve(&self.inner.client, name, namespace, check_namespace).await?;
        let s3 =
            stores::s3_store(&self.inner.client, &self.inner.operator_namespace, &store, self.inner.part_size).await?;
        Ok(s3.with_http(self.inner.http.clone()))
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
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .route(wire::FINDINGS.path, post(routes::findings).layer(DefaultBodyLimit::max(MAX_FINDINGS_BODY)))
        .with_state(state)
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
    pub fn too_many_requests(m: impl Into<String>) -> Self {
        Self::new(ErrorReason::TooManyRequests, m)
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
