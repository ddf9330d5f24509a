//! Leak suspects: the types that pile up, ranked by retained bytes, each with the retention
//! path that holds most of its instances.
//!
//! Ranking by retained bytes alone would name the holders (the statics array, the cache
//! object, the list) before what accumulates in them, since a holder retains everything
//! below it. A leak is *many* instances kept by one owner, so a suspect must have many
//! instances and no single instance may retain a large part of its type's total; the
//! holders then show up in the suspect's path instead
//! (`static Processor → CustomerCache → List<Customer> → Customer[] → Customer`).

use serde::{Deserialize, Serialize};

use super::dominators::RetainedSizes;
use super::graph::{ObjectGraph, RootKind};

/// When a type counts as a leak suspect. Defaults: at least 8 MiB and 10 % of the heap
/// retained by at least 1 000 instances, none of which retains more than 10 % of the type's
/// total. A healthy small service stays well below 8 MiB per type; the seed's leak
/// (1 M customers, ~96 MB) is far above.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LeakThresholds {
    /// Minimum bytes retained by the type's instances.
    pub min_retained_bytes: u64,
    /// Minimum share of the heap's total object bytes (0..1).
    pub min_heap_share: f64,
    /// Minimum number of reachable instances.
    pub min_instances: u64,
    /// Largest share of the type's retained bytes a single instance may hold (0..1).
    pub max_single_instance_share: f64,
    /// Most suspects reported.
    pub max_suspects: usize,
}

impl Default for LeakThresholds {
    fn default() -> Self {
        LeakThresholds {
            min_retained_bytes: 8 << 20,
            min_heap_share: 0.10,
            min_instances: 1_000,
            max_single_instance_share: 0.10,
            max_suspects: 5,
        }
    }
}

/// One suspect.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LeakSuspect {
    /// Cleaned type name.
    pub type_name: String,
    /// Reachable instances.
    pub instances: u64,
    /// Their shallow bytes.
    pub shallow_bytes: u64,
    /// Bytes freed if all of them went away.
    pub retained_bytes: u64,
    /// `retained_bytes` / heap bytes.
    pub heap_share: f64,
    /// The root of the dominant path, e.g. `[pinned handle]` or `static T.f`.
    pub root: String,
    /// Type names from the root object to the suspect type, inclusive.
    pub path: Vec<String>,
    /// Instances held along exactly that path.
    pub path_instances: u64,
}

/// Suspects in `graph`, biggest first. `heap_bytes` is the total the shares refer to
/// (usually the histogram's total, unreachable objects included).
pub fn leak_suspects(
    graph: &ObjectGraph,
    retained: &RetainedSizes,
    heap_bytes: u64,
    t: &LeakThresholds,
) -> Vec<LeakSuspect> {
    let mut out = Vec::new();
    let candidates = retained.by_type(graph).into_iter().filter(|r| {
        r.retained_bytes >= t.min_retained_bytes
            && r.count >= t.min_instances
            && heap_bytes > 0
            && r.retained_bytes as f64 / heap_bytes as f64 >= t.min_heap_share
    });
    let mut paths = None;
    for r in candidates {
        let biggest =
            graph.nodes_of_type(&r.type_name).into_iter().filter_map(|n| retained.retained(n)).max().unwrap_or(0);
        if biggest as f64 > t.max_single_instance_share * r.retained_bytes as f64 {
            // A holder: it will appear in the path of what it holds.
            continue;
        }
        let paths = paths.get_or_insert_with(|| graph.retention_paths());
        let groups = paths.groups_for_type(&r.type_name, 1);
        let (root, path, path_instances) = match groups.first() {
            Some(g) => {
                (root_label(&g.path.root), g.path.steps.iter().map(|s| s.type_name.clone()).collect(), g.instances)
            }
            None => ("[unreachable]".to_string(), vec![r.type_name.clone()], 0),
        };
        out.push(LeakSuspect {
            type_name: r.type_name.clone(),
            instances: r.count,
            shallow_bytes: r.shallow_bytes,
            retained_bytes: r.retained_bytes,
            heap_share: r.retained_bytes as f64 / heap_bytes as f64,
            root,
            path,
            path_instances,
        });
        if out.len() >= t.max_suspects {
            break;
        }
    }
    out
}

fn root_label(kind: &RootKind) -> String {
    kind.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::heap::ObjectGraphBuilder;

    /// `[pinned handle] → Object[] → Cache → Customer[] → n × (Customer → String)`, plus
    /// `other` unrelated small objects held by a strong handle.
    fn leak_graph(n: u64, other: u64) -> ObjectGraph {
        let mut b = ObjectGraphBuilder::new();
        for (id, name) in [
            (1, "System.Object[]"),
            (2, "App.Cache"),
            (3, "App.Customer[]"),
            (4, "App.Customer"),
            (5, "System.String"),
            (6, "App.Other"),
        ] {
            b.add_type(id, name);
        }
        b.add_node(0x100, 64, 1, 1);
        b.add_edge(0x200);
        b.add_node(0x200, 32, 2, 1);
        b.add_edge(0x300);
        b.add_node(0x300, 16 + 8 * n, 3, n);
        for i in 0..n {
            b.add_edge(0x10_000 + i * 96);
        }
        for i in 0..n {
            b.add_node(0x10_000 + i * 96, 32, 4, 1);
            b.add_edge(0x10_000 + i * 96 + 32);
            b.add_node(0x10_000 + i * 96 + 32, 64, 5, 0);
        }
        for i in 0..other {
            b.add_node(0x1_000_000 + i * 64, 64, 6, 0);
            b.add_root(0x1_000_000 + i * 64, RootKind::StrongHandle);
        }
        b.add_root(0x100, RootKind::PinnedHandle);
        b.finish().unwrap()
    }

    fn small() -> LeakThresholds {
        LeakThresholds { min_retained_bytes: 10_000, ..LeakThresholds::default() }
    }

    #[test]
    fn the_accumulated_type_is_the_suspect_and_its_holders_are_its_path() {
        let g = leak_graph(2000, 100);
        let r = g.retained_sizes();
        let s = leak_suspects(&g, &r, g.histogram().total_bytes(), &small());
        assert_eq!(s[0].type_name, "App.Customer");
        assert_eq!(s[0].instances, 2000);
        assert_eq!(s[0].retained_bytes, 2000 * 96);
        assert_eq!(s[0].root, "[pinned handle]");
        assert_eq!(s[0].path, vec!["System.Object[]", "App.Cache", "App.Customer[]", "App.Customer"]);
        assert_eq!(s[0].path_instances, 2000);
        // The holders retain as much but are single objects: never suspects themselves.
        assert!(s.iter().all(|x| !["System.Object[]", "App.Cache", "App.Customer[]"].contains(&x.type_name.as_str())));
    }

    #[test]
    fn below_the_thresholds_nothing_is_suspect() {
        let g = leak_graph(50, 100);
        let r = g.retained_sizes();
        assert!(leak_suspects(&g, &r, g.histogram().total_bytes(), &small()).is_empty(), "too few instances");
        let g = leak_graph(2000, 100);
        let r = g.retained_sizes();
        assert!(leak_suspects(&g, &r, g.histogram().total_bytes(), &LeakThresholds::default()).is_empty(), "< 8 MiB");
        // Many instances but each a small share of a big heap.
        let g = leak_graph(2000, 100_000);
        let r = g.retained_sizes();
        let s = leak_suspects(&g, &r, g.histogram().total_bytes(), &small());
        assert!(s.iter().all(|x| x.type_name != "App.Customer"), "{s:?}");
    }
}
