//! Real infrastructure for end-to-end tests, on loopback, torn down on drop:
//!
//! - [`ControlPlane`]: etcd 3.6, kube-apiserver and kube-controller-manager 1.36 built from
//!   upstream sources by `e2e/controlplane/build`, with TLS, client-certificate authentication,
//!   service-account signing keys, RBAC and admission (webhooks, ValidatingAdmissionPolicy) on,
//!   plus the `e2e/nodeagent` test node that runs pods' containers as local processes, or
//!   ([`Options::real_node`]) a real node: kubelet, containerd, runc, CNI, kube-proxy,
//!   kube-scheduler and CoreDNS built by `e2e/node/build` ([`RealNode`], [`node`]).
//! - [`Prometheus`] and [`Alertmanager`]: Debian's binaries with test configs and 1 s intervals.
//! - [`S3Server`]: moto's S3 server with a bucket.
//! - [`CertManager`]: cert-manager's CRDs, controllers and CA injector on a [`ControlPlane`].
//!
//! Everything is installed by `scripts/setup`; a missing piece is a panic naming it, never a
//! silently skipped test.

mod certmanager;
mod controlplane;
mod monitoring;
pub mod node;
mod pki;
pub mod proc;
mod s3;
mod util;

pub use certmanager::{CERT_MANAGER_VERSION, CertManager};
pub use controlplane::{ControlPlane, DEFAULT_CONTROLLERS, NODE_NAME, Options, kubectl_path};
pub use monitoring::{Alertmanager, Prometheus, promtool, write_targets};
pub use node::RealNode;
pub use s3::{S3Server, S3sServer};
pub use serde_json::Value;
pub use util::{DUMPWATCH_CRDS, cache_dir, crds_dir, free_port, wait_for, workspace_bin};

/// Everything these helpers return as an error.
pub type Result<T, E = Box<dyn std::error::Error + Send + Sync>> = std::result::Result<T, E>;
