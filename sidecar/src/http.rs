//! `/metrics`, `/healthz`, `/readyz`, `/findings`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::shared::Shared;

#[derive(Clone)]
pub struct App {
    pub shared: Arc<Shared>,
    /// Set once discovery runs: before that, `/metrics` would claim an empty pod.
    pub ready: Arc<AtomicBool>,
}

pub fn router(app: App) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/findings", get(findings))
        .with_state(app)
}

async fn metrics(State(app): State<App>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        app.shared.metrics.encode(),
    )
}

async fn readyz(State(app): State<App>) -> impl IntoResponse {
    if app.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting\n")
    }
}

async fn findings(State(app): State<App>) -> impl IntoResponse {
    axum::Json(app.shared.findings())
}
