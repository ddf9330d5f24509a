//! The real `dumpwatch-operator` binary, configured exactly as the chart's Deployment configures
//! it (its rendered environment) and authenticated as the chart's ServiceAccount (a token from
//! TokenRequest, so only the chart's RBAC applies), on the real kube-apiserver: it wins its
//! Lease, reconciles a DumpPolicy's status, and is never refused by the API server.
//!
//! The binary is the workspace's `target/<profile>/dumpwatch-operator`, which
//! `cargo test --workspace` (scripts/test) builds; alone, run `cargo build -p operator` first.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use chart_tests::{NAMESPACE, OPERATOR, SERVICE_ACCOUNT, Value, chart_dir, find, render, render_text};
use harness::{ControlPlane, Options, free_port, wait_for, workspace_bin};

fn metrics(port: u16) -> Result<String, String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5))).map_err(|e| e.to_string())?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").map_err(|e| e.to_string())?;
    let mut body = String::new();
    s.read_to_string(&mut body).map_err(|e| e.to_string())?;
    Ok(body)
}

#[test]
fn the_operator_runs_with_the_charts_environment_and_rbac_only() {
    let bin = workspace_bin("dumpwatch-operator");
    let opts = || Options { controller_manager: false, node_agent: false, ..Options::default() };
    let cp = ControlPlane::start_with(opts()).unwrap();
    for f in ["crds/dumppolicy.yaml", "crds/dumpsnapshot.yaml", "crds/dumpstore.yaml"] {
        cp.kubectl(&["apply", "--server-side", "-f", &chart_dir().join(f).display().to_string()]).unwrap();
    }
    cp.kubectl(&["wait", "--for=condition=Established", "crd", "--all", "--timeout=60s"]).unwrap();
    cp.kubectl(&["create", "namespace", NAMESPACE]).unwrap();
    cp.kubectl(&["create", "namespace", "shop"]).unwrap();
    cp.apply(&render_text(&[], &[]).unwrap()).unwrap();
    // Analysis Jobs and the cleanup Jobs of snapshots on a claim: created, read and deleted in
    // the snapshot's namespace.
    let sa = format!("system:serviceaccount:{NAMESPACE}:{SERVICE_ACCOUNT}");
    for verb in ["create", "get", "delete"] {
        let answer = cp.kubectl(&["auth", "can-i", verb, "jobs.batch", "-n", "shop", "--as", &sa]);
        let answer = answer.map(|a| a.trim().to_string()).unwrap_or_else(|e| e.to_string());
        assert_eq!(answer, "yes", "{verb} jobs in shop");
    }

    // A kubeconfig holding only the chart's ServiceAccount's token.
    let token = cp.kubectl(&["create", "token", SERVICE_ACCOUNT, "-n", NAMESPACE, "--duration=1h"]).unwrap();
    let kubeconfig = cp.dir().join("operator-sa.kubeconfig");
    let config = serde_json::json!({
        "apiVersion": "v1", "kind": "Config", "current-context": "sa",
        "clusters": [{"name": "c", "cluster": {"server": cp.server(), "certificate-authority": cp.ca_cert()}}],
        "users": [{"name": "sa", "user": {"token": token.trim()}}],
        "contexts": [{"name": "sa", "context": {"cluster": "c", "user": "sa", "namespace": NAMESPACE}}],
    });
    std::fs::write(&kubeconfig, serde_json::to_vec(&config).unwrap()).unwrap();

    // The Deployment's environment, with the downward API filled in as the kubelet would.
    let objs = render(&[]).unwrap();
    let deploy = find(&objs, "Deployment", OPERATOR).unwrap();
    let pod_name = "dumpwatch-operator-5d8f9c-qz7xk";
    let port = free_port();
    let mut cmd = Command::new(&bin);
    cmd.env_clear().env("KUBECONFIG", &kubeconfig);
    for e in deploy["spec"]["template"]["spec"]["containers"][0]["env"].as_array().unwrap() {
        let name = e["name"].as_str().unwrap();
        let value = match (&e["value"], e["valueFrom"]["fieldRef"]["fieldPath"].as_str()) {
            (Value::String(v), _) => v.clone(),
            (_, Some("metadata.name")) => pod_name.to_string(),
            (_, Some("metadata.namespace")) => NAMESPACE.to_string(),
            other => panic!("{name}: {other:?}"),
        };
        cmd.env(name, value);
    }
    // Only the listen address changes: loopback and a free port instead of 0.0.0.0:9090.
    cmd.env("DUMPWATCH_METRICS_ADDR", format!("127.0.0.1:{port}"));
    let log_path = cp.dir().join("operator.log");
    let mut child = cmd.stdout(Stdio::null()).stderr(std::fs::File::create(&log_path).unwrap()).spawn().unwrap();
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();

    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // It leads (Lease create/get/update as the chart's Role allows) ...
        wait_for("the operator leads", Duration::from_secs(60), || {
            Ok(metrics(port).ok().filter(|m| m.contains("dumpwatch_operator_leader 1")).map(|_| ()))
        })
        .unwrap_or_else(|e| panic!("{e}\n{}", log()));
        let lease = cp.kubectl_json(&["get", "lease", "dumpwatch-operator-leader", "-n", NAMESPACE]).unwrap();
        assert_eq!(lease["spec"]["holderIdentity"], pod_name);

        // ... and reconciles a policy in another namespace (pods and snapshots listed, status patched).
        cp.apply(
            "apiVersion: dumpwatch.dev/v1alpha1\nkind: DumpPolicy\nmetadata: {name: orders, namespace: shop}\n\
             spec: {selector: {matchLabels: {app: orders}}}\n",
        )
        .unwrap();
        wait_for("policy status written", Duration::from_secs(60), || {
            let p = cp.kubectl_json(&["get", "dumppolicy", "orders", "-n", "shop"])?;
            Ok(p["status"]["observedGeneration"].as_i64().map(|_| ()))
        })
        .unwrap_or_else(|e| panic!("{e}\n{}", log()));

        // ... and reads a DumpStore and the labels of the policy's namespace (allowedNamespaces):
        // a store not allowed for `shop` leaves the policy not Ready, saying so.
        cp.apply(
            "apiVersion: dumpwatch.dev/v1alpha1\nkind: DumpStore\nmetadata: {name: team-a}\n\
             spec:\n  s3: {endpoint: 'https://s3.example', bucket: dumps, secretRef: s3}\n  \
             allowedNamespaces: {matchLabels: {team: a}}\n---\n\
             apiVersion: dumpwatch.dev/v1alpha1\nkind: DumpPolicy\nmetadata: {name: stored, namespace: shop}\n\
             spec: {selector: {matchLabels: {app: stored}}, storage: {s3: {storeRef: team-a}}}\n",
        )
        .unwrap();
        wait_for("the store's refusal in the policy status", Duration::from_secs(60), || {
            let p = cp.kubectl_json(&["get", "dumppolicy", "stored", "-n", "shop"])?;
            let ready = p["status"]["conditions"].as_array().into_iter().flatten().find(|c| c["type"] == "Ready");
            Ok(ready
                .filter(|c| {
                    c["status"] == "False"
                        && c["message"].as_str().unwrap_or("").contains("does not allow namespace shop")
                })
                .map(|_| ()))
        })
        .unwrap_or_else(|e| panic!("{e}\n{}", log()));

        // Nothing it tried was refused.
        let text = log();
        assert!(!text.contains("forbidden") && !text.contains("Forbidden"), "{text}");
    }));
    child.kill().ok();
    child.wait().ok();
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}
