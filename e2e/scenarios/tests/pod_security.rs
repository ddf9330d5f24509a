//! What a real node enforces and the node agent did not, end to end with the chart installed:
//! injected pods in namespaces that enforce Pod Security `restricted` (listen mode, .NET 8) and
//! `baseline` (connect mode, .NET Core 3.1 in the shared PID namespace) are admitted and watched;
//! an app whose pod spec does not name its user is injected, and the policy says why its
//! sidecar cannot reach it; a Job and a CronJob in an injected namespace complete (the native
//! sidecar ends with them).

use std::time::{Duration, Instant};

use harness::{Value, free_port, wait_for};
use scenarios::{APP_NET8, APP_NET31, AppSecurity, Cluster, SIDECAR_CONTAINER, containers};

const S: Duration = Duration::from_secs(1);

fn policy(ns: &str, app: &str, mode: &str) -> String {
    format!(
        "apiVersion: dumpwatch.dev/v1alpha1\nkind: DumpPolicy\nmetadata: {{name: {app}, namespace: {ns}}}\n\
         spec:\n  selector: {{matchLabels: {{app: {app}}}}}\n  mode: {mode}\n  counterInterval: 1s\n\
         \x20 triggers: [{{type: deadlock}}]\n  capture: {{kinds: [stacks]}}\n  storage: {{volume: {{path: /dumps}}}}\n"
    )
}

fn enforcing(c: &Cluster, ns: &str, level: &str) {
    c.opted_in_namespace(ns).unwrap();
    c.cp.kubectl(&["label", "namespace", ns, &format!("pod-security.kubernetes.io/enforce={level}")]).unwrap();
}

/// The ReplicaSet's events: a pod that Pod Security refused shows up there, not as a pod.
fn refusals(c: &Cluster, ns: &str) -> Vec<String> {
    c.items(ns, "events")
        .unwrap_or_default()
        .iter()
        .filter(|e| e["reason"] == "FailedCreate")
        .map(|e| e["message"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// The sidecar watches the app: its `dotnet_gc_heap_size_bytes` series for the namespace.
fn watched(c: &Cluster, ns: &str) -> Value {
    c.wait_for_series(&format!("dotnet_gc_heap_size_bytes{{namespace=\"{ns}\"}}"), 90 * S).unwrap_or_else(|e| {
        panic!("{e}\nsidecar log:\n{}\nrefusals: {:?}", c.pod_log(ns, SIDECAR_CONTAINER), refusals(c, ns))
    })
}

fn run_app(c: &Cluster, ns: &str, app: &str, image: &str, security: AppSecurity) -> Value {
    c.wait_for_injection(ns, app, 60 * S).unwrap();
    c.deploy_app_as(ns, app, image, free_port(), &[], security).unwrap();
    let pod = c
        .running_pod(ns, app, 120 * S)
        .unwrap_or_else(|e| panic!("{e}\nrefusals: {:?}\n{}", refusals(c, ns), c.injection_report(ns)));
    c.expect_injected(&pod).unwrap();
    pod
}

#[test]
fn injected_pods_pass_pod_security_and_jobs_complete() {
    let c = Cluster::start().expect("cluster with dumpwatch installed");
    eprintln!("FIGURE cluster + chart installed: {:.1} s", c.started.elapsed().as_secs_f64());

    // restricted + listen mode (.NET 8): the injected pod is admitted as it is, and watched.
    enforcing(&c, "strict", "restricted");
    c.cp.apply(&policy("strict", "api", "listen")).unwrap();
    let pod = run_app(&c, "strict", "api", APP_NET8, AppSecurity::Restricted);
    assert_eq!(containers(&pod), ["app", SIDECAR_CONTAINER]);
    watched(&c, "strict");

    // baseline + connect mode (.NET Core 3.1 ignores the diagnostic port): no SYS_PTRACE is
    // asked for (baseline refuses it); the sidecar reaches the runtime as the app's user
    // through the shared PID namespace.
    enforcing(&c, "legacy", "baseline");
    c.cp.apply(&policy("legacy", "old", "connect")).unwrap();
    let pod = run_app(&c, "legacy", "old", APP_NET31, AppSecurity::SpecUser);
    assert_eq!(pod["spec"]["shareProcessNamespace"], true);
    let sidecar =
        pod["spec"]["initContainers"].as_array().unwrap().iter().find(|k| k["name"] == SIDECAR_CONTAINER).unwrap();
    assert_eq!(sidecar["securityContext"]["runAsUser"], scenarios::APP_USER, "the app's user");
    assert!(sidecar["securityContext"]["capabilities"]["add"].is_null(), "{sidecar:#}");
    let series = watched(&c, "legacy");
    eprintln!("legacy watched: {series}");

    // An app whose spec does not say its user (the image's is 1000): injected with the default
    // user, which cannot reach the runtime; the policy says so and names the pod.
    c.opted_in_namespace("anon").unwrap();
    c.cp.apply(&policy("anon", "anon", "listen")).unwrap();
    let pod = run_app(&c, "anon", "anon", APP_NET8, AppSecurity::ImageUser);
    let name = pod["metadata"]["name"].as_str().unwrap().to_string();
    let note = pod["metadata"]["annotations"]["dumpwatch.dev/sidecar-user"].as_str().unwrap_or_default();
    assert!(note.starts_with("65532 (default"), "{note}");
    let ready = wait_for("the policy to say why the pod is not watched", 60 * S, || {
        let p = c.cp.kubectl_json(&["get", "dumppolicy", "anon", "-n", "anon"])?;
        let cond = p["status"]["conditions"].as_array().into_iter().flatten().find(|k| k["type"] == "Ready").cloned();
        Ok(cond.filter(|k| k["reason"] == "AppUserNotInPodSpec"))
    })
    .unwrap();
    assert_eq!(ready["status"], "False");
    assert!(ready["message"].as_str().unwrap().contains(&name), "{ready:#}");

    // A Job and a CronJob in an injected namespace: the native sidecar ends with the app.
    c.opted_in_namespace("batch").unwrap();
    c.cp.apply(&policy("batch", "nightly", "listen")).unwrap();
    c.wait_for_injection("batch", "nightly", 60 * S).unwrap();
    let busybox = harness::node::image_name("busybox").unwrap();
    let template = format!(
        r#"{{"metadata": {{"labels": {{"app": "nightly"}}}}, "spec": {{"restartPolicy": "Never",
            "securityContext": {{"runAsUser": 1000, "runAsNonRoot": true}},
            "containers": [{{"name": "work", "image": "{busybox}", "imagePullPolicy": "Never", "command": ["sh", "-c", "sleep 2"]}}]}}}}"#
    );
    let started = Instant::now();
    c.cp.apply(&format!(
        r#"{{"apiVersion": "batch/v1", "kind": "Job", "metadata": {{"name": "once", "namespace": "batch"}},
            "spec": {{"backoffLimit": 0, "template": {template}}}}}"#
    ))
    .unwrap();
    c.cp.apply(&format!(
        r#"{{"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {{"name": "every-minute", "namespace": "batch"}},
            "spec": {{"schedule": "* * * * *", "jobTemplate": {{"spec": {{"backoffLimit": 0, "template": {template}}}}}}}}}"#
    ))
    .unwrap();
    let done = |job: &Value| job["status"]["succeeded"] == 1;
    wait_for("the Job complete", 90 * S, || {
        Ok(c.cp.kubectl_json(&["get", "job", "once", "-n", "batch"]).ok().filter(done))
    })
    .unwrap();
    eprintln!("FIGURE Job in an injected namespace: created -> complete {:.1} s", started.elapsed().as_secs_f64());
    wait_for("a Job of the CronJob complete", 150 * S, || {
        let jobs = c.items("batch", "jobs")?;
        Ok(jobs.into_iter().find(|j| j["metadata"]["ownerReferences"][0]["kind"] == "CronJob" && done(j)))
    })
    .unwrap();
    // Both ran with the sidecar, which ended with them.
    let pods = c.items("batch", "pods").unwrap();
    assert!(pods.len() >= 2, "{pods:#?}");
    for p in &pods {
        assert!(containers(p).contains(&SIDECAR_CONTAINER.to_string()), "{p:#}");
        assert_eq!(p["status"]["phase"], "Succeeded", "{p:#}");
    }
}
