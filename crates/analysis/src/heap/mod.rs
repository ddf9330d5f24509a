//! GC heap snapshots (`GCBulkNode` / `GCBulkEdge` / roots / `BulkType` events, or a
//! dump's heap walk): per-type histograms and their growth, the object graph, retention
//! paths to roots and retained sizes.

mod dominators;
mod graph;
mod histogram;
mod leaks;
mod paths;
mod type_name;

pub use dominators::{RetainedSizes, TypeRetained};
pub use graph::{GraphStats, NodeIndex, ObjectGraph, ObjectGraphBuilder, Root, RootKind};
pub use histogram::{HeapHistogram, HeapHistogramBuilder, TypeGrowth, TypeStats};
pub use leaks::{LeakSuspect, LeakThresholds, leak_suspects};
pub use paths::{PathGroup, PathStep, RetentionPath, RetentionPaths};
pub use type_name::{clean_type_name, unknown_type_name};
