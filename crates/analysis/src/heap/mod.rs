//! GC heap snapshots (`GCBulkNode` / `GCBulkEdge` / roots / `BulkType` events, or a
//! dump's heap walk): per-type histograms and their growth, the object graph, retention
//! paths to roots and retained sizes, every root of one object (`gcroot`).

mod dominators;
mod finalization;
mod gcroot;
mod graph;
mod growth;
mod histogram;
mod holders;
mod leaks;
mod paths;
mod type_name;

pub use dominators::{RetainedSizes, TypeRetained};
pub use finalization::{FinalizerQueue, finalizer_queue};
pub use gcroot::{RootChain, chains_from_roots, referrers};
pub use graph::{GraphStats, NodeIndex, NodeSlots, ObjectGraph, ObjectGraphBuilder, Root, RootKind};
pub use growth::{
    GrowthThresholds, GrowthVerdict, HeapSummary, growth_verdicts, summarize, top_growing, wants_holders,
};
pub use histogram::{HeapHistogram, HeapHistogramBuilder, TypeGrowth, TypeStats};
pub use leaks::{Confidence, LeakPattern, LeakSuspect, LeakThresholds, leak_suspects, leak_suspects_observed};
pub(crate) use leaks::{human_bytes, thousands};
pub use paths::{PathGroup, PathStep, RetentionPath, RetentionPaths};
pub use type_name::{clean_type_name, unknown_type_name};

/// Threads for the passes over every object of a heap that run on all cores (up to 8); the
/// walk of a dump's heap in parts uses as many.
pub fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 8)
}

/// [`threads`] for a pass over `items` objects: one below 65,536, where starting threads costs
/// more than it saves.
fn threads_for(items: usize) -> usize {
    if items < 1 << 16 { 1 } else { threads() }
}

/// What a scoped thread returned; its panic goes on in the caller.
fn joined<T>(handle: std::thread::ScopedJoinHandle<'_, T>) -> T {
    handle.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}
