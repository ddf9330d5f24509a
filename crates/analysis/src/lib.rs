//! Analyses behind dumpwatch's findings, as pure functions over decoded data: no I/O, no
//! clock, no async. Callers decode EventPipe / dump data elsewhere and feed it in.
//!
//! - [`wait_for`]: live Monitor-deadlock detection from .NET 8+ contention events.
//! - [`heap`]: heap histograms, snapshot diffs, object graphs, retention paths and
//!   retained sizes from GC heap snapshots.

pub mod error;
pub mod heap;
pub mod wait_for;

pub use error::{Error, HeapStream, Result};
