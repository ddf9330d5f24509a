//! The whole of dumpwatch on real components, as a user meets it: the chart's CRDs, RBAC,
//! webhook configuration and operator Deployment applied to a real control plane with a real
//! node (kubelet, containerd, runc, CNI, kube-proxy, CoreDNS: `harness::node`); the operator,
//! every injected sidecar and analysis Job running as containers of the images `scripts/images`
//! builds (the operator with exactly the chart's ServiceAccount); real .NET workloads in images
//! of their own, running as user 1000; Prometheus with the shipped rules, Alertmanager, and an
//! S3 server for the artifacts.
//!
//! What differs from a production cluster, and why:
//! - one node, and no registry: the images are imported into containerd;
//! - the test reaches the apps through `kubectl port-forward` (their HTTP port listens on the
//!   pod's loopback only), and the host's Prometheus, Alertmanager and S3 (moto) listen on the
//!   node's bridge address, where pods reach them;
//! - Debian's Prometheus has no Kubernetes service discovery: [`PodDiscovery`] does what the
//!   chart's PodMonitor and ServiceMonitor ask of the Prometheus operator (every running pod's
//!   `dumpwatch-sidecar` container, the operator's metrics port; labelled `namespace`, `pod`,
//!   `container`) from the API server's pod list, as a `file_sd` file;
//! - nothing here reaches a symbol server: the analysis Jobs run `dumpwatch-e2e/analyzer`, the
//!   CLI with both runtimes installed where the apps' images have theirs, so `dumpwatch analyze`
//!   finds the DAC of the dumped build locally.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use harness::node::config::NODE_IP;
use harness::{Alertmanager, ControlPlane, Options, Prometheus, S3Server, Value};

// Shared with the chart's own tests (e2e/chart-tests), which run the chart the same way.
pub use chart_tests::ready;
pub use harness::{Result, workspace_bin};

/// Namespace of the chart's release, as in docs/operator.md.
pub const NAMESPACE: &str = "dumpwatch";
/// The images `scripts/images` builds: the chart's defaults (repository and appVersion tag).
pub const OPERATOR_IMAGE: &str = "ghcr.io/dumpwatch/operator";
pub const SIDECAR_IMAGE: &str = "ghcr.io/dumpwatch/sidecar";
pub const ANALYZER_IMAGE: &str = "ghcr.io/dumpwatch/dumpwatch";
/// The analyzer the scenarios' Jobs run: the CLI with both runtimes (no symbol server here).
pub const E2E_ANALYZER_IMAGE: &str = "dumpwatch-e2e/analyzer:e2e";
/// The port the workloads listen on inside their pods.
pub const APP_PORT: u16 = 8080;
/// The user the workloads run as (their images' default; the sidecar's default is 65532).
pub const APP_USER: i64 = 1000;
/// Workload images (`scripts/images --test-workloads`): DiagScenarios on .NET 8 and .NET Core 3.1.
pub const APP_NET8: &str = "dumpwatch-e2e/diagscenarios:net8";
pub const APP_NET31: &str = "dumpwatch-e2e/diagscenarios:net31";
/// The container the webhook injects.
pub const SIDECAR_CONTAINER: &str = "dumpwatch-sidecar";
/// The S3 bucket and the Secret (in the operator's namespace) with its credentials.
pub const BUCKET: &str = "dumps";
pub const S3_SECRET: &str = "dumpwatch-s3";
/// The DumpStore (cluster scoped) over [`BUCKET`] with [`S3_SECRET`].
pub const S3_STORE: &str = "scenarios";

/// One cluster with dumpwatch installed from its chart, plus monitoring and storage.
pub struct Cluster {
    pub cp: ControlPlane,
    pub s3: S3Server,
    pub prometheus: Prometheus,
    pub alertmanager: Alertmanager,
    pub started: Instant,
    /// `namespace/app` → how the test reaches the app (a `kubectl port-forward`).
    forwards: Mutex<BTreeMap<String, Forward>>,
    _discovery: PodDiscovery,
    _images: tempfile::TempDir,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for forward in self.forwards.lock().expect("forwards").values_mut() {
            forward.stop();
        }
    }
}

/// How an app's pod spec speaks of its user and privileges.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AppSecurity {
    /// `runAsUser: 1000` in the pod spec (the image's user, said again), nothing else.
    SpecUser,
    /// What Pod Security `restricted` asks: the user, non-root, no privilege escalation, every
    /// capability dropped, the runtime's seccomp profile.
    Restricted,
    /// Nothing: the image's default user (1000) is unknown at admission.
    ImageUser,
}

impl AppSecurity {
    /// The pod's and the app container's `securityContext`, as JSON.
    fn contexts(self) -> (Value, Value) {
        let user = serde_json::json!({"runAsUser": APP_USER, "runAsGroup": APP_USER, "runAsNonRoot": true});
        match self {
            AppSecurity::SpecUser => (user, serde_json::json!({})),
            AppSecurity::Restricted => {
                let mut pod = user;
                pod["seccompProfile"] = serde_json::json!({"type": "RuntimeDefault"});
                (pod, serde_json::json!({"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}))
            }
            AppSecurity::ImageUser => (serde_json::json!({}), serde_json::json!({})),
        }
    }
}

/// A local port forwarded to an app's pod ([`APP_PORT`]) by `kubectl port-forward`, restarted
/// when it exits (the API server or the kubelet may close a stream).
struct Forward {
    port: u16,
    namespace: String,
    pod: Option<String>,
    child: Option<Child>,
    log: PathBuf,
}

impl Forward {
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// (Re)starts the forward when it is not running.
    fn ensure(&mut self, cp: &ControlPlane) -> Result<()> {
        if let Some(c) = &mut self.child
            && c.try_wait()?.is_none()
        {
            return Ok(());
        }
        let Some(pod) = &self.pod else { return Ok(()) };
        let log = std::fs::File::options().create(true).append(true).open(&self.log)?;
        let child = cp
            .kubectl_cmd()
            .args(["port-forward", "-n", &self.namespace, &format!("pod/{pod}"), &format!("{}:{APP_PORT}", self.port)])
            .args(["--address", "127.0.0.1"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        self.child = Some(child);
        Ok(())
    }
}

/// Names of the pod's containers that run alongside the app: its containers, then its native
/// sidecars (init containers with `restartPolicy: Always`, where the webhook puts ours).
pub fn containers(pod: &Value) -> Vec<String> {
    let names = |list: &Value, sidecars_only: bool| -> Vec<String> {
        list.as_array()
            .into_iter()
            .flatten()
            .filter(|c| !sidecars_only || c["restartPolicy"] == "Always")
            .filter_map(|c| c["name"].as_str().map(String::from))
            .collect()
    };
    let mut all = names(&pod["spec"]["containers"], false);
    all.extend(names(&pod["spec"]["initContainers"], true));
    all
}

/// The `file_sd` target groups among `pods` (a `kubectl get pods -o json` list): what the
/// chart's PodMonitor selects (a running pod's `dumpwatch-sidecar` container, at
/// `sidecar_port`) and its ServiceMonitor (the operator's pods, at `operator_port`), with the
/// labels the Prometheus operator gives its targets.
pub fn scrape_targets(pods: &Value, sidecar_port: u16, operator_port: u16) -> Value {
    let groups: Vec<Value> = pods["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["status"]["phase"] == "Running" && p["metadata"]["deletionTimestamp"].is_null())
        .filter_map(|p| {
            let ip = p["status"]["podIP"].as_str()?;
            let operator = p["metadata"]["labels"]["dumpwatch.dev/component"] == "operator";
            let (container, port) = if operator {
                ("operator".to_string(), operator_port)
            } else if containers(p).iter().any(|c| c == SIDECAR_CONTAINER) {
                (SIDECAR_CONTAINER.to_string(), sidecar_port)
            } else {
                return None;
            };
            Some(serde_json::json!({
                "targets": [format!("{ip}:{port}")],
                "labels": {"namespace": p["metadata"]["namespace"], "pod": p["metadata"]["name"], "container": container},
            }))
        })
        .collect();
    Value::Array(groups)
}

/// Keeps Prometheus' targets in step with the pods, every 500 ms, until dropped.
pub struct PodDiscovery {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl PodDiscovery {
    fn start(cp: &ControlPlane, targets_file: PathBuf, ports: (u16, u16)) -> Result<PodDiscovery> {
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
                        let groups = scrape_targets(&pods, ports.0, ports.1);
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

/// The scenarios' images, packed by `scripts/images` from the binaries these tests run
/// ([`workspace_bin`]'s directory) into `dir`: the operator, sidecar and CLI, the workloads and
/// the e2e analyzer. Returns the tarballs.
pub fn build_images(dir: &std::path::Path) -> Result<Vec<PathBuf>> {
    let bins = workspace_bin("dumpwatch-operator").parent().expect("bin dir").to_path_buf();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/images");
    let out = Command::new(&script)
        .args(["--test-workloads", "--fast", "--bin-dir"])
        .arg(&bins)
        .arg("--out")
        .arg(dir)
        .output()
        .map_err(|e| format!("{}: {e}", script.display()))?;
    if !out.status.success() {
        return Err(format!("scripts/images failed: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    let mut tars: Vec<PathBuf> = std::fs::read_dir(dir)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "tar"))
        .collect();
    tars.sort();
    Ok(tars)
}

/// A port of the chart's `values.yaml` (`<section>.<key>`), so the scenarios scrape where the
/// chart says.
fn chart_value_port(section: &str, key: &str) -> Result<u16> {
    let text = std::fs::read_to_string(chart_tests::chart_dir().join("values.yaml"))?;
    let mut inside = false;
    for line in text.lines() {
        if !line.starts_with(' ') && !line.starts_with('#') && !line.is_empty() {
            inside = line.trim_end() == format!("{section}:");
        } else if inside && let Some(v) = line.trim().strip_prefix(&format!("{key}:")) {
            return Ok(v.trim().parse()?);
        }
    }
    Err(format!("no {section}.{key} in the chart's values.yaml").into())
}

impl Cluster {
    pub fn start() -> Result<Cluster> {
        testbed::require_setup();
        let started = Instant::now();
        let images = tempfile::tempdir()?;
        let tarballs = build_images(images.path())?;
        let cp = ControlPlane::start_with(Options { real_node: true, node_images: tarballs, ..Options::default() })?;
        let s3 = S3Server::start_on(NODE_IP, BUCKET)?;
        let alertmanager = Alertmanager::start(
            "route: {receiver: none, group_wait: 1s, group_interval: 1s, repeat_interval: 1h}\nreceivers: [{name: none}]\n",
        )?;
        let prometheus = Prometheus::start(&[], &time_compressed_rules()?, Some(&alertmanager.address()))?;
        let ports = (chart_value_port("sidecar", "metricsPort")?, chart_value_port("service", "metricsPort")?);
        let discovery = PodDiscovery::start(&cp, prometheus.pod_targets_file(), ports)?;
        let cluster = Cluster {
            cp,
            s3,
            prometheus,
            alertmanager,
            started,
            forwards: Mutex::default(),
            _discovery: discovery,
            _images: images,
        };
        cluster.install()?;
        Ok(cluster)
    }

    /// The chart, rendered with the scenarios' values, applied; then wait for the operator.
    fn install(&self) -> Result<()> {
        let cp = &self.cp;
        let chart = chart_tests::chart_dir();
        for crd in ["crds/dumppolicy.yaml", "crds/dumpsnapshot.yaml", "crds/dumpstore.yaml"] {
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
        // The admin's store that the scenarios' policies name (moto speaks plain http).
        cp.apply(&format!(
            r#"{{"apiVersion": "dumpwatch.dev/v1alpha1", "kind": "DumpStore", "metadata": {{"name": "{S3_STORE}"}},
                "spec": {{"s3": {{"endpoint": "{endpoint}", "region": "{region}", "bucket": "{BUCKET}",
                "secretRef": "{S3_SECRET}", "insecure": true}}}}}}"#,
            endpoint = self.s3.endpoint(),
            region = S3Server::REGION,
        ))?;
        let (repo, tag) = E2E_ANALYZER_IMAGE.split_once(':').expect("a tag");
        let values = [
            // The images are the chart's defaults; the analysis Jobs get the runtimes too.
            format!("analysis.image.repository={repo}"),
            format!("analysis.image.tag={tag}"),
            "analysis.symbolServer=".into(),
            // The e2e analyzer image carries both runtimes on purpose: its DAC source (the apps'
            // captured DACs stay untrusted, as in production).
            "analysis.localRuntimes=true".into(),
            // One replica: enough here, and half the load on a shared machine.
            "operator.replicas=1".into(),
            "operator.logLevel=info\\,operator=debug".into(),
        ];
        let set: Vec<&str> = values.iter().map(String::as_str).collect();
        // The webhook is reached through its Service, the operator by its Service's DNS name.
        cp.kubectl_stdin(&["apply", "-f", "-"], &chart_tests::render_text(&set, &["--skip-crds"])?)?;
        let deadline = Duration::from_secs(120);
        // Ready means: serving, its CA in the caBundle, caches synced (the readiness probe).
        harness::wait_for("the operator Ready", deadline, || {
            let pods = cp.kubectl_json(&["get", "pods", "-n", NAMESPACE, "-l", "dumpwatch.dev/component=operator"])?;
            Ok(pods["items"].as_array().into_iter().flatten().find(|p| ready(p)).map(|_| ()))
        })
        .map_err(|e| format!("{e}\noperator log:\n{}", self.pod_log(NAMESPACE, "operator")))?;
        Ok(())
    }

    /// The log of `container` of the newest pod in `namespace` that has such a container
    /// (through the kubelet, `kubectl logs`).
    pub fn pod_log(&self, namespace: &str, container: &str) -> String {
        let mut pods = self.items(namespace, "pods").unwrap_or_default();
        pods.retain(|p| {
            let all = |k: &str| p["spec"][k].as_array().into_iter().flatten().any(|c| c["name"] == container);
            all("containers") || all("initContainers")
        });
        pods.sort_by_key(|p| p["metadata"]["creationTimestamp"].as_str().unwrap_or_default().to_string());
        let Some(pod) = pods.last() else { return String::new() };
        let name = pod["metadata"]["name"].as_str().unwrap_or_default();
        self.cp.kubectl(&["logs", "-n", namespace, name, "-c", container]).unwrap_or_else(|e| format!("(no log: {e})"))
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

    /// An S3 storage stanza of a DumpPolicy for this run's bucket (the DumpStore [`S3_STORE`]).
    pub fn s3_storage(&self) -> String {
        format!("storage: {{s3: {{storeRef: {S3_STORE}}}}}")
    }

    /// A Deployment of DiagScenarios in `image`, running as [`APP_USER`] (said in its pod spec,
    /// as a well-behaved manifest does), listening on [`APP_PORT`] in its pod; the test reaches it
    /// at the local `port` once [`Cluster::running_pod`] has seen it run.
    pub fn deploy_app(&self, namespace: &str, name: &str, image: &str, port: u16, args: &[&str]) -> Result<()> {
        self.deploy_app_as(namespace, name, image, port, args, AppSecurity::SpecUser)
    }

    /// [`Cluster::deploy_app`] with the pod security of `security`.
    pub fn deploy_app_as(
        &self,
        namespace: &str,
        name: &str,
        image: &str,
        port: u16,
        args: &[&str],
        security: AppSecurity,
    ) -> Result<()> {
        let mut all = vec!["--port".to_string(), APP_PORT.to_string()];
        all.extend(args.iter().map(|s| s.to_string()));
        let forward = Forward {
            port,
            namespace: namespace.into(),
            pod: None,
            child: None,
            log: self.cp.dir().join(format!("port-forward-{namespace}-{name}.log")),
        };
        self.forwards.lock().expect("forwards").insert(format!("{namespace}/{name}"), forward);
        let (pod_security, container_security) = security.contexts();
        self.cp.apply(&format!(
            r#"{{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {{"name": "{name}", "namespace": "{namespace}"}},
  "spec": {{"replicas": 1, "selector": {{"matchLabels": {{"app": "{name}"}}}},
    "template": {{"metadata": {{"labels": {{"app": "{name}"}}}},
      "spec": {{"securityContext": {pod_security}, "terminationGracePeriodSeconds": 2,
        "containers": [{{"name": "app", "image": "{image}", "imagePullPolicy": "IfNotPresent", "args": {args},
        "securityContext": {container_security},
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
            // Pod Security `restricted` would refuse anything less (an enforcing namespace).
            "spec": {
                "securityContext": {"runAsNonRoot": true, "runAsUser": APP_USER, "runAsGroup": APP_USER,
                                    "seccompProfile": {"type": "RuntimeDefault"}},
                "containers": [{"name": "app", "image": "probe", "securityContext":
                    {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}}],
            },
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
        // The probes' admissions fill the tail: what went wrong is among the warnings before.
        let warnings: Vec<&str> = log.lines().filter(|l| l.contains("WARN") || l.contains("ERROR")).take(20).collect();
        format!(
            "operator pods: {ready:?}
policies in {namespace}: {policies:#?}
operator warnings and errors (first 20):
{}
operator log (tail):
{tail}",
            warnings.join("\n")
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

    /// The Running pod of Deployment `app` (label app=<app>) once every container runs; the app's
    /// port is then forwarded to the local port given to [`Cluster::deploy_app`].
    pub fn running_pod(&self, namespace: &str, app: &str, timeout: Duration) -> Result<Value> {
        let pod = harness::wait_for(&format!("a running {app} pod"), timeout, || {
            let pods = self.cp.kubectl_json(&["get", "pods", "-n", namespace, "-l", &format!("app={app}")])?;
            Ok(pods["items"].as_array().into_iter().flatten().find(|p| ready(p)).cloned())
        })?;
        let mut forwards = self.forwards.lock().expect("forwards");
        if let Some(forward) = forwards.get_mut(&format!("{namespace}/{app}")) {
            forward.stop();
            forward.pod = pod["metadata"]["name"].as_str().map(String::from);
            forward.ensure(&self.cp)?;
        }
        Ok(pod)
    }

    /// SHA-256 of the object behind an `s3://bucket/key` URI.
    pub fn s3_object_sha256(&self, uri: &str) -> Result<String> {
        use sha2::Digest;
        Ok(sha2::Sha256::digest(self.s3_object(uri)?).iter().map(|b| format!("{b:02x}")).collect())
    }

    /// Keeps what a failed analysis needs to be redone by hand, in a directory that outlives the
    /// cluster: every artifact of `snapshot` (as stored, zstd) and the analysis Job's whole log.
    /// Returns the directory.
    pub fn keep_evidence(&self, snapshot: &Value, analysis_log: &str) -> Result<PathBuf> {
        let name = snapshot["metadata"]["name"].as_str().unwrap_or("snapshot");
        let dir = std::env::temp_dir().join(format!("dumpwatch-evidence-{name}"));
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("analysis.log"), analysis_log)?;
        std::fs::write(dir.join("snapshot.json"), format!("{snapshot:#}"))?;
        for a in snapshot["spec"]["artifacts"].as_array().into_iter().flatten() {
            let uri = a["uri"].as_str().unwrap_or_default();
            let file = uri.rsplit('/').next().unwrap_or("artifact");
            std::fs::write(dir.join(file), self.s3_object(uri)?)?;
        }
        Ok(dir)
    }

    /// The object behind an `s3://bucket/key` URI, read with a presigned GET (the test holds the
    /// credentials; the app's pod never does).
    fn s3_object(&self, uri: &str) -> Result<Vec<u8>> {
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
        Ok(out.stdout)
    }

    /// The workload on `port` answers /health.
    pub fn wait_for_app(&self, port: u16, timeout: Duration) -> Result<()> {
        harness::wait_for("the workload to answer", timeout, || {
            for forward in self.forwards.lock().expect("forwards").values_mut().filter(|f| f.port == port) {
                forward.ensure(&self.cp)?;
            }
            Ok(testbed::http_get(port, "/health", Duration::from_secs(5)).ok().filter(|(s, _)| *s == 200).map(|_| ()))
        })
        .map_err(|e| {
            let logs: Vec<String> = self
                .forwards
                .lock()
                .expect("forwards")
                .values()
                .filter(|f| f.port == port)
                .map(|f| std::fs::read_to_string(&f.log).unwrap_or_default())
                .collect();
            format!("{e}; port-forward log: {}", logs.join("\n")).into()
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

    /// A PersistentVolumeClaim `claim` in `namespace` bound to a hostPath PersistentVolume of its
    /// own (the node has no provisioner); returns the host directory that holds its files. The
    /// directory is world-writable: every pod's user may store there, as on a fresh volume.
    pub fn claim(&self, namespace: &str, claim: &str) -> Result<PathBuf> {
        let dir = self.cp.dir().join("volumes").join(namespace).join(claim);
        std::fs::create_dir_all(&dir)?;
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o777))?;
        let pv = format!("{namespace}-{claim}");
        self.cp.apply(&format!(
            r#"{{"apiVersion": "v1", "kind": "List", "items": [
  {{"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {{"name": "{pv}"}},
    "spec": {{"capacity": {{"storage": "10Gi"}}, "accessModes": ["ReadWriteMany"], "persistentVolumeReclaimPolicy": "Retain",
      "storageClassName": "", "hostPath": {{"path": "{dir}", "type": "Directory"}},
      "claimRef": {{"namespace": "{namespace}", "name": "{claim}"}}}}}},
  {{"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {{"name": "{claim}", "namespace": "{namespace}"}},
    "spec": {{"accessModes": ["ReadWriteMany"], "storageClassName": "", "volumeName": "{pv}",
      "resources": {{"requests": {{"storage": "10Gi"}}}}}}}}]}}"#,
            dir = dir.display()
        ))?;
        Ok(dir)
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
    fn running_pods_with_the_sidecar_and_the_operator_become_labelled_targets() {
        let pod = |ns: &str, name: &str, phase: &str, containers: &[&str], init: &[&str]| {
            let list = |names: &[&str], always: bool| -> Vec<serde_json::Value> {
                names
                    .iter()
                    .map(|c| {
                        if always {
                            serde_json::json!({"name": c, "restartPolicy": "Always"})
                        } else {
                            serde_json::json!({"name": c})
                        }
                    })
                    .collect()
            };
            serde_json::json!({"metadata": {"namespace": ns, "name": name, "labels": {}},
                "spec": {"containers": list(containers, false), "initContainers": list(init, true)},
                "status": {"phase": phase, "podIP": format!("10.88.0.{}", name.len())}})
        };
        let mut leaving = pod("shop", "old", "Running", &["app", "dumpwatch-sidecar"], &[]);
        leaving["metadata"]["deletionTimestamp"] = "2026-11-28T07:00:00Z".into();
        let mut operator = pod("dumpwatch", "op", "Running", &["operator"], &[]);
        operator["metadata"]["labels"]["dumpwatch.dev/component"] = "operator".into();
        let pods = serde_json::json!({"items": [
            pod("shop", "orders-1", "Running", &["app"], &["dumpwatch-sidecar"]),
            pod("shop", "legacy", "Running", &["app", "dumpwatch-sidecar"], &[]),
            pod("shop", "plain", "Running", &["app"], &[]),
            pod("shop", "starting", "Pending", &["app"], &["dumpwatch-sidecar"]),
            leaving,
            operator,
        ]});
        let groups = super::scrape_targets(&pods, 9464, 9090);
        assert_eq!(
            groups,
            serde_json::json!([
                {"targets": ["10.88.0.8:9464"], "labels": {"namespace": "shop", "pod": "orders-1", "container": "dumpwatch-sidecar"}},
                {"targets": ["10.88.0.6:9464"], "labels": {"namespace": "shop", "pod": "legacy", "container": "dumpwatch-sidecar"}},
                {"targets": ["10.88.0.2:9090"], "labels": {"namespace": "dumpwatch", "pod": "op", "container": "operator"}},
            ])
        );
    }

    #[test]
    fn the_chart_says_where_the_metrics_are() {
        assert_eq!(super::chart_value_port("sidecar", "metricsPort").unwrap(), 9464);
        assert_eq!(super::chart_value_port("service", "metricsPort").unwrap(), 9090);
    }
}
