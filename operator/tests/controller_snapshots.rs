//! The DumpSnapshot controller on a real control plane (kube-apiserver, the Job controller,
//! a node agent that runs pods): an uploaded snapshot gets its analysis Job, the Job really
//! runs, findings become Events on the pod and the policy, a failing Job fails the snapshot
//! with an AnalysisFailed Event, and retention deletes the oldest snapshot, its cleanup Job its
//! artifact.
//!
//! The sidecar API's `POST /v1/jobs/findings` is another module: here the analyzer image is a
//! small script (it records its arguments and whether its token was mounted), and the test
//! writes the findings into the status as that route does. The same script stands in for
//! `dumpwatch delete-artifacts` in the cleanup Job (crates/cli/tests/delete_artifacts.rs tests
//! the real one): the files lie on the host outside the claim's mount point, where it sees them.

mod controller_support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use api::{DumpPolicy, DumpSnapshot, FindingsSummary};
use controller_support::{client, eventually, run_controllers, start, stop};
use harness::Options;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use operator::controller::AnalysisSettings;
use serde_json::json;

const NS: &str = "default";
const IMAGE: &str = "dumpwatch-analyzer:test";
const WAIT: Duration = Duration::from_secs(60);

fn analyzer_script(dir: &Path) -> PathBuf {
    let log = dir.join("analyzer-calls");
    let script = dir.join("analyzer.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n\
             token=missing; test -s /var/run/secrets/dumpwatch.dev/token && token=mounted\n\
             case \"$1\" in delete-artifacts) echo \"cleanup args=$*\" >> {log}\n\
               for a in \"$@\"; do case \"$a\" in file://*) rm -f \"${{a#file://}}\";; esac; done; exit 0;; esac\n\
             echo \"token=$token args=$*\" >> {log}\n\
             case \"$*\" in *will-fail*) echo 'cannot read the dump' >&2; exit 3;; esac\n\
             exit 0\n",
            log = log.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script
}

fn deadlock_findings() -> serde_json::Value {
    let lock = |id: u64| json!({"lock_id": id, "object": 7, "object_type": "System.Object"});
    let stack = json!([
        "[HelperMethodFrame_1OBJ] System.Threading.Monitor.ReliableEnter(System.Object, Boolean ByRef)",
        "DiagScenarios.Deadlocks.DeadlockFunc(System.Object)"
    ]);
    json!({
        "schema": "dumpwatch.findings", "version": 1,
        "summary": {"deadlocks": 1, "deadlocked_threads": 2, "victims": 3, "leak_suspects": 0},
        "deadlocks": [{"cycle": [
            {"thread": {"os_tid": 4105, "managed_id": 14}, "waits_for": lock(1), "held_by": {"os_tid": 4106, "managed_id": 15}, "stack": stack},
            {"thread": {"os_tid": 4106, "managed_id": 15}, "waits_for": lock(2), "held_by": {"os_tid": 4105, "managed_id": 14}, "stack": stack}
        ], "victims": [{}, {}, {}]}],
        "heap": {"objects": 1, "bytes": 1, "top_types": []},
        "leak_suspects": []
    })
}

/// Where the claim `dumps` is mounted in the Jobs (apart from `dir`, so that the files stay
/// visible to the stand-in script).
fn claim_path(dir: &Path) -> String {
    format!("{}-claim", dir.display())
}

/// A snapshot as the sidecar API leaves it after a capture report: spec with a `file://`
/// artifact written under `dir` and the claim, status `Uploaded`.
async fn uploaded(api: &Api<DumpSnapshot>, name: &str, dir: &Path) -> PathBuf {
    let capture = dir.join(NS).join("orders-a").join(name);
    std::fs::create_dir_all(&capture).unwrap();
    let core = capture.join("core.42.zst");
    std::fs::write(&core, b"not really a dump").unwrap();
    let snapshot: DumpSnapshot = serde_json::from_value(json!({
        "apiVersion": "dumpwatch.dev/v1alpha1", "kind": "DumpSnapshot",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"policy": "orders", "pod": "orders-a", "container": "app", "pid": 42, "trigger": "deadlock",
                 "artifacts": [{"kind": "dump", "uri": format!("file://{}", core.display()), "size": 17, "sha256": "ab".repeat(32)}],
                 "volume": {"claimName": "dumps", "path": claim_path(dir)}}
    }))
    .unwrap();
    api.create(&PostParams::default(), &snapshot).await.unwrap();
    set_status(api, name, json!({"phase": "Uploaded"})).await;
    core
}

async fn set_status(api: &Api<DumpSnapshot>, name: &str, status: serde_json::Value) {
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(json!({ "status": status }))).await.unwrap();
}

async fn phase_of(api: &Api<DumpSnapshot>, name: &str) -> Result<DumpSnapshot, String> {
    api.get(name).await.map_err(|e| e.to_string())
}

/// Events (events.k8s.io/v1) about `kind/name` with `reason`.
async fn events_about(client: &kube::Client, kind: &str, name: &str, reason: &str) -> Vec<Event> {
    let all = Api::<Event>::namespaced(client.clone(), NS).list(&ListParams::default()).await.unwrap().items;
    all.into_iter()
        .filter(|e| {
            e.regarding.as_ref().is_some_and(|r| r.kind.as_deref() == Some(kind) && r.name.as_deref() == Some(name))
                && e.reason.as_deref() == Some(reason)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_lifecycle_jobs_events_and_retention() {
    let dir = tempfile::Builder::new().prefix("dumpwatch-controller-").tempdir().unwrap();
    let script = analyzer_script(dir.path());
    let cp = start(Options { images: vec![(IMAGE.into(), script)], ..Options::default() }).await;
    cp.install_dumpwatch_crds().unwrap();
    let client = client(&cp).await;
    let settings = AnalysisSettings {
        image: IMAGE.into(),
        operator_url: "https://127.0.0.1:8443".into(),
        ttl_after_finished_secs: 600,
        ..AnalysisSettings::default()
    };
    let volume = dir.path().join("volume");
    std::fs::create_dir_all(&volume).unwrap();
    let (stop_controllers, ctx, controllers) = run_controllers(client.clone(), settings);

    cp.apply(&format!(
        r#"
apiVersion: dumpwatch.dev/v1alpha1
kind: DumpPolicy
metadata: {{name: orders, namespace: {NS}}}
spec:
  selector: {{matchLabels: {{app: orders}}}}
  triggers: [{{type: deadlock}}]
  retention: {{maxCount: 2, maxAge: 1h}}
  analysis: {{deadline: 2m, memory: 512Mi}}
  storage: {{volume: {{path: /dumpwatch, claimName: dumps}}}}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {{name: dumps, namespace: {NS}}}
spec:
  accessModes: [ReadWriteMany]
  resources: {{requests: {{storage: 1Gi}}}}
---
apiVersion: v1
kind: Pod
metadata:
  name: orders-a
  namespace: {NS}
  labels: {{app: orders}}
  annotations: {{dumpwatch.dev/injected: orders}}
spec:
  containers:
    - {{name: app, image: none, command: [sleep, "600"]}}
    - {{name: dumpwatch-sidecar, image: none, command: [sleep, "600"]}}
"#
    ))
    .unwrap();
    let snapshots: Api<DumpSnapshot> = Api::namespaced(client.clone(), NS);
    let jobs: Api<Job> = Api::namespaced(client.clone(), NS);

    // 1. Uploaded → the analysis Job, with the policy's limits, owned by the snapshot.
    let first_core = uploaded(&snapshots, "orders-a-1", &volume).await;
    let job = eventually("the analysis Job", WAIT, || async {
        jobs.get("dsnap-orders-a-1-analyze").await.map_err(|e| e.to_string())
    })
    .await;
    let snap = snapshots.get("orders-a-1").await.unwrap();
    let owner = &job.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!((owner.kind.as_str(), owner.uid.as_str()), ("DumpSnapshot", snap.metadata.uid.as_deref().unwrap()));
    assert_eq!(job.metadata.labels.as_ref().unwrap()["dumpwatch.dev/snapshot"], "orders-a-1");
    let spec = job.spec.as_ref().unwrap();
    assert_eq!(spec.active_deadline_seconds, Some(120));
    let container = &spec.template.spec.as_ref().unwrap().containers[0];
    assert_eq!(container.resources.as_ref().unwrap().limits.as_ref().unwrap()["memory"].0, "536870912");
    let args = container.args.as_ref().unwrap().join(" ");
    assert!(args.starts_with("analyze --artifacts "), "{args}");
    assert!(args.contains(&format!("file://{}", first_core.display())), "{args}");
    assert!(args.contains("--report-to https://127.0.0.1:8443 --snapshot orders-a-1"), "{args}");
    let status = snap.status.unwrap();
    assert_eq!(
        (status.phase, status.job.as_deref()),
        (api::SnapshotPhase::Analyzing, Some("dsnap-orders-a-1-analyze"))
    );
    assert!(snap.metadata.finalizers.unwrap_or_default().contains(&"dumpwatch.dev/artifacts".to_string()));

    // The Job really ran (the Job controller made a pod, the node agent ran the "image") and had its token.
    let completed = tokio::time::timeout(WAIT, async {
        loop {
            let j = jobs.get("dsnap-orders-a-1-analyze").await.unwrap();
            if j.status.as_ref().and_then(|s| s.succeeded).unwrap_or(0) >= 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    })
    .await;
    if completed.is_err() {
        let pods = cp.kubectl(&["get", "pods", "-l", "dumpwatch.dev/snapshot=orders-a-1", "-o", "yaml"]).unwrap();
        panic!("the analysis Job did not complete\n{pods}\n--- node agent:\n{}", cp.log("nodeagent"));
    }
    let calls = std::fs::read_to_string(dir.path().join("analyzer-calls")).unwrap();
    assert!(calls.contains("token=mounted args=analyze --artifacts"), "{calls}");
    assert!(calls.contains("--snapshot orders-a-1"), "{calls}");

    // 2. Findings arrive (as POST /v1/jobs/findings writes them) → DeadlockDetected on the pod and the policy.
    let findings = FindingsSummary::from_document(&deadlock_findings()).unwrap();
    set_status(&snapshots, "orders-a-1", json!({"phase": "Analyzed", "findings": findings})).await;
    let expected = "threads 14 and 15 deadlock on two System.Object locks in DeadlockFunc; 3 threads wait behind them \
                    (OS threads 4105, 4106) (DumpSnapshot orders-a-1)";
    for kind in ["Pod", "DumpPolicy"] {
        let name = if kind == "Pod" { "orders-a" } else { "orders" };
        let events = eventually(&format!("DeadlockDetected on the {kind}"), WAIT, || async {
            let e = events_about(&client, kind, name, "DeadlockDetected").await;
            if e.is_empty() { Err("none".into()) } else { Ok(e) }
        })
        .await;
        assert_eq!(events.len(), 1, "published once");
        assert_eq!(events[0].note.as_deref(), Some(expected));
        assert_eq!(events[0].type_.as_deref(), Some("Warning"));
    }
    eventually("Published", WAIT, || async {
        let s = phase_of(&snapshots, "orders-a-1").await?;
        let published =
            s.status.unwrap_or_default().conditions.iter().any(|c| c.type_ == "Published" && c.status == "True");
        if published { Ok(()) } else { Err("not yet".into()) }
    })
    .await;

    // 3. A Job that fails (twice: backoffLimit 1) fails the snapshot, with an AnalysisFailed Event.
    uploaded(&snapshots, "will-fail", &volume).await;
    let failed = eventually("the snapshot fails", Duration::from_secs(90), || async {
        let s = phase_of(&snapshots, "will-fail").await?;
        let st = s.status.clone().unwrap_or_default();
        if st.phase == api::SnapshotPhase::Failed { Ok(st) } else { Err(format!("{:?}", st.phase)) }
    })
    .await;
    let message = failed.message.unwrap();
    assert!(message.starts_with("analysis Job dsnap-will-fail-analyze failed: BackoffLimitExceeded"), "{message}");
    let attempts =
        std::fs::read_to_string(dir.path().join("analyzer-calls")).unwrap().matches("--snapshot will-fail").count();
    assert_eq!(attempts, 2, "one try and one retry");
    let events = eventually("AnalysisFailed on the pod", WAIT, || async {
        let e = events_about(&client, "Pod", "orders-a", "AnalysisFailed").await;
        if e.is_empty() { Err("none".into()) } else { Ok(e) }
    })
    .await;
    assert!(events[0].note.as_deref().unwrap().contains("BackoffLimitExceeded"), "{:?}", events[0].note);

    // 4. A third settled snapshot: maxCount 2 deletes the oldest, and its finalizer its artifact.
    tokio::time::sleep(Duration::from_millis(1100)).await; // creation times have one-second resolution
    let third_core = uploaded(&snapshots, "orders-a-3", &volume).await;
    set_status(&snapshots, "orders-a-3", json!({"phase": "Analyzed"})).await;
    eventually("the oldest snapshot is gone", WAIT, || async {
        match snapshots.get_opt("orders-a-1").await.map_err(|e| e.to_string())? {
            None => Ok(()),
            Some(s) => {
                let all = snapshots.list(&ListParams::default()).await.map_err(|e| e.to_string())?;
                let phases: Vec<String> = all
                    .items
                    .iter()
                    .map(|s| format!("{:?}={:?}", s.metadata.name, s.status.as_ref().map(|st| st.phase)))
                    .collect();
                Err(format!("still there: {:?}; snapshots: {phases:?}", s.metadata.deletion_timestamp))
            }
        }
    })
    .await;
    assert!(!first_core.exists(), "the artifact of the deleted snapshot is deleted");
    let calls = std::fs::read_to_string(dir.path().join("analyzer-calls")).unwrap();
    let under = format!(
        "cleanup args=delete-artifacts --under {}/{NS}/orders-a file://{}",
        claim_path(&volume),
        first_core.display()
    );
    assert!(calls.contains(&under), "{calls}");
    eventually("the succeeded cleanup Job is deleted", WAIT, || async {
        match jobs.get_opt("dsnap-orders-a-1-cleanup").await.map_err(|e| e.to_string())? {
            None => Ok(()),
            Some(_) => Err("still there".into()),
        }
    })
    .await;
    assert!(third_core.exists());
    assert!(snapshots.get_opt("will-fail").await.unwrap().is_some());

    // 5. The operator's metrics saw it all.
    let metrics = ctx.metrics.encode();
    assert!(metrics.contains("dumpwatch_operator_findings_total{kind=\"deadlock\"} 1"), "{metrics}");
    assert!(metrics.contains("dumpwatch_operator_snapshots{phase=\"Failed\"} 1"), "{metrics}");
    assert!(metrics.contains("dumpwatch_operator_reconcile_duration_seconds_count{controller=\"dumpsnapshot\"}"));

    let policy = Api::<DumpPolicy>::namespaced(client.clone(), NS).get("orders").await.unwrap();
    let status = policy.status.unwrap();
    assert_eq!((status.matched_pods, status.injected_pods), (1, 1));
    assert!(Api::<Pod>::namespaced(client, NS).get("orders-a").await.is_ok());

    stop_controllers.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(20), controllers).await.expect("controllers stop").unwrap();
    stop(cp).await;
}
