//! The whole of dumpwatch on real components, as a user meets it: the chart's CRDs, RBAC,
//! webhook configuration and operator Deployment applied to a real control plane; the operator
//! and every injected sidecar and analysis Job running as pods on the node agent (the operator
//! with exactly the chart's ServiceAccount); real .NET workloads; Prometheus with the shipped
//! rules, Alertmanager, and an S3 server for the artifacts.
//!
//! What differs from a real cluster, and why (no container runtime, no cluster network here):
//! - "images" are local executables (the node agent's image map): the workspace's binaries and
//!   scripts that start the C# workloads on the cached runtimes;
//! - every pod shares the host's loopback, so ports are picked free per run and passed in as the
//!   chart's values; pods reach the operator at `https://127.0.0.1:<port>` (its certificate names
//!   that address too). The API server reaches the webhook at that URL as well: Endpoints may not
//!   hold loopback addresses, so the rendered webhook configuration's `service` reference is
//!   swapped for `url` (the only change made to the chart's objects);
//! - Debian's Prometheus has no Kubernetes service discovery: [`PodDiscovery`] does what the
//!   chart's PodMonitor asks of the Prometheus operator (every running pod's `dumpwatch-sidecar`
//!   container, labelled `namespace`, `pod`, `container`) from the API server's pod list and
//!   hands the targets to Prometheus as a `file_sd` file. The operator is a fixed target.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use harness::{Alertmanager, ControlPlane, Options, Prometheus, S3Server, Value, free_port};
use testbed::{Runtime, workload_dll};

// Shared with the chart's own tests (e2e/chart-tests), which run the chart the same way.
pub use chart_tests::{containers, ready, webhook_by_url};
pub use harness::{Result, workspace_bin};

/// Namespace of the chart's release, as in docs/operator.md.
pub const NAMESPACE: &str = "dumpwatch";
/// The image names the chart is rendered with; the node agent maps them to local executables.
pub const OPERATOR_IMAGE: &str = "ghcr.io/dumpwatch/operator";
pub const SIDECAR_IMAGE: &str = "ghcr.io/dumpwatch/sidecar";
pub const ANALYZER_IMAGE: &str = "ghcr.io/dumpwatch/dumpwatch";
pub const TAG: &str = "e2e";
/// Workload images: DiagScenarios on .NET 8 and on .NET Core 3.1.
pub const APP_NET8: &str = "dumpwatch-e2e/diagscenarios:net8";
pub const APP_NET31: &str = "dumpwatch-e2e/diagscenarios:net31";
/// The container the webhook injects.
pub const SIDECAR_CONTAINER: &str = "dumpwatch-sidecar";
/// The S3 bucket and the Secret (in the operator's namespace) with its credentials.
pub const BUCKET: &str = "dumps";
pub const S3_SECRET: &str = "dumpwatch-s3";

/// Loopback ports of this run (every pod shares the host network).
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    pub operator_https: u16,
    pub operator_metrics: u16,
    pub sidecar_metrics: u16,
}

/// One cluster with dumpwatch installed from its chart, plus monitoring and storage.
pub struct Cluster {
    pub cp: ControlPlane,
    pub s3: S3Server,
    pub prometheus: Prometheus,
    pub alertmanager: Alertmanager,
    pub ports: Ports,
    pub started: Instant,
    _discovery: PodDiscovery,
    _images: tempfile::TempDir,
}

/// The `file_sd` target groups for the sidecars among `pods` (a `kubectl get pods -o json`
/// list): what the chart's PodMonitor selects (a running pod's `dumpwatch-sidecar` container)
/// with the labels the Prometheus operator gives its targets. Every pod shares the loopback here,
/// so the address is the one sidecar metrics port.
pub fn sidecar_targets(pods: &Value, port: u16) -> Value {
    let groups: Vec<Value> = pods["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["status"]["phase"] == "Running" && p["metadata"]["deletionTimestamp"].is_null())
        .filter(|p| p["spec"]["containers"].as_array().into_iter().flatten().any(|c| c["name"] == "dumpwatch-sidecar"))
        .map(|p| {
            serde_json::json!({
                "targets": [format!("127.0.0.1:{port}")],
                "labels": {
                    "namespace": p["metadata"]["namespace"],
                    "pod": p["metadata"]["name"],
                    "container": "dumpwatch-sidecar",
                },
            })
        })
        .collect();
    Value::Array(groups)
}

/// Keeps Prometheus' sidecar targets in step with the pods, every 500 ms, until dropped.
pub struct PodDiscovery {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl PodDiscovery {
    fn start(cp: &ControlPlane, targets_file: PathBuf, port: u16) -> Result<PodDiscovery> {
        harness::write_targets(&targets_file, &Value::Array(vec![]))?;
        let stop = Arc::new(AtomicBool::new(false));
        let (kubectl, kubeconfig) = (harness::kubectl_path(), cp.kubeconfig().to_path_buf());
        let thread = std::thread::spawn({
            let stop = stop.clone();
            move || {
                let mut last = Value::Null;
                while !stop.load(Ordering::Relaxed) {
                    let out = std::process::Command::new(&kubectl)
                        .arg("--kubeconfig")
                        .arg(&kubeconfig)
                        .args(["get", "pods", "--all-namespaces", "-o", "json"])
                        .output();
                    let pods =
                        out.ok().filter(|o| o.status.success()).and_then(|o| serde_json::from_slice(&o.stdout).ok());
                    if let Some(pods) = pods {
                        let groups = sidecar_targets(&pods, port);
                        if groups != last && harness::write_targets(&targets_file, &groups).is_ok() {
                            last = groups;
                        }
                    }
                    std::thread::sleep(Duration::from_millis(500));
                }
            }
        });
        Ok(PodDiscovery { stop, thread: Some(thread) })
    }
}

impl Drop for PodDiscovery {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).expect("writing an image script");
    std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
    p
}

fn app_image(dir: &Path, runtime: Runtime) -> PathBuf {
    let name = format!("diagscenarios-{}", runtime.version());
    script(
        dir,
        &name,
        &format!("exec '{}' '{}' \"$@\"", runtime.host().display(), workload_dll("DiagScenarios").display()),
    )
}

/// The shipped rules with their time windows divided by 60 (minutes become seconds), so that
/// alerts whose real windows are tens of minutes fire within a test; the expressions, labels and
/// annotations are the shipped ones.
pub fn time_compressed_rules() -> Result<String> {
    let text = std::fs::read_to_string(chart_tests::chart_dir().join("rules/dumpwatch.rules.yaml"))?;
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    // `[10m]`, `offset 10m`, `for: 10m`: a number followed by `m` and a non-word character.
    while let Some(i) = rest.find(|c: char| c.is_ascii_digit()) {
        let (head, tail) = rest.split_at(i);
        out.push_str(head);
        let digits = tail.find(|c: char| !c.is_ascii_digit()).unwrap_or(tail.len());
        let (num, after) = tail.split_at(digits);
        let word_before = head.chars().last().is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        if !word_before && after.starts_with('m') && !after[1..].starts_with(|c: char| c.is_ascii_alphanumeric()) {
            out.push_str(num);
            out.push('s');
            rest = &after[1..];
        } else {
            out.push_str(num);
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

impl Cluster {
    pub fn start() -> Result<Cluster> {
        testbed::require_setup();
        let started = Instant::now();
        let images = tempfile::tempdir()?;
        let ports = Ports { operator_https: free_port(), operator_metrics: free_port(), sidecar_metrics: free_port() };
        let image = |repo: &str| format!("{repo}:{TAG}");
        let opts = || Options {
            images: vec![
                (image(OPERATOR_IMAGE), workspace_bin("dumpwatch-operator")),
                (image(SIDECAR_IMAGE), workspace_bin("dumpwatch-sidecar")),
                (image(ANALYZER_IMAGE), workspace_bin("dumpwatch")),
                (APP_NET8.into(), app_image(images.path(), Runtime::Net8)),
                (APP_NET31.into(), app_image(images.path(), Runtime::Net31)),
            ],
            ..Options::default()
        };
        let cp = ControlPlane::start_with(opts())?;
        let s3 = S3Server::start(BUCKET)?;
        let alertmanager = Alertmanager::start(
            "route: {receiver: none, group_wait: 1s, group_interval: 1s, repeat_interval: 1h}\nreceivers: [{name: none}]\n",
        )?;
        let prometheus = Prometheus::start(
            &[format!("127.0.0.1:{}", ports.operator_metrics)],
            &time_compressed_rules()?,
            Some(&alertmanager.address()),
        )?;
        let discovery = PodDiscovery::start(&cp, prometheus.pod_targets_file(), ports.sidecar_metrics)?;
        let cluster =
            Cluster { cp, s3, prometheus, alertmanager, ports, started, _discovery: discovery, _images: images };
        cluster.install()?;
        Ok(cluster)
    }

    /// The chart, rendered with this run's images and ports, applied; then wait for the operator.
    fn install(&self) -> Result<()> {
        let cp = &self.cp;
        let chart = chart_tests::chart_dir();
        for crd in ["crds/dumppolicy.yaml", "crds/dumpsnapshot.yaml"] {
            cp.kubectl(&["apply", "-f", &chart.join(crd).display().to_string()])?;
        }
        cp.kubectl(&["wait", "--for=condition=Established", "crd", "--all", "--timeout=60s"])?;
        cp.kubectl(&["create", "namespace", NAMESPACE])?;
        cp.apply(&format!(
            r#"{{"apiVersion": "v1", "kind": "Secret", "metadata": {{"name": "{S3_SECRET}", "namespace": "{NAMESPACE}"}},
                "stringData": {{"accessKeyId": "{ak}", "secretAccessKey": "{sk}"}}}}"#,
            ak = S3Server::ACCESS_KEY,
            sk = S3Server::SECRET_KEY
        ))?;
        let p = self.ports;
        let values = [
            format!("operator.image.repository={OPERATOR_IMAGE}"),
            format!("operator.image.tag={TAG}"),
            format!("sidecar.image.repository={SIDECAR_IMAGE}"),
            format!("sidecar.image.tag={TAG}"),
            format!("analysis.image.repository={ANALYZER_IMAGE}"),
            format!("analysis.image.tag={TAG}"),
            // One replica: two would both bind the same loopback port here.
            "operator.replicas=1".into(),
            "operator.logLevel=info\\,operator=debug".into(),
            format!("service.port={}", p.operator_https),
            format!("service.metricsPort={}", p.operator_metrics),
            format!("sidecar.metricsPort={}", p.sidecar_metrics),
            format!("operator.url=https://127.0.0.1:{}", p.operator_https),
            "certificates.extraSANs={127.0.0.1}".into(),
            // The node agent runs init containers to completion one after another: a native
            // sidecar (an init container that never ends) would keep the app from starting.
            "sidecar.native=never".into(),
        ];
        let set: Vec<&str> = values.iter().map(String::as_str).collect();
        let manifest = webhook_by_url(&chart_tests::render_text(&set, &["--skip-crds"])?, p.operator_https)?;
        cp.kubectl_stdin(&["apply", "-f", "-"], &manifest)?;
        let deadline = Duration::from_secs(60);
        harness::wait_for("the operator Ready", deadline, || {
            let pods = cp.kubectl_json(&["get", "pods", "-n", NAMESPACE, "-l", "dumpwatch.dev/component=operator"])?;
            Ok(pods["items"].as_array().into_iter().flatten().find(|p| ready(p)).map(|_| ()))
        })
        .map_err(|e| format!("{e}\noperator log:\n{}", self.pod_log(NAMESPACE, "operator")))?;
        harness::wait_for("the webhook's caBundle", deadline, || {
            let cfg = cp.kubectl_json(&["get", "mutatingwebhookconfigurations", "-o", "json"])?;
            let has = cfg["items"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["webhooks"][0]["clientConfig"]["caBundle"].as_str().is_some_and(|b| !b.is_empty()));
            Ok(has.then_some(()))
        })?;
        Ok(())
    }

    /// The log of `container` of the (newest) pod in `namespace` that has such a container.
    pub fn pod_log(&self, namespace: &str, container: &str) -> String {
        let Ok(pods) = std::fs::read_dir(self.cp.dir().join("node/pods")) else { return String::new() };
        let mut logs: Vec<(std::time::SystemTime, PathBuf)> = pods
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(&format!("{namespace}_")))
            .map(|e| e.path().join(format!("logs/{container}.log")))
            .filter_map(|p| Some((std::fs::metadata(&p).ok()?.modified().ok()?, p)))
            .collect();
        logs.sort();
        logs.last().and_then(|(_, p)| std::fs::read_to_string(p).ok()).unwrap_or_default()
    }

    /// `kubectl get <what> -n <namespace> -o json`'s items.
    pub fn items(&self, namespace: &str, what: &str) -> Result<Vec<Value>> {
        let v = self.cp.kubectl_json(&["get", what, "-n", namespace])?;
        Ok(v["items"].as_array().cloned().unwrap_or_default())
    }

    /// A namespace that opted in to injection.
    pub fn opted_in_namespace(&self, name: &str) -> Result<()> {
        self.cp.kubectl(&["create", "namespace", name])?;
        self.cp.kubectl(&["label", "namespace", name, "dumpwatch.dev/inject=enabled"])?;
        Ok(())
    }

    /// An S3 storage stanza of a DumpPolicy for this run's bucket.
    pub fn s3_storage(&self) -> String {
        format!(
            "storage: {{s3: {{endpoint: '{}', region: {}, bucket: {BUCKET}, secretRef: {S3_SECRET}}}}}",
            self.s3.endpoint(),
            S3Server::REGION
        )
    }

    /// A Deployment of DiagScenarios listening on `port` (loopback: pods share it).
    pub fn deploy_app(&self, namespace: &str, name: &str, image: &str, port: u16, args: &[&str]) -> Result<()> {
        let mut all = vec!["--port".to_string(), port.to_string()];
        all.extend(args.iter().map(|s| s.to_string()));
        self.cp.apply(&format!(
            r#"{{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {{"name": "{name}", "namespace": "{namespace}"}},
  "spec": {{"replicas": 1, "selector": {{"matchLabels": {{"app": "{name}"}}}},
    "template": {{"metadata": {{"labels": {{"app": "{name}"}}}},
      "spec": {{"containers": [{{"name": "app", "image": "{image}", "args": {args},
        "env": [{{"name": "DOTNET_SYSTEM_GLOBALIZATION_INVARIANT", "value": "1"}}]}}]}}}}}}}}"#,
            args = serde_json::to_string(&all)?,
        ))?;
        Ok(())
    }

    /// Waits until the webhook injects a pod labelled `app=<app>` in `namespace`, asking the
    /// API server for a server-side dry run (nothing is created). A pod created earlier may be
    /// admitted without its sidecar (`failurePolicy: Ignore`): the operator not ready yet, the
    /// API server not yet holding the new `caBundle`, or the operator's policy cache not yet
    /// holding a policy applied a moment ago. On timeout the error says which.
    pub fn wait_for_injection(&self, namespace: &str, app: &str, timeout: Duration) -> Result<()> {
        let probe = serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"generateName": format!("{app}-probe-"), "namespace": namespace, "labels": {"app": app}},
            "spec": {"containers": [{"name": "app", "image": "probe"}]},
        });
        let mut last = String::new();
        harness::wait_for(&format!("the webhook to inject pods of {namespace}/{app}"), timeout, || {
            let out =
                self.cp.kubectl_stdin(&["create", "--dry-run=server", "-o", "json", "-f", "-"], &probe.to_string())?;
            let pod: Value = serde_json::from_str(&out)?;
            last = format!("{:?}", containers(&pod));
            Ok(containers(&pod).iter().any(|c| c == SIDECAR_CONTAINER).then_some(()))
        })
        .map_err(|e| {
            format!(
                "{e}: a dry-run pod got containers {last}
{}",
                self.injection_report(namespace)
            )
            .into()
        })
    }

    /// Why pods of `namespace` may go uninjected: the operator's readiness, the policies'
    /// conditions, the operator's log tail.
    pub fn injection_report(&self, namespace: &str) -> String {
        let operators = self.items(NAMESPACE, "pods").unwrap_or_default();
        let ready: Vec<String> = operators
            .iter()
            .map(|p| format!("{} ready={}", p["metadata"]["name"].as_str().unwrap_or("?"), ready(p)))
            .collect();
        let policies: Vec<String> = self
            .items(namespace, "dumppolicies")
            .unwrap_or_default()
            .iter()
            .map(|p| format!("{}: {}", p["metadata"]["name"].as_str().unwrap_or("?"), p["status"]["conditions"]))
            .collect();
        let log = self.pod_log(NAMESPACE, "operator");
        let tail = &log[log.len().saturating_sub(3000)..];
        format!(
            "operator pods: {ready:?}
policies in {namespace}: {policies:#?}
operator log (tail):
{tail}"
        )
    }

    /// `pod` carries the injected sidecar, or an error saying so with the likely reason.
    pub fn expect_injected(&self, pod: &Value) -> Result<()> {
        if containers(pod).iter().any(|c| c == SIDECAR_CONTAINER) {
            return Ok(());
        }
        let ns = pod["metadata"]["namespace"].as_str().unwrap_or_default();
        Err(format!(
            "pod {ns}/{} was admitted without the sidecar (containers {:?})
{}",
            pod["metadata"]["name"].as_str().unwrap_or("?"),
            containers(pod),
            self.injection_report(ns)
        )
        .into())
    }

    /// The Running pod of Deployment `app` (label app=<app>) once every container runs.
    pub fn running_pod(&self, namespace: &str, app: &str, timeout: Duration) -> Result<Value> {
        harness::wait_for(&format!("a running {app} pod"), timeout, || {
            let pods = self.cp.kubectl_json(&["get", "pods", "-n", namespace, "-l", &format!("app={app}")])?;
            Ok(pods["items"].as_array().into_iter().flatten().find(|p| ready(p)).cloned())
        })
    }

    /// SHA-256 of the object behind an `s3://bucket/key` URI, read with a presigned GET (the
    /// test holds the credentials; the app's pod never does).
    pub fn s3_object_sha256(&self, uri: &str) -> Result<String> {
        let key = uri.strip_prefix(&format!("s3://{BUCKET}/")).ok_or_else(|| format!("{uri}: not in {BUCKET}"))?;
        let config = store::S3Config {
            endpoint: self.s3.endpoint(),
            region: S3Server::REGION.into(),
            bucket: BUCKET.into(),
            prefix: String::new(),
            path_style: true,
        };
        let creds = store::Credentials {
            access_key_id: S3Server::ACCESS_KEY.into(),
            secret_access_key: S3Server::SECRET_KEY.into(),
            session_token: None,
        };
        let s3 = store::S3Store::new(config, creds)?;
        let url = s3.presign_get(key, Duration::from_secs(300));
        let out = std::process::Command::new("curl").args(["-sf", "-o", "-", &url]).output()?;
        if !out.status.success() {
            return Err(format!("GET {uri}: curl exit {}", out.status).into());
        }
        use sha2::Digest;
        Ok(sha2::Sha256::digest(&out.stdout).iter().map(|b| format!("{b:02x}")).collect())
    }

    /// The workload on `port` answers /health.
    pub fn wait_for_app(&self, port: u16, timeout: Duration) -> Result<()> {
        harness::wait_for("the workload to answer", timeout, || {
            Ok(testbed::http_get(port, "/health", Duration::from_secs(5)).ok().filter(|(s, _)| *s == 200).map(|_| ()))
        })
    }

    /// Delete Deployment `name` and wait until its pods are gone (pods share the host's ports).
    pub fn delete_app(&self, namespace: &str, name: &str) -> Result<()> {
        self.cp.kubectl(&["delete", "deployment", name, "-n", namespace, "--wait=true", "--timeout=60s"])?;
        harness::wait_for(&format!("the {name} pods gone"), Duration::from_secs(60), || {
            let pods = self.cp.kubectl_json(&["get", "pods", "-n", namespace, "-l", &format!("app={name}")])?;
            Ok(pods["items"].as_array().is_none_or(|p| p.is_empty()).then_some(()))
        })
    }

    /// A PromQL query's result vector once it is non-empty.
    pub fn wait_for_series(&self, expr: &str, timeout: Duration) -> Result<Value> {
        self.prometheus.wait_for_samples(expr, timeout)
    }

    /// The firing alert `name` in Alertmanager, once it is there.
    pub fn wait_for_alert(&self, name: &str, timeout: Duration) -> Result<Value> {
        harness::wait_for(&format!("alert {name} in Alertmanager"), timeout, || {
            let alerts = self.alertmanager.alerts()?;
            Ok(alerts.as_array().into_iter().flatten().find(|a| a["labels"]["alertname"] == name).cloned())
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn rule_windows_shrink_from_minutes_to_seconds_and_nothing_else_changes() {
        let compressed = super::time_compressed_rules().unwrap();
        assert!(!compressed.contains("[10m]") && compressed.contains("[10s]"), "{compressed}");
        assert!(compressed.contains("offset 20s"));
        assert!(compressed.contains("for: 10s"));
        assert!(compressed.contains("[30s]"), "increase(...[30m]) becomes 30s");
        // Words ending in a digit + m stay (none today; the guard is for label values like "p2m").
        assert!(compressed.contains("DotnetDeadlockDetected"));
    }

    #[test]
    fn running_pods_with_the_sidecar_become_labelled_targets() {
        let pod = |ns: &str, name: &str, phase: &str, containers: &[&str]| {
            let containers: Vec<_> = containers.iter().map(|c| serde_json::json!({"name": c})).collect();
            serde_json::json!({"metadata": {"namespace": ns, "name": name}, "spec": {"containers": containers}, "status": {"phase": phase}})
        };
        let mut leaving = pod("shop", "old", "Running", &["app", "dumpwatch-sidecar"]);
        leaving["metadata"]["deletionTimestamp"] = "2026-11-28T07:00:00Z".into();
        let pods = serde_json::json!({"items": [
            pod("shop", "orders-1", "Running", &["app", "dumpwatch-sidecar"]),
            pod("shop", "plain", "Running", &["app"]),
            pod("shop", "starting", "Pending", &["app", "dumpwatch-sidecar"]),
            leaving,
        ]});
        let groups = super::sidecar_targets(&pods, 9464);
        assert_eq!(
            groups,
            serde_json::json!([{"targets": ["127.0.0.1:9464"],
                "labels": {"namespace": "shop", "pod": "orders-1", "container": "dumpwatch-sidecar"}}])
        );
    }
}
