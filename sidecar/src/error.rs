use std::path::PathBuf;

/// Everything the sidecar can fail at. A failed capture is counted and logged; only a bad
/// start (no policy, no storage, no port) stops the sidecar.
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

    /// The operator (or the storage behind a presigned URL) could not be reached or answered
    /// something unusable.
    #[error("operator: {0}")]
    Operator(String),

    #[error("{what}: HTTP {status}: {body}")]
    OperatorStatus { what: String, status: u16, body: String },
}

impl Error {
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let what = what.into();
        move |source| Error::Io { what, source }
    }
}
