//! Analyses behind dumpwatch's findings, as pure functions over decoded data: no I/O, no
//! clock, no async. Callers decode EventPipe / dump data elsewhere and feed it in.
//!
//! - [`wait_for`]: live Monitor-deadlock detection from .NET 8+ contention events.
//! - [`heap`]: heap histograms, snapshot diffs, object graphs, retention paths and
//!   retained sizes from GC heap snapshots, and leak suspects.
//! - [`monitors`]: Monitor deadlocks in a dump, from sync blocks and stack references.
//! - [`hangs`]: hangs that are not lock cycles (thread-pool starvation, blocked threads).
//! - [`crash`]: why a process crashed, from the runtime's crash report and the dump's threads.
//! - [`findings`]: the versioned findings document every report is a view of.
//! - [`phases`]: phase marks, for callers that time the analyses.

pub mod crash;
pub mod error;
pub mod findings;
pub mod hangs;
pub mod heap;
pub mod monitors;
pub mod phases;
pub mod wait_for;

pub use error::{Error, HeapStream, Result};
