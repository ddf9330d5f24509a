//! `diag`: talk to .NET runtimes through their Diagnostics IPC channel.
//!
//! - [`discovery`] finds every .NET process we can see, including ones in other PID and mount
//!   namespaces (through `/proc/<pid>/root`), and the runtime that each one runs.
//! - [`protocol`] is the pure wire format; [`client`] sends commands over a Unix socket, either
//!   one we connect to or one the runtime connected to us ([`reverse`], `DOTNET_DiagnosticPorts`).
//! - [`session`] streams EventPipe sessions through the `nettrace` reader; the capture modules
//!   ([`counters`], [`stacks`], [`cpu`], [`heap`], [`contention`], [`exceptions`], [`dump`]) build on it.
//!
//! Nothing here knows about Kubernetes.

pub mod client;
pub mod contention;
pub mod counters;
pub mod cpu;
pub mod discovery;
pub mod dump;
pub mod exceptions;
pub mod glob;
pub mod heap;
pub mod meters;
pub mod protocol;
pub mod reverse;
pub mod session;
pub mod stacks;
pub mod symbols;

mod error;
pub use error::Error;
