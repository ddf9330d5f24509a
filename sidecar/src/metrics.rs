//! `/metrics`: every watched process in one registry, labelled by `pid` and `process`. Names
//! are part of the API (docs/ARCHITECTURE.md): units in the name, `_total` for counters.
//!
//! A process that goes away has its label sets removed, so a pod that restarts its app
//! a thousand times does not grow the registry a thousand times.

use std::sync::Mutex;
use std::sync::atomic::AtomicU64;

use api::CaptureKind;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

type FGauge = Gauge<f64, AtomicU64>;
type FCounter = Counter<f64, AtomicU64>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Proc {
    pub pid: String,
    pub process: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TypeLabels {
    pub pid: String,
    pub process: String,
    pub r#type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TriggerLabels {
    pub pid: String,
    pub process: String,
    pub trigger: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UploadLabels {
    /// `success`, `retry`, `failure`, `dropped` (queue full).
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SnapshotLabels {
    pub pid: String,
    pub process: String,
    /// `success` or `failure`.
    pub result: String,
}

/// A gauge per type of one process, whose set of types is replaced as a whole by each new heap
/// snapshot: the registry holds at most the latest top N per process.
#[derive(Default)]
pub struct TypeSeries {
    pub family: Family<TypeLabels, FGauge>,
    published: Mutex<Vec<TypeLabels>>,
}

impl TypeSeries {
    /// `p`'s types are now exactly `values`.
    pub fn replace(&self, p: &Proc, values: &[(String, f64)]) {
        // Each critical section is one swap of the list: a panicked holder left it consistent.
        let mut published = self.published.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        published.retain(|l| {
            let mine = l.pid == p.pid && l.process == p.process;
            if mine {
                self.family.remove(l);
            }
            !mine
        });
        for (name, value) in values {
            let l = TypeLabels { pid: p.pid.clone(), process: p.process.clone(), r#type: name.clone() };
            self.family.get_or_create(&l).set(*value);
            published.push(l);
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CaptureLabels {
    pub kind: String,
    pub result: String,
}

pub struct Metrics {
    registry: Registry,
    pub gc_heap: Family<Proc, FGauge>,
    pub working_set: Family<Proc, FGauge>,
    pub cpu: Family<Proc, FGauge>,
    pub tp_threads: Family<Proc, FGauge>,
    pub tp_queue: Family<Proc, FGauge>,
    pub contention: Family<Proc, FCounter>,
    pub exceptions: Family<Proc, FCounter>,
    pub allocated: Family<Proc, FCounter>,
    pub heap_types: TypeSeries,
    /// Periodic heap snapshots (`heapSnapshots`): per type, what it gained between the oldest
    /// and the newest kept snapshot, for the top growing types.
    pub heap_growth_bytes: TypeSeries,
    pub heap_growth_objects: TypeSeries,
    /// The span those figures cover.
    pub heap_growth_window: Family<Proc, FGauge>,
    /// 1 per type with a growth verdict now.
    pub heap_growth_suspected: TypeSeries,
    pub heap_snapshots: Family<SnapshotLabels, Counter>,
    pub deadlocked: Family<Proc, FGauge>,
    /// ContentionStart events the live session delivered: shows that deadlock detection sees
    /// the locks, and drives what contention tracing costs the app.
    pub contention_events: Family<Proc, Counter>,
    /// 1 when live deadlock detection is unavailable for the process (.NET < 8).
    pub no_live_deadlock: Family<Proc, FGauge>,
    pub triggers: Family<TriggerLabels, Counter>,
    pub captures: Family<CaptureLabels, Counter>,
    /// Operator mode: captures stored and reported, by result.
    pub uploads: Family<UploadLabels, Counter>,
    pub capture_seconds: Histogram,
    pub watched: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut r = Registry::default();
        let m = Self {
            gc_heap: Family::default(),
            working_set: Family::default(),
            cpu: Family::default(),
            tp_threads: Family::default(),
            tp_queue: Family::default(),
            contention: Family::default(),
            exceptions: Family::default(),
            allocated: Family::default(),
            heap_types: TypeSeries::default(),
            heap_growth_bytes: TypeSeries::default(),
            heap_growth_objects: TypeSeries::default(),
            heap_growth_window: Family::default(),
            heap_growth_suspected: TypeSeries::default(),
            heap_snapshots: Family::default(),
            deadlocked: Family::default(),
            contention_events: Family::default(),
            no_live_deadlock: Family::default(),
            triggers: Family::default(),
            captures: Family::default(),
            uploads: Family::default(),
            capture_seconds: Histogram::new([0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0]),
            watched: Gauge::default(),
            registry: Registry::default(),
        };
        r.register("dotnet_gc_heap_size_bytes", "GC heap size", m.gc_heap.clone());
        r.register("dotnet_working_set_bytes", "Working set", m.working_set.clone());
        r.register("dotnet_cpu_usage_ratio", "CPU used by the process, as a ratio of the machine", m.cpu.clone());
        r.register("dotnet_threadpool_threads", "Thread-pool threads", m.tp_threads.clone());
        r.register("dotnet_threadpool_queue_length", "Thread-pool work items queued", m.tp_queue.clone());
        // prometheus-client appends `_total` to counters.
        r.register("dotnet_lock_contention", "Monitor lock contentions", m.contention.clone());
        r.register("dotnet_exceptions", "Exceptions thrown", m.exceptions.clone());
        r.register("dotnet_gc_allocated_bytes", "Bytes allocated on the GC heap", m.allocated.clone());
        r.register(
            "dotnet_heap_type_bytes",
            "Bytes per type, top N of the latest heap snapshot",
            m.heap_types.family.clone(),
        );
        r.register(
            "dotnet_heap_type_growth_bytes",
            "Bytes a type gained between the oldest and the newest kept periodic heap snapshot (top N growing types)",
            m.heap_growth_bytes.family.clone(),
        );
        r.register(
            "dotnet_heap_type_growth_objects",
            "Instances a type gained between the oldest and the newest kept periodic heap snapshot (top N growing types)",
            m.heap_growth_objects.family.clone(),
        );
        r.register(
            "dumpwatch_heap_growth_window_seconds",
            "Time between the oldest and the newest kept periodic heap snapshot (the span of the growth figures)",
            m.heap_growth_window.clone(),
        );
        r.register(
            "dumpwatch_heap_growth_suspected",
            "1 for a type the growth verdict names: it grew in each of the last intervals while the rest stayed steady",
            m.heap_growth_suspected.family.clone(),
        );
        r.register("dumpwatch_heap_snapshots", "Periodic heap snapshots taken, by result", m.heap_snapshots.clone());
        r.register("dumpwatch_deadlocked_threads", "Threads on a deadlock cycle", m.deadlocked.clone());
        r.register(
            "dumpwatch_contention_events",
            "ContentionStart events seen by live deadlock detection",
            m.contention_events.clone(),
        );
        r.register(
            "dumpwatch_live_deadlock_detection_unavailable",
            "1 when the runtime is older than .NET 8 (contention events do not name the owner)",
            m.no_live_deadlock.clone(),
        );
        r.register("dumpwatch_triggers", "Trigger firings", m.triggers.clone());
        r.register("dumpwatch_captures", "Captures by kind and result", m.captures.clone());
        r.register("dumpwatch_uploads", "Captures stored and reported to the operator, by result", m.uploads.clone());
        r.register("dumpwatch_capture_duration_seconds", "Duration of captures", m.capture_seconds.clone());
        r.register("dumpwatch_watched_processes", "Processes watched now", m.watched.clone());
        // Failures are published at 0 from the start: `increase()` only sees a rise from a sample
        // it has, so a series born at 1 on the first failure would never fire
        // DumpwatchCaptureFailing for a pod's first failure.
        for kind in
            [CaptureKind::Dump, CaptureKind::Gcdump, CaptureKind::Stacks, CaptureKind::Trace, CaptureKind::Exceptions]
        {
            let _ = m.captures.get_or_create(&CaptureLabels { kind: kind.name().into(), result: "failure".into() });
        }
        Self { registry: r, ..m }
    }

    /// Prometheus text exposition (OpenMetrics flavour, which Prometheus scrapes natively).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String");
        out
    }

    /// Publish the top types of a new heap snapshot, replacing the previous ones.
    pub fn set_heap_types(&self, p: &Proc, types: &[(String, u64)]) {
        let values: Vec<(String, f64)> = types.iter().map(|(name, bytes)| (name.clone(), *bytes as f64)).collect();
        self.heap_types.replace(p, &values);
    }

    /// Publish at 0 the counters alerts and dashboards read with `increase`/`rate`, before the
    /// first event: a series that appears already at 1 shows no increase to Prometheus, so the
    /// first capture failure of a pod would never fire `DumpwatchCaptureFailing`.
    pub fn publish_zeros(&self, policy: &api::DumpPolicySpec, p: &Proc) {
        let mut kinds = policy.capture.kinds.clone();
        for i in 0..policy.triggers.len() {
            kinds.extend(policy.capture_kinds(i));
        }
        for k in kinds {
            for result in ["success", "failure"] {
                let _ = self.captures.get_or_create(&CaptureLabels { kind: k.name().into(), result: result.into() });
            }
        }
        for t in &policy.triggers {
            let l = TriggerLabels { pid: p.pid.clone(), process: p.process.clone(), trigger: t.kind.name().into() };
            let _ = self.triggers.get_or_create(&l);
        }
        for f in [&self.contention, &self.exceptions, &self.allocated] {
            let _ = f.get_or_create(p);
        }
        let _ = self.contention_events.get_or_create(p);
    }

    /// Forget a process that went away.
    pub fn remove_process(&self, p: &Proc) {
        for f in [
            &self.gc_heap,
            &self.working_set,
            &self.cpu,
            &self.tp_threads,
            &self.tp_queue,
            &self.deadlocked,
            &self.no_live_deadlock,
        ] {
            f.remove(p);
        }
        for f in [&self.contention, &self.exceptions, &self.allocated] {
            f.remove(p);
        }
        self.contention_events.remove(p);
        self.heap_growth_window.remove(p);
        for series in
            [&self.heap_types, &self.heap_growth_bytes, &self.heap_growth_objects, &self.heap_growth_suspected]
        {
            series.replace(p, &[]);
        }
        // Trigger counters are kept: how often a process fired is history worth keeping,
        // and they are bounded by the trigger kinds.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_labels_and_removal() {
        let m = Metrics::new();
        let p = Proc { pid: "42".into(), process: "Orders".into() };
        m.gc_heap.get_or_create(&p).set(1.5e6);
        m.exceptions.get_or_create(&p).inc_by(3.0);
        m.set_heap_types(&p, &[("System.String".into(), 100), ("Shop.Order".into(), 50)]);
        m.set_heap_types(&p, &[("Shop.Order".into(), 60)]);
        let text = m.encode();
        assert!(text.contains(r#"dotnet_gc_heap_size_bytes{pid="42",process="Orders"} 1500000"#), "{text}");
        assert!(text.contains(r#"dotnet_exceptions_total{pid="42",process="Orders"} 3"#), "{text}");
        assert!(text.contains(r#"dotnet_heap_type_bytes{pid="42",process="Orders",type="Shop.Order"} 60"#), "{text}");
        assert!(!text.contains("System.String"), "old snapshot's types are replaced");
        m.remove_process(&p);
        let text = m.encode();
        assert!(!text.contains(r#"pid="42""#), "{text}");
    }

    #[test]
    fn failure_counters_exist_at_zero_before_the_first_failure() {
        let m = Metrics::new();
        let p = Proc { pid: "7".into(), process: "Orders".into() };
        let policy: api::DumpPolicySpec = serde_json::from_value(serde_json::json!({
            "triggers": [{"type": "deadlock", "capture": ["stacks"]}, {"type": "onDemand"}],
            "capture": {"kinds": ["dump"]}
        }))
        .unwrap();
        m.publish_zeros(&policy, &p);
        let text = m.encode();
        for kind in ["dump", "stacks"] {
            assert!(
                text.contains(&format!(r#"dumpwatch_captures_total{{kind="{kind}",result="failure"}} 0"#)),
                "{text}"
            );
        }
        assert!(text.contains(r#"dumpwatch_triggers_total{pid="7",process="Orders",trigger="deadlock"} 0"#), "{text}");
        assert!(text.contains(r#"dotnet_exceptions_total{pid="7",process="Orders"} 0"#), "{text}");
    }
}
