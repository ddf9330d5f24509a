//! `dumpwatch diff <old> <new> [<newer>...]`: what grew between heap snapshots (`gcdump -o`
//! files or core dumps, in any mix), and for each growing type the retention path that holds
//! the added instances. With K+1 snapshots or more, also the growth verdict: the types that
//! grew in each of the last K intervals while the rest of the heap stayed steady.

use std::collections::HashMap;
use std::fmt::Write;
use std::path::PathBuf;
use std::time::{Duration, UNIX_EPOCH};

use analysis::heap::{
    GrowthThresholds, GrowthVerdict, HeapHistogram, HeapSummary, ObjectGraph, RetentionPath, RetentionPaths, RootKind,
    growth_verdicts,
};
use anyhow::{Context, Result, bail};
use clrdump::{Depth, ReadOptions, WorkerCommand};
use serde::Serialize;

use crate::analyze::{WORKER_SUBCOMMAND, histogram};
use crate::render::format_bytes;

/// One snapshot to compare, with what reading a dump needs.
pub struct DiffInput {
    pub path: PathBuf,
    pub dac: Option<PathBuf>,
    pub replacements: Vec<(String, PathBuf)>,
}

pub struct DiffArgs {
    pub inputs: Vec<DiffInput>,
    pub top: usize,
    pub intervals: usize,
    pub timeout: u64,
}

/// The diff document (`--json`).
#[derive(Debug, Serialize)]
pub struct HeapDiff {
    /// Always `dumpwatch.heap_diff`.
    pub schema: &'static str,
    /// 1.
    pub version: u32,
    /// Every snapshot read, oldest first; the diff is between the first and the last.
    pub snapshots: Vec<SnapshotInfo>,
    /// Objects added (negative: removed) between the first and the last.
    pub objects_delta: i64,
    /// Bytes added.
    pub bytes_delta: i64,
    /// Every type whose count or bytes changed, largest byte growth first.
    pub types: Vec<TypeChange>,
    /// Types that grew in each of the last K intervals (`null` with fewer than K+1 snapshots).
    pub growth_verdicts: Option<Vec<GrowthVerdict>>,
}

#[derive(Debug, Serialize)]
pub struct SnapshotInfo {
    pub path: String,
    /// `gcdump` or `core_dump`.
    pub kind: &'static str,
    /// The file's modification time, seconds since the epoch (the verdict's clock).
    pub taken_at_seconds: f64,
    pub objects: u64,
    pub bytes: u64,
}

#[derive(Debug, Serialize)]
pub struct TypeChange {
    pub type_name: String,
    pub old_count: u64,
    pub new_count: u64,
    pub count_delta: i64,
    pub old_bytes: u64,
    pub new_bytes: u64,
    pub bytes_delta: i64,
    /// For the top growing types (with both object graphs): the path that gained the most.
    pub held_by: Option<HeldBy>,
}

/// The retention path (root and chain of types) that holds a type's added instances.
#[derive(Debug, Serialize)]
pub struct HeldBy {
    pub path: String,
    pub old_instances: u64,
    pub new_instances: u64,
}

struct Loaded {
    info: SnapshotInfo,
    histogram: HeapHistogram,
    graph: Option<ObjectGraph>,
}

/// `known`: type names of the earlier heap snapshots, which a later snapshot of the same .NET
/// Core 3.1 process does not repeat (grown by this snapshot's).
fn load(input: &DiffInput, graph: bool, timeout: u64, known: &mut HashMap<u64, String>) -> Result<Loaded> {
    let display = input.path.display().to_string();
    let taken_at_seconds = std::fs::metadata(&input.path)
        .and_then(|m| m.modified())
        .with_context(|| format!("reading {display}"))?
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let (kind, histogram, graph) = if crate::heap_file::is_heap_snapshot(&input.path) {
        let snap = crate::heap_file::load(&input.path, &display, graph, known)?;
        known.extend(snap.type_names);
        ("gcdump", snap.histogram, snap.graph)
    } else {
        let depth = if graph { Depth::Graph } else { Depth::Histogram };
        let mut opts = ReadOptions::new(WorkerCommand::current_exe(WORKER_SUBCOMMAND)?, depth);
        opts.dac = input.dac.clone();
        opts.replacements = input.replacements.clone();
        opts.timeout = Duration::from_secs(timeout);
        let data = clrdump::read_dump(&input.path, &opts).with_context(|| format!("reading {display}"))?;
        ("core_dump", histogram(&data.snapshot), data.graph)
    };
    let info = SnapshotInfo {
        path: display,
        kind,
        taken_at_seconds,
        objects: histogram.total_objects(),
        bytes: histogram.total_bytes(),
    };
    Ok(Loaded { info, histogram, graph })
}

/// Per retention path of `type_name` (by [`path_key`]), the path as written and the instances
/// it holds.
fn paths_of(paths: Option<&RetentionPaths<'_>>, type_name: &str) -> HashMap<String, (String, u64)> {
    paths
        .map(|p| {
            p.groups_for_type(type_name, 20)
                .into_iter()
                .map(|g| (path_key(&g.path), (g.path.to_string(), g.instances)))
                .collect()
        })
        .unwrap_or_default()
}

/// A path as both kinds of snapshot write it: a heap snapshot knows a static field but not
/// its declaring type, and names a nested type without its enclosing one (`Entry<K,V>[]`
/// where a dump says `Dictionary+Entry<K,V>[]`).
fn path_key(p: &RetentionPath) -> String {
    let root = match &p.root {
        RootKind::Static { field_name, .. } => format!("static {field_name}"),
        other => other.to_string(),
    };
    let innermost = |name: &str| {
        let head = name.split('<').next().unwrap_or(name);
        match head.rfind('+') {
            Some(i) => name[i + 1..].to_string(),
            None => name.to_string(),
        }
    };
    std::iter::once(root).chain(p.steps.iter().map(|s| innermost(&s.type_name))).collect::<Vec<_>>().join(" → ")
}

/// The path whose instance count rose the most (ties: the bigger path in the new snapshot),
/// written as the new snapshot writes it.
fn held_by(old: &HashMap<String, (String, u64)>, new: &HashMap<String, (String, u64)>) -> Option<HeldBy> {
    new.iter()
        .map(|(key, (path, n))| (path, old.get(key).map_or(0, |o| o.1), *n))
        .filter(|&(_, o, n)| n > o)
        .max_by(|a, b| (a.2 - a.1).cmp(&(b.2 - b.1)).then(a.2.cmp(&b.2)).then(b.0.cmp(a.0)))
        .map(|(path, o, n)| HeldBy { path: path.clone(), old_instances: o, new_instances: n })
}

/// Every type whose count or bytes changed between two histograms, largest byte growth first.
pub fn type_changes(old: &HeapHistogram, new: &HeapHistogram) -> Vec<TypeChange> {
    let row = |h: &HeapHistogram, name: &str| h.by_name(name).map_or((0, 0), |r| (r.count, r.bytes));
    new.diff(old)
        .into_iter()
        .map(|g| {
            let ((old_count, old_bytes), (new_count, new_bytes)) = (row(old, &g.type_name), row(new, &g.type_name));
            TypeChange {
                type_name: g.type_name,
                old_count,
                new_count,
                count_delta: g.count_delta,
                old_bytes,
                new_bytes,
                bytes_delta: g.bytes_delta,
                held_by: None,
            }
        })
        .collect()
}

pub fn run(args: DiffArgs) -> Result<HeapDiff> {
    if args.inputs.len() < 2 {
        bail!("give at least two heap snapshots, oldest first");
    }
    let last = args.inputs.len() - 1;
    // Only the first and the last need their object graphs (for the paths); the ones in
    // between only count towards the verdict.
    let mut known = HashMap::new();
    let loaded: Vec<Loaded> = args
        .inputs
        .iter()
        .enumerate()
        .map(|(i, input)| load(input, i == 0 || i == last, args.timeout, &mut known))
        .collect::<Result<_>>()?;
    let (old, new) = (&loaded[0], &loaded[last]);
    let mut types = type_changes(&old.histogram, &new.histogram);
    let old_paths = old.graph.as_ref().map(ObjectGraph::retention_paths);
    let new_paths = new.graph.as_ref().map(ObjectGraph::retention_paths);
    let mut holders = std::collections::BTreeMap::new();
    for change in types.iter_mut().filter(|t| t.count_delta > 0).take(args.top) {
        let new_groups = paths_of(new_paths.as_ref(), &change.type_name);
        change.held_by = held_by(&paths_of(old_paths.as_ref(), &change.type_name), &new_groups);
        if let Some(h) = &change.held_by {
            holders.insert(change.type_name.clone(), h.path.clone());
        }
    }
    let growth = (loaded.len() > args.intervals).then(|| {
        let mut summaries: Vec<HeapSummary> = loaded
            .iter()
            .map(|l| HeapSummary {
                taken_at_seconds: l.info.taken_at_seconds,
                histogram: l.histogram.clone(),
                holders: Default::default(),
            })
            .collect();
        summaries[last].holders = holders;
        growth_verdicts(&summaries, &GrowthThresholds { intervals: args.intervals, ..GrowthThresholds::default() })
    });
    let delta = |a: u64, b: u64| b as i64 - a as i64;
    Ok(HeapDiff {
        schema: "dumpwatch.heap_diff",
        version: 1,
        objects_delta: delta(old.info.objects, new.info.objects),
        bytes_delta: delta(old.info.bytes, new.info.bytes),
        types,
        growth_verdicts: growth,
        snapshots: loaded.into_iter().map(|l| l.info).collect(),
    })
}

fn signed(n: i64) -> String {
    if n >= 0 { format!("+{n}") } else { n.to_string() }
}

fn signed_bytes(n: i64) -> String {
    let b = format_bytes(n.unsigned_abs());
    if n >= 0 { format!("+{b}") } else { format!("-{b}") }
}

/// The human report: the totals, the top growing types with their paths, the verdict.
pub fn report(d: &HeapDiff, top: usize) -> String {
    let mut out = String::new();
    for (label, s) in [("old", d.snapshots.first()), ("new", d.snapshots.last())] {
        let Some(s) = s else { continue };
        let _ = writeln!(out, "{label}  {} ({}): {} objects, {}", s.path, s.kind, s.objects, format_bytes(s.bytes));
    }
    let _ = writeln!(out, "change: {} objects, {}\n", signed(d.objects_delta), signed_bytes(d.bytes_delta));
    let growing: Vec<&TypeChange> =
        d.types.iter().filter(|t| t.count_delta > 0 || t.bytes_delta > 0).take(top).collect();
    if growing.is_empty() {
        out.push_str("GROWING TYPES: none\n");
    } else {
        let _ = writeln!(
            out,
            "GROWING TYPES (most bytes first)\n  {:>10}  {:>11}  {:>10}  type",
            "objects", "bytes", "now"
        );
        for t in growing {
            let _ = writeln!(
                out,
                "  {:>10}  {:>11}  {:>10}  {}",
                signed(t.count_delta),
                signed_bytes(t.bytes_delta),
                t.new_count,
                t.type_name
            );
            if let Some(h) = &t.held_by {
                let _ = writeln!(
                    out,
                    "              held by {} ({} there, was {})",
                    h.path,
                    signed(h.new_instances as i64 - h.old_instances as i64),
                    h.old_instances
                );
            }
        }
    }
    let shrinking = d.types.iter().filter(|t| t.count_delta < 0).count();
    if shrinking > 0 {
        let _ = writeln!(out, "({shrinking} types have fewer objects than before)");
    }
    match &d.growth_verdicts {
        None => {}
        Some(v) if v.is_empty() => out.push_str("\nGROWTH VERDICT: no type grew steadily\n"),
        Some(v) => {
            out.push_str("\nGROWTH VERDICT: memory leak suspected\n");
            for g in v {
                let _ = writeln!(out, "  {}", g.reason);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(rows: &[(&str, u64)]) -> HashMap<String, (String, u64)> {
        rows.iter().map(|&(p, n)| (p.to_string(), (p.to_string(), n))).collect()
    }

    #[test]
    fn the_path_that_gained_most_holds_the_new_objects() {
        let old = map(&[("static A.x → List<T> → T[] → T", 1000), ("static B.y → T", 5)]);
        let new = map(&[("static A.x → List<T> → T[] → T", 1010), ("static B.y → T", 4005), ("[local var] → T", 1)]);
        let h = held_by(&old, &new).unwrap();
        assert_eq!((h.path.as_str(), h.old_instances, h.new_instances), ("static B.y → T", 5, 4005));
        assert!(held_by(&new, &old).is_none_or(|h| h.new_instances > h.old_instances));
    }

    #[test]
    fn paths_compare_across_dumps_and_heap_snapshots() {
        use analysis::heap::{NodeIndex, PathStep};
        let path = |class: &str, entry: &str| RetentionPath {
            root: RootKind::Static { type_name: class.into(), field_name: "Open".into() },
            steps: ["System.Collections.Generic.Dictionary<System.Int32,App.Order>", entry, "App.Order"]
                .iter()
                .map(|t| PathStep { node: NodeIndex(0), address: 0, type_name: t.to_string(), size: 0 })
                .collect(),
        };
        let dump = path("App.OrderBook", "System.Collections.Generic.Dictionary+Entry<System.Int32,App.Order>[]");
        let snapshot = path("", "Entry<System.Int32,App.Order>[]");
        assert_eq!(path_key(&dump), path_key(&snapshot));
        assert_eq!(
            path_key(&dump),
            "static Open → System.Collections.Generic.Dictionary<System.Int32,App.Order> → \
             Entry<System.Int32,App.Order>[] → App.Order"
        );
    }

    #[test]
    fn type_changes_carry_both_sides() {
        use analysis::heap::TypeStats;
        let h = |rows: &[(&str, u64)]| {
            HeapHistogram::from_types(
                rows.iter().map(|&(n, c)| TypeStats { type_name: n.into(), count: c, bytes: c * 10 }).collect(),
            )
        };
        let c = type_changes(&h(&[("A", 5), ("B", 7), ("Gone", 1)]), &h(&[("A", 9), ("B", 7), ("New", 2)]));
        let rows: Vec<(&str, u64, u64, i64)> =
            c.iter().map(|t| (t.type_name.as_str(), t.old_count, t.new_count, t.count_delta)).collect();
        assert_eq!(rows, [("A", 5, 9, 4), ("New", 0, 2, 2), ("Gone", 1, 0, -1)]);
    }
}
