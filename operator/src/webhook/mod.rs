//! The mutating admission webhook: AdmissionReview handling over the policies of a reflector
//! cache, its configuration, its certificates and the operator's HTTPS server.

pub mod admission;
pub mod certs;
pub mod config;
pub mod provision;
pub mod server;
pub mod tls;

use prometheus_client::metrics::histogram::Histogram;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use api::DumpPolicy;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::{FutureExt, StreamExt};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};

use crate::Error;
use crate::inject::SidecarSettings;
pub use server::{serve, serve_on};
pub use tls::CertSource;

/// How long an admission waits for the policy cache's first list (just after start-up), well
/// inside the webhook's 5 s timeout.
const CACHE_WAIT: Duration = Duration::from_secs(2);

/// What the webhook routes share.
#[derive(Clone)]
pub struct WebhookState {
    /// Every DumpPolicy of the cluster, kept by a reflector: no API call per admission.
    pub policies: Store<DumpPolicy>,
    /// The sidecar to inject; its `operator_ca` is taken from `certs` at each admission.
    pub sidecar: SidecarSettings,
    pub certs: CertSource,
    /// `dumpwatch_operator_webhook_duration_seconds`: time to answer one AdmissionReview.
    pub latency: Histogram,
}

/// Buckets for admission latency: the API server waits at most `timeoutSeconds` (5 s); we aim
/// for a p99 under 10 ms.
pub fn latency_histogram() -> Histogram {
    Histogram::new([0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0])
}

/// `POST /mutate`, `GET /healthz`, `GET /readyz`.
pub fn router(state: WebhookState) -> Router {
    Router::new()
        .route(config::MUTATE_PATH, post(mutate))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(Arc::new(state))
}

/// A reflector over every DumpPolicy: the store the webhook reads, and the future that keeps
/// it current (run it for the life of the process; it retries with backoff on its own).
pub fn policy_cache(client: kube::Client) -> (Store<DumpPolicy>, impl Future<Output = ()> + Send + 'static) {
    let (store, writer) = reflector::store();
    let stream =
        reflector::reflector(writer, watcher(kube::Api::<DumpPolicy>::all(client), watcher::Config::default()))
            .default_backoff()
            .touched_objects();
    let run = stream.for_each(|event| async move {
        if let Err(e) = event {
            tracing::warn!(error = %e, "DumpPolicy watch");
        }
    });
    (store, run)
}

async fn mutate(State(state): State<Arc<WebhookState>>, body: Bytes) -> Response {
    let started = std::time::Instant::now();
    let answer = answer_review(&state, body).await;
    state.latency.observe(started.elapsed().as_secs_f64());
    answer
}

async fn answer_review(state: &WebhookState, body: Bytes) -> Response {
    if state.policies.wait_until_ready().now_or_never().is_none() {
        let _ = tokio::time::timeout(CACHE_WAIT, state.policies.wait_until_ready()).await;
    }
    let sidecar = SidecarSettings { operator_ca: state.certs.ca_pem(), ..state.sidecar.clone() };
    let policies_in =
        |namespace: &str| state.policies.state_filter(|p| p.metadata.namespace.as_deref() == Some(namespace));
    let reviewed = admission::review(&body, policies_in, &sidecar);
    let decision = &reviewed.decision;
    if decision.warnings.is_empty() {
        tracing::info!(uid = %reviewed.uid, namespace = %reviewed.namespace, pod = %reviewed.pod,
            policy = decision.policy.as_deref().unwrap_or("-"), injected = decision.patch.is_some(), "admission");
    } else {
        tracing::warn!(uid = %reviewed.uid, namespace = %reviewed.namespace, pod = %reviewed.pod,
            policy = decision.policy.as_deref().unwrap_or("-"), injected = decision.patch.is_some(),
            warnings = ?decision.warnings, "admission");
    }
    match reviewed.body {
        Some(body) => ([(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response(),
        None => (StatusCode::BAD_REQUEST, "not an AdmissionReview").into_response(),
    }
}

/// Ready when the API server can use the webhook: a certificate is loaded, its CA is in the
/// webhook configuration's `caBundle` (self-provisioned mode), and the policy cache has listed
/// once. A pod created before that is admitted without its sidecar, so callers (the chart's
/// readiness probe, `scripts/demo`) wait for this.
async fn readyz(State(state): State<Arc<WebhookState>>) -> Response {
    let cache = state.policies.wait_until_ready().now_or_never().is_some_and(|r| r.is_ok());
    let (loaded, trusted) = (state.certs.is_loaded(), state.certs.is_trusted());
    if loaded && trusted && cache {
        return "ok".into_response();
    }
    let why = format!("certificate loaded: {loaded}, its CA in the caBundle: {trusted}, policy cache ready: {cache}");
    (StatusCode::SERVICE_UNAVAILABLE, why).into_response()
}

/// Where the serving certificate comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertMode {
    /// The operator generates a CA and serving certificates (Secret in its namespace) and writes
    /// the CA into the webhook configuration's `caBundle`.
    SelfProvisioned,
    /// cert-manager (or anything else) mounts `tls.crt`, `tls.key`, `ca.crt` in a directory;
    /// the `caBundle` is its business (cert-manager's CA injector).
    Files,
}

impl std::str::FromStr for CertMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "self" => Ok(CertMode::SelfProvisioned),
            // The chart's name for it (certificates.mode).
            "files" | "cert-manager" => Ok(CertMode::Files),
            other => Err(format!("unknown certificate mode {other:?}: self, cert-manager or files")),
        }
    }
}

/// How `main` configures the HTTPS listener.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub addr: SocketAddr,
    pub cert_mode: CertMode,
    /// Files mode: the mounted Secret.
    pub cert_dir: PathBuf,
    /// The operator's namespace and Service (the serving certificate's names).
    pub namespace: String,
    pub service_name: String,
    pub extra_sans: Vec<String>,
    pub webhook_config_name: String,
    pub cert_secret_name: String,
    pub sidecar: SidecarSettings,
    /// Where admission latency is recorded (registered on the operator's /metrics by `main`).
    pub latency: Histogram,
}

/// How often certificates are checked (rotation, another replica's rotation, a reset
/// `caBundle`) or re-read from files.
const SELF_PROVISIONED_CHECK: Duration = Duration::from_secs(3600);
const FILES_CHECK: Duration = Duration::from_secs(10);

/// Starts the certificate upkeep and the policy cache, and returns the certificate source (its
/// `ca_pem()` is the CA to hand to analysis Jobs once loaded) and the HTTPS server serving the
/// webhook and `extra` (e.g. the sidecar API) to be awaited. Certificates that cannot be had at
/// once are retried in the background; `/readyz` answers 503 meanwhile.
pub async fn start(
    client: kube::Client,
    options: ServeOptions,
    extra: Router,
) -> Result<(CertSource, impl Future<Output = Result<(), Error>>), Error> {
    let certs = match options.cert_mode {
        CertMode::SelfProvisioned => CertSource::awaiting_ca_bundle(),
        CertMode::Files => CertSource::empty(),
    };
    match options.cert_mode {
        CertMode::SelfProvisioned => {
            let provisioner = provision::SelfProvisioned {
                client: client.clone(),
                namespace: options.namespace.clone(),
                secret_name: options.cert_secret_name.clone(),
                webhook_config_name: options.webhook_config_name.clone(),
                sans: certs::serving_sans(&options.service_name, &options.namespace, &options.extra_sans),
            };
            tokio::spawn(provisioner.run(certs.clone(), SELF_PROVISIONED_CHECK));
        }
        CertMode::Files => {
            if let Err(e) = certs.reload_dir(&options.cert_dir) {
                tracing::warn!(dir = %options.cert_dir.display(), error = %e, "no serving certificate yet");
            }
            tokio::spawn(certs.clone().watch_dir(options.cert_dir.clone(), FILES_CHECK));
        }
    }
    let (policies, reflect) = policy_cache(client);
    tokio::spawn(reflect);
    let state = WebhookState { policies, sidecar: options.sidecar, certs: certs.clone(), latency: options.latency };
    let listener = tokio::net::TcpListener::bind(options.addr)
        .await
        .map_err(|e| Error::io(format!("bind {}", options.addr), e))?;
    tracing::info!(addr = %options.addr, mode = ?options.cert_mode, "serving HTTPS (webhook)");
    Ok((certs.clone(), serve_on(listener, certs, router(state).merge(extra))))
}
