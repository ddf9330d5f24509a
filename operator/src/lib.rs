//! `operator`: the dumpwatch Kubernetes operator. See docs/operator.md for how its parts divide
//! the work and the contracts between them.

pub mod controller;
pub mod inject;
pub mod sidecar_api;

pub use controller::metrics;
pub use inject::{
    DIAGNOSTIC_PORTS_ENV, INJECTED_ANNOTATION, SIDECAR_NAME, SIDECAR_TOKEN_AUDIENCE, SidecarSettings, TOKEN_MOUNT_PATH,
    TOKEN_VOLUME_NAME, VOLUME_NAME, injection_patch, is_injected, selects, volume_conflicts,
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
}

impl Error {
    /// A low-cardinality label for `dumpwatch_operator_reconcile_errors_total`.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Kube(_) => "kube",
            Self::Finalizer(_) => "finalizer",
            Self::Storage(_) => "storage",
            Self::Invalid(_) => "invalid",
        }
    }
}
