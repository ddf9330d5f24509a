//! `operator`: the dumpwatch Kubernetes operator. See docs/operator.md for how its parts divide
//! the work and the contracts between them.

pub mod inject;

pub use inject::{
    DIAGNOSTIC_PORTS_ENV, INJECTED_ANNOTATION, SIDECAR_NAME, SidecarSettings, VOLUME_NAME, injection_patch,
};
