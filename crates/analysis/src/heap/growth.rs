//! Growth verdicts across heap snapshots: the leak test that one snapshot cannot make.
//!
//! A type *leaks* when its instance count rises in every one of the last K intervals between
//! snapshots, by a meaningful amount, while the rest of the heap is steady: only a few types
//! grow like that at once (when many do, it is load, not a leak). A bounded cache at steady state, a lookup table loaded at start
//! and short-lived churn all fail the first test: their counts stay put or go up and down.
//! A cache that is still filling up passes it until it is full; K intervals of growth over
//! the sidecar's snapshot period keep that window short.
//!
//! The input is a list of per-snapshot summaries (a histogram and, when the object graph was
//! kept, the path holding each type's instances), so the sidecar can keep a few of them
//! without keeping graphs.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use super::graph::ObjectGraph;
use super::histogram::{HeapHistogram, TypeGrowth};
use super::leaks::{Confidence, LeakPattern, LeakSuspect, human_bytes, thousands};
use super::paths::PathGroup;

/// One heap snapshot as the verdict needs it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HeapSummary {
    /// When it was taken, in seconds on any clock that only moves forward.
    pub taken_at_seconds: f64,
    /// Its per-type histogram.
    pub histogram: HeapHistogram,
    /// Per type name, the path that holds most of its instances (`static T.f → List<X> → X[]
    /// → X`), when known.
    #[serde(default)]
    pub holders: BTreeMap<String, String>,
}

/// When growth is a leak. See `docs/findings-schema.md`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GrowthThresholds {
    /// K: intervals in a row in which the count must rise (default 3, so 4 snapshots).
    pub intervals: usize,
    /// Fewest instances added over those intervals (default 1,000).
    pub min_count_growth: u64,
    /// Fewest bytes added over those intervals (default 1 MiB), counting the rising types a
    /// type holds (a small `Order` holding a big buffer).
    pub min_bytes_growth: u64,
    /// Most types that may grow past the thresholds at once (default 5; a leak grows its type
    /// and what each instance holds, such as a name string): when more grow, everything
    /// grows (more load, a bigger working set) and no one type leaks.
    pub max_growing_types: usize,
}

impl Default for GrowthThresholds {
    fn default() -> Self {
        GrowthThresholds { intervals: 3, min_count_growth: 1_000, min_bytes_growth: 1 << 20, max_growing_types: 5 }
    }
}

/// A type that grows steadily: a `MemoryLeakSuspected`-grade finding.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GrowthVerdict {
    /// The type.
    pub type_name: String,
    /// Intervals in a row in which its count rose (at least K).
    pub intervals: usize,
    /// Count in the first snapshot of that run and in the last.
    pub first_count: u64,
    /// Count in the last snapshot.
    pub last_count: u64,
    /// Bytes added over the run, with those of the rising types it holds.
    pub bytes_growth: i64,
    /// Instances added per hour.
    pub count_per_hour: f64,
    /// Bytes added per hour.
    pub bytes_per_hour: f64,
    /// What holds its instances in the last snapshot, when known.
    pub holder: Option<String>,
    /// Why, in words.
    pub reason: String,
}

/// Types that grew in each of the last K intervals while the rest of the heap stayed steady,
/// biggest byte growth first. `snapshots` must be in the order they were taken.
pub fn growth_verdicts<'s>(snapshots: &'s [HeapSummary], t: &GrowthThresholds) -> Vec<GrowthVerdict> {
    let k = t.intervals.max(1);
    if snapshots.len() < k + 1 {
        return Vec::new();
    }
    let window = &snapshots[snapshots.len() - (k + 1)..];
    let last = &window[k];
    let count_of = |s: &HeapSummary, name: &str| s.histogram.by_name(name).map_or((0, 0), |r| (r.count, r.bytes));
    let lookup: Vec<HashMap<&str, (u64, u64)>> = window
        .iter()
        .map(|s| s.histogram.types().iter().map(|r| (r.type_name.as_str(), (r.count, r.bytes))).collect())
        .collect();
    // Types whose count rose in every interval, by enough instances, with their byte growth.
    let mut rising: Vec<(&str, i64)> = Vec::new();
    for row in last.histogram.types() {
        let name = row.type_name.as_str();
        let counts: Vec<(u64, u64)> = lookup.iter().map(|m| m.get(name).copied().unwrap_or((0, 0))).collect();
        let (c0, b0) = counts[0];
        if counts.windows(2).all(|w| w[1].0 > w[0].0) && row.count - c0 >= t.min_count_growth {
            rising.push((name, row.bytes as i64 - b0 as i64));
        }
    }
    // A type whose instances are held by another rising type grows because that one does (the
    // `String` names of leaked customers, the buffers of leaked orders): its bytes count towards
    // the holder's, which may be a small object holding big ones.
    let names: Vec<&str> = rising.iter().map(|r| r.0).collect();
    let holder_of = |name: &'s str| -> Option<&'s str> {
        let path = last.holders.get(name)?;
        let steps: Vec<&str> = path.split(" → ").collect();
        steps[..steps.len() - 1].iter().rev().copied().find(|s| *s != name && names.contains(s))
    };
    let top_of = |name: &'s str| -> &'s str {
        let mut top = name;
        for _ in 0..names.len() {
            match holder_of(top) {
                Some(h) => top = h,
                None => break,
            }
        }
        top
    };
    let mut group_bytes: HashMap<&str, i64> = HashMap::new();
    for &(name, bytes) in &rising {
        *group_bytes.entry(top_of(name)).or_default() += bytes;
    }
    let growing: Vec<(&str, i64)> = rising
        .iter()
        .filter(|r| top_of(r.0) == r.0)
        .map(|r| (r.0, group_bytes[r.0]))
        .filter(|&(_, bytes)| bytes >= t.min_bytes_growth as i64)
        .collect();
    if growing.is_empty() || growing.len() > t.max_growing_types {
        return Vec::new();
    }
    let mut out: Vec<GrowthVerdict> = growing
        .iter()
        .map(|&(name, window_bytes)| {
            // Report the whole run of growth, which may be longer than the K intervals checked.
            let run = run_length(snapshots, name, count_of);
            let start = &snapshots[snapshots.len() - 1 - run];
            let c0 = count_of(start, name).0;
            let c1 = count_of(last, name).0;
            // The bytes of what it holds are known over the window checked; scale to the run.
            let own_window = count_of(last, name).1 as i64 - count_of(&window[0], name).1 as i64;
            let own_run = count_of(last, name).1 as i64 - count_of(start, name).1 as i64;
            let bytes = own_run + (window_bytes - own_window);
            let hours = ((last.taken_at_seconds - start.taken_at_seconds) / 3600.0).max(f64::EPSILON);
            let holder = last.holders.get(name).cloned();
            let held = holder.as_deref().map(|h| format!(", held by {h}")).unwrap_or_default();
            let reason = format!(
                "`{name}` grew in each of the last {run} intervals between heap snapshots, from {} to {} instances \
                 (+{} per hour, +{} per hour with what they hold){held}, while the rest of the heap stayed steady",
                thousands(c0),
                thousands(c1),
                thousands(((c1 - c0) as f64 / hours).round() as u64),
                human_bytes((bytes.max(0) as f64 / hours).round() as u64),
            );
            GrowthVerdict {
                type_name: name.to_string(),
                intervals: run,
                first_count: c0,
                last_count: c1,
                bytes_growth: bytes,
                count_per_hour: (c1 - c0) as f64 / hours,
                bytes_per_hour: bytes as f64 / hours,
                holder,
                reason,
            }
        })
        .collect();
    out.sort_by(|a, b| b.bytes_growth.cmp(&a.bytes_growth).then_with(|| a.type_name.cmp(&b.type_name)));
    out
}

impl GrowthVerdict {
    /// The verdict as a suspect of the findings document: pattern `growth`, high confidence (a
    /// type rising in every interval while the rest stays steady is what a leak looks like, and
    /// what a cache or a table never does), the holder's path split into root and types.
    /// `retained_bytes` is the type's own bytes in the last snapshot: a histogram has no
    /// dominators.
    pub fn suspect(&self, last: &HeapHistogram) -> LeakSuspect {
        let own = last.by_name(&self.type_name).map_or(0, |r| r.bytes);
        let (root, path) = match &self.holder {
            Some(h) => {
                let mut steps = h.split(" → ").map(str::to_string);
                (steps.next().unwrap_or_default(), steps.collect())
            }
            None => (String::new(), vec![self.type_name.clone()]),
        };
        LeakSuspect {
            type_name: self.type_name.clone(),
            instances: self.last_count,
            shallow_bytes: own,
            retained_bytes: own,
            heap_share: if last.total_bytes() == 0 { 0.0 } else { own as f64 / last.total_bytes() as f64 },
            root,
            path,
            path_instances: self.last_count,
            pattern: LeakPattern::Growth,
            confidence: Confidence::High,
            holder: self.holder.clone().unwrap_or_default(),
            reason: self.reason.clone(),
        }
    }
}

/// Whether the next snapshot should keep its object graph to name holders: only when some type
/// rose in each of the last K-1 intervals, so that the next one may complete a run of K. A heap
/// at steady state (a full cache, a loaded table) is summarized from its histogram alone, which
/// costs the sidecar memory per type, not per object.
pub fn wants_holders(snapshots: &[HeapSummary], t: &GrowthThresholds) -> bool {
    let needed = t.intervals.max(1) - 1;
    if needed == 0 {
        return true;
    }
    if snapshots.len() < needed + 1 {
        return false;
    }
    let window = &snapshots[snapshots.len() - (needed + 1)..];
    let last = &window[needed];
    last.histogram.types().iter().any(|row| {
        window.windows(2).all(|w| {
            let count = |s: &HeapSummary| s.histogram.by_name(&row.type_name).map_or(0, |r| r.count);
            count(&w[1]) > count(&w[0])
        })
    })
}

/// A heap snapshot reduced to what the verdict needs: its histogram and, with its object graph,
/// for each type that rose since `previous` (at most `limit` of them, the biggest rise in count
/// first), the retention path holding most of its instances, preferring paths through another
/// rising type. The graph can then be dropped.
pub fn summarize(
    taken_at_seconds: f64,
    histogram: HeapHistogram,
    graph: Option<&ObjectGraph>,
    previous: Option<&HeapSummary>,
    limit: usize,
) -> HeapSummary {
    let mut holders = BTreeMap::new();
    if let Some(graph) = graph {
        let mut rising: Vec<TypeGrowth> = match previous {
            Some(p) => histogram.diff(&p.histogram),
            None => Vec::new(),
        };
        rising.retain(|g| g.count_delta > 0);
        rising.sort_by(|a, b| b.count_delta.cmp(&a.count_delta).then_with(|| a.type_name.cmp(&b.type_name)));
        if !rising.is_empty() {
            let paths = graph.retention_paths();
            let risers: HashSet<&str> = rising.iter().map(|g| g.type_name.as_str()).collect();
            for g in rising.iter().take(limit) {
                // Without the previous graph, the path that gained is not known: a path through
                // another rising type is the likelier one (the buffers of leaked orders grow
                // under the orders, not under a constant table whose rows hold buffers too).
                let through_riser = |p: &PathGroup| {
                    let steps = &p.path.steps;
                    steps[..steps.len().saturating_sub(1)].iter().any(|s| risers.contains(s.type_name.as_str()))
                };
                let best =
                    paths.groups_for_type(&g.type_name, 20).into_iter().max_by_key(|p| (through_riser(p), p.instances));
                if let Some(best) = best {
                    holders.insert(g.type_name.clone(), best.path.to_string());
                }
            }
        }
    }
    HeapSummary { taken_at_seconds, histogram, holders }
}

/// The types that grew most between the first and the last snapshot, by bytes (then count),
/// at most `n`: what a dashboard of growing types draws.
pub fn top_growing(snapshots: &[HeapSummary], n: usize) -> Vec<TypeGrowth> {
    let (Some(first), Some(last)) = (snapshots.first(), snapshots.last()) else { return Vec::new() };
    let mut growth: Vec<TypeGrowth> =
        last.histogram.diff(&first.histogram).into_iter().filter(|g| g.bytes_delta > 0 || g.count_delta > 0).collect();
    growth.sort_by(|a, b| {
        b.bytes_delta.cmp(&a.bytes_delta).then(b.count_delta.cmp(&a.count_delta)).then(a.type_name.cmp(&b.type_name))
    });
    growth.truncate(n);
    growth
}

/// How many intervals in a row, ending at the last snapshot, `name`'s count rose.
fn run_length(snapshots: &[HeapSummary], name: &str, count_of: impl Fn(&HeapSummary, &str) -> (u64, u64)) -> usize {
    snapshots.windows(2).rev().take_while(|w| count_of(&w[1], name).0 > count_of(&w[0], name).0).count()
}

#[cfg(test)]
#[path = "growth_tests.rs"]
mod tests;
