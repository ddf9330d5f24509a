//! `operator`: the dumpwatch Kubernetes operator. See docs/operator.md for how its parts divide
//! the work and the contracts between them.

pub mod controller;
pub mod inject;
pub mod sidecar_api;
/// Test support for other crates' tests (`features = ["testing"]`): not in the shipped library.
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod webhook;

pub use controller::metrics;
pub use inject::{
    DIAGNOSTIC_PORTS_ENV, INJECTED_ANNOTATION, INJECTED_LABEL, SIDECAR_NAME, SIDECAR_TOKEN_AUDIENCE, STORE_ENV,
    STORE_VOLUME_NAME, SidecarSettings, TOKEN_MOUNT_PATH, TOKEN_VOLUME_NAME, VOLUME_NAME, injection_patch, is_injected,
    selects, store_claim, store_path_conflict, volume_conflicts,
};

/// Everything that can go wrong in the operator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    #[error("artifact storage: {0}")]
    Storage(String),
    #[error("{0}")]
    Invalid(String),
    #[error("certificate generation: {0}")]
    CertGen(#[from] rcgen::Error),
    #[error("certificate {what}: {reason}")]
    BadCertificate { what: String, reason: String },
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("secret {namespace}/{name}: {reason}")]
    CertSecret { namespace: String, name: String, reason: String },
    /// The controllers' caches stopped (the controllers are shutting down).
    #[error("the controllers' caches stopped")]
    Cache,
}

impl Error {
    /// A low-cardinality label for `dumpwatch_operator_reconcile_errors_total`.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Kube(_) => "kube",
            Self::Finalizer(_) => "finalizer",
            Self::Storage(_) => "storage",
            Self::Invalid(_) => "invalid",
            Self::CertGen(_) | Self::BadCertificate { .. } | Self::Tls(_) | Self::CertSecret { .. } => "certificate",
            Self::Io { .. } => "io",
            Self::Cache => "cache",
        }
    }

    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io { what: what.into(), source }
    }

    pub(crate) fn bad_cert(what: impl Into<String>, reason: impl ToString) -> Self {
        Error::BadCertificate { what: what.into(), reason: reason.to_string() }
    }
}
