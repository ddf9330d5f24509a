//! Periodic heap snapshots (`heapSnapshots: {every, keep, topTypes}`) and their growth verdict,
//! one loop per watched process.
//!
//! Every `every`, the runtime's heap snapshot (the induced full GC `dotnet-gcdump` uses) is
//! reduced at once to a [`HeapSummary`]: the per-type histogram, plus the retention path of each
//! type that rose since the previous snapshot, but only while some type has been rising for K-1
//! intervals ([`analysis::heap::wants_holders`]): a heap at steady state costs the sidecar memory
//! per type, never per object. The last `keep` summaries are kept ([`Tracker`], pure). After each
//! snapshot: the top growing types go to `/metrics`, and a new growth verdict becomes a findings
//! document (`source.kind: heap_snapshots`, suspects of pattern `growth`) at `/findings` and a
//! capture with trigger `heapGrowth` holding it as `finding.json`, which the operator turns into
//! an `Analyzed` DumpSnapshot and a `MemoryLeakSuspected` Event. Nothing else is stored: the
//! snapshots themselves are not kept.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use analysis::findings::{Source, from_growth};
use analysis::heap::{
    GrowthThresholds, GrowthVerdict, HeapHistogram, HeapSummary, ObjectGraph, TypeGrowth, growth_verdicts, summarize,
    top_growing, wants_holders,
};
use api::wire::Firing;
use api::{HeapSnapshots, TriggerKind};

use crate::capture::Target;
use crate::commit::{self, Job, Taken};
use crate::metrics::SnapshotLabels;
use crate::shared::Shared;

/// Rising types whose holder one snapshot names (the verdict folds a type held by another
/// rising type into that one, so the few biggest risers are what it needs).
const HOLDER_TYPES: usize = 10;
/// A heap snapshot of a huge heap takes long; past this the session is stopped.
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(300);
/// Types the findings document lists under `heap.top_types`.
const DOCUMENT_TOP_TYPES: usize = 10;

/// The kept summaries of one process and what was already reported: pure, no I/O.
#[derive(Default)]
pub struct Tracker {
    /// Oldest first; at most `keep` (≤ 100), so dropping the oldest by shifting is cheap.
    kept: Vec<HeapSummary>,
    /// Type names by id from earlier snapshots: .NET Core 3.1 names a type in the first heap
    /// snapshot session of a process only.
    type_names: HashMap<u64, String>,
    /// Types whose verdict was reported and still stands: one report per run of growth.
    reported: BTreeSet<String>,
    thresholds: GrowthThresholds,
}

/// What one more snapshot changed.
#[derive(Debug, Clone, PartialEq)]
pub struct Update {
    /// The top growing types between the oldest and the newest kept snapshot.
    pub growth: Vec<TypeGrowth>,
    /// Seconds between those two.
    pub window_seconds: f64,
    /// Every verdict that stands now.
    pub verdicts: Vec<GrowthVerdict>,
    /// Those not reported before (a type that stopped growing and started again is new again).
    pub new: Vec<GrowthVerdict>,
}

impl Tracker {
    /// Whether the next snapshot should keep its object graph (to name the holders).
    pub fn wants_holders(&self) -> bool {
        wants_holders(&self.kept, &self.thresholds)
    }

    /// Names announced by a snapshot, for the next ones.
    pub fn remember_names(&mut self, names: HashMap<u64, String>) {
        self.type_names.extend(names);
    }

    pub fn type_names(&self) -> &HashMap<u64, String> {
        &self.type_names
    }

    /// A new snapshot, reduced to its summary (the graph can be dropped afterwards).
    pub fn summarize(
        &self,
        taken_at_seconds: f64,
        histogram: HeapHistogram,
        graph: Option<&ObjectGraph>,
    ) -> HeapSummary {
        summarize(taken_at_seconds, histogram, graph, self.kept.last(), HOLDER_TYPES)
    }

    /// Keep `summary` (and at most `keep` in all), and judge.
    pub fn record(&mut self, summary: HeapSummary, keep: usize, top: usize) -> Update {
        self.kept.push(summary);
        let keep = keep.max(self.thresholds.intervals + 1);
        if self.kept.len() > keep {
            self.kept.drain(..self.kept.len() - keep);
        }
        let kept = &self.kept;
        let verdicts = growth_verdicts(kept, &self.thresholds);
        let standing: BTreeSet<String> = verdicts.iter().map(|v| v.type_name.clone()).collect();
        let new = verdicts.iter().filter(|v| !self.reported.contains(&v.type_name)).cloned().collect();
        self.reported = standing;
        let window_seconds = match (kept.first(), kept.last()) {
            (Some(a), Some(b)) => b.taken_at_seconds - a.taken_at_seconds,
            _ => 0.0,
        };
        Update { growth: top_growing(kept, top), window_seconds, verdicts, new }
    }

    /// The newest summary.
    pub fn last(&self) -> Option<&HeapSummary> {
        self.kept.last()
    }
}

/// Take `target`'s periodic heap snapshots while the policy asks for them, until the task is
/// dropped (the watcher aborts it when the process goes away).
pub async fn run(shared: Arc<Shared>, target: Target) {
    let mut policy = shared.policy.clone();
    let mut tracker = Tracker::default();
    let mut config: Option<HeapSnapshots> = policy.borrow_and_update().heap_snapshots.clone();
    let mut next = config.as_ref().map(|c| tokio::time::Instant::now() + c.every.std());
    loop {
        let wait = async {
            match next {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = wait => {}
            changed = policy.changed() => {
                if changed.is_err() {
                    return;
                }
                let new = policy.borrow_and_update().heap_snapshots.clone();
                // Another `every` starts a new period; the kept summaries stay comparable.
                if new.as_ref().map(|c| c.every) != config.as_ref().map(|c| c.every) {
                    next = new.as_ref().map(|c| tokio::time::Instant::now() + c.every.std());
                }
                config = new;
                continue;
            }
        }
        let Some(c) = config.clone() else { continue };
        take_one(&shared, &target, &mut tracker, &c).await;
        // `every` is the pause between snapshots: a slow one never makes the next come sooner.
        next = Some(tokio::time::Instant::now() + c.every.std());
    }
}

async fn take_one(shared: &Arc<Shared>, target: &Target, tracker: &mut Tracker, config: &HeapSnapshots) {
    let labels = target.labels();
    let with_graph = tracker.wants_holders();
    let started = Instant::now();
    let snap = {
        // One capture at a time in the sidecar: never a heap snapshot's GC during a dump.
        let _one = shared.capture_lock.lock().await;
        diag::heap::capture_named(&target.client, with_graph, tracker.type_names(), None, SNAPSHOT_TIMEOUT, &mut |_| {})
            .await
    };
    let count = |result: &str| {
        let l = SnapshotLabels { pid: labels.pid.clone(), process: labels.process.clone(), result: result.into() };
        shared.metrics.heap_snapshots.get_or_create(&l).inc();
    };
    let snap = match snap {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(pid = target.pid, process = %target.name, error = %e, "periodic heap snapshot failed");
            count("failure");
            return;
        }
    };
    tracker.remember_names(snap.type_names);
    let summary = tracker.summarize(shared.now(), snap.histogram, snap.graph.as_ref());
    drop(snap.graph);
    tracing::info!(pid = target.pid, process = %target.name, objects = summary.histogram.total_objects(),
        bytes = summary.histogram.total_bytes(), holders = summary.holders.len(), graph = with_graph,
        seconds = started.elapsed().as_secs_f64(), "periodic heap snapshot");
    let top_types = shared.policy().capture.top_types as usize;
    let top: Vec<(String, u64)> =
        summary.histogram.top(top_types).iter().map(|t| (t.type_name.clone(), t.bytes)).collect();
    shared.metrics.set_heap_types(&labels, &top);
    let update = tracker.record(summary, config.keep as usize, config.top_types as usize);
    publish(shared, &labels, &update);
    // Counted once its figures are published: a reader of the counter sees them.
    count("success");
    if !update.new.is_empty()
        && let Some(last) = tracker.last()
    {
        report(shared, target, update.new, &last.histogram);
    }
}

fn publish(shared: &Shared, labels: &crate::metrics::Proc, u: &Update) {
    let m = &shared.metrics;
    let series = |f: fn(&TypeGrowth) -> f64| u.growth.iter().map(|g| (g.type_name.clone(), f(g))).collect::<Vec<_>>();
    m.heap_growth_bytes.replace(labels, &series(|g| g.bytes_delta as f64));
    m.heap_growth_objects.replace(labels, &series(|g| g.count_delta as f64));
    m.heap_growth_window.get_or_create(labels).set(u.window_seconds);
    let suspected: Vec<(String, f64)> = u.verdicts.iter().map(|v| (v.type_name.clone(), 1.0)).collect();
    m.heap_growth_suspected.replace(labels, &suspected);
}

/// A new verdict: the findings document at `/findings`, and a capture holding it (reported to
/// the operator in operator mode) through the one capture commit.
fn report(shared: &Arc<Shared>, target: &Target, verdicts: Vec<GrowthVerdict>, last: &HeapHistogram) {
    for v in &verdicts {
        tracing::warn!(pid = target.pid, process = %target.name, r#type = %v.type_name, reason = %v.reason,
            "memory leak suspected: growth verdict");
    }
    let firing = Firing {
        index: None,
        trigger: TriggerKind::HeapGrowth,
        // Bytes per hour of the fastest grower: what a reader compares between snapshots.
        value: verdicts.iter().map(|v| v.bytes_per_hour).fold(0.0, f64::max),
        threshold: None,
        detail: verdicts.iter().map(|v| v.reason.as_str()).collect::<Vec<_>>().join("; "),
    };
    let source = Source {
        kind: "heap_snapshots".into(),
        path: format!("periodic heap snapshots of pid {} ({})", target.pid, target.name),
        runtime_version: target.runtime_version.clone(),
        dac: None,
        threads: 0,
    };
    let document = match serde_json::to_value(from_growth(source, last, verdicts, DOCUMENT_TOP_TYPES)) {
        Ok(d) => d,
        Err(e) => {
            tracing::error!(error = %e, "the growth findings do not serialize");
            return;
        }
    };
    shared.push_finding(document.clone());
    let job =
        Job { process: target.entry(), firing, kinds: Vec::new(), dump_type: "none", estimate: 0, snapshot: None };
    let shared = shared.clone();
    tokio::task::spawn_local(async move {
        let finding = Some(document);
        commit::capture(&shared, job, move |_dir| async move { Ok(Taken { finding, ..Taken::default() }) }).await;
    });
}

#[cfg(test)]
mod tests {
    use analysis::heap::TypeStats;

    use super::*;

    fn summary(minutes: f64, orders: u64, cache: u64) -> HeapSummary {
        let rows = vec![
            TypeStats { type_name: "App.Order".into(), count: orders, bytes: orders * 560 },
            TypeStats { type_name: "App.CacheEntry".into(), count: cache, bytes: cache * 1056 },
        ];
        HeapSummary {
            taken_at_seconds: minutes * 60.0,
            histogram: HeapHistogram::from_types(rows),
            holders: [("App.Order".to_string(), "static Open → Dictionary → App.Order".to_string())].into(),
        }
    }

    #[test]
    fn a_verdict_is_new_once_per_run_of_growth_and_memory_stays_bounded() {
        let mut t = Tracker::default();
        let mut news = Vec::new();
        // Orders rise by 2,000 per snapshot for six snapshots, pause once, then rise again.
        let orders = [1000, 3000, 5000, 7000, 9000, 11000, 11000, 13000, 15000, 17000];
        for (i, &n) in orders.iter().enumerate() {
            let u = t.record(summary(i as f64, n, 5000), 6, 10);
            assert!(t.kept.len() <= 6);
            news.push(u.new.iter().map(|v| v.type_name.clone()).collect::<Vec<_>>());
            if i == 5 {
                assert_eq!(u.verdicts.len(), 1, "still growing: the verdict stands");
                assert_eq!(u.window_seconds, 300.0, "six kept, five minutes apart");
                let rows: Vec<(&str, i64)> = u.growth.iter().map(|g| (g.type_name.as_str(), g.count_delta)).collect();
                assert_eq!(rows, [("App.Order", 10_000)], "the full cache did not grow");
            }
        }
        let at: Vec<(usize, &[String])> =
            news.iter().enumerate().filter(|(_, n)| !n.is_empty()).map(|(i, n)| (i, n.as_slice())).collect();
        let order = ["App.Order".to_string()];
        assert_eq!(at, [(3, &order[..]), (9, &order[..])], "after 3 rising intervals; again after the pause");
    }

    #[test]
    fn holders_are_asked_for_only_while_a_type_keeps_rising() {
        let mut t = Tracker::default();
        for i in 0..4 {
            t.record(summary(i as f64, 1000, 5000), 6, 10);
        }
        assert!(!t.wants_holders(), "steady heap: histograms only");
        t.record(summary(4.0, 3000, 5000), 6, 10);
        assert!(!t.wants_holders());
        t.record(summary(5.0, 5000, 5000), 6, 10);
        assert!(t.wants_holders(), "two intervals of growth: the next may complete a verdict");
    }
}
