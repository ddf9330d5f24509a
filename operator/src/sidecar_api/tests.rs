//! Unit tests of the sidecar API's pure decisions, on real k8s-openapi types.

use std::collections::BTreeMap;

use api::{Artifact, CaptureKind, DumpSnapshotStatus, SnapshotPhase, TriggerKind};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::ObjectMeta;
use serde_json::json;

use super::decide::*;
use api::wire::{CaptureReport, FailureReport, FileSize};

const SHA: &str = "4f53cda18c2baa0c0354bb5f9a3ecbe5ed12ab4d8e11ba873c2f11161202b945";

fn artifact(kind: CaptureKind, name: &str) -> Artifact {
    Artifact { kind, uri: format!("s3://dumps/p/shop/cart-1/c1/{name}"), size: 10, sha256: SHA.into() }
}

fn manifest() -> serde_json::Value {
    json!({
            "version": 1, "id": "20261128T021500Z-42-gcHeapBytes", "created": "2026-11-28T02:15:00Z", "pod": "cart-1", "namespace": "shop",
            "container": "app", "process": {"pid": 42, "ns_pid": 1, "name": "Cart", "command_line": "x",
            "runtime_version": "8.0.4"}, "trigger": {"index": 0, "trigger": "gcHeapBytes", "value": 6.1e8,
            "threshold": 5e8, "detail": ""}, "dump_type": "heap", "files": [], "failures": [], "seconds": 1.5
    })
}

fn report(artifacts: Vec<Artifact>, findings: Option<serde_json::Value>) -> CaptureReport {
    CaptureReport { manifest: serde_json::from_value(manifest()).unwrap(), artifacts, snapshot: None, findings }
}

fn live_deadlock() -> serde_json::Value {
    json!({"kind": "deadlock", "pid": 42, "process": "Cart", "locks": "a,b", "symbolized": true,
        "cycle": [
            {"thread": 101, "waits_for_lock": 1, "lock_object": 11, "held_by": 102, "stack": ["Cart.Transfer", "Cart.Run"]},
            {"thread": 102, "waits_for_lock": 2, "lock_object": 12, "held_by": 101, "stack": ["0x7f00"]}
        ],
        "victims": [{"thread": 103, "waits_for_lock": 1, "blocked_on": 101, "stack": []}]})
}

#[test]
fn a_dump_to_analyze_is_uploaded() {
    let (spec, status) = snapshot_from_report(
        &report(vec![artifact(CaptureKind::Dump, "core.42.zst")], None),
        "cart-1",
        "leaks",
        true,
        None,
    )
    .unwrap();
    assert_eq!(status.phase, SnapshotPhase::Uploaded);
    assert_eq!((spec.pod.as_str(), spec.policy.as_deref(), spec.pid), ("cart-1", Some("leaks"), Some(42)));
    assert_eq!((spec.trigger, spec.container.as_deref()), (TriggerKind::GcHeapBytes, Some("app")));
    assert_eq!(spec.runtime_version.as_deref(), Some("8.0.4"));
    assert_eq!(spec.observed.as_deref(), Some("610000000"));
    assert_eq!(spec.artifacts.len(), 1);
}

#[test]
fn an_exception_capture_is_final_and_says_what_was_thrown() {
    let mut r = report(vec![artifact(CaptureKind::Exceptions, "exceptions.json.zst")], None);
    r.manifest.trigger.trigger = TriggerKind::Exception;
    r.manifest.trigger.detail =
        format!("3 exceptions matching \"*\" within 60s, the last \"App.E\" ({:?})", "x".repeat(1000));
    let (spec, status) = snapshot_from_report(&r, "cart-1", "errors", true, None).unwrap();
    assert_eq!(status.phase, SnapshotPhase::Analyzed, "nothing to analyze");
    let observed = spec.observed.unwrap();
    assert!(observed.starts_with("3 exceptions matching \"*\" within 60s, the last \"App.E\""), "{observed}");
    assert_eq!(observed.chars().count(), MAX_OBSERVED + 1, "cut, with an ellipsis: {observed}");
}

#[test]
fn live_findings_with_nothing_to_analyze_are_final() {
    let r = report(vec![artifact(CaptureKind::Stacks, "stacks.json.zst")], Some(live_deadlock()));
    let (_, status) = snapshot_from_report(&r, "cart-1", "locks", true, None).unwrap();
    assert_eq!(status.phase, SnapshotPhase::Analyzed);
    let f = status.findings.unwrap();
    assert_eq!((f.deadlocks, f.victims), (1, 1));
    assert_eq!(f.summary, "1 deadlock (2 threads)");
    let threads = &f.deadlock_cycles[0].threads;
    assert_eq!((threads[0].os_tid, threads[0].held_by_os_tid, threads[0].lock_id), (101, 102, 1));
    assert_eq!(threads[0].top_frames, ["Cart.Transfer", "Cart.Run"]);
    assert!(threads[1].top_frames.is_empty(), "raw addresses are not frames");
    // Analysis disabled: a dump is not analyzed either.
    let r = report(vec![artifact(CaptureKind::Dump, "core.42.zst")], None);
    assert_eq!(snapshot_from_report(&r, "p", "x", false, None).unwrap().1.phase, SnapshotPhase::Analyzed);
}

#[test]
fn bad_reports_are_400_with_the_reason() {
    // An unknown trigger does not even parse (the route answers 400 with serde's words).
    let mut m = manifest();
    m["trigger"]["trigger"] = json!("sunspots");
    let e = serde_json::from_value::<CaptureReport>(json!({"manifest": m})).unwrap_err();
    assert!(e.to_string().contains("sunspots"), "{e}");
    let mut a = artifact(CaptureKind::Dump, "core");
    a.sha256 = "ABC".into();
    assert_eq!(snapshot_from_report(&report(vec![a], None), "p", "x", true, None).unwrap_err().status(), 400);
    let mut r = report(vec![], None);
    r.manifest.id = "../../etc".into();
    assert_eq!(capture_id(&r).unwrap_err().status(), 400);
    assert_eq!(capture_id(&report(vec![], None)).unwrap(), "20261128T021500Z-42-gcHeapBytes");
}

#[test]
fn snapshot_names_are_valid_label_values_and_stay_unique_when_cut() {
    assert_eq!(snapshot_name("cart-1", "20261128T021500Z-42-gcHeapBytes"), "cart-1-20261128t021500z-42-gcheapbytes");
    let long_pod = "a".repeat(60);
    let (x, y) = (snapshot_name(&long_pod, "capture-1"), snapshot_name(&long_pod, "capture-2"));
    assert!(x.len() <= 63 && y.len() <= 63 && x != y, "{x} {y}");
    assert!(snapshot_name("p", "c.1_x").chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'));
}

#[test]
fn uploads_are_bounded_by_the_policy_budget() {
    let f = |name: &str, size| FileSize { name: name.into(), size };
    assert!(check_upload(&[f("core.1.zst", 100)], 1000).is_ok());
    assert_eq!(check_upload(&[f("core.1.zst", 600), f("b", 600)], 1000).unwrap_err().status(), 413);
    assert_eq!(check_upload(&[f("a", u64::MAX), f("b", 2)], u64::MAX).unwrap_err().status(), 413);
    assert_eq!(check_upload(&[f("../x", 1)], 1000).unwrap_err().status(), 400);
    assert_eq!(check_upload(&[], 1000).unwrap_err().status(), 400);
}

fn pod(name: &str, annotations: &[(&str, &str)], labels: &[(&str, &str)], owner_job: Option<&str>) -> Pod {
    let map =
        |kv: &[(&str, &str)]| Some(kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>());
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            annotations: map(annotations),
            labels: map(labels),
            owner_references: owner_job.map(|j| {
                vec![OwnerReference {
                    api_version: "batch/v1".into(),
                    kind: "Job".into(),
                    name: j.into(),
                    ..Default::default()
                }]
            }),
            ..Default::default()
        },
        ..Default::default()
    }
}

#[test]
fn the_policy_is_the_injection_annotation() {
    assert_eq!(policy_name(&pod("p", &[("dumpwatch.dev/injected", "leaks")], &[], None)), Some("leaks"));
    assert_eq!(policy_name(&pod("p", &[], &[], None)), None);
}

fn snapshot(name: &str, pod: &str, phase: Option<SnapshotPhase>, job: Option<&str>) -> api::DumpSnapshot {
    let (spec, _) = snapshot_from_report(&report(vec![], None), pod, "x", true, None).unwrap();
    let mut s = new_snapshot("shop", name, "c1", api::DumpSnapshotSpec { artifacts: vec![], ..spec });
    s.metadata.labels = None; // as `kubectl create` makes it
    s.status = phase.map(|phase| DumpSnapshotStatus { phase, job: job.map(str::to_owned), ..Default::default() });
    s
}

#[test]
fn requests_are_unserved_snapshots_of_the_callers_pod() {
    assert!(is_request_for(&snapshot("s", "cart-1", None, None), "cart-1"), "a user's snapshot has no status yet");
    assert!(is_request_for(&snapshot("s", "cart-1", Some(SnapshotPhase::Requested), None), "cart-1"));
    assert!(!is_request_for(&snapshot("s", "cart-1", Some(SnapshotPhase::Capturing), None), "cart-1"));
    assert!(!is_request_for(&snapshot("s", "cart-2", None, None), "cart-1"));
    assert_eq!(check_fill_in(&snapshot("s", "cart-2", None, None), "cart-1").unwrap_err().status(), 403);
    assert_eq!(
        check_fill_in(&snapshot("s", "cart-1", Some(SnapshotPhase::Uploaded), None), "cart-1").unwrap_err().status(),
        409
    );
    assert!(check_fill_in(&snapshot("s", "cart-1", Some(SnapshotPhase::Capturing), None), "cart-1").is_ok());
}

fn failure(trigger: TriggerKind, snapshot: Option<&str>) -> FailureReport {
    FailureReport {
        id: "20261128T090000Z-Cart-42-gcHeapBytes-failed".into(),
        container: Some("app".into()),
        pid: 42,
        process: "Cart".into(),
        runtime_version: Some("8.0.4".into()),
        trigger,
        value: 6.1e8,
        snapshot: snapshot.map(str::to_owned),
        reason: "capture failed: capturing pid 42: dump: disk guard: 3.1 GiB free on /dumpwatch, the dump needs \
                 ~300.0 MiB and limits.minFreeDisk keeps 1000.0 TiB free"
            .into(),
    }
}

#[test]
fn a_failed_capture_becomes_a_failed_snapshot_with_the_reason() {
    let (spec, status) = snapshot_from_failure(&failure(TriggerKind::GcHeapBytes, None), "cart-1", "leaks").unwrap();
    assert_eq!(status.phase, SnapshotPhase::Failed);
    let message = status.message.unwrap();
    assert!(message.starts_with("Cart (pid 42): capture failed: "), "{message}");
    assert!(message.contains("limits.minFreeDisk keeps 1000.0 TiB free"), "{message}");
    assert_eq!((spec.pod.as_str(), spec.policy.as_deref(), spec.pid), ("cart-1", Some("leaks"), Some(42)));
    assert_eq!((spec.trigger, spec.observed.as_deref()), (TriggerKind::GcHeapBytes, Some("610000000")));
    assert!(spec.artifacts.is_empty());
    let (spec, _) = snapshot_from_failure(&failure(TriggerKind::OnDemand, Some("asked")), "cart-1", "leaks").unwrap();
    assert_eq!((spec.trigger, spec.observed), (TriggerKind::OnDemand, None), "an on-demand request has no value");
}

#[test]
fn bad_failure_reports_are_400_and_long_reasons_are_cut() {
    let no_reason = FailureReport { reason: "  ".into(), ..failure(TriggerKind::OnDemand, None) };
    assert_eq!(snapshot_from_failure(&no_reason, "cart-1", "p").unwrap_err().status(), 400);
    let bad_id = FailureReport { id: "../x".into(), ..failure(TriggerKind::OnDemand, None) };
    assert_eq!(snapshot_from_failure(&bad_id, "cart-1", "p").unwrap_err().status(), 400);
    let long = FailureReport { reason: "x".repeat(5000), ..failure(TriggerKind::OnDemand, None) };
    let (_, status) = snapshot_from_failure(&long, "cart-1", "p").unwrap();
    assert!(status.message.unwrap().chars().count() < MAX_REASON + 20);
}

#[test]
fn snapshots_made_from_reports_are_never_requests() {
    let (spec, _) = snapshot_from_failure(&failure(TriggerKind::GcHeapBytes, None), "cart-1", "p").unwrap();
    // Created without a status (the status subresource is written next): still not a request.
    let created = new_snapshot("shop", "cart-1-x", "x", spec);
    assert!(!is_request_for(&created, "cart-1"));
    assert!(is_same_failure(&created, "cart-1") && !is_same_failure(&created, "cart-2"));
}

/// A Job owned by the snapshot (as the operator creates it) and a pod owned by the Job.
fn owned(kind: &str, name: &str, uid: &str) -> Option<Vec<OwnerReference>> {
    Some(vec![OwnerReference {
        api_version: if kind == "Job" { "batch/v1" } else { "dumpwatch.dev/v1alpha1" }.into(),
        kind: kind.into(),
        name: name.into(),
        uid: uid.into(),
        controller: Some(true),
        ..Default::default()
    }])
}

#[test]
fn a_pod_cannot_post_findings_for_a_snapshot_it_does_not_own() {
    use k8s_openapi::api::batch::v1::Job;
    let mut s = snapshot("snap-1", "cart-1", Some(SnapshotPhase::Analyzing), Some("dsnap-snap-1-analyze"));
    s.metadata.uid = Some("snap-uid".into());
    let mut job = Job::default();
    job.metadata.name = Some("dsnap-snap-1-analyze".into());
    job.metadata.uid = Some("job-uid".into());
    job.metadata.owner_references = owned("DumpSnapshot", "snap-1", "snap-uid");
    let mut job_pod = pod("dsnap-snap-1-analyze-x7", &[], &[("job-name", "dsnap-snap-1-analyze")], None);
    job_pod.metadata.uid = Some("pod-uid".into());
    job_pod.metadata.owner_references = owned("Job", "dsnap-snap-1-analyze", "job-uid");
    assert!(check_job_pod(&s, Some(&job), &job_pod, Some("pod-uid")).is_ok());

    // An app pod with the Job's labels and a name-only owner reference: not the Job's.
    let mut faker = pod(
        "cart-1",
        &[],
        &[("job-name", "dsnap-snap-1-analyze"), ("batch.kubernetes.io/job-name", "dsnap-snap-1-analyze")],
        Some("dsnap-snap-1-analyze"),
    );
    faker.metadata.uid = Some("cart-uid".into());
    assert_eq!(check_job_pod(&s, Some(&job), &faker, Some("cart-uid")).unwrap_err().status(), 403);
    // The token of another pod, presented for the Job's pod name.
    let err = check_job_pod(&s, Some(&job), &job_pod, Some("cart-uid")).unwrap_err();
    assert!(err.status() == 403 && err.message.contains("bound to pod UID cart-uid"), "{err}");
    assert_eq!(check_job_pod(&s, Some(&job), &job_pod, None).unwrap_err().status(), 403, "no UID, no findings");
    // A Job of the same name not created for this snapshot, or none at all.
    let mut stranger = job.clone();
    stranger.metadata.owner_references = owned("DumpSnapshot", "snap-1", "another-snap-uid");
    assert_eq!(check_job_pod(&s, Some(&stranger), &job_pod, Some("pod-uid")).unwrap_err().status(), 403);
    assert_eq!(check_job_pod(&s, None, &job_pod, Some("pod-uid")).unwrap_err().status(), 403);
    // The right pod, too late.
    let mut done = s.clone();
    done.status.as_mut().unwrap().phase = SnapshotPhase::Analyzed;
    assert_eq!(check_job_pod(&done, Some(&job), &job_pod, Some("pod-uid")).unwrap_err().status(), 409);
    assert_eq!(job_name_of(&snapshot("snap-2", "c", None, None)), "dsnap-snap-2-analyze");
}

#[test]
fn a_pod_cannot_claim_another_pods_objects() {
    let own = "s3://dumps/p/shop/cart-1/";
    assert!(check_artifact_owner("s3://dumps/p/shop/cart-1/c1/core.zst", own).is_ok());
    assert_eq!(check_artifact_owner("s3://dumps/p/shop/cart-2/c1/core.zst", own).unwrap_err().status(), 403);
    assert!(check_artifact_owner("file:///dumpwatch/c1/core.zst", own).is_ok());
    assert_eq!(check_artifact_owner("http://x/y", own).unwrap_err().status(), 400);
}

#[test]
fn on_a_claim_the_snapshot_records_it_and_a_pod_owns_only_its_directory() {
    let mut storage = api::Storage::default();
    assert_eq!(snapshot_volume(&storage), None, "emptyDir: no claim to record");
    storage.volume = Some(api::VolumeStorage { path: "/dumpwatch-store/".into(), claim_name: Some("dumps".into()) });
    let volume = snapshot_volume(&storage).unwrap();
    assert_eq!((volume.claim_name.as_str(), volume.path.as_str()), ("dumps", "/dumpwatch-store"));
    let s3 = api::Storage { volume: None, s3: Some(Default::default()) };
    assert_eq!(snapshot_volume(&s3), None);

    let mut a = artifact(CaptureKind::Dump, "core.42.zst");
    a.uri = "file:///dumpwatch-store/shop/cart-1/c1/core.42.zst".into();
    let (spec, status) =
        snapshot_from_report(&report(vec![a], None), "cart-1", "leaks", true, Some(volume.clone())).unwrap();
    assert_eq!(spec.volume.as_ref(), Some(&volume));
    assert_eq!(status.phase, SnapshotPhase::Uploaded);

    let own = claim_prefix(&volume, "shop", "cart-1");
    assert_eq!(own, "file:///dumpwatch-store/shop/cart-1/");
    assert!(check_artifact_owner("file:///dumpwatch-store/shop/cart-1/c1/core.42.zst", &own).is_ok());
    for theirs in [
        "file:///dumpwatch-store/shop/cart-2/c1/core.42.zst",
        "file:///dumpwatch-store/shop/cart-1/../cart-2/c1/core.42.zst",
        "file:///dumpwatch-store/shop/cart-1/./c1/core.42.zst",
        "file:///dumpwatch-store/shop/cart-1//etc/passwd",
        "file:///dumpwatch-store/shop/cart-1/",
        "file:///dumpwatch-store/shop/cart-10/c1/core.42.zst",
        "file:///etc/passwd",
        "s3://dumps/p/shop/cart-1/c1/core.zst",
    ] {
        assert_eq!(check_artifact_owner(theirs, &own).unwrap_err().status(), 403, "{theirs}");
    }
}
