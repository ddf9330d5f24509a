use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::Result;
use crate::node::config::NODE_IP;
use crate::node::{self, RealNode};
use crate::pki::Pki;
use crate::proc::Proc;
use crate::util::{curl, e2e_bin, free_port, run, wait_for};

/// What to start besides etcd and kube-apiserver.
#[derive(Debug, Clone)]
pub struct Options {
    /// kube-controller-manager (Jobs, garbage collection, namespaces, service accounts). Default on.
    pub controller_manager: bool,
    /// The test node agent that runs pods as local processes. Default on; ignored with
    /// `real_node`.
    pub node_agent: bool,
    /// A real node instead ([`RealNode`]: kubelet, containerd, runc, CNI bridge, kube-proxy,
    /// kube-scheduler, CoreDNS). The API server then listens on the node's bridge address
    /// ([`crate::node::config::NODE_IP`]) so pods reach it through the `kubernetes` Service.
    pub real_node: bool,
    /// OCI image tarballs the real node imports into containerd before it is Ready.
    pub node_images: Vec<PathBuf>,
    /// Image name → local executable used as that image's entrypoint by the node agent.
    pub images: Vec<(String, PathBuf)>,
    /// Extra kube-apiserver flags (`--feature-gates=...`, ...).
    pub apiserver_args: Vec<String>,
    /// kube-controller-manager's `--controllers`: [`DEFAULT_CONTROLLERS`] unless changed; `*`
    /// starts all of them, which adds seconds to every start.
    pub controllers: String,
}

/// The controllers the harness starts by default: workloads (Jobs, Deployments, ...), garbage
/// collection, namespaces, service accounts and their tokens, EndpointSlices.
pub const DEFAULT_CONTROLLERS: &str = "job-controller,cronjob-controller,ttl-after-finished-controller,\
garbage-collector-controller,pod-garbage-collector-controller,namespace-controller,\
serviceaccount-controller,serviceaccount-token-controller,root-ca-certificate-publisher-controller,\
deployment-controller,replicaset-controller,statefulset-controller,daemonset-controller,\
endpointslice-controller,clusterrole-aggregation-controller,validatingadmissionpolicy-status-controller";

/// What a real node needs besides [`DEFAULT_CONTROLLERS`]: the node lifecycle controller removes
/// the `not-ready` taint a kubelet registers with (nothing is scheduled before), and claims bind to
/// volumes.
pub const REAL_NODE_CONTROLLERS: &str = "node-lifecycle-controller,persistentvolume-binder-controller";

fn controllers(opts: &Options) -> String {
    if opts.real_node && opts.controllers != "*" {
        format!("{},{REAL_NODE_CONTROLLERS}", opts.controllers)
    } else {
        opts.controllers.clone()
    }
}

impl Default for Options {
    fn default() -> Self {
        Options {
            controller_manager: true,
            node_agent: true,
            real_node: false,
            node_images: Vec::new(),
            images: Vec::new(),
            apiserver_args: Vec::new(),
            controllers: DEFAULT_CONTROLLERS.to_string(),
        }
    }
}

/// The name of the Node the node agent registers.
pub const NODE_NAME: &str = "dumpwatch-node";

/// A fresh Kubernetes control plane on loopback ports, stopped and deleted on drop.
pub struct ControlPlane {
    procs: Vec<Proc>,
    node: Option<RealNode>,
    /// Where the API server listens: 127.0.0.1, or the real node's bridge address.
    address: &'static str,
    port: u16,
    kubeconfig: PathBuf,
    started_in: Duration,
    phases: Vec<(&'static str, Duration)>,
    dir: tempfile::TempDir,
}

impl ControlPlane {
    /// Starts etcd, kube-apiserver, kube-controller-manager and the node agent.
    pub fn start() -> Result<ControlPlane> {
        Self::start_with(Options::default())
    }

    /// Starts what `opts` asks for. Ports are picked free and bound a moment later, so on a
    /// shared machine another process can take one in between: that one failure is retried
    /// (three attempts in all), here rather than in every test.
    pub fn start_with(opts: Options) -> Result<ControlPlane> {
        let mut attempt = 1;
        loop {
            match Self::start_once(opts.clone()) {
                Err(e) if attempt < 3 && e.to_string().contains("address already in use") => {
                    eprintln!("control plane start {attempt}: a port was taken in between, retrying");
                    attempt += 1;
                }
                done => return done,
            }
        }
    }

    fn start_once(opts: Options) -> Result<ControlPlane> {
        let t0 = Instant::now();
        let dir = tempfile::Builder::new().prefix("dumpwatch-cp-").tempdir()?;
        // The real node's bridge comes first: the API server listens on its address.
        let prepared = if opts.real_node { Some(node::prepare(dir.path())?) } else { None };
        let mut cp = ControlPlane {
            procs: Vec::new(),
            node: None,
            address: if opts.real_node { NODE_IP } else { "127.0.0.1" },
            port: free_port(),
            kubeconfig: dir.path().join("kubeconfig"),
            started_in: Duration::ZERO,
            phases: Vec::new(),
            dir,
        };
        let d = cp.dir.path().to_path_buf();
        let port = cp.port;

        let pki = Pki::new(&d.join("pki"))?;
        pki.issue(
            "apiserver",
            "/CN=kube-apiserver",
            Some(&format!(
                "IP:127.0.0.1,IP:{NODE_IP},DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,\
                 DNS:kubernetes.default.svc.cluster.local,IP:10.0.0.1"
            )),
            true,
        )?;
        pki.issue("admin", "/O=system:masters/CN=dumpwatch-admin", None, false)?;
        pki.issue("kcm", "/CN=system:kube-controller-manager", None, false)?;
        let server = cp.server();
        write_kubeconfig(&cp.kubeconfig, &server, &pki, "admin")?;
        write_kubeconfig(&d.join("kcm.kubeconfig"), &server, &pki, "kcm")?;
        cp.phases.push(("pki", t0.elapsed()));

        // etcd: one member, no fsync (tests only), loopback only.
        let etcd_port = free_port();
        let peer_port = free_port();
        let mut etcd = Command::new(e2e_bin("etcd")?);
        etcd.arg("--name=test")
            .arg(format!("--data-dir={}", d.join("etcd").display()))
            .arg(format!("--listen-client-urls=http://127.0.0.1:{etcd_port}"))
            .arg(format!("--advertise-client-urls=http://127.0.0.1:{etcd_port}"))
            .arg(format!("--listen-peer-urls=http://127.0.0.1:{peer_port}"))
            .arg(format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}"))
            .arg(format!("--initial-cluster=test=http://127.0.0.1:{peer_port}"))
            .args(["--unsafe-no-fsync", "--log-level=warn", "--listen-metrics-urls="]);
        cp.procs.push(Proc::spawn("etcd", etcd, &d.join("etcd.log"))?);

        let mut api = Command::new(e2e_bin("kube-apiserver")?);
        api.arg(format!("--etcd-servers=http://127.0.0.1:{etcd_port}"))
            .arg(format!("--secure-port={port}"))
            .arg(format!("--bind-address={}", cp.address))
            .arg(format!("--advertise-address={}", cp.address))
            .arg(format!("--cert-dir={}", d.join("apiserver-certs").display()))
            .arg(format!("--tls-cert-file={}", pki.path("apiserver.crt").display()))
            .arg(format!("--tls-private-key-file={}", pki.path("apiserver.key").display()))
            .arg(format!("--client-ca-file={}", pki.path("ca.crt").display()))
            .arg(format!("--service-account-issuer={server}"))
            .arg(format!("--service-account-key-file={}", pki.path("sa.pub").display()))
            .arg(format!("--service-account-signing-key-file={}", pki.path("sa.key").display()))
            .args([
                "--service-cluster-ip-range=10.0.0.0/24",
                "--allow-privileged=true",
                "--enable-priority-and-fairness=false",
                "--profiling=false",
                "--v=1",
            ]);
        if opts.real_node {
            pki.issue("apiserver-kubelet-client", "/O=system:masters/CN=kube-apiserver-kubelet-client", None, false)?;
            api.args([
                // The `kubernetes` Service's endpoint is the bridge address: pods reach us there.
                "--endpoint-reconciler-type=lease",
                "--authorization-mode=Node,RBAC",
                "--enable-admission-plugins=NodeRestriction",
                // Logs, exec, port-forward: the kubelet listens on 127.0.0.1, found as `localhost`.
                "--kubelet-preferred-address-types=Hostname",
            ])
            .arg(format!("--kubelet-client-certificate={}", pki.path("apiserver-kubelet-client.crt").display()))
            .arg(format!("--kubelet-client-key={}", pki.path("apiserver-kubelet-client.key").display()))
            .arg(format!("--kubelet-certificate-authority={}", pki.path("ca.crt").display()));
        } else {
            // Endpoints may not hold loopback addresses; the `kubernetes` Service gets none.
            api.args(["--authorization-mode=RBAC", "--endpoint-reconciler-type=none"]);
        }
        api.args(&opts.apiserver_args);
        cp.procs.push(Proc::spawn("kube-apiserver", api, &d.join("kube-apiserver.log"))?);

        let curl_auth = cp.curl_auth();
        let auth: Vec<&str> = curl_auth.iter().map(String::as_str).collect();
        let url = format!("{server}/readyz");
        let procs = &mut cp.procs;
        wait_for("kube-apiserver /readyz", Duration::from_secs(60), || {
            for p in procs.iter_mut() {
                p.check_alive()?;
            }
            let (code, _) = curl(&auth, &url);
            Ok((code == 200).then_some(()))
        })?;
        cp.phases.push(("apiserver ready", t0.elapsed()));

        if opts.controller_manager {
            let mut kcm = Command::new(e2e_bin("kube-controller-manager")?);
            kcm.arg(format!("--kubeconfig={}", d.join("kcm.kubeconfig").display()))
                .arg(format!("--service-account-private-key-file={}", pki.path("sa.key").display()))
                .arg(format!("--root-ca-file={}", pki.path("ca.crt").display()))
                .arg(format!("--secure-port={}", free_port()))
                .arg(format!("--cert-dir={}", d.join("kcm-certs").display()))
                .arg(format!("--controllers={}", controllers(&opts)))
                .args([
                    "--bind-address=127.0.0.1",
                    "--use-service-account-credentials=true",
                    "--leader-elect=false",
                    "--concurrent-gc-syncs=5",
                    "--v=1",
                ]);
            cp.procs.push(Proc::spawn("kube-controller-manager", kcm, &d.join("kube-controller-manager.log"))?);
            // Pods need the namespace's `default` ServiceAccount, which the controller manager makes.
            cp.wait_until("the default ServiceAccount", Duration::from_secs(60), |cp| {
                Ok(cp.kubectl(&["get", "serviceaccount", "default", "-n", "default", "-o", "name"]).is_ok())
            })?;
            cp.phases.push(("controller-manager ready", t0.elapsed()));
        }

        if let Some(prepared) = prepared {
            let cluster = node::Cluster { pki: &pki, server: server.clone(), admin_kubeconfig: &cp.kubeconfig };
            match RealNode::start(prepared, cluster, &opts.node_images) {
                Ok(node) => cp.node = Some(node),
                // The logs are what tells why: keep them (the machine is restored all the same).
                Err(e) => return Err(format!("{e}\nlogs kept in {}/node", cp.stop_and_keep().display()).into()),
            }
            cp.phases.push(("real node ready", t0.elapsed()));
        } else if opts.node_agent {
            let images: serde_json::Map<String, Value> =
                opts.images.iter().map(|(k, v)| (k.clone(), Value::from(v.display().to_string()))).collect();
            let map = d.join("images.json");
            std::fs::write(&map, serde_json::to_vec_pretty(&images)?)?;
            let state = d.join("node");
            std::fs::create_dir_all(&state)?;
            let mut agent = Command::new(e2e_bin("nodeagent")?);
            agent
                .arg(format!("--kubeconfig={}", cp.kubeconfig.display()))
                .arg(format!("--node-name={NODE_NAME}"))
                .arg(format!("--image-map={}", map.display()))
                .arg(format!("--state-dir={}", state.display()));
            cp.procs
                .push(Proc::spawn("nodeagent", agent, &d.join("nodeagent.log"))?.with_grace(Duration::from_secs(10)));
            cp.wait_until("the test Node to be Ready", Duration::from_secs(30), |cp| {
                let n = cp.kubectl_json(&["get", "node", NODE_NAME]);
                Ok(n.is_ok_and(|n| {
                    n["status"]["conditions"]
                        .as_array()
                        .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
                }))
            })?;
        }
        cp.started_in = t0.elapsed();
        cp.phases.push(("ready", cp.started_in));
        Ok(cp)
    }

    fn wait_until(&mut self, what: &str, timeout: Duration, mut f: impl FnMut(&Self) -> Result<bool>) -> Result<()> {
        wait_for(what, timeout, || {
            for p in self.procs.iter_mut() {
                p.check_alive()?;
            }
            Ok(f(self)?.then_some(()))
        })
    }

    fn curl_auth(&self) -> Vec<String> {
        let pki = self.dir.path().join("pki");
        vec![
            "--cacert".into(),
            pki.join("ca.crt").display().to_string(),
            "--cert".into(),
            pki.join("admin.crt").display().to_string(),
            "--key".into(),
            pki.join("admin.key").display().to_string(),
        ]
    }

    /// The admin kubeconfig (user in `system:masters`).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// `https://127.0.0.1:<port>` (with a real node `https://<bridge address>:<port>`).
    pub fn server(&self) -> String {
        format!("https://{}:{}", self.address, self.port)
    }

    /// The real node, when started with [`Options::real_node`].
    pub fn node(&self) -> Option<&RealNode> {
        self.node.as_ref()
    }

    /// The PEM CA that signed the apiserver's serving certificate and every client certificate.
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.path().join("pki/ca.crt")
    }

    /// Issues a TLS serving certificate for `https://127.0.0.1` signed by the cluster CA, for
    /// admission or conversion webhooks served by a test: returns `(cert.pem, key.pem)`; put
    /// [`ControlPlane::ca_bundle`] in the webhook's `clientConfig.caBundle`.
    pub fn serving_cert(&self, name: &str) -> Result<(PathBuf, PathBuf)> {
        let pki = Pki { dir: self.dir.path().join("pki") };
        let file = format!("serving-{name}");
        pki.issue(&file, &format!("/CN={name}"), Some("IP:127.0.0.1,DNS:localhost"), true)?;
        Ok((pki.path(&format!("{file}.crt")), pki.path(&format!("{file}.key"))))
    }

    /// The cluster CA as base64 PEM, the form `caBundle` fields take.
    pub fn ca_bundle(&self) -> Result<String> {
        Ok(run(Command::new("openssl").args(["base64", "-A", "-in"]).arg(self.ca_cert()))?.trim().to_string())
    }

    /// The directory holding logs (`<component>.log`), PKI, etcd data and the node agent's state
    /// (`node/pods/<ns>_<name>_<uid>/{volumes,logs/<container>.log}`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// How long [`ControlPlane::start`] took.
    pub fn started_in(&self) -> Duration {
        self.started_in
    }

    /// When each startup step finished, counted from the start (`pki`, `apiserver ready`,
    /// `controller-manager ready`, `ready`).
    pub fn phases(&self) -> &[(&'static str, Duration)] {
        &self.phases
    }

    /// The pids of the components, for leak checks.
    pub fn pids(&self) -> Vec<(String, u32)> {
        self.procs.iter().map(|p| (p.name().to_string(), p.pid())).collect()
    }

    /// A kubectl command bound to this cluster.
    pub fn kubectl_cmd(&self) -> Command {
        let mut c = Command::new(kubectl_path());
        c.arg(format!("--kubeconfig={}", self.kubeconfig.display()));
        c
    }

    /// Runs kubectl; stdout on success, stderr in the error.
    pub fn kubectl(&self, args: &[&str]) -> Result<String> {
        run(self.kubectl_cmd().args(args))
    }

    /// `kubectl <args> -o json`, parsed.
    pub fn kubectl_json(&self, args: &[&str]) -> Result<Value> {
        let out = run(self.kubectl_cmd().args(args).args(["-o", "json"]))?;
        Ok(serde_json::from_str(&out)?)
    }

    /// `kubectl apply -f -` with the given YAML or JSON manifest.
    pub fn apply(&self, manifest: &str) -> Result<String> {
        self.kubectl_stdin(&["apply", "-f", "-"], manifest)
    }

    /// Applies dumpwatch's CRDs as committed in `crds/` (what `crdgen` writes) and waits until
    /// the API server serves them all.
    pub fn install_dumpwatch_crds(&self) -> Result<()> {
        let files: Vec<String> =
            crate::util::DUMPWATCH_CRDS.iter().map(|f| crate::util::crds_dir().join(f).display().to_string()).collect();
        let mut apply = vec!["apply"];
        let mut wait = vec!["wait", "--for=condition=Established", "--timeout=60s"];
        for f in &files {
            apply.extend(["-f", f]);
            wait.extend(["-f", f]);
        }
        self.kubectl(&apply)?;
        self.kubectl(&wait)?;
        Ok(())
    }

    /// Runs kubectl with `input` on stdin.
    pub fn kubectl_stdin(&self, args: &[&str], input: &str) -> Result<String> {
        let mut child = self
            .kubectl_cmd()
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        child.stdin.take().expect("stdin").write_all(input.as_bytes())?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            return Err(format!("kubectl {args:?} failed: {}", String::from_utf8_lossy(&out.stderr)).into());
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The log of a component (`etcd`, `kube-apiserver`, `kube-controller-manager`, `nodeagent`).
    pub fn log(&self, component: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{component}.log"))).unwrap_or_default()
    }

    /// Stops everything (the node first, so it kills its containers, etcd last).
    pub fn stop(&mut self) {
        self.node.take();
        while let Some(mut p) = self.procs.pop() {
            p.stop();
        }
    }

    /// Stops everything but keeps the directory (logs) for inspection; returns its path.
    pub fn stop_and_keep(mut self) -> PathBuf {
        self.stop();
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("tempdir"));
        dir.keep()
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.stop();
    }
}

/// kubectl 1.33 from the image's google-cloud-sdk if present (the newest there), else `kubectl`.
/// `$DUMPWATCH_KUBECTL` overrides.
pub fn kubectl_path() -> PathBuf {
    if let Some(p) = std::env::var_os("DUMPWATCH_KUBECTL") {
        return PathBuf::from(p);
    }
    let sdk = Path::new("/usr/lib/google-cloud-sdk/bin/kubectl.1.33");
    if sdk.exists() { sdk.to_path_buf() } else { PathBuf::from("kubectl") }
}

/// Whether a pod (JSON) is Ready.
pub(crate) fn pod_ready(pod: &Value) -> bool {
    pod["status"]["conditions"]
        .as_array()
        .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

pub(crate) fn write_kubeconfig(path: &Path, server: &str, pki: &Pki, user: &str) -> Result<()> {
    let cfg = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "dumpwatch-test", "cluster": {
            "server": server,
            "certificate-authority": pki.path("ca.crt"),
        }}],
        "users": [{"name": user, "user": {
            "client-certificate": pki.path(&format!("{user}.crt")),
            "client-key": pki.path(&format!("{user}.key")),
        }}],
        "contexts": [{"name": "dumpwatch-test", "context": {"cluster": "dumpwatch-test", "user": user}}],
        "current-context": "dumpwatch-test",
    });
    std::fs::write(path, serde_json::to_vec_pretty(&cfg)?)?;
    Ok(())
}
