//! A real Kubernetes node beside the control plane: containerd 2 with its CRI plugin and runc,
//! the CNI bridge, kubelet, kube-proxy (nftables), kube-scheduler and CoreDNS, all built from
//! upstream modules by `e2e/node/build`. Pods are real containers from real OCI images (imported
//! into containerd, no registry), with their own network namespaces on a bridge, users,
//! capabilities, seccomp, Pod Security admission, Services and cluster DNS.
//!
//! One node per machine at a time (`host.rs` holds a lock); what it changes outside its own
//! directory is recorded first and restored when it stops, or by the next node if a test was
//! killed.

pub mod config;
pub mod host;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::Result;
use crate::pki::Pki;
use crate::proc::Proc;
use crate::util::{cache_dir, free_port, run, wait_for};
use config::{KubeletPorts, Layout, NODE_IP, NODE_NAME};
use host::Host;

/// How long a node waits for another test's node on this machine to stop.
const LOCK_WAIT: Duration = Duration::from_secs(15 * 60);

/// `<cache>/e2e/node`: what `e2e/node/build` made (a link into the cache outside the checkout).
pub fn node_build() -> Result<PathBuf> {
    let dir = cache_dir().join("e2e/node");
    if !dir.join(".complete").exists() {
        return Err(format!("{} is missing: run scripts/setup (it runs e2e/node/build)", dir.display()).into());
    }
    Ok(dir)
}

/// The node's images (`images.json` of the build): name → OCI tarball.
pub fn built_images() -> Result<Vec<(String, PathBuf)>> {
    let dir = node_build()?;
    let map: Value = serde_json::from_slice(&std::fs::read(dir.join("images/images.json"))?)?;
    Ok(map
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.clone(), dir.join("images").join(v.as_str()?))))
        .collect())
}

/// The name of one of the build's images (`pause`, `coredns`, `busybox`).
pub fn image_name(short: &str) -> Result<String> {
    let dir = node_build()?;
    let map: Value = serde_json::from_slice(&std::fs::read(dir.join("images/images.json"))?)?;
    map.as_object()
        .into_iter()
        .flatten()
        .find(|(_, file)| file.as_str() == Some(&format!("{short}.tar")))
        .map(|(name, _)| name.clone())
        .ok_or_else(|| format!("no image {short} in {}", dir.display()).into())
}

/// Taken before the API server starts: it listens on the bridge's address.
pub(crate) struct Prepared {
    host: Host,
    layout: Layout,
}

pub(crate) fn prepare(cp_dir: &Path) -> Result<Prepared> {
    let layout = Layout { dir: cp_dir.join("node") };
    std::fs::create_dir_all(&layout.dir)?;
    let host = Host::take(&layout.dir, LOCK_WAIT)?;
    Ok(Prepared { host, layout })
}

/// The running node; stopping it (drop) stops its components, kills every container and
/// restores the machine.
pub struct RealNode {
    procs: Vec<Proc>,
    layout: Layout,
    bin: PathBuf,
    started_in: Duration,
    // Dropped after the processes (field order): the machine is restored last.
    host: Option<Host>,
}

/// What the node needs from the control plane.
pub(crate) struct Cluster<'a> {
    pub pki: &'a Pki,
    pub server: String,
    pub admin_kubeconfig: &'a Path,
}

impl RealNode {
    pub(crate) fn start(prepared: Prepared, cluster: Cluster<'_>, images: &[PathBuf]) -> Result<RealNode> {
        let t0 = Instant::now();
        let build = node_build()?;
        let Prepared { host, layout } = prepared;
        let mut node = RealNode {
            procs: Vec::new(),
            layout,
            bin: build.join("bin"),
            started_in: Duration::ZERO,
            host: Some(host),
        };
        let l = node.layout.clone();
        for d in ["cni/net.d", "containerd", "kubelet", "pod-logs"] {
            std::fs::create_dir_all(l.path(d))?;
        }
        let pki = cluster.pki;
        pki.issue("kubelet", &format!("/O=system:nodes/CN=system:node:{NODE_NAME}"), None, false)?;
        pki.issue("kubelet-serving", &format!("/CN={NODE_NAME}"), Some("DNS:localhost,IP:127.0.0.1"), true)?;
        pki.issue("kube-proxy", "/CN=system:kube-proxy", None, false)?;
        pki.issue("kube-scheduler", "/CN=system:kube-scheduler", None, false)?;
        for user in ["kubelet", "kube-proxy", "kube-scheduler"] {
            crate::controlplane::write_kubeconfig(&l.path(&format!("{user}.kubeconfig")), &cluster.server, pki, user)?;
        }

        // containerd, then every image the tests need (no registry to pull from).
        let pause = image_name("pause")?;
        std::fs::write(
            l.path("containerd/config.toml"),
            config::containerd_toml(&l, &node.bin, &build.join("cni"), &pause),
        )?;
        std::fs::write(l.path("cni/net.d/10-dumpwatch.conflist"), config::cni_conflist(&l).to_string())?;
        let mut containerd = node.command("containerd");
        containerd.arg("--config").arg(l.path("containerd/config.toml")).args(["--log-level", "warn"]);
        node.spawn("containerd", containerd)?;
        let socket = l.containerd_socket();
        node.wait("containerd's socket", Duration::from_secs(30), |_| Ok(socket.exists()))?;
        let mut tarballs: Vec<PathBuf> = built_images()?.into_iter().map(|(_, p)| p).collect();
        tarballs.extend(images.iter().cloned());
        for tar in &tarballs {
            node.import_image(tar)?;
        }
        let imported = t0.elapsed();

        let kubelet_config = config::kubelet_config(
            &l,
            KubeletPorts { server: free_port(), healthz: free_port() },
            &pki.path("ca.crt"),
            (&pki.path("kubelet-serving.crt"), &pki.path("kubelet-serving.key")),
        );
        std::fs::write(l.path("kubelet/config.json"), kubelet_config.to_string())?;
        let mut kubelet = node.command("kubelet");
        kubelet
            .arg(format!("--config={}", l.path("kubelet/config.json").display()))
            .arg(format!("--kubeconfig={}", l.path("kubelet.kubeconfig").display()))
            .arg(format!("--root-dir={}", l.path("kubelet/root").display()))
            .arg(format!("--hostname-override={NODE_NAME}"))
            .arg(format!("--node-ip={NODE_IP}"))
            .arg("--v=1");
        node.spawn("kubelet", kubelet)?;

        let proxy_config = config::kube_proxy_config(&l.path("kube-proxy.kubeconfig"), free_port(), free_port());
        std::fs::write(l.path("kube-proxy.json"), proxy_config.to_string())?;
        let mut proxy = node.command("kube-proxy");
        proxy.arg(format!("--config={}", l.path("kube-proxy.json").display())).arg("--v=1");
        node.spawn("kube-proxy", proxy)?;

        let mut scheduler = node.command("kube-scheduler");
        scheduler
            .arg(format!("--kubeconfig={}", l.path("kube-scheduler.kubeconfig").display()))
            .arg(format!("--secure-port={}", free_port()))
            .args(["--bind-address=127.0.0.1", "--leader-elect=false", "--v=1"]);
        node.spawn("kube-scheduler", scheduler)?;

        let kubectl = |args: &[&str]| {
            run(Command::new(crate::kubectl_path())
                .arg(format!("--kubeconfig={}", cluster.admin_kubeconfig.display()))
                .args(args))
        };
        node.wait("the Node to be Ready", Duration::from_secs(90), |_| {
            let out = kubectl(&["get", "node", NODE_NAME, "-o", "json"]).ok();
            let node: Option<Value> = out.and_then(|o| serde_json::from_str(&o).ok());
            Ok(node.is_some_and(|n| {
                n["status"]["conditions"]
                    .as_array()
                    .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
            }))
        })?;
        let manifest = l.path("coredns.json");
        std::fs::write(&manifest, config::coredns_manifest(&image_name("coredns")?))?;
        kubectl(&["apply", "-f", &manifest.display().to_string()])?;
        node.wait("CoreDNS Ready", Duration::from_secs(90), |_| {
            let out = kubectl(&["get", "pods", "-n", "kube-system", "-l", "k8s-app=kube-dns", "-o", "json"])?;
            let pods: Value = serde_json::from_str(&out)?;
            Ok(pods["items"].as_array().into_iter().flatten().any(crate::controlplane::pod_ready))
        })?;
        node.started_in = t0.elapsed();
        eprintln!(
            "real node: images imported in {:.1} s, Ready with DNS in {:.1} s",
            imported.as_secs_f64(),
            node.started_in.as_secs_f64()
        );
        Ok(node)
    }

    fn command(&self, binary: &str) -> Command {
        let mut c = Command::new(self.bin.join(binary));
        // containerd finds its shim, the shim finds runc (BinaryName), kube-proxy needs nft.
        c.env("PATH", format!("{}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", self.bin.display()));
        c
    }

    fn spawn(&mut self, name: &str, cmd: Command) -> Result<()> {
        let log = self.layout.path(&format!("{name}.log"));
        self.procs.push(Proc::spawn(name, cmd, &log)?.with_grace(Duration::from_secs(10)));
        Ok(())
    }

    /// Polls `f` until true, failing at once (with its log) when a component died.
    fn wait(&mut self, what: &str, timeout: Duration, mut f: impl FnMut(&Self) -> Result<bool>) -> Result<()> {
        wait_for(what, timeout, || {
            for p in self.procs.iter_mut() {
                p.check_alive()?;
            }
            Ok(f(self)?.then_some(()))
        })
    }

    /// `ctr -n k8s.io <args>` against this node's containerd.
    pub fn ctr(&self, args: &[&str]) -> Result<String> {
        run(self.command("ctr").arg("--address").arg(self.layout.containerd_socket()).args(["-n", "k8s.io"]).args(args))
    }

    /// Imports an OCI/Docker image tarball into containerd, where the kubelet finds it.
    pub fn import_image(&self, tarball: &Path) -> Result<()> {
        self.ctr(&["images", "import", &tarball.display().to_string()])
            .map_err(|e| format!("importing {}: {e}", tarball.display()))?;
        Ok(())
    }

    /// The node's directory: `<component>.log`, containerd's and the kubelet's state, pod logs.
    pub fn dir(&self) -> &Path {
        &self.layout.dir
    }

    /// The log of `containerd`, `kubelet`, `kube-proxy` or `kube-scheduler`.
    pub fn log(&self, component: &str) -> String {
        std::fs::read_to_string(self.layout.path(&format!("{component}.log"))).unwrap_or_default()
    }

    /// How long the node took from its first component to CoreDNS Ready.
    pub fn started_in(&self) -> Duration {
        self.started_in
    }

    /// The value each restored sysctl had before the node started.
    pub fn sysctls_before(&self) -> Value {
        self.host.as_ref().map(|h| h.sysctls_before().clone()).unwrap_or_default()
    }

    /// Stops the components (scheduler, kube-proxy, kubelet, containerd), kills every container
    /// and restores the machine.
    pub fn stop(&mut self) {
        while let Some(mut p) = self.procs.pop() {
            p.stop();
        }
        self.host.take();
    }
}

impl Drop for RealNode {
    fn drop(&mut self) {
        self.stop();
    }
}
