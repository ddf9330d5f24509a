//! The real node enforces what a production node enforces, and leaves the machine as it found
//! it. One cluster for all checks (a node takes ~20 s to start and one runs per machine):
//! users, capabilities and a shared PID namespace as the kernel sees them; Pod Security
//! admission; Services and cluster DNS from inside pods; `kubectl logs` and `exec` through the
//! kubelet; Job completion; then, after the stop, the sysctls, nft tables, bridge, cgroups and
//! fixed paths are back to what they were.

use std::time::Duration;

use harness::node::{config, host};
use harness::{ControlPlane, Options, Value, wait_for};

const S: Duration = Duration::from_secs(1);

fn busybox() -> String {
    harness::node::image_name("busybox").expect("the node's busybox image (scripts/setup)")
}

fn pod(c: &ControlPlane, ns: &str, name: &str) -> Value {
    c.kubectl_json(&["get", "pod", name, "-n", ns]).unwrap()
}

fn wait_ready(c: &ControlPlane, ns: &str, name: &str) -> Value {
    wait_for(&format!("pod {ns}/{name} Ready"), 90 * S, || {
        let p = pod(c, ns, name);
        let ready = p["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|k| k["type"] == "Ready" && k["status"] == "True");
        Ok(ready.then_some(p))
    })
    .unwrap_or_else(|e| {
        panic!("{e}\n{:#}\nkubelet log tail:\n{}", pod(c, ns, name), tail(&c.node().unwrap().log("kubelet")))
    })
}

fn tail(s: &str) -> &str {
    &s[s.len().saturating_sub(4000)..]
}

fn exec(c: &ControlPlane, ns: &str, pod: &str, container: &str, script: &str) -> String {
    c.kubectl(&["exec", "-n", ns, pod, "-c", container, "--", "sh", "-c", script])
        .unwrap_or_else(|e| panic!("exec in {ns}/{pod}/{container} `{script}`: {e}"))
}

/// `CapEff` of /proc/self/status, as a number.
fn effective_caps(c: &ControlPlane, ns: &str, pod: &str, container: &str) -> u64 {
    let line = exec(c, ns, pod, container, "grep CapEff /proc/self/status");
    u64::from_str_radix(line.split_whitespace().last().unwrap(), 16).unwrap()
}

const CAP_SYS_PTRACE: u64 = 1 << 19;

/// `sysctl -a`-like view of the keys the node may change, plus the machine-wide objects.
fn machine_state() -> Value {
    let sysctls: serde_json::Map<String, Value> =
        host::SYSCTLS.iter().map(|k| (k.to_string(), Value::from(host::sysctl_get(k)))).collect();
    let links = std::process::Command::new("ip").args(["-br", "link"]).output().unwrap();
    let links: Vec<String> = String::from_utf8_lossy(&links.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(String::from))
        .filter(|l| !l.starts_with("veth"))
        .collect();
    serde_json::json!({
        "sysctls": sysctls,
        "nft": host::nft_tables(),
        "links": links,
        "fixed paths": host::FIXED_PATHS.iter().map(|p| (p, std::path::Path::new(p).exists())).collect::<Vec<_>>(),
        "cgroup": std::path::Path::new("/sys/fs/cgroup/memory").join(config::CGROUP_ROOT.trim_start_matches('/')).exists(),
        "record": std::path::Path::new(host::RECORD).exists(),
    })
}

#[test]
fn the_real_node_enforces_pod_security_and_leaves_the_machine_as_it_found_it() {
    testbed::require_setup();
    let before = machine_state();
    let c =
        ControlPlane::start_with(Options { real_node: true, ..Options::default() }).expect("cluster with a real node");
    eprintln!("phases: {:?}", c.phases());
    let node = c.node().unwrap();
    // The node changed the machine (that is what the restore below must undo).
    assert_ne!(machine_state()["links"], before["links"], "the bridge exists while the node runs");
    let image = busybox();

    // --- users, capabilities and a shared PID namespace ----------------------------------------
    c.apply(&format!(
        r#"{{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "shared", "namespace": "default"}},
  "spec": {{"shareProcessNamespace": true, "terminationGracePeriodSeconds": 1,
    "containers": [
      {{"name": "app", "image": "{image}", "imagePullPolicy": "Never", "command": ["sleep", "3600"],
        "securityContext": {{"runAsUser": 1000, "runAsGroup": 1000}}}},
      {{"name": "nonroot-ptrace", "image": "{image}", "imagePullPolicy": "Never", "command": ["sleep", "3600"],
        "securityContext": {{"runAsUser": 2000, "allowPrivilegeEscalation": false,
          "capabilities": {{"drop": ["ALL"], "add": ["SYS_PTRACE"]}}}}}},
      {{"name": "root-ptrace", "image": "{image}", "imagePullPolicy": "Never", "command": ["sleep", "3600"],
        "securityContext": {{"runAsUser": 0, "readOnlyRootFilesystem": true,
          "capabilities": {{"drop": ["ALL"], "add": ["SYS_PTRACE"]}}}}}}]}}}}"#
    ))
    .unwrap();
    wait_ready(&c, "default", "shared");
    assert_eq!(exec(&c, "default", "shared", "app", "id -u").trim(), "1000");
    assert_eq!(exec(&c, "default", "shared", "nonroot-ptrace", "id -u").trim(), "2000");
    // A capability added to a non-root container without privilege escalation is not effective:
    // the kernel drops it at exec. Root keeps exactly what it was given.
    assert_eq!(effective_caps(&c, "default", "shared", "nonroot-ptrace"), 0, "non-root: added caps are not effective");
    assert_eq!(effective_caps(&c, "default", "shared", "root-ptrace"), CAP_SYS_PTRACE, "root: exactly SYS_PTRACE");
    // Shared PID namespace: every container sees the others' processes, with their real uids;
    // PID 1 is the sandbox's pause.
    let ps = exec(
        &c,
        "default",
        "shared",
        "nonroot-ptrace",
        "for p in /proc/[0-9]*; do echo $(stat -c %u $p) $(cat $p/cmdline | tr '\\0' ' '); done",
    );
    assert!(ps.lines().any(|l| l.starts_with("1000 sleep 3600")), "{ps}");
    assert!(ps.lines().any(|l| l.starts_with("65535 /pause")), "{ps}");
    let ro = c.kubectl(&["exec", "-n", "default", "shared", "-c", "root-ptrace", "--", "touch", "/x"]);
    assert!(ro.is_err_and(|e| e.to_string().contains("Read-only file system")), "readOnlyRootFilesystem");
    // Without shareProcessNamespace a container sees only itself (PID 1 is its own command).
    // (The next pod also checks logs through the kubelet.)

    // --- Pod Security admission -----------------------------------------------------------------
    for level in ["baseline", "restricted"] {
        c.kubectl(&["create", "namespace", level]).unwrap();
        c.kubectl(&["label", "namespace", level, &format!("pod-security.kubernetes.io/enforce={level}")]).unwrap();
        let refused = c.apply(&format!(
            r#"{{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "ptrace", "namespace": "{level}"}},
  "spec": {{"containers": [{{"name": "c", "image": "{image}", "command": ["sleep", "1"],
    "securityContext": {{"capabilities": {{"add": ["SYS_PTRACE"]}}}}}}]}}}}"#
        ));
        let err = refused.expect_err("SYS_PTRACE is refused").to_string();
        assert!(err.contains("violates PodSecurity") && err.contains("SYS_PTRACE"), "{level}: {err}");
    }
    // restricted also wants non-root, no escalation, all caps dropped, a seccomp profile; it
    // allows a shared PID namespace.
    let compliant = format!(
        r#"{{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "ok", "namespace": "restricted"}},
  "spec": {{"shareProcessNamespace": true, "terminationGracePeriodSeconds": 1,
    "securityContext": {{"runAsNonRoot": true, "runAsUser": 1000, "seccompProfile": {{"type": "RuntimeDefault"}}}},
    "containers": [{{"name": "c", "image": "{image}", "imagePullPolicy": "Never", "command": ["sh", "-c", "echo hello from $(id -u); sleep 3600"],
      "securityContext": {{"allowPrivilegeEscalation": false, "capabilities": {{"drop": ["ALL"]}}}}}}]}}}}"#
    );
    c.apply(&compliant).unwrap();
    wait_ready(&c, "restricted", "ok");
    let logs = wait_for("the container's log through the kubelet", 30 * S, || {
        let l = c.kubectl(&["logs", "-n", "restricted", "ok"])?;
        Ok(l.contains("hello").then_some(l))
    })
    .unwrap();
    assert_eq!(logs.trim(), "hello from 1000");
    let seccomp = exec(&c, "restricted", "ok", "c", "grep Seccomp: /proc/self/status");
    assert!(seccomp.trim().ends_with('2'), "RuntimeDefault is a seccomp filter (mode 2): {seccomp}");

    // --- Services and DNS ------------------------------------------------------------------------
    c.apply(&format!(
        r#"{{"apiVersion": "v1", "kind": "List", "items": [
  {{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "web", "namespace": "default", "labels": {{"app": "web"}}}},
    "spec": {{"terminationGracePeriodSeconds": 1, "containers": [{{"name": "web", "image": "{image}", "imagePullPolicy": "Never",
      "command": ["sh", "-c", "while true; do echo -e 'HTTP/1.0 200 OK\r\n\r\nserved by '$(hostname) | nc -l -p 8080; done"],
      "readinessProbe": {{"tcpSocket": {{"port": 8080}}, "periodSeconds": 1}}}}]}}}},
  {{"apiVersion": "v1", "kind": "Service", "metadata": {{"name": "web", "namespace": "default"}},
    "spec": {{"selector": {{"app": "web"}}, "ports": [{{"port": 80, "targetPort": 8080}}]}}}}]}}"#
    ))
    .unwrap();
    wait_ready(&c, "default", "web");
    let web_ip = pod(&c, "default", "web")["status"]["podIP"].as_str().unwrap().to_string();
    assert!(web_ip.starts_with("10.88.0."), "a pod address on the node's bridge: {web_ip}");
    let resolved = wait_for("web.default.svc resolved by CoreDNS", 30 * S, || {
        Ok(c.kubectl(&[
            "exec",
            "-n",
            "default",
            "shared",
            "-c",
            "app",
            "--",
            "nslookup",
            "web.default.svc.cluster.local",
        ])
        .ok())
    })
    .unwrap();
    let service_ip = c.kubectl_json(&["get", "service", "web", "-n", "default"]).unwrap()["spec"]["clusterIP"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(resolved.contains(&service_ip), "{resolved}");
    // (busybox's nc, not its wget: the static wget crashes in glibc's NSS without the host's libraries)
    let body = wait_for("the Service answers through kube-proxy", 30 * S, || {
        let get = "printf 'GET / HTTP/1.0\r\n\r\n' | nc -w 2 web 80";
        Ok(c.kubectl(&["exec", "-n", "default", "shared", "-c", "app", "--", "sh", "-c", get])
            .ok()
            .filter(|b| !b.is_empty()))
    })
    .unwrap();
    assert!(body.contains("200 OK") && body.trim_end().ends_with("served by web"), "{body}");
    // The API server through the `kubernetes` Service (its endpoint is the bridge address).
    let api = exec(&c, "default", "shared", "app", "echo | nc -w 2 kubernetes.default.svc 443 && echo open");
    assert_eq!(api.trim(), "open");
    // Names outside the cluster do not resolve: no upstream resolver is ever asked.
    let outside = c.kubectl(&["exec", "-n", "default", "shared", "-c", "app", "--", "nslookup", "example.com"]);
    assert!(outside.is_err(), "{outside:?}");

    // --- a Job completes -----------------------------------------------------------------------
    c.apply(&format!(
        r#"{{"apiVersion": "batch/v1", "kind": "Job", "metadata": {{"name": "once", "namespace": "default"}},
  "spec": {{"backoffLimit": 0, "template": {{"spec": {{"restartPolicy": "Never",
    "containers": [{{"name": "c", "image": "{image}", "imagePullPolicy": "Never", "command": ["sh", "-c", "exit 0"]}}]}}}}}}}}"#
    ))
    .unwrap();
    wait_for("the Job Complete", 60 * S, || {
        let j = c.kubectl_json(&["get", "job", "once", "-n", "default"])?;
        Ok((j["status"]["succeeded"] == 1).then_some(()))
    })
    .unwrap();

    let started = node.started_in();
    eprintln!("FIGURE real node: components to CoreDNS Ready {:.1} s", started.as_secs_f64());
    let t = std::time::Instant::now();
    drop(c);
    eprintln!("FIGURE real node: stopped and restored in {:.1} s", t.elapsed().as_secs_f64());
    assert_eq!(machine_state(), before, "the machine is as the node found it");
}
