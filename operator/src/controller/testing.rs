//! Fixtures for the controller's unit tests: real api / k8s-openapi objects.

use api::{
    Artifact, CaptureKind, DumpPolicy, DumpPolicySpec, DumpSnapshot, DumpSnapshotSpec, SnapshotPhase, TriggerKind,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

pub fn ts(secs: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + secs).unwrap()
}

pub fn policy() -> DumpPolicy {
    let spec = DumpPolicySpec::from_yaml(
        "selector: {matchLabels: {app: orders}}\nanalysis: {deadline: 5m, memory: 1Gi}\nretention: {maxCount: 2, maxAge: 1h}",
    )
    .unwrap();
    let mut p = DumpPolicy::new("orders", spec);
    p.metadata.namespace = Some("shop".into());
    p.metadata.uid = Some("uid-policy".into());
    p.metadata.creation_timestamp = Some(Time(ts(0)));
    p
}

pub fn snapshot(name: &str, phase: &str) -> DumpSnapshot {
    let mut s = DumpSnapshot::new(
        name,
        DumpSnapshotSpec {
            policy: Some("orders".into()),
            pod: "orders-7c9".into(),
            container: Some("api".into()),
            pid: Some(42),
            runtime_version: Some("8.0.4".into()),
            trigger: TriggerKind::Deadlock,
            observed: None,
            artifacts: vec![Artifact {
                kind: CaptureKind::Dump,
                uri: format!("file:///dumps/shop/{name}/core.42.zst"),
                size: 1000,
                sha256: "ab".repeat(32),
            }],
            volume: Some(api::SnapshotVolume { claim_name: "dumps".into(), path: "/dumps".into() }),
            store: None,
        },
    );
    s.metadata.namespace = Some("shop".into());
    s.metadata.uid = Some(format!("uid-{name}"));
    s.metadata.creation_timestamp = Some(Time(ts(0)));
    let phase: SnapshotPhase = serde_json::from_value(phase.into()).unwrap();
    s.status = Some(api::DumpSnapshotStatus { phase, ..Default::default() });
    s
}

/// The findings document of the seed's deadlock: threads 14 and 15, three victims.
pub fn deadlock_document() -> serde_json::Value {
    let lock = |id: u64| serde_json::json!({"lock_id": id, "object": 7, "object_type": "System.Object"});
    let stack = serde_json::json!([
        "[HelperMethodFrame_1OBJ] System.Threading.Monitor.ReliableEnter(System.Object, Boolean ByRef)",
        "System.Threading.Monitor.Enter(System.Object, Boolean ByRef)",
        "DiagScenarios.Deadlocks.DeadlockFunc(System.Object)"
    ]);
    serde_json::json!({
        "schema": "dumpwatch.findings", "version": 1,
        "summary": {"deadlocks": 1, "deadlocked_threads": 2, "victims": 3, "leak_suspects": 1},
        "deadlocks": [{"cycle": [
            {"thread": {"os_tid": 4105, "managed_id": 14}, "waits_for": lock(1), "held_by": {"os_tid": 4106, "managed_id": 15}, "stack": stack},
            {"thread": {"os_tid": 4106, "managed_id": 15}, "waits_for": lock(2), "held_by": {"os_tid": 4105, "managed_id": 14}, "stack": stack}
        ], "victims": [{}, {}, {}]}],
        "heap": {"objects": 1, "bytes": 1, "top_types": []},
        "leak_suspects": [{"type_name": "DiagScenarios.Customer", "instances": 201000, "shallow_bytes": 1,
            "retained_bytes": 19296000, "heap_share": 0.81, "root": "static DiagScenarios.Processor.Current",
            "path": ["DiagScenarios.Processor", "DiagScenarios.CustomerCache", "DiagScenarios.Customer"], "path_instances": 1}]
    })
}
