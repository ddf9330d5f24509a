//! `dumpwatch analyze` exactly as the analysis Job runs it (the controller's arguments:
//! `--artifacts` with presigned GETs, `--report-to`, `--snapshot`, `--token-file`, the CA as PEM
//! in DUMPWATCH_OPERATOR_CA) against the operator's real API (in process, HTTPS), a real
//! kube-apiserver (TokenReview of a token bound to the Job's pod; the DumpSnapshot) and moto,
//! on a real .NET 8 dump: the snapshot ends `Analyzed` with the right deadlocked threads. A pod
//! that is not the snapshot's Job is refused (HTTP 403) and the CLI says so.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use harness::{ControlPlane, Options, S3Server};
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};
use serde_json::{Value, json};
use testbed::{Runtime, Workload};

fn start_apiserver() -> ControlPlane {
    ControlPlane::start_with(Options { controller_manager: false, node_agent: false, ..Options::default() })
        .expect("control plane starts")
}

/// The operator's API on `https://127.0.0.1:<port>` (serving cert of the control plane's CA).
fn serve_api(cp: &ControlPlane) -> String {
    let (cert, key) = cp.serving_cert("dumpwatch-operator").unwrap();
    operator::testing::serve_sidecar_api(cp.kubeconfig(), &cert, &key, None)
}

fn dumpwatch(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_dumpwatch")).args(args).envs(env.iter().copied()).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn truth(list: &Value) -> BTreeSet<u64> {
    list.as_array().unwrap().iter().map(|t| t["os_tid"].as_u64().unwrap()).collect()
}

#[test]
fn the_analysis_job_reports_findings_to_the_real_operator_api() {
    // A real deadlocked .NET 8 process, dumped with its DAC.
    let work = tempfile::tempdir().unwrap();
    let w = Workload::start(Runtime::Net8, "DiagScenarios", &[]);
    let dl = w.get("/deadlock?waiters=2");
    let core = work.path().join("core");
    let mut attempt = 0;
    loop {
        let (ok, _, err) =
            dumpwatch(&["dump", &w.pid.to_string(), "-o", core.to_str().unwrap(), "--type", "heap"], &[]);
        if ok {
            break;
        }
        attempt += 1;
        assert!(attempt < 3 && err.contains("ptrace"), "dump failed: {err}");
    }
    drop(w);

    let cp = start_apiserver();
    let s3 = S3Server::start("dumps").unwrap();
    cp.install_dumpwatch_crds().unwrap();

    // Stored as the sidecar stores it: zstd, checksum of the stored bytes.
    let bucket = Bucket::new(s3.endpoint().parse().unwrap(), UrlStyle::Path, "dumps", "us-east-1").unwrap();
    let creds = Credentials::new(S3Server::ACCESS_KEY, S3Server::SECRET_KEY);
    let hour = Duration::from_secs(3600);
    let (mut spec_artifacts, mut job_artifacts) = (Vec::new(), Vec::new());
    for (file, name) in
        [(core.clone(), "core.42.zst"), (work.path().join("libmscordaccore.so"), "libmscordaccore.so.zst")]
    {
        let (stored, c) = store::compress_and_hash(std::fs::File::open(&file).unwrap(), Vec::new()).unwrap();
        let key = format!("dw/shop/orders-1/c1/{name}");
        let tmp = work.path().join(name);
        std::fs::write(&tmp, &stored).unwrap();
        let put = bucket.put_object(Some(&creds), &key).sign(hour).to_string();
        let ok = Command::new("curl")
            .args(["-sf", "-X", "PUT", "-H", "Content-Type: application/octet-stream", "--data-binary"])
            .arg(format!("@{}", tmp.display()))
            .arg(&put)
            .status()
            .unwrap();
        assert!(ok.success());
        let sha = c.sha256;
        spec_artifacts
            .push(json!({"kind": "dump", "uri": format!("s3://dumps/{key}"), "size": stored.len(), "sha256": sha}));
        let get = bucket.get_object(Some(&creds), &key).sign(hour).to_string();
        job_artifacts.push(json!({"kind": "dump", "uri": get, "size": stored.len(), "sha256": sha}));
    }

    // The snapshot waiting for its analysis, the Job's pod, and a pod that is not the Job's.
    let job = "dsnap-orders-1-c1-analyze";
    cp.apply(&format!(
        r#"
apiVersion: v1
kind: Namespace
metadata: {{name: dumpwatch}}
---
apiVersion: v1
kind: Namespace
metadata: {{name: shop}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {{name: analyzer, namespace: shop}}
---
apiVersion: dumpwatch.dev/v1alpha1
kind: DumpSnapshot
metadata: {{name: orders-1-c1, namespace: shop}}
spec: {{pod: orders-1, trigger: onDemand, artifacts: {artifacts}}}
"#,
        artifacts = serde_json::to_string(&spec_artifacts).unwrap(),
    ))
    .unwrap();
    // Findings are taken by UIDs: the Job must be the snapshot's (its controller), the pod the
    // Job's. The Job stays suspended (no pods of its own); its pod is made here, as the Job
    // controller would.
    let uid = |kind: &str, name: &str| {
        let v = cp.kubectl_json(&["-n", "shop", "get", kind, name]).unwrap();
        v["metadata"]["uid"].as_str().unwrap().to_string()
    };
    let snapshot_uid = uid("dsnap", "orders-1-c1");
    cp.apply(&format!(
        r#"
apiVersion: batch/v1
kind: Job
metadata:
  name: {job}
  namespace: shop
  ownerReferences:
  - {{apiVersion: dumpwatch.dev/v1alpha1, kind: DumpSnapshot, name: orders-1-c1, uid: {snapshot_uid}, controller: true}}
spec:
  suspend: true
  template:
    spec:
      restartPolicy: Never
      containers: [{{name: analyze, image: dumpwatch:1}}]
"#
    ))
    .unwrap();
    let job_uid = uid("job", job);
    cp.apply(&format!(
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: {job}-x7k2p
  namespace: shop
  labels: {{job-name: {job}, batch.kubernetes.io/job-name: {job}}}
  ownerReferences:
  - {{apiVersion: batch/v1, kind: Job, name: {job}, uid: {job_uid}, controller: true}}
spec:
  serviceAccountName: analyzer
  containers: [{{name: analyze, image: dumpwatch:1}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: intruder, namespace: shop}}
spec:
  serviceAccountName: analyzer
  containers: [{{name: analyze, image: dumpwatch:1}}]
"#
    ))
    .unwrap();
    let status = json!({"status": {"phase": "Uploaded"}}).to_string();
    cp.kubectl(&["-n", "shop", "patch", "dsnap", "orders-1-c1", "--subresource=status", "--type=merge", "-p", &status])
        .unwrap();
    let token = |pod: &str| {
        let args = ["-n", "shop", "create", "token", "analyzer", "--audience", "dumpwatch.dev/analyzer"];
        let bound = ["--bound-object-kind", "Pod", "--bound-object-name", pod, "--duration", "1h"];
        let t = cp.kubectl(&[&args[..], &bound[..]].concat()).unwrap();
        let path = work.path().join(format!("token-{pod}"));
        std::fs::write(&path, t.trim()).unwrap();
        path
    };
    let url = serve_api(&cp);
    let ca = std::fs::read_to_string(cp.ca_cert()).unwrap();
    let list = serde_json::to_string(&job_artifacts).unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let env = [("DUMPWATCH_OPERATOR_CA", ca.as_str()), ("TMPDIR", scratch.path().to_str().unwrap())];

    // Not the Job's pod: the operator refuses, the CLI says so and fails.
    let intruder = token("intruder");
    let args =
        ["analyze", "--artifacts", &list, "--json", "--report-to", &url, "--snapshot", "orders-1-c1", "--token-file"];
    let (ok, _, err) = dumpwatch(&[&args[..], &[intruder.to_str().unwrap()]].concat(), &env);
    assert!(!ok);
    assert!(err.contains("HTTP 403") && err.contains("not a pod of"), "{err}");

    // The Job's own pod: findings accepted, the snapshot Analyzed with the right threads.
    let own = token(&format!("{job}-x7k2p"));
    let (ok, out, err) = dumpwatch(&[&args[..], &[own.to_str().unwrap()]].concat(), &env);
    assert!(ok, "{err}");
    assert!(err.contains("findings sent to"), "{err}");
    let f: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(f["summary"]["deadlocks"], 1);
    let snap = cp.kubectl_json(&["-n", "shop", "get", "dsnap", "orders-1-c1"]).unwrap();
    assert_eq!(snap["status"]["phase"], "Analyzed", "{}", snap["status"]);
    let cycle = &snap["status"]["findings"]["deadlockCycles"][0]["threads"];
    let got: BTreeSet<u64> = cycle.as_array().unwrap().iter().map(|t| t["osTid"].as_u64().unwrap()).collect();
    assert_eq!(got, truth(&dl["owners"]), "the snapshot names the deadlocked threads: {}", snap["status"]);
    assert!(std::fs::read_dir(scratch.path()).unwrap().next().is_none(), "nothing left in the scratch dir");
}
