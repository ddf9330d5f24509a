//! The sidecar binary against the operator's real sidecar API (operator::sidecar_api's router,
//! in process, over HTTPS with a CA the sidecar is given as PEM text), a real kube-apiserver
//! (TokenReview of a token bound to a real Pod object, DumpPolicy and DumpSnapshot objects) and
//! real S3 (moto), watching a real .NET 8 workload: a `kubectl`-created DumpSnapshot request is
//! captured, uploaded and filled in; a deadlock becomes a snapshot with its live findings.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use harness::{ControlPlane, Options, S3Server};
use serde_json::Value;
use testbed::{Isolation, Runtime, Workload};

struct Sidecar {
    child: Child,
    log: PathBuf,
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            eprintln!("--- sidecar log (last 40 lines) ---");
            for l in log.lines().rev().take(40).collect::<Vec<_>>().iter().rev() {
                eprintln!("{l}");
            }
        }
    }
}

fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn start_apiserver() -> ControlPlane {
    ControlPlane::start_with(Options { controller_manager: false, node_agent: false, ..Options::default() })
        .expect("control plane starts")
}

/// The operator's API on `https://127.0.0.1:<port>`, with a serving certificate of the
/// control plane's CA; 5 MiB parts (S3's minimum), so that multipart uploads are exercised.
fn serve_api(cp: &ControlPlane) -> String {
    let (cert, key) = cp.serving_cert("dumpwatch-operator").unwrap();
    operator::testing::serve_sidecar_api(cp.kubeconfig(), &cert, &key, Some(5 << 20))
}

/// The stored bytes checked against their SHA-256 and decompressed, by the artifact codec.
fn unpack(stored: &[u8], sha256: &str) -> Vec<u8> {
    let mut plain = Vec::new();
    store::verify_and_decompress(stored, sha256, &mut plain).expect("the stored bytes have the reported SHA-256");
    plain
}

fn snapshots(cp: &ControlPlane) -> Vec<Value> {
    cp.kubectl_json(&["-n", "shop", "get", "dsnap"]).unwrap()["items"].as_array().cloned().unwrap_or_default()
}

/// What a test runs against: the control plane with the CRDs, namespace `shop`, policy `orders`
/// (its triggers and capture from `policy`), pod `orders-1`, S3, the operator's API, and the
/// sidecar binary ready with the operator's policy, selecting processes by `marker` (one per
/// test: the tests of this file run at once).
struct Env {
    cp: ControlPlane,
    s3: S3Server,
    port: u16,
    store: PathBuf,
    marker: String,
    _sc: Sidecar,
    _dir: tempfile::TempDir,
}

impl Env {
    fn start(name: &str, policy: &str) -> Env {
        let cp = start_apiserver();
        let s3 = S3Server::start("dumps").unwrap();
        cp.install_dumpwatch_crds().unwrap();
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
kind: Secret
metadata: {{name: s3-creds, namespace: dumpwatch}}
stringData: {{accessKeyId: {ak}, secretAccessKey: {sk}}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {{name: app, namespace: shop}}
---
apiVersion: dumpwatch.dev/v1alpha1
kind: DumpStore
metadata: {{name: dumps}}
spec: {{s3: {{endpoint: "{endpoint}", region: us-east-1, bucket: dumps, prefix: dw, secretRef: s3-creds, insecure: true}}}}
---
apiVersion: dumpwatch.dev/v1alpha1
kind: DumpPolicy
metadata: {{name: orders, namespace: shop}}
spec:
  selector: {{matchLabels: {{app: orders}}}}
  mode: connect
{policy}
  limits: {{maxPerHour: 20, cooldown: 1s, maxBytes: 4Gi, minFreeDisk: 64Mi}}
  storage: {{s3: {{storeRef: dumps}}}}
---
apiVersion: v1
kind: Pod
metadata:
  name: orders-1
  namespace: shop
  annotations: {{dumpwatch.dev/injected: orders}}
spec:
  serviceAccountName: app
  containers: [{{name: app, image: app:1}}]
"#,
            ak = S3Server::ACCESS_KEY,
            sk = S3Server::SECRET_KEY,
            endpoint = s3.endpoint(),
            policy = policy.trim_end(),
        ))
        .unwrap();
        let url = serve_api(&cp);

        let dir = tempfile::Builder::new().prefix("sidecar-e2e-").tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        let token_file = dir.path().join("token");
        // What the kubelet projects for the sidecar: a token bound to the pod, sidecar audience.
        let token = {
            let bound = ["--bound-object-kind", "Pod", "--bound-object-name", "orders-1", "--duration", "1h"];
            let args = ["-n", "shop", "create", "token", "app", "--audience", "dumpwatch.dev/sidecar"];
            cp.kubectl(&[&args[..], &bound[..]].concat()).unwrap()
        };
        std::fs::write(&token_file, token.trim()).unwrap();
        let ca_pem = std::fs::read_to_string(cp.ca_cert()).unwrap();
        let store = dir.path().join("store");
        let marker = format!("DUMPWATCH_TEST=e2e-{name}-{}", std::process::id());
        let port = harness::free_port();
        let log = dir.path().join("sidecar.log");
        let child = Command::new(env!("CARGO_BIN_EXE_dumpwatch-sidecar"))
            .args(["--storage", store.to_str().unwrap(), "--http", &format!("127.0.0.1:{port}")])
            .args(["--select-env", &marker, "--scan-interval-ms", "200", "--container", "app"])
            .env("DUMPWATCH_OPERATOR_URL", &url)
            .env("DUMPWATCH_OPERATOR_CA", &ca_pem)
            .env("DUMPWATCH_TOKEN_FILE", &token_file)
            .env("DUMPWATCH_POLICY", "orders")
            .env("POD_NAME", "orders-1")
            .env("POD_NAMESPACE", "shop")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        wait_for("the sidecar ready with the operator's policy", Duration::from_secs(60), || {
            testbed::http_get(port, "/readyz", Duration::from_secs(5)).ok().filter(|(s, _)| *s == 200)
        });
        assert!(std::fs::read_to_string(&log).unwrap().contains("policy from the operator"));
        Env { cp, s3, port, store, marker, _sc: Sidecar { child, log }, _dir: dir }
    }

    fn workload(&self, runtime: Runtime, name: &str) -> Workload {
        let (k, v) = self.marker.split_once('=').unwrap();
        Workload::start_with(runtime, name, &[], &Isolation { own_namespaces: false, env: vec![(k.into(), v.into())] })
    }

    fn metrics(&self) -> String {
        testbed::http_get(self.port, "/metrics", Duration::from_secs(5)).map(|r| r.1).unwrap_or_default()
    }
}

#[test]
fn the_sidecar_works_with_the_real_operator_api() {
    let env = Env::start(
        "contract",
        "  triggers: [{type: deadlock, capture: [stacks]}, {type: onDemand}]\n  capture: {kinds: [dump, stacks], dumpType: heap}\n",
    );
    let (cp, s3, port, store) = (&env.cp, &env.s3, env.port, &env.store);
    let w = env.workload(Runtime::Net8, "DiagScenarios");

    wait_for("the workload watched", Duration::from_secs(60), || {
        let m = env.metrics();
        // Published once its session runs, right before the watcher listens for requests.
        let pid = format!("pid=\"{}\"", w.pid);
        m.lines().any(|l| l.starts_with("dumpwatch_deadlocked_threads{") && l.contains(&pid)).then_some(())
    });

    // An on-demand request, as a user makes it: a DumpSnapshot with no artifacts.
    cp.apply(&format!(
        "apiVersion: dumpwatch.dev/v1alpha1\nkind: DumpSnapshot\nmetadata: {{name: ask-1, namespace: shop}}\n\
         spec: {{pod: orders-1, trigger: onDemand, pid: {}}}\n",
        w.pid
    ))
    .unwrap();
    // The spec (artifacts) and the status (phase) are two writes of the API: wait for both.
    let snap = wait_for("the request filled in", Duration::from_secs(240), || {
        let s = cp.kubectl_json(&["-n", "shop", "get", "dsnap", "ask-1"]).ok()?;
        let settled = s["status"]["phase"].as_str().is_some_and(|p| p != "Capturing" && p != "Requested");
        (!s["spec"]["artifacts"].as_array()?.is_empty() && settled).then_some(s)
    });
    let phase = snap["status"]["phase"].as_str().unwrap();
    assert!(["Uploaded", "Analyzed"].contains(&phase), "{phase}");
    assert_eq!(snap["spec"]["pid"], w.pid);
    let s3store = store::Store::S3(Box::new(
        store::S3Store::new(
            store::S3Config {
                endpoint: s3.endpoint(),
                region: S3Server::REGION.into(),
                bucket: "dumps".into(),
                prefix: "dw".into(),
                path_style: true,
            },
            store::Credentials {
                access_key_id: S3Server::ACCESS_KEY.into(),
                secret_access_key: S3Server::SECRET_KEY.into(),
                session_token: None,
            },
        )
        .unwrap(),
    ));
    let artifacts = snap["spec"]["artifacts"].as_array().unwrap();
    let core = artifacts
        .iter()
        .find(|a| a["uri"].as_str().unwrap().ends_with(&format!("/core.{}.zst", w.pid)))
        .unwrap_or_else(|| panic!("a core dump among {artifacts:?}"));
    let uri = core["uri"].as_str().unwrap();
    assert!(uri.starts_with("s3://dumps/dw/shop/orders-1/"), "the key names namespace and pod: {uri}");
    let get = s3store.presign_get(uri, Duration::from_secs(600)).unwrap();
    let stored = Command::new("curl").args(["-sf", &get]).output().unwrap().stdout;
    assert_eq!(stored.len() as u64, core["size"].as_u64().unwrap());
    let plain = unpack(&stored, core["sha256"].as_str().unwrap());
    assert_eq!(&plain[..4], b"\x7fELF");
    assert!(artifacts.iter().any(|a| a["uri"].as_str().unwrap().contains("/libmscordaccore")), "the DAC is stored");
    wait_for("the local copy removed", Duration::from_secs(20), || {
        let left = std::fs::read_dir(store).unwrap().flatten().any(|e| e.path().join("manifest.json").exists());
        (!left).then_some(())
    });

    // A deadlock: a snapshot of its own, with the live findings in its status.
    let dl = w.get("/deadlock?waiters=1");
    let mut owners: Vec<u64> = dl["owners"].as_array().unwrap().iter().map(|o| o["os_tid"].as_u64().unwrap()).collect();
    owners.sort();
    let found = wait_for("a deadlock snapshot", Duration::from_secs(120), || {
        snapshots(cp).into_iter().find(|s| s["spec"]["trigger"] == "deadlock" && s["status"]["findings"].is_object())
    });
    assert_eq!(found["status"]["phase"], "Analyzed", "stacks only: nothing for a Job to analyze");
    let f = &found["status"]["findings"];
    assert_eq!(f["deadlocks"], 1, "{f}");
    let text = f.to_string();
    for tid in owners {
        assert!(text.contains(&tid.to_string()), "thread {tid} named in {f}");
    }
    let ok = testbed::http_get(port, "/metrics", Duration::from_secs(5)).unwrap().1;
    assert!(ok.contains("dumpwatch_uploads_total{result=\"success\"} 2"), "{ok}");
}

/// Periodic heap snapshots through the operator's contract: a growth verdict is a capture report
/// with no files and a findings document, which the real API turns into an `Analyzed` snapshot
/// with trigger `heapGrowth` whose leak suspect carries the growth rate and the holder; the
/// controller's Events for that snapshot (computed here from the stored object, as the snapshot
/// reconciler does) are one `MemoryLeakSuspected` with that sentence.
#[test]
fn a_growth_verdict_becomes_an_analyzed_snapshot_and_a_memory_leak_event() {
    let env = Env::start("growth", "  triggers: [{type: onDemand}]\n  heapSnapshots: {every: 2s, keep: 6}\n");
    let w = env.workload(Runtime::Net8, "LeakPatterns");
    let pid = format!("pid=\"{}\"", w.pid);
    assert_eq!(w.get("/lru?ops=30000&keys=20000")["entries"], 5000);
    let taken = |env: &Env| {
        env.metrics()
            .lines()
            .find(|l| l.starts_with("dumpwatch_heap_snapshots_total{") && l.contains(&pid) && l.contains("success"))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // Orders opened after each snapshot, never closed; the cache busy but full.
    let mut seen = 0.0;
    let found = wait_for("a heapGrowth snapshot", Duration::from_secs(120), || {
        let n = taken(&env);
        if n > seen {
            seen = n;
            w.get("/orders?count=3000");
            w.get("/lru?ops=10000&keys=20000");
        }
        snapshots(&env.cp)
            .into_iter()
            .find(|s| s["spec"]["trigger"] == "heapGrowth" && s["status"]["findings"].is_object())
    });
    assert_eq!(found["status"]["phase"], "Analyzed", "nothing for a Job to analyze");
    assert!(found["spec"]["artifacts"].as_array().is_none_or(Vec::is_empty), "a finding alone: {found}");
    assert_eq!(found["spec"]["pid"], w.pid);
    let f = &found["status"]["findings"];
    let suspects = f["suspects"].as_array().unwrap();
    assert_eq!(suspects.len(), 1, "the orders only, not the cache: {f}");
    assert_eq!(suspects[0]["typeName"], "LeakPatterns.Order", "{f}");
    let reason = suspects[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("per hour") && reason.contains("held by ") && reason.contains("LeakPatterns.Order"),
        "{reason}"
    );

    let snapshot: api::DumpSnapshot = serde_json::from_value(found.clone()).unwrap();
    let events = operator::controller::outcome_events(&snapshot);
    let reasons: Vec<&str> = events.iter().map(|e| e.reason).collect();
    assert_eq!(reasons, ["MemoryLeakSuspected"]);
    assert!(events[0].note.starts_with(reason), "the Event says the verdict: {}", events[0].note);
}
