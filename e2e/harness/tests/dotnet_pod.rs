//! The point of the node agent: a pod shaped like a dumpwatch deployment really runs. A .NET 8
//! app container and a sidecar share the pod's PID namespace and the runtime's temp directory
//! (an emptyDir, the app's `TMPDIR`); the sidecar runs the real `dumpwatch` CLI, which finds the
//! app through the pod's own `/proc`.
//!
//! The emptyDir is not mounted over `/tmp`: in a mount namespace that shares the host's root,
//! that would hide the checkout when it lives under `/tmp` (as in CI), and with it the runtime.

use std::path::PathBuf;
use std::time::Duration;

use harness::{ControlPlane, Options, wait_for};
use testbed::{Runtime, workload_dll};

/// The workspace's `dumpwatch` binary, next to this test's directory (`target/<profile>/`).
fn dumpwatch_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().and_then(|deps| deps.parent()).unwrap().join("dumpwatch");
    assert!(bin.exists(), "{} missing: build the CLI (cargo build -p dumpwatch) or run scripts/test", bin.display());
    bin
}

#[test]
fn a_sidecar_finds_the_dotnet_app_in_its_pod() {
    testbed::require_setup();
    let dir = tempfile::tempdir().unwrap();
    // "Images": the .NET 8 Idle workload and the dumpwatch CLI.
    let app = dir.path().join("idle");
    std::fs::write(
        &app,
        format!("#!/bin/sh\nexec '{}' '{}' \"$@\"\n", Runtime::Net8.host().display(), workload_dll("Idle").display()),
    )
    .unwrap();
    std::fs::set_permissions(&app, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let opts = Options {
        images: vec![("dumpwatch-e2e/idle".into(), app), ("dumpwatch".into(), dumpwatch_bin())],
        ..Options::default()
    };
    let cp = ControlPlane::start_with(opts).expect("control plane starts");

    let sidecar = "for i in $(seq 150); do out=$(\"$0\" ps --json) && case \"$out\" in *Idle*) echo \"$out\"; exit 0;; esac; \
                   sleep 0.2; done; echo \"$out\"; exit 1";
    cp.apply(&format!(
        r#"{{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "app", "namespace": "default"}},
  "spec": {{"restartPolicy": "Never", "shareProcessNamespace": true,
    "volumes": [{{"name": "tmp", "emptyDir": {{}}}}],
    "containers": [
      {{"name": "app", "image": "dumpwatch-e2e/idle",
        "env": [{{"name": "DOTNET_SYSTEM_GLOBALIZATION_INVARIANT", "value": "1"}}, {{"name": "TMPDIR", "value": "/run/dumpwatch-e2e-tmp"}}],
        "volumeMounts": [{{"name": "tmp", "mountPath": "/run/dumpwatch-e2e-tmp"}}]}},
      {{"name": "dumpwatch", "image": "dumpwatch", "command": ["/bin/sh", "-c", {sidecar}, "{bin}"],
        "volumeMounts": [{{"name": "tmp", "mountPath": "/run/dumpwatch-e2e-tmp"}}]}}]}}}}"#,
        sidecar = serde_json::Value::from(sidecar),
        bin = dumpwatch_bin().display(),
    ))
    .unwrap();

    let log_of = |container: &str| -> String {
        let Ok(pods) = std::fs::read_dir(cp.dir().join("node/pods")) else { return String::new() };
        let path = pods.flatten().map(|e| e.path().join(format!("logs/{container}.log"))).find(|p| p.exists());
        path.and_then(|p| std::fs::read_to_string(p).ok()).unwrap_or_default()
    };
    let code = wait_for("the sidecar to finish", Duration::from_secs(90), || {
        let p = cp.kubectl_json(&["get", "pod", "app", "-n", "default"])?;
        let side = p["status"]["containerStatuses"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["name"] == "dumpwatch").cloned());
        Ok(side.and_then(|s| s["state"]["terminated"]["exitCode"].as_i64()))
    })
    .unwrap_or_else(|e| panic!("{e}\nnodeagent:\n{}", cp.log("nodeagent")));
    let log = log_of("dumpwatch");
    assert_eq!(code, 0, "sidecar log:\n{log}\napp log:\n{}", log_of("app"));
    let found: serde_json::Value = serde_json::from_str(log.trim()).unwrap_or_else(|e| panic!("{e}: {log}"));
    let text = found.to_string();
    assert!(text.contains("Idle"), "{text}");
    // The app is still running; deleting the pod stops it.
    let p = cp.kubectl_json(&["get", "pod", "app", "-n", "default"]).unwrap();
    assert!(
        p["status"]["containerStatuses"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == "app" && c["state"]["running"].is_object())
    );
    cp.kubectl(&["delete", "pod", "app", "-n", "default", "--timeout=30s"]).expect("pod deleted");
}
