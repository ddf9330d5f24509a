//! The finalizer queue: objects the GC found dead but that must run a finalizer first.
//!
//! Such objects are roots of their own ([`RootKind::Finalizer`]) until the finalizer thread has
//! run their `Finalize`. A healthy finalizer thread empties the queue within milliseconds of a
//! GC; thousands waiting mean it is blocked (a finalizer that waits for a lock, a UI thread or
//! I/O) or cannot keep up, and everything they reference stays in memory meanwhile.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use super::dominators::RetainedSizes;
use super::graph::{ObjectGraph, RootKind};
use super::histogram::TypeStats;

/// What waits in the finalizer queue.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinalizerQueue {
    /// Objects waiting for their finalizer.
    pub objects: u64,
    /// Bytes they keep (their own and what only they reference).
    pub retained_bytes: u64,
    /// The most common types among them, most objects first (at most 5).
    pub types: Vec<TypeStats>,
}

/// The objects waiting in the finalizer queue, if any; `None` when nothing waits.
pub fn finalizer_queue(graph: &ObjectGraph, retained: &RetainedSizes) -> Option<FinalizerQueue> {
    let waiting: HashSet<u32> =
        graph.roots().iter().filter(|r| r.kind == RootKind::Finalizer).map(|r| r.node.0).collect();
    if waiting.is_empty() {
        return None;
    }
    let mut by_type: HashMap<&str, TypeStats> = HashMap::new();
    let mut retained_bytes = 0u64;
    for &n in &waiting {
        let node = super::NodeIndex(n);
        let name = graph.type_name(node);
        let row = by_type.entry(name).or_insert_with(|| TypeStats { type_name: name.to_string(), count: 0, bytes: 0 });
        row.count += 1;
        row.bytes += graph.size(node);
        retained_bytes += retained.retained(node).unwrap_or(0);
    }
    let mut types: Vec<TypeStats> = by_type.into_values().collect();
    types.sort_by(|a, b| b.count.cmp(&a.count).then(b.bytes.cmp(&a.bytes)).then_with(|| a.type_name.cmp(&b.type_name)));
    types.truncate(5);
    Some(FinalizerQueue { objects: waiting.len() as u64, retained_bytes, types })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::heap::ObjectGraphBuilder;

    #[test]
    fn counts_what_the_finalizer_queue_roots_by_type() {
        let mut b = ObjectGraphBuilder::new();
        b.add_type(1, "App.TempFile");
        b.add_type(2, "System.Byte[]");
        b.add_type(3, "App.Live");
        for i in 0..30u64 {
            b.add_node(0x1000 + i * 0x100, 32, 1, 1);
            b.add_edge(0x1000 + i * 0x100 + 0x40);
            b.add_node(0x1000 + i * 0x100 + 0x40, 100, 2, 0);
            b.add_root(0x1000 + i * 0x100, RootKind::Finalizer);
        }
        b.add_node(0x9000, 24, 3, 0);
        b.add_root(0x9000, RootKind::StrongHandle);
        let g = b.finish().unwrap();
        let q = finalizer_queue(&g, &g.retained_sizes()).unwrap();
        assert_eq!(q.objects, 30);
        assert_eq!(q.retained_bytes, 30 * 132);
        assert_eq!(q.types, vec![TypeStats { type_name: "App.TempFile".into(), count: 30, bytes: 30 * 32 }]);
    }

    #[test]
    fn an_empty_queue_is_none() {
        let mut b = ObjectGraphBuilder::new();
        b.add_type(1, "App.Live");
        b.add_node(0x9000, 24, 1, 0);
        b.add_root(0x9000, RootKind::StrongHandle);
        let g = b.finish().unwrap();
        assert_eq!(finalizer_queue(&g, &g.retained_sizes()), None);
    }
}
