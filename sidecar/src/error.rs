use std::path::PathBuf;

use api::wire::ErrorReason;

/// Everything the sidecar can fail at. A failed capture is counted and logged; only a bad
/// start (no policy, no storage, no port) stops the sidecar. Reporting decides on
/// [`Error::is_transient`]: by kind, never by text.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading the policy {path}: {source}")]
    PolicyRead { path: PathBuf, source: std::io::Error },

    #[error("policy {path}: {source}")]
    Policy { path: PathBuf, source: api::Error },

    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },

    #[error(transparent)]
    Diag(#[from] diag::Error),

    /// `limits.minFreeDisk` keeps a dump from being written (the text says what is free).
    #[error("{0}")]
    DiskGuard(String),

    #[error("capture refused: {0}")]
    Refused(#[from] crate::limits::Refusal),

    #[error(
        "the policy uses s3 storage, which the sidecar reaches only through the operator (--operator-url) and with a local capture folder (--storage)"
    )]
    NoS3,

    /// `--operator-url` / `--operator-ca` cannot be used.
    #[error("operator settings: {0}")]
    OperatorConfig(String),

    /// No answer from the operator: refused, TLS, timed out.
    #[error("{what}: the operator did not answer: {detail}")]
    OperatorUnreachable { what: String, detail: String },

    /// The operator answered with a refusal (`reason` from its `{"error": ...}` body).
    #[error("{what}: the operator refused (HTTP {status}{}): {message}", reason.map(|r| format!(" {r:?}")).unwrap_or_default())]
    OperatorRefused { what: String, status: u16, reason: Option<ErrorReason>, message: String },

    /// The operator answered something the contract (api::wire) does not allow.
    #[error("{what}: the operator's answer breaks the contract: {detail}")]
    OperatorAnswer { what: String, detail: String },

    /// Storing an artifact: the storage behind a presigned URL, or the artifact format.
    #[error("{what}: {source}")]
    Store { what: String, source: store::Error },

    /// A capture's file changed between measuring it and uploading it.
    #[error("{file} changed while it was uploaded ({size} bytes, sha256 {sha256})")]
    Changed { file: PathBuf, size: u64, sha256: String },
}

impl Error {
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let what = what.into();
        move |source| Error::Io { what, source }
    }

    pub(crate) fn store(what: impl Into<String>) -> impl FnOnce(store::Error) -> Error {
        let what = what.into();
        move |source| Error::Store { what, source }
    }

    /// Whether storing and reporting the same capture again later may succeed: the operator or
    /// the storage was away or busy, or a file changed under us. A refusal (S3's `AccessDenied`,
    /// the operator's `BadRequest`, a missing capture) stays one: retrying only delays it.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::OperatorUnreachable { .. } | Error::OperatorAnswer { .. } | Error::Changed { .. } => true,
            Error::OperatorRefused { status, reason, .. } => match reason {
                Some(r) => r.is_transient(),
                // Not our operator's error body (a proxy's page): by status alone.
                None => *status >= 500 || matches!(*status, 401 | 403 | 429),
            },
            Error::Store { source, .. } => source.is_transient(),
            Error::Io { source, .. } => !matches!(
                source.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::StorageFull
            ),
            Error::PolicyRead { .. }
            | Error::Policy { .. }
            | Error::Diag(_)
            | Error::DiskGuard(_)
            | Error::Refused(_)
            | Error::NoS3
            | Error::OperatorConfig(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(status: u16, reason: Option<ErrorReason>) -> Error {
        Error::OperatorRefused { what: "x".into(), status, reason, message: String::new() }
    }

    fn s3(status: u16, code: &str) -> Error {
        let source = store::Error::S3 {
            operation: "presigned PUT",
            key: String::new(),
            status,
            code: code.into(),
            message: String::new(),
        };
        Error::Store { what: "uploading core.1.zst".into(), source }
    }

    #[test]
    fn retries_are_decided_by_kind() {
        assert!(!s3(403, "AccessDenied").is_transient());
        assert!(!s3(404, "NoSuchBucket").is_transient());
        assert!(s3(503, "SlowDown").is_transient());
        assert!(!refused(502, Some(ErrorReason::StorageRefused)).is_transient());
        assert!(refused(502, Some(ErrorReason::StorageFailed)).is_transient());
        assert!(refused(401, Some(ErrorReason::Unauthorized)).is_transient(), "the kubelet rotates tokens");
        assert!(!refused(400, Some(ErrorReason::BadRequest)).is_transient());
        assert!(refused(502, None).is_transient() && !refused(404, None).is_transient());
        let gone = Error::Io { what: "x".into(), source: std::io::ErrorKind::NotFound.into() };
        assert!(!gone.is_transient(), "retention removed the capture");
    }
}
