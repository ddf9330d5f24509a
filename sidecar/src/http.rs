//! `/metrics`, `/healthz`, `/readyz`, `/findings`.
//!
//! `/findings` holds thread stacks and type names of the app: in operator mode (where they go to
//! the DumpSnapshot anyway) it is off unless a token file is given, and with a token file it
//! answers only `Authorization: Bearer <the file's contents>`. The standalone sidecar serves it
//! openly on the address its operator chose, as before.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::shared::Shared;

/// Who may read `/findings`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FindingsAccess {
    Open,
    /// Whoever sends the contents of this file as a bearer token (read on each request, so a
    /// rotated Secret takes effect without a restart).
    Token(PathBuf),
    Off,
}

impl FindingsAccess {
    /// Standalone: open unless a token file is given. Operator mode: off unless a token file is.
    pub fn decide(operator_mode: bool, token_file: Option<PathBuf>) -> Self {
        match (token_file, operator_mode) {
            (Some(f), _) => Self::Token(f),
            (None, false) => Self::Open,
            (None, true) => Self::Off,
        }
    }
}

#[derive(Clone)]
pub struct App {
    pub shared: Arc<Shared>,
    /// Set once discovery runs: before that, `/metrics` would claim an empty pod.
    pub ready: Arc<AtomicBool>,
    pub findings: FindingsAccess,
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

async fn findings(State(app): State<App>, headers: HeaderMap) -> Response {
    let presented = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    match &app.findings {
        FindingsAccess::Open => {}
        FindingsAccess::Off => {
            return (
                StatusCode::NOT_FOUND,
                "/findings is off in operator mode (findings go to the DumpSnapshot): set \
                 DUMPWATCH_FINDINGS_TOKEN_FILE to serve them here behind a bearer token\n",
            )
                .into_response();
        }
        FindingsAccess::Token(file) => {
            let expected = std::fs::read_to_string(file).unwrap_or_default();
            if !authorized(presented, expected.trim()) {
                return (StatusCode::UNAUTHORIZED, "/findings needs Authorization: Bearer <token>\n").into_response();
            }
        }
    }
    axum::Json(app.shared.findings()).into_response()
}

/// `Bearer <expected>`, compared in constant time; an empty expected token matches nothing.
fn authorized(presented: Option<&str>, expected: &str) -> bool {
    let Some(token) = presented.and_then(|h| h.strip_prefix("Bearer ")).map(str::trim) else { return false };
    if expected.is_empty() || token.len() != expected.len() {
        return false;
    }
    token.bytes().zip(expected.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn findings_are_off_in_operator_mode_unless_a_token_guards_them() {
        assert_eq!(FindingsAccess::decide(false, None), FindingsAccess::Open);
        assert_eq!(FindingsAccess::decide(true, None), FindingsAccess::Off);
        let f = PathBuf::from("/t");
        assert_eq!(FindingsAccess::decide(true, Some(f.clone())), FindingsAccess::Token(f.clone()));
        assert_eq!(FindingsAccess::decide(false, Some(f.clone())), FindingsAccess::Token(f));
    }

    #[test]
    fn only_the_exact_bearer_token_reads_findings() {
        assert!(authorized(Some("Bearer s3cret"), "s3cret"));
        for wrong in
            [None, Some("s3cret"), Some("Bearer s3cre"), Some("Bearer s3cret2"), Some("Bearer "), Some("Basic s3cret")]
        {
            assert!(!authorized(wrong, "s3cret"), "{wrong:?}");
        }
        assert!(!authorized(Some("Bearer "), ""), "an empty token file opens nothing");
    }
}
