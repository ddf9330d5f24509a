//! The real control plane end to end: a CRD with a ValidatingAdmissionPolicy, Jobs whose pods
//! run as real processes through the node agent, garbage collection through ownerReferences,
//! pod namespaces and volumes, and a teardown that leaves nothing running.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use harness::{ControlPlane, Options, wait_for};

const CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.e2e.dumpwatch.io}
spec:
  group: e2e.dumpwatch.io
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            required: [size]
            properties:
              size: {type: integer, minimum: 0}
"#;

const VAP: &str = r#"
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {name: widget-size}
spec:
  failurePolicy: Fail
  matchConstraints:
    resourceRules:
    - apiGroups: [e2e.dumpwatch.io]
      apiVersions: [v1]
      operations: [CREATE, UPDATE]
      resources: [widgets]
  validations:
  - expression: "object.spec.size <= 10"
    message: "widgets are at most 10 big"
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {name: widget-size}
spec:
  policyName: widget-size
  validationActions: [Deny]
"#;

fn start() -> ControlPlane {
    let opts = Options { images: vec![("e2e/shell".into(), PathBuf::from("/bin/sh"))], ..Options::default() };
    let t = Instant::now();
    let cp = ControlPlane::start_with(opts).expect("control plane starts");
    eprintln!("control plane (etcd, apiserver, controller-manager, node agent) ready in {:?}", t.elapsed());
    cp
}

fn job(name: &str, owner: Option<(&str, &str)>, script: &str) -> String {
    let owner = owner
        .map(|(name, uid)| {
            format!(r#""ownerReferences": [{{"apiVersion": "e2e.dumpwatch.io/v1", "kind": "Widget", "name": "{name}", "uid": "{uid}"}}],"#)
        })
        .unwrap_or_default();
    format!(
        r#"{{"apiVersion": "batch/v1", "kind": "Job",
  "metadata": {{"name": "{name}", "namespace": "default", {owner} "labels": {{"test": "e2e"}}}},
  "spec": {{"backoffLimit": 0, "template": {{"spec": {{
    "restartPolicy": "Never",
    "volumes": [{{"name": "work", "emptyDir": {{}}}}],
    "containers": [{{"name": "main", "image": "e2e/shell",
      "args": ["-c", {script}],
      "env": [{{"name": "POD_NAME", "valueFrom": {{"fieldRef": {{"fieldPath": "metadata.name"}}}}}}, {{"name": "GREETING", "value": "hello"}}],
      "volumeMounts": [{{"name": "work", "mountPath": "/run/dumpwatch-e2e/work"}}]}}]}}}}}}}}"#,
        script = serde_json::Value::from(script)
    )
}

fn pods_of(cp: &ControlPlane, job: &str) -> Vec<serde_json::Value> {
    let list = cp.kubectl_json(&["get", "pods", "-n", "default", "-l", &format!("job-name={job}")]).expect("list pods");
    list["items"].as_array().cloned().unwrap_or_default()
}

#[test]
fn crd_policy_job_and_garbage_collection() {
    let cp = start();
    let pids = cp.pids();

    // kubectl works against it.
    let version = cp.kubectl(&["version", "-o", "json"]).expect("kubectl version");
    assert!(version.contains("v1.36.3"), "{version}");

    // A CRD and a ValidatingAdmissionPolicy.
    cp.apply(CRD).expect("apply CRD");
    cp.kubectl(&["wait", "--for=condition=Established", "crd/widgets.e2e.dumpwatch.io", "--timeout=30s"])
        .expect("CRD established");
    cp.apply(VAP).expect("apply VAP");
    let big = "{\"apiVersion\": \"e2e.dumpwatch.io/v1\", \"kind\": \"Widget\", \"metadata\": {\"name\": \"big\", \"namespace\": \"default\"}, \"spec\": {\"size\": 20}}";
    // The policy takes effect once the apiserver has loaded it.
    let denial = wait_for("the policy to deny a big widget", Duration::from_secs(30), || {
        match cp.kubectl_stdin(&["create", "-f", "-"], big) {
            Ok(_) => {
                cp.kubectl(&["delete", "widget", "big", "-n", "default", "--wait=false"])?;
                Ok(None)
            }
            Err(e) => Ok(Some(e.to_string())),
        }
    })
    .expect("denied");
    assert!(denial.contains("widgets are at most 10 big"), "{denial}");
    // Structural schema validation is there too.
    let invalid = cp.kubectl_stdin(&["create", "-f", "-"], &big.replace("20", "-1")).unwrap_err().to_string();
    assert!(invalid.contains("spec.size"), "{invalid}");
    cp.kubectl_stdin(
        &["create", "-f", "-"],
        "{\"apiVersion\": \"e2e.dumpwatch.io/v1\", \"kind\": \"Widget\", \"metadata\": {\"name\": \"owner\", \"namespace\": \"default\"}, \"spec\": {\"size\": 3}}",
    )
    .expect("a small widget is allowed");
    let owner = cp.kubectl_json(&["get", "widget", "owner", "-n", "default"]).unwrap();
    let uid = owner["metadata"]["uid"].as_str().unwrap().to_string();

    // Two Jobs run real processes: one succeeds (owned by the widget), one fails with exit code 3.
    let ok_script = "set -e; echo \"$GREETING from $(POD_NAME)\" > /run/dumpwatch-e2e/work/out; grep -q hello /run/dumpwatch-e2e/work/out; \
                     test \"$$$$\" = 1 || { echo not pid 1; exit 9; }; exit 0";
    cp.apply(&job("ok", Some(("owner", &uid)), ok_script)).expect("create ok job");
    cp.apply(&job("fails", None, "echo failing; exit 3")).expect("create failing job");
    cp.kubectl(&["wait", "--for=condition=Complete", "job/ok", "-n", "default", "--timeout=60s"])
        .unwrap_or_else(|e| panic!("job ok: {e}\nnodeagent log:\n{}", cp.log("nodeagent")));
    cp.kubectl(&["wait", "--for=condition=Failed", "job/fails", "-n", "default", "--timeout=60s"])
        .unwrap_or_else(|e| panic!("job fails: {e}\nnodeagent log:\n{}", cp.log("nodeagent")));

    let ok_pods = pods_of(&cp, "ok");
    assert_eq!(ok_pods.len(), 1);
    assert_eq!(ok_pods[0]["status"]["phase"], "Succeeded");
    assert_eq!(ok_pods[0]["spec"]["nodeName"], harness::NODE_NAME);
    assert_eq!(ok_pods[0]["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"], 0);
    let failed = pods_of(&cp, "fails");
    assert_eq!(failed[0]["status"]["phase"], "Failed");
    assert_eq!(failed[0]["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"], 3);
    // The container wrote into its emptyDir (a host directory of the node agent), not into the
    // host's /run/dumpwatch-e2e/work, which it saw only in its own mount namespace.
    let pod_name = ok_pods[0]["metadata"]["name"].as_str().unwrap();
    let uid = ok_pods[0]["metadata"]["uid"].as_str().unwrap();
    let out = cp.dir().join(format!("node/pods/default_{pod_name}_{uid}/volumes/work/out"));
    assert_eq!(std::fs::read_to_string(&out).unwrap(), format!("hello from {pod_name}\n"));
    assert!(!std::path::Path::new("/run/dumpwatch-e2e/work/out").exists());
    let job_ok = cp.kubectl_json(&["get", "job", "ok", "-n", "default"]).unwrap();
    assert_eq!(job_ok["status"]["succeeded"], 1);

    // Deleting the owner garbage-collects the Job, and the Job's pods with it.
    cp.kubectl(&["delete", "widget", "owner", "-n", "default"]).expect("delete owner");
    wait_for("the garbage collector to delete job ok and its pod", Duration::from_secs(60), || {
        let jobs = cp.kubectl(&["get", "jobs", "-n", "default", "-o", "name"])?;
        Ok((!jobs.contains("job.batch/ok") && pods_of(&cp, "ok").is_empty()).then_some(()))
    })
    .unwrap_or_else(|e| panic!("{e}\ncontroller-manager log:\n{}", cp.log("kube-controller-manager")));
    assert!(cp.kubectl(&["get", "job", "fails", "-n", "default", "-o", "name"]).is_ok(), "an unowned Job stays");

    // Service-account tokens signed by the test key, authorized by RBAC.
    cp.kubectl(&["create", "serviceaccount", "reader", "-n", "default"]).unwrap();
    cp.kubectl(&["create", "role", "pod-reader", "--verb=get,list", "--resource=pods", "-n", "default"]).unwrap();
    cp.kubectl(&[
        "create",
        "rolebinding",
        "reader",
        "--role=pod-reader",
        "--serviceaccount=default:reader",
        "-n",
        "default",
    ])
    .unwrap();
    let token = cp.kubectl(&["create", "token", "reader", "-n", "default"]).unwrap();
    let as_reader = |verb: &str, resource: &str| {
        let out = std::process::Command::new(harness::kubectl_path())
            .args(["--kubeconfig=/dev/null", &format!("--server={}", cp.server())])
            .arg(format!("--certificate-authority={}", cp.ca_cert().display()))
            .arg(format!("--token={}", token.trim()))
            .args(["auth", "can-i", verb, resource, "-n", "default"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(as_reader("list", "pods"), "yes");
    assert_eq!(as_reader("list", "secrets"), "no");
    let whoami = cp.kubectl(&["auth", "whoami", "-o", "jsonpath={.status.userInfo.username}"]).unwrap();
    assert_eq!(whoami, "dumpwatch-admin");

    // Namespaces are deleted for real (the namespace controller empties them).
    cp.kubectl(&["create", "namespace", "scratch"]).unwrap();
    cp.kubectl(&["delete", "namespace", "scratch", "--timeout=60s"]).expect("namespace deletion completes");

    // Teardown leaves nothing running.
    let dir = cp.dir().to_path_buf();
    drop(cp);
    for (name, pid) in pids {
        assert!(!PathBuf::from(format!("/proc/{pid}")).exists(), "{name} (pid {pid}) still running");
    }
    assert!(!dir.exists(), "{} left behind", dir.display());
}

fn pod(name: &str, share: bool, side_script: &str) -> String {
    format!(
        r#"{{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "{name}", "namespace": "default"}},
  "spec": {{"restartPolicy": "Never", "shareProcessNamespace": {share},
    "volumes": [{{"name": "shared", "emptyDir": {{}}}}],
    "containers": [
      {{"name": "app", "image": "e2e/shell", "args": ["-c", "echo hi > /run/dumpwatch-e2e/shared/x; exec sleep 4.321"],
        "volumeMounts": [{{"name": "shared", "mountPath": "/run/dumpwatch-e2e/shared"}}]}},
      {{"name": "side", "image": "e2e/shell", "args": ["-c", {side}],
        "volumeMounts": [{{"name": "shared", "mountPath": "/run/dumpwatch-e2e/shared"}}]}}]}}}}"#,
        side = serde_json::Value::from(side_script)
    )
}

fn exit_codes(cp: &ControlPlane, name: &str) -> Vec<(String, i64)> {
    let p = cp.kubectl_json(&["get", "pod", name, "-n", "default"]).unwrap();
    let mut v: Vec<(String, i64)> = p["status"]["containerStatuses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["name"].as_str().unwrap().to_string(), c["state"]["terminated"]["exitCode"].as_i64().unwrap_or(-1)))
        .collect();
    v.sort();
    v
}

#[test]
fn pod_namespaces_and_volumes() {
    let cp = start();
    // `4[.]321` matches the app's `sleep 4.321` but not this script's own command line.
    let sees_app = "for i in $(seq 60); do grep -ql '4[.]321' /proc/[0-9]*/cmdline 2>/dev/null && exit 0; sleep 0.05; done; exit 1";
    // Shared PID namespace: the sidecar sees the app's process, and PID 1 is the pod's holder.
    let shared = format!(
        "for i in $(seq 60); do [ -f /run/dumpwatch-e2e/shared/x ] && break; sleep 0.05; done; grep -q hi /run/dumpwatch-e2e/shared/x || exit 5; \
         grep -q infinity /proc/1/cmdline || exit 6; {sees_app}"
    );
    // Own PID namespace: the sidecar is PID 1 and cannot see the app; the volume is still shared.
    let separate = format!(
        "for i in $(seq 60); do [ -f /run/dumpwatch-e2e/shared/x ] && break; sleep 0.05; done; grep -q hi /run/dumpwatch-e2e/shared/x || exit 5; \
         test \"$$$$\" = 1 || exit 6; if ( {sees_app} ); then exit 7; fi; exit 0"
    );
    cp.apply(&pod("shared", true, &shared)).unwrap();
    cp.apply(&pod("separate", false, &separate)).unwrap();
    for name in ["shared", "separate"] {
        wait_for(&format!("pod {name} to finish"), Duration::from_secs(60), || {
            let p = cp.kubectl_json(&["get", "pod", name, "-n", "default"])?;
            let phase = p["status"]["phase"].as_str().unwrap_or("").to_string();
            Ok((phase == "Succeeded" || phase == "Failed").then_some(()))
        })
        .unwrap_or_else(|e| panic!("{e}\nnodeagent log:\n{}", cp.log("nodeagent")));
        assert_eq!(exit_codes(&cp, name), vec![("app".into(), 0), ("side".into(), 0)], "pod {name}");
    }
    // In-cluster configuration: the projected service-account volume holds a real token bound to
    // the pod, the CA and the namespace, and KUBERNETES_SERVICE_HOST/PORT point at the apiserver;
    // kubectl inside the pod authenticates as the pod's ServiceAccount and RBAC applies.
    cp.kubectl(&["create", "serviceaccount", "lister", "-n", "default"]).unwrap();
    cp.kubectl(&["create", "role", "pod-lister", "--verb=list", "--resource=pods", "-n", "default"]).unwrap();
    cp.kubectl(&[
        "create",
        "rolebinding",
        "lister",
        "--role=pod-lister",
        "--serviceaccount=default:lister",
        "-n",
        "default",
    ])
    .unwrap();
    let script = "export KUBECONFIG=/nonexistent; \"$0\" auth whoami -o jsonpath='{.status.userInfo.username}' && echo && \
                  \"$0\" get pods -n default -o name >/dev/null && ! \"$0\" get secrets -n default";
    cp.apply(&format!(
        r#"{{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "incluster", "namespace": "default"}},
  "spec": {{"restartPolicy": "Never", "serviceAccountName": "lister",
    "containers": [{{"name": "main", "image": "e2e/shell", "command": ["/bin/sh", "-c", {script}, "{kubectl}"]}}]}}}}"#,
        script = serde_json::Value::from(script),
        kubectl = harness::kubectl_path().display()
    ))
    .unwrap();
    let phase = wait_for("pod incluster to finish", Duration::from_secs(60), || {
        let p = cp.kubectl_json(&["get", "pod", "incluster", "-n", "default"])?;
        let phase = p["status"]["phase"].as_str().unwrap_or("").to_string();
        Ok((phase == "Succeeded" || phase == "Failed").then_some(phase))
    })
    .unwrap();
    let incluster = cp.kubectl_json(&["get", "pod", "incluster", "-n", "default"]).unwrap();
    let uid = incluster["metadata"]["uid"].as_str().unwrap();
    let log =
        std::fs::read_to_string(cp.dir().join(format!("node/pods/default_incluster_{uid}/logs/main.log"))).unwrap();
    assert_eq!(phase, "Succeeded", "{log}");
    assert!(log.contains("system:serviceaccount:default:lister"), "{log}");
    assert!(log.contains("forbidden"), "{log}");

    // Deleting a running pod stops its processes and the agent finalizes the deletion.
    cp.apply(&pod("long", false, "exec sleep 300")).unwrap();
    wait_for("pod long to run", Duration::from_secs(30), || {
        let p = cp.kubectl_json(&["get", "pod", "long", "-n", "default"])?;
        Ok((p["status"]["phase"] == "Running").then_some(()))
    })
    .unwrap();
    cp.kubectl(&["delete", "pod", "long", "-n", "default", "--timeout=30s"]).expect("pod deletion completes");
}
