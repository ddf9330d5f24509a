//! The whole analysis path with nothing standing in: a real .NET 8 process deadlocks, its dump
//! and DAC lie on the "volume", a DumpSnapshot says `Uploaded`, the controller creates the
//! analysis Job, the Job controller and the node agent run the real `dumpwatch analyze` in it,
//! the CLI posts the findings to the real sidecar API (TokenReview of the Job pod's projected
//! analyzer token), the snapshot becomes `Analyzed`, and `DeadlockDetected` names the threads
//! that really deadlock, on the pod.
//!
//! Needs the `dumpwatch` binary beside this test's (`cargo build -p dumpwatch`; `cargo test
//! --workspace` builds it).

mod controller_support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use api::{DumpSnapshot, SnapshotPhase};
use controller_support::{client, eventually, run_controllers, start, stop};
use harness::Options;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use operator::controller::AnalysisSettings;
use operator::sidecar_api::{self, SidecarApi};
use serde_json::{Value, json};
use testbed::{Runtime, Workload};

const IMAGE: &str = "dumpwatch:e2e";

fn dumpwatch_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().unwrap().parent().unwrap().join("dumpwatch");
    assert!(bin.exists(), "{} is missing: run `cargo build -p dumpwatch` first", bin.display());
    bin
}

/// A heap dump of a .NET 8 process with a two-thread deadlock and two waiters behind it, into
/// `dir` (core + the DAC beside it). Returns the true owner thread ids.
fn deadlocked_dump(dumpwatch: &Path, dir: &Path) -> BTreeSet<u64> {
    let w = Workload::start(Runtime::Net8, "DiagScenarios", &[]);
    let dl = w.get("/deadlock?waiters=2");
    let core = dir.join("core.42");
    for attempt in 1.. {
        // createdump can lose a race with an exiting thread: retry (as the CLI's own tests do).
        let out = Command::new(dumpwatch)
            .args(["dump", &w.pid.to_string(), "-o", core.to_str().unwrap(), "--type", "heap"])
            .env("TMPDIR", dir)
            .output()
            .unwrap();
        if out.status.success() {
            break;
        }
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(attempt < 3 && err.contains("ptrace"), "dump failed: {err}");
    }
    drop(w);
    dl["owners"].as_array().unwrap().iter().map(|t| t["os_tid"].as_u64().unwrap()).collect()
}

fn artifact(path: &Path) -> Value {
    let (size, sha) = store::sha256_file(path).unwrap();
    json!({"kind": "dump", "uri": format!("file://{}", path.display()), "size": size, "sha256": sha})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_dump_is_analyzed_by_its_job_and_the_deadlock_becomes_an_event() {
    let dumpwatch = dumpwatch_binary();
    let work = tempfile::Builder::new().prefix("dumpwatch-e2e-").tempdir().unwrap();
    let capture = work.path().join("volume/default/orders-a/c1");
    std::fs::create_dir_all(&capture).unwrap();
    let (bin, dir) = (dumpwatch.clone(), capture.clone());
    let owners = tokio::task::spawn_blocking(move || deadlocked_dump(&bin, &dir)).await.unwrap();
    let dac = capture.join("libmscordaccore.so");
    assert!(dac.exists(), "the DAC is copied beside the dump");
    let artifacts = json!([artifact(&capture.join("core.42")), artifact(&dac)]);

    let cp = start(Options { images: vec![(IMAGE.into(), dumpwatch)], ..Options::default() }).await;
    cp.install_dumpwatch_crds().unwrap();
    let client = client(&cp).await;

    // The operator's sidecar/Job API (plain HTTP here; TLS is the server's business).
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let api_server = sidecar_api::router(SidecarApi::new(client.clone(), "dumpwatch"));
    tokio::spawn(async move { axum::serve(listener, api_server).await.unwrap() });
    // The Job runs the CLI on this machine, whose .NET runtimes are the dumped ones: it may take
    // the DAC from them (chart: analysis.localRuntimes), never from the capture.
    let settings = AnalysisSettings {
        image: IMAGE.into(),
        operator_url: url,
        local_runtimes: true,
        ..AnalysisSettings::default()
    };
    let (stop_controllers, ctx, controllers) = run_controllers(client.clone(), settings);

    cp.apply(
        r#"
apiVersion: dumpwatch.dev/v1alpha1
kind: DumpPolicy
metadata: {name: orders, namespace: default}
spec:
  selector: {matchLabels: {app: orders}}
  triggers: [{type: deadlock}]
  analysis: {deadline: 3m, memory: 2Gi}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: dumps, namespace: default}
spec:
  accessModes: [ReadWriteMany]
  resources: {requests: {storage: 1Gi}}
---
apiVersion: v1
kind: Pod
metadata:
  name: orders-a
  namespace: default
  labels: {app: orders}
  annotations: {dumpwatch.dev/injected: orders}
spec:
  containers:
    - {name: app, image: none, command: [sleep, "600"]}
    - {name: dumpwatch-sidecar, image: none, command: [sleep, "600"]}
"#,
    )
    .unwrap();
    let snapshots: Api<DumpSnapshot> = Api::namespaced(client.clone(), "default");
    let snapshot: DumpSnapshot = serde_json::from_value(json!({
        "apiVersion": "dumpwatch.dev/v1alpha1", "kind": "DumpSnapshot",
        "metadata": {"name": "orders-a-c1", "namespace": "default"},
        "spec": {"policy": "orders", "pod": "orders-a", "container": "app", "pid": 42, "trigger": "deadlock",
                 "artifacts": artifacts,
                 // A snapshot on a claim is what a Job can analyze. The claim is mounted apart from
                 // the dump, which the test node's containers see on the host (e2e/scenarios'
                 // volume_storage test has the sidecar write it onto the claim itself).
                 "volume": {"claimName": "dumps", "path": format!("{}/claim", work.path().display())}}
    }))
    .unwrap();
    snapshots.create(&PostParams::default(), &snapshot).await.unwrap();
    let uploaded = json!({"status": {"phase": "Uploaded"}});
    snapshots.patch_status("orders-a-c1", &PatchParams::default(), &Patch::Merge(uploaded)).await.unwrap();

    let started = std::time::Instant::now();
    let analyzed = eventually("Analyzed", Duration::from_secs(150), || async {
        let s = snapshots.get("orders-a-c1").await.map_err(|e| e.to_string())?;
        let st = s.status.clone().unwrap_or_default();
        match st.phase {
            SnapshotPhase::Analyzed => Ok(st),
            SnapshotPhase::Failed => panic!("analysis failed: {:?}\n{}", st.message, cp.log("nodeagent")),
            p => Err(format!("{p:?}")),
        }
    })
    .await;
    eprintln!("Uploaded → Analyzed in {:?}", started.elapsed());
    let findings = analyzed.findings.unwrap();
    assert_eq!(findings.deadlocks, 1, "{findings:?}");
    let cycle: BTreeSet<u64> = findings.deadlock_cycles[0].threads.iter().map(|t| t.os_tid).collect();
    assert_eq!(cycle, owners, "the threads that really deadlock");
    assert_eq!(findings.deadlock_cycles[0].victims, 2);

    let note = eventually("DeadlockDetected on the pod", Duration::from_secs(30), || async {
        let events = Api::<Event>::namespaced(client.clone(), "default").list(&ListParams::default()).await.unwrap();
        events
            .items
            .into_iter()
            .find(|e| {
                e.reason.as_deref() == Some("DeadlockDetected")
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("orders-a")
            })
            .and_then(|e| e.note)
            .ok_or_else(|| "none".to_string())
    })
    .await;
    eprintln!("event: {note}");
    assert!(
        note.contains("deadlock on two System.Object locks") && note.contains("2 threads wait behind them"),
        "{note}"
    );
    for tid in &owners {
        assert!(note.contains(&tid.to_string()), "{note} names OS thread {tid}");
    }
    assert!(ctx.metrics.encode().contains("dumpwatch_operator_findings_total{kind=\"deadlock\"} 1"));

    stop_controllers.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(20), controllers).await.expect("controllers stop").unwrap();
    stop(cp).await;
}
