//! The operator's `/metrics` (OpenMetrics text, prometheus-client as in the sidecar). One
//! registry for the whole process: the controllers' metrics are here; other modules (the
//! webhook's latency histogram) register theirs with [`Metrics::register`] before serving.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use api::SnapshotPhase;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Metric, Registry};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    pub phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    pub controller: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub controller: String,
    pub error: String,
}

/// Every phase, so that a phase with no snapshots reads 0 rather than vanishing.
pub const PHASES: [SnapshotPhase; 6] = [
    SnapshotPhase::Requested,
    SnapshotPhase::Capturing,
    SnapshotPhase::Uploaded,
    SnapshotPhase::Analyzing,
    SnapshotPhase::Analyzed,
    SnapshotPhase::Failed,
];

pub fn phase_name(p: SnapshotPhase) -> &'static str {
    match p {
        SnapshotPhase::Requested => "Requested",
        SnapshotPhase::Capturing => "Capturing",
        SnapshotPhase::Uploaded => "Uploaded",
        SnapshotPhase::Analyzing => "Analyzing",
        SnapshotPhase::Analyzed => "Analyzed",
        SnapshotPhase::Failed => "Failed",
    }
}

/// Cheap to clone: every field is a handle on shared state.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<RwLock<Registry>>,
    /// `dumpwatch_operator_snapshots{phase}`: DumpSnapshots by phase, all namespaces.
    pub snapshots: Family<PhaseLabels, Gauge>,
    /// `dumpwatch_operator_findings_total{kind}`: deadlocks and leak suspects published.
    pub findings: Family<KindLabels, Counter>,
    /// `dumpwatch_operator_reconcile_duration_seconds{controller}`.
    pub reconcile_duration: Family<ControllerLabels, Histogram>,
    /// `dumpwatch_operator_reconcile_errors_total{controller,error}`.
    pub reconcile_errors: Family<ErrorLabels, Counter>,
    /// `dumpwatch_operator_leader`: 1 while this replica runs the controllers.
    pub leader: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let snapshots = Family::<PhaseLabels, Gauge>::default();
        let findings = Family::<KindLabels, Counter>::default();
        let reconcile_duration = Family::<ControllerLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0])
        });
        let reconcile_errors = Family::<ErrorLabels, Counter>::default();
        let leader = Gauge::default();
        registry.register("dumpwatch_operator_snapshots", "DumpSnapshots by phase", snapshots.clone());
        registry.register("dumpwatch_operator_findings", "Findings published, by kind", findings.clone());
        registry.register(
            "dumpwatch_operator_reconcile_duration_seconds",
            "Time spent in one reconcile, by controller",
            reconcile_duration.clone(),
        );
        registry.register(
            "dumpwatch_operator_reconcile_errors",
            "Reconciles that failed, by controller and error kind",
            reconcile_errors.clone(),
        );
        registry.register("dumpwatch_operator_leader", "1 while this replica runs the controllers", leader.clone());
        for p in PHASES {
            let _ = snapshots.get_or_create(&PhaseLabels { phase: phase_name(p).into() });
        }
        // At 0 from the start: `increase` (DotnetMemoryLeakSuspected) sees no rise in a series
        // that first appears at 1.
        for kind in ["deadlock", "leak_suspect"] {
            let _ = findings.get_or_create(&KindLabels { kind: kind.into() });
        }
        Self {
            registry: Arc::new(RwLock::new(registry)),
            snapshots,
            findings,
            reconcile_duration,
            reconcile_errors,
            leader,
        }
    }

    /// Adds a metric of another module (e.g. `dumpwatch_operator_webhook_duration_seconds`).
    pub fn register(&self, name: &str, help: &str, metric: impl Metric) {
        self.registry.write().expect("metrics registry lock").register(name, help, metric);
    }

    /// The OpenMetrics text of every registered metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry.read().expect("metrics registry lock"))
            .expect("writing to a String cannot fail");
        out
    }

    pub fn observe_reconcile(&self, controller: &str, took: Duration) {
        self.reconcile_duration
            .get_or_create(&ControllerLabels { controller: controller.into() })
            .observe(took.as_secs_f64());
    }

    pub fn reconcile_failed(&self, controller: &str, error: &str) {
        self.reconcile_errors.get_or_create(&ErrorLabels { controller: controller.into(), error: error.into() }).inc();
    }

    /// Sets the phase gauge from a full count (phases absent from `counts` read 0).
    pub fn set_snapshot_phases(&self, counts: &[(SnapshotPhase, i64)]) {
        for p in PHASES {
            let n = counts.iter().filter(|(q, _)| *q == p).map(|(_, n)| n).sum();
            self.snapshots.get_or_create(&PhaseLabels { phase: phase_name(p).into() }).set(n);
        }
    }

    pub fn count_findings(&self, kind: &str, n: u64) {
        self.findings.get_or_create(&KindLabels { kind: kind.into() }).inc_by(n);
    }

    /// `GET /metrics`, to be merged into the operator's plain-HTTP metrics listener.
    pub fn router(&self) -> axum::Router {
        let me = self.clone();
        axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let body = me.encode();
                async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        body,
                    )
                }
            }),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_labels_as_documented() {
        let m = Metrics::new();
        m.set_snapshot_phases(&[(SnapshotPhase::Analyzed, 3), (SnapshotPhase::Failed, 1)]);
        m.count_findings("deadlock", 2);
        m.observe_reconcile("dumpsnapshot", Duration::from_millis(20));
        m.reconcile_failed("dumpsnapshot", "kube");
        let other = Histogram::new([0.001, 0.01]);
        m.register("dumpwatch_operator_webhook_duration_seconds", "admission latency", other.clone());
        other.observe(0.002);
        let text = m.encode();
        for line in [
            "dumpwatch_operator_snapshots{phase=\"Analyzed\"} 3",
            "dumpwatch_operator_snapshots{phase=\"Requested\"} 0",
            "dumpwatch_operator_findings_total{kind=\"deadlock\"} 2",
            "dumpwatch_operator_reconcile_duration_seconds_count{controller=\"dumpsnapshot\"} 1",
            "dumpwatch_operator_reconcile_errors_total{controller=\"dumpsnapshot\",error=\"kube\"} 1",
            "dumpwatch_operator_webhook_duration_seconds_count 1",
            "dumpwatch_operator_leader 0",
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
    }
}
